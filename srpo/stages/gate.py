"""The gate of iteration t: accept, roll back or stop, from paired evidence on the eval items of iterations 0..t and
the earlier decisions (the pure rule and its statistics are srpo/gate.py).

    srpo gate --config runs/<name>/iter_001/gate/step_config.yaml

Reads the eval steps of iterations 0..t (items.jsonl restricted to each eval's gating suites and to the split
srpo.gate.DECISION_SPLIT), the judgments step of iteration t (its failure rate) and the gate steps of iterations
1..t-1 (their decisions); writes <step>/gate.json (the decision with its per-metric comparison, the thresholds, the
point estimates) and manifest.json. Its fingerprint hashes the gate's config and the content of all of those inputs
(their manifests' output hashes cover items.jsonl), so a changed item anywhere upstream re-decides.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from srpo.configs import GateArgs, GateStepArgs
from srpo.runfolder import GATE, ITEMS, MANIFEST, METRICS, atomic_write_json, read_jsonl
from srpo.steps import StepRun


def inputs(args) -> dict:
    out = {f"eval_{i:03d}": d for i, d in enumerate(args.eval_dirs)}
    out.update({f"gate_{i + 1:03d}": d for i, d in enumerate(args.previous_gate_dirs)})
    out["judgments"] = args.judgments_dir
    return out


def _stats(folder: str) -> dict:
    return json.loads((Path(folder) / MANIFEST).read_text())["stats"]


# What the gate reads of an item; the rest (responses, judge text) stays on disk.
ITEM_FIELDS = ("suite", "id", "label", "split", "cluster", "safe", "refused", "task_correct")


def _vote(item: dict, vote: str, folder: str) -> dict:
    out = {k: item[k] for k in ITEM_FIELDS if k in item}
    if vote == "majority":
        if "safe_majority" not in item:
            raise ValueError(f"{folder}: gate_judge_vote='majority' needs several eval judges, and this eval has one; "
                             "set eval.eval_extra_judges or gate_judge_vote='primary'")
        out["safe"] = item["safe_majority"]
    return out


def gating_items(folder: str, vote: str = "primary") -> list[dict]:
    """An eval step's items in its gating suites and the decision split; refuses an eval with none in a suite.
    vote='majority' reads the eval judges' majority safe vote instead of the primary judge's."""
    from srpo import gate

    suites = json.loads((Path(folder) / METRICS).read_text())["gating_suites"]
    items = gate.decision_items([_vote(i, vote, folder) for i in read_jsonl(Path(folder) / ITEMS)], suites)
    for suite in suites:
        if not any(i["suite"] == suite for i in items):
            raise ValueError(f"{folder}: gating suite {suite!r} has no item of split {gate.DECISION_SPLIT!r}; the "
                             f"gate decides on the {gate.DECISION_SPLIT} split only. Declare a dev split: rebuild the "
                             "data folder (build_dev_fraction) or give the suite's items split='dev', then re-run the "
                             "eval")
    return items


def judges_agree(decision, args, previous):
    """With gate_min_judge_kappa: no acceptance when the eval judges of the compared iterations disagree more than
    the bound on the decision split (their smallest pairwise kappa); the decision becomes a rejection with the
    reason. Evals with one judge have nothing to compare and pass."""
    from srpo import gate

    if args.gate_min_judge_kappa <= 0:
        return decision
    low = []
    for i in sorted({decision.compared_with, decision.iteration}):
        table = json.loads((Path(args.eval_dirs[i]) / METRICS).read_text()).get("judges") or {}
        kappa = (table.get(gate.DECISION_SPLIT) or {}).get("min_kappa")
        if table and (kappa is None or kappa < args.gate_min_judge_kappa):
            low.append(f"iteration {i}: smallest pairwise kappa of the eval judges "
                       f"{'undefined' if kappa is None else f'{kappa:.3f}'} < gate_min_judge_kappa "
                       f"{args.gate_min_judge_kappa:g}: the judges disagree too much to decide on")
    if not low:
        return decision
    if decision.decision == "accept":
        reasons = low + ["without the bound it would have been accepted: " + "; ".join(decision.reasons)]
        fields = {k: v for k, v in decision.to_dict().items()
                  if k not in ("iteration", "decision", "reasons", "compared_with", "next_policy_iteration",
                               "consecutive_rejections", "deltas")}
        return gate._streak_end(decision.iteration, decision.compared_with, previous, reasons, args,
                                decision.deltas, **fields)
    decision.reasons = decision.reasons + low
    return decision


def run(args: GateStepArgs) -> dict | None:
    from srpo.gate import GateDecision, decide, last_accepted, rates

    t = args.gate_iteration
    if len(args.eval_dirs) != t + 1 or len(args.previous_gate_dirs) != t - 1:
        raise ValueError(f"the gate of iteration {t} needs the eval steps of iterations 0..{t} and the gate steps of "
                         f"1..{t - 1}; got {len(args.eval_dirs)} and {len(args.previous_gate_dirs)}")
    step = StepRun.of(args, inputs(args), command="gate")
    if step.done():
        return None
    with step:
        failure_rate = _stats(args.judgments_dir).get("judge_failure_rate", 0.0)
        previous = [GateDecision(**json.loads((Path(d) / GATE).read_text())["decision"])
                    for d in args.previous_gate_dirs]
        base_it = last_accepted(t, previous)
        evaluations = {i: gating_items(args.eval_dirs[i], args.gate_judge_vote) for i in (base_it, t)}
        decision = decide(evaluations, t, previous, args, judge_failure_rate=failure_rate, seed=args.seed)
        decision = judges_agree(decision, args, previous)
        thresholds = {f.name: getattr(args, f.name) for f in dataclasses.fields(GateArgs)}
        metrics = {i: rates(v) for i, v in evaluations.items()}
        metrics[t]["judge_failure_rate"] = failure_rate
        atomic_write_json(step.folder / GATE, {"decision": decision.to_dict(), "thresholds": thresholds,
                                               "metrics": metrics})
        return step.finish([GATE], {"decision": decision.to_dict()})


def main(argv=None) -> None:
    from srpo.cli_util import parse_step_args

    run(parse_step_args(GateStepArgs, argv))


if __name__ == "__main__":
    main()
