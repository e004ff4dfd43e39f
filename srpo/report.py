"""`srpo report RUN_DIR`: one self-contained HTML page (and a markdown twin) describing a run.

    python -m srpo.report runs/tiny-demo        # writes runs/tiny-demo/report/report.html and report.md

Everything is read from the run folder, through `RunFolder`; nothing is recomputed and nothing outside the folder is
needed:
  plots      safety/oversafety frontier per iteration (gate decisions marked), per-category safe rate and refusal
             classes per iteration, judge score distributions, SFT/DPO loss and DPO reward-margin curves;
  tables     per-iteration metrics with 95% bootstrap intervals (and the base model's, when it was evaluated), gate
             decisions with their reasons;
  gallery    the eval items that improved / regressed most between iteration 0 (SFT) and the final accepted
             iteration, with the image, the prompt and both responses.

The content is built once, as data (`report_context`: sections of paragraphs, tables, figures and gallery cards),
and rendered by two Jinja2 templates that hold only layout: srpo/templates/report.md.j2 and report.html.j2, so the
two files say the same. report.html embeds its plots and thumbnails as base64 PNGs and its CSS inline: no
scripts, fonts or URLs, so it can be mailed or archived on its own. report.md references PNG files written next to
it (report/plot_*.png, report/gallery/*.png). A step counts only once its manifest exists (the run-folder
contract), so a run in progress or a partial run produces a report of what is finished. matplotlib is imported only
when plotting; without it the report is written with a note in place of each plot.
"""

from __future__ import annotations

import base64
import io
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from srpo.runfolder import JUDGMENTS, METRICS, RunFolder, atomic_write_text
from srpo.schema import image_paths

PLOTS = {  # id -> (title, caption)
    "frontier": ("Safety vs oversafety frontier",
                 "x: benign refusal rate (oversafety, lower is better); y: safe rate on unsafe prompts (higher is "
                 "better). One point per evaluated iteration, error bars are 95% bootstrap intervals; iteration 0 is "
                 "the SFT policy. The ideal corner is top-left."),
    "categories": ("Per-category safe rate and refusals",
                   "Left: safe rate per risk category of the unsafe eval items. Right: refusal class of every eval "
                   "answer, per iteration, for unsafe (U) and benign (B) items."),
    "judge": ("Judge score distributions",
              "Histograms of the judge's safety, effectiveness and awareness scores of the sampled responses, per "
              "iteration; failed judgments are counted in the legend and never become scores."),
    "training": ("Training curves",
                 "SFT loss, DPO loss and DPO reward margin (rewards/margins: chosen minus rejected implicit reward) "
                 "per logging step."),
}
DECISION_STYLE = {  # decision -> (marker, colour, label)
    "base": ("*", "#1f77b4", "SFT (iteration 0)"),
    "accept": ("o", "#2ca02c", "accepted"),
    "reject": ("X", "#ff7f0e", "rejected"),
    "stop": ("s", "#d62728", "stopped"),
    "pending": ("D", "#7f7f7f", "no gate decision yet"),
}
REFUSAL_CLASSES = [("compliance", "#9ecae1"), ("partial_refusal", "#fdae6b"), ("full_refusal", "#e6550d")]
SCORES = ["safety", "effectiveness", "awareness"]
GALLERY_SIZE = 4
THUMB_PX = 160


STAGES = ("samples", "judgments", "pairs", "dpo", "grpo", "eval", "gate")
BASE_EVAL = "base/eval"  # the base model, evaluated before SFT when run.run_eval_base is on


@dataclass
class Iteration:
    index: int
    metrics: dict | None = None  # eval/metrics.json (or the eval manifest's stats)
    items: list = field(default_factory=list)  # eval/items.jsonl
    gate: dict | None = None  # gate.json["decision"]
    judgments: list = field(default_factory=list)  # judgments/judgments.jsonl
    log_history: list = field(default_factory=list)  # dpo/log_history.json (SFT's for iteration 0)
    stats: dict = field(default_factory=dict)  # stage -> manifest stats
    incomplete: list = field(default_factory=list)  # steps started (folder exists) without a manifest

    def split(self, name: str) -> dict:
        """The gating suites' metrics of one split ("dev": decided on, "test": reported)."""
        return ((self.metrics or {}).get("splits") or {}).get(name) or {}

    @property
    def test(self) -> dict:
        return self.split("test")

    @property
    def decision(self) -> str:
        if self.index == 0:
            return "base"
        return self.gate["decision"] if self.gate else "pending"


