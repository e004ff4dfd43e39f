"""Model specs to folders: `tiny:<family>` (random weights, TINY_BUILDERS) and `tiny:world-base` are built offline
(once, cached); anything else must be a local model folder. Only `srpo run` and the CLI resolve specs; every step and
library function takes folders.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from srpo.cache import cache_dir

TINY_PREFIX = "tiny:"
# Each random tiny family: its builder in srpo.world.tiny_model and the builder's options (imported when built).
TINY_BUILDERS = {
    "llava": ("build_tiny_llava", {}),
    "llava-next": ("build_tiny_llava_next", {}),
    "llava-onevision": ("build_tiny_llava_onevision", {}),
    "gemma3": ("build_tiny_gemma3", {}),
    "idefics3": ("build_tiny_idefics3", {}),
    "smolvlm": ("build_tiny_idefics3", {"family": "smolvlm"}),
    "internvl": ("build_tiny_internvl", {}),
    "qwen2-vl": ("build_tiny_qwen2_vl", {"version": "2"}),
    "qwen2.5-vl": ("build_tiny_qwen2_vl", {"version": "2.5"}),
    "qwen3-vl": ("build_tiny_qwen2_vl", {"version": "3"}),
}
WORLD_BASES = ("world-base", "world-base-large")  # pretrained in the synthetic world
TINY_KINDS = (*TINY_BUILDERS, *WORLD_BASES)
TINY_VERSION = "v2"  # bump when the tiny model's recipe changes, so cached builds are not reused

# Recipe fields that name a model, and the backend value under which they name a local model folder.
SPEC_FIELDS = {"build": [("build_teacher_model", "build_teacher", "hf")],
               "judge": [("judge_model", "judge_backend", "hf"), ("judge_model", "judge_dream_model", "hf")],
               "eval": [("eval_judge_model", "eval_judge_backend", "hf")]}


def resolve_model(spec: str, seed: int = 0) -> str:
    """A local folder path for a model spec; 'tiny:llava' builds (once, cached) the tiny offline test model.

    'tiny:world-base' is pretrained on the training combinations of the world split of `seed` (the run's seed), so
    each seed's held-out combinations are unseen by its own base model. 'tiny:world-base-<world>' is the same for
    a larger world of srpo.world.scenes.WORLDS (its recipe sets build_world_size to match).
    """
    if spec.startswith(TINY_PREFIX):
        kind = spec[len(TINY_PREFIX):]
        world = kind[len("world-base-"):] if kind.startswith("world-base-") else "small"
        # The tokenizer is trained on the world's texts, so the cache key follows them too.
        from srpo.world.teacher import corpus

        key = f"{TINY_VERSION}-{hashlib.sha256(chr(10).join(corpus(world)).encode()).hexdigest()[:8]}"
        if kind in TINY_BUILDERS:
            from srpo.world import tiny_model

            out = cache_dir() / f"tiny-{kind}-{key}"
            if not (out / "config.json").exists():
                builder, options = TINY_BUILDERS[kind]
                getattr(tiny_model, builder)(out, **options)
            return str(out)
        if kind in WORLD_BASES:
            from srpo.world.pretrain import PRETRAIN_VERSION, build_world_base
            from srpo.world.scenes import world_spec

            spec = world_spec(world)
            size = "" if world == "small" else f"-{world}{spec.pretrain_steps}c{spec.caption_scenes}"
            out = cache_dir() / f"tiny-{PRETRAIN_VERSION}{size}-s{seed}-{key}"
            if not (out / "config.json").exists():
                print(f"building the world's base model for seed {seed} (once; cached in {out}) ...", flush=True)
                build_world_base(out, seed=seed, steps=spec.pretrain_steps, world=world)
            return str(out)
        raise ValueError(f"unknown tiny model {spec!r}; the built-in ones are "
                         + ", ".join(f"'{TINY_PREFIX}{k}'" for k in TINY_KINDS) + " ('world-base*' are pretrained "
                         "in the synthetic world, the others have random weights)")
    check_model_folder(spec)
    return str(spec)


def check_model_folder(spec: str) -> None:
    path = Path(spec)
    if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        raise FileNotFoundError(
            f"model {spec!r} is not a local model folder (no config.json). srpo never downloads from a hub at run "
            "time: download the model first (e.g. `huggingface-cli download <repo> --local-dir <dir>`) and give "
            "the folder, or use 'tiny:llava' for the offline test model.")


def resolve_section(section: str, values: dict, seed: int = 0) -> dict:
    """A recipe section with its model specs replaced by folders (building tiny models when named)."""
    out = dict(values)
    for field, backend_field, backend in SPEC_FIELDS.get(section, []):
        if out.get(backend_field) == backend and out.get(field):
            out[field] = resolve_model(str(out[field]), seed=seed)
    return out
