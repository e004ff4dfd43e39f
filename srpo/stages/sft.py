"""Supervised fine-tuning on risk-disentangled chains (TRL SFTTrainer; full, LoRA or QLoRA).

    srpo sft --config runs/<name>/sft/step_config.yaml
    accelerate launch --config_file launch/accelerate/ddp.yaml -m srpo.stages.sft --config <same>

Reads <data_dir>/pairs.jsonl (train split) and writes <step>/model/ (the fine-tuned policy: full weights or adapter,
plus the processor), log_history.json and manifest.json. Resumes from <step>/trainer/checkpoint-* after a kill.
"""

from __future__ import annotations

from pathlib import Path

from srpo.runfolder import IMAGES, LOG_HISTORY, MODEL, PAIRS, SFT_MIX
from srpo.steps import StepRun, model_input, only_outputs
from srpo.train_configs import SFTStageConfig


def sft_rows(data_dir: Path, names: list[str] | None = None) -> list[dict]:
    """The SFT rows ({images, prompt, completion}); `names`, when given, gets where each row comes from, in order."""
    from srpo.models import assistant_message, prompt_row
    from srpo.runfolder import read_jsonl

    rows = []
    for pair in read_jsonl(data_dir / PAIRS):
        if pair["meta"].get("split", "train") != "train":
            continue
        if names is not None:
            names.append(f"{PAIRS} pair {pair['id']}")
        rows.append({**prompt_row(pair["query"], pair["image"], data_dir),
                     "completion": assistant_message(pair["chain"])})
    mix = data_dir / SFT_MIX  # the builder's extra rows (world: caption replay, counterfactual chains)
    for line, row in enumerate(read_jsonl(mix) if mix.exists() else [], 1):
        if names is not None:
            names.append(f"{SFT_MIX} line {line}")
        rows.append({**prompt_row(row["query"], row["image"], data_dir),
                     "completion": assistant_message(row["completion"])})
    return rows


def inputs(args) -> dict:
    # What SFT reads of the data folder, and no more: new RL prompts (rl_prompts.jsonl) do not retrain SFT.
    return {"data": only_outputs(args.data_dir, PAIRS, SFT_MIX, IMAGES), "base": model_input(args.model_dir)}


def run(args: SFTStageConfig) -> dict | None:
    step = StepRun.of(args, inputs(args), command="sft", default_step="sft")
    folder = step.folder
    if step.done():
        return None
    with step:
        from datasets import Dataset
        from trl import SFTTrainer

        from srpo.models import load_policy
        from srpo.training import check_truncation, lora_config, prepare_model, train_and_save

        args.output_dir = str(folder / "trainer")
        model, processor = load_policy(args.model_dir, trust_remote_code=args.trust_remote_code,
                                       load_in_4bit=args.load_in_4bit)
        model = prepare_model(model, args)
        names: list[str] = []
        rows = sft_rows(Path(args.data_dir), names)
        fit = check_truncation(processor, rows, names, args.max_length, args.truncation_mode,
                               where=f"{Path(args.data_dir) / PAIRS}: ")
        dataset = Dataset.from_list(rows)
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                             peft_config=lora_config(args))
        stats = train_and_save(trainer, processor, args, folder)
        stats["train_rows"] = len(dataset)
        stats.update(fit)
        return step.finish([MODEL, LOG_HISTORY], stats)


def main(argv=None) -> None:
    from srpo.cli_util import parse_step_args
    from srpo.training import distributed_main

    distributed_main(run, parse_step_args(SFTStageConfig, argv))


if __name__ == "__main__":
    main()
