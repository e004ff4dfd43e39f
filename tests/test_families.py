"""The VLM families srpo trains, each as a tiny random model built offline with its own processor class: the whole
DPO pipeline (base -> build -> SFT -> sample -> judge -> pairs -> DPO -> eval -> gate, full fine-tuning) and a GRPO
step with LoRA, the vision tower frozen by the family's own module names.

    pytest -m families tests/test_families.py          (make test-families)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "recipes" / "tiny" / "smoke.yaml")
# family -> (model spec, processor class, the vision tower's module name in the saved weights' keys)
FAMILIES = {
    "llava": ("tiny:llava", "LlavaProcessor", "vision_tower."),
    "llava-next": ("tiny:llava-next", "LlavaNextProcessor", "vision_tower."),
    "llava-onevision": ("tiny:llava-onevision", "LlavaOnevisionImageOnlyProcessor", "vision_tower."),
    "gemma3": ("tiny:gemma3", "Gemma3Processor", "vision_tower."),
    "idefics3": ("tiny:idefics3", "Idefics3Processor", "vision_model."),
    "smolvlm": ("tiny:smolvlm", "SmolVLMImageOnlyProcessor", "vision_model."),
    "internvl": ("tiny:internvl", "InternVLImageOnlyProcessor", "vision_tower."),
    "qwen2-vl": ("tiny:qwen2-vl", "Qwen2VLImageOnlyProcessor", "visual."),
    "qwen2.5-vl": ("tiny:qwen2.5-vl", "Qwen2VLImageOnlyProcessor", "visual."),
    "qwen3-vl": ("tiny:qwen3-vl", "Qwen3VLImageOnlyProcessor", "visual."),
}

pytestmark = [pytest.mark.families, pytest.mark.slow]


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(f))
    return out


# TRL 1.16's GRPOTrainer forwards every processor output to its log-probability pass, and LLaVA-OneVision's
# processor returns `batch_num_images`, which that pass does not take:
# "GRPOTrainer._get_per_token_logps_and_entropies() got an unexpected keyword argument 'batch_num_images'".
# Iterative DPO is unaffected.
GRPO_FAILS = {"llava-onevision": TypeError}


def _overrides(family: str, runs: Path) -> list[str]:
    return [f"run.run_runs_dir={runs}", f"run.run_model={FAMILIES[family][0]}", "run.run_iterations=1",
            "run.run_report_to=none"]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_run(request, tiny_model, tmp_path_factory):
    """The smoke recipe on the family's tiny model: one DPO iteration."""
    from srpo.driver import Driver
    from srpo.recipe import load_recipe

    family = request.param
    runs = tmp_path_factory.mktemp(f"family-{family}")
    summary = Driver(load_recipe(SMOKE, _overrides(family, runs)), SMOKE).run_all()
    return family, runs / "tiny-smoke", summary


def test_the_dpo_pipeline_runs_and_learns_on_each_family(family_run):
    from srpo.models import load_policy

    family, run_dir, summary = family_run
    _, processor = load_policy(str(run_dir / "base" / "model"))
    assert type(processor).__name__ == FAMILIES[family][1]
    for step in ("data", "sft", "iter_000/eval", "iter_001/samples", "iter_001/judgments", "iter_001/pairs",
                 "iter_001/dpo", "iter_001/eval", "iter_001/gate"):
        assert (run_dir / step / "manifest.json").exists(), step
    stats = {s: json.loads((run_dir / s / "manifest.json").read_text())["stats"] for s in ("sft", "iter_001/dpo")}
    assert stats["sft"]["final_loss"] < 0.5 * stats["sft"]["first_loss"], stats["sft"]  # SFT learns the chains
    assert stats["iter_001/dpo"]["trained"] and stats["iter_001/dpo"]["final_loss"] < 0.6931, stats["iter_001/dpo"]
    items = [json.loads(line) for line in (run_dir / "iter_001" / "eval" / "items.jsonl").read_text().splitlines()]
    assert items and all(i["response"] is not None for i in items)
    assert summary["final_iteration"] in (0, 1)


def test_the_vision_tower_stays_frozen_by_the_familys_own_names(family_run):
    family, run_dir, _ = family_run
    prefix = FAMILIES[family][2]
    base, sft = _weights(run_dir / "base" / "model"), _weights(run_dir / "sft" / "model")
    vision = [k for k in base if k.startswith(prefix) or f".{prefix}" in k]
    assert vision, f"no {prefix}* weights in the {family} model: {sorted(base)[:5]}"
    assert all(bool((base[k] == sft[k]).all()) for k in vision), "SFT moved the vision tower"
    text = [k for k in base if k not in vision and "layers." in k and k in sft]  # the language model's blocks
    assert any(not bool((base[k] == sft[k]).all()) for k in text), "SFT did not train the language model"


