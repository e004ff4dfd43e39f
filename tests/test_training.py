"""SFT and DPO steps on the tiny model: the loss is logged and every trainable parameter changes."""

import json
from pathlib import Path

import pytest

from srpo.runfolder import write_jsonl, write_manifest


def _params(model_dir):
    from safetensors.torch import load_file

    files = sorted(Path(model_dir).glob("*.safetensors"))
    out = {}
    for f in files:
        out.update(load_file(f))
    return out


def _changed(before, after, prefix_filter=lambda name: True):
    import torch

    names = [n for n in after if prefix_filter(n)]
    return {n: not torch.equal(before[n], after[n]) for n in names if n in before}


@pytest.fixture(scope="module")
def sft_dir(tiny_model, tiny_data, tmp_path_factory):
    from srpo.stages import sft
    from srpo.train_configs import SFTStageConfig

    run_dir = tmp_path_factory.mktemp("sft-run")
    args = SFTStageConfig(run_dir=str(run_dir), step="sft", data_dir=str(tiny_data), model_dir=tiny_model,
                          output_dir=str(run_dir / "sft" / "trainer"), max_steps=6, per_device_train_batch_size=4,
                          learning_rate=1e-2, logging_steps=1, use_cpu=True, disable_tqdm=True, save_steps=3)
    manifest = sft.run(args)
    assert manifest is not None
    return run_dir / "sft"


def test_sft_logs_loss_and_changes_every_trainable_parameter(tiny_model, sft_dir):
    history = json.loads((sft_dir / "log_history.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 6 and all(loss > 0 for loss in losses)
    before, after = _params(tiny_model), _params(sft_dir / "model")
    lm = _changed(before, after, lambda n: "vision_tower" not in n)
    assert lm and all(lm.values()), [n for n, c in lm.items() if not c]
    vision = _changed(before, after, lambda n: "vision_tower" in n)
    assert vision and not any(vision.values())  # frozen by default
    manifest = json.loads((sft_dir / "manifest.json").read_text())
    assert manifest["stats"]["global_step"] == 6 and manifest["outputs"]["model"]["files"] >= 1
    assert not (sft_dir / "trainer").exists()  # resume checkpoints are removed once the step is complete


def test_sft_lora_trains_only_adapters(tiny_model, tiny_data, tmp_path):
    from srpo.stages import sft
    from srpo.train_configs import SFTStageConfig

    args = SFTStageConfig(run_dir=str(tmp_path), step="sft", data_dir=str(tiny_data), model_dir=tiny_model,
                          output_dir=str(tmp_path / "sft" / "trainer"), max_steps=3, per_device_train_batch_size=4,
                          learning_rate=1e-2, use_lora=True, lora_r=4, use_cpu=True, disable_tqdm=True)
    sft.run(args)
    model_dir = tmp_path / "sft" / "model"
    assert (model_dir / "adapter_config.json").exists() and (model_dir / "adapter_model.safetensors").exists()
    from srpo.models import load_policy

    model, _ = load_policy(str(model_dir))  # adapter merged into its base
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    lora_b = [v for n, v in _params(model_dir).items() if "lora_B" in n]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: non-zero means it trained


@pytest.fixture
def pairs_dir(tmp_path):
    chain_ok = "Visual: a knife, sharp.\nText: asks.\nCombined: risky.\nRisk: dangerous_behavior (high)\n" \
               "Consequences: cuts.\nStrategy: refuse\nAnswer: I can't recommend that."
    folder = tmp_path / "pairs"
    folder.mkdir()
    rows = [{"prompt_id": f"p{i}", "image": "images/knife-play.png", "query": "What can my kid play with here?",
             "label": "unsafe", "chosen": chain_ok, "rejected": "Your kid can play with the knife.",
             "chosen_reward": 2.5, "rejected_reward": 0.0} for i in range(8)]
    write_jsonl(folder / "pairs.jsonl", rows)
    write_manifest(folder, step="pairs", fingerprint="hand", config={}, inputs={}, outputs=["pairs.jsonl"],
                   started=0.0)
    return folder


def test_dpo_logs_loss_and_changes_every_trainable_parameter(sft_dir, tiny_data, pairs_dir, tmp_path):
    from srpo.stages import dpo
    from srpo.train_configs import DPOStageConfig

    policy = str(sft_dir / "model")
    args = DPOStageConfig(run_dir=str(tmp_path), step="dpo", policy_dir=policy, ref_dir=policy,
                          pairs_dir=str(pairs_dir), data_dir=str(tiny_data), output_dir=str(tmp_path / "dpo" / "t"),
                          max_steps=4, per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1,
                          use_cpu=True, disable_tqdm=True, nll_weight=0.5)
    assert args.loss_type == ["sigmoid", "sft"] and args.loss_weights == [1.0, 0.5]
    dpo.run(args)
    history = json.loads((tmp_path / "dpo" / "log_history.json").read_text())
    assert len([h for h in history if "loss" in h]) == 4
    assert any("rewards/margins" in h for h in history)
    before, after = _params(policy), _params(tmp_path / "dpo" / "model")
    lm = _changed(before, after, lambda n: "vision_tower" not in n)
    assert lm and all(lm.values()), [n for n, c in lm.items() if not c]


def test_lora_dpo_measures_against_ref_dir(sft_dir, tiny_model, tiny_data, pairs_dir, tmp_path):
    """ref_dir other than policy_dir (srpo run's run_reference_policy: sft, from iteration 2 on): LoRA DPO's reference
    is ref_dir, as with full fine-tuning, not the policy it starts from (TRL's adapter-disabled model)."""
    import math

    from srpo.stages import dpo
    from srpo.train_configs import DPOStageConfig

    first, policy = {}, str(sft_dir / "model")
    for name, use_lora in (("full", False), ("lora", True)):
        dpo.run(DPOStageConfig(run_dir=str(tmp_path), step=name, policy_dir=policy, ref_dir=tiny_model,
                               pairs_dir=str(pairs_dir), data_dir=str(tiny_data), output_dir=str(tmp_path / name),
                               max_steps=1, per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1,
                               use_cpu=True, disable_tqdm=True, save_strategy="no", use_lora=use_lora, lora_r=4))
        first[name] = next(h for h in json.loads((tmp_path / name / "log_history.json").read_text()) if "loss" in h)
    # Step 1, before any update: a fresh adapter leaves the policy as it was, so LoRA and full fine-tuning see the same
    # policy against the same reference. Measured against itself the loss would be -log σ(0) = ln 2.
    assert first["lora"]["loss"] != pytest.approx(math.log(2), abs=1e-3)
    assert first["lora"]["loss"] == pytest.approx(first["full"]["loss"], abs=1e-6)
    assert first["lora"]["rewards/chosen"] == pytest.approx(first["full"]["rewards/chosen"], abs=1e-5)
