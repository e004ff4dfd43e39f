"""Check launch configs and recipes without launching anything (one process, CPU, seconds per file).

    python -m srpo.launch_validate launch/deepspeed/zero3.json launch/accelerate/zero3.yaml
    python -m srpo.launch_validate recipes/qwen2.5-vl-7b/full.yaml                 # follows run_accelerate_config
    python -m srpo.launch_validate recipes/tiny/demo.yaml --deepspeed launch/deepspeed/zero2.json --world-size 8

DeepSpeed JSONs and accelerate YAMLs are checked by srpo/launch_checks.py, recipes by srpo/recipe.py (the static
checks of `srpo validate`). Every message names the file and the key.
"""

from __future__ import annotations

import argparse
import os
import sys

from srpo.launch_checks import LaunchConfigError, check_accelerate, check_deepspeed, read_accelerate


def kind_of(path: str | os.PathLike) -> str:
    """'deepspeed', 'accelerate' or 'recipe' from the file's extension and content."""
    from pathlib import Path

    p = Path(path)
    if p.suffix == ".json":
        return "deepspeed"
    raw, _ = read_accelerate(p)
    if isinstance(raw, dict) and ("distributed_type" in raw or "compute_environment" in raw):
        return "accelerate"
    return "recipe"


def check(path: str | os.PathLike, *, deepspeed: str | None = None, world_size: int | None = None) -> list[str]:
    kind = kind_of(path)
    if kind == "deepspeed":
        return check_deepspeed(path, world_size=world_size or 2)
    if kind == "accelerate":
        return check_accelerate(path)
    from srpo.recipe import check_recipe

    return check_recipe(path, deepspeed=deepspeed, world_size=world_size)


def validate(path: str | os.PathLike, **kw) -> None:
    """Raise LaunchConfigError listing every problem of `path` (see check)."""
    problems = check(path, **kw)
    if problems:
        raise LaunchConfigError("\n".join(problems))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m srpo.launch_validate", description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="DeepSpeed JSONs, accelerate YAMLs and recipe YAMLs")
    ap.add_argument("--deepspeed", help="check recipes against this DeepSpeed JSON")
    ap.add_argument("--world-size", type=int, default=None, help="ranks to emulate (default: the accelerate "
                                                                 "config's num_processes, else 2)")
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    bad = 0
    for f in a.files:
        problems = check(f, deepspeed=a.deepspeed, world_size=a.world_size)
        if problems:
            bad += 1
            print(f"INVALID {f}")
            for p in problems:
                print("  - " + p)
        else:
            print(f"OK      {f}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
