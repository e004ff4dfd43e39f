"""`srpo compare` on summaries written by hand (no pipeline run: fast, no torch). The means and t intervals below
are worked out by hand from the numbers in each test."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from srpo.cli import main as cli_main
from srpo.compare import SummaryError, compare, render, t_quantile

ROOT = Path(__file__).resolve().parents[1]
RECIPE = {"run": {"run_name": "demo", "run_runs_dir": "runs", "run_seed": 0, "run_iterations": 2},
          "judge": {"judge_backend": "self"}, "dpo": {"beta": 0.1, "max_steps": 40}}


def _figures(safe, refusal, accuracy, **ci) -> dict:
    return {"safe_rate": safe, "benign_refusal_rate": refusal, "task_accuracy": accuracy, **ci}


def _summary(seed, base, sft, final, final_iteration=1, decisions=("accept", "stop"), dev=None, **extra) -> dict:
    """base / sft / final: (safe, benign refusal, task accuracy) on the test split; dev likewise for the final."""
    dev = dev or final
    summary = {"run": f"demo-s{seed}", "seed": seed, "final_iteration": final_iteration,
               "feedback": {"judge_backend": "self", "oracle": False}, "wall_time_s": 300.0}
    for prefix, values in (("heldout_", final), ("sft_heldout_", sft), ("base_heldout_", base), ("dev_", dev)):
        if values is not None:
            summary.update({prefix + k: v for k, v in _figures(*values).items()})
    rows = [] if base is None else [{"iteration": "base", "decision": "-", "dev": _figures(*base),
                                     "test": _figures(*base)}]
    rows.append({"iteration": 0, "decision": "sft", "dev": _figures(*sft), "test": _figures(*sft)})
    for i, d in enumerate(decisions, start=1):
        rows.append({"iteration": i, "decision": d, "dev": _figures(*(dev if i == final_iteration else sft)),
                     "test": _figures(*(final if i == final_iteration else sft))})
    summary["iterations"] = rows
    summary.update(extra)
    return summary


def _run(tmp_path: Path, summary: dict, recipe: dict | None = RECIPE, runs_dir: str = "runs") -> Path:
    """A run folder holding config.yaml (the recipe with this run's seed, name and runs dir) and its summary."""
    folder = tmp_path / runs_dir / summary["run"]
    (folder / "report").mkdir(parents=True)
    if recipe is not None:
        config = json.loads(json.dumps(recipe))
        config["run"].update(run_seed=summary.get("seed"), run_name=summary["run"], run_runs_dir=runs_dir)
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "report" / "summary.json").write_text(json.dumps(summary, indent=1))
    return folder


@pytest.fixture
def three_seeds(tmp_path) -> list[Path]:
    # safe rate: base .30/.40/.50, SFT .80/.82/.84, final .90/.94/.98; benign refusal: SFT .10 each, final
    # .08/.12/.10 (one better, one worse, one same); task accuracy: .70 everywhere except seed 2's final, .64.
    return [_run(tmp_path, _summary(0, (0.30, 0.20, 0.70), (0.80, 0.10, 0.70), (0.90, 0.08, 0.70))),
            _run(tmp_path, _summary(1, (0.40, 0.20, 0.70), (0.82, 0.10, 0.70), (0.94, 0.12, 0.70)), runs_dir="other"),
            _run(tmp_path, _summary(2, (0.50, 0.20, 0.70), (0.84, 0.10, 0.70), (0.98, 0.10, 0.64)))]


@pytest.mark.parametrize("df,expected", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622),
                                         (29, 2.0452), (1000, 1.9623)])
def test_t_quantile_matches_the_printed_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-5)


def test_means_and_t_intervals_over_three_seeds(three_seeds):
    agg = compare(three_seeds)["aggregate"]
    t2 = 4.302653
    final = agg["final"]["safe_rate"]  # mean .94, sd .04
    assert (final["n"], final["mean"], final["sd"]) == (3, pytest.approx(0.94), pytest.approx(0.04))
    assert final["ci95"] == pytest.approx([0.94 - t2 * 0.04 / math.sqrt(3), 0.94 + t2 * 0.04 / math.sqrt(3)])
    gain = agg["final-sft"]["safe_rate"]  # .10/.12/.14: mean .12, sd .02
    assert gain["ci95"] == pytest.approx([0.12 - t2 * 0.02 / math.sqrt(3), 0.12 + t2 * 0.02 / math.sqrt(3)])
    assert (gain["better"], gain["worse"], gain["unchanged"]) == (3, 0, 0)
    from_base = agg["final-base"]["safe_rate"]  # .60/.54/.48: mean .54, sd .06
    assert from_base["mean"] == pytest.approx(0.54) and from_base["sd"] == pytest.approx(0.06)
    assert agg["sft-base"]["safe_rate"]["mean"] == pytest.approx(0.42)  # .50/.42/.34
    refusal = agg["final-sft"]["benign_refusal_rate"]  # -.02 (better: lower), +.02 (worse), 0
    assert (refusal["better"], refusal["worse"], refusal["unchanged"]) == (1, 1, 1)
    assert agg["final-base"]["benign_refusal_rate"]["better"] == 3  # .20 -> .08/.12/.10: lower refusal is better
    accuracy = agg["final-sft"]["task_accuracy"]  # 0, 0, -.06
    assert accuracy["mean"] == pytest.approx(-0.02) and (accuracy["better"], accuracy["worse"]) == (0, 1)
    assert agg["sft"]["benign_refusal_rate"]["ci95"] == pytest.approx([0.10, 0.10])  # no spread, no width


