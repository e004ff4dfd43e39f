"""Register the base model in the run: <run>/base/model links to its files, and the manifest pins their hashes.

    srpo base --config runs/<name>/base/step_config.yaml

Every later step then names its model by a step folder of the run, so a changed base model (other weights under the
same path) changes the fingerprints of everything trained from it. Files are linked, not copied: 7B weights are
hashed once here, never duplicated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from srpo.configs import StepArgs
from srpo.runfolder import MODEL
from srpo.steps import StepRun, is_main_process


@dataclass
class BaseArgs(StepArgs):
    model_dir: str = field(default="", metadata={"help": "The base model's local folder (resolved from run_model)."})


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
        return step.finish([MODEL], {"source": str(Path(args.model_dir).resolve())})


def main(argv=None) -> None:
    from srpo.cli_util import parse_step_args

    run(parse_step_args(BaseArgs, argv))


if __name__ == "__main__":
    main()