@dataclass
class Run:
    folder: RunFolder
    name: str
    iterations: dict  # index -> Iteration
    sft_stats: dict | None
    base_metrics: dict | None  # the base model's eval, None when it was not evaluated
    notes: list
    summary: dict | None = None  # report/summary.json, once `srpo run` has finished

    @property
    def root(self) -> Path:
        return self.folder.root

    @property
    def evaluated(self) -> list:
        return [it for _, it in sorted(self.iterations.items()) if it.metrics is not None]

    @property
    def final_iteration(self) -> int:
        """The last accepted iteration (0 when none was): the policy the run hands on."""
        accepted = [i for i, it in self.iterations.items() if it.decision == "accept"]
        return max(accepted, default=0)


# Reading the run folder.

def load_run(run_dir: str | Path) -> Run:
    rf = RunFolder(Path(run_dir))
    if not rf.root.is_dir() or not rf.config_path.exists():
        raise FileNotFoundError(f"{run_dir!s} is not a run folder (no config.yaml); runs live in runs/<name>/")
    run_section = (rf.config() or {}).get("run")  # a report is still useful with an unreadable config
    name = (run_section.get("run_name") if isinstance(run_section, dict) else None) or rf.root.name
    notes = []
    iterations = {}
    sft = rf.step_stats("sft")
    for i in sorted(set(rf.iterations()) | {0}):
        it = Iteration(i)
        for stage in STAGES:
            step = RunFolder.iter_step(i, stage)
            stats = rf.step_stats(step)
            if stats is not None:
                it.stats[stage] = stats
            elif rf.is_unfinished(step):
                it.incomplete.append(step)
        it.metrics = rf.eval_metrics(i) or it.stats.get("eval")  # the manifest's stats hold the same top-level keys
        it.items = rf.eval_items(i)
        trainer = "grpo" if "grpo" in it.stats else "dpo"
        if trainer == "grpo":  # the reward's rows: each rewarded completion's judgment
            it.judgments = [r["judgment"] for r in rf.output_jsonl(RunFolder.iter_step(i, "grpo"), JUDGMENTS)
                            if r.get("judgment")]
        else:
            it.judgments = rf.judgments(i)
        it.log_history = rf.log_history("sft" if i == 0 else RunFolder.iter_step(i, trainer))
        gate = rf.gate(i) if i > 0 else None
        it.gate = gate.get("decision") if gate and isinstance(gate.get("decision"), dict) else None
        if i == 0 and not it.stats and sft is None:
            continue
        iterations[i] = it
    if sft is None:
        notes.append("SFT has not finished: no SFT loss curve.")
    for it in iterations.values():
        if it.incomplete:
            notes.append(f"started but not finished (not reported): {', '.join(it.incomplete)}")
    oracle = [i for i, it in iterations.items()
              if (it.stats.get("judgments") or it.stats.get("grpo") or {}).get("judge_backend") == "rule"]
    if oracle:
        notes.append(f"ORACLE feedback in iteration(s) {', '.join(map(str, oracle))}: the rule judge reads the data's "
                     "labels, so these results are an upper bound for tests, not RLAIF.")
    control = [i for i, it in iterations.items()
               if (it.stats.get("judgments") or it.stats.get("grpo") or {}).get("judge_backend") == "random"]
    if control:
        notes.append(f"CONTROL feedback in iteration(s) {', '.join(map(str, control))}: the random judge scores at "
                     "random and reads nothing, so these results are the null a judge must beat, not RLAIF.")
    if not any(it.metrics for it in iterations.values()):
        notes.append("no evaluation has finished yet: no metrics, frontier or gallery.")
    base = rf.output_json(BASE_EVAL, METRICS)
    base = base if isinstance(base, dict) and base else rf.step_stats(BASE_EVAL)
    return Run(rf, name, iterations, sft, base, notes, rf.summary())


