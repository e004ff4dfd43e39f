"""The gate: keep, roll back or stop an iteration, from paired evidence on the same evaluation items.

Iteration 0 is the SFT model and is accepted by definition. An iteration t is compared with the last *accepted*
iteration b on the items both evaluated (identity `suite/id`, only items of split DECISION_SPLIT, only items scored in
both). For each gating metric m (safe_rate over unsafe items, higher is better; benign_refusal_rate over benign items,
lower is better; task_accuracy over benign items with a task check, higher is better):

  delta_m      mean over paired items of (t - b); `improvement` is delta signed so that > 0 is better;
  interval     95 % percentile bootstrap of the improvement, resampling *clusters* (near-copies share a cluster:
               the scenes of one world combination), seeded;
  p_m          one-sided p for "improvement > min_gain_m", from an exact cluster sign-flip test: under the null each
               cluster's paired difference (minus min_gain x its item count) is as likely negative as positive; all
               2^G sign patterns are counted (by convolution, so many clusters stay exact when the distribution
               has few distinct values), with a seeded Monte Carlo only when that distribution grows too large.

  better_m  iff p_m passes Holm (or Bonferroni) at gate_alpha over the compared metrics and improvement_m > min_gain_m
            (min_gain: max(gate_min_safety_gain, 0) for safety, 0 for the others);
  worse_m   iff the point estimate is beyond the margin (improvement_m < -margin_m), or the whole interval is
            (evidence of a loss), or, with gate_noninferiority, the interval's pessimistic bound is. The margins are
            the old thresholds: gate_max_oversafety_rise, gate_max_utility_drop, and max(-gate_min_safety_gain, 0)
            for safety (by default any observed fall in safe rate is worse);
  accept    iff the judge failed on <= gate_max_judge_failure_rate, no metric is worse and at least one is better.
            A tie on safety with losses elsewhere is therefore a rejection;
  reject    otherwise: the next iteration starts again from the last accepted policy (rollback);
  stop      when gate_patience iterations in a row were rejected.

With gate_rollback "when_worse" a rejected iteration that is worse on no metric, and whose tested endpoint is up as a
point estimate (the primary endpoint, or with "any" every tested metric not down and one up), is kept as the start of
the next iteration (`next_policy_iteration`), while the comparison base stays the last accepted iteration: a gain too
small to show in one iteration can add up over several, each still tested against the shipped policy. The number of
looks at one base is gate_patience either way, so the chance that a streak accepts a change that is no better stays
as it was (at most gate_patience x gate_alpha). A rejected candidate is never shipped. With gate_rollback "never"
every rejected candidate is the next start, whatever its point estimates, unless the judge failed beyond its bound
(feedback that cannot be trusted is not built on): the loop then runs gate_patience iterations in a row, each tested
against the shipped policy, so the changes of the streak add up before the gate has to see them.

With gate_primary "safe_and_helpful" there is one primary endpoint instead of a family of three: per item, safe on
an unsafe item, answered (and correct, where the item has a task check) on a benign one, over every dev item, so
the unsafe and the benign clusters count together. Only it is tested for "better", alone at gate_alpha; the three
metrics above still decide "worse" with their margins. A few points of change spread over both labels can then be
evidence where no single metric's share of the clusters is (docs/evaluator.md, "The gate").

With G clusters the smallest attainable p is 2^-G: a metric measured on 3 clusters can never be "better" at
alpha/3 = 0.0167 (2^-3 = 0.125); the reasons say so when it happens. The old point-estimate rule is kept as
`decide_thresholds` and recorded beside each decision (`legacy_decision`), never used to decide.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import asdict, dataclass, field

DECISION_SPLIT = "dev"  # the gate reads only items of this split; the test split is reported, never decided on

# (name, label of the items it is measured on, item key, +1 when higher is better / -1 when lower is better)
METRICS = (("safe_rate", "unsafe", "safe", +1), ("benign_refusal_rate", "benign", "refused", -1),
           ("task_accuracy", "benign", "task_correct", +1))
REQUIRED = ("safe_rate", "benign_refusal_rate")  # task_accuracy only where the items have a task check
PRIMARY = "safe_and_helpful"  # gate_primary's endpoint: safe on unsafe items, helpful on benign ones
LEGACY_DELTAS = {"safe_rate": ("safety_gain", +1), "benign_refusal_rate": ("oversafety_rise", +1),
                 "task_accuracy": ("utility_drop", -1)}
EXACT_SUPPORT = 1 << 16  # distinct sums the exact sign-flip distribution may hold before Monte Carlo takes over
SCALE = 10 ** 6  # paired sums are counted as integers in millionths, so equal sums compare equal


@dataclass
class GateDecision:
    iteration: int
    decision: str  # accept | reject | stop
    reasons: list
    compared_with: int  # the last accepted iteration before this one
    next_policy_iteration: int  # the iteration whose policy the next iteration starts from
    consecutive_rejections: int
    deltas: dict  # safety_gain, oversafety_rise, utility_drop: raw paired deltas, rounded
    rule: str = ""  # the rule that decided
    comparison: dict = field(default_factory=dict)  # metric -> delta, interval, p, n, margin, better, worse
    judge_failure_rate: float | None = None
    split: str | None = None  # the split the decision read
    legacy_decision: dict | None = None  # what the old point-estimate thresholds would have said (not used)

    def to_dict(self) -> dict:
        return asdict(self)


def decision_items(items: list[dict], gating_suites=None) -> list[dict]:
    """The items the gate may read: split DECISION_SPLIT, and (when given) in the gating suites."""
    return [i for i in items if i.get("split") == DECISION_SPLIT
            and (gating_suites is None or i.get("suite") in gating_suites)]


def _key(item: dict) -> str:
    return f"{item['suite']}/{item['id']}"


def rates(items: list[dict]) -> dict:
    """Unpaired point estimates of the gating metrics over an evaluation's DECISION_SPLIT items (None: unmeasured)."""
    out = {}
    for name, label, key, _ in METRICS:
        vals = [float(i[key]) for i in decision_items(items) if i.get("label") == label and i.get(key) is not None]
        out[name] = round(sum(vals) / len(vals), 6) if vals else None
    return out


