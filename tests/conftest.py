import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """The tiny LLaVA built offline once per session (in a private cache so tests never reuse a stale build)."""
    cache = tmp_path_factory.mktemp("srpo-cache")
    os.environ["SRPO_CACHE"] = str(cache)
    from srpo.model_specs import resolve_model

    return resolve_model("tiny:llava")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A built data folder of the tiny pair set (the `data` step of a run)."""
    from srpo.configs import BuildArgs
    from srpo.stages import build

    run_dir = tmp_path_factory.mktemp("run")
    build.run(BuildArgs(run_dir=str(run_dir), step="data"))
    return run_dir / "data"
