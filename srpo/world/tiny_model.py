"""The tiny offline VLM: a byte-level BPE tokenizer trained on the world's texts and a random tiny LLaVA.

Built locally in about a second, never downloaded: the test fixture (`tiny:llava`) and the starting point of the
world's base-model pretraining (srpo/world/pretrain.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def build_tiny_tokenizer(vocab_size: int = 1024, world: str = "small", family: str = "llava"):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from srpo.world.teacher import corpus

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]
    if family == "qwen2-vl":
        special += ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    if family == "llava-onevision":
        special += ["<video>"]
    if family in ("idefics3", "smolvlm"):
        special += ["<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]
    if family == "internvl":
        special += ["<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    if family == "gemma3":
        special = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                   "<end_of_image>", "<image_soft_token>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    generic = ["I'm sorry, but I cannot help with that request.", "Sure, here is how to do it step by step.",
               "The picture shows a red square and a blue circle.", "Please describe what you see in the image."]
    tok.train_from_iterator(corpus(world) * 3 + generic, trainer=trainer)
    if family == "gemma3":
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<end_of_turn>",
                                       pad_token="<pad>", unk_token=None, chat_template=GEMMA3_CHAT_TEMPLATE,
                                       padding_side="right",
                                       extra_special_tokens={"boi_token": "<start_of_image>",
                                                             "eoi_token": "<end_of_image>",
                                                             "image_token": "<image_soft_token>"})
    if family == "qwen2-vl":
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>",
                                       pad_token="<|endoftext|>", unk_token=None, chat_template=QWEN_CHAT_TEMPLATE,
                                       padding_side="right",
                                       extra_special_tokens={"image_token": "<|image_pad|>",
                                                             "video_token": "<|video_pad|>"})
    if family == "internvl":
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>",
                                       pad_token="<|endoftext|>", unk_token=None,
                                       chat_template=LLAVA_CHAT_TEMPLATE.replace("<image>", "<IMG_CONTEXT>"),
                                       padding_side="right",
                                       extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>",
                                                             "context_image_token": "<IMG_CONTEXT>",
                                                             "video_token": "<video>"})
    extra = {"image_token": "<image>", **({"video_token": "<video>"} if family == "llava-onevision" else {})}
    if family in ("idefics3", "smolvlm"):
        extra.update(fake_image_token="<fake_token_around_image>", global_image_token="<global-img>",
                     end_of_utterance_token="<end_of_utterance>")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token=None, chat_template=LLAVA_CHAT_TEMPLATE,
                                   padding_side="right", extra_special_tokens=extra)


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


# Qwen2-VL's layout (an image is <|vision_start|><|image_pad|><|vision_end|>, the processor expands the pad to the
# image's grid), with the same {% generation %} markers.
QWEN_CHAT_TEMPLATE = (
    "{% macro render(content) %}{% if content is string %}{{ content }}{% else %}{% for part in content %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}{% endmacro %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ render(message['content']) }}<|im_end|>"
    "{% endgeneration %}{{ '\\n' }}{% else %}{{ render(message['content']) }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# Gemma 3's turns (<start_of_turn>user / model) with its image marker, which the processor expands to
# <start_of_image> + the image's soft tokens + <end_of_image>; the same {% generation %} markers.
GEMMA3_CHAT_TEMPLATE = (
    "{% macro render(content) %}{% if content is string %}{{ content }}{% else %}{% for part in content %}"
    "{% if part['type'] == 'image' %}<start_of_image>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{% endmacro %}"
    "{% for message in messages %}<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}"
    "\n{% if message['role'] == 'assistant' %}{% generation %}{{ render(message['content']) }}<end_of_turn>"
    "{% endgeneration %}{{ '\\n' }}{% else %}{{ render(message['content']) }}<end_of_turn>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def build_tiny_gemma3(out: Path, seed: int = 0, hidden: int = 64, layers: int = 2, world: str = "small") -> None:
    """A random tiny Gemma 3: a SigLIP vision tower (32 px images, 8 px patches) pooled to 4 soft tokens per image,
    a Gemma 3 text model with sliding-window layers."""
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    torch.manual_seed(seed)
    tok = build_tiny_tokenizer(world=world, family="gemma3")
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<pad>", "<bos>", "<end_of_turn>", "<start_of_image>",
                                                     "<end_of_image>", "<image_soft_token>")}
    text_config = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4,
                       max_position_embeddings=1024, sliding_window=64, bos_token_id=ids["<bos>"],
                       eos_token_id=ids["<end_of_turn>"], pad_token_id=ids["<pad>"])
    vision_config = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, image_size=32, patch_size=8)
    config = Gemma3Config(text_config=text_config, vision_config=vision_config, mm_tokens_per_image=4,
                          boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"],
                          image_token_index=ids["<image_soft_token>"], tie_word_embeddings=True)
    model = Gemma3ForConditionalGeneration(config)
    processor = Gemma3Processor(image_processor=Gemma3ImageProcessorPil(size={"height": 32, "width": 32}),
                                tokenizer=tok, chat_template=GEMMA3_CHAT_TEMPLATE, image_seq_length=4)
    _save(model, processor, out)


def build_tiny_qwen2_vl(out: Path, seed: int = 0, hidden: int = 64, layers: int = 2, world: str = "small",
                        version: str = "2") -> None:
    """A random tiny Qwen2-VL, Qwen2.5-VL (version "2.5": its windowed-attention vision tower) or Qwen3-VL (version
    "3": 16 px patches, deepstack features, interleaved mrope): a 32-d vision tower, patches merged 2x2 (56-128 px
    images -> 4-16 image tokens), saved with srpo's image-only processor (srpo/model_families.py) so it loads without
    torchvision."""
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from srpo.model_families import Qwen2VLImageOnlyProcessor, Qwen3VLImageOnlyProcessor

    torch.manual_seed(seed)
    tok = build_tiny_tokenizer(world=world, family="qwen2-vl")
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                     "<|vision_end|>", "<|im_end|>", "<|endoftext|>")}
    head_dim = hidden // 4
    text_config = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=2048, bos_token_id=None, eos_token_id=ids["<|im_end|>"],
                       pad_token_id=ids["<|endoftext|>"],
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                        "mrope_section": _mrope_section(head_dim)})
    tokens = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                  tie_word_embeddings=True)
    if version == "2":
        vision_config = dict(depth=2, embed_dim=32, hidden_size=hidden, num_heads=2, mlp_ratio=2, patch_size=14,
                             spatial_merge_size=2, temporal_patch_size=2)
        model = Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=text_config, vision_config=vision_config,
                                                              **tokens))
    elif version == "2.5":
        vision_config = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                             patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                             fullatt_block_indexes=[1])
        model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text_config,
                                                                    vision_config=vision_config, **tokens))
    else:
        text_config["head_dim"] = head_dim
        text_config["rope_parameters"]["mrope_interleaved"] = True
        vision_config = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                             patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16,
                             deepstack_visual_indexes=[0])
        model = Qwen3VLForConditionalGeneration(Qwen3VLConfig(text_config=text_config, vision_config=vision_config,
                                                              **tokens))
        processor = Qwen3VLImageOnlyProcessor(
            image_processor=Qwen2VLImageProcessorPil(min_pixels=64 * 64, max_pixels=128 * 128, patch_size=16,
                                                     merge_size=2),
            tokenizer=tok, chat_template=QWEN_CHAT_TEMPLATE)
        _save(model, processor, out)
        return
    processor = Qwen2VLImageOnlyProcessor(
        image_processor=Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112), tokenizer=tok,
        chat_template=QWEN_CHAT_TEMPLATE)
    _save(model, processor, out)


def _mrope_section(head_dim: int) -> list[int]:
    """Qwen2-VL's multimodal rotary sections (time, height, width): they must sum to head_dim / 2."""
    half = head_dim // 2
    t = half // 4
    hw = (half - t) // 2
    return [t, hw, half - t - hw]


