"""`srpo compare RUN...`: runs of one recipe under different seeds, per seed and as mean ± 95% interval over seeds.

    srpo compare runs/demo-s0 runs/demo-s1 runs/demo-s2 --markdown     # the seed tables of the docs

A RUN is a run folder or its report/summary.json. Only the summaries are read (nothing is recomputed), plus each
run's config.yaml, to refuse runs whose recipes differ in more than the seed, the run name and the runs folder.
The interval over seeds is Student t's: scipy is not a dependency for one quantile, so the t distribution function is
computed here (regularized incomplete beta by continued fraction) and inverted by bisection.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from srpo.runfolder import SUMMARY, RunFolder

# key in the summary, label, +1 when higher is better (-1: lower is better).
METRICS = (("safe_rate", "safe rate", 1), ("benign_refusal_rate", "benign refusal", -1),
           ("task_accuracy", "task accuracy", 1))
STAGES = {"base": "base", "sft": "SFT", "final": "final"}
CHANGES = (("final", "sft"), ("final", "base"), ("sft", "base"))
SPLITS = ("test", "dev")
# Recipe keys a seed's run may change; any other difference makes the runs different experiments.
PER_SEED_KEYS = {"run.run_seed", "run.run_name", "run.run_runs_dir"}
UNSET = "(unset)"


class SummaryError(ValueError):
    """A summary lacks, or garbles, what the comparison needs; the message names the file and the key."""


@dataclass
class SeedRun:
    summary_path: Path
    folder: Path | None  # None when a summary file outside a run folder was given
    name: str
    seed: int
    final_iteration: int
    decisions: list  # [(iteration, decision)] of the gated iterations 1..T
    feedback: dict | None
    figures: dict  # stage -> metric -> {"value": fraction | None, "ci95": [lo, hi] | None}
    wall_time_s: float | None = None
    config: dict | None = field(default=None, repr=False)

    @property
    def oracle(self) -> bool:
        fb = self.feedback or {}
        return bool(fb.get("oracle")) or fb.get("judge_backend") == "rule"

    @property
    def label(self) -> str:
        return f"seed {self.seed} ({self.name})"


# Reading summaries.

def _fraction(value, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise SummaryError(f"{where} is {value!r}, not a fraction in [0, 1] or null (100 x this is the percent)")
    return float(value)


def _interval(value, where: str) -> list | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise SummaryError(f"{where} is {value!r}, not an interval [lo, hi] or null")
    lo, hi = (_fraction(v, where) for v in value)
    if lo is None or hi is None:
        return None
    if lo > hi:
        raise SummaryError(f"{where} is {value!r}: lo > hi")
    return [lo, hi]


def _figure(summary: dict, rows: dict, stage: str, split: str, metric: str, iteration, path: Path) -> dict:
    """A top-level key when the summary has it (the final policy, and base/SFT on test), else the iteration row."""
    prefix = {"final": "heldout_", "sft": "sft_heldout_", "base": "base_heldout_"}[stage] if split == "test" else (
        "dev_" if stage == "final" else None)
    key = f"{prefix}{metric}" if prefix else None
    row = (rows.get(iteration) or {}).get(split)
    if row is not None and not isinstance(row, dict):
        raise SummaryError(f"{path}: iterations[{iteration!r}].{split} is not a mapping")
    row = row or {}
    ci_key = f"{metric}_ci95"
    if key is not None and key in summary:
        value = _fraction(summary[key], f"{path}: key {key!r}")
        top_ci = summary.get(f"{key}_ci95")
        ci = (_interval(top_ci, f"{path}: key {key + '_ci95'!r}") if top_ci is not None
              else _interval(row.get(ci_key), f"{path}: iterations[{iteration!r}].{split}.{ci_key}"))
        return {"value": value, "ci95": ci}
    if metric in row:
        where = f"{path}: iterations[{iteration!r}].{split}"
        return {"value": _fraction(row[metric], f"{where}.{metric}"),
                "ci95": _interval(row.get(ci_key), f"{where}.{ci_key}")}
    if stage == "base":  # the base model is evaluated only with run_eval_base
        return {"value": None, "ci95": None}
    wanted = f"iterations[{iteration!r}].{split}.{metric}"
    wanted = f"key {key!r} (nor {wanted})" if key else wanted
    raise SummaryError(f"{path}: no {wanted}, which the {STAGES[stage]} figures on the {split} split need")


def _require(summary: dict, key: str, kind, path: Path):
    if key not in summary:
        raise SummaryError(f"{path}: no key {key!r}")
    value = summary[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise SummaryError(f"{path}: key {key!r} is {value!r}, not {'an' if kind is int else 'a'} {kind.__name__}")
    return value


def locate(run: str | Path) -> tuple[Path, Path | None]:
    """(summary file, run folder or None) for a RUN argument."""
    path = Path(run)
    if path.is_dir():
        summary = RunFolder(path).report_dir / SUMMARY
        if not summary.is_file():
            raise FileNotFoundError(f"{path} has no report/{SUMMARY}: the run has not finished (srpo run writes it "
                                    "last), or this is not a run folder")
        return summary, path
    if path.is_file():
        return path, (path.parent.parent if path.parent.name == RunFolder(path).report_dir.name else None)
    raise FileNotFoundError(f"{path}: no such run folder or summary file")


def load_seed_run(run: str | Path, split: str = "test") -> SeedRun:
    summary_path, folder = locate(run)
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SummaryError(f"{summary_path}: not readable JSON ({e})") from None
    if not isinstance(summary, dict):
        raise SummaryError(f"{summary_path}: not a JSON object")
    iterations = _require(summary, "iterations", list, summary_path)
    rows = {}
    for n, row in enumerate(iterations):
        if not isinstance(row, dict) or not isinstance(row.get("iteration"), (int, str)) or not isinstance(
                row.get("decision"), str):
            raise SummaryError(f"{summary_path}: iterations[{n}] lacks an 'iteration' (\"base\" or a number) or a "
                               "'decision' string")
        rows[row["iteration"]] = row
    final = _require(summary, "final_iteration", int, summary_path)
    figures = {stage: {m: _figure(summary, rows, stage, split, m, it, summary_path) for m, _, _ in METRICS}
               for stage, it in (("base", "base"), ("sft", 0), ("final", final))}
    decisions = [(r["iteration"], r["decision"]) for r in iterations
                 if isinstance(r["iteration"], int) and not isinstance(r["iteration"], bool) and r["iteration"] >= 1]
    feedback = summary.get("feedback")
    wall = summary.get("wall_time_s")
    rf = RunFolder(folder) if folder is not None else None
    return SeedRun(summary_path, folder, _require(summary, "run", str, summary_path),
                   _require(summary, "seed", int, summary_path), final, decisions,
                   feedback if isinstance(feedback, dict) else None, figures,
                   wall if isinstance(wall, (int, float)) and not isinstance(wall, bool) else None,
                   rf.config() if rf is not None else None)


# The recipe check.

def _flatten(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def recipe_check(runs: list[SeedRun]) -> dict:
    """Which runs' config.yaml could be read, and every recipe key (other than per-seed ones) whose value differs."""
    unchecked = [f"{r.label}: {'no config.yaml beside its summary' if r.folder is None else 'no readable config.yaml'}"
                 for r in runs if r.config is None]
    flat = [(r, _flatten(r.config)) for r in runs if r.config is not None]
    differences = []
    for key in sorted(set().union(*(f for _, f in flat)) - PER_SEED_KEYS if flat else ()):
        values = [(r, f.get(key, UNSET)) for r, f in flat]
        if len({json.dumps(v, sort_keys=True, default=str) for _, v in values}) > 1:
            differences.append(f"{key}: " + ", ".join(f"{r.label} {v!r}" for r, v in values))
    seeds = [r.seed for r in runs]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    return {"checked": [r.label for r, _ in flat], "unchecked": unchecked, "differences": differences,
            "repeated_seeds": repeated}


