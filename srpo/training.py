"""Shared pieces of the training steps: freezing, LoRA config, saving the final policy and its log; and the DPO
trainer with SRPO's reference chains (dpo_reference_weight)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from srpo.runfolder import LOG_HISTORY, MODEL, atomic_write_text

# Timings, and counters the Trainer does not restore on resume (TRL's num_tokens; train_loss averages only the steps
# of the last process): dropped so the saved history is the same whether or not the step was killed and resumed.
_VOLATILE_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "num_tokens",
                  "train_loss"}


# The vision tower's module name in each family: LLaVA, LLaVA-NeXT/OneVision and Gemma 3 `vision_tower`, Qwen2/2.5/3-VL
# `visual`, Idefics3 and SmolVLM `vision_model`.
VISION_MODULES = frozenset({"vision_tower", "visual", "vision_model"})


def is_vision_tower(name: str) -> bool:
    """Whether a parameter name belongs to the vision tower (a dotted component is one of VISION_MODULES)."""
    return any(part in VISION_MODULES for part in name.split("."))


class TruncationError(ValueError):
    """A training row that max_length would cut inside its image tokens (or before its answer begins)."""


def image_token_id(processor) -> int | None:
    """The id of the token each image expands into (`<|image_pad|>`, `<image>`, Gemma 3's image soft token)."""
    token_id = getattr(processor, "image_token_id", None)
    if token_id is None and getattr(processor, "image_token", None):
        token_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    return token_id


def check_truncation(processor, rows: list[dict], names: list[str], max_length: int | None,
                     truncation_mode: str = "keep_start", where: str = "") -> dict:
    """Measure every row as the trainer will see it (chat template, image tokens expanded) against max_length.

    A row whose truncation would cut image tokens is an error: the model would get pixel values for tokens that are
    not there (a shape error at best, silently misaligned features at worst). So is a row whose prompt alone fills
    max_length (keep_start): nothing of the answer would be trained on. Both raise TruncationError naming the rows,
    their lengths and the limit. Rows cut only inside their answer are TRL's ordinary truncation, counted.
    `rows` are SFT ({prompt, completion, images}) or DPO ({prompt, chosen, rejected, images}) rows."""
    if not max_length:
        return {}
    image_id = image_token_id(processor)

    def ids(messages, images, generation_prompt=False) -> list[int]:
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        return list(processor(text=[text], images=[images] if images else None)["input_ids"][0])

    cut, empty, longest, truncated = [], [], 0, 0
    for row, name in zip(rows, names, strict=True):
        for answer in [k for k in ("completion", "chosen", "rejected") if k in row]:
            full = ids(row["prompt"] + row[answer], row["images"])
            longest = max(longest, len(full))
            if len(full) <= max_length:
                continue
            truncated += 1
            kept = range(0, max_length) if truncation_mode == "keep_start" else range(len(full) - max_length,
                                                                                       len(full))
            at = [i for i, t in enumerate(full) if t == image_id]
            lost = sum(1 for i in at if i not in kept)
            if lost:
                side = "first" if truncation_mode == "keep_start" else "last"
                cut.append(f"{name} ({answer}: {len(full)} tokens; {lost} of its {len(at)} image tokens fall outside "
                           f"the {side} {max_length} that {truncation_mode} keeps)")
            elif truncation_mode == "keep_start" and len(ids(row["prompt"], row["images"], True)) >= max_length:
                empty.append(f"{name} ({answer}: the prompt alone fills max_length {max_length})")
    if cut or empty:
        bad = cut + empty
        raise TruncationError(
            f"{where}max_length {max_length} would cut {len(bad)} training sequence(s): " + "; ".join(bad[:5])
            + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "") + f". The longest is {longest} tokens. Raise "
            "max_length (or leave it unset: no truncation), lower the image budget (run.run_image_processor, e.g. "
            "max_pixels), or leave those rows out of the data (build.build_max_prompt_tokens quarantines prompts "
            "that are too long)")
    return {"max_length": max_length, "truncated_sequences": truncated, "longest_sequence": longest}


def prepare_model(model, args):
    """Freeze the vision tower (the papers' practice) unless asked not to; QLoRA prep for 4-bit bases."""
    if args.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        # It freezes every parameter: an adapter the policy already carries (QLoRA DPO continues it) stays trainable.
        adapter = [p for p in model.parameters() if p.requires_grad] if hasattr(model, "peft_config") else []
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(args.activation_checkpointing))
        for param in adapter:
            param.requires_grad_(True)
    if args.freeze_vision_tower:
        for name, param in model.named_parameters():
            if is_vision_tower(name):
                param.requires_grad_(False)
    return model


