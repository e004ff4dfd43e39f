"""The GRPO step (srpo/stages/grpo.py) in the pipeline: run_rl_algorithm grpo through `srpo run`, the judge's
failures as missing rewards up to the gate, and a SIGKILL after a checkpoint resuming to the uninterrupted weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "recipes" / "tiny" / "smoke.yaml")
GRPO = ["run.run_rl_algorithm=grpo", "grpo.max_steps=3", "grpo.max_completion_length=48", "grpo.learning_rate=1e-4",
        "grpo.logging_steps=1", "grpo.save_steps=2", "grpo.disable_tqdm=true", "grpo.grpo_format_weight=0.5"]

pytestmark = pytest.mark.slow


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _max_delta(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def grpo_run(tiny_model, tmp_path_factory):
    from srpo.driver import Driver
    from srpo.recipe import load_recipe

    runs = tmp_path_factory.mktemp("runs")
    driver = Driver(load_recipe(SMOKE, [f"run.run_runs_dir={runs}", *GRPO]), SMOKE)
    summary = driver.run_all()
    return runs / "tiny-smoke", summary, driver


def test_grpo_iterations_train_evaluate_and_gate_like_dpo_ones(grpo_run):
    run_dir, summary, _ = grpo_run
    ledger = [json.loads(line)["step"] for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    assert ledger[:5] == ["base", "data", "base/eval", "sft", "iter_000/eval"]
    assert [s for s in ledger if s.startswith("iter_001")] == ["iter_001/grpo", "iter_001/eval", "iter_001/gate"]
    assert not (run_dir / "iter_001" / "samples").exists() and not (run_dir / "iter_001" / "dpo").exists()
    step = run_dir / "iter_001" / "grpo"
    manifest = json.loads((step / "manifest.json").read_text())
    stats = manifest["stats"]
    assert manifest["command"].startswith("srpo grpo --config ")
    assert stats["algorithm"] == "grpo" and stats["global_step"] == 3 and stats["prompt_set"] == "train"
    assert stats["oracle"] is True and stats["judge"] == {"backend": "rule", "oracle": True}
    rows = [json.loads(line) for line in (step / "judgments.jsonl").read_text().splitlines()]
    assert len(rows) == stats["judgments"] == 3 * 8  # three steps of 2 prompts x 4 completions
    assert sorted({r["global_step"] for r in rows}) == [0, 1, 2]
    assert all(set(r["components"]) == {"judge", "format"} for r in rows)
    assert all(r["reward"] == pytest.approx(r["components"]["judge"] + 0.5 * r["components"]["format"])
               for r in rows)
    assert stats["judge_failure_rate"] == 0.0 and stats["prompts_per_second"] > 0
    history = json.loads((step / "log_history.json").read_text())
    logged = {k for h in history for k in h}
    assert {"reward", "rewards/judge/mean", "rewards/format/mean", "judge/failure_rate", "loss"} <= logged
    gate = json.loads((run_dir / "iter_001" / "gate" / "gate.json").read_text())
    assert gate["metrics"]["1"]["judge_failure_rate"] == 0.0  # read from the grpo step, as from a judge step
    assert summary["feedback"] == {"judge_backend": "rule", "oracle": True, "rl_algorithm": "grpo",
                                   "note": summary["feedback"]["note"]}
    final = summary["final_iteration"]
    assert summary["final_policy"] == str(run_dir / ("sft" if final == 0 else f"iter_{final:03d}/grpo") / "model")
    report = (run_dir / "report" / "report.md").read_text()
    assert "ORACLE" in report


def test_tensorboard_has_the_reward_curves_and_the_judge_failure_rate(grpo_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _, _ = grpo_run
    acc = EventAccumulator(str(run_dir / "tracking" / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    for key in ("rewards/judge/mean", "rewards/format/mean", "judge/failure_rate", "reward", "loss"):
        steps = [e.step for e in acc.Scalars(f"grpo/iter_001/{key}")]
        assert steps == [1, 2, 3], (key, steps)  # every logging step of the GRPO step
    for tag in ("judge/judge_failure_rate", "judge/mean_reward", "eval/test/safe_rate", "gate/accepted"):
        assert tag in scalars, (tag, scalars)


def test_rerun_of_a_grpo_run_redoes_nothing(grpo_run):
    run_dir, _, driver = grpo_run
    from srpo.driver import Driver

    again = Driver(driver.recipe, SMOKE)
    again.run_all()
    assert again.executed == []


def test_a_judge_that_always_fails_teaches_nothing_and_the_gate_refuses(tiny_model, tmp_path, monkeypatch):
    """An endpoint judge that answers no verdict (the loopback server answers risk chains): every completion is
    unscorable, every advantage 0 although the format reward would have scored it, the weights stay the starting
    policy's, and the judge failure rate blocks the gate whatever the metrics say."""
    from srpo.driver import Driver
    from srpo.recipe import load_recipe
    from srpo.testing.fault_server import FaultServer

    monkeypatch.setenv("SRPO_TEST_JUDGE_KEY", "sk-test")
    with FaultServer() as srv:
        recipe = load_recipe(SMOKE, [f"run.run_runs_dir={tmp_path}", "run.run_iterations=1",
                                     "judge.judge_backend=openai", "judge.judge_model=judge",
                                     f"judge.judge_base_url={srv.url}", "judge.judge_api_key_env=SRPO_TEST_JUDGE_KEY",
                                     "run.run_report_to=none", *GRPO])
        summary = Driver(recipe, SMOKE).run_all()
    run_dir = tmp_path / "tiny-smoke"
    stats = json.loads((run_dir / "iter_001" / "grpo" / "manifest.json").read_text())["stats"]
    assert stats["judge_failure_rate"] == 1.0 and stats["failures"] == stats["judgments"] == 24
    assert stats["judge_failure_reasons"] == {"unparseable_judge_output": 24}
    assert stats["mean_reward"] is None  # nothing was scored
    assert srv.requests_received > 0
    assert _max_delta(_weights(run_dir / "sft" / "model"), _weights(run_dir / "iter_001" / "grpo" / "model")) == 0
    gate = json.loads((run_dir / "iter_001" / "gate" / "gate.json").read_text())["decision"]
    assert gate["decision"] != "accept" and any("judge failed on 100.0%" in r for r in gate["reasons"])
    assert summary["final_iteration"] == 0


