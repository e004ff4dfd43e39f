"""What some VLM families need beyond `AutoModelForImageTextToText` / `AutoProcessor` (loaded by srpo/models.py).

Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision, SmolVLM, InternVL: the stock processors demand a video processor,
and every video processor needs torchvision, which has no build matching the CPU torch here. srpo trains on images
only, so it registers an image-only processor for these configs: the stock image path (the family's image processor,
Qwen's `image_grid_thw` and <|image_pad|> expansion, OneVision's anyres) unchanged, no video processor. A folder saved
with it reloads through `AutoProcessor` once `register_processors()` has run (load_policy calls it).

`processor_with` applies a recipe's image-processor settings (pixel budgets), refusing a key the processor ignores.
"""

from __future__ import annotations

import functools


@functools.cache
def _classes():
    from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
        """Qwen2-VL's processor for images only (no video processor, so no torchvision)."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    from transformers.models.llava_onevision.processing_llava_onevision import LlavaOnevisionProcessor
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    class Qwen3VLImageOnlyProcessor(Qwen3VLProcessor):
        """Qwen3-VL's processor for images only (no video processor, so no torchvision)."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            for name, default in (("image_token", "<|image_pad|>"), ("video_token", "<|video_pad|>"),
                                  ("vision_start_token", "<|vision_start|>"), ("vision_end_token", "<|vision_end|>")):
                token = getattr(tokenizer, name, None) or default
                setattr(self, name, token)
                setattr(self, f"{name}_id", tokenizer.convert_tokens_to_ids(token))
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    class LlavaOnevisionImageOnlyProcessor(LlavaOnevisionProcessor):
        """LLaVA-OneVision's processor for images only (no video processor, so no torchvision)."""

        def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,
                     vision_feature_select_strategy=None, chat_template=None, image_token="<image>",
                     video_token="<video>", vision_aspect_ratio="anyres_max_9", **kwargs):
            self.num_image_tokens = num_image_tokens
            self.vision_feature_select_strategy = vision_feature_select_strategy
            self.image_token = getattr(tokenizer, "image_token", None) or image_token
            self.video_token = getattr(tokenizer, "video_token", None) or video_token
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            self.vision_aspect_ratio = vision_aspect_ratio
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    from transformers.models.smolvlm.processing_smolvlm import SmolVLMProcessor

    class SmolVLMImageOnlyProcessor(SmolVLMProcessor):
        """SmolVLM's processor for images only (no video processor, so no torchvision). Like the stock one it needs
        the `num2words` package (its image-splitting prompt spells out row and column numbers)."""

        def __init__(self, image_processor=None, tokenizer=None, image_seq_len: int = 169, chat_template=None,
                     **kwargs):
            self.fake_image_token = getattr(tokenizer, "fake_image_token", "<fake_token_around_image>")
            self.image_token = getattr(tokenizer, "image_token", "<image>")
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.end_of_utterance_token = getattr(tokenizer, "end_of_utterance_token", "<end_of_utterance>")
            self.global_image_token = getattr(tokenizer, "global_image_token", "<global-img>")
            self.image_seq_len = image_seq_len
            self.video_token = getattr(tokenizer, "video_token", "<video>")
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

        def apply_chat_template(self, conversation, chat_template=None, **kwargs):
            # The stock method reads the video processor's frame defaults first, even for images.
            return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)

    import re

    from transformers.models.internvl.processing_internvl import InternVLProcessor

    class InternVLImageOnlyProcessor(InternVLProcessor):
        """InternVL's processor for images only (no video processor, so no torchvision)."""

        def __init__(self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None,
                     **kwargs):
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
            self.image_seq_length = image_seq_length
            self.start_image_token = tokenizer.start_image_token
            self.end_image_token = tokenizer.end_image_token
            self.start_image_token_id = tokenizer.start_image_token_id
            self.end_image_token_id = tokenizer.end_image_token_id
            self.image_token = tokenizer.context_image_token
            self.video_token = tokenizer.video_token
            self.image_token_id = tokenizer.context_image_token_id
            self.multimodal_pattern = re.compile(
                f"(?P<image>{re.escape(self.image_token)})|(?P<video>{re.escape(self.video_token)})")

    return {"Qwen2VLImageOnlyProcessor": Qwen2VLImageOnlyProcessor,
            "InternVLImageOnlyProcessor": InternVLImageOnlyProcessor,
            "Qwen3VLImageOnlyProcessor": Qwen3VLImageOnlyProcessor,
            "LlavaOnevisionImageOnlyProcessor": LlavaOnevisionImageOnlyProcessor,
            "SmolVLMImageOnlyProcessor": SmolVLMImageOnlyProcessor}


