"""Judge every sampled response: safety, effectiveness, risk awareness, or an explicit failure.

    srpo judge --config runs/<name>/iter_001/judgments/step_config.yaml

Writes <step>/judgments.jsonl, appended per prompt group so a killed run resumes where it stopped. Failures are
counted in the manifest (judge_failure_rate) and never become scores.

A prompt is a pair of the data folder or one of its RL prompts (rl_prompts.jsonl), which have an image and a query
and no label: the self, dream and model judges need no more. The rule judge is oracle feedback that reads labels, so
it refuses samples of RL prompts instead of guessing one.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from srpo.configs import JudgeArgs
from srpo.judges.pairwise import PAIRWISE_PROMPT_VERSION, PairwiseStats, judge_groups_pairwise
from srpo.runfolder import JUDGMENTS, SAMPLES, data_prompts, read_complete_jsonl, read_jsonl
from srpo.steps import StepRun, append_batches, model_input


def inputs(args) -> dict:
    out = {"samples": args.samples_dir, "data": args.data_dir}
    if args.judge_backend == "self" or (args.judge_backend == "dream" and not args.judge_dream_model):
        out["policy"] = model_input(args.policy_dir)  # the judge's model is an input like any other
    return out


def run(args: JudgeArgs) -> dict | None:
    step = StepRun.of(args, inputs(args), command="judge")
    folder = step.folder
    if step.done():
        return None
    with step:
        from srpo.judges.base import JUDGE_PROMPT_VERSION
        from srpo.judges.verdict import EVAL_JUDGE_PROMPT_VERSION

        pairs = data_prompts(args.data_dir)
        by_prompt = defaultdict(list)
        for s in read_jsonl(Path(args.samples_dir) / SAMPLES):
            by_prompt[s["prompt_id"]].append(s)
        unlabelled = sorted(pid for pid in by_prompt if "label" not in pairs[pid])
        if args.judge_backend == "rule" and unlabelled:
            raise ValueError(f"judge_backend='rule' is oracle feedback and reads each prompt's label, but "
                             f"{len(unlabelled)} sampled prompt(s) (e.g. {unlabelled[0]!r}) are RL prompts, which "
                             "have none; judge them with self, dream, openai or hf, or sample the labelled SFT "
                             "prompts (sample_prompt_set: train) for an oracle upper bound")
        out_path = folder / JUDGMENTS
        done = {r["prompt_id"] for r in read_complete_jsonl(out_path)}
        todo = [pid for pid in sorted(by_prompt) if pid not in done]
        assessments = {}
        if args.judge_backend == "self" and todo:
            from srpo.judges.self_judge import self_assess
            from srpo.models import load_policy, pair_inputs
            from srpo.sharding import inference_device

            model, processor = load_policy(args.policy_dir)
            model.to(inference_device()).eval()
            texts = self_assess(model, processor, pair_inputs(Path(args.data_dir), [pairs[p] for p in todo]),
                                max_new_tokens=args.judge_max_new_tokens, batch_size=args.judge_batch_size,
                                seed=args.seed,
                                observe_query=args.judge_self_observe_query if args.judge_self_observe == "image"
                                else None)
            assessments = dict(zip(todo, texts, strict=True))
        model_judge = None
        if args.judge_backend in ("openai", "hf") and todo:
            from srpo.judges.model_judge import make_model_judge

            model_judge = make_model_judge(args, args.run_dir)
        from srpo.judges.scorers import make_dream_ask

        dream_ask, dream_judge = make_dream_ask(args) if args.judge_backend == "dream" and todo else (None, None)
        pairwise = PairwiseStats()
        # Model judges get a chunk of prompts per call (the endpoint client runs its requests concurrently); the
        # offline judges one prompt at a time. Each chunk is appended whole, so a killed step resumes after the last
        # one.
        chunk = args.judge_batch_size if model_judge is not None or dream_ask is not None else 1
        data_dir = Path(args.data_dir)
        def produce(prompt_ids):
            groups = [(pairs[pid], sorted(by_prompt[pid], key=lambda s: s["sample_idx"])) for pid in prompt_ids]
            if dream_ask is not None:
                from srpo.judges.dream import judge_groups as judge_groups_dream

                # Risk contexts of this chunk's prompts first (once each), then every sample against its own.
                return judge_groups_dream(dream_ask, groups, data_dir, m=args.judge_dream_samples,
                                          global_weight=args.judge_dream_global_weight,
                                          observation_weight=args.judge_dream_observation_weight)
            if model_judge is not None and args.judge_mode == "pairwise":
                judged = judge_groups_pairwise(model_judge, groups, data_dir, seed=args.seed, stats=pairwise)
            elif model_judge is not None:
                from srpo.judges.model_judge import judge_groups

                judged = judge_groups(model_judge, groups, data_dir)
            else:
                judged = [[_judge(args.judge_backend, pair, assessments.get(pair["id"]), s, args.seed)
                           for s in group] for pair, group in groups]
            return [j.to_dict() for js in judged for j in js]

        append_batches(out_path, [todo[i:i + chunk] for i in range(0, len(todo), chunk)], produce, step=args.step,
                       desc="judging")
        rows = read_complete_jsonl(out_path)
        scored = [r for r in rows if not r["failed"]]
        if args.judge_mode == "pairwise":
            version = PAIRWISE_PROMPT_VERSION
        elif args.judge_backend == "dream":
            from srpo.judges.dream import DREAM_PROMPT_VERSION as version
        else:
            version = JUDGE_PROMPT_VERSION if model_judge is None else EVAL_JUDGE_PROMPT_VERSION
        stats = {
            "judge_backend": args.judge_backend,
            "judge_mode": args.judge_mode,
            "judge_prompt_version": version,
            "judge": model_judge.describe() if model_judge is not None else _describe(args, dream_judge),
            "judge_seconds": round(time.time() - step.started, 3),
            "judgments": len(rows),
            "unlabelled_prompts": len(unlabelled),  # RL prompts: judged with no label to read
            "failures": len(rows) - len(scored),
            "judge_failure_rate": (len(rows) - len(scored)) / len(rows) if rows else 0.0,
            "mean_safety": _mean(r["safety"] for r in scored if r["safety"] is not None),
            "mean_effectiveness": _mean(r["effectiveness"] for r in scored if r["effectiveness"] is not None),
            "mean_awareness": _mean(r["awareness"] for r in scored if r["awareness"] is not None),
            "mean_chain_valid": _mean(r["chain_valid"] for r in scored if r.get("chain_valid") is not None),
        }
        if args.judge_mode == "pairwise":
            # Comparisons of this execution only (a resumed step counts what it asked itself).
            stats.update(pairwise.to_dict(), mean_preference=_mean(r["preference"] for r in scored))
        if args.judge_backend == "dream":
            from srpo.judges.dream import manifest_stats

            stats.update(manifest_stats(rows))
        if args.judge_backend == "self" and args.judge_self_observe == "image":
            from srpo.judges.self_judge import visual_agreed

            agrees = [visual_agreed(r["raw"]) for r in scored]
            stats["visual_agreement"] = _mean(agrees)  # samples whose Visual step agrees with the image-only pass
        return step.finish([JUDGMENTS], stats)


def _describe(args, dream_client) -> dict:
    if args.judge_backend == "self" and args.judge_self_observe == "image":
        return {"backend": "self", "observe": "image", "observe_query": args.judge_self_observe_query}
    if args.judge_backend != "dream":
        return {"backend": args.judge_backend}
    model = {"": args.policy_dir, "hf": args.judge_model, "openai": args.judge_model}[args.judge_dream_model]
    out = {"backend": "dream", "answered_by": args.judge_dream_model or "policy", "model": model,
           "samples": args.judge_dream_samples, "temperature": args.judge_dream_temperature,
           "global_weight": args.judge_dream_global_weight,
           "observation_weight": args.judge_dream_observation_weight}
    return {**out, **dream_client.stats()} if dream_client is not None else out


def _judge(backend: str, pair: dict, assessment, sample: dict, seed: int = 0):
    if backend == "self":
        from srpo.judges.self_judge import grade

        return grade(pair["id"], sample["sample_idx"], assessment, sample["response"])
    if backend == "random":
        from srpo.judges.scorers import random_judgment

        return random_judgment(seed, pair["id"], sample["sample_idx"])
    from srpo.judges.rule import judge_rule

    return judge_rule(pair, sample["sample_idx"], sample["response"])


def _mean(values) -> float | None:
    values = list(values)
    return round(sum(values) / len(values), 6) if values else None


def main(argv=None) -> None:
    from srpo.cli_util import parse_step_args

    run(parse_step_args(JudgeArgs, argv))


if __name__ == "__main__":
    main()