@pytest.mark.parametrize("family", [
    pytest.param(f, marks=pytest.mark.xfail(raises=GRPO_FAILS[f], strict=True, reason="TRL 1.16: batch_num_images"))
    if f in GRPO_FAILS else f for f in sorted(FAMILIES)])
def test_grpo_with_lora_runs_on_each_family(family, tiny_model, tmp_path):
    """A GRPO iteration with LoRA (beta 0.04: the KL to the adapter-disabled policy) from the family's SFT model."""
    from srpo.driver import Driver
    from srpo.recipe import load_recipe

    grpo = [*_overrides(family, tmp_path), "sft.max_steps=20", "run.run_rl_algorithm=grpo", "grpo.max_steps=2",
            "grpo.max_completion_length=32", "grpo.use_lora=true", "grpo.beta=0.04", "grpo.logging_steps=1"]
    summary = Driver(load_recipe(SMOKE, grpo), SMOKE).run_all()
    step = tmp_path / "tiny-smoke" / "iter_001" / "grpo"
    stats = json.loads((step / "manifest.json").read_text())["stats"]
    assert stats["global_step"] == 2 and stats["judgments"] == 16 and stats["judge_failure_rate"] == 0.0
    from safetensors.torch import load_file

    from srpo.training import is_vision_tower

    adapted = list(load_file(step / "model" / "adapter_model.safetensors"))
    assert adapted and any("lora_A" in k for k in adapted)  # the language model's projections carry adapters
    assert not any(is_vision_tower(k) for k in adapted), [k for k in adapted if is_vision_tower(k)][:3]
    assert any("kl" in h for h in json.loads((step / "log_history.json").read_text()))
    assert summary["feedback"]["rl_algorithm"] == "grpo"



def test_sft_and_dpo_with_lora_train_on_each_family(family_run, tmp_path):
    """SFT and DPO with LoRA adapters on each family, on the family run's data and preference pairs: both train
    and save an adapter, and no adapter sits on the vision tower."""
    from safetensors.torch import load_file

    from srpo.stages import dpo, sft
    from srpo.train_configs import DPOStageConfig, SFTStageConfig
    from srpo.training import is_vision_tower

    family, run_dir, _ = family_run
    common = dict(run_dir=str(tmp_path), use_cpu=True, disable_tqdm=True, save_strategy="no", report_to="none",
                  logging_steps=1, max_steps=2, per_device_train_batch_size=2, use_lora=True, lora_r=8)
    manifests = {
        "sft": sft.run(SFTStageConfig(step="sft", data_dir=str(run_dir / "data"),
                                      model_dir=str(run_dir / "base" / "model"),
                                      output_dir=str(tmp_path / "sft" / "trainer"), **common)),
        "dpo": dpo.run(DPOStageConfig(step="dpo", data_dir=str(run_dir / "data"),
                                      policy_dir=str(run_dir / "sft" / "model"),
                                      ref_dir=str(run_dir / "sft" / "model"),
                                      pairs_dir=str(run_dir / "iter_001" / "pairs"),
                                      output_dir=str(tmp_path / "dpo" / "trainer"), **common))}
    for step, manifest in manifests.items():
        assert manifest["stats"]["global_step"] == 2, (step, manifest["stats"])
        adapter = list(load_file(tmp_path / step / "model" / "adapter_model.safetensors"))
        assert any("lora_A" in k for k in adapter), (step, adapter[:3])
        assert not any(is_vision_tower(k) for k in adapter), (step, [k for k in adapter if is_vision_tower(k)][:3])


def test_the_compatibility_table_in_the_docs_is_this_matrix():
    """docs/models.md's table lists exactly the families tested here, each with its spec and processor class."""
    rows = [line.split("|")[1:-1] for line in (ROOT / "docs" / "models.md").read_text().splitlines()
            if line.startswith("| ") and "`tiny:" in line]
    specs = {cells[1].strip().strip("`"): cells[2] for cells in rows}
    assert sorted(specs) == sorted(spec for spec, _, _ in FAMILIES.values())
    for spec, processor, _ in FAMILIES.values():
        assert processor in specs[spec] or "the same" in specs[spec], (spec, processor, specs[spec])