# Statistics over seeds.

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes, eq. 6.4.5)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for aa in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                   -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1 - x) / b


def t_cdf(t: float, df: int) -> float:
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))  # P(T > |t|) for Student t with df degrees of freedom
    return 1 - tail if t >= 0 else tail


def t_quantile(p: float, df: int) -> float:
    """The p quantile (p in (0.5, 1)) of Student t with df degrees of freedom, by bisection on t_cdf."""
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-12 * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def mean_interval(values: list[float]) -> dict:
    """Mean and the 95% Student t interval over seeds: mean ± t(0.975, n-1) * sd / sqrt(n), sd with n-1."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "t": None, "ci95": None}
    mean = sum(values) / n
    if n == 1:
        return {"n": 1, "mean": mean, "sd": None, "t": None, "ci95": None}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = t_quantile(0.975, n - 1)
    half = t * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "t": t, "ci95": [mean - half, mean + half]}


def aggregate(runs: list[SeedRun]) -> dict:
    """stage or change ("final-sft") -> metric -> mean_interval (+ better / worse / unchanged counts for changes)."""
    out = {}
    for stage in STAGES:
        out[stage] = {m: mean_interval([v for r in runs if (v := r.figures[stage][m]["value"]) is not None])
                      for m, _, _ in METRICS}
    for after, before in CHANGES:
        out[f"{after}-{before}"] = row = {}
        for m, _, sign in METRICS:
            deltas = [a - b for r in runs if (a := r.figures[after][m]["value"]) is not None
                      and (b := r.figures[before][m]["value"]) is not None]
            row[m] = {**mean_interval(deltas), "better": sum(sign * d > 1e-12 for d in deltas),
                      "worse": sum(sign * d < -1e-12 for d in deltas)}
            row[m]["unchanged"] = len(deltas) - row[m]["better"] - row[m]["worse"]
    return out


def compare(run_args: list, split: str = "test", allow_mixed: bool = False) -> dict:
    """The full record: runs, the recipe check, the aggregate, and the notes the tables print under them."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    runs = sorted((load_seed_run(r, split) for r in run_args), key=lambda r: (r.seed, r.name))
    same = {}
    for r in runs:
        same.setdefault(r.summary_path.resolve(), []).append(str(r.summary_path))
    if dup := [" and ".join(p) for p in same.values() if len(p) > 1]:
        raise ValueError(f"the same run was given twice: {'; '.join(dup)}")
    check = recipe_check(runs)
    if (check["differences"] or check["repeated_seeds"]) and not allow_mixed:
        problems = check["differences"] + [f"seed {s} is in more than one run: a repeated seed is not another sample"
                                           for s in check["repeated_seeds"]]
        raise ValueError("these runs are not seeds of one recipe:\n  " + "\n  ".join(problems)
                         + "\n(compare only the seed, run_name and run_runs_dir apart; --allow-mixed compares anyway)")
    notes = [f"ORACLE feedback in {r.label} (judge_backend {(r.feedback or {}).get('judge_backend')!r}): the rule "
             "judge reads the data's labels, so its figures are an upper bound, not RLAIF." for r in runs if r.oracle]
    notes += [f"feedback not recorded in {r.summary_path}: could not check for oracle feedback"
              for r in runs if r.feedback is None]
    notes += [f"recipe not checked for {u}" for u in check["unchecked"]]
    if allow_mixed:
        notes += [f"MIXED recipes (--allow-mixed): {d}" for d in check["differences"]]
        notes += [f"MIXED: seed {s} is in more than one run" for s in check["repeated_seeds"]]
    no_base = [r.label for r in runs if all(f["value"] is None for f in r.figures["base"].values())]
    if no_base:
        notes.append(f"no base-model figures in {', '.join(no_base)} (run_eval_base off?): base and the changes from "
                     "base are over the other seeds")
    return {"split": split, "n_runs": len(runs), "recipe_check": check, "notes": notes,
            "runs": [{"run": r.name, "seed": r.seed, "summary": str(r.summary_path),
                      "folder": None if r.folder is None else str(r.folder), "final_iteration": r.final_iteration,
                      "decisions": [{"iteration": i, "decision": d} for i, d in r.decisions], "oracle": r.oracle,
                      "feedback": r.feedback, "wall_time_s": r.wall_time_s, "figures": r.figures} for r in runs],
            "aggregate": aggregate(runs)}


