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
