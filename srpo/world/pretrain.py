"""The world's base model: a tiny VLM pretrained to caption scenes and to answer every query helpfully.

It is risk-blind on purpose, like a base model: for "what can my kid play with here?" over a knife it says "Your kid
can play with the knife." Pretraining sees every object (captions) but only the *training* combinations of the
seeded split (queries), so held-out combinations are new to every stage of the pipeline.

Built once per (version, seed) and cached under $SRPO_CACHE; `tiny:world-base` names it in recipes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PRETRAIN_VERSION = "world-base-v5"  # bump when the world or this recipe changes: cached builds key on it
CAPTION_QUERY = "What is in this picture?"


def pretrain_examples(seed: int, scenes_per_object: int | None = None, scenes_per_combo: int = 3,
                      world: str = "small") -> list[tuple]:
    """(object, scene seed, query, answer) of every pretraining example: captions of every object, and helpful answers
    for the *training* combinations only."""
    from srpo.world.scenes import ALL_INTENTS, split_combinations, world_spec

    spec = world_spec(world)
    scenes_per_object = spec.caption_scenes if scenes_per_object is None else scenes_per_object
    train, _ = split_combinations(seed, world=world)
    examples = []
    for n, obj in enumerate(spec.objects):
        for s in range(scenes_per_object):
            examples.append((obj, 10_000 + 100 * n + s, CAPTION_QUERY, f"A {obj.name}."))
    for n, combo in enumerate(train):
        for s in range(scenes_per_combo):
            # Helpful even when risky (risk-blind). Naming what it sees first is what a base VLM does, and makes the
            # answer depend on the image rather than on which objects a query was seen with.
            helpful = ALL_INTENTS[combo.intent][1].format(obj=combo.obj.name)
            examples.append((combo.obj, 20_000 + 100 * n + s, combo.query, f"I see a {combo.obj.name}. {helpful}"))
    return examples


def pretrain_rows(seed: int, world: str = "small") -> list[dict]:
    from srpo.models import assistant_message, user_message
    from srpo.world.scenes import render_scene

    return [{"images": [render_scene(obj, seed=scene)], "prompt": user_message(q, True),
             "completion": assistant_message(a)} for obj, scene, q, a in pretrain_examples(seed, world=world)]


def build_world_base(out: Path, seed: int = 0, steps: int = 1200, world: str = "small") -> None:
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from srpo.models import load_policy
    from srpo.world.tiny_model import build_tiny_llava

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        build_tiny_llava(work / "init", seed=seed, hidden=128, layers=4, vision_hidden=64, world=world)
        model, processor = load_policy(str(work / "init"))
        torch.manual_seed(seed)
        args = SFTConfig(output_dir=str(work / "trainer"), max_steps=steps, per_device_train_batch_size=16,
                         learning_rate=3e-3, lr_scheduler_type="cosine", warmup_steps=30, logging_steps=50,
                         save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(),
                         max_length=None, disable_tqdm=True, seed=seed, activation_checkpointing=False)
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(pretrain_rows(seed, world)),
                             processing_class=processor)
        trainer.train()
        trainer.save_model(str(work / "model"))
        processor.save_pretrained(str(work / "model"))
        try:
            os.replace(work / "model", out)
        except OSError:  # built concurrently by another process: keep theirs
            pass
    finally:
        shutil.rmtree(work, ignore_errors=True)
