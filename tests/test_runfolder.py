import json
import subprocess
import sys

import pytest

from srpo.configs import PairArgs
from srpo.runfolder import (
    RunFolder,
    atomic_write_json,
    describe_outputs,
    read_complete_jsonl,
    write_jsonl,
    write_manifest,
)
from srpo.steps import StepInputError, StepRun, config_diff


def test_atomic_write_leaves_no_temp_and_replaces(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    atomic_write_json(tmp_path / "a.json", {"x": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_torn_jsonl_tail_is_dropped_and_truncated(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b"')
    assert read_complete_jsonl(path) == [{"a": 1}, {"a": 2}]
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n'


def test_manifest_describes_outputs(tmp_path):
    write_jsonl(tmp_path / "rows.jsonl", [{"i": i} for i in range(3)])
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.bin").write_bytes(b"123")
    m = write_manifest(tmp_path, step="x", fingerprint="f", config={}, inputs={}, outputs=["rows.jsonl", "model"],
                       started=0.0)
    assert m["outputs"]["rows.jsonl"]["rows"] == 3 and m["outputs"]["model"]["files"] == 1
    assert json.loads((tmp_path / "manifest.json").read_text())["fingerprint"] == "f"
    with pytest.raises(FileNotFoundError):
        describe_outputs(tmp_path, ["missing.jsonl"])


def _done_step(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "out.jsonl", rows)
    write_manifest(folder, step=folder.name, fingerprint="fp", config={}, inputs={}, outputs=["out.jsonl"],
                   started=0.0)


def test_fingerprint_depends_on_config_and_input_content(tmp_path):
    _done_step(tmp_path / "judgments", [{"a": 1}])
    args = PairArgs(run_dir=str(tmp_path), step="pairs", judgments_dir=str(tmp_path / "judgments"))
    inputs = {"judgments": args.judgments_dir}
    fp1 = StepRun("pairs", args, inputs, tmp_path / "pairs", command="pairs").fingerprint
    args2 = PairArgs(run_dir=str(tmp_path), step="pairs", judgments_dir=str(tmp_path / "judgments"), pairs_margin=0.9)
    assert StepRun("pairs", args2, inputs, tmp_path / "pairs", command="pairs").fingerprint != fp1
    _done_step(tmp_path / "judgments", [{"a": 2}])  # same config, different input content
    assert StepRun("pairs", args, inputs, tmp_path / "pairs", command="pairs").fingerprint != fp1
    _done_step(tmp_path / "judgments", [{"a": 1}])  # content back: fingerprint back
    assert StepRun("pairs", args, inputs, tmp_path / "pairs", command="pairs").fingerprint == fp1


def test_missing_input_is_a_clear_error(tmp_path):
    args = PairArgs(run_dir=str(tmp_path), step="pairs", judgments_dir=str(tmp_path / "nope"))
    with pytest.raises(StepInputError, match="not complete"):
        StepRun("pairs", args, {"judgments": args.judgments_dir}, tmp_path / "pairs", command="pairs")


def test_begin_keeps_own_partial_work_and_wipes_stale(tmp_path):
    args = PairArgs(run_dir=str(tmp_path), step="pairs")
    run = StepRun("pairs", args, {}, tmp_path / "pairs", command="pairs")
    run.begin()
    (run.folder / "partial.jsonl").write_text("x\n")
    StepRun("pairs", args, {}, tmp_path / "pairs", command="pairs").begin()
    assert (run.folder / "partial.jsonl").exists()  # same fingerprint: resumable work kept
    other = StepRun("pairs", PairArgs(run_dir=str(tmp_path), step="pairs", pairs_margin=0.7), {}, run.folder,
                    command="pairs")
    other.begin()
    assert not (run.folder / "partial.jsonl").exists()  # another config's work is never reused


def test_config_diff_only_lists_choices():
    assert config_diff(PairArgs(pairs_margin=0.5)) == {"pairs_margin": 0.5}


def test_launched_step_config_parses_back_to_the_same_step(tmp_path):
    """What `srpo run` writes for `accelerate launch` rebuilds the same config, hence the same fingerprint (config_diff
    once wrote TrainingArguments' AcceleratorConfig as its repr, which the launched step read as a file name)."""
    import yaml

    from srpo.cli_util import parse_step_args
    from srpo.steps import launch_values
    from srpo.train_configs import DPOStageConfig

    args = DPOStageConfig(run_dir=str(tmp_path), step="iter_001/dpo", policy_dir="p", ref_dir="r", pairs_dir="x",
                          max_steps=4, save_steps=2, use_cpu=True, nll_weight=0.5, disable_tqdm=True)
    path = tmp_path / "dpo.yaml"
    path.write_text(yaml.safe_dump(launch_values(args)))
    parsed = parse_step_args(DPOStageConfig, ["--config", str(path)])
    assert config_diff(parsed) == config_diff(args)


def test_ledger_tolerates_torn_line(tmp_path):
    rf = RunFolder(tmp_path)
    rf.append_ledger({"step": "data"})
    with open(rf.ledger_path, "a") as f:
        f.write('{"step": "sf')
    assert rf.ledger() == [{"step": "data"}]


def test_import_srpo_is_light():
    code = ("import sys, time; t = time.time(); import srpo, srpo.chain, srpo.gate, srpo.pairing, srpo.runfolder, "
            "srpo.schema, srpo.refusal; dt = time.time() - t; "
            "heavy = [m for m in ('torch', 'transformers', 'trl') if m in sys.modules]; print(dt, heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1:] == ["[]"], out  # no heavy framework imported
    assert float(out[0]) < 1.0


def test_the_manifest_command_reruns_the_step_from_its_step_config(tmp_path):
    """`srpo <step> --config <step>/step_config.yaml`, the manifest's command, rebuilds the step's own config (a judge
    section inside a GRPO config included), hence its fingerprint."""
    from srpo.cli_util import parse_step_args
    from srpo.steps import StepRun
    from srpo.train_configs import GRPOStageConfig

    args = GRPOStageConfig(run_dir=str(tmp_path), step="iter_001/grpo", policy_dir="p", data_dir="d", max_steps=3,
                           use_cpu=True, grpo_judge={"judge_backend": "self", "judge_self_observe": "image"},
                           grpo_format_weight=0.5)
    run = StepRun("iter_001/grpo", args, {}, tmp_path / "iter_001" / "grpo", command="grpo")
    with run:
        manifest = run.finish([])
    assert manifest["command"] == f"srpo grpo --config {run.folder / 'step_config.yaml'}"
    parsed = parse_step_args(GRPOStageConfig, ["--config", str(run.folder / "step_config.yaml")])
    assert parsed.grpo_judge == args.grpo_judge
    again = StepRun("iter_001/grpo", parsed, {}, run.folder, command="grpo")
    assert again.fingerprint == run.fingerprint
