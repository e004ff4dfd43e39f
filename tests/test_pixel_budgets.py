"""run.run_image_processor: the base step writes the pixel budget into base/model once, for every later step."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from srpo.model_specs import resolve_model
from srpo.stages.base import BaseArgs, run


def _image_tokens(processor) -> int:
    out = processor.image_processor(images=[Image.new("RGB", (224, 224), "red")], return_tensors="pt")
    return int(out["image_grid_thw"].prod())


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_the_budget_lands_in_base_model_and_the_model_folder_is_untouched(tmp_path):
    from srpo.models import load_policy

    source = Path(resolve_model("tiny:qwen2.5-vl"))
    before = _digest(source)
    manifest = run(BaseArgs(run_dir=str(tmp_path), step="base", seed=0, model_dir=str(source),
                            image_processor={"max_pixels": 56 * 56}))
    target = tmp_path / "base" / "model"
    assert _digest(source) == before  # saved beside the links, never through them
    assert (target / "model.safetensors").is_symlink() and not (target / "processor_config.json").is_symlink()
    assert manifest["stats"]["image_processor"] == {"max_pixels": 3136}
    _, plain = load_policy(str(source))
    _, budgeted = load_policy(str(target))
    assert _image_tokens(budgeted) * 4 <= _image_tokens(plain)  # 224 px: 8 x 8 patches, then 4 x 4
    saved = tmp_path / "checkpoint"
    budgeted.save_pretrained(saved)  # what every training step does with its model
    assert json.loads((saved / "processor_config.json").read_text())["image_processor"]["size"]["longest_edge"] == 3136


def test_a_setting_the_image_processor_ignores_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"ignores the setting 'max_pixel'; its settings are .*size"):
        run(BaseArgs(run_dir=str(tmp_path), step="base", seed=0, model_dir=resolve_model("tiny:qwen2.5-vl"),
                     image_processor={"max_pixel": 3136}))
    assert not (tmp_path / "base" / "manifest.json").exists()


def test_other_families_take_their_own_settings(tmp_path):
    """Idefics3's image splitting, a setting with no Qwen counterpart, goes through the same path."""
    from srpo.model_families import processor_with

    folder = resolve_model("tiny:idefics3")
    assert processor_with(folder, {"do_image_splitting": True}).image_processor.do_image_splitting is True
    with pytest.raises(ValueError, match="ignores the setting 'max_pixels'"):
        processor_with(folder, {"max_pixels": 3136})


def test_the_preflight_checks_the_settings_against_a_model_folder(tmp_path):
    from srpo.recipe import check_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"run:\n  run_model: {resolve_model('tiny:qwen2.5-vl')}\n")
    assert check_recipe(recipe, ["run.run_image_processor={max_pixels: 3136}"], preflight=True) == []
    problems = check_recipe(recipe, ["run.run_image_processor={max_pixel: 3136}"], preflight=True)
    assert len(problems) == 1 and "key 'run.run_image_processor'" in problems[0] and "'max_pixel'" in problems[0]


def test_a_setting_equal_to_the_current_value_is_taken():
    """Qwen's max_pixels equal to its size's longest_edge changes nothing, yet the processor takes the key."""
    from srpo.model_families import processor_with

    folder = resolve_model("tiny:qwen2.5-vl")
    longest = json.loads((Path(folder) / "processor_config.json").read_text())["image_processor"]["size"]
    assert processor_with(folder, {"max_pixels": longest["longest_edge"]}).image_processor.size["longest_edge"] == \
        longest["longest_edge"]


def test_the_gpu_benchmark_runs_its_code_path_on_a_cpu():
    """benchmarks/gpu_step.py in its tiny shape: srpo's LoRA DPO step on a Qwen2.5-VL built from dimensions (the 7B
    shape needs a GPU); the figures are printed, not asserted."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_step.py"), "--shape", "tiny", "--steps", "2",
                          "--warmup", "1", "--pixels", "12544", "--answer-tokens", "20"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "dpo step (LoRA r=64, batch 2" in out.stdout and "median" in out.stdout, out.stdout