@pytest.mark.chaos
def test_grpo_step_killed_after_a_checkpoint_resumes_to_the_uninterrupted_weights(grpo_run, tmp_path):
    """`srpo grpo --config` (the manifest's command) run twice: once through, once SIGKILLed right after its first
    checkpoint (step 2 of 4) and run again. The second run resumes from checkpoint-2 (weights, optimizer, RNG) and ends
    with the same weights and the same judgment rows."""
    run_dir, _, _ = grpo_run
    config = yaml.safe_load((run_dir / "iter_001" / "grpo" / "step_config.yaml").read_text())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def launch(name: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        values = {**config, "step": name, "max_steps": 4, "save_steps": 2, "save_strategy": "steps",
                  "output_dir": str(run_dir / name / "trainer")}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(values))
        return subprocess.run([sys.executable, "-m", "srpo.cli", "grpo", "--config", str(path)], cwd=ROOT,
                              env={**env, **(extra_env or {})}, capture_output=True, text=True, timeout=600)

    clean = launch("grpo_clean")
    assert clean.returncode == 0, clean.stderr[-3000:]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([{"step": "grpo_killed", "event": "checkpoint", "after": 1}]))
    killed = launch("grpo_killed", {"SRPO_CHAOS_PLAN": str(plan)})
    assert killed.returncode != 0 and json.loads(plan.read_text())[0]["fired"], killed.stderr[-3000:]
    folder = run_dir / "grpo_killed"
    assert not (folder / "manifest.json").exists()
    assert sorted(p.name for p in (folder / "trainer").glob("checkpoint-*")) == ["checkpoint-2"]
    resumed = launch("grpo_killed", {"SRPO_CHAOS_PLAN": str(plan)})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    stats = json.loads((folder / "manifest.json").read_text())["stats"]
    assert stats["resumed_from"] == "checkpoint-2" and stats["global_step"] == 4
    delta = _max_delta(_weights(run_dir / "grpo_clean" / "model"), _weights(folder / "model"))
    print(f"\nGRPO killed after step 2 of 4, resumed: max |dweight| {delta:.3g} vs the uninterrupted run", flush=True)
    assert delta <= 1e-6
    rows = [(folder / "judgments.jsonl").read_text(), (run_dir / "grpo_clean" / "judgments.jsonl").read_text()]
    assert rows[0] == rows[1]  # steps 3-4's rows were made again, once; 1-2's kept from before the kill
    assert not list(folder.glob("judgments.rank*.jsonl"))