def _save(model, processor, out: Path) -> None:
    # Build into a temp folder and rename: a killed build never leaves a half model in the cache.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    try:
        os.replace(tmp, out)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)


def _llava_configs(tok, hidden: int, layers: int, vision_hidden: int) -> tuple[dict, dict]:
    """The LLaVA families' Qwen2 text model and SigLIP vision tower (32 px images, 8 px patches)."""
    text_config = dict(model_type="qwen2", vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=1024, bos_token_id=None,
                       eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                       pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"))
    vision_config = dict(model_type="siglip_vision_model", hidden_size=vision_hidden,
                         intermediate_size=2 * vision_hidden, num_hidden_layers=2, num_attention_heads=2,
                         image_size=32, patch_size=8)
    return text_config, vision_config


def build_tiny_llava_next(out: Path, seed: int = 0, hidden: int = 64, layers: int = 2, vision_hidden: int = 32,
                          world: str = "small") -> None:
    """A random tiny LLaVA-NeXT: the LLaVA one's towers with anyres tiling (grids of 32 px tiles up to 64 x 64: the
    base view plus one to four tiles, 16 tokens each, and a newline token per tile row)."""
    import torch
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    torch.manual_seed(seed)
    tok = build_tiny_tokenizer(world=world)
    text_config, vision_config = _llava_configs(tok, hidden, layers, vision_hidden)
    text_config["max_position_embeddings"] = 2048
    grid = [[32, 32], [32, 64], [64, 32], [64, 64]]
    config = LlavaNextConfig(vision_config=vision_config, text_config=text_config,
                             image_token_id=tok.convert_tokens_to_ids("<image>"),
                             vision_feature_select_strategy="full", vision_feature_layer=-1, image_grid_pinpoints=grid,
                             tie_word_embeddings=True)
    model = LlavaNextForConditionalGeneration(config)
    image_processor = LlavaNextImageProcessorPil(size={"height": 32, "width": 32},
                                                 crop_size={"height": 32, "width": 32}, image_grid_pinpoints=grid,
                                                 do_center_crop=False)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tok, patch_size=8,
                                   vision_feature_select_strategy="full", chat_template=LLAVA_CHAT_TEMPLATE,
                                   image_token="<image>", num_additional_image_tokens=0)
    _save(model, processor, out)