def test_markdown_tables(three_seeds):
    md = render(compare(three_seeds), markdown=True)
    assert "| 0 | demo-s0 | 1 | 1 accept, 2 stop | 30.0 → 80.0 → 90.0 | 20.0 → 10.0 → 8.0 | 70.0 → 70.0 → 70.0 |" in md
    # 0.94 ± 4.3027 * 0.04 / sqrt(3) = 0.0994; 0.12 ± 4.3027 * 0.02 / sqrt(3) = 0.0497
    assert "| final | 94.0 ± 9.9 | 10.0 ± 5.0 | 68.0 ± 8.6 |" in md
    assert "| final − SFT (pp) | +12.0 ± 5.0 (3 better, 0 worse) | +0.0 ± 5.0 (1 better, 1 worse, 1 same) |" in md
    assert "t(0.975, n − 1) = 4.303 for n = 3" in md
    assert md.count("|---|---|---|---|") == 2 and "> **Note:**" not in md


def test_two_seeds_use_t_with_one_degree_of_freedom(tmp_path):
    runs = [_run(tmp_path, _summary(0, None, (0.8, 0.1, 0.7), (0.90, 0.1, 0.7))),
            _run(tmp_path, _summary(1, None, (0.8, 0.1, 0.7), (0.94, 0.1, 0.7)))]
    record = compare(runs)
    # mean .92, sd .04 / sqrt(2), so the half-width is 12.7062 * .02 = .2541
    assert record["aggregate"]["final"]["safe_rate"]["ci95"] == pytest.approx([0.92 - 0.254124, 0.92 + 0.254124],
                                                                             abs=1e-6)
    assert record["aggregate"]["base"]["safe_rate"]["n"] == 0
    assert "| base | n/a | n/a | n/a |" in render(record, markdown=True)
    assert any("no base-model figures" in n for n in record["notes"])


def test_per_run_intervals_and_the_dev_split(tmp_path):
    summary = _summary(0, (0.3, 0.2, 0.7), (0.8, 0.1, 0.7), (0.9, 0.1, 0.7), dev=(0.5, 0.3, 0.6),
                       heldout_safe_rate_ci95=[0.85, 0.95], heldout_task_accuracy_ci95=None)
    summary["iterations"][1]["dev"]["safe_rate_ci95"] = [0.75, 0.85]
    run = _run(tmp_path, summary)
    assert "30.0 → 80.0 → 90.0 [85.0, 95.0]" in render(compare([run]), markdown=True)
    dev = render(compare([run], split="dev"), markdown=True)
    assert "30.0 → 80.0 [75.0, 85.0] → 50.0 |" in dev and "(dev split, %)" in dev


def test_one_seed_has_no_interval(tmp_path):
    record = compare([_run(tmp_path, _summary(3, (0.3, 0.2, 0.7), (0.8, 0.1, 0.7), (0.9, 0.1, 0.7)))])
    assert record["aggregate"]["final"]["safe_rate"] == {"n": 1, "mean": 0.9, "sd": None, "t": None, "ci95": None}
    md = render(record, markdown=True)
    assert "| final | 90.0 (n=1, no interval) |" in md and "n=1, no interval: one seed" in md
    assert "Mean over 1 seed (test split, %)" in md


def test_recipes_that_differ_beyond_the_seed_are_refused(tmp_path):
    other = json.loads(json.dumps(RECIPE))
    other["dpo"]["beta"] = 0.2
    runs = [_run(tmp_path, _summary(0, None, (0.8, 0.1, 0.7), (0.9, 0.1, 0.7))),
            _run(tmp_path, _summary(1, None, (0.8, 0.1, 0.7), (0.9, 0.1, 0.7)), recipe=other)]
    with pytest.raises(ValueError, match=r"dpo\.beta: seed 0 \(demo-s0\) 0\.1, seed 1 \(demo-s1\) 0\.2") as e:
        compare(runs)
    assert "run_seed" not in str(e.value) and "--allow-mixed" in str(e.value)
    notes = compare(runs, allow_mixed=True)["notes"]
    assert any(n.startswith("MIXED recipes (--allow-mixed): dpo.beta") for n in notes)


