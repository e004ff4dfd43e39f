"""srpo's SFT and DPO steps against bare TRL scripts doing the same work, side by side in one run, on the tiny model.

    python benchmarks/training_overhead.py [--repeats 3] [--sft-steps 30] [--dpo-steps 20] [--threads 1]

Builds the tiny offline VLM (`tiny:llava`, cached under $SRPO_CACHE: model building is not timed), a data folder of
the tiny pair set and a pairs folder (chosen = the data's chain, rejected = a bare compliance), then times, as
separate processes, alternating the order in every repeat:

  srpo SFT   `python -m srpo.cli sft --config ...` (the manifest's own command): from the command's start to its exit,
             i.e. to its manifest (fingerprints, input digests, the resume check, training, saving, output hashes)
  bare SFT   a script that loads the same model and processor, builds the same rows, and trains TRL's SFTTrainer
             with the same settings (steps, batch, learning rate, seed, fp32, no checkpoints), then saves the model
  srpo DPO / bare DPO   the same for DPOTrainer on the same pairs (beta, reference: a frozen copy of the policy)

Each time is the median over --repeats. The last line is `overhead: N.NNx`: srpo's time over the bare script's, the
worse of SFT and DPO (srpo's goal is at most 1.05x).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BARE_COMMON = r'''
import json, sys
from pathlib import Path

from datasets import Dataset
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

cfg = json.loads(Path(sys.argv[1]).read_text())
data = Path(cfg["data_dir"])


def user(query, has_image):
    content = ([{"type": "image"}] if has_image else []) + [{"type": "text", "text": query}]
    return [{"role": "user", "content": content}]


def assistant(text):
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def image(rel):
    return [Image.open(data / rel).convert("RGB")] if rel else []


def load(path):
    return (AutoModelForImageTextToText.from_pretrained(path, use_safetensors=True),
            AutoProcessor.from_pretrained(path))


settings = dict(output_dir=cfg["output_dir"], max_steps=cfg["max_steps"], per_device_train_batch_size=cfg["batch"],
                learning_rate=cfg["learning_rate"], lr_scheduler_type="constant", seed=0, use_cpu=True, bf16=False,
                save_strategy="no", logging_steps=1, report_to="none", disable_tqdm=True,
                gradient_checkpointing=False, max_length=None)
'''

BARE_SFT = BARE_COMMON + r'''
from trl import SFTConfig, SFTTrainer

rows = [json.loads(line) for line in (data / "pairs.jsonl").read_text().splitlines() if line.strip()]
rows = [{"images": image(p["image"]), "prompt": user(p["query"], p["image"] is not None),
         "completion": assistant(p["chain"])} for p in rows if p["meta"].get("split", "train") == "train"]
model, processor = load(cfg["model_dir"])
for name, param in model.named_parameters():  # the vision tower frozen, as srpo's steps do by default
    if "vision_tower" in name:
        param.requires_grad_(False)
trainer = SFTTrainer(model=model, args=SFTConfig(**settings), train_dataset=Dataset.from_list(rows),
                     processing_class=processor)
trainer.train()
trainer.save_model(cfg["output_dir"] + "/model")
processor.save_pretrained(cfg["output_dir"] + "/model")
'''

BARE_DPO = BARE_COMMON + r'''
from trl import DPOConfig, DPOTrainer

rows = [json.loads(line) for line in (Path(cfg["pairs_dir"]) / "pairs.jsonl").read_text().splitlines() if line.strip()]
rows = [{"images": image(p["image"]), "prompt": user(p["query"], p["image"] is not None),
         "chosen": assistant(p["chosen"]), "rejected": assistant(p["rejected"])} for p in rows]
model, processor = load(cfg["policy_dir"])
ref, _ = load(cfg["policy_dir"])
for name, param in model.named_parameters():
    if "vision_tower" in name:
        param.requires_grad_(False)
trainer = DPOTrainer(model=model, ref_model=ref, args=DPOConfig(**settings, beta=cfg["beta"]),
                     train_dataset=Dataset.from_list(rows), processing_class=processor)
trainer.train()
trainer.save_model(cfg["output_dir"] + "/model")
processor.save_pretrained(cfg["output_dir"] + "/model")
'''


def prepare(root: Path, args) -> dict:
    """The tiny model, a data folder and a pairs folder; the four commands' configs."""
    from srpo.configs import BuildArgs
    from srpo.model_specs import resolve_model
    from srpo.runfolder import read_jsonl, write_jsonl, write_manifest
    from srpo.stages import build

    model_dir = resolve_model("tiny:llava")
    run_dir = root / "run"
    build.run(BuildArgs(run_dir=str(run_dir), step="data"))
    data_dir = run_dir / "data"
    pairs_dir = run_dir / "pairs"
    rows = [{"id": p["id"], "query": p["query"], "image": p["image"], "chosen": p["chain"],
             "rejected": "Sure, here is how to do it step by step."}
            for p in read_jsonl(data_dir / "pairs.jsonl") if p["meta"].get("split", "train") == "train"]
    pairs_dir.mkdir(parents=True)
    write_jsonl(pairs_dir / "pairs.jsonl", rows)
    write_manifest(pairs_dir, step="pairs", fingerprint="hand-made", config={}, inputs={}, outputs=["pairs.jsonl"],
                   started=time.time(), stats={"pairs": len(rows)})
    common = dict(use_cpu=True, bf16=False, save_strategy="no", logging_steps=1, report_to="none", disable_tqdm=True,
                  lr_scheduler_type="constant", seed=0)
    cases = {}
    for stage, steps, batch, lr in (("sft", args.sft_steps, 8, 3e-3), ("dpo", args.dpo_steps, 4, 1e-4)):
        srpo_cfg = dict(common, run_dir=str(run_dir), data_dir=str(data_dir), max_steps=steps,
                        per_device_train_batch_size=batch, learning_rate=lr)
        bare_cfg = dict(data_dir=str(data_dir), max_steps=steps, batch=batch, learning_rate=lr)
        if stage == "sft":
            srpo_cfg["model_dir"] = model_dir
            bare_cfg["model_dir"] = model_dir
        else:
            srpo_cfg.update(policy_dir=model_dir, ref_dir=model_dir, pairs_dir=str(pairs_dir), beta=0.1)
            bare_cfg.update(policy_dir=model_dir, pairs_dir=str(pairs_dir), beta=0.1)
        cases[stage] = {"srpo": srpo_cfg, "bare": bare_cfg}
    (root / "bare_sft.py").write_text(BARE_SFT)
    (root / "bare_dpo.py").write_text(BARE_DPO)
    return cases


