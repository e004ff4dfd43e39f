"""Loading policies, building the tiny test VLM offline, formatting prompts, and batched generation.

Security defaults live here: weights load from safetensors only and `trust_remote_code` is passed through explicitly
(off unless a recipe turns it on).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

TINY_PREFIX = "tiny:"
TINY_VERSION = "v2"  # bump when the tiny model's recipe changes, so cached builds are not reused


def cache_dir() -> Path:
    return Path(os.environ.get("SRPO_CACHE", Path.home() / ".cache" / "srpo"))


def resolve_model(spec: str, seed: int = 0) -> str:
    """A local folder path for a model spec; 'tiny:llava' builds (once, cached) the tiny offline test model.

    'tiny:world-base' is pretrained on the training combinations of the world split of `seed` (the run's seed), so
    each seed's held-out combinations are unseen by its own base model.
    """
    if spec.startswith(TINY_PREFIX):
        kind = spec[len(TINY_PREFIX):]
        # The tokenizer is trained on the world's texts, so the cache key follows them too.
        from srpo.world.teacher import corpus

        key = f"{TINY_VERSION}-{hashlib.sha256(chr(10).join(corpus()).encode()).hexdigest()[:8]}"
        if kind == "llava":
            out = cache_dir() / f"tiny-llava-{key}"
            if not (out / "config.json").exists():
                build_tiny_llava(out)
            return str(out)
        if kind == "world-base":
            from srpo.world.pretrain import PRETRAIN_VERSION, build_world_base

            out = cache_dir() / f"tiny-{PRETRAIN_VERSION}-s{seed}-{key}"
            if not (out / "config.json").exists():
                print(f"building the world's base model for seed {seed} (once; cached in {out}) ...", flush=True)
                build_world_base(out, seed=seed)
            return str(out)
        raise ValueError(f"unknown tiny model {spec!r}; the built-in ones are 'tiny:llava' (random weights) and "
                         "'tiny:world-base' (pretrained in the synthetic world)")
    path = Path(spec)
    if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        raise FileNotFoundError(
            f"model {spec!r} is not a local model folder (no config.json). srpo never downloads from a hub at run "
            "time: download the model first (e.g. `huggingface-cli download <repo> --local-dir <dir>`) and give "
            "the folder, or use 'tiny:llava' for the offline test model.")
    return str(path)


def build_tiny_tokenizer(vocab_size: int = 1024):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from srpo.world.teacher import corpus

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>",
                                                                        "<|im_end|>", "<image>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    generic = ["I'm sorry, but I cannot help with that request.", "Sure, here is how to do it step by step.",
               "The picture shows a red square and a blue circle.", "Please describe what you see in the image."]
    tok.train_from_iterator(corpus() * 3 + generic, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token=None, chat_template=LLAVA_CHAT_TEMPLATE,
                                   padding_side="right", extra_special_tokens={"image_token": "<image>"})


# LLaVA-style template with {% generation %} markers so TRL's assistant_only_loss can mask the prompt.
LLAVA_CHAT_TEMPLATE = (
    "{% macro render(content) %}{% if content is string %}{{ content }}{% else %}{% for part in content %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{% endmacro %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ render(message['content']) }}<|im_end|>"
    "{% endgeneration %}{{ '\\n' }}{% else %}{{ render(message['content']) }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_llava(out: Path, seed: int = 0, hidden: int = 64, layers: int = 2, vision_hidden: int = 32) -> None:
    """A random tiny LLaVA (SigLIP 32-d vision tower, 32 px images -> 16 image tokens; Qwen2 text model)."""
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    torch.manual_seed(seed)
    tok = build_tiny_tokenizer()
    text_config = dict(model_type="qwen2", vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=1024, bos_token_id=None,
                       eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                       pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"))
    vision_config = dict(model_type="siglip_vision_model", hidden_size=vision_hidden,
                         intermediate_size=2 * vision_hidden, num_hidden_layers=2, num_attention_heads=2,
                         image_size=32, patch_size=8)
    config = LlavaConfig(vision_config=vision_config, text_config=text_config,
                         image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="full",
                         vision_feature_layer=-1, projector_hidden_act="gelu", tie_word_embeddings=True)
    model = LlavaForConditionalGeneration(config)
    processor = LlavaProcessor(image_processor=SiglipImageProcessorPil(size={"height": 32, "width": 32}),
                               tokenizer=tok, patch_size=8, vision_feature_select_strategy="full",
                               chat_template=LLAVA_CHAT_TEMPLATE, image_token="<image>", num_additional_image_tokens=0)
    # Build into a temp folder and rename: a killed build never leaves a half model in the cache.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    try:
        os.replace(tmp, out)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)


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
        from transformers import BitsAndBytesConfig

        # transformers 5 matches skip patterns from the model root: "vision_tower" alone would silently not match.
        kwargs.update(device_map="cpu" if not torch.cuda.is_available() else None, quantization_config=(
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32,
                               llm_int8_skip_modules=["model.vision_tower", "model.visual",
                                                      "model.multi_modal_projector", "lm_head"])))
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
    if adapter_cfg.exists():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, path, is_trainable=train_adapter)
        if merge_adapter and not load_in_4bit:
            model = model.merge_and_unload()
    processor = AutoProcessor.from_pretrained(path if (Path(path) / "processor_config.json").exists() else base,
                                              trust_remote_code=trust_remote_code)
    return model, processor


def _disable_bnb_cpu_repack(model) -> None:
    # bitsandbytes on AVX512-BF16 CPUs repacks 4-bit weights on eval forwards; the next training step then fails.
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def user_message(query: str, has_image: bool) -> list[dict]:
    content = ([{"type": "image"}] if has_image else []) + [{"type": "text", "text": query}]
    return [{"role": "user", "content": content}]


def assistant_message(text: str) -> list[dict]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def generate(model, processor, prompts: list[tuple[str, object]], *, max_new_tokens: int, k: int = 1,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0) -> list[list[str]]:
    """Batched generation: one left-padded forward for all prompts, K sequences each (KV cache on).

    prompts: (query, PIL image or None). Returns K texts per prompt, in order.
    """
    import torch

    tok = processor.tokenizer
    tok.padding_side = "left"
    texts = [processor.apply_chat_template(user_message(q, img is not None), add_generation_prompt=True,
                                           tokenize=False) for q, img in prompts]
    images = [img for _, img in prompts if img is not None]
    inputs = processor(text=texts, images=images or None, return_tensors="pt", padding=True)
    inputs = {k_: v.to(model.device) for k_, v in inputs.items()}
    torch.manual_seed(seed)
    gen_kwargs = dict(max_new_tokens=max_new_tokens, num_return_sequences=k, do_sample=do_sample,
                      pad_token_id=tok.pad_token_id, use_cache=True)
    if do_sample:
        gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    with torch.no_grad():
        out = model.generate(**inputs, **gen_kwargs)
    new = out[:, inputs["input_ids"].shape[1]:]
    decoded = tok.batch_decode(new, skip_special_tokens=True)
    return [[d.strip() for d in decoded[i * k:(i + 1) * k]] for i in range(len(prompts))]


def pair_inputs(data_dir: Path, pairs: list[dict]) -> list[tuple[str, object]]:
    """(query, RGB image or None) for each pair row of a built data folder."""
    from PIL import Image

    return [(p["query"], Image.open(Path(data_dir) / p["image"]).convert("RGB") if p["image"] else None)
            for p in pairs]
