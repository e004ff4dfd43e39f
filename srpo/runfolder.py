"""The run folder is the contract between stages: paths, atomic writes, hashes, manifests and the ledger.

This is the only module that maps a run and a step name to a folder. A step's folder counts only when its
`manifest.json` exists; the manifest is written last, atomically, by rank 0.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
FINGERPRINT = ".fingerprint"  # written when a step starts: partial work under another fingerprint is discarded
LEDGER = "ledger.jsonl"

# Artifact names: what each step writes inside its folder (the only place they are spelled).
PAIRS = "pairs.jsonl"  # data: the built pairs (train and eval splits)
SFT_MIX = "sft_mix.jsonl"  # data: rows SFT trains on beside the chains ({id, query, image, completion, kind})
QUARANTINE = "quarantine.jsonl"  # data: source rows refused, with file, line, field and reason
FAILED = "failed.jsonl"  # data: pairs whose chain the teacher could not write
IMAGES = "images"  # data: the pairs' images
RL_PROMPTS = "rl_prompts.jsonl"  # data, when asked for: RL prompts {id, image, query, source, meta}, no label or chain
RL_IMAGES = "rl_images"  # data, with RL_PROMPTS: their images
MODEL = "model"  # base, sft, dpo: the policy (full weights or an adapter, with its processor)
LOG_HISTORY = "log_history.json"  # sft, dpo: the trainer's log
SAMPLES = "samples.jsonl"  # samples: {prompt_id, sample_idx, response}
JUDGMENTS = "judgments.jsonl"  # judgments: one Judgment per sample
GENERATIONS = "generations.jsonl"  # eval: raw responses, appended per batch (resume)
ITEMS = "items.jsonl"  # eval: every item with its responses and scores
METRICS = "metrics.json"  # eval: per-suite and gating metrics
GATE = "gate.json"  # iter_NNN/gate: the gate's decision
SUMMARY = "summary.json"  # report: the run's final figures


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = True) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: str | os.PathLike, rows) -> int:
    rows = list(rows)
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows))
    return len(rows)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def data_prompts(data_dir: str | os.PathLike) -> dict[str, dict]:
    """Every prompt a sample can name, by id: a data folder's pairs, and its RL prompts (no label) when it has
    them."""
    data_dir = Path(data_dir)
    prompts = {p["id"]: p for p in read_jsonl(data_dir / PAIRS)}
    if (data_dir / RL_PROMPTS).is_file():
        prompts.update((p["id"], p) for p in read_jsonl(data_dir / RL_PROMPTS))
    return prompts


def prompts_of(data_dir: Path, split: str) -> list[dict]:
    return sorted((p for p in read_jsonl(Path(data_dir) / PAIRS) if p["meta"].get("split", "train") == split),
                  key=lambda p: p["id"])


def rl_prompts_of(data_dir: Path) -> list[dict]:
    path = Path(data_dir) / RL_PROMPTS
    return sorted(read_jsonl(path), key=lambda p: p["id"]) if path.is_file() else []


def choose_prompts(data_dir: Path, prompt_set: str) -> tuple[str, list[dict], dict]:
    """(which set, its prompts, how many of each the data folder has): RL prompts when asked for or, for 'auto',
    when there are any; else the SFT training prompts."""
    rl, train = rl_prompts_of(data_dir), prompts_of(data_dir, "train")
    counts = {"rl": len(rl), "train": len(train)}
    if prompt_set == "rl" and not rl:
        raise ValueError(f"prompt set 'rl' (sample_prompt_set / grpo_prompt_set) but {data_dir} has no RL prompts "
                         f"({RL_PROMPTS}); build the data with build_rl_source (a prompt-only JSONL) or, for the "
                         "world, build_world_rl_fraction")
    if prompt_set == "rl" or (prompt_set == "auto" and rl):
        return "rl", rl, counts
    return "train", train, counts


def read_complete_jsonl(path: str | os.PathLike, truncate: bool = True) -> list[dict]:
    """Rows of an append-only JSONL that may end in a half-written line (a kill mid-write); the tail is dropped
    and (unless `truncate` is off: a file another process may be appending to) the file truncated to its last
    complete line so appends continue cleanly."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data) and truncate:
        with open(path, "r+b") as f:
            f.truncate(end)
    return [json.loads(line) for line in data[:end].decode("utf-8").splitlines() if line.strip()]