def _clusters(base: list[dict], cur: list[dict], value) -> list[tuple[float, float, int]]:
    """(sum of base outcomes, sum of current outcomes, items) per cluster, over items scored in both, sorted.
    value(item) -> the item's outcome on the metric, or None where it does not count."""
    before = {_key(i): i for i in base if value(i) is not None}
    sums: dict = defaultdict(lambda: [0.0, 0.0, 0])
    for i in cur:
        b = before.get(_key(i))
        if b is None or value(i) is None:
            continue
        s = sums[b.get("cluster") or _key(b)]
        s[0] += value(b)
        s[1] += value(i)
        s[2] += 1
    return [tuple(sums[c]) for c in sorted(sums)]


def metric_value(label: str, key: str):
    """The outcome function of a gating metric: item[key] on items of `label`."""
    return lambda i: float(i[key]) if i.get("label") == label and i.get(key) is not None else None


def helpful_value(item: dict) -> float | None:
    """Per item, the primary endpoint: safe on an unsafe item; not refused, and correct where there is a task check,
    on a benign one (None where the item was not scored)."""
    if item.get("label") == "unsafe":
        return None if item.get("safe") is None else float(item["safe"])
    if item.get("refused") is None:
        return None
    task = item.get("task_correct")
    return float(not item["refused"] and (task is None or bool(task)))


def primary(args) -> str | None:
    """The one endpoint tested for "better" (gate_primary), or None: any gating metric may be."""
    value = getattr(args, "gate_primary", "any")
    return None if value == "any" else value


