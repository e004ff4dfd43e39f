"""`srpo status RUN_DIR`: which steps are done, which one was running, the gate decisions, and how to resume."""

from __future__ import annotations

import json
from pathlib import Path

from srpo.runfolder import FINGERPRINT, MANIFEST, RunFolder


def print_status(run_dir: str) -> int:
    root = Path(run_dir)
    if not (root / "config.yaml").exists():
        print(f"{run_dir!r} is not a run folder (no config.yaml); runs live in runs/<name>/")
        return 2
    rf = RunFolder(root)
    done, running = [], []
    for folder in sorted({p.parent for p in root.rglob(FINGERPRINT)} | {p.parent for p in root.rglob(MANIFEST)}):
        step = str(folder.relative_to(root))
        (done if (folder / MANIFEST).exists() else running).append(step)
    print(f"run {root}")
    print(f"  steps done ({len(done)}): {', '.join(done) or '-'}")
    if running:
        print(f"  started but not finished: {', '.join(running)} (resumes from its partial work)")
    for gate in sorted(root.glob("iter_*/gate/gate.json")):
        d = json.loads(gate.read_text())["decision"]
        print(f"  {gate.parent.parent.name}: {d['decision']} — {'; '.join(d['reasons'])}")
    print(f"  ledger: {len(rf.ledger())} completed step(s)")
    print(f"  resume with: srpo run {root / 'config.yaml'}")
    return 0
