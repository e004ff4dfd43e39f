"""Every recipe under recipes/ and every launch config under launch/ validates; broken ones are refused by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from srpo import launch_validate as lv

REPO = Path(__file__).resolve().parent.parent
RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))
DEEPSPEED = sorted((REPO / "launch" / "deepspeed").glob("*.json"))
ACCELERATE = sorted((REPO / "launch" / "accelerate").glob("*.yaml"))


def _ids(paths):
    return [str(p.relative_to(REPO)) for p in paths]


@pytest.fixture(autouse=True)
def _from_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)  # accelerate reads deepspeed_config_file relative to the launch directory


def test_there_is_something_to_validate():
    assert len(RECIPES) >= 7 and len(DEEPSPEED) >= 3 and len(ACCELERATE) >= 6


@pytest.mark.parametrize("path", DEEPSPEED, ids=_ids(DEEPSPEED))
def test_deepspeed_configs_validate(path):
    pytest.importorskip("deepspeed")
    assert lv.check(path) == []
    cfg = json.loads(path.read_text())
    if cfg["zero_optimization"]["stage"] == 3:  # checkpoints must load in transformers / vLLM
        assert cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


@pytest.mark.parametrize("path", ACCELERATE, ids=_ids(ACCELERATE))
def test_accelerate_configs_validate(path):
    if "DEEPSPEED" in path.read_text():
        pytest.importorskip("deepspeed")
    assert lv.check(path) == []


@pytest.mark.parametrize("path", RECIPES, ids=_ids(RECIPES))
def test_recipes_validate(path):
    if "zero" in path.read_text():
        pytest.importorskip("deepspeed")
    assert lv.check(path) == []


GOOD_DS = {"zero_optimization": {"stage": 2}, "bf16": {"enabled": "auto"}, "train_micro_batch_size_per_gpu": "auto",
           "train_batch_size": "auto", "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
           "zero_allow_untested_optimizer": True}


def _ds(tmp_path, name, **changes):
    cfg = json.loads(json.dumps(GOOD_DS))
    for key, value in changes.items():
        if "__" in key:
            outer, inner = key.split("__")
            cfg[outer][inner] = value
        else:
            cfg[key] = value
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("changes,expected", [
    ({"zero_optimisation": {"stage": 3}}, "'zero_optimisation'"),          # typo: DeepSpeed would ignore it
    ({"gradient_clippingg": 1.0}, "'gradient_clippingg'"),                 # unknown top-level key
    ({"zero_optimization__stage": 4}, "'zero_optimization.stage'"),        # no such stage
    ({"zero_optimization__overlap_com": True}, "overlap_com"),             # sub-key typo (DeepSpeed's parser)
    ({"train_micro_batch_size_per_gpu": 8}, "train_micro_batch_size_per_gpu"),  # vs per_device_train_batch_size
    ({"fp16": {"enabled": True}, "bf16": {"enabled": True}}, "'fp16.enabled'"),
])
def test_bad_deepspeed_configs_are_refused_by_key(tmp_path, changes, expected):
    pytest.importorskip("deepspeed")
    problems = lv.check(_ds(tmp_path, "bad", **changes))
    assert problems and any(expected in p for p in problems), problems
    assert all(str(tmp_path) in p for p in problems)  # every message names the file


def test_not_json_is_refused(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"zero_optimization": {"stage": 2},}')
    problems = lv.check(path)
    assert problems and "not valid JSON" in problems[0] and "broken.json" in problems[0]


def _yaml(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


ACCEL_OK = """compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
num_machines: 1
num_processes: 2
machine_rank: 0
mixed_precision: bf16
"""


@pytest.mark.parametrize("text,expected", [
    (ACCEL_OK + "num_proccesses: 4\n", "'num_proccesses'"),                                      # typo
    (ACCEL_OK.replace("MULTI_GPU", "MULTI_GPUS"), "'distributed_type'"),                         # invalid type
    (ACCEL_OK.replace("bf16", "bfloat16"), "'mixed_precision'"),
    (ACCEL_OK.replace("MULTI_GPU", "MULTI_CPU"), "ONE process"),                                 # CPU trap
    (ACCEL_OK.replace("MULTI_GPU", "DEEPSPEED") + "deepspeed_config:\n  deepspeed_config_file: nope/zero9.json\n",
     "'deepspeed_config.deepspeed_config_file'"),                                               # missing file
    (ACCEL_OK.replace("MULTI_GPU", "DEEPSPEED") + "deepspeed_config:\n  deepspeed_config_file: "
     "launch/deepspeed/zero2.json\n  zero_stage: 3\n", "'deepspeed_config.zero_stage'"),          # clash with file
    (ACCEL_OK.replace("MULTI_GPU", "DEEPSPEED") + "use_cpu: true\ndeepspeed_config:\n  deepspeed_config_file: "
     "launch/deepspeed/zero2.json\n", "'use_cpu'"),                                              # silent-DDP trap
    (ACCEL_OK.replace("num_machines: 1", "num_machines: 2"), "'main_process_ip'"),
    (ACCEL_OK.replace("MULTI_GPU", "DEEPSPEED") + "deepspeed_config:\n  deepspeed_config_file: "
     "launch/deepspeed/zero3.json\n", "'mixed_precision' cannot be combined"),                     # stops at launch
])
def test_bad_accelerate_configs_are_refused_by_key(tmp_path, text, expected):
    problems = lv.check(_yaml(tmp_path, "accel.yaml", text))
    assert problems and any(expected in p for p in problems), problems


RECIPE = """run:
  run_name: t
  run_model: tiny:llava