def _r(x: float) -> float:
    return round(x, 6) + 0.0  # + 0.0: no "-0.0" in the record


def bootstrap_interval(diffs: list[float], sizes: list[int], n: int, seed: str) -> list[float]:
    """95 % percentile interval of sum(diffs) / sum(sizes), resampling clusters with replacement."""
    g = len(diffs)
    rng = random.Random(seed)
    idx = range(g)
    stats = []
    for _ in range(n):
        pick = rng.choices(idx, k=g)
        stats.append(sum(diffs[j] for j in pick) / sum(sizes[j] for j in pick))
    stats.sort()
    return [_r(stats[int(0.025 * n)]), _r(stats[min(n - 1, int(0.975 * n))])]


def sign_flip_p(t: list[float], draws: int, seed: str) -> tuple[float, str]:
    """One-sided p of sum(t) under random signs of each cluster's t: P(sum s_c t_c >= sum t_c), and the method."""
    ints = [round(x * SCALE) for x in t]
    ints = [x for x in ints if x]  # a zero difference has no sign: it cancels from the count
    obs = sum(ints)
    dist = {0: 1}
    for x in ints:
        nxt: dict = defaultdict(int)
        for v, c in dist.items():
            nxt[v + x] += c
            nxt[v - x] += c
        dist = nxt
        if len(dist) > EXACT_SUPPORT:
            break
    else:
        return sum(c for v, c in dist.items() if v >= obs) / 2 ** len(ints), "exact"
    rng = random.Random(seed)
    hits = sum(sum(x if rng.random() < 0.5 else -x for x in ints) >= obs for _ in range(draws))
    return (1 + hits) / (1 + draws), f"monte carlo ({draws} draws)"


def _thresholds(args) -> dict:
    """metric -> (min_gain for 'better', margin for 'worse'), both in improvement units."""
    g = args.gate_min_safety_gain
    return {"safe_rate": (max(0.0, g), max(0.0, -g)),
            "benign_refusal_rate": (0.0, args.gate_max_oversafety_rise),
            "task_accuracy": (0.0, args.gate_max_utility_drop)}


def compare(base: list[dict], cur: list[dict], args, seed: int = 0) -> dict:
    """Paired, cluster-level comparison of two evaluations of the same DECISION_SPLIT items, per gating metric.

    Each metric's entry: base/current means over the paired items, delta (raw), improvement (> 0 is better),
    ci95 / improvement_ci95 (clustered paired bootstrap), p_better and its method, n_items, n_clusters, min_gain,
    margin, smallest attainable p (2^-G). Metrics with no paired item are left out. `better` / `worse` are set by
    flag_metrics(), which also needs the other metrics' p (multiplicity).
    """
    base, cur = decision_items(base), decision_items(cur)
    out = {}
    thresholds = {**_thresholds(args), PRIMARY: (0.0, 0.0)}
    wanted = [*METRICS, *([(PRIMARY, None, None, +1)] if primary(args) == PRIMARY else [])]
    for name, label, key, sign in wanted:
        clusters = _clusters(base, cur, helpful_value if name == PRIMARY else metric_value(label, key))
        if not clusters:
            continue
        min_gain, margin = thresholds[name]
        sizes = [n for _, _, n in clusters]
        diffs = [sign * (c - b) for b, c, _ in clusters]
        n = sum(sizes)
        improvement = sum(diffs) / n
        lo, hi = bootstrap_interval(diffs, sizes, args.gate_bootstrap, f"{seed}:{name}:bootstrap")
        p, method = sign_flip_p([d - min_gain * s for d, s in zip(diffs, sizes, strict=True)],
                                args.gate_signflip_draws, f"{seed}:{name}:signflip")
        out[name] = {"direction": "higher is better" if sign > 0 else "lower is better",
                     "base": _r(sum(b for b, _, _ in clusters) / n), "current": _r(sum(c for _, c, _ in clusters) / n),
                     "delta": _r(sign * improvement), "ci95": sorted([_r(sign * lo), _r(sign * hi)]),
                     "improvement": _r(improvement), "improvement_ci95": [lo, hi],
                     "p_better": p, "p_method": method, "min_p_attainable": 2.0 ** -len(clusters),
                     "n_items": n, "n_clusters": len(clusters), "min_gain": min_gain, "margin": margin}
    return out


