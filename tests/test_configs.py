import os
import subprocess
import sys
from pathlib import Path

import pytest

from srpo.cli_util import ConfigError, parse_step_args
from srpo.configs import SampleArgs
from srpo.driver import Driver
from srpo.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recipes" / "tiny" / "demo.yaml"


def test_demo_recipe_parses_into_every_stage_config():
    recipe = load_recipe(str(DEMO))
    driver = Driver(recipe, str(DEMO))
    sft = driver.args("sft", "sft", data_dir="d", model_dir="m")
    assert sft.max_steps == 900 and sft.learning_rate == pytest.approx(3e-3)
    assert sft.output_dir.endswith("sft/trainer")
    dpo = driver.args("dpo", "iter_001/dpo", policy_dir="p/model", ref_dir="r/model", pairs_dir="x", data_dir="d")
    assert dpo.beta == pytest.approx(0.1)
    assert driver.gate.gate_patience == 2


def test_unknown_recipe_key_names_it(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("sft:\n  learnign_rate: 1.0e-3\n")
    recipe = load_recipe(str(bad))
    with pytest.raises(ConfigError, match=r"'learnign_rate' \(did you mean 'learning_rate'\?\)"):
        Driver(recipe, str(bad)).args("sft", "sft")


def test_unknown_section_and_override(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("smpl:\n  sample_k: 4\n")
    with pytest.raises(ConfigError, match=r"'smpl' \(did you mean 'sample'\?\)"):
        load_recipe(str(bad))
    with pytest.raises(ConfigError, match="section.key=value"):
        load_recipe(str(DEMO), ["sample_k=3"])
    recipe = load_recipe(str(DEMO), ["sample.sample_k=8", "dpo.learning_rate=1e-5"])
    assert recipe["sample"]["sample_k"] == 8
    assert Driver(recipe).args("dpo", "x", policy_dir="p/m", ref_dir="r/m").learning_rate == pytest.approx(1e-5)


def test_out_of_range_values_say_how_to_fix(tmp_path):
    recipe = load_recipe(str(DEMO), ["gate.gate_max_oversafety_rise=5"])
    with pytest.raises(ConfigError, match="did you mean 0.05"):
        Driver(recipe)
    recipe = load_recipe(str(DEMO), ["sample.sample_k=1"])
    with pytest.raises(ConfigError, match="sample_k must be >= 2"):
        Driver(recipe).args("sample", "s")
    recipe = load_recipe(str(DEMO), ["dpo.load_in_4bit=true"])
    with pytest.raises(ConfigError, match="set use_lora: true"):
        Driver(recipe).args("dpo", "s", policy_dir="p/m", ref_dir="r/m")


def test_driver_owned_keys_are_refused(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("sample:\n  policy_dir: somewhere\n")
    with pytest.raises(ConfigError, match="srpo run sets itself"):
        load_recipe(str(bad))


def test_step_config_through_trl_parser(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("sample_k: 6\nstep: iter_001/samples\n")
    args = parse_step_args(SampleArgs, ["--config", str(cfg), "--sample_temperature", "0.7"])
    assert args.sample_k == 6 and args.sample_temperature == 0.7  # YAML sets defaults, CLI overrides
    cfg.write_text("sample_kk: 6\n")
    with pytest.raises(ConfigError, match=r"'sample_kk' \(did you mean 'sample_k'\?\)"):
        parse_step_args(SampleArgs, ["--config", str(cfg)])


def test_cli_error_is_one_paragraph_without_traceback(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("sft:\n  learnign_rate: 1.0e-3\n")
    proc = subprocess.run([sys.executable, "-m", "srpo.cli", "run", str(bad)], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert "learnign_rate" in proc.stderr and "Traceback" not in proc.stderr


def test_text_only_model_is_refused_with_a_hint(tmp_path):
    import json

    from srpo.models import load_policy

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ValueError, match="is not a vision-language model"):
        load_policy(str(tmp_path))


def test_accelerate_config_that_cannot_run_here(tmp_path):
    from srpo.launch_checks import machine_problems

    assert "does not exist" in machine_problems(str(tmp_path / "nope.yaml"))[0]
    fsdp = tmp_path / "fsdp.yaml"
    fsdp.write_text("distributed_type: FSDP\nnum_processes: 8\n")
    import torch

    if not torch.cuda.is_available():
        assert "needs GPUs" in machine_problems(str(fsdp))[0]
