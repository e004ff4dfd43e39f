"""Loading policies (full checkpoints or LoRA adapters), formatting prompts, and batched generation.

Every function here takes model *folders*: specs like `tiny:llava` are resolved by `srpo run` and the CLI
(srpo/model_specs.py).

Security defaults live here: weights load from safetensors only and `trust_remote_code` is passed through explicitly
(off unless a recipe turns it on).
"""

from __future__ import annotations

import json
from pathlib import Path


def load_policy(path: str, *, trust_remote_code: bool = False, load_in_4bit: bool = False, merge_adapter=True,
                train_adapter: bool = False):
    """Model + processor from a full checkpoint or a LoRA adapter folder (merged into its base by default).

    A 4-bit base keeps its adapter unmerged: merging into NF4 weights re-quantizes them and rounds the learned update
    away. train_adapter=True loads an unmerged adapter trainable, for a training step that continues it (QLoRA DPO).
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = str(path)
    adapter_cfg = Path(path) / "adapter_config.json"
    base = json.loads(adapter_cfg.read_text())["base_model_name_or_path"] if adapter_cfg.exists() else path
    kwargs = dict(use_safetensors=True, trust_remote_code=trust_remote_code)
    if load_in_4bit:
        from trl import ModelConfig, get_quantization_config

        # TRL's NF4 config, plus what it has no field for: the modules kept in full precision. transformers 5 matches
        # skip patterns from the model root: "vision_tower" alone would silently not match.
        quantization = get_quantization_config(ModelConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           dtype="float32"))
        quantization.llm_int8_skip_modules = ["model.vision_tower", "model.visual", "model.vision_model",
                                              "model.multi_modal_projector", "model.connector",
                                              "lm_head"]
        kwargs.update(device_map="cpu" if not torch.cuda.is_available() else None, quantization_config=quantization)
    try:
        model = AutoModelForImageTextToText.from_pretrained(base, **kwargs)
    except ValueError as e:
        if "Unrecognized configuration class" not in str(e):
            raise
        model_type = json.loads((Path(base) / "config.json").read_text()).get("model_type", "?")
        raise ValueError(f"{base} is not a vision-language model (model_type {model_type!r}): srpo trains models that "
                         "load with AutoModelForImageTextToText (LLaVA, Qwen2-VL/2.5-VL, Idefics, ...). Point "
                         "run_model at a VLM folder.") from None
    if load_in_4bit:
        _disable_bnb_cpu_repack(model)
        if not torch.cuda.is_available():
            import importlib.util
            import logging

            if importlib.util.find_spec("kernels") is None:
                logging.getLogger("srpo.models").info(
                    "QLoRA on CPU: bitsandbytes' optional fast 4-bit kernel (package `kernels`) is not installed; "
                    "the portable path is used")
    if adapter_cfg.exists():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, path, is_trainable=train_adapter)
        if merge_adapter and not load_in_4bit:
            model = model.merge_and_unload()
    from srpo.model_families import register_processors

    register_processors()
    processor = AutoProcessor.from_pretrained(path if (Path(path) / "processor_config.json").exists() else base,
                                              trust_remote_code=trust_remote_code)
    return model, processor


def _disable_bnb_cpu_repack(model) -> None:
    # bitsandbytes on AVX512-BF16 CPUs repacks 4-bit weights on eval forwards; the next training step then fails.
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def user_message(query: str, images: bool | int) -> list[dict]:
    """The user turn: `images` placeholders (True = one; a count for a multi-image prompt), then the query."""
    content = [{"type": "image"}] * int(images) + [{"type": "text", "text": query}]
    return [{"role": "user", "content": content}]


def open_images(value) -> list:
    """RGB images of an `image` value (None, a path, or a multi-image list of paths), in order."""
    from PIL import Image

    from srpo.schema import image_paths

    return [Image.open(path).convert("RGB") for path in image_paths(value)]


def prompt_row(query: str, image, root) -> dict:
    """The prompt part of a TRL row ({images, prompt}) for a pair's `image` value (None, a path, or a multi-image list
    of paths) under `root`: one placeholder per image, in order."""
    from srpo.schema import join_images

    images = open_images(join_images(root, image))
    return {"images": images, "prompt": user_message(query, len(images))}


def as_image_list(image) -> list:
    """A prompt's images as a list: None -> [], one image -> [it], a list as it is."""
    return [] if image is None else list(image) if isinstance(image, list | tuple) else [image]


def assistant_message(text: str) -> list[dict]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def generate(model, processor, prompts: list[tuple[str, object]], *, max_new_tokens: int, k: int = 1,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
             batch_size: int | None = None, prefixes: list[str] | None = None,
             min_new_tokens: int = 0) -> list[list[str]]:
    """Batched generation: one left-padded forward per batch of prompts (all of them when batch_size is None), K
    sequences each (KV cache on). Every batch starts from `seed`.

    prompts: (query, PIL image, a list of PIL images for a multi-image prompt, or None). prefixes: per prompt, the
    start of the assistant's answer, which the K texts continue ("" for none); the returned texts are the
    continuations alone. min_new_tokens > 0 makes every text at least that long (benchmarks). Returns K texts per
    prompt, in order.
    """
    if batch_size and len(prompts) > batch_size:
        return [texts for i in range(0, len(prompts), batch_size)
                for texts in generate(model, processor, prompts[i:i + batch_size], max_new_tokens=max_new_tokens,
                                      k=k, do_sample=do_sample, temperature=temperature, top_p=top_p, seed=seed,
                                      prefixes=prefixes[i:i + batch_size] if prefixes is not None else None,
                                      min_new_tokens=min_new_tokens)]
    import torch

    tok = processor.tokenizer
    tok.padding_side = "left"
    images = [as_image_list(img) for _, img in prompts]
    texts = [processor.apply_chat_template(user_message(q, len(imgs)), add_generation_prompt=True, tokenize=False)
             for (q, _), imgs in zip(prompts, images, strict=True)]
    if prefixes is not None:
        texts = [text + prefix for text, prefix in zip(texts, prefixes, strict=True)]
    # One list of images per prompt (empty for a text-only one): Gemma 3's processor counts them per sample, and
    # every family accepts the nested form (measured: the same tensors as the flat list for LLaVA, LLaVA-NeXT,
    # Qwen2-VL and Qwen2.5-VL).
    inputs = processor(text=texts, images=images if any(images) else None, return_tensors="pt", padding=True)
    inputs = {k_: v.to(model.device) for k_, v in inputs.items()}
    torch.manual_seed(seed)
    gen_kwargs = dict(max_new_tokens=max_new_tokens, num_return_sequences=k, do_sample=do_sample,
                      pad_token_id=tok.pad_token_id, use_cache=True,
                      **({"min_new_tokens": min_new_tokens} if min_new_tokens else {}))
    if do_sample:
        gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    with torch.no_grad():
        out = model.generate(**inputs, **gen_kwargs)
    new = out[:, inputs["input_ids"].shape[1]:]
    decoded = tok.batch_decode(new, skip_special_tokens=True)
    return [[d.strip() for d in decoded[i * k:(i + 1) * k]] for i in range(len(prompts))]


def pair_inputs(data_dir: Path, pairs: list[dict]) -> list[tuple[str, object]]:
    """(query, its RGB images in order, or None for a text-only pair) for each pair row of a built data folder."""
    from srpo.schema import join_images

    return [(p["query"], open_images(join_images(data_dir, p["image"])) or None) for p in pairs]