sft:
  per_device_train_batch_size: 4
  learning_rate: 1.0e-3
"""


@pytest.mark.parametrize("text,expected", [
    (RECIPE + "  learning_rat: 1.0\n", "'learning_rat'"),                         # typo in a section
    (RECIPE + "dpoo:\n  beta: 0.1\n", "'dpoo'"),                                  # unknown section
    (RECIPE.replace("tiny:llava", "tiny:llava\n  run_accelerate_config: launch/accelerate/nope.yaml"),
     "'run.run_accelerate_config'"),
    (RECIPE + "  load_in_4bit: true\n", "load_in_4bit"),                           # QLoRA without LoRA
])
def test_bad_recipes_are_refused_by_key(tmp_path, text, expected):
    problems = lv.check(_yaml(tmp_path, "recipe.yaml", text))
    assert problems and any(expected in p for p in problems), problems


def test_recipe_batch_mismatch_with_deepspeed_json(tmp_path):
    pytest.importorskip("deepspeed")
    ds = _ds(tmp_path, "micro8", train_micro_batch_size_per_gpu=8)
    problems = lv.check(_yaml(tmp_path, "recipe.yaml", RECIPE), deepspeed=str(ds))
    assert any("train_micro_batch_size_per_gpu=8" in p and "[sft]" in p for p in problems), problems
    lr = _ds(tmp_path, "lr", optimizer={"type": "AdamW", "params": {"lr": 0.5}})
    problems = lv.check(_yaml(tmp_path, "recipe.yaml", RECIPE), deepspeed=str(lr))
    assert any("optimizer.params.lr" in p for p in problems), problems
    assert lv.check(_yaml(tmp_path, "recipe.yaml", RECIPE), deepspeed=str(_ds(tmp_path, "ok"))) == []


def test_recipe_precision_mismatch_with_accelerate_config(tmp_path):
    pytest.importorskip("deepspeed")
    text = RECIPE.replace("tiny:llava", "tiny:llava\n  run_accelerate_config: launch/accelerate/ddp.yaml")
    problems = lv.check(_yaml(tmp_path, "recipe.yaml", text))  # ddp.yaml is bf16, the recipe is fp32
    assert any("'sft.bf16/fp16'" in p and "mixed_precision" in p for p in problems), problems
    assert lv.check(_yaml(tmp_path, "recipe.yaml", text + "  bf16: true\n")) == []


def test_validate_raises_with_every_problem(tmp_path):
    with pytest.raises(lv.LaunchConfigError, match="num_proccesses"):
        lv.validate(_yaml(tmp_path, "accel.yaml", ACCEL_OK + "num_proccesses: 4\n"))


def test_cli(tmp_path, capsys):
    assert lv.main([str(REPO / "launch/accelerate/ddp.yaml")]) == 0
    assert lv.main([str(_yaml(tmp_path, "accel.yaml", ACCEL_OK + "num_proccesses: 4\n"))]) == 1
    assert "INVALID" in capsys.readouterr().out


def test_import_srpo_stays_light():
    import subprocess
    import sys

    code = "import sys, srpo.launch_validate; print(sorted(m for m in ('torch', 'transformers', 'deepspeed', " \
           "'accelerate') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


REAL = [p for p in RECIPES if p.parent.name != "tiny"]
FIXTURES = REPO / "tests" / "fixtures"
# The tiny model of each real recipe's family: the preflight checks everything but the real weights against it.
STAND_IN = {"qwen2.5-vl-7b": "tiny:qwen2.5-vl", "qwen2.5-vl-3b": "tiny:qwen2.5-vl", "qwen3-vl-8b": "tiny:qwen3-vl",
            "llava-1.5-7b": "tiny:llava"}


@pytest.fixture(scope="module")
def fixture_data(tmp_path_factory):
    """The recipes' data layout from the project's fixtures: VLGuard's train split (with images) and a benchmark
    root in the upstream formats."""
    from PIL import Image

    root = tmp_path_factory.mktemp("data")
    shutil.copytree(FIXTURES / "sources" / "vlguard", root / "vlguard")
    for row in json.loads((root / "vlguard" / "data" / "train.json").read_text()):
        image = root / "vlguard" / "train" / row["image"]
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), "blue").save(image)
    shutil.copytree(FIXTURES / "evals", root / "benchmarks")
    return root


def _fixture_overrides(path, data) -> list[str]:
    return [f"run.run_model={STAND_IN[path.parent.name]}", f"build.build_source_root={data / 'vlguard'}",
            f"eval.eval_data_root={data / 'benchmarks'}"]


def test_every_real_recipe_folder_has_a_guide():
    folders = sorted({p.parent for p in REAL})
    assert set(STAND_IN) == {f.name for f in folders}
    for folder in folders:
        guide = (folder / "README.md").read_text()
        for recipe in folder.glob("*.yaml"):
            assert f"srpo run recipes/{folder.name}/{recipe.name}" in guide, (folder, recipe)
        for heading in ("## Hardware", "## Data", "## Run", "## Time", "## Watch"):
            assert heading in guide, (folder, heading)


@pytest.mark.parametrize("path", REAL, ids=_ids(REAL))
def test_real_model_recipes_build_from_a_real_source(path):
    """Run as shipped, a real recipe trains on VLGuard's train split with a model teacher, never on the toy set."""
    from srpo.recipe import load_recipe

    build = load_recipe(str(path))["build"]
    assert build["build_source"] == "vlguard" and build["build_source_options"] == {"split": "train"}
    assert build["build_teacher"] != "offline"