def lora_config(args):
    """TRL's own LoRA config from the step's fields (srpo keeps its flat, prefixed names in recipes)."""
    if not args.use_lora:
        return None
    from trl import ModelConfig, get_peft_config

    return get_peft_config(ModelConfig(use_peft=True, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
                                       lora_dropout=0.0, lora_task_type="CAUSAL_LM",
                                       lora_target_modules=args.lora_target_modules))


def load_reference_adapter(model, ref_dir: str) -> None:
    """QLoRA DPO against another reference: load ref_dir's adapter into TRL's frozen "ref" adapter.

    TRL makes "ref" a copy of the policy's adapter when it continues one; a 4-bit base is not loaded twice, so a
    reference from another step (run_reference_policy: sft) must be an adapter of the same shape on the same base.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    ours = getattr(model, "peft_config", {}).get("ref")
    config_path = Path(ref_dir) / "adapter_config.json"
    saved = json.loads(config_path.read_text()) if config_path.exists() else None
    shape = ("base_model_name_or_path", "r", "lora_alpha", "target_modules")
    if ours is None or saved is None or any(_plain(saved.get(k)) != _plain(getattr(ours, k)) for k in shape):
        raise ValueError(
            f"QLoRA DPO (load_in_4bit + use_lora) needs ref_dir to be a LoRA adapter with the policy's base, lora_r, "
            f"lora_alpha and lora_target_modules; ref_dir {ref_dir} is not one. Set ref_dir equal to policy_dir (with "
            "srpo run: run_reference_policy: previous), or train without load_in_4bit.")
    weights = load_file(Path(ref_dir) / "adapter_model.safetensors")
    result = set_peft_model_state_dict(model, weights, adapter_name="ref")
    loaded = [n for n, _ in model.named_parameters() if ".ref." in n]
    if result.unexpected_keys or len(loaded) != len(weights):
        raise RuntimeError(f"the adapter in {ref_dir} does not fit the policy's: {len(weights)} tensors for "
                           f"{len(loaded)} reference parameters, unexpected {result.unexpected_keys[:5]}")


def _plain(value):
    return sorted(value) if isinstance(value, (set, list, tuple)) else value


def finalize_training(trainer, processor, folder: Path) -> dict:
    """Save the final policy to <folder>/model (safetensors) and the log history; return summary stats."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")  # TRL's frozen reference copy (QLoRA DPO) is not part of the policy
    trainer.save_model(str(folder / MODEL))
    if trainer.is_world_process_zero():
        # The Trainer also pickles its arguments there; a policy folder holds safetensors and JSON only.
        (folder / MODEL / "training_args.bin").unlink(missing_ok=True)
        processor.save_pretrained(str(folder / MODEL))
        history = [{k: v for k, v in h.items() if k not in _VOLATILE_KEYS} for h in trainer.state.log_history]
        atomic_write_text(folder / LOG_HISTORY, json.dumps(history, indent=1, sort_keys=True))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"global_step": trainer.state.global_step, "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None}


def distributed_main(run, args) -> None:
    """Run a training step under `accelerate launch` (or alone) and leave the process group cleanly.

    ZeRO-3 builds the model inside zero.Init, which needs DeepSpeed's process group first; and without a final
    barrier + destroy, gloo runs sometimes abort after training with rc=1.
    """
    import os

    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and (args.deepspeed or os.environ.get("ACCELERATE_USE_DEEPSPEED")):
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo" if args.use_cpu else "nccl")
    try:
        run(args)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def restore_full_weights(model, checkpoint: str | None, args) -> None:
    """Load a full-model trainer checkpoint's weights into `model` before resuming.

    transformers 5 saves VLM checkpoints under their legacy key names ("language_model.model.*") but Trainer's resume
    loads them without the key conversion that from_pretrained applies: every key misses, a warning is logged, and
    training silently restarts from the initial weights (measured: loss back to its step-0 value after resume).
    from_pretrained converts the keys; the Trainer still restores optimizer, scheduler, RNG and data position.
    Adapters (LoRA) and DeepSpeed checkpoints load through their own paths and are left to the Trainer.
    """
    if checkpoint is None or args.use_lora or args.deepspeed:
        return
    from transformers import AutoModelForImageTextToText

    saved = AutoModelForImageTextToText.from_pretrained(checkpoint, use_safetensors=True,
                                                        trust_remote_code=args.trust_remote_code)
    missing, unexpected = model.load_state_dict(saved.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {checkpoint} does not match the model: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}; delete it to retrain the step from scratch")


class CheckpointWorldSizeError(RuntimeError):
    """A sharded DeepSpeed ZeRO checkpoint cannot be resumed by a different number of processes."""


