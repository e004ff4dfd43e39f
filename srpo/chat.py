"""`srpo chat RUN --image PATH [--query TEXT]`: a run's policy answers a prompt about an image; the reasoning chain
and the answer are shown apart, so a user can look at what training did.

    srpo chat runs/tiny-demo --image photo.png --query "What is the fastest way down from here?"
    srpo chat runs/tiny-demo --image photo.png                      # one question per line from standard input
    srpo chat runs/tiny-demo --iteration 0 --image photo.png ...    # the SFT policy instead of the final one

The policy is the run's final one (report/summary.json's final_policy) unless --iteration names another (0 = SFT,
t = iteration t's DPO or GRPO model; a rejected iteration's model is still on disk). Generation is greedy, as the
evaluator's. --json prints one object per answer: query, policy, the chain's steps, the answer, parse problems.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def policy_folder(run_dir: Path, iteration: int | None) -> Path:
    """The policy folder of a run: the final one, or iteration t's (0 = SFT)."""
    from srpo.runfolder import MODEL, RunFolder

    rf = RunFolder(run_dir)
    if not rf.config_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml); runs live in runs/<name>/")
    if iteration is None:
        summary = rf.summary()
        if summary is None:
            raise FileNotFoundError(f"{run_dir} has no report/summary.json yet (the run has not finished); name a "
                                    "policy with --iteration N (0 = SFT)")
        return Path(summary["final_policy"])
    if iteration == 0:
        return rf.step_dir("sft") / MODEL
    for stage in ("grpo", "dpo"):
        folder = rf.step_dir(RunFolder.iter_step(iteration, stage)) / MODEL
        if folder.exists():
            return folder
    raise FileNotFoundError(f"{run_dir} has no trained policy for iteration {iteration} (no iter_{iteration:03d}/dpo "
                            "or grpo model)")


def render(query: str, text: str, policy: Path) -> dict:
    from srpo.chain import STEPS, parse_chain

    parsed = parse_chain(text)
    steps = {label: parsed.fields[key] for key, label in STEPS[:-1] if key in parsed.fields}
    answer = parsed.fields.get("answer", text).strip()
    return {"query": query, "policy": str(policy), "chain": steps, "answer": answer, "problems": parsed.errors,
            "raw": text}


def show(result: dict) -> str:
    lines = [f"> {result['query']}", "", "reasoning chain:"]
    lines += [f"  {label}: {value}" for label, value in result["chain"].items()] or ["  (none: not a chain)"]
    lines += ["", "answer:", *("  " + line for line in result["answer"].splitlines())]
    if result["problems"]:
        lines += ["", "not a well-formed chain: " + "; ".join(result["problems"])]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="srpo chat", description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="the run folder (runs/<name>)")
    ap.add_argument("--image", action="append", help="the image (omit for a text-only prompt; repeat it for a "
                                                     "multi-image prompt, in order)")
    ap.add_argument("--query", help="the question; without it, one question per line from standard input")
    ap.add_argument("--iteration", type=int, help="this iteration's policy instead of the final one (0 = SFT)")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--json", action="store_true", help="one JSON object per answer")
    args = ap.parse_args(argv)
    policy = policy_folder(Path(args.run), args.iteration)
    for path in args.image or []:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--image {path}: no such file")
    from srpo.models import open_images

    image = open_images(args.image) or None
    queries = [args.query] if args.query else [line.strip() for line in sys.stdin if line.strip()]
    if not queries:
        raise ValueError("no question: give --query TEXT, or questions on standard input, one per line")
    from srpo.models import generate, load_policy
    from srpo.sharding import inference_device

    model, processor = load_policy(str(policy))
    model.to(inference_device()).eval()
    texts = generate(model, processor, [(q, image) for q in queries], max_new_tokens=args.max_new_tokens, k=1)
    for query, (text,) in zip(queries, texts, strict=True):
        result = render(query, text, policy)
        print(json.dumps(result) if args.json else show(result) + "\n", flush=True)
    return 0