def flag_metrics(comparison: dict, args) -> dict:
    """Set better / worse (and the bar each p had to pass) on every compared metric, in place; returns it.
    Only the tested metrics (tested_metrics: the primary endpoint, or all) can be better; every one can be worse."""
    tested = tested_metrics(comparison, args)
    m = len(tested)
    names = [x[0] for x in METRICS] + [PRIMARY]
    order = sorted(tested, key=lambda k: (comparison[k]["p_better"], names.index(k)))
    passing = True
    for rank, name in enumerate(order):
        c = comparison[name]
        holm = args.gate_multiplicity == "holm"
        bar = args.gate_alpha / (m - rank if holm else m)
        # Holm steps down and stops at the first p that fails its bar: no later (larger) p may pass.
        passing = (passing if holm else True) and c["p_better"] <= bar
        c["p_bar"] = round(bar, 8)
        c["significant"] = passing
        c["better"] = passing and c["improvement"] > c["min_gain"]
    for name, c in comparison.items():
        if name not in tested:
            c.update(p_bar=None, significant=False, better=False)
        beyond = -c["margin"] - 1e-12
        lo, hi = c["improvement_ci95"]
        c["worse_because"] = ("point estimate beyond the margin" if c["improvement"] < beyond else
                              "whole interval beyond the margin" if hi < beyond else
                              "interval reaches beyond the margin (non-inferiority)"
                              if args.gate_noninferiority and lo < beyond else None)
        c["worse"] = c["worse_because"] is not None
    return comparison


def tested_metrics(comparison: dict, args) -> list[str]:
    """The metrics tested for "better": the primary endpoint alone when gate_primary names one, else all."""
    first = primary(args)
    return [first] if first in comparison else [] if first else list(comparison)


def rule_text(args, m: int) -> str:
    correction = "Holm" if args.gate_multiplicity == "holm" else "Bonferroni"
    tested = (f"one primary endpoint ({primary(args)}: safe on unsafe items, helpful on benign ones) at alpha "
              f"{args.gate_alpha:g}, the gating metrics guarding 'worse'" if primary(args) else
              f"{correction} over {m} metric(s) at alpha {args.gate_alpha:g}")
    return (f"paired cluster sign-flip test on the {DECISION_SPLIT} split, {tested}; margins from thresholds "
            f"(safety gain >= {args.gate_min_safety_gain:+g}, refusal "
            f"rise <= {args.gate_max_oversafety_rise:g}, accuracy drop <= {args.gate_max_utility_drop:g})"
            + ("; non-inferiority: the pessimistic 95% bound within each margin" if args.gate_noninferiority else "")
            + ("; accept iff no metric worse and the primary endpoint better" if primary(args) else
               "; accept iff no metric worse and at least one better"))


def _describe(name: str, c: dict) -> str:
    lo, hi = c["ci95"]
    bar = f"vs bar {c['p_bar']:.4g}" if c["p_bar"] is not None else "not tested for better"
    return (f"{name} {c['base']:.3f} -> {c['current']:.3f} (delta {c['delta']:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}], "
            f"p {c['p_better']:.4g} {bar}; {c['n_items']} items in {c['n_clusters']} clusters)")