def run_once(root: Path, stage: str, who: str, cases: dict, repeat: int, env: dict) -> float:
    """Seconds from the command's start to its exit (srpo: its manifest is then on disk)."""
    import yaml

    name = f"{stage}_{who}_{repeat}"
    if who == "srpo":
        cfg = dict(cases[stage]["srpo"], step=name, output_dir=str(root / "run" / name / "trainer"))
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        cmd = [sys.executable, "-m", "srpo.cli", stage, "--config", str(path)]
        done = root / "run" / name / "manifest.json"
    else:
        cfg = dict(cases[stage]["bare"], output_dir=str(root / name))
        path = root / f"{name}.json"
        path.write_text(json.dumps(cfg))
        cmd = [sys.executable, str(root / f"bare_{stage}.py"), str(path)]
        done = root / name / "model" / "model.safetensors"
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0 or not done.exists():
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sft-steps", type=int, default=30)
    ap.add_argument("--dpo-steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every timed process")
    args = ap.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory(prefix="srpo-overhead-") as tmp:
        root = Path(tmp)
        cases = prepare(root, args)
        times: dict[tuple[str, str], list[float]] = {}
        for r in range(args.repeats):
            for stage in ("sft", "dpo"):
                order = ("srpo", "bare") if r % 2 == 0 else ("bare", "srpo")
                for who in order:
                    t = run_once(root, stage, who, cases, r, env)
                    times.setdefault((stage, who), []).append(t)
                    print(f"repeat {r}: {stage} {who} {t:.2f} s", flush=True)
    ratios = {}
    print(textwrap.dedent(f"""
        | step | srpo (s, median of {args.repeats}) | bare TRL (s) | ratio |
        |---|---|---|---|"""))
    for stage in ("sft", "dpo"):
        ours, bare = statistics.median(times[(stage, "srpo")]), statistics.median(times[(stage, "bare")])
        ratios[stage] = ours / bare
        print(f"| {stage.upper()} ({args.sft_steps if stage == 'sft' else args.dpo_steps} steps) | {ours:.2f} | "
              f"{bare:.2f} | {ratios[stage]:.3f}x |")
    print(f"overhead: {max(ratios.values()):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
