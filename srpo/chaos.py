"""Fault injection for the kill-anywhere tests: SIGKILL this process at named points, each point once.

Off unless SRPO_CHAOS_PLAN names a JSON file: a list of {"step", "event", "after", "fired"}. When `point(step,
event)` is reached for the `after`-th time in a process and that entry has not fired, it is marked fired (atomically,
so the next process skips it) and the process kills itself with SIGKILL — no cleanup, no flushing, like a real crash.
Events: "batch" (a sampling/judging/eval batch was appended), "checkpoint" (a trainer checkpoint was saved),
"manifest" (outputs written, manifest not yet), "ledger" (manifest written, ledger line not yet).
An entry with "all_ranks": true, reached in a process started by `accelerate launch`/torchrun, SIGKILLs every rank
and the launcher itself (like `scancel -s KILL` of the job): the processes its parent started, then the parent.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter

ENV = "SRPO_CHAOS_PLAN"
_counts: Counter = Counter()


def point(step: str, event: str) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    _counts[(step, event)] += 1
    with open(path) as f:
        plan = json.load(f)
    for entry in plan:
        if (not entry.get("fired") and entry["step"] == step and entry["event"] == event
                and _counts[(step, event)] >= entry.get("after", 1)):
            entry["fired"] = True
            from srpo.runfolder import atomic_write_json

            atomic_write_json(path, plan)
            if entry.get("all_ranks") and "LOCAL_RANK" in os.environ:
                _kill_job()
            os.kill(os.getpid(), signal.SIGKILL)


def _kill_job() -> None:
    """SIGKILL the launcher's other children (the other ranks), then the launcher (Linux /proc)."""
    launcher = os.getppid()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == launcher:
                os.kill(int(entry), signal.SIGKILL)
    os.kill(launcher, signal.SIGKILL)


def trainer_callback(step: str):
    """A TrainerCallback that calls point(step, "checkpoint") after each save (only built when chaos is on)."""
    if not os.environ.get(ENV):
        return None
    from transformers import TrainerCallback

    class ChaosCallback(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()  # every rank has written its part of the checkpoint (RNG state, ZeRO shards)
            if state.is_world_process_zero:
                point(step, "checkpoint")

    return ChaosCallback()
