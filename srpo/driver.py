"""`srpo run RECIPE`: the whole pipeline, one step at a time, skipping every step whose manifest matches.

    data -> sft -> iter_000/eval -> for t in 1..T: samples -> judgments -> pairs -> dpo -> eval -> gate

Steps run in this process by default (one import of torch/TRL for the whole run). With `run_accelerate_config` set,
the training steps (and, unless run_shard_generation is off, sampling and evaluation, sharded across the processes)
run as `accelerate launch --config_file <it> -m srpo.stages.<step> --config <step config>`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from srpo import chaos
from srpo.cli_util import build_from_dict
from srpo.configs import GateArgs, JudgeArgs, RunArgs
from srpo.gate import GateDecision
from srpo.recipe import sections
from srpo.runfolder import (
    ITEMS,
    JUDGMENTS,
    MODEL,
    RunFolder,
    atomic_write_json,
    atomic_write_text,
    outputs_digest,
)


class Driver:
    def __init__(self, recipe: dict, recipe_path: str = "<recipe>"):
        self.recipe = recipe
        self.path = recipe_path
        self.run = build_from_dict(RunArgs, recipe.get("run", {}), f"{recipe_path} [run]")
        build_from_dict(GateArgs, recipe.get("gate", {}), f"{recipe_path} [gate]")  # refuse bad thresholds now
        self.rf = RunFolder.at(self.run.run_runs_dir, self.run.run_name)
        self.executed: list[str] = []
        self.skipped: list[str] = []

    def args(self, section: str, step: str, seed_offset: int = 0, cls=None, **injected):
        cls = cls or sections()[section]
        from srpo.model_specs import resolve_section

        values = {**resolve_section(section, self.recipe.get(section, {}), self.run.run_seed), **injected,
                  "run_dir": str(self.rf.root), "step": step, "seed": self.run.run_seed + seed_offset}
        if section in ("sft", "dpo", "grpo"):
            values["output_dir"] = str(self.rf.step_dir(step) / "trainer")
            if "use_cpu" not in values:
                import torch

                values["use_cpu"] = not torch.cuda.is_available()
        return build_from_dict(cls, values, f"{self.path} [{section}] for step {step}")

    def execute(self, module_name: str, args, training: bool = False) -> dict:
        """Run one step unless its manifest matches; record it in the ledger either way (once)."""
        import importlib

        module = importlib.import_module(f"srpo.stages.{module_name}")
        step = args.step
        manifest = self.rf.manifest(step)
        started = time.time()
        if not self._matches(module_name, args, manifest):
            print(f"[run ] {step}", flush=True)
            sharded = module_name in ("sample", "evaluate") and self.run.run_shard_generation
            if (training or sharded) and self.run.run_accelerate_config:
                self._launch(module_name, args)
            else:
                with step_log(self.rf.step_dir(step)):
                    module.run(args)
            manifest = self.rf.manifest(step)
            self.executed.append(step)
        else:
            print(f"[skip] {step} (manifest matches)", flush=True)
            self.skipped.append(step)
        if manifest is None:
            raise RuntimeError(f"step {step} finished without writing its manifest")
        chaos.point(step, "ledger")
        extra = {"decision": manifest["stats"]["decision"]["decision"]} if module_name == "gate" else {}
        self._ledger(step, manifest["fingerprint"], outputs_digest(manifest), time.time() - started,
                     executed=step in self.executed, **extra)
        return manifest

    def _matches(self, module_name, args, manifest) -> bool:
        if manifest is None:
            return False
        from srpo.steps import StepInputError, StepRun

        try:
            import importlib

            module = importlib.import_module(f"srpo.stages.{module_name}")
            run = StepRun(args.step, args, module.inputs(args), self.rf.step_dir(args.step), command=module_name)
        except StepInputError:
            return False
        return run.fingerprint == manifest.get("fingerprint")

    def _ledger(self, step: str, fingerprint: str, digest: str, wall: float, executed: bool, **extra) -> None:
        """One line per completed execution. A skipped step adds a line only if a kill between its manifest and its
        ledger line lost it, so a resumed run's ledger reads like an uninterrupted one."""
        if not executed and any(e["step"] == step and e["fingerprint"] == fingerprint for e in self.rf.ledger()):
            return
        self.rf.append_ledger({"step": step, "fingerprint": fingerprint, "outputs_digest": digest,
                               "wall_time_s": round(wall, 3), **extra})

    def _launch(self, module_name: str, args) -> None:
        import torch

        from srpo.steps import StepFailed, launch_values

        config_path = self.rf.root / ".launch" / f"{args.step.replace('/', '_')}.yaml"
        atomic_write_text(config_path, yaml.safe_dump(launch_values(args)))
        beside = Path(sys.executable).parent / "accelerate"  # the one of this environment, activated or not
        cmd = [str(beside) if beside.exists() else "accelerate", "launch", "--config_file",
               self.run.run_accelerate_config, "-m",
               f"srpo.stages.{module_name}", "--config", str(config_path)]
        print("       " + " ".join(cmd), flush=True)
        env = dict(os.environ)
        if not torch.cuda.is_available() and "OMP_NUM_THREADS" not in env:
            # N CPU ranks on few cores: one thread each, or every step gets 3-60x slower from contention.
            env["OMP_NUM_THREADS"] = "1"
        proc = subprocess.run(cmd, env=env)
        if proc.returncode != 0:
            raise StepFailed(f"step {args.step} failed under accelerate launch (exit code {proc.returncode}); its "
                             "output is above. Re-run the same `srpo run` command to resume it.")

    # The pipeline.

    def policy_of(self, iteration: int) -> str:
        step = "sft" if iteration == 0 else RunFolder.iter_step(iteration, self.run.run_rl_algorithm)
        return str(self.rf.step_dir(step) / MODEL)

    def feedback_step(self, iteration: int) -> str:
        """The step whose manifest carries iteration t's judge statistics (judge_failure_rate) and judgments file."""
        stage = "grpo" if self.run.run_rl_algorithm == "grpo" else "judgments"
        return RunFolder.iter_step(iteration, stage)

    def run_all(self) -> dict:
        import srpo.steps  # noqa: F401  (fail early on a broken install, before any work)

        self.rf.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.rf.config_path, yaml.safe_dump(self.recipe, sort_keys=True))
        from srpo.model_specs import resolve_model
        from srpo.stages.base import BaseArgs

        data_dir = str(self.rf.step_dir("data"))
        base_model = str(self.rf.step_dir("base") / MODEL)
        self.execute("base", BaseArgs(run_dir=str(self.rf.root), step="base", seed=self.run.run_seed,
                                      model_dir=resolve_model(self.run.run_model, seed=self.run.run_seed),
                                      image_processor=self.run.run_image_processor,
                                      trust_remote_code=bool(self.recipe.get("sft", {}).get("trust_remote_code"))))
        self.execute("build", self.args("build", "data"))
        if self.run.run_eval_base:
            self.execute("evaluate", self.args("eval", "base/eval", policy_dir=base_model, data_dir=data_dir))
        self.execute("sft", self.args("sft", "sft", data_dir=data_dir, model_dir=base_model), training=True)
        self.execute("evaluate", self.args("eval", RunFolder.iter_step(0, "eval"), policy_dir=self.policy_of(0),
                                           data_dir=data_dir))
        from srpo.tracking import Tracker

        tracker = Tracker([b.strip() for b in self.run.run_report_to.split(",") if b.strip()], self.rf.root,
                          self.run.run_name, {"recipe": self.recipe})
        tracker.log_iteration(0, self.rf.manifest(RunFolder.iter_step(0, "eval"))["stats"], None, None)
        decisions = []
        current = 0  # the last accepted iteration: the shipped policy
        start = 0  # the iteration the next one trains from (the gate's next_policy_iteration)
        for t in range(1, self.run.run_iterations + 1):
            def it(stage, t=t):
                return RunFolder.iter_step(t, stage)

            policy = self.policy_of(start)
            if self.run.run_rl_algorithm == "grpo":
                judged = self.grpo_step(t, policy, data_dir)
            else:
                judged = self.dpo_iteration(t, policy, data_dir)
            self.execute("evaluate", self.args("eval", it("eval"), policy_dir=self.policy_of(t), data_dir=data_dir))
            decision = self.gate_step(t)
            decisions.append(decision)
            self.track(tracker, t, decision, judged["stats"])
            if decision.decision == "accept":
                current = t
            start = decision.next_policy_iteration
            print(f"[gate] iter {t}: {decision.decision} — {'; '.join(decision.reasons)}", flush=True)
            if decision.decision == "stop":
                break
        tracker.close()
        return self.summary(decisions, current)

    def dpo_iteration(self, t: int, policy: str, data_dir: str) -> dict:
        """Iterative DPO (DREAM's loop): samples -> judgments -> pairs -> dpo; returns the judge step's manifest."""
        def it(stage):
            return RunFolder.iter_step(t, stage)

        ref = self.policy_of(0) if self.run.run_reference_policy == "sft" else policy
        self.execute("sample", self.args("sample", it("samples"), seed_offset=t, policy_dir=policy,
                                         data_dir=data_dir))
        judged = self.execute("judge", self.args("judge", it("judgments"), seed_offset=t, policy_dir=policy,
                                                 samples_dir=str(self.rf.step_dir(it("samples"))),
                                                 data_dir=data_dir))
        self.execute("pairs", self.args("pairs", it("pairs"), judgments_dir=str(self.rf.step_dir(it("judgments"))),
                                        samples_dir=str(self.rf.step_dir(it("samples"))), data_dir=data_dir))
        self.execute("dpo", self.args("dpo", it("dpo"), seed_offset=t, policy_dir=policy, ref_dir=ref,
                                      pairs_dir=str(self.rf.step_dir(it("pairs"))), data_dir=data_dir),
                     training=True)
        return judged

    def grpo_step(self, t: int, policy: str, data_dir: str) -> dict:
        """Online RL: one GRPO step (iter_NNN/grpo/), rewarded by the recipe's judge section; returns its manifest."""
        from srpo.model_specs import resolve_section

        judge = resolve_section("judge", self.recipe.get("judge", {}), self.run.run_seed)
        return self.execute("grpo", self.args("grpo", RunFolder.iter_step(t, "grpo"), seed_offset=t, policy_dir=policy,
                                              data_dir=data_dir, grpo_judge=judge), training=True)

    def track(self, tracker, t: int, decision, judge_stats: dict) -> None:
        from srpo.runfolder import read_jsonl

        eval_dir = self.rf.step_dir(RunFolder.iter_step(t, "eval"))
        judgments = read_jsonl(self.rf.step_dir(self.feedback_step(t)) / JUDGMENTS)
        if self.run.run_rl_algorithm == "grpo":  # the reward's rows: the judgment of each rewarded completion
            judgments = [r["judgment"] for r in judgments if r.get("judgment") is not None]
            tracker.log_training(t, "grpo", self.rf.log_history(self.feedback_step(t)),
                                 ("reward", "rewards/", "judge/", "loss", "kl", "entropy", "frac_reward_zero_std"))
        scores = {k: [j[k] for j in judgments if not j["failed"] and j.get(k) is not None]
                  for k in ("safety", "effectiveness", "awareness", "chain_valid", "preference")}
        items = read_jsonl(eval_dir / ITEMS)[:8]
        samples = [{"id": i["id"], "query": i["query"], "response": i["response"],
                    "scores": {k: i[k] for k in ("safe", "refused", "task_correct") if k in i}} for i in items]
        tracker.log_iteration(t, self.rf.manifest(RunFolder.iter_step(t, "eval"))["stats"], decision.to_dict(),
                              judge_stats, samples, scores)

    def gate_step(self, t: int) -> GateDecision:
        """The gate of iteration t, a step like the others (iter_NNN/gate/, manifest last)."""
        from srpo.configs import GateStepArgs

        evals = [str(self.rf.step_dir(RunFolder.iter_step(i, "eval"))) for i in range(t + 1)]
        gates = [str(self.rf.step_dir(RunFolder.iter_step(i, "gate"))) for i in range(1, t)]
        args = self.args("gate", RunFolder.iter_step(t, "gate"), cls=GateStepArgs, gate_iteration=t, eval_dirs=evals,
                         previous_gate_dirs=gates,
                         judgments_dir=str(self.rf.step_dir(self.feedback_step(t))))
        return GateDecision(**self.execute("gate", args)["stats"]["decision"])

    def summary(self, decisions: list, final_iteration: int) -> dict:
        """report/summary.json: every figure labelled by split. `heldout_*` are the final policy's *test* figures
        (reported, never decided on), `dev_*` its dev figures (what the gate decided on); each iteration row holds
        {"dev": ..., "test": ...}."""
        def splits(step: str) -> dict:
            m = self.rf.manifest(step)["stats"]["splits"]
            return {sp: {k: m[sp].get(k) for k in (*FIGURES, *COUNTS)} for sp in ("dev", "test")}

        rows = []
        base = self.rf.manifest("base/eval") if self.run.run_eval_base else None
        if base is not None:
            rows.append({"iteration": "base", "decision": "-", **splits("base/eval")})
        for i in range(len(decisions) + 1):
            rows.append({"iteration": i, "decision": "sft" if i == 0 else decisions[i - 1].decision,
                         **splits(RunFolder.iter_step(i, "eval"))})
        final = next(r for r in rows if r["iteration"] == final_iteration)
        figures = {}
        for name, row in (("", final), ("sft_", rows[1 if base is not None else 0]), ("base_", rows[0])):
            if name == "base_" and base is None:
                continue
            for key in FIGURES:
                figures[f"{name}heldout_{key}"] = row["test"][key]
            if name == "":
                figures.update({f"dev_{key}": row["dev"][key] for key in FIGURES})
        backend = self.recipe.get("judge", {}).get("judge_backend", JudgeArgs.judge_backend)
        feedback = {"judge_backend": backend, "oracle": backend == "rule", "rl_algorithm": self.run.run_rl_algorithm}
        if feedback["oracle"]:
            feedback["note"] = ("ORACLE feedback: the rule judge reads the data's labels. These figures are an upper "
                                "bound for tests, not RLAIF.")
            print(f"[note] {feedback['note']}", flush=True)
        if backend == "random":
            feedback["control"] = True
            feedback["note"] = ("CONTROL feedback: the random judge scores at random and reads nothing. These figures "
                                "are the null a judge must beat, not RLAIF.")
            print(f"[note] {feedback['note']}", flush=True)
        wall = sum(e.get("wall_time_s") or 0.0 for e in self.rf.ledger())
        summary = {**figures, "splits": {"heldout_": "test", "dev_": "dev", "decided_on": "dev"},
                   "run": self.run.run_name, "seed": self.run.run_seed, "final_iteration": final_iteration,
                   "feedback": feedback, "final_policy": self.policy_of(final_iteration), "iterations": rows,
                   "wall_time_s": round(wall, 1), "executed_steps": self.executed, "skipped_steps": self.skipped}
        atomic_write_json(self.rf.root / "report" / "summary.json", summary)
        lines = ["| iteration | split | safe rate | benign refusal | task accuracy | gate |",
                 "|---|---|---|---|---|---|"]
        lines += [f"| {r['iteration']} | {sp} | {_pct(r[sp]['safe_rate'])} | {_pct(r[sp]['benign_refusal_rate'])} | "
                  f"{_pct(r[sp]['task_accuracy'])} | {r['decision']} |" for r in rows for sp in ("dev", "test")]
        print("\n".join(lines), flush=True)  # report.md and report.html are srpo.report's to write
        from srpo.report import write_report

        print(f"report: {write_report(self.rf.root)}", flush=True)
        return summary


# The figures a summary reports per split (top level: the final policy's), and the counts its rows add.
FIGURES = ("safe_rate", "safe_rate_ci95", "benign_refusal_rate", "benign_refusal_rate_ci95", "task_accuracy",
           "task_accuracy_ci95")
COUNTS = ("n_unsafe", "n_benign")


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


@contextlib.contextmanager
def step_log(folder: Path):
    """Log records (srpo, transformers, TRL warnings) of one in-process step also go to <step>/step.log."""
    import logging

    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(folder / "step.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    loggers = [logging.getLogger(), logging.getLogger("transformers"), logging.getLogger("trl")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
        handler.close()


def run_recipe(path: str, overrides: list[str] = ()) -> dict:
    """Preflight first (a refused recipe leaves nothing on disk), then the pipeline."""
    from srpo.recipe import validate

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    driver = Driver(validate(path, overrides, preflight=True), path)
    return driver.run_all()


if __name__ == "__main__":
    run_recipe(sys.argv[1], sys.argv[2:])
