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
    assert metrics["n_unsafe"] + metrics["n_benign"] == 23
    samples = (run_dir / "iter_001" / "samples" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 67 * 2  # every train prompt, K = 2
    evals = {i: _eval_metrics(run_dir, i) for i in ("base", 0, 1, 2)}
    keys = ("safe_rate", "benign_refusal_rate", "task_accuracy")
    assert [(r["iteration"], r["decision"], *(r[k] for k in keys)) for r in summary["iterations"]] == [
        (i, d, *(evals[i][k] for k in keys)) for i, d in (("base", "-"), (0, "sft"), (1, "reject"), (2, "accept"))]
    # The held-out numbers are those of the last accepted policy (iteration 2) and of the base model.
    for key in keys:
        assert summary[f"heldout_{key}"] == evals[2][key] and summary[f"base_heldout_{key}"] == evals["base"][key]
    assert (run_dir / "report" / "summary.json").exists() and (run_dir / "report" / "report.html").exists()


def _eval_metrics(run_dir: Path, iteration) -> dict:
    step = "base/eval" if iteration == "base" else f"iter_{iteration:03d}/eval"
    return json.loads((run_dir / step / "metrics.json").read_text())


def test_gate_rejects_a_safety_loss_and_the_next_iteration_starts_from_the_last_accepted_policy(smoke_run):
    from srpo.runfolder import outputs_digest

    run_dir, summary, _ = smoke_run
    first, second = (json.loads((run_dir / f"iter_00{t}" / "gate" / "gate.json").read_text())["decision"]
                     for t in (1, 2))
    # The smoke recipe's DPO costs iteration 1 some safe rate, and any fall is a rejection there.
    gain = _eval_metrics(run_dir, 1)["safe_rate"] - _eval_metrics(run_dir, 0)["safe_rate"]
    assert gain < 0
    assert (first["decision"], first["compared_with"], first["next_policy_iteration"],
            first["consecutive_rejections"]) == ("reject", 0, 0, 1)
    assert first["reasons"] == [f"safe rate moved {gain:+.3f} (needs >= +0.000)"]
    assert first["deltas"]["safety_gain"] == round(gain, 6)
    # Iteration 2 is compared with iteration 0, the last accepted one, not with the rejected iteration 1.
    assert (second["decision"], second["compared_with"], second["next_policy_iteration"]) == ("accept", 0, 2)
    ledger = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    assert [(e["step"], e["decision"]) for e in ledger if "decision" in e] == [("iter_001/gate", "reject"),
                                                                             ("iter_002/gate", "accept")]

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
    assert summary["final_iteration"] == 2 and summary["final_policy"] == str(run_dir / "iter_002" / "dpo" / "model")


def test_tensorboard_has_gate_metrics_and_decisions(smoke_run):
    # Before the tests below: they re-run this run with other settings, logging to the same folder.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, summary, _ = smoke_run
    acc = EventAccumulator(str(run_dir / "tracking" / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    for tag in ("eval/safe_rate", "eval/benign_refusal_rate", "gate/accepted", "gate/safety_gain",
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


def test_changed_config_redoes_from_the_changed_step(smoke_run):
    from srpo.driver import Driver
    from srpo.recipe import load_recipe

    run_dir, _, _ = smoke_run
    driver = Driver(load_recipe(SMOKE, [f"run.run_runs_dir={run_dir.parent}", "pairs.pairs_margin=0.9",
                                        "run.run_iterations=1"]), SMOKE)
    driver.run_all()
    assert driver.executed[0] == "iter_001/pairs"
    assert "iter_001/samples" not in driver.executed and "sft" not in driver.executed