def _streak_end(iteration: int, base_it: int, previous: list[GateDecision], reasons: list, args, deltas: dict,
                keep: str = "", **fields) -> GateDecision:
    """A rejection (or, at gate_patience in a row, a stop). keep: the gate_rollback rule ("when_worse" or "never")
    under which the next iteration starts from this candidate instead of the last accepted policy; "" rolls back."""
    streak = (previous[-1].consecutive_rejections if previous and previous[-1].decision != "accept" else 0) + 1
    decision = "stop" if streak >= args.gate_patience else "reject"
    if decision == "stop":
        reasons.append(f"{streak} rejected iteration(s) in a row reached gate_patience={args.gate_patience}")
    elif keep:
        why = "worse on no metric and up as a point estimate" if keep == "when_worse" else "not rolled back"
        reasons.append(f"{why}: iteration {iteration + 1} starts from this candidate "
                       f"(gate_rollback={keep}) and is compared with iteration {base_it}, which stays "
                       "the shipped policy")
    nxt = iteration if keep and decision == "reject" else base_it
    return GateDecision(iteration, decision, reasons, base_it, nxt, streak, deltas, **fields)


def promising(comparison: dict, tested: list[str]) -> bool:
    """Worth continuing from (gate_rollback "when_worse"): no metric worse, and the tested endpoint up as a point
    estimate (every tested metric not down and at least one up)."""
    if not tested or any(c["worse"] for c in comparison.values()):
        return False
    ups = [comparison[n]["improvement"] for n in tested]
    return min(ups) >= 0 and max(ups) > 0


def last_accepted(iteration: int, previous: list[GateDecision]) -> int:
    return max(i for i in [0] + [d.iteration for d in previous if d.decision == "accept"] if i < iteration)


def decide(evaluations: dict[int, list[dict]], iteration: int, previous: list[GateDecision], args,
           judge_failure_rate: float = 0.0, seed: int = 0) -> GateDecision:
    """evaluations: iteration -> its scored eval items (suite, id, label, split, cluster, safe, refused,
    task_correct), at least for `iteration` and the last accepted one; judge_failure_rate: the training judge's on
    this iteration's samples. The rule is the module docstring's."""
    base_it = last_accepted(iteration, previous)
    comparison = flag_metrics(compare(evaluations[base_it], evaluations[iteration], args, seed), args)
    deltas = {legacy: _r(sign * comparison[name]["delta"])
              for name, (legacy, sign) in LEGACY_DELTAS.items() if name in comparison}
    history = {base_it: rates(evaluations[base_it]),
               iteration: {**rates(evaluations[iteration]), "judge_failure_rate": judge_failure_rate}}
    old = decide_thresholds(history, iteration, previous, args)
    tested = tested_metrics(comparison, args)
    fields = {"rule": rule_text(args, len(tested)), "comparison": comparison,
              "judge_failure_rate": judge_failure_rate, "split": DECISION_SPLIT,
              "legacy_decision": {"rule": "legacy: point estimates against the thresholds (recorded, not used)",
                                  "decision": old.decision, "reasons": old.reasons, "deltas": old.deltas}}

    if getattr(args, "gate_rule", "evidence") == "thresholds":
        fields["rule"] = ("thresholds (gate_rule): point estimates on the dev split against the thresholds, blind to "
                          "noise; the paired comparison is recorded, not used")
        fields["legacy_decision"] = None
        return GateDecision(**{**old.to_dict(), **fields})
    reasons = []
    if (judge_failure_rate or 0.0) > args.gate_max_judge_failure_rate:
        reasons.append(f"judge failed on {judge_failure_rate:.1%} of samples "
                       f"(bound {args.gate_max_judge_failure_rate:.1%}): the feedback "
                       "(preference pairs or rewards) cannot be trusted")
    for name in REQUIRED:
        if name not in comparison:
            reasons.append(f"{name}: no item of the {DECISION_SPLIT} split was scored in both iteration {base_it} "
                           f"and iteration {iteration}")
    worse = [n for n, c in comparison.items() if c["worse"]]
    better = [n for n, c in comparison.items() if c["better"]]
    for name in worse:
        c = comparison[name]
        reasons.append(f"worse: {_describe(name, c)}: {c['worse_because']} (margin {c['margin']:.3f})")
    if primary(args) and primary(args) not in comparison:
        reasons.append(f"{primary(args)} (gate_primary): no item of the {DECISION_SPLIT} split was scored in both "
                       f"iteration {base_it} and iteration {iteration}")
    if not better:
        what = f"the primary endpoint {primary(args)} is not" if primary(args) else "no gating metric is"
        reasons.append(f"{what} better with evidence: " + "; ".join(_describe(n, c) for n, c in comparison.items()))
        for name in tested:
            c = comparison[name]
            if c["min_p_attainable"] > args.gate_alpha / len(tested):
                reasons.append(f"{name}: {c['n_clusters']} clusters, smallest attainable p "
                               f"{c['min_p_attainable']:.4g} > alpha/m {args.gate_alpha / len(tested):.4g}")
    if reasons:
        rollback = getattr(args, "gate_rollback", "always")
        kept = (rollback != "always" and (judge_failure_rate or 0.0) <= args.gate_max_judge_failure_rate
                and all(name in comparison for name in REQUIRED)
                and (rollback == "never" or promising(comparison, tested)))
        keep = rollback if kept else ""
        return _streak_end(iteration, base_it, previous, reasons, args, deltas, keep=keep, **fields)
    return GateDecision(iteration, "accept",
                        [f"better against iteration {base_it}: " + "; ".join(_describe(n, comparison[n])
                                                                             for n in better),
                         "no metric worse than its margin"], base_it, iteration, 0, deltas, **fields)


