"""Kill the pipeline with SIGKILL inside steps (sampling, judging, DPO after a checkpoint, before a manifest, before
a ledger line), re-run after each kill, and get the same ledger, gate decisions and metrics as an uninterrupted run.

CI runs the fixed 7-point plan. The full seeded run: SRPO_CHAOS_KILLS=20 python -m pytest -s tests/test_resume.py
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tests_support import ledger_rows, srpo_run

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "recipes" / "tiny" / "smoke.yaml")
OVERRIDES = ["run.run_iterations=1", "sample.sample_batch_size=4", "run.run_report_to=none"]

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

# Kill points spread over the steps; each fires once, in pipeline order.
PLAN = [
    {"step": "build: chains", "event": "batch", "after": 1},
    {"step": "sft", "event": "checkpoint", "after": 1},
    {"step": "iter_001/samples", "event": "batch", "after": 3},
    {"step": "iter_001/judgments", "event": "batch", "after": 10},
    {"step": "iter_001/dpo", "event": "checkpoint", "after": 1},
    {"step": "iter_001/eval", "event": "manifest", "after": 1},
    {"step": "iter_001/pairs", "event": "ledger", "after": 1},
]


# Where a kill can land in the smoke run, and how many such events each step has (so `after` stays in range).
CANDIDATES = [("build: chains", "batch", 2), ("sft", "checkpoint", 2), ("iter_000/eval", "batch", 2),
              ("iter_001/samples", "batch", 16), ("iter_001/judgments", "batch", 60),
              ("iter_001/dpo", "checkpoint", 1), ("iter_001/eval", "batch", 1)] + [
    (step, event, 1) for step in ("data", "sft", "base/eval", "iter_000/eval", "iter_001/samples",
                                  "iter_001/judgments", "iter_001/pairs", "iter_001/dpo", "iter_001/eval")
    for event in ("manifest", "ledger")]


def random_plan(n: int, seed: int) -> list[dict]:
    """n seeded kill points spread over the steps (SRPO_CHAOS_KILLS=n runs this instead of the fixed plan)."""
    import random

    rng = random.Random(seed)
    picks = rng.sample(CANDIDATES, min(n, len(CANDIDATES))) + rng.choices(CANDIDATES, k=max(0, n - len(CANDIDATES)))
    return [{"step": s, "event": e, "after": rng.randint(1, top)} for s, e, top in picks]


def test_killed_anywhere_resumes_to_the_same_result(tiny_model, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    clean = srpo_run(SMOKE, tmp_path / "clean", OVERRIDES, env)
    assert clean.returncode == 0, clean.stderr[-3000:]

    n_random = int(os.environ.get("SRPO_CHAOS_KILLS", "0"))
    plan = random_plan(n_random, seed=int(os.environ.get("SRPO_CHAOS_SEED", "0"))) if n_random else PLAN
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps([dict(p, fired=False) for p in plan]))
    chaos_env = {**env, "SRPO_CHAOS_PLAN": str(plan_path)}
    kills = 0
    for _ in range(len(plan) + 1):
        proc = srpo_run(SMOKE, tmp_path / "chaos", OVERRIDES, chaos_env)
        if proc.returncode == 0:
            break
        assert proc.returncode == -9, proc.stderr[-3000:]  # only our SIGKILLs may stop it
        kills += 1
        if kills == 3 and not n_random:  # killed mid-sampling: status names the step and how to resume
            run_dir = str(tmp_path / "chaos" / "tiny-smoke")
            status = subprocess.run([sys.executable, "-m", "srpo.cli", "status", run_dir], env=env, cwd=ROOT,
                                    capture_output=True, text=True)
            assert "started but not finished: iter_001/samples" in status.stdout, status.stdout
            assert "resume with: srpo run" in status.stdout
    fired = [p for p in json.loads(plan_path.read_text()) if p["fired"]]
    print(f"\nkill points fired and survived: {kills}/{len(plan)}", flush=True)
    assert kills == len(fired)
    if not n_random:
        assert kills == len(PLAN)  # the fixed plan is chosen so that every point is reached

    a, b = tmp_path / "clean" / "tiny-smoke", tmp_path / "chaos" / "tiny-smoke"
    assert ledger_rows(b) == ledger_rows(a)
    assert json.loads((b / "iter_001" / "gate" / "gate.json").read_text())["decision"] == \
        json.loads((a / "iter_001" / "gate" / "gate.json").read_text())["decision"]
    metrics = [(r / "iter_001" / "eval" / "metrics.json").read_text() for r in (a, b)]
    assert metrics[0] == metrics[1]
