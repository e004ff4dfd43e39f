"""One block of online RL (TRL GRPOTrainer) from the current policy, rewarded by one of srpo's judges.

    srpo grpo --config runs/<name>/iter_001/grpo/step_config.yaml
    accelerate launch --config_file launch/accelerate/zero2.yaml -m srpo.stages.grpo --config <same>

The iteration's RL algorithm when a recipe sets run_rl_algorithm: grpo (iterative DPO stays the default): K
completions per prompt (num_generations) generated through TRL's own path (HF generate; vLLM with use_vllm on a GPU),
each rewarded by the adapter of srpo/judges/rewards.py around the recipe's judge (srpo/judges/scorers.py), then
GRPO's group-normalised policy gradient. The self and dream judges are this step's starting policy, frozen: each
prompt's self-assessment (or risk context) is made once. A judge failure is a missing reward: the completion is
unscorable (advantage 0), counted in the manifest (judge_failure_rate, which the gate reads as it reads the judge
step's).

Prompts: the data folder's RL prompts when it has any (grpo_prompt_set: auto), else its SFT training prompts. The KL
reference (beta > 0) is the starting policy: TRL reloads it from policy_dir (or disables the new LoRA adapter).

Writes <step>/model/, log_history.json, judgments.jsonl (one row per rewarded completion: optimizer step, prompt,
completion, judgment with its raw text, reward components, reward) and manifest.json. Resumes from its last trainer
checkpoint after a kill; the judgment rows of steps after that checkpoint are dropped and made again.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from srpo.runfolder import JUDGMENTS, LOG_HISTORY, MODEL, choose_prompts
from srpo.steps import StepRun, is_main_process, model_input
from srpo.train_configs import GRPOStageConfig


def inputs(args) -> dict:
    out = {"policy": model_input(args.policy_dir), "data": args.data_dir}
    judge = args.grpo_judge or {}
    if judge.get("judge_backend") == "hf" or (judge.get("judge_backend") == "dream"
                                              and judge.get("judge_dream_model") == "hf"):
        out["judge_model"] = model_input(judge["judge_model"])
    return out


def grpo_rows(prompts: list[dict], data_dir: Path) -> list[dict]:
    """TRL's conversational prompt rows, with the image column VLM generation reads and the id the reward needs."""
    from srpo.models import prompt_row

    return [{**prompt_row(p["query"], p.get("image"), data_dir), "prompt_id": p["id"]} for p in prompts]


class JudgmentLog:
    """Each process appends its reward rows to its own file; rank 0 merges them when training is done."""

    def __init__(self, folder: Path, rank: int):
        self.folder, self.path = folder, folder / f"judgments.rank{rank}.jsonl"

    def drop_from(self, step: int) -> None:
        """Resuming at optimizer step `step`: rows of steps >= it are made again."""
        from srpo.runfolder import read_complete_jsonl, write_jsonl

        if self.path.exists():
            write_jsonl(self.path, [r for r in read_complete_jsonl(self.path) if (r["global_step"] or 0) < step])

    def append(self, rows: list[dict]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))

    def merge(self) -> list[dict]:
        from srpo.runfolder import read_complete_jsonl, write_jsonl

        rows = [r for p in sorted(self.folder.glob("judgments.rank*.jsonl")) for r in read_complete_jsonl(p)]
        rows.sort(key=lambda r: (r["global_step"] or 0, r["prompt_id"], r["completion"]))
        write_jsonl(self.folder / JUDGMENTS, rows)
        for p in self.folder.glob("judgments.rank*.jsonl"):
            p.unlink()
        return rows


class _Records(list):
    """The reward's record sink: rows go to the process's judgment file as each batch is rewarded."""

    def __init__(self, log: JudgmentLog):
        super().__init__()
        self.log = log

    def extend(self, rows) -> None:
        self.log.append(list(rows))


