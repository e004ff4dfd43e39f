"""A Qwen2.5-VL-7B-shaped random model on a GPU: LoRA DPO step time and MFU in bf16, and vLLM against HF generate.

    python benchmarks/gpu_step.py                       # on a GPU: the 7B shape, bf16, LoRA r=64, DPO
    python benchmarks/gpu_step.py --vllm                # also sampling: vLLM against srpo's HF generate, same prompts
    python benchmarks/gpu_step.py --shape tiny --steps 2 --warmup 1    # the same code path on a CPU, in seconds

The model is built from Qwen2.5-VL-7B-Instruct's dimensions (28 text layers of 3584, 32 vision blocks of 1280) with
random weights, straight on the device; nothing is downloaded. Its processor is the tiny Qwen2.5-VL's (srpo's
image-only processor and a small tokenizer), with a fixed pixel budget so that every image is the same number of tokens
(--pixels, default 448 x 448: 256 image tokens). The DPO step is srpo's: its DPO config, `prepare_model` (vision tower
frozen) and `lora_config` (r=64 on the language model's projections), TRL's DPOTrainer, synthetic pairs (one image,
a query, a chosen and a rejected answer of --answer-tokens tokens each), gradient checkpointing.

Printed: the median step time after --warmup steps, tokens per second, and MFU = model FLOPs per second over
--peak-tflops (989 = H100/H200 dense bf16). Model FLOPs of a LoRA DPO step, per token of the chosen and rejected
sequences: 2N (the reference's forward, the adapter disabled) + 2N (the policy's forward) + 2N (its recomputation under
checkpointing) + 2N (the backward to the activations; frozen weights get no gradient), i.e. 8N, with N the language
model's parameters without the embeddings; the vision tower's and LoRA's own FLOPs are left out, so MFU is a lower
bound. With --vllm the random model is saved once (safetensors) and both samplers generate --samples completions of
exactly --new-tokens tokens for the same --prompts image prompts; the last line is `vllm/hf: N.NNx` (throughput ratio).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Qwen2.5-VL-7B-Instruct's dimensions (its config.json); `tiny` keeps the code path and shrinks everything.
SHAPES = {
    "7b": dict(text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                         num_key_value_heads=4, vocab_size=152064, mrope_section=[16, 24, 24]),
               vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                           window_size=112, fullatt_block_indexes=[7, 15, 23, 31])),
    "tiny": dict(text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=0, mrope_section=[2, 3, 3]),
                 vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                             window_size=56, fullatt_block_indexes=[1])),
}


def build(shape: str, pixels: int, device: str, dtype):
    """(random model on `device`, processor with a fixed pixel budget) of the given shape."""
    import torch
    from transformers import AutoConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from srpo.model_families import processor_with
    from srpo.model_specs import resolve_model

    tiny = resolve_model("tiny:qwen2.5-vl")
    processor = processor_with(tiny, {"min_pixels": pixels, "max_pixels": pixels})
    base = AutoConfig.from_pretrained(tiny)
    dims = SHAPES[shape]
    text = {k: v for k, v in dims["text"].items() if k != "mrope_section"}
    text["vocab_size"] = max(text["vocab_size"], len(processor.tokenizer))
    tc = base.text_config
    text_config = {**text, "max_position_embeddings": 32768, "bos_token_id": tc.bos_token_id,
                   "eos_token_id": tc.eos_token_id, "pad_token_id": tc.pad_token_id,
                   "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
                                       "mrope_section": dims["text"]["mrope_section"]}}
    vision_config = {**dims["vision"], "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
    config = Qwen2_5_VLConfig(text_config=text_config, vision_config=vision_config,
                              image_token_id=base.image_token_id, video_token_id=base.video_token_id,
                              vision_start_token_id=base.vision_start_token_id,
                              vision_end_token_id=base.vision_end_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    return model, processor


def text_params(model) -> int:
    """The language model's parameters without its embeddings (the N of the FLOPs count)."""
    lm = model.model.language_model
    return sum(p.numel() for n, p in lm.named_parameters() if "embed" not in n)


def synthetic_pairs(processor, n: int, answer_tokens: int, pixels: int, seed: int = 0) -> list[dict]:
    import random

    from PIL import Image

    from srpo.models import assistant_message, user_message

    rng = random.Random(seed)
    vocab = [w for w in processor.tokenizer.get_vocab() if w.isalpha() and len(w) > 2] or ["word"]
    side = int(pixels ** 0.5)

    def answer() -> str:
        return " ".join(rng.choice(vocab) for _ in range(answer_tokens))

    rows = []
    for i in range(n):
        image = Image.frombytes("RGB", (side, side), bytes(rng.getrandbits(8) for _ in range(side * side * 3)))
        rows.append({"images": [image], "prompt": user_message(f"What should I do with this, case {i}?", True),
                     "chosen": assistant_message(answer()), "rejected": assistant_message(answer())})
    return rows


