"""Sampling and evaluation across 2 CPU processes (`accelerate launch`, gloo): prompts sharded by batch, results
gathered in a fixed order by rank 0 — the same bytes as one process — and resumable after every rank and the
launcher are SIGKILLed, even under another number of processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parent.parent
CPU_2PROC = REPO / "launch" / "accelerate" / "cpu_2proc.yaml"


def _launch(stage: str, values: dict, config: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    config.write_text(yaml.safe_dump(values))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), **(env_extra or {}))
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file", str(CPU_2PROC),
           "--main_process_port", str(29500 + (os.getpid() + 7) % 500), "-m", f"srpo.stages.{stage}",
           "--config", str(config)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_sampling_two_processes_equals_one_and_resumes(tiny_model, tiny_data, tmp_path):
    from srpo.configs import SampleArgs
    from srpo.stages import sample

    values = dict(run_dir=str(tmp_path), policy_dir=tiny_model, data_dir=str(tiny_data), sample_k=2,
                  sample_batch_size=3, sample_max_new_tokens=12, sample_temperature=1.0, seed=3)
    sample.run(SampleArgs(step="one", **values))
    one = (tmp_path / "one" / "samples.jsonl").read_bytes()
    n_prompts = _manifest(tmp_path / "one")["stats"]["prompts"]
    assert n_prompts >= 6, "need several batches to shard"

    proc = _launch("sample", dict(values, step="two"), tmp_path / "two.yaml")
    assert proc.returncode == 0, proc.stderr[-4000:]
    two = tmp_path / "two"
    assert _manifest(two)["stats"]["processes"] == 2
    assert (two / "samples.jsonl").read_bytes() == one, "2-process samples differ from 1-process samples"
    assert not (two / "parts").exists(), "part files are resume points and are removed once the step is done"

    # Kill every rank and the launcher after the 2nd batch of one rank; resume with ONE process: same bytes.
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([{"step": "killed", "event": "batch", "after": 2, "all_ranks": True}]))
    proc = _launch("sample", dict(values, step="killed"), tmp_path / "killed.yaml", {"SRPO_CHAOS_PLAN": str(plan)})
    assert proc.returncode != 0 and json.loads(plan.read_text())[0]["fired"], proc.stderr[-2000:]
    killed = tmp_path / "killed"
    assert not (killed / "manifest.json").exists()
    partial = sum(len(p.read_text().splitlines()) for p in (killed / "parts").glob("*.jsonl"))
    assert 0 < partial < n_prompts * 2
    sample.run(SampleArgs(step="killed", **values))
    assert (killed / "samples.jsonl").read_bytes() == one
    assert _manifest(killed)["stats"]["samples"] == n_prompts * 2


def test_eval_two_processes_equals_one(tiny_model, tiny_data, tmp_path):
    from srpo.configs import EvalArgs
    from srpo.stages import evaluate

    values = dict(run_dir=str(tmp_path), policy_dir=tiny_model, data_dir=str(tiny_data), eval_batch_size=3,
                  eval_max_new_tokens=12, eval_samples_per_item=2, eval_temperature=1.0, seed=5)
    evaluate.run(EvalArgs(step="one", **values))
    proc = _launch("evaluate", dict(values, step="two"), tmp_path / "two.yaml")
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name in ("generations.jsonl", "items.jsonl", "metrics.json"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    assert _manifest(tmp_path / "two")["outputs"] == _manifest(tmp_path / "one")["outputs"]