# Tables: built once as (title, header, rows, captions) and printed as GitHub markdown or aligned text.

def _pct(x, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    value = round(100 * x, 1) or 0.0  # a float-noise -0.0 prints as 0.0
    return f"{value:{'+' if signed else ''}.1f}"


def _seed_cell(figure: dict) -> str:
    ci = figure["ci95"]
    return _pct(figure["value"]) + (f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci and figure["value"] is not None else "")


def _mean_cell(stat: dict, n_runs: int, signed: bool) -> str:
    if stat["n"] == 0:
        return "n/a"
    if stat["ci95"] is None:
        return f"{_pct(stat['mean'], signed)} (n=1, no interval)"
    cell = f"{_pct(stat['mean'], signed)} ± {_pct(stat['ci95'][1] - stat['mean'])}"
    return cell + (f" (n={stat['n']})" if stat["n"] != n_runs else "")


def tables(record: dict) -> list[tuple]:
    split, n = record["split"], record["n_runs"]
    seed_rows = []
    for r in record["runs"]:
        gates = ", ".join(f"{d['iteration']} {d['decision']}" for d in r["decisions"]) or "-"
        cells = [" → ".join(_seed_cell(r["figures"][s][m]) for s in STAGES) for m, _, _ in METRICS]
        seed_rows.append([str(r["seed"]), r["run"] + (" (ORACLE)" if r["oracle"] else ""), str(r["final_iteration"]),
                          gates, *cells])
    per_seed = (f"Per seed ({split} split, %)", ["seed", "run", "final iteration", "gate decisions",
                                                 *(f"{label}: base → SFT → final" for _, label, _ in METRICS)],
                seed_rows, [f"Percent on the {split} split: the base model → SFT (iteration 0) → the final policy; "
                            "in brackets the run's own 95% interval, where its summary gives one."])
    agg = record["aggregate"]
    mean_rows = [[STAGES[s], *(_mean_cell(agg[s][m], n, False) for m, _, _ in METRICS)] for s in STAGES]
    for after, before in CHANGES:
        row = [f"{STAGES[after]} − {STAGES[before]} (pp)"]
        for m, _, _ in METRICS:
            stat = agg[f"{after}-{before}"][m]
            counts = f"{stat['better']} better, {stat['worse']} worse" + (
                f", {stat['unchanged']} same" if stat["unchanged"] else "")
            row.append(_mean_cell(stat, n, True) + (f" ({counts})" if stat["n"] else ""))
        mean_rows.append(row)
    if n >= 2:
        how = (f"mean ± half-width of the 95% Student t interval over the seeds: t(0.975, n − 1) = "
               f"{t_quantile(0.975, n - 1):.3f} for n = {n} (a cell over fewer seeds says its n)")
    else:
        how = "n=1, no interval: one seed gives a mean but no spread"
    captions = [f"Percent on the {split} split, {how}. Changes are in percentage points; better / worse count the "
                "seeds where the change helps / hurts (for benign refusal lower is better). Intervals are not clipped "
                "to [0, 100]."]
    return [per_seed, (f"Mean over {n} seed{'s' * (n != 1)} ({split} split, %)", ["", *(label for _, label, _ in
                                                                                     METRICS)], mean_rows, captions)]


def render(record: dict, markdown: bool) -> str:
    out = []
    for title, header, rows, captions in tables(record):
        if markdown:
            out += [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
            out += ["", *captions, ""]
        else:
            widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
            out += [title, *("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                             for row in [header, *rows]), *captions, ""]
    out += [("> **Note:** " if markdown else "note: ") + note for note in record["notes"]]
    return "\n".join(out).rstrip() + "\n"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srpo compare", description="Runs of one recipe under different seeds: "
                                     "per-seed figures and their mean ± 95% Student t interval over seeds.")
    parser.add_argument("runs", nargs="+", metavar="RUN", help="a run folder, or its report/summary.json")
    parser.add_argument("--split", choices=SPLITS, default="test", help="held-out test split (default) or dev")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the full record as JSON")
    fmt.add_argument("--markdown", action="store_true", help="print GitHub tables ready to paste into docs")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="compare runs whose recipes differ in more than the seed (the output says so)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        record = compare(args.runs, args.split, args.allow_mixed)
    except (ValueError, FileNotFoundError) as e:
        print(f"srpo compare: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(record, indent=2) if args.json else render(record, args.markdown), end="\n" if args.json else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
