"""One DPO round on the iteration's preference pairs (TRL DPOTrainer), from the current policy.

    srpo dpo --config runs/<name>/iter_001/dpo/step_config.yaml
    accelerate launch --config_file launch/accelerate/zero3.yaml -m srpo.stages.dpo --config <same>

Loss: TRL's sigmoid DPO, -log σ(β[(log π(y_w|x) - log π_ref(y_w|x)) - (log π(y_l|x) - log π_ref(y_l|x))]),
plus λ·NLL(y_w) when nll_weight > 0 (SRPO/RPO), plus λ_ref · (mean token NLL of teacher chains drawn from the SFT
split) when dpo_reference_weight > 0 (SRPO's reference-based learning). Writes <step>/model/, log_history.json,
manifest.json.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from srpo.runfolder import LOG_HISTORY, MODEL, PAIRS, SFT_MIX, read_jsonl
from srpo.steps import StepRun, is_main_process, model_input
from srpo.train_configs import DPOStageConfig


def dpo_rows(pairs_path: Path, data_dir: Path) -> list[dict]:
    from srpo.models import assistant_message, prompt_row

    return [{**prompt_row(p["query"], p["image"], data_dir), "chosen": assistant_message(p["chosen"]),
             "rejected": assistant_message(p["rejected"])} for p in read_jsonl(pairs_path)]


def reference_chain_rows(data_dir: Path) -> list[dict]:
    """The teacher chains SFT trained on ({query, image, completion}): the train split's chains, and the SFT mix's rows
    that are chains (the world's counterfactual chains, not its caption replay), in the files' order."""
    from srpo.chain import parse_chain

    rows = [{"query": p["query"], "image": p["image"], "completion": p["chain"]} for p in read_jsonl(data_dir / PAIRS)
            if p["meta"].get("split", "train") == "train" and p.get("chain")]
    mix = data_dir / SFT_MIX
    rows += [{"query": r["query"], "image": r["image"], "completion": r["completion"]}
             for r in (read_jsonl(mix) if mix.exists() else []) if parse_chain(r["completion"]).ok]
    return rows


def inputs(args) -> dict:
    # The data folder is an input whatever dpo_reference_weight is: the pairs' images live there, and its digest
    # (pairs.jsonl, sft_mix.jsonl) covers the reference chains.
    return {"policy": model_input(args.policy_dir), "reference": model_input(args.ref_dir),
            "pairs": args.pairs_dir, "data": args.data_dir}


def run(args: DPOStageConfig) -> dict | None:
    step = StepRun.of(args, inputs(args), command="dpo")
    folder = step.folder
    if step.done():
        return None
    with step:
        rows = dpo_rows(Path(args.pairs_dir) / PAIRS, Path(args.data_dir))
        if not rows:
            # Nothing to learn from (every sample scored alike): the policy carries over unchanged, and says so.
            if is_main_process():
                shutil.copytree(args.policy_dir, folder / MODEL, dirs_exist_ok=True)
                (folder / LOG_HISTORY).write_text("[]\n")
            return step.finish([MODEL, LOG_HISTORY], {"pairs": 0, "trained": False,
                                                              "note": "no preference pairs; policy copied unchanged"})
        from datasets import Dataset
        from trl import DPOTrainer

        from srpo.models import load_policy
        from srpo.training import (
            ReferenceChains,
            check_truncation,
            load_reference_adapter,
            lora_config,
            prepare_model,
            reference_dpo_trainer_class,
            train_and_save,
        )

        args.output_dir = str(folder / "trainer")
        model, processor = load_policy(args.policy_dir, trust_remote_code=args.trust_remote_code,
                                       load_in_4bit=args.load_in_4bit, train_adapter=True)
        model = prepare_model(model, args)
        ref_is_policy = Path(args.ref_dir).resolve() == Path(args.policy_dir).resolve()
        ref_model = None
        if not args.use_lora or (not args.load_in_4bit and not ref_is_policy):
            # Full fine-tuning: the reference is an explicit frozen copy (TRL would reload it from a path otherwise).
            # LoRA: TRL's reference is the policy with its new adapter disabled, i.e. the policy this step starts from;
            # another ref_dir (run_reference_policy: sft, from iteration 2 on) needs its own copy, held in memory.
            ref_model, _ = load_policy(args.ref_dir, trust_remote_code=args.trust_remote_code)
        pairs_file = Path(args.pairs_dir) / PAIRS
        names = [f"line {i} (prompt {p.get('prompt_id', p.get('id', '?'))})"
                 for i, p in enumerate(read_jsonl(pairs_file), 1)] if args.max_length else [""] * len(rows)
        fit = check_truncation(processor, rows, names, args.max_length, args.truncation_mode, where=f"{pairs_file}: ")
        trainer_class, extra = DPOTrainer, {}
        if args.dpo_reference_weight > 0:
            # λ = 0 builds TRL's DPOTrainer itself, so a recipe without reference chains trains as it always did.
            extra["reference_chains"] = ReferenceChains(
                reference_chain_rows(Path(args.data_dir)), Path(args.data_dir), weight=args.dpo_reference_weight,
                per_batch=args.dpo_reference_per_batch or args.per_device_train_batch_size)
            trainer_class = reference_dpo_trainer_class()
        trainer = trainer_class(model=model, ref_model=ref_model, args=args, train_dataset=Dataset.from_list(rows),
                                processing_class=processor,
                                # A 4-bit policy's adapter stays unmerged: TRL trains it on, a frozen copy is the
                                # reference.
                                peft_config=None if hasattr(model, "peft_config") else lora_config(args), **extra)
        if args.load_in_4bit and not ref_is_policy:
            # that frozen copy := ref_dir
            load_reference_adapter(trainer.accelerator.unwrap_model(trainer.model), args.ref_dir)
        stats = train_and_save(trainer, processor, args, folder)
        logs = [h for h in trainer.state.log_history if "rewards/margins" in h]
        stats.update(pairs=len(rows), trained=True,
                     final_reward_margin=logs[-1]["rewards/margins"] if logs else None, **fit)
        if extra:
            nll = [h["reference_nll"] for h in trainer.state.log_history if "reference_nll" in h]
            stats.update(reference_chains=len(extra["reference_chains"]),
                         first_reference_nll=nll[0] if nll else None, final_reference_nll=nll[-1] if nll else None)
        return step.finish([MODEL, LOG_HISTORY], stats)


def main(argv=None) -> None:
    from srpo.cli_util import parse_step_args
    from srpo.training import distributed_main

    distributed_main(run, parse_step_args(DPOStageConfig, argv))


if __name__ == "__main__":
    main()
