"""Security defaults, checked on a whole run: a planted API key never reaches any file the run writes; no pickles."""

from pathlib import Path

import pytest

from tests.tests_support import secret_scan

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "recipes" / "tiny" / "smoke.yaml")
SECRET = "sk-planted-0123456789abcdefSECRET"

pytestmark = pytest.mark.slow


def test_planted_secret_never_written_anywhere(tiny_model, tmp_path, monkeypatch):
    from srpo.driver import Driver
    from srpo.recipe import load_recipe
    from srpo.testing.fault_server import FaultServer

    monkeypatch.setenv("SRPO_TEST_TEACHER_KEY", SECRET)
    # The teacher's endpoint echoes the Authorization header back in a 401 once and injects faults, so the key
    # passes through error paths too.
    with FaultServer(plan=["http_401_echo", "http_500", None], retry_after_s=0.05) as srv:
        recipe = load_recipe(SMOKE, [
            f"run.run_runs_dir={tmp_path}", "run.run_iterations=1", "build.build_teacher=openai",
            "build.build_teacher_model=fake-teacher", f"build.build_teacher_base_url={srv.url}",
            "build.build_teacher_api_key_env=SRPO_TEST_TEACHER_KEY", "build.build_teacher_timeout_s=2",
        ])
        Driver(recipe, SMOKE).run_all()
    run_dir = tmp_path / "tiny-smoke"
    assert (run_dir / "iter_001" / "gate" / "gate.json").exists()
    leaks, scanned = secret_scan(run_dir, SECRET)
    assert scanned > 20 and leaks == [], leaks
    pickles = [p for p in run_dir.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    assert pickles == [], pickles  # policies and outputs are safetensors and JSON only


def test_trust_remote_code_is_off_by_default():
    from srpo.train_configs import DPOStageConfig, SFTStageConfig

    assert SFTStageConfig(output_dir="x", use_cpu=True).trust_remote_code is False
    assert DPOStageConfig(output_dir="x", use_cpu=True).trust_remote_code is False


def test_models_load_from_safetensors_only(tiny_model, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file

    from srpo.models import load_policy

    # The same weights as a pickle, which transformers would load if asked (bytes that do not unpickle would fail
    # either way and prove nothing).
    legacy = tmp_path / "legacy"
    shutil.copytree(tiny_model, legacy)
    torch.save(load_file(legacy / "model.safetensors"), legacy / "pytorch_model.bin")
    (legacy / "model.safetensors").unlink()
    with pytest.raises(OSError, match="model.safetensors"):
        load_policy(str(legacy))