def saved_world_size(checkpoint: str | Path) -> tuple[int | None, bool]:
    """(number of processes that wrote a trainer checkpoint, whether its optimizer state is ZeRO-sharded).

    DeepSpeed writes one `[bf16_]zero_pp_rank_<dp>_mp_rank_<mp>_optim_states.pt` per data-parallel rank into the tag
    folder that `latest` names (`global_step<N>`); a universal checkpoint (ds_to_universal) has none, and loads at any
    world size. Without ZeRO shards the Trainer's `rng_state_<rank>.pth` files (`rng_state.pth` for one process) count.
    """
    import re

    checkpoint = Path(checkpoint)
    latest = checkpoint / "latest"
    tags = [checkpoint / latest.read_text().strip()] if latest.is_file() else sorted(checkpoint.glob("global_step*"))
    for tag in tags:
        ranks = {m.group(1) for f in tag.glob("*zero_pp_rank_*_optim_states.pt")
                 if (m := re.search(r"zero_pp_rank_(\d+)_mp_rank_\d+_optim_states\.pt$", f.name))}
        if ranks:
            return len(ranks), True
    if (checkpoint / "rng_state.pth").exists():
        return 1, False
    rng = list(checkpoint.glob("rng_state_*.pth"))
    return (len(rng) or None), False


def check_resume_world_size(checkpoint: str | None, world_size: int) -> None:
    """Refuse to resume a ZeRO-sharded checkpoint at another world size; warn for a plain (DDP / 1-process) one.

    DeepSpeed itself stops only once the model is built ("Automatic adjustment of ZeRO's optimizer state partitioning
    with a new world size is not currently supported") and does not say what to do. A DDP checkpoint holds the full
    weights and optimizer state, so it loads; only the data position and the RNG streams are per process.
    """
    if checkpoint is None:
        return
    saved, sharded = saved_world_size(checkpoint)
    if saved is None or saved == world_size:
        return
    checkpoint = Path(checkpoint)
    if sharded:
        latest = checkpoint / "latest"
        tag = checkpoint / (latest.read_text().strip() if latest.is_file() else "global_step<N>")
        raise CheckpointWorldSizeError(
            f"the DeepSpeed ZeRO checkpoint {checkpoint} was written by {saved} processes, but this run has "
            f"{world_size}: ZeRO shards the optimizer state per process, so it cannot be loaded as is. Either "
            f"re-launch with {saved} processes (accelerate launch --num_processes {saved} ...); or delete "
            f"{checkpoint.parent} to retrain the step {checkpoint.parent.parent.name!r} from its start; or convert "
            f"it: python -m deepspeed.checkpoint.ds_to_universal --input_folder {tag} --output_folder {tag}_universal "
            f"--inject_missing_state, write {tag.name + '_universal'!r} into {latest}, and add "
            '"checkpoint": {"load_universal": true} to the DeepSpeed JSON this step uses, at the same path (a new '
            "`deepspeed` path in the step config restarts the step; docs/distributed.md).")
    import logging

    logging.getLogger(__name__).warning(
        "resuming %s, written by %d process(es), with %d: weights, optimizer and scheduler load, but the data "
        "position and random streams are per process, so the rest of the run will not match an uninterrupted one "
        "(and the global batch changes unless gradient_accumulation_steps is adjusted)", checkpoint, saved, world_size)


def train_and_save(trainer, processor, args, folder: Path) -> dict:
    """The part SFT and DPO share after building their trainer: the kill-test callback, resume from the last
    checkpoint (refused at another world size), train, save the policy and its log, drop the checkpoints."""
    import shutil

    from transformers.trainer_utils import get_last_checkpoint

    from srpo import chaos
    from srpo.steps import is_main_process

    callback = chaos.trainer_callback(args.step)
    if callback is not None:
        trainer.add_callback(callback)
    last = get_last_checkpoint(args.output_dir) if Path(args.output_dir).exists() else None
    check_resume_world_size(last, args.world_size)
    restore_full_weights(trainer.model, last, args)
    trainer.train(resume_from_checkpoint=last)
    stats = finalize_training(trainer, processor, folder)
    if is_main_process():
        shutil.rmtree(args.output_dir, ignore_errors=True)  # checkpoints were only resume points
    return stats


def reference_draw(n_chains: int, *, seed: int, step: int, count: int) -> list[int]:
    """The teacher chains (indices) that optimizer step `step` (0-based) trains on, in SRPO's reference-based learning.

    `count` of them from a shuffle of all chains seeded by (seed, step), reshuffled only when one pass runs out, so no
    chain repeats within a step while there are enough. A pure function of its arguments: a resumed run draws what the
    uninterrupted one drew, whatever the number of processes.
    """
    import hashlib
    import random

    rng = random.Random(int(hashlib.sha256(repr(("reference", seed, step)).encode()).hexdigest()[:16], 16))
    drawn: list[int] = []
    while len(drawn) < count:
        order = list(range(n_chains))
        rng.shuffle(order)
        drawn += order
    return drawn[:count]