def __getattr__(name: str):
    classes = _classes()
    if name in classes:
        return classes[name]
    raise AttributeError(name)


@functools.cache
def register_processors() -> None:
    """Register the image-only processors with AutoProcessor (once per process)."""
    from transformers import (
        AutoProcessor,
        InternVLConfig,
        LlavaOnevisionConfig,
        Qwen2_5_VLConfig,
        Qwen2VLConfig,
        Qwen3VLConfig,
        SmolVLMConfig,
    )

    classes = _classes()
    for config in (Qwen2VLConfig, Qwen2_5_VLConfig):
        AutoProcessor.register(config, classes["Qwen2VLImageOnlyProcessor"], exist_ok=True)
    AutoProcessor.register(Qwen3VLConfig, classes["Qwen3VLImageOnlyProcessor"], exist_ok=True)
    AutoProcessor.register(LlavaOnevisionConfig, classes["LlavaOnevisionImageOnlyProcessor"], exist_ok=True)
    AutoProcessor.register(SmolVLMConfig, classes["SmolVLMImageOnlyProcessor"], exist_ok=True)
    AutoProcessor.register(InternVLConfig, classes["InternVLImageOnlyProcessor"], exist_ok=True)


_UNSET = object()


def processor_with(model_dir: str, settings: dict, *, trust_remote_code: bool = False):
    """The model's processor with `settings` applied to its image processor: the pixel budget of every step that
    loads it (Qwen's min_pixels / max_pixels, Idefics' do_image_splitting and size, Gemma 3's do_pan_and_scan,
    LLaVA-NeXT's image_grid_pinpoints). transformers drops a key the image processor does not know without a word; here
    that is a ValueError naming the key and the processor's own settings."""
    from transformers import AutoProcessor

    register_processors()

    def image_settings(**kw) -> dict:
        processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=trust_remote_code, **kw)
        image_processor = getattr(processor, "image_processor", None)
        if image_processor is None:
            raise ValueError(f"{model_dir}: {type(processor).__name__} has no image processor to apply "
                             f"{sorted(settings)} to")
        return image_processor.to_dict()

    def reacts(key, value) -> bool:
        """Whether the image processor takes `key`: its settings change with the value, or with another value when
        this one is what it has already (Qwen's max_pixels equal to its size's longest_edge)."""
        if image_settings(**{key: value}) != plain or plain.get(key, _UNSET) == value:
            return True
        other = (not value if isinstance(value, bool) else value * 2 + 1 if isinstance(value, int | float) else None)
        if other is None:
            return False
        try:
            return image_settings(**{key: other}) != plain
        except Exception:  # noqa: BLE001 - refusing the other value is taking the key
            return True

    plain = image_settings()
    for key, value in settings.items():
        if not reacts(key, value):
            known = sorted(k for k in plain if not k.startswith("_") and k != "image_processor_type")
            raise ValueError(f"{model_dir}: the image processor ({plain.get('image_processor_type', '?')}) ignores "
                             f"the setting {key!r}; its settings are {', '.join(known)}"
                             + (" (min_pixels / max_pixels set size's shortest_edge / longest_edge)"
                                if "shortest_edge" in str(plain.get("size")) else ""))
    return AutoProcessor.from_pretrained(model_dir, trust_remote_code=trust_remote_code, **settings)
