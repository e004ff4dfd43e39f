"""What every step does around its work: check inputs, fingerprint, start or resume its folder, write the manifest.

A step's fingerprint is a hash of its name, its config (the fields that differ from the defaults) and the *content*
of its inputs (their manifests' output hashes). The driver skips a step whose manifest carries the same fingerprint.
Partial work in a folder is kept only if it was made under the same fingerprint (so a resumed step continues its own
work, never someone else's).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import shutil
import time
from pathlib import Path

from srpo.runfolder import FINGERPRINT, MANIFEST, atomic_write_text, canonical_hash, outputs_digest, write_manifest

# Fields that name where things go, not what is computed: they do not change a step's result.
# Input folders are not fingerprinted by path either: their *content* is (input_digests), so a run folder can be
# moved or compared with another one.
_NOT_FINGERPRINTED = {"output_dir", "logging_dir", "run_name", "run_dir", "report_to", "disable_tqdm",
                      "logging_first_step", "logging_steps", "save_steps", "save_total_limit", "save_strategy",
                      "data_dir", "policy_dir", "ref_dir", "pairs_dir", "samples_dir", "judgments_dir", "model_dir",
                      "eval_dirs", "previous_gate_dirs"}


STEP_LOG = "step.log"


class StepInputError(RuntimeError):
    """An input step is missing or incomplete."""


class StepFailed(RuntimeError):
    """A step run in other processes (accelerate launch) exited with an error; its own output says why."""


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _plain(value):
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def config_diff(args) -> dict:
    """The fields of a config dataclass that differ from its class defaults (what the user actually chose)."""
    out = {}
    for f in dataclasses.fields(args):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        value = _plain(getattr(args, f.name))
        if value != _plain(default):
            out[f.name] = value
    return json.loads(json.dumps(out, default=str))


def launch_values(args) -> dict:
    """The YAML a step is rebuilt from (`accelerate launch`, and the manifest's `srpo <step> --config`): the fields the
    user chose (config_diff), less what does not parse back or must be derived again where the step runs:
    TrainingArguments' objects (accelerator_config: its repr would be read as a file name) and the fields a config's
    __post_init__ derived from this process's world size (GRPO's generation batch; `derived_fields()`).

    No blank config is built for the comparison: a TrainingArguments resets accelerate's process state when it sets up
    its devices, which inside a launched rank would leave the step's own trainer with one process."""
    derived = set(getattr(args, "derived_fields", lambda: ())())
    return {k: v for k, v in config_diff(args).items() if k not in derived and _parses_back(getattr(args, k))}