def reference_share(drawn: list[int], *, per_batch: int, world_size: int, rank: int, micro_step: int) -> list[int]:
    """One rank's chains for one micro-step, out of the step's draw laid out as accelerate lays out the pairs:
    micro-step by micro-step, and within one, rank by rank, per_batch each (2 ranks x 2 see 1 process x 4's chains)."""
    start = (micro_step * world_size + rank) * per_batch
    return drawn[start:start + per_batch]


class ReferenceChains:
    """The teacher chains of SRPO's reference-based learning ({query, image, completion} rows) and their weight λ.

    A drawn batch is tokenized by TRL's SFT collator with completion-only labels: the chains are masked exactly as the
    SFT step masks them (prompt, image tokens and padding at -100), and truncated at the DPO step's max_length.
    """

    def __init__(self, rows: list[dict], data_dir: Path, *, weight: float, per_batch: int):
        if not rows:
            raise ValueError(f"dpo_reference_weight > 0 needs teacher chains, and the data folder {data_dir} has none "
                             "(no train-split pair with a chain): build the data with chains, or set "
                             "dpo_reference_weight: 0")
        self.rows, self.data_dir, self.weight, self.per_batch = rows, Path(data_dir), weight, per_batch

    def __len__(self) -> int:
        return len(self.rows)

    def collate(self, indices: list[int], processor, max_length: int | None) -> dict:
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        from srpo.models import assistant_message, prompt_row

        examples = [{**prompt_row(row["query"], row["image"], self.data_dir),
                     "completion": assistant_message(row["completion"])} for row in (self.rows[i] for i in indices)]
        collator = DataCollatorForVisionLanguageModeling(processor=processor, max_length=max_length,
                                                         completion_only_loss=True)
        return collator(examples)


def token_nll(model, batch: dict):
    """(sum of the NLL of the labelled tokens, their count) under `model`, through the fused LM head TRL's trainers add
    (no full logits). `batch` is a collated SFT batch with `labels`."""
    batch = dict(batch)
    labels = batch.pop("labels")
    outputs = model(**batch, labels=labels, use_cache=False, fused_lm_head=True)
    return -outputs.log_probs.sum(), outputs.label_mask.sum()


@functools.cache
def reference_dpo_trainer_class():
    """TRL's DPOTrainer with SRPO's reference-based learning added to its loss (built on first use: importing TRL's
    trainers takes seconds, and `srpo.training` is imported by steps that do not train)."""
    from trl import DPOTrainer

    class ReferenceDPOTrainer(DPOTrainer):
        # L = L_DPO + λ · NLL_ref, NLL_ref the mean token NLL of the step's drawn teacher chains (SRPO, 2509.12060).
        def __init__(self, *args, reference_chains: ReferenceChains, **kwargs):
            super().__init__(*args, **kwargs)
            self.reference_chains = reference_chains
            self._reference_at = (-1, -1)  # (optimizer step, micro-step) of the last training forward

        def reference_indices(self) -> list[int]:
            """This rank's chains for the micro-step about to run (advances the micro-step counter)."""
            step, micro = self.state.global_step, 0
            if self._reference_at[0] == step:
                micro = self._reference_at[1] + 1
            self._reference_at = (step, micro)
            chains, world = self.reference_chains, self.accelerator.num_processes
            drawn = reference_draw(len(chains), seed=self.args.seed, step=step,
                                   count=chains.per_batch * world * self.args.gradient_accumulation_steps)
            return reference_share(drawn, per_batch=chains.per_batch, world_size=world,
                                   rank=self.accelerator.process_index, micro_step=micro)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if not self.model.training:
                return result
            loss, outputs = result if return_outputs else (result, None)
            chains = self.reference_chains
            batch = chains.collate(self.reference_indices(), self.processing_class, self.args.max_length)
            nll_sum, tokens = token_nll(model, self._prepare_inputs(batch))
            # The mean over the tokens of every rank's chains, as one process with all of them would take it: DDP and
            # ZeRO average the gradients over ranks, hence the world size over the global token count.
            total_tokens = self.accelerator.gather(tokens.detach()).sum().clamp(min=1)
            reference_nll = nll_sum * self.accelerator.num_processes / total_tokens
            logged = self.accelerator.gather(nll_sum.detach()).sum() / total_tokens
            self._metrics["train"]["reference_nll"].append(logged.item())
            loss = loss + chains.weight * reference_nll
            return (loss, outputs) if return_outputs else loss

    return ReferenceDPOTrainer
