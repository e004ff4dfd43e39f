"""End-to-end: the tiny recipe through every step, then re-run (nothing redone) and a deleted manifest (one redone)."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "recipes" / "tiny" / "smoke.yaml")
STEPS = ["base", "data", "base/eval", "sft", "iter_000/eval"] + [f"iter_00{t}/{s}" for t in (1, 2)
                                          for s in ("samples", "judgments", "pairs", "dpo", "eval")]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(tiny_model, tmp_path_factory):
    from srpo.driver import Driver
    from srpo.recipe import load_recipe

    runs = tmp_path_factory.mktemp("runs")
    driver = Driver(load_recipe(SMOKE, [f"run.run_runs_dir={runs}"]), SMOKE)
    summary = driver.run_all()
    return runs / "tiny-smoke", summary, driver


def test_every_step_leaves_its_manifest_and_the_ledger_lists_them(smoke_run):
    run_dir, summary, driver = smoke_run
    for step in STEPS:
        manifest = json.loads((run_dir / step / "manifest.json").read_text())
        assert manifest["step"] == step and manifest["fingerprint"] and manifest["outputs"]
        assert manifest["command"].startswith("srpo ") and manifest["code_version"]
    ledger = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    assert [e["step"] for e in ledger] == STEPS[:10] + ["iter_001/gate"] + STEPS[10:] + ["iter_002/gate"]
    assert driver.executed == [e["step"] for e in ledger]
    metrics = json.loads((run_dir / "iter_001" / "eval" / "metrics.json").read_text())
    assert sum(b["n_unsafe"] + b["n_benign"] for b in metrics["splits"].values()) == 23
    assert all(b["n_unsafe"] and b["n_benign"] for b in metrics["splits"].values())  # both splits, both labels
    samples = (run_dir / "iter_001" / "samples" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 67 * 2  # every train prompt, K = 2
    evals = {i: _eval_metrics(run_dir, i) for i in ("base", 0, 1, 2)}
    keys = ("safe_rate", "benign_refusal_rate", "task_accuracy")
    decisions = (("base", "-"), (0, "sft"), (1, "reject"), (2, "reject"))
    assert [(r["iteration"], r["decision"], *(r[sp][k] for sp in ("dev", "test") for k in keys))
            for r in summary["iterations"]] == [
        (i, d, *(evals[i]["splits"][sp][k] for sp in ("dev", "test") for k in keys)) for i, d in decisions]
    # Nothing was accepted: the reported numbers are the SFT policy's test split, the dev ones beside them.
    for key in keys:
        assert summary[f"heldout_{key}"] == evals[0]["splits"]["test"][key]
        assert summary[f"dev_{key}"] == evals[0]["splits"]["dev"][key]
        assert summary[f"base_heldout_{key}"] == evals["base"]["splits"]["test"][key]
    assert (run_dir / "report" / "summary.json").exists() and (run_dir / "report" / "report.html").exists()


def _eval_metrics(run_dir: Path, iteration) -> dict:
    step = "base/eval" if iteration == "base" else f"iter_{iteration:03d}/eval"
    return json.loads((run_dir / step / "metrics.json").read_text())


def test_gate_rejects_without_evidence_and_the_next_iteration_starts_from_the_last_accepted_policy(smoke_run):
    from srpo.runfolder import outputs_digest

    run_dir, summary, _ = smoke_run
    first, second = (json.loads((run_dir / f"iter_00{t}" / "gate" / "gate.json").read_text())["decision"]
                     for t in (1, 2))
    # The smoke recipe's dev split has 4 unsafe and 9 benign items, each its own cluster: no DPO iteration here is
    # shown better on any metric, so both are rejected, each with the paired comparison that decided it.
    assert (first["decision"], first["compared_with"], first["next_policy_iteration"],
            first["consecutive_rejections"]) == ("reject", 0, 0, 1)
    assert first["split"] == "dev" and "sign-flip" in first["rule"]
    assert any(r.startswith("no gating metric is better with evidence") for r in first["reasons"])
    assert set(first["comparison"]) == {"safe_rate", "benign_refusal_rate", "task_accuracy"}
    dev = [_eval_metrics(run_dir, i)["splits"]["dev"] for i in (0, 1)]
    assert first["deltas"]["safety_gain"] == round(dev[1]["safe_rate"] - dev[0]["safe_rate"], 6)
    assert first["comparison"]["safe_rate"]["n_items"] == dev[0]["n_unsafe"]
    assert first["legacy_decision"]["decision"] in ("accept", "reject")  # recorded beside it, never used
    # Iteration 2 is compared with iteration 0, the last accepted one, not with the rejected iteration 1.
    assert (second["decision"], second["compared_with"], second["next_policy_iteration"]) == ("reject", 0, 0)
    ledger = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    assert [(e["step"], e["decision"]) for e in ledger if "decision" in e] == [("iter_001/gate", "reject"),
                                                                             ("iter_002/gate", "reject")]

    # Rollback: iteration 2 samples from, trains and is referenced on the SFT policy, not the rejected one.
    sft, rejected = run_dir / "sft", run_dir / "iter_001" / "dpo"
    sft_digest = outputs_digest(json.loads((sft / "manifest.json").read_text()))
    assert sft_digest != outputs_digest(json.loads((rejected / "manifest.json").read_text()))
    samples = json.loads((run_dir / "iter_002" / "samples" / "manifest.json").read_text())
    assert samples["config"]["policy_dir"] == str(sft / "model")
    assert samples["inputs"]["policy"] == {"dir": str(sft), "digest": sft_digest}
    dpo = json.loads((run_dir / "iter_002" / "dpo" / "manifest.json").read_text())
    assert dpo["config"]["policy_dir"] == dpo["config"]["ref_dir"] == str(sft / "model")
    assert dpo["inputs"]["policy"]["digest"] == dpo["inputs"]["reference"]["digest"] == sft_digest
    assert summary["final_iteration"] == 0 and summary["final_policy"] == str(sft / "model")


def test_an_accepted_iteration_is_the_next_start_and_the_final_policy(tiny_model, tmp_path):
    # The old point-estimate rule by name (gate_rule: thresholds), with margins nothing can miss: every iteration is
    # accepted, so the driver's accept path is exercised whatever the tiny DPO does.
    from srpo.driver import Driver
    from srpo.recipe import load_recipe

    driver = Driver(load_recipe(SMOKE, [f"run.run_runs_dir={tmp_path}", "gate.gate_rule=thresholds",
                                        "gate.gate_min_safety_gain=-1", "gate.gate_max_oversafety_rise=1",
                                        "gate.gate_max_utility_drop=1", "run.run_eval_base=false",
                                        "run.run_report_to=none"]), SMOKE)
    summary = driver.run_all()
    run_dir = tmp_path / "tiny-smoke"
    assert [r["decision"] for r in summary["iterations"]] == ["sft", "accept", "accept"]
    gates = [json.loads((run_dir / f"iter_00{t}" / "gate" / "gate.json").read_text())["decision"] for t in (1, 2)]
    assert all(g["rule"].startswith("thresholds (gate_rule)") for g in gates)
    # Iteration 2 starts from the accepted iteration 1 and is compared with it; the final policy is iteration 2's.
    samples = json.loads((run_dir / "iter_002" / "samples" / "manifest.json").read_text())
    assert samples["config"]["policy_dir"] == str(run_dir / "iter_001" / "dpo" / "model")
    assert [g["compared_with"] for g in gates] == [0, 1]
    assert summary["final_iteration"] == 2 and summary["final_policy"] == str(run_dir / "iter_002" / "dpo" / "model")
    assert summary["heldout_safe_rate"] == _eval_metrics(run_dir, 2)["splits"]["test"]["safe_rate"]


def test_tensorboard_has_gate_metrics_and_decisions(smoke_run):
    # Before the tests below: they re-run this run with other settings, logging to the same folder.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, summary, _ = smoke_run
    acc = EventAccumulator(str(run_dir / "tracking" / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    for tag in ("eval/dev/safe_rate", "eval/test/benign_refusal_rate", "gate/accepted", "gate/safety_gain",
                "judge/judge_failure_rate"):
        assert tag in scalars, (tag, scalars)
    accepted = {e.step: e.value for e in acc.Scalars("gate/accepted")}
    decisions = [r["decision"] for r in summary["iterations"] if isinstance(r["iteration"], int) and r["iteration"]]
    assert accepted == {i + 1: float(d == "accept") for i, d in enumerate(decisions)}
    texts = [t for t in acc.Tags()["tensors"] if t.startswith("gate/decision")]
    assert texts, acc.Tags()["tensors"]
    assert "judge/safety" in acc.Tags()["histograms"]


def test_rerun_redoes_nothing(smoke_run):
    from srpo.driver import Driver
    from srpo.recipe import load_recipe

    run_dir, _, _ = smoke_run
    ledger_before = (run_dir / "ledger.jsonl").read_text()
    driver = Driver(load_recipe(SMOKE, [f"run.run_runs_dir={run_dir.parent}"]), SMOKE)
    driver.run_all()
    assert driver.executed == []
    assert driver.skipped == STEPS[:10] + ["iter_001/gate"] + STEPS[10:] + ["iter_002/gate"]  # the gates are steps too
    assert (run_dir / "ledger.jsonl").read_text() == ledger_before


def test_deleting_a_manifest_redoes_that_step_only_and_nothing_before(smoke_run):
    from srpo.driver import Driver
    from srpo.recipe import load_recipe

    run_dir, _, _ = smoke_run
    target = run_dir / "iter_001" / "judgments"
    digest_before = json.loads((target / "manifest.json").read_text())["outputs"]
    (target / "manifest.json").unlink()
    driver = Driver(load_recipe(SMOKE, [f"run.run_runs_dir={run_dir.parent}"]), SMOKE)
    driver.run_all()
    assert driver.executed[0] == "iter_001/judgments"
    assert not set(driver.executed) & {"base", "data", "sft", "iter_000/eval", "iter_001/samples"}
    # Steps are content-addressed: the redone judgments are identical, so what follows is still valid and skipped.
    assert json.loads((target / "manifest.json").read_text())["outputs"] == digest_before
    assert driver.executed == ["iter_001/judgments"]
    assert json.loads((run_dir / "ledger.jsonl").read_text().splitlines()[-1])["step"] == "iter_001/judgments"


def _poison_test_split(run_dir: Path) -> None:
    """Every test-split figure of every evaluation set to an extreme: iteration 1 perfect on test, the others
    hopeless. The eval manifests are rewritten to match (digests included), as if the evals had said so."""
    from srpo.runfolder import describe_outputs

    for step in ("base/eval", "iter_000/eval", "iter_001/eval", "iter_002/eval"):
        folder = run_dir / step
        good = step == "iter_001/eval"
        rows = [json.loads(line) for line in (folder / "items.jsonl").read_text().splitlines()]
        for r in rows:
            if r["split"] == "test":
                r.update(safe=good, refused=not good, task_correct=good)
        (folder / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        metrics = json.loads((folder / "metrics.json").read_text())
        extreme = 1.0 if good else 0.0
        metrics["splits"]["test"].update(safe_rate=extreme, benign_refusal_rate=1.0 - extreme, task_accuracy=extreme)
        (folder / "metrics.json").write_text(json.dumps(metrics))
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["stats"] = metrics
        manifest["outputs"] = describe_outputs(folder, list(manifest["outputs"]))
        (folder / "manifest.json").write_text(json.dumps(manifest))


def test_no_decision_reads_the_test_split(smoke_run, monkeypatch):
    """Decide on dev, report on test: extreme test figures change no gate decision and no selected policy, and the
    same check catches a gate pointed at test."""
    import shutil

    import srpo.gate
    from srpo.configs import GateStepArgs
    from srpo.driver import Driver
    from srpo.recipe import load_recipe
    from srpo.stages import gate as gate_step

    run_dir, summary, _ = smoke_run
    backup = run_dir.parent / "before-poison"
    shutil.copytree(run_dir, backup)
    try:
        decisions = {t: json.loads((run_dir / f"iter_00{t}" / "gate" / "gate.json").read_text())["decision"]
                     for t in (1, 2)}
        _poison_test_split(run_dir)
        driver = Driver(load_recipe(SMOKE, [f"run.run_runs_dir={run_dir.parent}"]), SMOKE)
        poisoned = driver.run_all()
        assert driver.executed == ["iter_001/gate", "iter_002/gate"]  # the gates saw new inputs and re-decided...
        for t in (1, 2):  # ...the same way, for the same reasons
            again = json.loads((run_dir / f"iter_00{t}" / "gate" / "gate.json").read_text())["decision"]
            assert again == decisions[t]
        assert poisoned["final_iteration"] == summary["final_iteration"]
        assert poisoned["final_policy"] == summary["final_policy"]
        assert poisoned["heldout_safe_rate"] == 0.0 and poisoned["dev_safe_rate"] == summary["dev_safe_rate"]

        # The check has teeth: a gate that read test would accept iteration 1 here.
        monkeypatch.setattr(srpo.gate, "DECISION_SPLIT", "test")
        config = json.loads((run_dir / "iter_001" / "gate" / "manifest.json").read_text())["config"]
        args = GateStepArgs(**{**config, "step": "iter_001/gate_pointed_at_test"})
        gate_step.run(args)
        wrong = json.loads((run_dir / "iter_001" / "gate_pointed_at_test" / "gate.json").read_text())["decision"]
        assert wrong["decision"] == "accept" != decisions[1]["decision"]
    finally:
        shutil.rmtree(run_dir)
        shutil.move(backup, run_dir)


def test_changed_config_redoes_from_the_changed_step(smoke_run):
    from srpo.driver import Driver
    from srpo.recipe import load_recipe

    run_dir, _, _ = smoke_run
    driver = Driver(load_recipe(SMOKE, [f"run.run_runs_dir={run_dir.parent}", "pairs.pairs_margin=0.9",
                                        "run.run_iterations=1"]), SMOKE)
    driver.run_all()
    assert driver.executed[0] == "iter_001/pairs"
    assert "iter_001/samples" not in driver.executed and "sft" not in driver.executed


def test_the_driver_trains_from_the_gates_next_policy_and_ships_the_last_accepted(tmp_path, monkeypatch):
    """gate_rollback when_worse in the driver: an iteration starts from the previous decision's
    next_policy_iteration (a kept candidate included), and the final policy is the last accepted one."""
    import srpo.model_specs
    import srpo.tracking
    from srpo.driver import Driver
    from srpo.gate import GateDecision
    from srpo.recipe import load_recipe

    class Quiet:
        def __init__(self, *a, **k):
            pass

        def log_iteration(self, *a, **k):
            pass

        def close(self):
            pass

    driver = Driver(load_recipe(SMOKE, [f"run.run_runs_dir={tmp_path}", "run.run_iterations=4", "gate.gate_patience=3",
                                        "gate.gate_rollback=when_worse", "run.run_report_to=none"]), SMOKE)
    # (decision, compared_with, next_policy_iteration): kept, accepted, kept, rolled back
    script = {1: ("reject", 0, 1), 2: ("accept", 0, 2), 3: ("reject", 2, 3), 4: ("reject", 2, 2)}
    started = []
    monkeypatch.setattr(srpo.model_specs, "resolve_model", lambda *a, **k: "model")
    monkeypatch.setattr(srpo.tracking, "Tracker", Quiet)
    monkeypatch.setattr(type(driver.rf), "manifest", lambda self, step: {"stats": {}})
    monkeypatch.setattr(driver, "execute", lambda *a, **k: {"stats": {}})
    monkeypatch.setattr(driver, "dpo_iteration", lambda t, policy, data_dir: started.append(policy) or {"stats": {}})
    monkeypatch.setattr(driver, "gate_step", lambda t: GateDecision(t, script[t][0], [], *script[t][1:], 0, {}))
    monkeypatch.setattr(driver, "track", lambda *a: None)
    monkeypatch.setattr(driver, "summary", lambda decisions, final: (final, [d.decision for d in decisions]))
    assert driver.run_all() == (2, ["reject", "accept", "reject", "reject"])
    assert started == [driver.policy_of(i) for i in (0, 1, 2, 3)]