def run(args: GRPOStageConfig) -> dict | None:
    step = StepRun.of(args, inputs(args), command="grpo")
    folder = step.folder
    if step.done():
        return None
    with step:
        from datasets import Dataset
        from transformers.trainer_utils import get_last_checkpoint
        from trl import GRPOTrainer

        from srpo.judges.rewards import AsyncJudgeReward, JudgeReward, RewardWeights
        from srpo.judges.scorers import make_scorer
        from srpo.models import load_policy
        from srpo.training import lora_config, prepare_model, train_and_save

        judge = args.judge_args()
        data_dir = Path(args.data_dir)
        prompt_set, prompts, available = choose_prompts(data_dir, args.grpo_prompt_set)
        if not prompts:
            raise ValueError(f"{data_dir} has no prompts to train on (prompt set {prompt_set!r}: {available})")
        args.output_dir = str(folder / "trainer")
        started = time.time()
        scorer = make_scorer(judge, prompts)  # the self-judge assesses with the starting policy, before any update
        assess_seconds = time.time() - started
        rank = int(os.environ.get("RANK", "0"))
        log = JudgmentLog(folder, rank)
        last = get_last_checkpoint(args.output_dir) if Path(args.output_dir).exists() else None
        start = int(Path(last).name.split("-")[-1]) if last else 0  # the optimizer step this execution starts at
        log.drop_from(start)
        weights = RewardWeights(safety=args.grpo_safety_weight, effectiveness=args.grpo_effectiveness_weight,
                                awareness=args.grpo_awareness_weight, format=args.grpo_format_weight,
                                consistency=args.grpo_consistency_weight, length=args.grpo_length_weight,
                                max_tokens=args.grpo_max_tokens or args.max_completion_length)
        reward = (AsyncJudgeReward if scorer.is_async else JudgeReward)(
            scorer, {p["id"]: p for p in prompts}, weights, records=_Records(log))
        model, processor = load_policy(args.policy_dir, trust_remote_code=args.trust_remote_code,
                                       load_in_4bit=args.load_in_4bit, train_adapter=True)
        model = prepare_model(model, args)
        trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args,
                              train_dataset=Dataset.from_list(grpo_rows(prompts, data_dir)),
                              processing_class=processor,
                              peft_config=None if hasattr(model, "peft_config") else lora_config(args))
        train_started = time.time()
        stats = train_and_save(trainer, processor, args, folder)
        train_seconds = time.time() - train_started
        if not is_main_process():
            return step.finish([MODEL, LOG_HISTORY, JUDGMENTS])
        rows = log.merge()
        history = trainer.state.log_history
        rewards = [h["reward"] for h in history if "reward" in h and h["reward"] == h["reward"]]  # not NaN
        failed = sum(r["reward"] is None for r in rows)
        reasons: dict[str, int] = {}
        for r in rows:
            if r["reward"] is None:
                why = (r["judgment"] or {}).get("failure") or "judge_failure"
                reasons[why] = reasons.get(why, 0) + 1
        trained = sum((r["global_step"] or 0) >= start for r in rows) / args.num_generations  # prompts, this run
        stats.update(
            algorithm="grpo", prompt_set=prompt_set, prompts=len(prompts), available_prompts=available,
            num_generations=args.num_generations, judge_backend=judge.judge_backend, judge=scorer.describe(),
            oracle=judge.judge_backend == "rule", judgments=len(rows), failures=failed,
            judge_failure_rate=failed / len(rows) if rows else 0.0,
            judge_failure_reasons=dict(sorted(reasons.items())),
            reward_weights={k: v for k, v in vars(weights).items()}, first_reward=rewards[0] if rewards else None,
            final_reward=rewards[-1] if rewards else None,
            mean_reward=_mean(r["reward"] for r in rows if r["reward"] is not None),
            **{f"mean_{name}": _mean(r["components"][name] for r in rows if name in r["components"])
               for name in ("judge", "format", "consistency", "length")},
            frac_reward_zero_std=_mean(h["frac_reward_zero_std"] for h in history if "frac_reward_zero_std" in h),
            assess_seconds=round(assess_seconds, 3), train_seconds=round(train_seconds, 3),
            judge_seconds=round(assess_seconds + reward.judge_seconds, 3),  # this process's: assessing + rewarding
            prompts_per_second=round(trained / train_seconds, 4) if train_seconds else None,
            resumed_from=Path(last).name if last else None)
        return step.finish([MODEL, LOG_HISTORY, JUDGMENTS], stats)


def _mean(values) -> float | None:
    values = list(values)
    return round(sum(values) / len(values), 6) if values else None


def main(argv=None) -> None:
    from srpo.cli_util import parse_step_args
    from srpo.training import distributed_main

    distributed_main(run, parse_step_args(GRPOStageConfig, argv))


if __name__ == "__main__":
    main()