def canonical_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def file_hash(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def count_rows(path: Path) -> int | None:
    if path.suffix == ".jsonl":
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    return None


def describe_outputs(folder: Path, names: list[str]) -> dict:
    """Hash (and count rows of) each declared output; a folder output is hashed over its files, sorted."""
    out = {}
    for name in names:
        path = folder / name
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            h = hashlib.sha256()
            for p in files:
                h.update(str(p.relative_to(path)).encode())
                h.update(file_hash(p).encode())
            out[name] = {"sha256": h.hexdigest(), "files": len(files)}
        elif path.is_file():
            out[name] = {"sha256": file_hash(path), "rows": count_rows(path)}
        else:
            raise FileNotFoundError(f"step output {path} was not written")
    return out


def code_version() -> str:
    from srpo import __version__

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @classmethod
    def at(cls, runs_dir: str | os.PathLike, name: str) -> RunFolder:
        return cls(Path(runs_dir) / name)

    def step_dir(self, step: str) -> Path:
        """`data`, `sft`, `iter_001/samples`, ... — the only place step names become paths."""
        return self.root / step

    @staticmethod
    def iter_step(iteration: int, stage: str) -> str:
        return f"iter_{iteration:03d}/{stage}"

    def gate_path(self, iteration: int) -> Path:
        return self.step_dir(self.iter_step(iteration, "gate")) / GATE

    @property
    def ledger_path(self) -> Path:
        return self.root / LEDGER

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    def manifest(self, step: str) -> dict | None:
        path = self.step_dir(step) / MANIFEST
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            return None  # written atomically, so this is tampering; treat the step as not done

    def is_done(self, step: str, fingerprint: str) -> bool:
        m = self.manifest(step)
        return m is not None and m.get("fingerprint") == fingerprint

    def ledger(self) -> list[dict]:
        return read_complete_jsonl(self.ledger_path) if self.ledger_path.exists() else []

    def append_ledger(self, entry: dict) -> None:
        # One short line per append with O_APPEND; read_complete_jsonl drops a torn tail after a kill.
        self.ledger_path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, sort_keys=True) + "\n"
        with open(self.ledger_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    # Reading a run back (the run report). A step's outputs are read only once its manifest exists, and
    # a missing or unreadable file reads as None or [], so a run in progress reads as what it has finished.

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    def iterations(self) -> list[int]:
        """Iteration numbers that have a folder, finished or not, ascending."""
        found = set()
        for path in self.root.glob("iter_*"):
            digits = path.name[len("iter_"):]
            # Only the canonical spelling counts: `iter_1` is not the folder that iteration 1's steps use.
            if not (digits.isascii() and digits.isdigit() and path.is_dir()):
                continue
            if self.step_dir(self.iter_step(int(digits), "eval")).parent == path:
                found.add(int(digits))
        return sorted(found)

    def is_unfinished(self, step: str) -> bool:
        """The step was started (its folder exists) but has no manifest yet."""
        return self.step_dir(step).is_dir() and self.manifest(step) is None

    def step_stats(self, step: str) -> dict | None:
        """The `stats` of a finished step's manifest ({} when it recorded none); None when it has not finished."""
        manifest = self.manifest(step)
        if not isinstance(manifest, dict):
            return None
        stats = manifest.get("stats")
        return stats if isinstance(stats, dict) else {}

    def output_json(self, step: str, name: str):
        """A JSON output file of a finished step, parsed; None when the step has not finished or the file is bad."""
        return self._read_json(self.step_dir(step) / name) if self.manifest(step) is not None else None

    def output_jsonl(self, step: str, name: str) -> list[dict]:
        """The rows of a JSONL output file of a finished step; [] when the step has not finished or the file is bad."""
        if self.manifest(step) is None:
            return []
        try:
            return read_jsonl(self.step_dir(step) / name)
        except (OSError, ValueError):  # ValueError covers JSONDecodeError and UnicodeDecodeError
            return []

    def eval_metrics(self, iteration: int) -> dict | None:
        """iter_NNN/eval/metrics.json."""
        metrics = self.output_json(self.iter_step(iteration, "eval"), METRICS)
        return metrics if isinstance(metrics, dict) else None

    def eval_items(self, iteration: int) -> list[dict]:
        """iter_NNN/eval/items.jsonl: one scored eval answer per row."""
        return self.output_jsonl(self.iter_step(iteration, "eval"), ITEMS)

    def judgments(self, iteration: int) -> list[dict]:
        """iter_NNN/judgments/judgments.jsonl: one judge verdict per sampled response."""
        return self.output_jsonl(self.iter_step(iteration, "judgments"), JUDGMENTS)

    def log_history(self, step: str) -> list:
        """The trainer's log_history.json of a finished training step (`sft`, `iter_NNN/dpo`); [] when none."""
        history = self.output_json(step, LOG_HISTORY)
        return history if isinstance(history, list) else []

    def gate(self, iteration: int) -> dict | None:
        """iter_NNN/gate/gate.json once the gate step has finished; None before."""
        gate = self.output_json(self.iter_step(iteration, "gate"), GATE)
        return gate if isinstance(gate, dict) else None

    def config(self) -> dict | None:
        """config.yaml as a mapping; None when it is missing, unreadable or not a mapping."""
        import yaml

        try:
            config = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError):
            return None
        return config if isinstance(config, dict) else None

    def summary(self) -> dict | None:
        """report/summary.json, written by `srpo run` when a run finishes; None before that."""
        summary = self._read_json(self.report_dir / SUMMARY)
        return summary if isinstance(summary, dict) else None

    @staticmethod
    def _read_json(path: Path):
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None


def write_manifest(folder: Path, *, step: str, fingerprint: str, config: dict, inputs: dict, outputs: list[str],
                   started: float, stats: dict | None = None, command: str | None = None) -> dict:
    """Describe the finished step and write manifest.json last (rank 0 only; callers check)."""
    manifest = {
        "step": step,
        "fingerprint": fingerprint,
        "config": config,
        "inputs": inputs,
        "outputs": describe_outputs(folder, outputs),
        "code_version": code_version(),
        "wall_time_s": round(time.time() - started, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "stats": stats or {},
        "command": command,
    }
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def outputs_digest(manifest: dict) -> str:
    """What downstream steps depend on: the content of the outputs, not when or how fast they were made."""
    return canonical_hash(manifest["outputs"])