# Comparing eval items (the gallery).

def item_score(item: dict) -> float:
    """How good one eval answer is: unsafe items 1 when safe; benign items 0.5 for not refusing + 0.5 when correct."""
    if item.get("label") == "unsafe":
        return 1.0 if item.get("safe") else 0.0
    return (0.0 if item.get("refused") else 0.5) + (0.5 if item.get("task_correct") else 0.0)


def gallery_target(run: Run) -> tuple[int | None, str]:
    """The iteration to compare with iteration 0, and why it was chosen."""
    evaluated = [it.index for it in run.evaluated if it.items]
    if 0 not in evaluated or len(evaluated) < 2:
        return None, "needs the evaluations of iteration 0 and of a later iteration"
    final = run.final_iteration
    if final > 0 and final in evaluated:
        return final, f"iteration 0 (SFT) vs iteration {final}, the final accepted iteration"
    last = max(evaluated)
    return last, (f"no iteration was accepted, so iteration 0 (SFT, the final policy) is compared with the last "
                  f"evaluated iteration {last} ({run.iterations[last].decision})")


def compare_items(before: list, after: list) -> list:
    """[(change, before_item, after_item)] for items in both evaluations, most improved first."""
    after_by_id = {i["id"]: i for i in after}
    rows = [(item_score(after_by_id[b["id"]]) - item_score(b), b, after_by_id[b["id"]])
            for b in before if b["id"] in after_by_id]
    return sorted(rows, key=lambda r: (-r[0], r[1]["id"]))


# Plots.

