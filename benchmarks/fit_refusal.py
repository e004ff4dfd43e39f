"""A learned calibrator over srpo.refusal's cues, cross-validated leave-one-model-out against the rules alone.

    python benchmarks/fit_refusal.py --data-root ../shared/data [--l2 1 10 100] [--free-rule]

Features are `srpo.refusal.refusal_cues` (the rules' own label and step, their intermediate cues, and plain text
statistics). The model is a binary L2 logistic regression (refused = full or partial), fitted in pure Python by
Newton's method. For each fold (one responding model of one set, as in refusal_cv.py) it is fitted on every other
fold and scores the left-out one. `--free-rule` leaves the weight of the rules' label unpenalised, so a strong L2
shrinks towards the rules rather than towards "always comply". It was tried and not shipped
(docs/refusal_classifier.md, "A learned calibrator, tried"): this script reproduces those figures and writes nothing.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from refusal_cv import folds_of, resolve_files, role

from srpo.evals.labelled import LabelledDataError
from srpo.refusal import COMPLIANCE, refusal_cues

RULE_FEATURES = ("rule_full", "rule_partial")


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (the Newton step; the system is small and positive definite)."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        for r in range(c + 1, n):
            f = m[r][c] / m[c][c]
            if f:
                m[r][c:] = [x - f * y for x, y in zip(m[r][c:], m[c][c:], strict=True)]
    x = [0.0] * n
    for c in range(n - 1, -1, -1):
        x[c] = (m[c][n] - sum(m[c][k] * x[k] for k in range(c + 1, n))) / m[c][c]
    return x


def fit_logistic(xs: list[list[tuple[int, float]]], ys: list[int], d: int, l2: float, free: set[int],
                 iters: int = 30) -> list[float]:
    """Weights [bias, w_0..w_{d-1}] minimising log loss + l2/2 * |w|^2 (bias and `free` unpenalised)."""
    w = [0.0] * (d + 1)
    for _ in range(iters):
        g = [0.0] * (d + 1)
        h = [[0.0] * (d + 1) for _ in range(d + 1)]
        for x, y in zip(xs, ys, strict=True):
            full = [(0, 1.0)] + [(i + 1, v) for i, v in x]
            p = 1 / (1 + math.exp(-max(-30.0, min(30.0, sum(w[i] * v for i, v in full)))))
            for i, vi in full:
                g[i] += (p - y) * vi
                for j, vj in full:
                    h[i][j] += p * (1 - p) * vi * vj
        for i in range(1, d + 1):
            lam = 1e-3 if i - 1 in free else l2
            g[i] += lam * w[i]
            h[i][i] += lam
        h[0][0] += 1e-6
        step = _solve(h, g)
        w = [a - b for a, b in zip(w, step, strict=True)]
        if max(map(abs, step)) < 1e-8:
            break
    return w


def _logit(w: list[float], x: list[tuple[int, float]]) -> float:
    return w[0] + sum(w[i + 1] * v for i, v in x)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, required=True, help="folder holding the three labelled sets")
    ap.add_argument("--l2", type=float, nargs="+", default=[1.0, 10.0, 100.0], help="L2 strengths to report")
    ap.add_argument("--free-rule", action="store_true", help="leave the rules' label weight unpenalised")
    args = ap.parse_args(argv)
    args.xstest = args.msts = args.harmbench = None
    try:
        folds = folds_of(resolve_files(args))
    except LabelledDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    cues = {k: [refusal_cues(r.response, r.prompt) for r in rows] for k, rows in folds.items()}
    names = list(next(iter(cues.values()))[0])
    free = {names.index(n) for n in RULE_FEATURES} if args.free_rule else set()
    xs = {k: [[(i, f[n]) for i, n in enumerate(names) if f[n]] for f in fs] for k, fs in cues.items()}
    ys = {k: [int(r.refusal != COMPLIANCE) for r in rows] for k, rows in folds.items()}
    rules = {k: [int(f["rule_full"] or f["rule_partial"]) for f in fs] for k, fs in cues.items()}

    hits = {"rules": {k: sum(r == y for r, y in zip(rules[k], ys[k], strict=True)) for k in folds}}
    for l2 in args.l2:
        hits[f"l2={l2:g}"] = {}
        for key in folds:
            w = fit_logistic([x for k in folds if k != key for x in xs[k]],
                             [y for k in folds if k != key for y in ys[k]], len(names), l2, free)
            hits[f"l2={l2:g}"][key] = sum((_logit(w, x) > 0) == bool(y) for x, y in zip(xs[key], ys[key], strict=True))

    groups = {f"{b} {m}": [(b, m)] for b, m in folds if b != "harmbench"}
    groups["harmbench (all folds)"] = [k for k in folds if k[0] == "harmbench"]
    groups["pooled unseen folds"] = [k for k in folds if role(*k) == "unseen"]
    groups["pooled all folds"] = list(folds)
    width = max(map(len, groups))
    print(f"{'left-out fold':<{width}} {'n':>5}  " + "  ".join(f"{c:>8}" for c in hits))
    for name, keys in groups.items():
        n = sum(len(ys[k]) for k in keys)
        print(f"{name:<{width}} {n:>5}  " + "  ".join(f"{sum(h[k] for k in keys) / n:>8.3f}" for h in hits.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