def test_grpo_trains_a_lora_adapter_that_the_evaluator_loads(grpo_run, tmp_path):
    """use_lora: the step trains and saves an adapter on the starting policy (TRL's reference is the adapter
    disabled); the policy folder loads merged, as the eval step loads it."""
    from srpo.models import load_policy
    from srpo.stages import grpo
    from srpo.train_configs import GRPOStageConfig

    run_dir, _, _ = grpo_run
    config = yaml.safe_load((run_dir / "iter_001" / "grpo" / "step_config.yaml").read_text())
    config.update(step="grpo_lora", output_dir=str(run_dir / "grpo_lora" / "trainer"), use_lora=True, lora_r=4,
                  lora_alpha=8, max_steps=2, learning_rate=1e-3, beta=0.04)
    grpo.run(GRPOStageConfig(**config))
    model_dir = run_dir / "grpo_lora" / "model"
    assert (model_dir / "adapter_config.json").exists() and (model_dir / "adapter_model.safetensors").exists()
    saved = json.loads((model_dir / "adapter_config.json").read_text())
    assert saved["r"] == 4 and "vision_tower" not in json.dumps(saved["target_modules"])
    model, _ = load_policy(str(model_dir))
    assert not hasattr(model, "peft_config")  # merged for generation
    history = json.loads((run_dir / "grpo_lora" / "log_history.json").read_text())
    assert any("kl" in h for h in history)  # beta > 0: the KL to the adapter-disabled policy is measured


def test_srpo_chat_answers_with_a_runs_policy_chain_and_answer_apart(grpo_run):
    run_dir, summary, _ = grpo_run
    image = next((run_dir / "data" / "images").glob("*.png"))
    cmd = [sys.executable, "-m", "srpo.cli", "chat", str(run_dir), "--image", str(image), "--max-new-tokens", "64"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([*cmd, "--json"], input="What is this?\nHow do I clean it?\n", cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    answers = [json.loads(line) for line in out.stdout.splitlines()]
    assert [a["query"] for a in answers] == ["What is this?", "How do I clean it?"]
    assert all(a["policy"] == summary["final_policy"] for a in answers)
    from srpo.chain import parse_chain

    for a in answers:  # the chain's steps and the answer, apart
        assert set(a["chain"]) <= {"Visual", "Text", "Combined", "Risk", "Consequences", "Strategy"}
        parsed = parse_chain(a["raw"])
        assert a["answer"] == parsed.fields.get("answer", a["raw"]).strip() and a["problems"] == parsed.errors
    sft = subprocess.run([*cmd, "--iteration", "0", "--query", "What is this?"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert sft.returncode == 0 and "reasoning chain:" in sft.stdout and "answer:" in sft.stdout, sft.stderr[-2000:]
    missing = subprocess.run([*cmd, "--iteration", "9", "--query", "x"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert missing.returncode == 2 and "no trained policy for iteration 9" in missing.stderr
