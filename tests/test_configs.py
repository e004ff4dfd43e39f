import os
import subprocess
import sys
from pathlib import Path

import pytest

from srpo.cli_util import ConfigError, parse_step_args
from srpo.configs import JudgeArgs, SampleArgs
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
    from srpo.configs import GateStepArgs

    gate = driver.args("gate", "iter_001/gate", cls=GateStepArgs, gate_iteration=1, eval_dirs=["e0", "e1"],
                       judgments_dir="j")
    assert gate.gate_patience == 2 and gate.gate_max_oversafety_rise == pytest.approx(0.05)


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


def _literal_fields():
    """(config class, field name, choices) for every choice field of srpo.configs."""
    import dataclasses
    import inspect

    from srpo import configs

    out = []
    for _, cls in inspect.getmembers(configs, dataclasses.is_dataclass):
        for name, tp in configs.field_types(cls).items():
            choices = configs.literal_choices(tp)
            if choices is not None:
                out.append((cls, name, choices))
    return out


def test_choice_fields_are_literals_shown_by_the_parser():
    from transformers import HfArgumentParser

    fields = _literal_fields()
    names = {name for _, name, _ in fields}
    assert {"judge_backend", "judge_mode", "sample_backend", "build_teacher", "build_twins", "eval_judge_backend",
            "run_reference_policy"} <= names
    for cls, name, choices in fields:
        action = next(a for a in HfArgumentParser([cls])._actions if a.dest == name)
        assert list(action.choices) == list(choices), (cls.__name__, name)
        assert getattr(cls(), name) in choices  # the default is one of them
    judge = next(a for a in HfArgumentParser([JudgeArgs])._actions if a.dest == "judge_backend")
    assert list(judge.choices) == ["self", "openai", "hf", "rule", "dream", "random"]


def test_every_choice_field_refuses_a_bad_value_by_name():
    from srpo.cli_util import build_from_dict

    fields = _literal_fields()
    assert len(fields) >= 7
    for cls, name, choices in fields:
        with pytest.raises(ConfigError) as e:
            build_from_dict(cls, {name: "not-a-choice"}, f"r [{cls.__name__}]")
        assert f"{name} must be one of {', '.join(map(str, choices))}; got 'not-a-choice'" in str(e.value)
        assert f"r [{cls.__name__}]" in str(e.value)


def test_bad_choice_in_a_recipe_gets_the_generic_message(tmp_path):
    from srpo.recipe import check_recipe

    path = tmp_path / "r.yaml"
    path.write_text("judge:\n  judge_mode: both\nrun:\n  run_reference_policy: base\n")
    joined = "\n".join(check_recipe(str(path)))
    assert "[judge]: judge_mode must be one of pointwise, pairwise; got 'both'" in joined
    assert "[run]: run_reference_policy must be one of sft, previous; got 'base'" in joined


@pytest.mark.parametrize("section,text,words", [
    ("sample", "sample_k: many", ["sample_k must be an integer (int)", "'many'"]),
    ("sample", "sample_k: 2.5", ["sample_k must be an integer (int)", "2.5"]),
    ("sft", "max_steps: [1]", ["max_steps must be an integer (int)", "[1]"]),
    ("pairs", "pairs_margin: lots", ["pairs_margin must be a number (float)", "'lots'"]),
    ("sft", "save_total_limit: some", ["save_total_limit must be an integer (int | None)", "'some'"]),
    ("build", "build_strict: yes please", ["build_strict must be true or false (bool)", "'yes please'"]),
    ("build", "build_strict: 1", ["build_strict must be true or false (bool)", "got 1"]),
    ("eval", "eval_suites: 3", ["eval_suites must be a list of str", "(list[str])", "got 3"]),
    ("eval", "eval_suites: {tiny: 1}", ["eval_suites must be a list of str", "{'tiny': 1}"]),
])
def test_wrong_typed_value_names_key_and_type(tmp_path, section, text, words):
    from srpo.recipe import check_recipe

    path = tmp_path / "r.yaml"
    path.write_text(f"{section}:\n  {text}\n")
    joined = "\n".join(check_recipe(str(path)))
    assert f"[{section}]" in joined
    for w in words:
        assert w in joined, (w, joined)


def test_numbers_read_as_strings_still_parse(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("sample:\n  sample_temperature: 1e-3\n  sample_top_p: 1\nsft:\n  learning_rate: 3e-3\n"
                    "eval:\n  eval_suites: tiny\n")
    recipe = load_recipe(str(path))
    assert recipe["sample"]["sample_temperature"] == "1e-3"  # YAML's reading, without a dot
    driver = Driver(recipe, str(path))
    sample = driver.args("sample", "s", policy_dir="p/model", data_dir="d")
    assert sample.sample_temperature == pytest.approx(1e-3) and isinstance(sample.sample_temperature, float)
    assert sample.sample_top_p == 1
    assert driver.args("sft", "sft", data_dir="d", model_dir="m").learning_rate == pytest.approx(3e-3)
    assert driver.args("eval", "e", policy_dir="p/model", data_dir="d").eval_suites == ["tiny"]


def test_grpo_recipe_parses_and_refuses_what_grpo_cannot_do(tmp_path):
    """demo_grpo.yaml builds its grpo section and copies the judge section into the step; a pairwise judge, a
    constant reward and a one-completion group are refused before anything runs."""
    from srpo.recipe import validate

    grpo_recipe = str(ROOT / "recipes" / "tiny" / "demo_grpo.yaml")
    recipe = load_recipe(grpo_recipe)
    driver = Driver(recipe, grpo_recipe)
    assert driver.run.run_rl_algorithm == "grpo" and driver.policy_of(1).endswith("iter_001/grpo/model")
    args = driver.args("grpo", "iter_001/grpo", policy_dir="p/model", data_dir="d",
                       grpo_judge={"judge_backend": "self"})
    assert args.num_generations == 4 and args.generation_batch_size == 8 and args.judge_args().judge_backend == "self"
    validate(grpo_recipe, [])  # no problem
    with pytest.raises(ConfigError, match="pairwise"):
        validate(grpo_recipe, ["judge.judge_backend=hf", "judge.judge_model=m", "judge.judge_mode=pairwise"])
    with pytest.raises(ConfigError, match="every grpo_.*_weight is 0"):
        validate(grpo_recipe, ["grpo.grpo_safety_weight=0", "grpo.grpo_effectiveness_weight=0",
                               "grpo.grpo_awareness_weight=0"])
    with pytest.raises(ConfigError, match="num_generations must be >= 2"):
        validate(grpo_recipe, ["grpo.num_generations=1"])
    with pytest.raises(ConfigError, match="grpo_judge"):
        load_recipe(grpo_recipe, ["grpo.grpo_judge={}"])