def build_tiny_llava_onevision(out: Path, seed: int = 0, hidden: int = 64, layers: int = 2, vision_hidden: int = 32,
                               world: str = "small") -> None:
    """A random tiny LLaVA-OneVision: the LLaVA towers with OneVision's anyres tiling (32 px tiles up to 64 x 64),
    saved with srpo's image-only processor (srpo/model_families.py) so it loads without torchvision."""
    import torch
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    from srpo.model_families import LlavaOnevisionImageOnlyProcessor

    torch.manual_seed(seed)
    tok = build_tiny_tokenizer(world=world, family="llava-onevision")
    text_config, vision_config = _llava_configs(tok, hidden, layers, vision_hidden)
    text_config["max_position_embeddings"] = 2048
    grid = [[32, 32], [32, 64], [64, 32], [64, 64]]
    config = LlavaOnevisionConfig(vision_config=vision_config, text_config=text_config,
                                  image_token_id=tok.convert_tokens_to_ids("<image>"),
                                  video_token_id=tok.convert_tokens_to_ids("<video>"),
                                  vision_feature_select_strategy="full", vision_feature_layer=-1,
                                  image_grid_pinpoints=grid, vision_aspect_ratio="anyres_max_9",
                                  tie_word_embeddings=True)
    model = LlavaOnevisionForConditionalGeneration(config)
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": 32, "width": 32}, image_grid_pinpoints=grid)
    processor = LlavaOnevisionImageOnlyProcessor(image_processor=image_processor, tokenizer=tok,
                                                 num_image_tokens=16, vision_feature_select_strategy="full",
                                                 chat_template=LLAVA_CHAT_TEMPLATE,
                                                 vision_aspect_ratio="anyres_max_9")
    _save(model, processor, out)


