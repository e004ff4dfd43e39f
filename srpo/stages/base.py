"""Register the base model in the run: <run>/base/model links to its files, and the manifest pins their hashes.

    srpo base --config runs/<name>/base/step_config.yaml

Every later step then names its model by a step folder of the run, so a changed base model (other weights under the
same path) changes the fingerprints of everything trained from it. Files are linked, not copied: 7B weights are
hashed once here, never duplicated.

`image_processor` (the recipe's `run.run_image_processor`, e.g. Qwen's `{max_pixels: 1003520}`) is applied here, once:
base/model gets its own processor files with those settings instead of links, and every later step loads the
processor from base/model or from a checkpoint saved with it, so sampling, judging, training and evaluation see the
same image tokens.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from srpo.configs import StepArgs, as_mapping
from srpo.runfolder import MODEL
from srpo.steps import StepRun, is_main_process


@dataclass
class BaseArgs(StepArgs):
    model_dir: str = field(default="", metadata={"help": "The base model's local folder (resolved from run_model)."})
    image_processor: str | dict = field(default_factory=dict, metadata={
        "help": "Settings of the model's image processor for the whole run: pixel budgets (Qwen's min_pixels / "
                "max_pixels, Idefics' do_image_splitting and size, Gemma 3's do_pan_and_scan). A key the image "
                "processor ignores is an error."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run processor code shipped with the model."})

    def __post_init__(self):
        self.image_processor = as_mapping("image_processor", self.image_processor, "{max_pixels: 1003520}")


def inputs(args) -> dict:
    return {}


def run(args: BaseArgs) -> dict | None:
    step = StepRun.of(args, inputs(args), command="base", default_step="base")
    folder = step.folder
    if step.done():
        return None
    with step:
        if is_main_process():
            source = Path(args.model_dir).resolve()
            if not (source / "config.json").exists():
                raise FileNotFoundError(f"{source} is not a model folder (no config.json)")
            target = folder / MODEL
            target.mkdir(parents=True, exist_ok=True)
            for item in sorted(source.iterdir()):
                if item.is_file() and not (target / item.name).exists():
                    os.symlink(item, target / item.name)
            if args.image_processor:
                write_processor(source, target, args.image_processor, args.trust_remote_code)
        return step.finish([MODEL], {"source": str(Path(args.model_dir).resolve()),
                                     "image_processor": args.image_processor})


def write_processor(source: Path, target: Path, settings: dict, trust_remote_code: bool) -> None:
    """Replace target's links to the processor files by files saved with `settings` (never writing through a link
    into the base model's own folder)."""
    from srpo.model_families import processor_with

    processor = processor_with(str(source), settings, trust_remote_code=trust_remote_code)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        processor.save_pretrained(tmp)
        saved = sorted(p.name for p in Path(tmp).iterdir())
        legacy = target / "preprocessor_config.json"  # the image settings now live in processor_config.json
        unified = Path(tmp) / "processor_config.json"
        if legacy.is_symlink() and "preprocessor_config.json" not in saved and unified.exists() \
                and "image_processor" in json.loads(unified.read_text()):
            legacy.unlink()
        for name in saved:
            if (target / name).is_symlink() or (target / name).exists():
                (target / name).unlink()
            shutil.move(str(Path(tmp) / name), target / name)


def main(argv=None) -> None:
    from srpo.cli_util import parse_step_args

    run(parse_step_args(BaseArgs, argv))


if __name__ == "__main__":
    main()
