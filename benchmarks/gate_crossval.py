"""Choose gate settings on dev without touching test: gate on half of the dev clusters, measure on the other half.

    python benchmarks/gate_crossval.py RUNS_DIR [RUNS_DIR ...] [--rule NAME:KEY=VALUE,KEY=VALUE ...] [--repeats 40]

Every iteration of a run folder that the gate compared with iteration 0 is a *candidate*: a policy trained from the
SFT model. For each candidate and each repeat, the dev clusters are split in two halves, stratified by label and
seeded. Each rule decides on the first half, exactly as the run's gate would (`srpo.gate.decide`, from the run's own
gate settings plus the rule's overrides). The second half then measures what that decision was worth: the change,
against SFT, of the policy the gate would have kept (the candidate if accepted, else SFT) in safe&helpful and in safe
rate. A rule that accepts more gains more only if what it lets in holds up on clusters it did not see.

It reads `split: dev` items only, the gate's own split: the figures it prints can be used to choose settings, and
test stays unread. It decides on one iteration at a time against SFT, so it says nothing about what a rule does to
later iterations. Half a dev split has half the power of the whole, so a rule that wins here is, if anything, more
conservative on the whole split.

Rules: `as run` (the run's gate), `always` (accept every candidate: the raw effect, the upper bound of any rule's
gain and its cost), and any `--rule name:gate_alpha=0.2,gate_min_safety_gain=-0.02`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from srpo import gate  # noqa: E402

SPLIT = gate.DECISION_SPLIT  # the only split read


def _dev_items(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("split") == SPLIT]


def candidates(run_dirs: list[Path]) -> list[dict]:
    """Each iteration compared with iteration 0, with its run's gate settings and the dev items of both."""
    import yaml

    from srpo.configs import GateArgs

    out = []
    for runs in run_dirs:
        for run in sorted(p for p in runs.iterdir() if (p / "iter_000" / "eval" / "items.jsonl").exists()):
            recipe = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").exists() else {}
            settings = {**vars(GateArgs()), **(recipe.get("gate") or {})}
            sft = _dev_items(run / "iter_000" / "eval" / "items.jsonl")
            for it in sorted(run.glob("iter_[0-9][0-9][0-9]"))[1:]:
                if not (it / "gate" / "gate.json").exists():  # an iteration still running, or stopped before
                    continue
                decision = json.loads((it / "gate" / "gate.json").read_text())["decision"]
                if decision["compared_with"] != 0:
                    continue
                variant = run.name.rsplit("-s", 1)[0]
                out.append({"variant": variant, "run": str(run), "iteration": int(it.name[-3:]),
                            "settings": settings, "judge_failure_rate": decision.get("judge_failure_rate") or 0.0,
                            "sft": sft, "candidate": _dev_items(it / "eval" / "items.jsonl")})
    return out


def parse_rule(text: str) -> tuple[str, dict]:
    """'name:key=value,key=value' -> (name, overrides); values parsed as YAML scalars."""
    import yaml

    name, _, body = text.partition(":")
    if not name or not body:
        raise SystemExit(f"--rule {text!r}: expected NAME:KEY=VALUE[,KEY=VALUE], e.g. a0.2:gate_alpha=0.2")
    overrides = {}
    for part in body.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key.startswith("gate_"):
            raise SystemExit(f"--rule {text!r}: {part!r} is not a gate_* KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value)
    return name, overrides


def _sum(items: list[dict], value) -> float:
    return sum(v for v in map(value, items) if v is not None)


def _count(items: list[dict], value) -> int:
    return sum(value(i) is not None for i in items)


SAFE = gate.metric_value("unsafe", "safe")


def crossval(cands: list[dict], rules: list[tuple[str, dict | None]], repeats: int) -> list[dict]:
    """One row per (candidate, repeat, rule): accepted, and the held-out half's change of the kept policy."""
    rows = []
    for c in cands:
        clusters = {label: sorted({i["cluster"] for i in c["sft"] if i["label"] == label})
                    for label in ("unsafe", "benign")}
        for r in range(repeats):
            rng = random.Random(f"{c['run']}:{c['iteration']}:{r}")
            first = {x for cl in clusters.values() for x in rng.sample(cl, len(cl) // 2)}
            halves = {side: [[i for i in items if (i["cluster"] in first) == (side == "gate")]
                             for items in (c["sft"], c["candidate"])] for side in ("gate", "held")}
            (hs, hc) = halves["held"]
            n_all, n_unsafe = _count(hs, gate.helpful_value), _count(hs, SAFE)
            gain = (_sum(hc, gate.helpful_value) - _sum(hs, gate.helpful_value)) / n_all if n_all else 0.0
            safe = (_sum(hc, SAFE) - _sum(hs, SAFE)) / n_unsafe if n_unsafe else 0.0
            for name, overrides in rules:
                if overrides is None:
                    accepted = True
                else:
                    args = SimpleNamespace(**{**c["settings"], **overrides, "gate_bootstrap": 200})
                    gs, gc = halves["gate"]
                    decision = gate.decide({0: gs, 1: gc}, 1, [], args, c["judge_failure_rate"], seed=r)
                    accepted = decision.decision == "accept"
                rows.append({"variant": c["variant"], "rule": name, "accepted": accepted,
                             "held_gain": gain if accepted else 0.0, "held_safe": safe if accepted else 0.0})
    return rows


def summarize(rows: list[dict]) -> dict:
    """variant (and 'all') -> rule -> acceptance rate and mean held-out changes (points)."""
    groups: dict = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for key in (row["variant"], "all"):
            groups[key][row["rule"]].append(row)
    return {v: {rule: {"accepted": round(sum(x["accepted"] for x in rs) / len(rs), 4),
                       "safe_and_helpful": round(100 * sum(x["held_gain"] for x in rs) / len(rs), 2),
                       "safe": round(100 * sum(x["held_safe"] for x in rs) / len(rs), 2), "n": len(rs)}
                for rule, rs in by_rule.items()} for v, by_rule in groups.items()}


def render(summary: dict, rules: list[str]) -> str:
    lines = ["held-out half of dev, per candidate: accepted share, then the kept policy's change against SFT in "
             "safe&helpful and safe rate (points)", "",
             "| variant | " + " | ".join(rules) + " |", "|---|" + "---|" * len(rules)]
    for variant in sorted(summary, key=lambda v: (v == "all", v)):
        cells = [f"{s['accepted']:.0%} {s['safe_and_helpful']:+.2f} / {s['safe']:+.2f}"
                 for s in (summary[variant][r] for r in rules)]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs_dirs", nargs="+", help="folders of run folders (an ablation's --runs-dir)")
    ap.add_argument("--rule", action="append", default=[], help="NAME:gate_KEY=VALUE[,gate_KEY=VALUE]")
    ap.add_argument("--repeats", type=int, default=40, help="random halvings of dev per candidate")
    ap.add_argument("--json", help="also write the summary here")
    args = ap.parse_args(argv)
    rules = [("as run", {}), *map(parse_rule, args.rule), ("always", None)]
    cands = candidates([Path(d) for d in args.runs_dirs])
    if not cands:
        raise SystemExit(f"no candidate (an iteration compared with iteration 0) under {args.runs_dirs}")
    summary = summarize(crossval(cands, rules, args.repeats))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{len(cands)} candidates, {args.repeats} halvings each\n")
    print(render(summary, [name for name, _ in rules]), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
