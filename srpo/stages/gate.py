"""The gate of iteration t: accept, roll back or stop, from the eval metrics of iterations 0..t and the earlier
decisions (the pure rule is srpo/gate.py).

    srpo gate --config runs/<name>/iter_001/gate/step_config.yaml

Reads the eval steps of iterations 0..t (their manifests' stats), the judgments step of iteration t (its failure rate)
and the gate steps of iterations 1..t-1 (their decisions); writes <step>/gate.json and manifest.json. Its fingerprint
hashes the thresholds and the content of all of those, so a changed metric anywhere upstream re-decides.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from srpo.configs import GateArgs, GateStepArgs
from srpo.runfolder import GATE, MANIFEST, atomic_write_json
from srpo.steps import StepRun


def inputs(args) -> dict:
    out = {f"eval_{i:03d}": d for i, d in enumerate(args.eval_dirs)}
    out.update({f"gate_{i + 1:03d}": d for i, d in enumerate(args.previous_gate_dirs)})
    out["judgments"] = args.judgments_dir
    return out


def _stats(folder: str) -> dict:
    return json.loads((Path(folder) / MANIFEST).read_text())["stats"]


def run(args: GateStepArgs) -> dict | None:
    from srpo.gate import GateDecision, decide

    t = args.gate_iteration
    if len(args.eval_dirs) != t + 1 or len(args.previous_gate_dirs) != t - 1:
        raise ValueError(f"the gate of iteration {t} needs the eval steps of iterations 0..{t} and the gate steps of "
                         f"1..{t - 1}; got {len(args.eval_dirs)} and {len(args.previous_gate_dirs)}")
    step = StepRun.of(args, inputs(args), command="gate")
    if step.done():
        return None
    with step:
        history = {i: dict(_stats(d)) for i, d in enumerate(args.eval_dirs)}
        history[t]["judge_failure_rate"] = _stats(args.judgments_dir).get("judge_failure_rate", 0.0)
        previous = [GateDecision(**json.loads((Path(d) / GATE).read_text())["decision"])
                    for d in args.previous_gate_dirs]
        decision = decide(history, t, previous, args)
        thresholds = {f.name: getattr(args, f.name) for f in dataclasses.fields(GateArgs)}
        atomic_write_json(step.folder / GATE, {"decision": decision.to_dict(), "thresholds": thresholds,
                                               "metrics": history})
        return step.finish([GATE], {"decision": decision.to_dict()})


def main(argv=None) -> None:
    from srpo.cli_util import parse_step_args

    run(parse_step_args(GateStepArgs, argv))


if __name__ == "__main__":
    main()
