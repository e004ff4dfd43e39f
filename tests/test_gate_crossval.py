"""benchmarks/gate_crossval.py: gate settings chosen on dev by halving it, on hand-made run folders (no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tests_support import load_benchmark


@pytest.fixture(scope="module")
def crossval():
    return load_benchmark("gate_crossval")


def _items(good: dict[str, float], clusters: int = 20, per: int = 3) -> list[dict]:
    """Dev items whose share of good outcomes per label is `good[label]` in every cluster, and test items that would
    break the read-out if it used them (no label, no outcome)."""
    out = []
    for label in ("unsafe", "benign"):
        for c in range(clusters):
            for k in range(per):
                ok = k < round(good[label] * per)
                item = {"suite": "tiny", "id": f"{label}{c}-{k}", "label": label, "split": "dev",
                        "cluster": f"{label}{c}"}
                item.update({"safe": ok} if label == "unsafe" else {"refused": not ok, "task_correct": ok})
                out.append(item)
    out += [{"suite": "tiny", "id": f"t{k}", "split": "test", "cluster": "t"} for k in range(5)]
    return out


def _run(root: Path, name: str, sft: list[dict], candidate: list[dict]) -> None:
    run = root / name
    for it, items in ((0, sft), (1, candidate)):
        (run / f"iter_00{it}" / "eval").mkdir(parents=True)
        (run / f"iter_00{it}" / "eval" / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    (run / "iter_001" / "gate").mkdir()
    (run / "iter_001" / "gate" / "gate.json").write_text(json.dumps(
        {"decision": {"compared_with": 0, "judge_failure_rate": 0.0}}))
    (run / "config.yaml").write_text(yaml.safe_dump({"gate": {"gate_primary": "safe_and_helpful"}}))


def test_a_clear_gain_is_kept_on_the_held_out_half_and_a_clear_loss_never(crossval, tmp_path):
    base = _items({"unsafe": 1 / 3, "benign": 1 / 3})
    _run(tmp_path, "better-s0", base, _items({"unsafe": 2 / 3, "benign": 2 / 3}))
    _run(tmp_path, "worse-s0", base, _items({"unsafe": 0.0, "benign": 1 / 3}))
    cands = crossval.candidates([tmp_path])
    assert sorted(c["variant"] for c in cands) == ["better", "worse"]
    assert all(i["split"] == "dev" for c in cands for i in c["sft"] + c["candidate"])  # test is never read
    rules = [("as run", {}), ("strict", {"gate_alpha": 1e-9}), ("always", None)]
    summary = crossval.summarize(crossval.crossval(cands, rules, repeats=4))
    better, worse = summary["better"], summary["worse"]
    # +1 item of 3 in every cluster: accepted on every half, and worth +33 points on the other half.
    assert better["as run"] == {"accepted": 1.0, "safe_and_helpful": 33.33, "safe": 33.33, "n": 4}
    assert better["strict"]["accepted"] == 0.0 and better["strict"]["safe_and_helpful"] == 0.0
    assert worse["as run"]["accepted"] == 0.0 and worse["always"]["safe"] == -33.33
    assert summary["all"]["always"]["n"] == 8
    table = crossval.render(summary, [name for name, _ in rules])
    assert "| better | 100% +33.33 / +33.33 | 0% +0.00 / +0.00 | 100% +33.33 / +33.33 |" in table


def test_rules_parse_and_bad_ones_say_how(crossval):
    assert crossval.parse_rule("a:gate_alpha=0.2,gate_min_safety_gain=-0.03") == (
        "a", {"gate_alpha": 0.2, "gate_min_safety_gain": -0.03})
    for bad in ("gate_alpha=0.2", "a:alpha=0.2", "a:gate_alpha"):
        with pytest.raises(SystemExit, match="NAME:KEY=VALUE|gate_\\* KEY=VALUE"):
            crossval.parse_rule(bad)


# ------------------------------------------------------------------------- benchmarks/dev_power.py (the same runs)


def test_dev_power_separates_noise_inside_a_cluster_from_clusters_that_change_whole():
    power = load_benchmark("dev_power")
    whole = power.components({"a": [1.0, 1.0, 1.0], "b": [0.0, 0.0, 0.0]})  # one combination fixed, one not
    assert whole == {"clusters": 2, "scenes": 3, "mean": 0.5, "within": 0.0, "between": 0.5}
    scattered = power.components({"a": [1.0, 0.0, 1.0, 0.0], "b": [0.0, 1.0, 0.0, 1.0]})  # half of every one
    assert scattered["between"] == 0.0 and scattered["within"] == pytest.approx(1 / 3)
    # More scenes help only the within part; more clusters help both.
    assert power.z_of(0.1, 0.0, 0.04, 9, 100) == pytest.approx(5.0)
    assert power.z_of(0.1, 0.0, 0.04, 90, 100) == pytest.approx(5.0)
    assert power.z_of(0.1, 0.36, 0.0, 36, 100) == pytest.approx(2 * power.z_of(0.1, 0.36, 0.0, 9, 100))
    assert power.detectable(0.0, 0.04, 9, 100, 0.05) == pytest.approx((1.6449 + 0.8416) * 0.02, abs=1e-4)
    assert power.power(power.z_of(0.0497, 0.0, 0.04, 9, 100), 0.05) == pytest.approx(0.8, abs=0.01)
    with pytest.raises(ValueError, match="at least 2 clusters"):
        power.components({"a": [1.0, 0.0]})


def test_dev_power_reads_the_runs_dev_items_only(tmp_path, capsys):
    power = load_benchmark("dev_power")
    base = _items({"unsafe": 1 / 3, "benign": 1 / 3})
    _run(tmp_path, "better-s0", base, _items({"unsafe": 2 / 3, "benign": 2 / 3}))
    (tmp_path / "running-s0" / "iter_001").mkdir(parents=True)  # an iteration not gated yet: no candidate
    (tmp_path / "running-s0" / "iter_000" / "eval").mkdir(parents=True)
    (tmp_path / "running-s0" / "iter_000" / "eval" / "items.jsonl").write_text(json.dumps(base[0]) + "\n")
    assert power.main([str(tmp_path), "--clusters", "40,160"]) == 0
    out = capsys.readouterr().out
    # One item of 3 better in every cluster of both labels, the same in each: all of the noise is inside clusters.
    assert out.startswith("1 candidates on the dev split: 40 clusters of 3 scenes; mean change +33.33 points")
    assert "of the clusters' true means 0.0000" in out and "100 % of a cluster mean's variance is within" in out
    rows = {line.split(" | ")[0]: line for line in out.splitlines() if line.startswith("| 40 |") or
            line.startswith("| 160 |")}
    z40, z160 = (float(rows[k].split(" | ")[1].split(",")[0]) for k in ("| 40", "| 160"))
    assert z160 == pytest.approx(2 * z40, abs=0.02)  # four times the clusters, twice the z
