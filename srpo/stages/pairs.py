"""Preference pairs from the judgments (best vs worst above a margin), ready for DPO.

    srpo pairs --config runs/<name>/iter_001/pairs/step_config.yaml

Writes <step>/pairs.jsonl: {prompt_id, image, query, chosen, rejected, chosen_reward, rejected_reward}, plus
branch_step when the samples are branched (sample_mode: branched): the step both sides share the prefix up to, or
None for a prompt that was sampled whole. The manifest counts the step-level pairs.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from srpo.configs import PairArgs
from srpo.pairing import balance_by_group, best_vs_worst
from srpo.runfolder import JUDGMENTS, PAIRS, SAMPLES, data_prompts, read_jsonl, write_jsonl
from srpo.steps import StepRun


def inputs(args) -> dict:
    return {"judgments": args.judgments_dir, "samples": args.samples_dir, "data": args.data_dir}


def run(args: PairArgs) -> dict | None:
    step = StepRun.of(args, inputs(args), command="pairs")
    folder = step.folder
    if step.done():
        return None
    with step:
        data = data_prompts(args.data_dir)  # RL prompts too: they carry no label
        samples = read_jsonl(Path(args.samples_dir) / SAMPLES)
        texts = {(s["prompt_id"], s["sample_idx"]): s["response"] for s in samples}
        # Every sample of a branched prompt shares its prefix, so best-vs-worst of a prompt is a step-level pair.
        branch_step = ({s["prompt_id"]: s["branch_step"] for s in samples}
                       if any("branch_step" in s for s in samples) else None)
        pairs = best_vs_worst(read_jsonl(Path(args.judgments_dir) / JUDGMENTS), margin=args.pairs_margin,
                              safety_weight=args.pairs_safety_weight,
                              effectiveness_weight=args.pairs_effectiveness_weight,
                              awareness_weight=args.pairs_awareness_weight, format_weight=args.pairs_format_weight)
        if args.pairs_balance:
            from srpo.chain import final_answer
            from srpo.refusal import is_refusal

            # Balance what the pairs teach: as many "refuse here" as "help here" pairs (judge-agnostic: no labels
            # read).
            teaches = {p["prompt_id"]: "refuse" if is_refusal(final_answer(texts[(p["prompt_id"], p["chosen_idx"])]))
                       else "help" for p in pairs}
            before = Counter(teaches.values())
            pairs = balance_by_group(pairs, teaches, args.seed)
        rows = []
        for p in pairs:
            pair = data[p["prompt_id"]]
            rows.append({**p, "image": pair["image"], "query": pair["query"], "label": pair.get("label"),
                         "chosen": texts[(p["prompt_id"], p["chosen_idx"])],
                         "rejected": texts[(p["prompt_id"], p["rejected_idx"])],
                         **({"branch_step": branch_step[p["prompt_id"]]} if branch_step is not None else {})})
        write_jsonl(folder / PAIRS, rows)
        step_level = Counter(r["branch_step"] for r in rows if r.get("branch_step") is not None)
        stats = {"pairs": len(rows), "prompts": len({k[0] for k in texts}),
                 "by_label": dict(Counter(r["label"] or "unlabelled" for r in rows)),
                 "teaches_before_balance": dict(before) if args.pairs_balance else None,
                 "step_level_pairs": sum(step_level.values()), "step_level_by_branch_step": dict(step_level),
                 "mean_margin": round(sum(r["chosen_reward"] - r["rejected_reward"] for r in rows) / len(rows), 6)
                 if rows else None}
        return step.finish([PAIRS], stats)


def main(argv=None) -> None:
    from srpo.cli_util import parse_step_args

    run(parse_step_args(PairArgs, argv))


if __name__ == "__main__":
    main()