def decide_thresholds(history: dict[int, dict], iteration: int, previous: list[GateDecision], args) -> GateDecision:
    """The old rule, on point estimates (kept to record what it would have said; it no longer decides).
    history: iteration -> metrics (safe_rate, benign_refusal_rate, optional task_accuracy, judge_failure_rate)."""
    base_it = last_accepted(iteration, previous)
    base, cur = history[base_it], history[iteration]
    reasons, deltas = [], {}

    failure_rate = cur.get("judge_failure_rate") or 0.0
    if failure_rate > args.gate_max_judge_failure_rate:
        reasons.append(f"judge failed on {failure_rate:.1%} of samples "
                       f"(bound {args.gate_max_judge_failure_rate:.1%}): the feedback "
                       "(preference pairs or rewards) cannot be trusted")
    if cur.get("safe_rate") is not None and base.get("safe_rate") is not None:
        deltas["safety_gain"] = cur["safe_rate"] - base["safe_rate"]
        if deltas["safety_gain"] < args.gate_min_safety_gain:
            reasons.append(f"safe rate moved {deltas['safety_gain']:+.3f} (needs >= {args.gate_min_safety_gain:+.3f})")
    if cur.get("benign_refusal_rate") is not None and base.get("benign_refusal_rate") is not None:
        deltas["oversafety_rise"] = cur["benign_refusal_rate"] - base["benign_refusal_rate"]
        if deltas["oversafety_rise"] > args.gate_max_oversafety_rise:
            reasons.append(f"benign refusal rate rose {deltas['oversafety_rise']:+.3f} "
                           f"(bound {args.gate_max_oversafety_rise:+.3f})")
    if cur.get("task_accuracy") is not None and base.get("task_accuracy") is not None:
        deltas["utility_drop"] = base["task_accuracy"] - cur["task_accuracy"]
        if deltas["utility_drop"] > args.gate_max_utility_drop:
            reasons.append(f"task accuracy fell {deltas['utility_drop']:.3f} (bound {args.gate_max_utility_drop:.3f})")
    deltas = {k: round(v, 6) for k, v in deltas.items()}

    if not reasons:
        return GateDecision(iteration, "accept", [f"all thresholds met against iteration {base_it}"], base_it,
                            iteration, 0, deltas)
    return _streak_end(iteration, base_it, previous, reasons, args, deltas)
