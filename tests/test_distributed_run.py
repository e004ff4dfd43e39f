"""`srpo run` with every training, sampling and eval step under a 2-process `accelerate launch` (CPU, gloo), killed
the way a scheduler kills a job — every rank and the launcher SIGKILLed right after DPO's first checkpoint — and
re-run until it finishes: the same ledger and the same eval metrics, byte for byte, as an uninterrupted run.

    srpo run recipes/tiny/smoke.yaml --set run.run_accelerate_config=launch/accelerate/cpu_2proc.yaml ...
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.tests_support import ledger_rows, srpo_run

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.chaos]

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "recipes" / "tiny" / "smoke.yaml")
# One iteration, no base eval; DPO (4 steps) checkpoints at step 2, so the kill lands mid-step.
OVERRIDES = ["run.run_accelerate_config=launch/accelerate/cpu_2proc.yaml", "run.run_iterations=1",
             "run.run_report_to=none", "run.run_eval_base=false", "sample.sample_batch_size=4", "dpo.save_steps=2"]
PLAN = [{"step": "iter_001/dpo", "event": "checkpoint", "after": 1, "all_ranks": True}]


def test_srpo_run_under_accelerate_killed_in_dpo_resumes_to_the_same_result(tiny_model, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "ACCELERATE_USE_CPU")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    t0 = time.time()
    clean = srpo_run(SMOKE, tmp_path / "clean", OVERRIDES, env)
    assert clean.returncode == 0, clean.stdout[-3000:] + clean.stderr[-3000:]
    t_clean = time.time() - t0

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN))
    chaos_env = {**env, "SRPO_CHAOS_PLAN": str(plan)}
    t0 = time.time()
    killed = srpo_run(SMOKE, tmp_path / "chaos", OVERRIDES, chaos_env)
    run_dir = tmp_path / "chaos" / "tiny-smoke"
    assert killed.returncode != 0 and json.loads(plan.read_text())[0]["fired"], killed.stderr[-3000:]
    assert "step iter_001/dpo failed under accelerate launch" in killed.stderr + killed.stdout
    assert [p.name for p in (run_dir / "iter_001" / "dpo" / "trainer").glob("checkpoint-*")] == ["checkpoint-2"]
    assert not (run_dir / "iter_001" / "dpo" / "manifest.json").exists()
    resumed = srpo_run(SMOKE, tmp_path / "chaos", OVERRIDES, chaos_env)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    t_chaos = time.time() - t0
    print(f"\nsrpo run under 2-process accelerate: uninterrupted {t_clean:.0f} s, killed + resumed {t_chaos:.0f} s",
          flush=True)

    a = tmp_path / "clean" / "tiny-smoke"
    assert json.loads((a / "iter_001" / "dpo" / "manifest.json").read_text())["stats"]["pairs"] > 0
    assert ledger_rows(run_dir) == ledger_rows(a)
    assert (run_dir / "iter_001" / "eval" / "metrics.json").read_bytes() == \
        (a / "iter_001" / "eval" / "metrics.json").read_bytes()


def test_srpo_run_launches_grpo_on_two_processes(tiny_model, tmp_path):
    """run_rl_algorithm grpo under the accelerate config: the driver writes the step's config in one process and the
    two launched ranks derive GRPO's generation batch for themselves (2 x 8 completions a step, not the driver's 8)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "ACCELERATE_USE_CPU")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    overrides = [*OVERRIDES, "run.run_rl_algorithm=grpo", "grpo.max_steps=2", "grpo.max_completion_length=32",
                 "grpo.logging_steps=1", "grpo.disable_tqdm=true"]
    proc = srpo_run(SMOKE, tmp_path, overrides, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "accelerate launch" in proc.stdout and "srpo.stages.grpo" in proc.stdout
    step = tmp_path / "tiny-smoke" / "iter_001" / "grpo"
    stats = json.loads((step / "manifest.json").read_text())["stats"]
    assert stats["global_step"] == 2 and stats["judgments"] == 2 * 16
    assert not list(step.glob("judgments.rank*.jsonl"))  # both ranks' rows merged into judgments.jsonl
    launched = (tmp_path / "tiny-smoke" / ".launch" / "iter_001_grpo.yaml").read_text()
    assert "generation_batch_size" not in launched and "grpo_judge" in launched
