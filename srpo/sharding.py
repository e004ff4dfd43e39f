"""Generation steps (sample, eval, self-judge) across the processes of `accelerate launch` / `torchrun`.

Work is split into batches in a fixed global order, batch b goes to rank b % world_size, and every batch carries its
own seed. Each rank appends its finished batches to its own part file (`<step>/parts/<name>.rank<R>.jsonl`); after a
barrier, rank 0 merges all parts into the step's output in the global order. So the merged file is the same for any
number of processes (on the same hardware), a killed step resumes from whatever any rank had finished (even under
another world size), and only rank 0 writes the step's outputs and manifest.

Alone (no WORLD_SIZE in the environment) all of this reduces to one part file and one merge.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from srpo.runfolder import read_complete_jsonl, write_jsonl

PARTS = "parts"


def rank_and_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def inference_device() -> str:
    """This process's device: its own GPU (LOCAL_RANK) when there is CUDA, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


class ShardedGeneration:
    """Context for a sharded generation step; use as `with ShardedGeneration(folder, "samples") as shard:`."""

    def __init__(self, folder: Path, name: str):
        self.rank, self.world = rank_and_world()
        self.folder = Path(folder)
        self.name = name
        self._own_group = False

    def __enter__(self) -> ShardedGeneration:
        if self.world > 1:
            import torch
            import torch.distributed as dist

            if not dist.is_initialized():
                if torch.cuda.is_available():
                    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
                dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
                self._own_group = True
        return self

    def __exit__(self, *exc) -> None:
        if self._own_group:
            import torch.distributed as dist

            if exc[0] is None:
                dist.barrier()
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def mine(self, batches: list) -> Iterable[tuple[int, object]]:
        """(global index, batch) for the batches this rank generates."""
        return ((b, batch) for b, batch in enumerate(batches) if b % self.world == self.rank)

    @property
    def part_path(self) -> Path:
        return self.folder / PARTS / f"{self.name}.rank{self.rank}.jsonl"

    def finished_rows(self, merged: Path | None = None) -> list[dict]:
        """Complete rows any rank (of this or an earlier launch) has written, plus those of an earlier merge."""
        rows = []
        for part in sorted((self.folder / PARTS).glob(f"{self.name}.rank*.jsonl")):
            rows += read_complete_jsonl(part, truncate=part == self.part_path)  # others may be appending
        if merged is not None and merged.exists():
            rows += read_complete_jsonl(merged)
        return rows

    def open_part(self):
        self.part_path.parent.mkdir(parents=True, exist_ok=True)
        return open(self.part_path, "a", encoding="utf-8")

    def merge(self, out_path: Path, key: Callable[[dict], object], order: Callable[[dict], object]) -> list[dict]:
        """After every rank is done: all rows, deduplicated by `key`, sorted by `order`, written and returned by
        rank 0 (the other ranks get [] and have nothing left to do)."""
        self.barrier()
        if self.rank != 0:
            return []
        rows = {}
        for row in self.finished_rows(out_path):
            rows.setdefault(key(row), row)
        merged = sorted(rows.values(), key=order)
        write_jsonl(out_path, merged)  # atomic: a kill leaves the parts and no half-written merge
        return merged

    def cleanup(self) -> None:
        """Rank 0 drops the part files once the step's manifest is written (resume points, not outputs)."""
        if self.rank == 0:
            shutil.rmtree(self.folder / PARTS, ignore_errors=True)