def _parses_back(value) -> bool:
    value = _plain(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, list):
        return all(_parses_back(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _parses_back(v) for k, v in value.items())
    return False


def model_input(model_dir: str) -> str:
    """What to fingerprint for a model a step reads: its run step's folder when the model is a step's `model/`
    (that manifest hashes it), else the model folder itself (stamped by its files)."""
    parent = Path(model_dir).parent
    return str(parent) if (parent / MANIFEST).exists() else str(model_dir)


def only_outputs(folder: str, *names: str) -> tuple[str, tuple[str, ...]]:
    """An input that is some of a step's outputs: the step's folder, fingerprinted by those outputs alone (a step that
    reads a data folder's SFT files does not rerun when the folder's RL prompts change)."""
    return str(folder), names


def input_digests(inputs: dict[str, str | tuple[str, tuple[str, ...]]]) -> dict:
    """name -> {dir, digest} for each input step folder; raises if an input has not completed. An input given by
    `only_outputs` is digested over the outputs it names (each must be in the manifest)."""
    out = {}
    for name, folder in sorted(inputs.items()):
        folder, names = folder if isinstance(folder, tuple) else (folder, None)
        manifest_path = Path(folder) / MANIFEST
        if not manifest_path.exists() and _is_model_folder(Path(folder)):
            out[name] = {"dir": str(folder), "digest": model_stamp(Path(folder))}
            continue
        if not manifest_path.exists():
            raise StepInputError(f"input '{name}' at {folder} is not complete (no {MANIFEST}); run that step first")
        manifest = json.loads(manifest_path.read_text())
        if names is None:
            out[name] = {"dir": str(folder), "digest": outputs_digest(manifest)}
            continue
        missing = [n for n in names if n not in manifest["outputs"]]
        if missing:
            raise StepInputError(f"input '{name}' at {folder} has no output {missing} (it has "
                                 f"{sorted(manifest['outputs'])}); rerun that step")
        out[name] = {"dir": str(folder), "outputs": list(names),
                     "digest": canonical_hash({n: manifest["outputs"][n] for n in names})}
    return out


def _barrier() -> None:
    import sys

    dist = sys.modules.get("torch.distributed")  # only if torch is already loaded: never import it for this
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.barrier()


def _is_model_folder(folder: Path) -> bool:
    return (folder / "config.json").exists() or (folder / "adapter_config.json").exists()


def model_stamp(folder: Path) -> str:
    """A model made outside any run (a downloaded base): its file names, sizes and mtimes, not a hash of 15 GB."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(folder).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


class StepRun:
    """One execution of a step: `folder`, `fingerprint`, then `with step:` (begin: keep or wipe partial work) around
    the work, which ends with `finish(outputs, stats)` (the manifest, last).

        step = StepRun.of(args, inputs(args), command="sample")
        if step.done():
            return None
        with step:
            ...
            return step.finish([SAMPLES], stats)
    """

    @classmethod
    def of(cls, args, inputs: dict[str, str], command: str, default_step: str = "") -> StepRun:
        """The step named by `args.step` in the run folder `args.run_dir` (the run folder maps names to paths)."""
        from srpo.runfolder import RunFolder

        name = args.step or default_step
        return cls(name, args, inputs, RunFolder(Path(args.run_dir)).step_dir(name), command=command)

    def __enter__(self) -> StepRun:
        self.begin()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        # Partial work stays for the resume after an error; a body that returned without its manifest is a bug.
        if exc_type is None and not self.finished:
            raise RuntimeError(f"step {self.name} ended without finish(): no manifest was written")
        return False

    def __init__(self, name: str, args, inputs: dict[str, str], folder: str | os.PathLike, command: str):
        self.name = name
        self.command = command  # the srpo subcommand that runs this step alone
        self.folder = Path(folder)
        self.config = config_diff(args)
        self.rerun_config = launch_values(args)  # what `command` reruns the step from
        self.inputs = input_digests(inputs)
        fingerprinted = {k: v for k, v in self.config.items() if k not in _NOT_FINGERPRINTED}
        self.fingerprint = canonical_hash({"step": name.split("/")[-1], "config": fingerprinted,
                                           "inputs": {k: v["digest"] for k, v in self.inputs.items()}})
        self.started = time.time()
        self.finished = False

    def done(self) -> bool:
        m = self.folder / MANIFEST
        return m.exists() and json.loads(m.read_text()).get("fingerprint") == self.fingerprint

    def begin(self) -> None:
        """Keep partial work made under this fingerprint; wipe anything else (stale config, other inputs)."""
        try:
            self._begin_on_main()
        finally:
            _barrier()  # other ranks must not touch the folder before rank 0 has prepared it

    def _begin_on_main(self) -> None:
        if not is_main_process():
            return
        marker = self.folder / FINGERPRINT
        if self.folder.exists() and (not marker.exists() or marker.read_text().strip() != self.fingerprint):
            for item in self.folder.iterdir():  # everything but the log being written (the driver's step.log)
                if item.name != STEP_LOG:
                    shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
        elif (self.folder / MANIFEST).exists():
            (self.folder / MANIFEST).unlink()  # a finished step under this fingerprint being redone on purpose
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(marker, self.fingerprint + "\n")

    def finish(self, outputs: list[str], stats: dict | None = None) -> dict | None:
        self.finished = True
        if not is_main_process():
            return None
        import yaml

        # The exact config of this execution, so `command` reruns the step by hand.
        config_path = self.folder / "step_config.yaml"
        atomic_write_text(config_path, yaml.safe_dump(self.rerun_config, sort_keys=True))
        from srpo import chaos

        chaos.point(self.name, "manifest")  # outputs written, manifest not yet
        return write_manifest(self.folder, step=self.name, fingerprint=self.fingerprint, config=self.config,
                              inputs=self.inputs, outputs=outputs, started=self.started, stats=stats,
                              command=f"srpo {self.command} --config {config_path}")


def append_batches(path: str | os.PathLike, batches, produce, *, step: str, desc: str, fsync: bool = False,
                   ensure_ascii: bool = True, written=None) -> None:
    """The resumable loop of every batched step (build, sample, judge, eval): `produce(batch)` -> rows, appended to
    the JSONL at `path` in one write per batch, so a kill loses at most the batch in flight and a torn last line is
    dropped on resume (srpo.runfolder.read_complete_jsonl). Which batches are still to do is the caller's to say;
    `written(rows)` runs once a batch is on disk (e.g. to stop on a failure without losing what was paid for)."""
    from srpo import chaos
    from srpo.progress import progress

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for batch in progress(batches, desc=desc):
            rows = produce(batch)
            f.write("".join(json.dumps(r, sort_keys=True, ensure_ascii=ensure_ascii) + "\n" for r in rows))
            f.flush()
            chaos.point(step, "batch")
            if fsync:
                os.fsync(f.fileno())
            if written is not None:
                written(rows)