def dpo_step_times(model, processor, rows, args, device: str) -> tuple[list[float], dict]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOTrainer

    from srpo.train_configs import DPOStageConfig
    from srpo.training import check_truncation, lora_config, prepare_model

    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            if device == "cuda":
                import torch

                torch.cuda.synchronize()
            marks.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        cfg = DPOStageConfig(output_dir=tmp, run_dir=tmp, step="dpo", max_steps=args.warmup + args.steps,
                             per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
                             learning_rate=5e-6, beta=0.1, bf16=device == "cuda", use_cpu=device != "cuda",
                             gradient_checkpointing=True, use_lora=True, lora_r=64, lora_alpha=128,
                             freeze_vision_tower=True, save_strategy="no", logging_steps=1, report_to="none",
                             disable_tqdm=True)
        model = prepare_model(model, cfg)
        trainer = DPOTrainer(model=model, ref_model=None, args=cfg, train_dataset=Dataset.from_list(rows),
                             processing_class=processor, peft_config=lora_config(cfg), callbacks=[Clock()])
        start = time.perf_counter()
        trainer.train()
    steps = [b - a for a, b in zip([start, *marks[:-1]], marks, strict=True)][args.warmup:]
    fit = check_truncation(processor, rows[:4], ["r"] * 4, 10**9)
    return steps, fit


def sampling(args) -> None:
    """vLLM against srpo's HF generate on the same image prompts, every completion exactly --new-tokens long."""
    import torch
    from PIL import Image
    from vllm import LLM, SamplingParams

    from srpo.models import generate, user_message

    model, processor = build(args.shape, args.pixels, "cuda", torch.bfloat16)  # a fresh one: DPO added adapters
    side = int(args.pixels ** 0.5)
    prompts = [(f"Describe picture {i}.", Image.new("RGB", (side, side), (i * 37 % 256, 90, 160)))
               for i in range(args.prompts)]
    start = time.perf_counter()
    generate(model, processor, prompts, max_new_tokens=args.new_tokens, k=args.samples, do_sample=True,
             batch_size=args.sample_batch, min_new_tokens=args.new_tokens)
    torch.cuda.synchronize()
    hf = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "model"
        model.save_pretrained(saved)
        processor.save_pretrained(saved)
        del model
        torch.cuda.empty_cache()
        llm = LLM(model=str(saved), max_model_len=4096, limit_mm_per_prompt={"image": 1}, seed=0)
        requests = [{"prompt": processor.apply_chat_template(user_message(q, True), add_generation_prompt=True,
                                                             tokenize=False), "multi_modal_data": {"image": im}}
                    for q, im in prompts]
        params = SamplingParams(n=args.samples, temperature=1.0, max_tokens=args.new_tokens, ignore_eos=True, seed=0)
        start = time.perf_counter()
        llm.generate(requests, params, use_tqdm=False)
        vllm = time.perf_counter() - start
    tokens = args.prompts * args.samples * args.new_tokens
    print(f"sampling: {args.prompts} prompts x {args.samples} samples x {args.new_tokens} tokens")
    print(f"  hf generate (batch {args.sample_batch}): {hf:.1f} s, {tokens / hf:,.0f} tokens/s")
    print(f"  vLLM: {vllm:.1f} s, {tokens / vllm:,.0f} tokens/s")
    print(f"vllm/hf: {hf / vllm:.2f}x")


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.2f}M"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    ap.add_argument("--steps", type=int, default=6, help="timed DPO steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    ap.add_argument("--batch", type=int, default=2, help="pairs per step")
    ap.add_argument("--pixels", type=int, default=448 * 448, help="pixels per image (fixed: min = max)")
    ap.add_argument("--answer-tokens", type=int, default=300)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak")
    ap.add_argument("--vllm", action="store_true", help="also time vLLM against HF generate")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--sample-batch", type=int, default=16)
    args = ap.parse_args(argv)

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    t0 = time.perf_counter()
    model, processor = build(args.shape, args.pixels, device, dtype)
    n = text_params(model)
    total = sum(p.numel() for p in model.parameters())
    print(f"model: Qwen2.5-VL {args.shape} shape, random weights, {_count(total)} parameters ({_count(n)} in the "
          f"language model's blocks), {dtype}, {device}, built in {time.perf_counter() - t0:.0f} s")
    rows = synthetic_pairs(processor, args.batch * (args.warmup + args.steps), args.answer_tokens, args.pixels)
    steps, fit = dpo_step_times(model, processor, rows, args, device)
    step = statistics.median(steps)
    tokens = args.batch * fit["longest_sequence"] * 2  # chosen and rejected, each about the longest measured
    flops = 8 * n * tokens
    print(f"dpo step (LoRA r=64, batch {args.batch}, ~{fit['longest_sequence']} tokens a sequence, gradient "
          f"checkpointing): median {step:.3f} s over {len(steps)} steps, {tokens / step:,.0f} tokens/s")
    if device == "cuda":
        print(f"  peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        print(f"mfu: {flops / step / (args.peak_tflops * 1e12):.1%} (8N per token, N = {_count(n)}; peak "
              f"{args.peak_tflops:g} TFLOP/s)")
    else:
        print("mfu: not computed on a CPU (no peak to compare with)")
    if args.vllm:
        if device != "cuda":
            print("vllm: needs a GPU; skipped")
        else:
            del model
            torch.cuda.empty_cache()
            sampling(args)


if __name__ == "__main__":
    main()