def test_a_repeated_seed_is_refused(tmp_path):
    first = _run(tmp_path, _summary(0, None, (0.8, 0.1, 0.7), (0.9, 0.1, 0.7)))
    again = _run(tmp_path, {**_summary(0, None, (0.8, 0.1, 0.7), (0.9, 0.1, 0.7)), "run": "demo-again"})
    with pytest.raises(ValueError, match="seed 0 is in more than one run"):
        compare([first, again])
    with pytest.raises(ValueError, match="the same run was given twice"):
        compare([first, first / "report" / "summary.json"])


@pytest.mark.parametrize("change,message", [
    (lambda s: s.pop("heldout_task_accuracy"), r"no key 'heldout_task_accuracy' \(nor iterations\[1\]\.test"),
    (lambda s: s.pop("seed"), "no key 'seed'"),
    (lambda s: s.update(seed="0"), "key 'seed' is '0', not an int"),
    (lambda s: s.pop("iterations"), "no key 'iterations'"),
    (lambda s: s.update(heldout_safe_rate=96.0), "key 'heldout_safe_rate' is 96.0, not a fraction"),
    (lambda s: s.update(heldout_safe_rate_ci95=[0.9]), "key 'heldout_safe_rate_ci95' is .*not an interval"),
])
def test_a_summary_missing_what_is_needed_names_the_file_and_key(tmp_path, change, message):
    summary = _summary(0, (0.3, 0.2, 0.7), (0.8, 0.1, 0.7), (0.9, 0.1, 0.7))
    change(summary)
    for row in summary.get("iterations", []):
        row["test"].pop("task_accuracy")  # so the fallback to the iteration rows cannot hide a missing key
    run = _run(tmp_path, summary)
    with pytest.raises(SummaryError, match=message) as e:
        compare([run])
    assert str(run / "report" / "summary.json") in str(e.value)


def test_null_figures_are_skipped_not_averaged(tmp_path):
    runs = [_run(tmp_path, _summary(0, None, (0.8, 0.1, None), (0.9, 0.1, None))),
            _run(tmp_path, _summary(1, None, (0.8, 0.1, 0.6), (0.9, 0.1, 0.7)))]
    agg = compare(runs)["aggregate"]
    assert agg["final"]["task_accuracy"]["n"] == 1 and agg["final"]["task_accuracy"]["mean"] == pytest.approx(0.7)
    assert agg["final"]["safe_rate"]["n"] == 2


def test_oracle_feedback_and_unchecked_recipes_are_flagged(tmp_path):
    oracle = _summary(0, None, (0.8, 0.1, 0.7), (0.9, 0.1, 0.7), feedback={"judge_backend": "rule", "oracle": True})
    loose = tmp_path / "loose.json"  # a summary outside any run folder: no config.yaml to check
    loose.write_text(json.dumps(_summary(1, None, (0.8, 0.1, 0.7), (0.9, 0.1, 0.7))))
    record = compare([_run(tmp_path, oracle), loose])
    text = render(record, markdown=False)
    assert "demo-s0 (ORACLE)" in text and "note: ORACLE feedback in seed 0 (demo-s0)" in text
    assert "note: recipe not checked for seed 1 (demo-s1): no config.yaml beside its summary" in text
    assert record["runs"][0]["oracle"] is True and record["runs"][1]["oracle"] is False


def test_cli_end_to_end(three_seeds, tmp_path, capsys):
    assert cli_main(["compare", *map(str, three_seeds), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert [r["seed"] for r in record["runs"]] == [0, 1, 2] and record["split"] == "test"
    assert record["aggregate"]["final"]["safe_rate"]["mean"] == pytest.approx(0.94)
    assert cli_main(["compare", str(tmp_path / "nowhere")]) == 2
    assert "no such run folder or summary file" in capsys.readouterr().err
    # The installed command, in a fresh process, as a user types it.
    done = subprocess.run([sys.executable, "-m", "srpo.cli", "compare", *map(str, three_seeds), "--markdown"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("### Per seed (test split, %)") and "| SFT − base (pp) |" in done.stdout
    mixed = [*three_seeds, _run(tmp_path, _summary(5, None, (0.8, 0.1, 0.7), (0.9, 0.1, 0.7)),
                                recipe={**RECIPE, "judge": {"judge_backend": "rule"}})]
    done = subprocess.run([sys.executable, "-m", "srpo.cli", "compare", *map(str, mixed)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "srpo compare: error: these runs are not seeds of one recipe" in done.stderr
    assert "judge.judge_backend" in done.stderr