@pytest.mark.parametrize("path", REAL, ids=_ids(REAL))
def test_real_model_recipes_pass_the_preflight_with_fixture_data_and_a_tiny_stand_in(path, fixture_data):
    """What `srpo run` checks before any work, on this machine: everything but the real weights and data, which the
    family's tiny model and the project's fixtures replace (a model spec is resolved like a folder would be)."""
    from srpo.recipe import check_recipe

    if "zero" in path.read_text():
        pytest.importorskip("deepspeed")
    assert check_recipe(path, _fixture_overrides(path, fixture_data), preflight=True) == []


@pytest.mark.parametrize("path", REAL, ids=_ids(REAL))
def test_real_model_recipes_refuse_the_preflight_without_model_and_data(path, tmp_path):
    """Without the weights and the data the preflight names each missing piece by its key, and the message ends with
    the recipe folder's guide."""
    from srpo.cli_util import ConfigError
    from srpo.recipe import check_recipe, validate

    if "zero" in path.read_text():
        pytest.importorskip("deepspeed")
    nothing = tmp_path / "nothing"
    overrides = [f"run.run_model={nothing}/model", f"build.build_source_root={nothing}/vlguard",
                 f"eval.eval_data_root={nothing}"]
    problems = check_recipe(path, overrides, preflight=True)
    keys = ["run.run_model", "build.build_source_root", "eval.eval_data_root"]
    assert len(problems) == 3 and all(f"key '{k}'" in p for k, p in zip(keys, problems, strict=True)), problems
    with pytest.raises(ConfigError) as e:
        validate(path, overrides, preflight=True)
    assert str(e.value).rstrip().endswith(str(path.parent / "README.md"))


def test_the_preflight_names_a_data_folder_without_its_images(fixture_data, tmp_path):
    """A VLGuard folder whose train.zip was not unpacked where the converter looks: refused, with the reason."""
    from srpo.recipe import check_recipe

    path = REPO / "recipes" / "qwen2.5-vl-7b" / "lora.yaml"
    bare = tmp_path / "vlguard"
    shutil.copytree(fixture_data / "vlguard" / "data", bare / "data")
    overrides = _fixture_overrides(path, fixture_data)[:1] + [f"build.build_source_root={bare}",
                                                             f"eval.eval_data_root={fixture_data / 'benchmarks'}"]
    problems = check_recipe(path, overrides, preflight=True)
    assert len(problems) == 1 and "4 of 4 vlguard rows would be quarantined" in problems[0], problems
    assert "image_missing" in problems[0] and "train.json, item 1, field 'image'" in problems[0]


@pytest.mark.parametrize("path", [p for p in REAL if "run_image_processor" in p.read_text()],
                         ids=_ids([p for p in REAL if "run_image_processor" in p.read_text()]))
def test_real_recipes_pixel_budgets_are_settings_of_their_family(path):
    """Each recipe's run_image_processor is applied by the family's own image processor (a key it ignored would be
    refused), and the budget bounds the image tokens."""
    from srpo.model_families import processor_with
    from srpo.model_specs import resolve_model
    from srpo.recipe import load_recipe

    settings = load_recipe(str(path))["run"]["run_image_processor"]
    processor = processor_with(resolve_model(STAND_IN[path.parent.name]), settings)
    size = processor.image_processor.size
    assert (size["shortest_edge"], size["longest_edge"]) == (settings["min_pixels"], settings["max_pixels"])


def test_every_relative_link_in_the_docs_resolves():
    """README.md, docs/ and the recipe guides link only to files that exist (anchors and web links aside)."""
    import re

    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
             *sorted((REPO / "recipes").glob("*/README.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://", "mailto:", "#")):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, broken
