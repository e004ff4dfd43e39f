"""What some VLM families need beyond `AutoModelForImageTextToText` / `AutoProcessor` (loaded by srpo/models.py).

Qwen2-VL and Qwen2.5-VL: transformers' stock processors demand a video processor, and every video processor needs
torchvision, which has no build matching the CPU torch here. srpo trains on images only, so it registers an
image-only processor for these configs: the stock image path (Qwen's image processor, `image_grid_thw`, the
<|image_pad|> expansion) unchanged, no video processor. A folder saved with it reloads through `AutoProcessor` once
`register_processors()` has run (load_policy calls it).
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

    return {"Qwen2VLImageOnlyProcessor": Qwen2VLImageOnlyProcessor}


def __getattr__(name: str):
    classes = _classes()
    if name in classes:
        return classes[name]
    raise AttributeError(name)


@functools.cache
def register_processors() -> None:
    """Register the image-only processors with AutoProcessor (once per process)."""
    from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen2VLConfig

    for config in (Qwen2VLConfig, Qwen2_5_VLConfig):
        AutoProcessor.register(config, _classes()["Qwen2VLImageOnlyProcessor"], exist_ok=True)
