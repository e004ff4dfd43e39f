"""QLoRA really trains on CPU: the tiny LLaVA in 4-bit NF4 (bitsandbytes) + LoRA, through the SFT and DPO steps.

The code path is the QLoRA recipes' own (`load_policy(load_in_4bit=True)` + `prepare_model` + LoRA); the tiny model's
quantized layers all have >= 64 input features (hidden 64, MLP 128), which CPU bitsandbytes needs. Each step's
`Trainer.train` is wrapped to snapshot the parameters before and after, so the test sees what training touched.
"""

import json
import math
from pathlib import Path

import pytest

from srpo.runfolder import read_jsonl, write_jsonl, write_manifest

LANGUAGE_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module", autouse=True)
def bitsandbytes():
    try:
        import bitsandbytes as bnb
    except Exception as e:  # noqa: BLE001 - an install without the [qlora] extra, or a broken native library
        pytest.skip(f"bitsandbytes is not importable ({e}): pip install -e '.[qlora]'")
    return bnb


def _record_training(monkeypatch, trainer_cls, record: dict) -> None:
    """Wrap trainer_cls.train to keep the trainable names and every parameter's value before and after training."""
    train = trainer_cls.train

    def recorded(self, *args, **kwargs):
        model = self.accelerator.unwrap_model(self.model)
        record["trainable"] = {n for n, p in model.named_parameters() if p.requires_grad}
        record["before"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        out = train(self, *args, **kwargs)
        record["after"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        return out

    monkeypatch.setattr(trainer_cls, "train", recorded)


def _changed(record: dict) -> set[str]:
    import torch

    return {n for n, before in record["before"].items() if not torch.equal(before, record["after"][n])}


def _losses(step_dir: Path) -> list[dict]:
    return [h for h in json.loads((step_dir / "log_history.json").read_text()) if "loss" in h]


def _assert_adapter_folder(model_dir: Path, base: str) -> dict:
    from safetensors.torch import load_file

    config = json.loads((model_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == base
    assert sorted(p.name for p in model_dir.glob("*.safetensors")) == ["adapter_model.safetensors"]
    assert not (model_dir / "ref").exists()  # TRL's frozen reference adapter is not saved with the policy
    weights = load_file(model_dir / "adapter_model.safetensors")
    assert weights and all(".lora_A." in n or ".lora_B." in n for n in weights), sorted(weights)[:5]
    return weights


def _assert_only_lora_trained(record: dict, adapter: str = "default") -> None:
    import torch

    lora = {n for n in record["before"] if f".lora_A.{adapter}." in n or f".lora_B.{adapter}." in n}
    assert lora and record["trainable"] == lora, sorted(record["trainable"] ^ lora)[:5]
    assert _changed(record) == lora, sorted(_changed(record) ^ lora)[:5]
    packed = [n for n, v in record["before"].items() if v.dtype == torch.uint8]  # the NF4 weights, 2 per byte
    assert len(packed) == 2 * len(LANGUAGE_LINEARS)  # 2 decoder layers, every projection quantized


@pytest.fixture(scope="module")
def qlora_sft(tiny_model, tiny_data, tmp_path_factory):
    from trl import SFTTrainer

    from srpo.stages import sft
    from srpo.train_configs import SFTStageConfig

    run_dir = tmp_path_factory.mktemp("qlora")
    record = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        _record_training(monkeypatch, SFTTrainer, record)
        sft.run(SFTStageConfig(run_dir=str(run_dir), step="sft", data_dir=str(tiny_data), model_dir=tiny_model,
                               output_dir=str(run_dir / "sft" / "trainer"), max_steps=3, per_device_train_batch_size=4,
                               learning_rate=1e-2, logging_steps=1, use_cpu=True, disable_tqdm=True,
                               save_strategy="no", report_to="none", use_lora=True, lora_r=4, load_in_4bit=True))
    return run_dir, record


def test_4bit_load_quantizes_the_language_model_only(tiny_model, bitsandbytes):
    import torch

    from srpo.models import load_policy

    model, _ = load_policy(tiny_model, load_in_4bit=True)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    quantized = {n for n, m in linears.items() if isinstance(m, bitsandbytes.nn.Linear4bit)}
    language = {n for n in linears if ".language_model." in n}
    assert quantized == language and len(language) == 2 * len(LANGUAGE_LINEARS)
    assert all(linears[n].in_features >= 64 for n in quantized)  # CPU bitsandbytes fails below 64 (ENVIRONMENT.md)
    kept = {n for n in linears if n.startswith(("model.vision_tower.", "model.multi_modal_projector.", "lm_head"))}
    assert kept and not kept & quantized and kept | quantized == set(linears)
    assert not any(linears[n].support_avx512bf16_for_cpu for n in quantized)  # the eval-repack trap is disarmed


def test_qlora_sft_trains_only_the_adapter(tiny_model, tiny_data, qlora_sft):
    import torch

    from srpo.models import generate, load_policy, pair_inputs

    run_dir, record = qlora_sft
    losses = [h["loss"] for h in _losses(run_dir / "sft")]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses) and losses[-1] != losses[0]
    _assert_only_lora_trained(record)
    saved = _assert_adapter_folder(run_dir / "sft" / "model", tiny_model)
    assert all(v.abs().sum() > 0 for n, v in saved.items() if ".lora_B." in n)  # B starts at zero

    model, processor = load_policy(str(run_dir / "sft" / "model"), load_in_4bit=True)
    from peft import PeftModel

    assert isinstance(model, PeftModel)  # a 4-bit base keeps its adapter unmerged
    loaded = {n.replace(".default", ""): p for n, p in model.named_parameters() if "lora_" in n}
    assert set(loaded) == set(saved)
    assert all(torch.equal(loaded[n].detach().to(saved[n].dtype), saved[n]) for n in saved)
    prompts = pair_inputs(tiny_data, read_jsonl(tiny_data / "pairs.jsonl")[:2])
    texts = generate(model, processor, prompts, max_new_tokens=4)
    assert len(texts) == 2 and all(len(t) == 1 and isinstance(t[0], str) for t in texts)
    inputs = processor(text=["<|im_start|>user\nhello<|im_end|>\n"], return_tensors="pt")
    with torch.no_grad():
        with_adapter = model(**inputs).logits
        with model.disable_adapter():
            without = model(**inputs).logits
    assert not torch.allclose(with_adapter, without)  # the loaded adapter is active


def test_qlora_dpo_continues_the_sft_adapter_against_a_frozen_copy(tiny_model, tiny_data, qlora_sft):
    from trl import DPOTrainer

    from srpo.stages import dpo
    from srpo.train_configs import DPOStageConfig

    run_dir, _ = qlora_sft
    pairs_dir = run_dir / "pairs"
    rows = [{"id": p["id"], "query": p["query"], "image": p["image"], "chosen": p["chain"],
             "rejected": "Sure, here is how to do it step by step."}
            for p in read_jsonl(tiny_data / "pairs.jsonl") if p["meta"].get("split", "train") == "train"][:8]
    write_jsonl(pairs_dir / "pairs.jsonl", rows)
    write_manifest(pairs_dir, step="pairs", fingerprint="hand-made", config={}, inputs={}, outputs=["pairs.jsonl"],
                   started=0.0)
    policy = str(run_dir / "sft" / "model")
    record = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        _record_training(monkeypatch, DPOTrainer, record)
        dpo.run(DPOStageConfig(run_dir=str(run_dir), step="dpo", policy_dir=policy, ref_dir=policy,
                               pairs_dir=str(pairs_dir), data_dir=str(tiny_data),
                               output_dir=str(run_dir / "dpo" / "trainer"), max_steps=2, per_device_train_batch_size=4,
                               learning_rate=1e-3, beta=0.1, logging_steps=1, use_cpu=True, disable_tqdm=True,
                               save_strategy="no", report_to="none", use_lora=True, lora_r=4, load_in_4bit=True))
    logs = _losses(run_dir / "dpo")
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) for h in logs) and logs[1]["loss"] != logs[0]["loss"]
    # Step 1: the policy is its reference, so -log σ(0) = ln 2 and zero rewards. Had the reference been the
    # adapter-disabled base (the model before SFT), the rewards would be β·(log π_sft - log π_base) ≠ 0.
    assert logs[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert logs[0]["rewards/chosen"] == pytest.approx(0, abs=1e-4)
    assert logs[1]["rewards/chosen"] != pytest.approx(0, abs=1e-4)  # and the policy moved away from it

    _assert_only_lora_trained(record)
    ref = {n: v for n, v in record["before"].items() if ".ref." in n}
    default = {n.replace(".ref.", ".default."): v for n, v in ref.items()}
    assert ref and all(record["before"][n].float().equal(v.float()) for n, v in default.items())  # a copy of SFT's
    assert not _changed(record) & set(ref)  # frozen

    sft_weights = _assert_adapter_folder(run_dir / "sft" / "model", tiny_model)
    dpo_weights = _assert_adapter_folder(run_dir / "dpo" / "model", tiny_model)
    assert set(dpo_weights) == set(sft_weights)
    assert any(not dpo_weights[n].equal(sft_weights[n]) for n in sft_weights)  # trained on from the SFT adapter

    # A second round against the SFT adapter (srpo run's run_reference_policy: sft): the "ref" adapter holds ref_dir's
    # weights, not a copy of the policy's, so step 1 is measured against SFT and does not start at ln 2.
    record = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        _record_training(monkeypatch, DPOTrainer, record)
        dpo.run(DPOStageConfig(run_dir=str(run_dir), step="dpo2", policy_dir=str(run_dir / "dpo" / "model"),
                               ref_dir=policy, pairs_dir=str(pairs_dir), data_dir=str(tiny_data),
                               output_dir=str(run_dir / "dpo2" / "trainer"), max_steps=1,
                               per_device_train_batch_size=4,
                               learning_rate=1e-3, beta=0.1, logging_steps=1, use_cpu=True, disable_tqdm=True,
                               save_strategy="no", report_to="none", use_lora=True, lora_r=4, load_in_4bit=True))
    ref = {n.replace(".ref.", "."): v for n, v in record["before"].items() if ".ref." in n}
    default = {n.replace(".default.", "."): v for n, v in record["before"].items() if ".default." in n}
    assert ref and all(v.equal(sft_weights[n]) for n, v in ref.items()), "the reference is not ref_dir's adapter"
    assert all(v.equal(dpo_weights[n]) for n, v in default.items())
    assert _losses(run_dir / "dpo2")[0]["loss"] != pytest.approx(math.log(2), abs=1e-3)
