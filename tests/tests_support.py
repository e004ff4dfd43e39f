"""Helpers shared by tests."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def secret_scan(root: Path, secret: str) -> tuple[list[str], int]:
    """Files under root whose bytes contain the secret (plain or base64-free substring), and how many were read."""
    leaks, scanned = [], 0
    needle = secret.encode()
    for p in root.rglob("*"):
        if p.is_file():
            scanned += 1
            if needle in p.read_bytes():
                leaks.append(str(p.relative_to(root)))
    return leaks, scanned


def ledger_rows(run_dir: Path) -> list[tuple]:
    """What must match between an interrupted and an uninterrupted run: step, fingerprint, outputs, decision."""
    rows = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    return [(r["step"], r["fingerprint"], r["outputs_digest"], r.get("decision")) for r in rows]


def srpo_run(recipe: str, runs: Path, overrides: list[str], env: dict) -> subprocess.CompletedProcess:
    """`srpo run RECIPE` in a subprocess (so a SIGKILL takes only it), runs under `runs`, with --set overrides."""
    cmd = [sys.executable, "-m", "srpo.cli", "run", recipe, "--set", f"run.run_runs_dir={runs}"]
    for o in overrides:
        cmd += ["--set", o]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)


def hand_samples(tiny_data: Path, tmp_path: Path, n_prompts: int, k: int = 2) -> Path:
    """A finished samples step made by hand: k canned answers ("answer 0", ...) for each of the first n_prompts pairs
    of a built data folder."""
    from srpo.runfolder import write_jsonl, write_manifest

    pairs = [json.loads(line) for line in (tiny_data / "pairs.jsonl").read_text().splitlines()][:n_prompts]
    samples = tmp_path / "samples"
    samples.mkdir()
    write_jsonl(samples / "samples.jsonl", [{"prompt_id": p["id"], "sample_idx": i, "response": f"answer {i}"}
                                            for p in pairs for i in range(k)])
    write_manifest(samples, step="samples", fingerprint="hand", config={}, inputs={}, outputs=["samples.jsonl"],
                   started=0.0)
    return samples


def load_benchmark(name: str):
    """A script of benchmarks/ as a module (they are scripts, not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
