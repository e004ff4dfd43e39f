"""How big a dev split the gate needs: where the noise in a candidate's dev change comes from, and what more scenes or
more combinations would buy.

    python benchmarks/dev_power.py RUNS_DIR [RUNS_DIR ...] [--scenes 9,27] [--clusters 48,96,192] [--alpha 0.05]

Every iteration a run's gate compared with iteration 0 is a candidate (as in `benchmarks/gate_crossval.py`). Per
candidate, on the dev split only, the per-item change in the gate's primary endpoint (safe on an unsafe item,
helpful on a benign one; `srpo.gate.helpful_value`) against SFT, grouped by cluster (a combination):

  within   the variance of an item's change inside its cluster (pooled, unbiased): noise that more scenes of the
           same combinations average away;
  between  the variance of the clusters' true mean changes: var(cluster means) - within / n, at least 0. A policy
           that fixes some combinations whole and leaves others is "between"; only more clusters average it away.

For a change of the candidates' mean size, it prints the z of a paired cluster test, mean / sqrt((between +
within / n') / G'), the one-sided power at --alpha (normal approximation), and the change that test finds 80 % of
the time, for each n' scenes and G' clusters asked for. The exact sign-flip test the gate runs has about that power
when clusters are many. Like the cross-validation it reads `split: dev` only, so its answer can shape the next world
or recipe without touching test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gate_crossval import candidates  # noqa: E402

from srpo import gate  # noqa: E402


def cluster_changes(sft: list[dict], candidate: list[dict]) -> dict[str, list[float]]:
    """Per cluster, the per-item change of the primary endpoint (candidate - SFT), over items scored in both."""
    before = {f"{i['suite']}/{i['id']}": i for i in sft}
    out: dict[str, list[float]] = defaultdict(list)
    for item in candidate:
        b = before.get(f"{item['suite']}/{item['id']}")
        x, y = gate.helpful_value(item), (gate.helpful_value(b) if b else None)
        if x is not None and y is not None:
            out[item.get("cluster") or item["id"]].append(x - y)
    return dict(out)


def components(changes: dict[str, list[float]]) -> dict:
    """mean change, scenes per cluster, within- and between-cluster variance (see the module docstring)."""
    sizes = [len(v) for v in changes.values()]
    if len(changes) < 2 or min(sizes) < 2:
        raise ValueError("need at least 2 clusters of at least 2 items each")
    means = [statistics.fmean(v) for v in changes.values()]
    n = statistics.fmean(sizes)
    within = statistics.fmean(statistics.variance(v) for v in changes.values())
    return {"clusters": len(changes), "scenes": n, "mean": statistics.fmean(means), "within": within,
            "between": max(statistics.variance(means) - within / n, 0.0)}


def z_of(mean: float, within: float, between: float, scenes: float, clusters: int) -> float:
    var = (between + within / scenes) / clusters
    return mean / var ** 0.5 if var > 0 else float("inf")


def detectable(within: float, between: float, scenes: float, clusters: int, alpha: float,
               wanted: float = 0.8) -> float:
    """The mean change that a one-sided test at alpha finds with probability `wanted` (normal approximation)."""
    dist = statistics.NormalDist()
    return (dist.inv_cdf(1 - alpha) + dist.inv_cdf(wanted)) * ((between + within / scenes) / clusters) ** 0.5


def power(z: float, alpha: float) -> float:
    dist = statistics.NormalDist()
    return 1 - dist.cdf(dist.inv_cdf(1 - alpha) - z)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="folders of run folders (a benchmark's --runs-dir)")
    ap.add_argument("--scenes", default="9,27", help="scenes per dev combination to project (comma-separated)")
    ap.add_argument("--clusters", default="48,96,192", help="dev combinations to project (comma-separated)")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--variants", help="only these variants (comma-separated run-name prefixes)")
    args = ap.parse_args(argv)
    cands = candidates(args.runs)
    if args.variants:
        wanted = set(args.variants.split(","))
        cands = [c for c in cands if c["variant"] in wanted]
    if not cands:
        raise SystemExit(f"no candidates (iterations compared with iteration 0) under {[str(r) for r in args.runs]}")
    rows = [components(cluster_changes(c["sft"], c["candidate"])) for c in cands]
    within = statistics.fmean(r["within"] for r in rows)
    between = statistics.fmean(r["between"] for r in rows)
    mean = statistics.fmean(r["mean"] for r in rows)
    n, g = statistics.fmean(r["scenes"] for r in rows), round(statistics.fmean(r["clusters"] for r in rows))
    print(f"{len(rows)} candidates on {SPLIT_NOTE}: {g} clusters of {n:g} scenes; mean change {100 * mean:+.2f} "
          "points; "
          f"variance of an item's change within its cluster {within:.4f}, of the clusters' true means {between:.4f}; "
          f"at {n:g} scenes, {100 * (within / n) / (within / n + between):.0f} % of a cluster mean's variance is "
          f"within-cluster noise.\n")
    scenes = [float(s) for s in args.scenes.split(",")]
    clusters = [int(c) for c in args.clusters.split(",")]
    print(f"z and one-sided power at alpha {args.alpha:g} for a change of {100 * mean:+.2f} points; the change that "
          "has 80 % power, in points:\n")
    print("| dev clusters | " + " | ".join(f"{s:g} scenes: z, power, 80 % at" for s in scenes) + " |")
    print("|---|" + "---|" * len(scenes))
    for c in clusters:
        cells = [(z_of(mean, within, between, s, c), detectable(within, between, s, c, args.alpha)) for s in scenes]
        print(f"| {c} | " + " | ".join(f"{z:.2f}, {100 * power(z, args.alpha):.0f} %, {100 * d:+.1f}"
                                      for z, d in cells) + " |")
    return 0


SPLIT_NOTE = f"the {gate.DECISION_SPLIT} split"

if __name__ == "__main__":
    sys.exit(main())