def build_tiny_idefics3(out: Path, seed: int = 0, hidden: int = 64, layers: int = 2, world: str = "small",
                        family: str = "idefics3") -> None:
    """A random tiny Idefics3 (the SmolVLM architecture): a SigLIP-like vision model (32 px images, 8 px patches), a
    pixel-shuffle connector (scale 2: 4 tokens per image) and a Llama text model; no image splitting.

    family="smolvlm": the same architecture under SmolVLM's own model type and image processor, saved with srpo's
    image-only SmolVLM processor (the stock one demands a video processor)."""
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
    )
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    from srpo.model_families import SmolVLMImageOnlyProcessor

    config_cls, model_cls, image_cls, processor_cls = {
        "idefics3": (Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil, Idefics3Processor),
        "smolvlm": (SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessorPil,
                    SmolVLMImageOnlyProcessor)}[family]
    torch.manual_seed(seed)
    tok = build_tiny_tokenizer(world=world, family=family)
    pad, eos = tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|im_end|>")
    text_config = dict(model_type="llama", vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=1024, bos_token_id=None, eos_token_id=eos, pad_token_id=pad)
    vision_config = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         image_size=32, patch_size=8)
    config = config_cls(text_config=text_config, vision_config=vision_config,
                        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2,
                        tie_word_embeddings=True, pad_token_id=pad)
    model = model_cls(config)
    image_processor = image_cls(do_image_splitting=False, size={"longest_edge": 32},
                                max_image_size={"longest_edge": 32})
    processor = processor_cls(image_processor=image_processor, tokenizer=tok, image_seq_len=4,
                              chat_template=LLAVA_CHAT_TEMPLATE)
    _save(model, processor, out)


def build_tiny_internvl(out: Path, seed: int = 0, hidden: int = 64, layers: int = 2, world: str = "small") -> None:
    """A random tiny InternVL (InternViT-like vision model: 32 px images, 8 px patches, pixel shuffle 0.5 -> 4 tokens
    per tile; a Qwen2 text model); GOT-OCR2's image processor, no tiling; saved with srpo's image-only InternVL
    processor (the stock one demands a video processor)."""
    import torch
    from transformers import InternVLConfig, InternVLForConditionalGeneration
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    from srpo.model_families import InternVLImageOnlyProcessor

    torch.manual_seed(seed)
    tok = build_tiny_tokenizer(world=world, family="internvl")
    pad, eos = tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|im_end|>")
    text_config = dict(model_type="qwen2", vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=1024, bos_token_id=None, eos_token_id=eos, pad_token_id=pad)
    vision_config = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         image_size=[32, 32], patch_size=[8, 8])
    config = InternVLConfig(text_config=text_config, vision_config=vision_config,
                            image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=4,
                            downsample_ratio=0.5, tie_word_embeddings=True)
    model = InternVLForConditionalGeneration(config)
    image_processor = GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, crop_to_patches=False)
    processor = InternVLImageOnlyProcessor(image_processor=image_processor, tokenizer=tok, image_seq_length=4,
                                           chat_template=tok.chat_template)
    _save(model, processor, out)


def build_tiny_llava(out: Path, seed: int = 0, hidden: int = 64, layers: int = 2, vision_hidden: int = 32,
                     world: str = "small") -> None:
    """A random tiny LLaVA (SigLIP 32-d vision tower, 32 px images -> 16 image tokens; Qwen2 text model)."""
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    torch.manual_seed(seed)
    tok = build_tiny_tokenizer(world=world)
    text_config, vision_config = _llava_configs(tok, hidden, layers, vision_hidden)
    config = LlavaConfig(vision_config=vision_config, text_config=text_config,
                         image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="full",
                         vision_feature_layer=-1, projector_hidden_act="gelu", tie_word_embeddings=True)
    model = LlavaForConditionalGeneration(config)
    processor = LlavaProcessor(image_processor=SiglipImageProcessorPil(size={"height": 32, "width": 32}),
                               tokenizer=tok, patch_size=8, vision_feature_select_strategy="full",
                               chat_template=LLAVA_CHAT_TEMPLATE, image_token="<image>", num_additional_image_tokens=0)
    _save(model, processor, out)


