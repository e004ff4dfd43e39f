"""srpo.refusal against human refusal labels, one fold per responding model, next to the prefix baseline.

    python benchmarks/refusal_cv.py --data-root ../shared/data
    python benchmarks/refusal_cv.py --xstest FILE... --msts FILE --harmbench FILE [--folds dev|unseen] [--errors N]

Sets and labels (read by srpo.evals.labelled): XSTest completions (3 classes); MSTS expert annotations (final_taxonomy
1.1 and 1.2 full refusal, 1.3 partial, everything else compliance); HarmBench classifier validation set (responses the
human majority called harmful are compliance, the rest are left out). A fold is one (set, model) pair.

The classifier is hand-written rules with no fitted parameters, so a fold is "left out" when its errors were never
read while the rules were written. DEV_* below name the folds the rules were developed on; every other fold, including
any model added later, is reported as unseen. Per fold: n, binary agreement with a 95 % bootstrap interval, 3-class
agreement where the set labels partial refusals, and the prefix baseline. Last line:
`left-out binary agreement: 0.NNN [lo, hi]`, pooled over all folds given (stratified bootstrap by fold).
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

# Run from a checkout without installing: the repo root holds `srpo`, this folder the baseline.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from refusal_agreement import baseline_is_refusal

from srpo.evals.labelled import LabelledDataError, read_labelled
from srpo.refusal import COMPLIANCE, classify_refusal

# Folds whose errors were read while writing the rules (docs/refusal_classifier.md, "Protocol"). HarmBench models are
# split by family (leading letters of the name: llama2_7b -> llama), alternating over the sorted families, so that no
# family is on both sides.
DEV_MODELS = {("xstest", "mistralinstruct"), ("msts", "OpenGVLab--InternVL2-8B")}
DEV_HARMBENCH_FAMILIES = {"baichuan", "gpt", "llama", "orca", "solar", "vicuna"}
# Sets whose labels separate partial from full refusal; HarmBench's only say harmful (= compliance).
THREE_CLASS = {"xstest", "msts"}
DATA_ROOT_FILES = {
    "xstest": "xstest/dev_completions/*.csv",
    "msts": "msts/dev_annotations/english_multimodal.csv",
    "harmbench": "harmbench/classifier_val_sets/text_behaviors_val_set.json",
}


def role(benchmark: str, model: str) -> str:
    if benchmark == "harmbench":
        family = re.match(r"[a-z]*", model.lower()).group()
        return "dev" if family in DEV_HARMBENCH_FAMILIES else "unseen"
    return "dev" if (benchmark, model) in DEV_MODELS else "unseen"


def bootstrap(groups: list[list[bool]], n: int, seed: int) -> tuple[float, float]:
    """95 % percentile interval of the pooled mean, resampling rows within each group."""
    rng = random.Random(seed)
    total = sum(len(g) for g in groups)
    if not total:
        return 0.0, 0.0
    means = sorted(sum(sum(rng.choices(g, k=len(g))) for g in groups if g) / total for _ in range(n))
    return means[int(0.025 * (n - 1))], means[int(0.975 * (n - 1))]


def resolve_files(args) -> dict[str, list[Path]]:
    files = {"xstest": list(args.xstest or []), "msts": [args.msts] if args.msts else [],
             "harmbench": [args.harmbench] if args.harmbench else []}
    if args.data_root:
        for bench, pattern in DATA_ROOT_FILES.items():
            found = sorted(args.data_root.glob(pattern))
            if not found:
                raise LabelledDataError(f"{args.data_root / pattern}: not found under --data-root "
                                        f"(expected the upstream {bench} labelled set)")
            files[bench] = files[bench] or found
    if not any(files.values()):
        raise LabelledDataError("no labelled files given: pass --data-root ../shared/data, or --xstest/--msts/"
                                "--harmbench paths")
    for paths in files.values():
        for path in paths:
            if not path.is_file():
                raise LabelledDataError(f"{path}: no such file")
    return files


def folds_of(files: dict[str, list[Path]]) -> dict[tuple[str, str], list]:
    folds: dict[tuple[str, str], list] = {}
    for bench, paths in files.items():
        for path in paths:
            for row in read_labelled(bench, path):
                if row.refusal is not None:
                    folds.setdefault((bench, row.model or path.stem), []).append(row)
    return dict(sorted(folds.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--xstest", nargs="+", type=Path, help="XSTest completion CSVs (final_label)")
    ap.add_argument("--msts", type=Path, help="MSTS dev_annotations/english_multimodal.csv")
    ap.add_argument("--harmbench", type=Path, help="HarmBench classifier_val_sets/text_behaviors_val_set.json")
    ap.add_argument("--data-root", type=Path, help="folder holding all three in their upstream layout")
    ap.add_argument("--folds", choices=("all", "dev", "unseen"), default="all", help="which folds to score")
    ap.add_argument("--errors", type=int, default=0, help="print up to N disagreements per fold")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    try:
        folds = folds_of(resolve_files(args))
    except LabelledDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    folds = {k: v for k, v in folds.items() if args.folds == "all" or role(*k) == args.folds}
    if not folds:
        print(f"error: no refusal-labelled rows in the {args.folds} folds of the files given", file=sys.stderr)
        return 2

    width = max(len(model) for _, model in folds)
    print(f"{'set':<10} {'model':<{width}} {'role':<6} {'n':>4}  {'binary [95% CI]':<22} {'3-class':>7}  "
          f"{'prefix':>6}")
    correct: dict[str, list[list[bool]]] = {"dev": [], "unseen": []}
    three: list[bool] = []
    base: list[bool] = []
    for (bench, model), rows in folds.items():
        pred = [classify_refusal(r.response, r.prompt) for r in rows]
        ok = [(p != COMPLIANCE) == (r.refusal != COMPLIANCE) for p, r in zip(pred, rows, strict=True)]
        ok3 = [p == r.refusal for p, r in zip(pred, rows, strict=True)]
        okb = [baseline_is_refusal(r.response) == (r.refusal != COMPLIANCE) for r in rows]
        correct[role(bench, model)].append(ok)
        base += okb
        three += ok3 if bench in THREE_CLASS else []
        lo, hi = bootstrap([ok], args.bootstrap, args.seed)
        tc = f"{sum(ok3) / len(rows):.3f}" if bench in THREE_CLASS else "-"
        print(f"{bench:<10} {model:<{width}} {role(bench, model):<6} {len(rows):>4}  "
              f"{sum(ok) / len(rows):.3f} [{lo:.3f}, {hi:.3f}]   {tc:>7}  {sum(okb) / len(rows):>6.3f}")
        shown = 0
        for r, p, good in zip(rows, pred, ok, strict=True):
            if not good and shown < args.errors:
                shown += 1
                print(f"    [{r.refusal} -> {p}] row {r.row} {r.prompt[:70]!r}\n        "
                      f"{' '.join(r.response.split())[:300]}")

    groups = correct["dev"] + correct["unseen"]
    n = sum(len(g) for g in groups)
    for name in ("dev", "unseen"):
        if correct[name]:
            m = sum(len(g) for g in correct[name])
            lo, hi = bootstrap(correct[name], args.bootstrap, args.seed)
            print(f"pooled {name} folds: n={m} binary {sum(map(sum, correct[name])) / m:.3f} [{lo:.3f}, {hi:.3f}]")
    if three:
        print(f"pooled 3-class (xstest, msts): n={len(three)} {sum(three) / len(three):.3f}")
    print(f"pooled prefix baseline binary: {sum(base) / n:.3f}")
    lo, hi = bootstrap(groups, args.bootstrap, args.seed)
    print(f"left-out binary agreement: {sum(map(sum, groups)) / n:.3f} [{lo:.3f}, {hi:.3f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