def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global backend or state; PNGs are drawn with Agg

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _colour(iteration: int) -> str:
    """The same colour for an iteration in every plot."""
    return f"C{iteration % 10}"


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#777777", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_frontier(run: Run) -> bytes:
    fig = _figure(7.5, 5.5)
    ax = fig.add_subplot()
    points = [it for it in run.evaluated
              if it.test.get("safe_rate") is not None and it.test.get("benign_refusal_rate") is not None]
    if not points:
        _empty(ax, "no finished evaluation")
        return _png(fig)
    xs = [it.test["benign_refusal_rate"] for it in points]
    ys = [it.test["safe_rate"] for it in points]
    ax.plot(xs, ys, color="#bbbbbb", linestyle=":", zorder=1, label="iteration order")
    # The policy the run carries forward: SFT, then each accepted iteration.
    kept = [it for it in points if it.decision in ("base", "accept")]
    if len(kept) > 1:
        ax.plot([it.test["benign_refusal_rate"] for it in kept], [it.test["safe_rate"] for it in kept],
                color="#2ca02c", alpha=0.5, linewidth=2, zorder=1, label="accepted path")
    seen = set()
    for it, x, y in zip(points, xs, ys, strict=True):
        marker, colour, label = DECISION_STYLE.get(it.decision, DECISION_STYLE["pending"])
        xci, yci = it.test.get("benign_refusal_rate_ci95"), it.test.get("safe_rate_ci95")
        ax.errorbar(x, y, xerr=[[x - xci[0]], [xci[1] - x]] if xci else None,
                    yerr=[[y - yci[0]], [yci[1] - y]] if yci else None, fmt="none", ecolor=colour, alpha=0.35,
                    capsize=3, zorder=2)
        ax.scatter([x], [y], marker=marker, s=260 if marker == "*" else 120, color=colour, edgecolor="black",
                   linewidth=0.8, zorder=3, label=None if it.decision in seen else label)
        seen.add(it.decision)
        tag = "it 0 (SFT)" if it.index == 0 else f"it {it.index}"
        if it.index == run.final_iteration:
            tag += " = final"
        ax.annotate(tag, (x, y), textcoords="offset points", xytext=(8, 8), fontsize=9)
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("benign refusal rate (oversafety) →")
    ax.set_ylabel("safe rate on unsafe prompts →")
    ax.set_title(f"{run.name}: safety vs oversafety (test split)")
    ax.annotate("ideal", (0, 1), textcoords="offset points", xytext=(4, -12), fontsize=8, color="#2ca02c")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def plot_categories(run: Run) -> bytes:
    import numpy as np

    fig = _figure(11, 4.5)
    left, right = fig.subplots(1, 2, width_ratios=[1.2, 1])
    evaluated = run.evaluated
    categories = sorted({c for it in evaluated for c in (it.test.get("per_category_safe_rate") or {})})
    if categories:
        width = 0.8 / len(evaluated)
        x = np.arange(len(categories))
        for k, it in enumerate(evaluated):
            per = it.test.get("per_category_safe_rate") or {}
            values = [per.get(c) for c in categories]
            bars = left.bar(x + (k - (len(evaluated) - 1) / 2) * width, [v if v is not None else 0 for v in values],
                            width, label=f"it {it.index} ({it.decision})", color=_colour(it.index))
            for bar, v in zip(bars, values, strict=True):
                if v is None:
                    bar.set_hatch("//")
        left.set_xticks(x, [c.replace("_", " ") for c in categories], rotation=20, ha="right")
        left.set_ylim(0, 1.05)
        left.set_ylabel("safe rate")
        left.set_title("safe rate per risk category (test split)")
        left.legend(fontsize=8)
        left.grid(axis="y", alpha=0.3)
    else:
        _empty(left, "no per-category safe rates")
    # Refusal classes of the eval answers, from items.jsonl: one stacked bar per (iteration, label).
    bars = [(it, label) for it in evaluated if it.items for label in ("unsafe", "benign")]
    if bars:
        positions = [k + (k // 2) * 0.6 for k in range(len(bars))]  # a gap between iterations
        bottoms = np.zeros(len(bars))
        for cls, colour in REFUSAL_CLASSES:
            fractions = []
            for it, label in bars:
                subset = [i for i in it.items if i.get("label") == label and i.get("split") == "test"]
                fractions.append(sum(i.get("refusal_class") == cls for i in subset) / len(subset) if subset else 0)
            right.bar(positions, fractions, 0.9, bottom=bottoms, color=colour, label=cls.replace("_", " "))
            bottoms += np.array(fractions)
        right.set_xticks(positions, [f"it {it.index}\n{'U' if label == 'unsafe' else 'B'}" for it, label in bars],
                         fontsize=8)
        right.set_ylim(0, 1.2)
        right.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        right.set_ylabel("fraction of eval answers")
        right.set_title("refusal class per iteration, test split (U unsafe, B benign)")
        right.legend(fontsize=8, loc="upper center", ncol=3)
    else:
        _empty(right, "no eval items")
    return _png(fig)


def plot_judge(run: Run) -> bytes:
    import numpy as np

    fig = _figure(12, 3.8)
    axes = fig.subplots(1, 3, sharey=True)
    judged = [it for _, it in sorted(run.iterations.items()) if it.judgments]
    bins = np.linspace(0, 1, 11)
    for ax, score in zip(axes, SCORES, strict=True):
        if not judged:
            _empty(ax, "no judgments")
            ax.set_title(score)
            continue
        for it in judged:
            values = [j[score] for j in it.judgments if not j.get("failed") and j.get(score) is not None]
            failures = sum(bool(j.get("failed")) for j in it.judgments)
            ax.hist(values, bins=bins, histtype="step", linewidth=2, color=_colour(it.index),
                    label=f"it {it.index}: n={len(values)}, failed={failures}")
        ax.set_title(score)
        ax.set_xlabel("score")
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("judged samples")
    return _png(fig)


def _curve(history: list, key: str) -> tuple[list, list]:
    rows = [h for h in history if isinstance(h, dict) and h.get(key) is not None and "step" in h]
    return [h["step"] for h in rows], [h[key] for h in rows]


def plot_training(run: Run) -> bytes:
    fig = _figure(12, 3.8)
    sft_ax, dpo_ax, margin_ax = fig.subplots(1, 3)
    base = run.iterations.get(0)
    steps, loss = _curve(base.log_history if base else [], "loss")
    if steps:
        sft_ax.plot(steps, loss, color="C0", marker=".")
        sft_ax.set_xlabel("step")
        sft_ax.set_ylabel("loss")
        sft_ax.grid(alpha=0.3)
    else:
        _empty(sft_ax, "no SFT log")
    sft_ax.set_title("SFT loss")
    dpo = [it for i, it in sorted(run.iterations.items()) if i > 0 and "dpo" in it.stats]
    grpo = [it for i, it in sorted(run.iterations.items()) if i > 0 and "grpo" in it.stats]
    panels = ((dpo_ax, "loss", "DPO loss"), (margin_ax, "rewards/margins", "DPO reward margin"))
    if grpo and not dpo:  # online RL: its loss and its mean reward per step
        dpo, panels = grpo, ((dpo_ax, "loss", "GRPO loss"), (margin_ax, "reward", "GRPO mean reward"))
    for ax, key, title in panels:
        drawn = 0
        for it in dpo:
            steps, values = _curve(it.log_history, key)
            if steps:
                ax.plot(steps, values, marker=".", color=_colour(it.index), label=f"it {it.index}")
                drawn += 1
        untrained = [f"it {it.index} (" + ("not trained: 0 pairs" if it.stats.get("dpo", {}).get("trained") is False
                                           else "no log") + ")" for it in dpo if not _curve(it.log_history, key)[0]]
        if drawn:
            if key == "rewards/margins":
                ax.axhline(0, color="#999999", linewidth=0.8)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            if untrained:
                ax.text(0.02, 0.02, "; ".join(untrained), transform=ax.transAxes, fontsize=7, color="#777777")
        else:
            _empty(ax, f"no {title.split()[0]} log" + (":\n" + "\n".join(untrained) if untrained else ""))
        ax.set_title(title)
    return _png(fig)


PLOTTERS = {"frontier": plot_frontier, "categories": plot_categories, "judge": plot_judge, "training": plot_training}


def render_plots(run: Run) -> dict:
    """id -> PNG bytes, or id -> error text when a plot could not be drawn (matplotlib missing, bad data)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return {k: "matplotlib is not installed (pip install matplotlib) — plot left out" for k in PLOTS}
    out = {}
    for key, plotter in PLOTTERS.items():
        try:
            out[key] = plotter(run)
        except Exception as e:  # noqa: BLE001  (one broken plot must not cost the whole report)
            out[key] = f"could not draw this plot: {type(e).__name__}: {e}"
    return out


# Tables.

def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _ci(metrics: dict, key: str) -> str:
    ci = metrics.get(f"{key}_ci95")
    return _pct(metrics.get(key)) + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def _eval_cells(m: dict) -> list:
    if not m:
        return ["not evaluated", "", "", ""]
    return [_ci(m, "safe_rate"), _ci(m, "benign_refusal_rate"), _ci(m, "task_accuracy"),
            f"{m.get('n_unsafe', '?')} / {m.get('n_benign', '?')}"]


def metrics_rows(run: Run, split: str = "test") -> tuple[list, list]:
    """(header, rows) of one split's figures; a row's second cell is the gate decision, the base model's row has
    none. Intervals come from a bootstrap over clusters (near-copies resampled together)."""
    header = ["iteration", "gate", "safe rate [95% CI]", "benign refusal [95% CI]", "task accuracy [95% CI]",
              "n unsafe / benign", "judge failure rate", "pairs", "final DPO reward margin"]
    if any("grpo" in it.stats for it in run.iterations.values()):
        header[-2:] = ["pairs / GRPO completions judged", "DPO reward margin / GRPO mean reward"]
    rows = []
    if run.base_metrics is not None:
        base = (run.base_metrics.get("splits") or {}).get(split) or {}
        rows.append(["base model (before SFT)", "", *_eval_cells(base), "", "", ""])
    for i, it in sorted(run.iterations.items()):
        judge = it.stats.get("judgments") or it.stats.get("grpo") or {}
        pairs = it.stats.get("pairs", {}).get("pairs")
        margin = it.stats.get("dpo", {}).get("final_reward_margin")
        if "grpo" in it.stats:  # online RL: the completions it judged, and their mean reward
            pairs, margin = it.stats["grpo"].get("judgments"), it.stats["grpo"].get("mean_reward")
        rows.append([
            f"{i}" + (" (SFT)" if i == 0 else "") + (" ★ final" if i == run.final_iteration else ""),
            it.decision,
            *_eval_cells(it.split(split)),
            _pct(judge.get("judge_failure_rate")) if judge else "",
            "" if pairs is None else str(pairs),
            "" if margin is None else f"{margin:.3f}",
        ])
    return header, rows


def _gate_cell(g: dict, metric: str, legacy: str) -> str:
    """A metric's paired change on dev with its interval and p (the evidence gate), else the old delta."""
    c = (g.get("comparison") or {}).get(metric)
    if c:
        lo, hi = c["ci95"]
        flag = " better" if c.get("better") else " WORSE" if c.get("worse") else ""
        return (f"{100 * c['delta']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] p={c['p_better']:.3g} "
                f"({c['n_clusters']} cl.){flag}")
    d = (g.get("deltas") or {}).get(legacy)
    return "" if d is None else f"{d:+.3f}"


def gate_rows(run: Run) -> tuple[list, list]:
    """(header, rows): each decision with the paired dev changes it read (points, 95% CI, p of 'better', clusters)
    and the rule that decided."""
    header = ["iteration", "decision", "compared with", "safe rate change", "benign refusal change",
              "task accuracy change", "next policy from", "rule", "reasons"]
    rows = []
    for i, it in sorted(run.iterations.items()):
        if i == 0:
            continue
        g = it.gate
        if g is None:
            rows.append([str(i), "pending", "", "", "", "", "", "", "no gate.json yet (iteration unfinished)"])
            continue
        legacy = g.get("legacy_decision") or {}
        reasons = "; ".join(g.get("reasons") or [])
        if legacy.get("decision") and legacy["decision"] != g.get("decision"):
            reasons += f" (the old point-estimate rule would have said {legacy['decision']})"
        rows.append([str(i), g.get("decision", "?"), str(g.get("compared_with", "")),
                     _gate_cell(g, "safe_rate", "safety_gain"),
                     _gate_cell(g, "benign_refusal_rate", "oversafety_rise"),
                     _gate_cell(g, "task_accuracy", "utility_drop"), str(g.get("next_policy_iteration", "")),
                     g.get("rule") or "thresholds (before the evidence gate)", reasons])
    return header, rows


# Gallery.

def _thumbnail(path: Path) -> bytes | None:
    try:
        from PIL import Image

        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((THUMB_PX, THUMB_PX))
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            return buf.getvalue()
    except Exception:  # noqa: BLE001  (a missing or unreadable image shows as a placeholder)
        return None


def _item_scores(item: dict) -> str:
    if item.get("label") == "unsafe":
        parts = [f"safe={item.get('safe')}"]
    else:
        parts = [f"refused={item.get('refused')}", f"task_correct={item.get('task_correct')}"]
    return ", ".join(parts + [f"refusal_class={item.get('refusal_class')}", f"score={item_score(item):.1f}"])


def gallery(run: Run) -> tuple[str, int | None, list, list]:
    """(explanation, compared iteration, most improved, most regressed) — each entry (change, before, after)."""
    target, why = gallery_target(run)
    if target is None:
        return why, None, [], []
    rows = compare_items(run.iterations[0].items, run.iterations[target].items)
    improved = [r for r in rows if r[0] > 0][:GALLERY_SIZE]
    regressed = sorted((r for r in rows if r[0] < 0), key=lambda r: (r[0], r[1]["id"]))[:GALLERY_SIZE]
    return why, target, improved, regressed



# The content, once: sections of blocks that both templates render.

def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80] or "item"


def _table(header: list, rows: list) -> dict:
    # The second cell is the decision column of both tables; it styles the HTML row.
    return {"kind": "table", "header": header,
            "rows": [{"cells": [str(c) for c in row], "decision": row[1] if row[1] in DECISION_STYLE else ""}
                     for row in rows]}


def judge_spec(section: dict, backend_key: str, model_key: str, default: str) -> str:
    """A judge as `srpo judge-eval --judge` names it: 'openai:MODEL', 'hf:FOLDER', or the backend alone."""
    backend = section.get(backend_key) or default
    model = section.get(model_key)
    return f"{backend}:{model}" if backend in ("openai", "hf") and model else backend


def judge_validation(run: Run) -> tuple[list, list, list]:
    """(header, rows, notes): the run's judges with their validation records (run.run_judge_validation)."""
    config = run.folder.config() or {}
    run_section, judge, ev = (config.get(k) if isinstance(config.get(k), dict) else {} for k in ("run", "judge",
                                                                                                  "eval"))
    training = judge_spec(judge, "judge_backend", "judge_model", "self")
    judges = {training: "training feedback", judge_spec(ev, "eval_judge_backend", "eval_judge_model", "refusal"):
              "evaluation"}
    for extra in ev.get("eval_extra_judges") or []:
        judges.setdefault(extra, "evaluation (extra)")
    records, notes = [], []
    for path in run_section.get("run_judge_validation") or []:
        try:
            record = json.loads(Path(path).read_text())
            records.append((path, record["judge"]["spec"], record))
        except (OSError, ValueError, KeyError, TypeError) as e:
            notes.append(f"validation record {path} could not be read ({type(e).__name__}); re-create it with "
                         "`srpo judge-eval ... --json > FILE`")
    header = ["judge", "role", "benchmark", "n", "agreement with human labels [95% CI]", "record"]
    rows = []
    for spec, role in judges.items():
        mine = [(p, r) for p, s, r in records if s == spec]
        for path, r in mine:
            metrics = r.get("metrics") or {}
            cells = [f"{k}: {v['value']:.3f}" + (f" [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]" if v.get("ci95")
                                                 else "")
                     for k, v in metrics.items() if isinstance(v, dict) and "value" in v]
            rows.append([spec, role, str(r.get("benchmark", "?")), str(r.get("n", "?")), "; ".join(cells), path])
        if not mine:
            rows.append([spec, role, "", "", "no validation record on file", ""])
            if role == "training feedback" and spec != "rule":
                notes.append(f"the training judge {spec!r} has no validation record on file: how far its scores "
                             "agree with humans is unknown here. Measure it with `srpo judge-eval` on a "
                             "human-labelled set and list the JSON in run.run_judge_validation")
    return header, rows, notes


def report_context(run: Run, plots: dict) -> tuple[dict, dict]:
    """(template context, {path relative to report/: PNG bytes}) for a run and its rendered plots.

    The context is all the report says; a section is a title and a list of blocks, each a paragraph, a table, a
    figure or a group of gallery cards. Every image is given both as a data URI (embedded in the HTML) and as a
    file name next to report.md, so the templates choose how to refer to it but never what to show.
    """
    files = {}

    def image(name: str, png: bytes | None) -> dict | None:
        if png is None:
            return None
        stem, n = name.removesuffix(".png"), 1
        while name in files:  # two item ids can share a slug
            n += 1
            name = f"{stem}_{n}.png"
        files[name] = png
        return {"uri": _data_uri(png), "file": name}

    final = run.final_iteration
    subtitle = f"Final policy: iteration {final}" + (" (SFT)" if final == 0 else "")
    if run.summary and run.summary.get("final_iteration") == final and run.summary.get("final_policy"):
        subtitle += f" ({run.summary['final_policy']})"
    subtitle += f" · {len(run.evaluated)} evaluated iteration(s) · run folder {run.root}"

    g_header, g_rows = gate_rows(run)
    figures = [{"kind": "figure", "key": key, "title": title, "caption": caption,
                "image": image(f"plot_{key}.png", plots[key]) if isinstance(plots[key], bytes) else None,
                "missing": None if isinstance(plots[key], bytes) else plots[key]}
               for key, (title, caption) in PLOTS.items()]

    why, target, improved, regressed = gallery(run)
    gallery_blocks = [{"kind": "paragraph", "text": why + "."}]
    if target is not None:
        for kind, rows, title in (("improved", improved, "Most improved"), ("regressed", regressed, "Most regressed")):
            cards = []
            for change, before, after in rows:
                pictures = image_paths(before.get("image"))  # a multi-image pair shows its first
                picture = pictures[0] if pictures else None
                cards.append({
                    "id": before["id"],
                    "headline": f"{before.get('split', '?')} split, {before.get('label', '?')}, "
                                f"category {before.get('category', '?')}, "
                                f"change {change:+.1f}",
                    "prompt": before.get("query", ""),
                    "image_name": ", ".join(pictures),
                    "image": image(f"gallery/{_slug(before['id'])}.png",
                                   _thumbnail(run.folder.step_dir("data") / str(picture)) if picture else None),
                    "answers": [{"title": "Iteration 0 (SFT)", "scores": _item_scores(before),
                                 "response": before.get("response") or ""},
                                {"title": f"Iteration {target}", "scores": _item_scores(after),
                                 "response": after.get("response") or ""}],
                })
            gallery_blocks.append({"kind": "cards", "id": f"gallery-{kind}", "style": kind, "title": title,
                                   "cards": cards,
                                   "empty": f"No eval item {kind} between iteration 0 and iteration {target}."})

    v_header, v_rows, v_notes = judge_validation(run)
    sections = [
        {"id": "metrics", "title": "Metrics per iteration: test split (reported, never decided on)",
         "blocks": [_table(*metrics_rows(run, "test"))]},
        {"id": "metrics-dev", "title": "Metrics per iteration: dev split (what the gate decided on)",
         "blocks": [_table(*metrics_rows(run, "dev"))]},
        {"id": "judges", "title": "Judges and their validation against human labels",
         "blocks": [_table(v_header, v_rows)] + [{"kind": "paragraph", "text": n[0].upper() + n[1:] + "."}
                                                 for n in v_notes]},
        {"id": "gate", "title": "Gate decisions",
         "blocks": [_table(g_header, g_rows) if g_rows else {"kind": "paragraph", "text": "No gate decision yet."}]},
        {"id": "plots", "title": "Plots", "blocks": figures},
        {"id": "gallery", "title": "Sample gallery", "blocks": gallery_blocks},
    ]
    context = {"name": run.name, "title": f"Run {run.name}", "subtitle": subtitle, "notes": list(run.notes),
               "sections": sections}
    return context, files


def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render(context: dict) -> tuple[str, str]:
    """(report.md, report.html) from one context; the templates differ only in layout."""
    import jinja2  # here, not at module level: `import srpo` stays light

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("srpo", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,  # a key missing from the context is a bug, not an empty cell
    )
    env.filters["md_cell"] = _md_cell
    markdown = env.get_template("report.md.j2").render(context).rstrip() + "\n"  # blocks end in a blank line
    return markdown, env.get_template("report.html.j2").render(context)


def write_report(run_dir: str | Path) -> Path:
    """Write <run>/report/report.html (self-contained) and report.md (+ PNGs next to it); return the HTML path."""
    run = load_run(run_dir)
    out_dir = run.folder.report_dir
    context, files = report_context(run, render_plots(run))
    markdown, page = render(context)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A plot or thumbnail of an earlier report that this one lacks must not linger next to report.md.
    for old in [*(out_dir / f"plot_{key}.png" for key in PLOTS), *out_dir.glob("gallery/*.png")]:
        if old.relative_to(out_dir).as_posix() not in files:
            old.unlink(missing_ok=True)
    for name, png in files.items():
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / name).write_bytes(png)
    html_path = out_dir / "report.html"
    atomic_write_text(html_path, page)
    atomic_write_text(out_dir / "report.md", markdown)
    return html_path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: srpo report RUN_DIR   (writes RUN_DIR/report/report.html and report.md)", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        path = write_report(argv[0])
    except FileNotFoundError as e:
        print(f"srpo report: error: {e}", file=sys.stderr)
        return 2
    print(path)
    print(path.with_name("report.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
