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


def gating_items(folder: str) -> list[dict]:
    """An eval step's items in its gating suites and the decision split; refuses an eval with none in a suite."""
    from srpo import gate

    suites = json.loads((Path(folder) / METRICS).read_text())["gating_suites"]
    items = gate.decision_items([{k: i[k] for k in ITEM_FIELDS if k in i} for i in read_jsonl(Path(folder) / ITEMS)],
                                suites)
    for suite in suites:
        if not any(i["suite"] == suite for i in items):
            raise ValueError(f"{folder}: gating suite {suite!r} has no item of split {gate.DECISION_SPLIT!r}; the "
                             f"gate decides on the {gate.DECISION_SPLIT} split only. Declare a dev split: rebuild the "
                             "data folder (build_dev_fraction) or give the suite's items split='dev', then re-run the "
                             "eval")
    return items


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
        evaluations = {i: gating_items(args.eval_dirs[i]) for i in (base_it, t)}
        decision = decide(evaluations, t, previous, args, judge_failure_rate=failure_rate, seed=args.seed)
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
