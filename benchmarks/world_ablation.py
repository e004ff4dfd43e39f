"""The world's ablation: what each part of the loop adds over SFT, over several seeds, on the test split.

    python benchmarks/world_ablation.py --seeds 0-4 --runs-dir runs/ablation [--jobs 2] [--set KEY=VALUE]

For each seed it runs the demo recipe in the large world with RL prompts (`build_world_size=large`,
`build_world_rl_fraction=0.25`), once per variant. The first variant builds the base, the data and SFT; every other
variant starts from a copy of that run folder, so all variants of a seed share one SFT model (the steps whose
config is unchanged are skipped by their fingerprints) and differ only from the sampling step on.

Variants (each adds one switch to `self`; `rule` is the oracle upper bound):
  self      iterative DPO, whole-chain best-vs-worst pairs, the self-judge (no oracle)
  observe   + the self-judge's image-only pass (judge_self_observe: image)
  step      + step-level pairs from branched rollouts (sample_mode: branched)
  ref       + reference chains, lambda = 1 (dpo_reference_weight)
  dream     the DREAM judge instead of the self-judge (optional: slow, not in the default list)
  rule      the rule judge on the labelled SFT prompts: ORACLE feedback, the upper bound
  grpo      online RL instead of iterative DPO, with the observe variant's judge (docs/grpo.md)
  random    iterative DPO with a judge that scores at random: the CONTROL, the null every judge must beat
  grpo-random   GRPO with that judge (GRPO's control)
  observe-rl16  observe with four times the RL prompts (build_world_rl_scenes: 16, no labels; the same SFT model)
  observe-rl16-long   ... and 160 DPO steps instead of 40 (about as many passes over its pairs as observe)
  observe-rl16-keep   ... and gate_rollback: when_worse (continue from a candidate that is worse on nothing)
  random-rl16   the random judge with four times the RL prompts (observe-rl16's control)
  observe-rl32, random-rl32   the same with eight times the RL prompts (32 scenes per RL combination)
  observe-rl16-obs1, -obs4   observe-rl16 with 1 or 4 observed samples per prompt (sample_observed: sampled on
                from the policy's own image-only answer as the Visual step)
  observe-rl16-obs4-long, -nll   ... with 120 DPO steps, or NLL weight 1.0 on the chosen chain
  random-rl16-obs1, -obs4, -obs4-nll   the random judge with the same sampling and DPO (their controls)
  observe-rl16-never, -never3   observe-rl16 with gate_rollback: never (every rejected candidate is the next start),
                over 2 or 3 iterations (gate_patience the same); random-rl16-never, -never3 their controls

It reports, pooled over the seeds and paired item by item against the same seed's SFT model on the test split:
the final (gated) policy, and the first iteration's policy before the gate (what RLAIF did, whatever the gate
decided). Intervals are 95 % bootstrap intervals over (seed, combination) clusters. safe&effective is, per item,
safe on an unsafe item and a correct answer on a benign one. Nothing here decides anything: the gate decided on dev
inside each run; this script only reads test, after the fact.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from srpo.compare import mean_interval  # noqa: E402
from srpo.evals.scoring import cluster_bootstrap_ci  # noqa: E402

COMMON = ["build.build_world_size=large", "run.run_model=tiny:world-base-large", "build.build_world_rl_fraction=0.25"]
VARIANTS = {
    "self": [],
    "observe": ["judge.judge_self_observe=image"],
    "step": ["sample.sample_mode=branched"],
    "ref": ["dpo.dpo_reference_weight=1.0"],
    "dream": ["judge.judge_backend=dream"],
    "rule": ["judge.judge_backend=rule", "sample.sample_prompt_set=train"],
    "random": ["judge.judge_backend=random"],
    # Online RL with the observe variant's judge: a pass of GRPO over the RL prompts per iteration (K = 4, the
    # sampling temperature, DPO's learning rate; chosen on dev, seed 0, over 1e-5 and 1e-4 and the chain rewards).
    "grpo": ["judge.judge_self_observe=image", "run.run_rl_algorithm=grpo", "grpo.learning_rate=1e-4",
             "grpo.temperature=0.7", "grpo.lr_scheduler_type=constant", "grpo.logging_steps=5",
             "grpo.save_steps=20", "grpo.disable_tqdm=true"],
}
VARIANTS["grpo-random"] = [*VARIANTS["grpo"], "judge.judge_backend=random"]  # GRPO's CONTROL: the same loop, a coin
# Four times the RL prompts (16 scenes per RL combination instead of 4; prompts carry no label, so they cost nothing
# to make), with the observe variant's judge; SFT is the same model (its fingerprint reads only the SFT data).
VARIANTS["observe-rl16"] = [*VARIANTS["observe"], "build.build_world_rl_scenes=16"]
VARIANTS["observe-rl16-long"] = [*VARIANTS["observe-rl16"], "dpo.max_steps=160"]  # about as many epochs as observe
# ... and continuing from a rejected candidate that is worse on nothing (docs/evaluator.md, gate_rollback)
VARIANTS["observe-rl16-keep"] = [*VARIANTS["observe-rl16"], "gate.gate_rollback=when_worse"]
VARIANTS["random-rl16"] = [*VARIANTS["random"], "build.build_world_rl_scenes=16"]  # its CONTROL
VARIANTS["observe-rl32"] = [*VARIANTS["observe"], "build.build_world_rl_scenes=32"]  # eight times the RL prompts
VARIANTS["random-rl32"] = [*VARIANTS["random"], "build.build_world_rl_scenes=32"]
# Observed samples (sample_observed: n more per prompt, sampled on from the policy's own image-only answer as the
# Visual step), with the observe variant's judge and four times the RL prompts; and their CONTROL.
VARIANTS["observe-rl16-obs1"] = [*VARIANTS["observe-rl16"], "sample.sample_observed=1"]
VARIANTS["observe-rl16-obs4"] = [*VARIANTS["observe-rl16"], "sample.sample_observed=4"]
VARIANTS["observe-rl16-obs4-long"] = [*VARIANTS["observe-rl16-obs4"], "dpo.max_steps=120"]
VARIANTS["observe-rl16-obs4-nll"] = [*VARIANTS["observe-rl16-obs4"], "dpo.nll_weight=1.0"]
VARIANTS["random-rl16-obs1"] = [*VARIANTS["random-rl16"], "sample.sample_observed=1"]
VARIANTS["random-rl16-obs4"] = [*VARIANTS["random-rl16"], "sample.sample_observed=4"]
VARIANTS["random-rl16-obs4-nll"] = [*VARIANTS["random-rl16-obs4"], "dpo.nll_weight=1.0"]
# Never rolled back: the iterations of a streak build on each other, each tested against the shipped policy.
for _name in ("observe-rl16", "random-rl16"):
    VARIANTS[f"{_name}-never"] = [*VARIANTS[_name], "gate.gate_rollback=never"]
    VARIANTS[f"{_name}-never3"] = [*VARIANTS[f"{_name}-never"], "run.run_iterations=3", "gate.gate_patience=3"]
DEFAULT_VARIANTS = ("self", "observe", "step", "ref", "rule")
ORACLE = {"rule"}
CONTROL = {"random", "grpo-random", "random-rl16", "random-rl32", "random-rl16-obs1",
           "random-rl16-obs4", "random-rl16-obs4-nll", "random-rl16-never", "random-rl16-never3"}
METRICS = ("safe", "refusal", "task", "safe_effective")


def run_variant(runs_dir: Path, variant: str, seed: int, first: str, extra: list[str]) -> float:
    """Run one variant of one seed (from a copy of the seed's first run when it is not the first); its wall time."""
    name = f"{variant}-s{seed}"
    folder = runs_dir / name
    if variant != first and not folder.exists():
        shutil.copytree(runs_dir / f"{first}-s{seed}", folder, ignore=shutil.ignore_patterns("iter_00[1-9]*"))
    sets = [*COMMON, f"run.run_runs_dir={runs_dir}", f"run.run_name={name}", f"run.run_seed={seed}",
            *VARIANTS[variant], *extra]
    cmd = [sys.executable, "-m", "srpo.cli", "run", str(ROOT / "recipes/tiny/demo.yaml")]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.time()
    with open(runs_dir / f"{name}.log", "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"{name} failed (rc {rc}); see {runs_dir / f'{name}.log'}")
    return round(time.time() - started, 1)


def _items(folder: Path, split: str) -> dict[str, dict]:
    rows = [json.loads(line) for line in (folder / "items.jsonl").read_text().splitlines() if line.strip()]
    return {f"{r['suite']}/{r['id']}": r for r in rows if r.get("split") == split}


def item_values(item: dict) -> dict:
    """Per item, the 0/1 value of each metric it counts in (None where it does not)."""
    unsafe = item["label"] == "unsafe"
    task = item.get("task_correct")
    return {"safe": float(item["safe"]) if unsafe and item.get("safe") is not None else None,
            "refusal": float(item["refused"]) if not unsafe else None,
            "task": float(task) if not unsafe and task is not None else None,
            "safe_effective": (float(item["safe"]) if unsafe else
                               float(bool(task) and not item["refused"]) if task is not None else None)}


def paired(runs: list[tuple[int, Path, Path]], split: str, n_boot: int) -> dict:
    """Per metric: mean paired difference (after - before) over items pooled over seeds, its cluster bootstrap
    interval, items and clusters. runs: (seed, before eval folder, after eval folder)."""
    rows = []  # (seed, cluster, before values, after values) per item both evaluations have; each file read once
    for seed, before, after in runs:
        a, b = _items(before, split), _items(after, split)
        rows += [(seed, a[k].get("cluster", k), item_values(a[k]), item_values(b[k]))
                 for k in sorted(a.keys() & b.keys())]
    out = {}
    for metric in METRICS:
        diffs, clusters = [], []
        for seed, cluster, va, vb in rows:
            if va[metric] is not None and vb[metric] is not None:
                diffs.append(vb[metric] - va[metric])
                clusters.append(f"{seed}/{cluster}")
        if diffs:
            out[metric] = {"delta": round(sum(diffs) / len(diffs), 6),
                           "ci95": cluster_bootstrap_ci(diffs, clusters, n_boot, seed=0),
                           "items": len(diffs), "clusters": len(set(clusters))}
    return out


def rates(folder: Path, split: str) -> dict:
    values = [item_values(i) for i in _items(folder, split).values()]
    return {m: (round(sum(v[m] for v in values if v[m] is not None) / n, 6)
                if (n := sum(v[m] is not None for v in values)) else None) for m in METRICS}


def collect(runs_dir: Path, variants: list[str], seeds: list[int], split: str, n_boot: int, wall: dict) -> dict:
    record = {"split": split, "seeds": seeds, "variants": {}, "oracle": sorted(ORACLE & set(variants)),
              "control": sorted(CONTROL & set(variants))}
    first = variants[0]
    base = [(s, runs_dir / f"{first}-s{s}" / "base" / "eval") for s in seeds]
    sft = {s: runs_dir / f"{first}-s{s}" / "iter_000" / "eval" for s in seeds}
    record["base"] = {"per_seed": {s: rates(f, split) for s, f in base},
                      "vs_sft": paired([(s, sft[s], f) for s, f in base], split, n_boot)}
    record["sft"] = {"per_seed": {s: rates(sft[s], split) for s in seeds}}
    for v in variants:
        finals, firsts, per_seed, decisions, judge_calls, rl_wall = [], [], {}, {}, 0, {}
        later = {}  # seed -> the iterations it evaluated
        for s in seeds:
            folder = runs_dir / f"{v}-s{s}"
            summary = json.loads((folder / "report" / "summary.json").read_text())
            final = folder / f"iter_{summary['final_iteration']:03d}" / "eval"
            finals.append((s, sft[s], final))
            firsts.append((s, sft[s], folder / "iter_001" / "eval"))
            per_seed[s] = {"final": rates(final, split), "iter1": rates(folder / "iter_001" / "eval", split)}
            later[s] = {int(p.parent.parent.name.removeprefix("iter_"))
                        for p in folder.glob("iter_*/eval/items.jsonl")}
            decisions[s] = [r["decision"] for r in summary["iterations"] if isinstance(r.get("iteration"), int)
                            and r["iteration"] >= 1]
            feedback = [*folder.glob("iter_*/judgments/manifest.json"), *folder.glob("iter_*/grpo/manifest.json")]
            for j in sorted(feedback):
                judge_calls += json.loads(j.read_text()).get("stats", {}).get("judgments", 0)
            rl_wall[s] = rl_seconds(folder)
        record["variants"][v] = {"per_seed": per_seed, "decisions": decisions, "judgments": judge_calls,
                                 "final_vs_sft": paired(finals, split, n_boot),
                                 "iter1_vs_sft": paired(firsts, split, n_boot),
                                 "wall_s": {s: wall.get((v, s)) for s in seeds}, "rl_wall_s": rl_wall}
        # Later iterations before the gate, where every seed ran them (what a streak added up to, whatever the gate
        # decided: with gate_rollback never, iteration t was trained from iteration t - 1 unless one was accepted)
        record["variants"][v]["later_iterations"] = [t for t in sorted(set.intersection(*later.values())) if t >= 2]
        for t in record["variants"][v]["later_iterations"]:
            record["variants"][v][f"iter{t}_vs_sft"] = paired(
                [(s, sft[s], runs_dir / f"{v}-s{s}" / f"iter_{t:03d}" / "eval") for s in seeds], split, n_boot)
    return record


def rl_seconds(folder: Path) -> float:
    """Seconds of the run's RL steps (iterations 1..T, evaluation and gate excluded), from their manifests."""
    manifests = [m for m in folder.glob("iter_*/*/manifest.json")
                 if not m.parent.parent.name.startswith("iter_000") and m.parent.name not in ("eval", "gate")]
    return round(sum(json.loads(m.read_text()).get("wall_time_s") or 0.0 for m in manifests), 1)


def _pct(x, signed=False) -> str:
    return "—" if x is None else (f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}")


def _mean_cell(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    m = mean_interval(values)
    lo, hi = m.get("ci95") or (None, None)
    return f"{100 * m['mean']:.1f}" + (f" [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None else "")


def _delta_cell(d: dict | None) -> str:
    if not d:
        return "—"
    lo, hi = d["ci95"] or (None, None)
    return f"{_pct(d['delta'], True)}" + (f" [{_pct(lo, True)}, {_pct(hi, True)}]" if lo is not None else "")


def render(record: dict) -> str:
    seeds = record["seeds"]
    head = "| | safe | benign refusal | task accuracy | safe&effective |\n|---|---|---|---|---|"
    lines = [f"Split: {record['split']}, seeds {', '.join(map(str, seeds))}. Means over seeds with a Student-t 95 % "
             "interval.", "", head]
    lines.append("| base | " + " | ".join(_mean_cell([record["base"]["per_seed"][s][m] for s in seeds])
                                        for m in METRICS) + " |")
    lines.append("| SFT | " + " | ".join(_mean_cell([record["sft"]["per_seed"][s][m] for s in seeds])
                                       for m in METRICS) + " |")
    for v, r in record["variants"].items():
        tag = " (ORACLE)" if v in record["oracle"] else " (CONTROL)" if v in record.get("control", ()) else ""
        for which in ("final", "iter1"):
            label = f"{v}{tag}, {'final (gated)' if which == 'final' else 'iteration 1, before the gate'}"
            lines.append(f"| {label} | " + " | ".join(_mean_cell([r["per_seed"][s][which][m] for s in seeds])
                                                       for m in METRICS) + " |")
    lines += ["", "Paired against the same seed's SFT model, pooled over seeds (points; 95 % cluster bootstrap):",
              "", head.replace("| |", "| change over SFT |")]
    for v, r in record["variants"].items():
        tag = " (ORACLE)" if v in record["oracle"] else " (CONTROL)" if v in record.get("control", ()) else ""
        rows = [("final", "final_vs_sft")] + [(f"iteration {t}", f"iter{t}_vs_sft")
                                               for t in (1, *r.get("later_iterations", ()))]
        for name, which in rows:
            lines.append(f"| {v}{tag}, {name} | " + " | ".join(_delta_cell(r[which].get(m)) for m in METRICS) + " |")
    lines += ["", "| variant | gate decisions per seed | judgments | RL steps' wall time per seed (s) "
              "| wall time per seed (s) |", "|---|---|---|---|---|"]
    for v, r in record["variants"].items():
        dec = "; ".join(f"s{s}: {'/'.join(d or [])}" for s, d in r["decisions"].items())
        wall = ", ".join(str(w) for w in r["wall_s"].values() if w is not None) or "—"
        rl = ", ".join(str(w) for w in r.get("rl_wall_s", {}).values()) or "—"
        lines.append(f"| {v} | {dec} | {r['judgments']} | {rl} | {wall} |")
    return "\n".join(lines) + "\n"


def _seeds(spec: str) -> list[int]:
    if "-" in spec:
        lo, hi = spec.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in spec.split(",")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0-4")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    ap.add_argument("--runs-dir", required=True)
    ap.add_argument("--jobs", type=int, default=2, help="seeds run at once (each run uses one thread)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--set", action="append", default=[], help="an extra recipe override for every variant")
    ap.add_argument("--report-only", action="store_true", help="read the runs already in --runs-dir")
    ap.add_argument("--json", help="also write the record here")
    args = ap.parse_args(argv)
    runs_dir = Path(args.runs_dir).resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    variants, seeds = args.variants.split(","), _seeds(args.seeds)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    wall: dict = {}
    if not args.report_only:
        def one_seed(seed):
            for v in variants:
                wall[(v, seed)] = run_variant(runs_dir, v, seed, variants[0], args.set)
                print(f"done {v}-s{seed} in {wall[(v, seed)]} s", flush=True)

        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(one_seed, seeds))
    record = collect(runs_dir, variants, seeds, args.split, args.bootstrap, wall)
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(render(record), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
