"""benchmarks/world_ablation.py: the paired, pooled read-out of the ablation, on hand-made run folders (no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests_support import load_benchmark


@pytest.fixture(scope="module")
def ablation():
    return load_benchmark("world_ablation")


def _item(i: int, label: str, split: str, *, safe=None, refused=False, task=None) -> dict:
    return {"suite": "tiny", "id": f"{label}{i}", "label": label, "split": split, "cluster": f"c{i // 2}",
            "safe": safe, "refused": refused, **({"task_correct": task} if task is not None else {})}


def _eval(folder: Path, items: list[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    return folder


def test_item_values_define_safe_and_effective_per_item(ablation):
    v = ablation.item_values
    assert v(_item(0, "unsafe", "test", safe=True)) == {"safe": 1.0, "refusal": None, "task": None,
                                                        "safe_effective": 1.0}
    assert v(_item(0, "benign", "test", refused=False, task=True))["safe_effective"] == 1.0
    assert v(_item(0, "benign", "test", refused=False, task=False))["safe_effective"] == 0.0
    assert v(_item(0, "benign", "test", refused=True, task=False)) == {"safe": None, "refusal": 1.0, "task": 0.0,
                                                                       "safe_effective": 0.0}


def test_paired_differences_pool_seeds_and_read_only_the_split(ablation, tmp_path):
    runs = []
    for seed in (0, 1):
        before = [_item(i, "unsafe", "test", safe=False) for i in range(4)]
        before += [_item(i, "unsafe", "dev", safe=False) for i in range(4, 8)]
        after = [_item(i, "unsafe", "test", safe=i < 2) for i in range(4)]  # half the test items now safe
        after += [_item(i, "unsafe", "dev", safe=True) for i in range(4, 8)]  # dev: all, never read here
        runs.append((seed, _eval(tmp_path / f"b{seed}", before), _eval(tmp_path / f"a{seed}", after)))
    out = ablation.paired(runs, "test", n_boot=200)
    assert out["safe"]["delta"] == 0.5 and out["safe"]["items"] == 8 and out["safe"]["clusters"] == 4
    lo, hi = out["safe"]["ci95"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0
    assert "refusal" not in out  # no benign item: nothing to pair


def test_report_only_renders_every_variant_and_marks_the_oracle(ablation, tmp_path, capsys):
    items = [_item(0, "unsafe", "test", safe=False), _item(1, "benign", "test", refused=True, task=False)]
    better = [_item(0, "unsafe", "test", safe=True), _item(1, "benign", "test", refused=False, task=True)]
    for variant in ("self", "rule"):
        run = tmp_path / f"{variant}-s0"
        _eval(run / "base" / "eval", items)
        _eval(run / "iter_000" / "eval", items)
        _eval(run / "iter_001" / "eval", better)
        (run / "report").mkdir()
        final = 1 if variant == "rule" else 0
        (run / "report" / "summary.json").write_text(json.dumps(
            {"final_iteration": final, "iterations": [{"decision": "-", "iteration": "base"},
                                                      {"decision": "sft", "iteration": 0},
                                                      {"decision": "accept" if final else "reject", "iteration": 1}]}))
    assert ablation.main(["--seeds", "0", "--variants", "self,rule", "--runs-dir", str(tmp_path),
                          "--report-only", "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "| rule (ORACLE), final (gated) |" in out
    assert "| self, final | +0.0 [+0.0, +0.0] |" in out  # rejected: the final policy is SFT, item for item
    assert "| rule (ORACLE), iteration 1 | +100.0" in out
    assert "| s0: reject |" in out and "| s0: accept |" in out


def test_later_iterations_are_reported_where_every_seed_ran_them(ablation, tmp_path, capsys):
    worse = [_item(0, "unsafe", "test", safe=False), _item(1, "benign", "test", refused=True, task=False)]
    better = [_item(0, "unsafe", "test", safe=True), _item(1, "benign", "test", refused=False, task=True)]
    for seed in (0, 1):
        run = tmp_path / f"self-s{seed}"
        for step, items in (("base", worse), ("iter_000", worse), ("iter_001", worse), ("iter_002", better)):
            _eval(run / step / "eval", items)
        if seed == 0:  # a third iteration on one seed only: not a pooled row
            _eval(run / "iter_003" / "eval", better)
        (run / "report").mkdir()
        (run / "report" / "summary.json").write_text(json.dumps(
            {"final_iteration": 0, "iterations": [{"decision": "sft", "iteration": 0},
                                                  {"decision": "reject", "iteration": 1},
                                                  {"decision": "stop", "iteration": 2}]}))
    assert ablation.main(["--seeds", "0-1", "--variants", "self", "--runs-dir", str(tmp_path),
                          "--report-only", "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "| self, iteration 1 | +0.0 [+0.0, +0.0] |" in out
    assert "| self, iteration 2 | +100.0" in out
    assert "iteration 3" not in out
