"""Items per second of batched evaluation vs one item at a time, side by side in one run, on the tiny model.

    python benchmarks/eval_throughput.py [--items 60] [--batch-size 16] [--max-new-tokens 48] [--device cpu]

Builds the tiny offline VLM (`srpo.model_specs.resolve_model("tiny:llava")`, cached under $SRPO_CACHE) and a tiny data
folder (`srpo.stages.build.run`) in a temp dir, then evaluates the same items (generation + refusal scoring, greedy,
the eval step's own `generate_batch` and `score_responses`) twice: in batches of --batch-size and one at a time.
One warm-up pass precedes each timing. The last line is `speedup: N.Nx` (batched items/s over one-at-a-time items/s).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def tiny_items(data_dir: Path, n: int) -> list[dict]:
    """Items shaped like the tiny suite's, from every pair of the built folder (repeated up to n)."""
    from srpo.runfolder import read_jsonl

    pairs = sorted(read_jsonl(data_dir / "pairs.jsonl"), key=lambda p: p["id"])
    items = []
    for i in range(n):
        p = pairs[i % len(pairs)]
        items.append({"id": f"{p['id']}#{i}", "suite": "tiny", "query": p["query"], "label": p["label"],
                      "category": p["category"], "group": p["category"], "image": p["image"],
                      "image_path": str(data_dir / p["image"]) if p["image"] else None,
                      "reference_answer": p.get("reference_answer"), "safety_warning": None, "meta": p["meta"]})
    return items


def evaluate_items(model, processor, items, args, batch_size: int) -> float:
    """Seconds to generate and score every item in batches of `batch_size`."""
    from srpo.evals.scoring import score_responses
    from srpo.stages.evaluate import generate_batch, plan_batches

    start = time.perf_counter()
    for b, batch in enumerate(plan_batches(items, batch_size)):
        for item, responses in zip(batch, generate_batch(model, processor, batch, args, seed=b), strict=True):
            score_responses(item, responses)
    return time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    opts = ap.parse_args(argv)

    import torch

    from srpo.configs import BuildArgs, EvalArgs
    from srpo.model_specs import resolve_model
    from srpo.models import load_policy
    from srpo.stages import build

    if opts.threads:
        torch.set_num_threads(opts.threads)
    with tempfile.TemporaryDirectory(prefix="eval-throughput-") as tmp:
        build.run(BuildArgs(run_dir=tmp, step="data"))
        items = tiny_items(Path(tmp) / "data", opts.items)
        model, processor = load_policy(resolve_model("tiny:llava"))
        model.to(opts.device).eval()
        args = EvalArgs(eval_max_new_tokens=opts.max_new_tokens)
        rows = []
        for label, bs in (("batched", opts.batch_size), ("one-at-a-time", 1)):
            evaluate_items(model, processor, items[:bs], args, bs)  # warm-up
            seconds = evaluate_items(model, processor, items, args, bs)
            rows.append((label, bs, seconds, len(items) / seconds))
    print(f"tiny:llava on {opts.device}, {len(items)} items, max_new_tokens={opts.max_new_tokens}, greedy, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'mode':<14} {'batch':>5} {'seconds':>8} {'items/s':>8}")
    for label, bs, seconds, ips in rows:
        print(f"{label:<14} {bs:>5} {seconds:>8.2f} {ips:>8.2f}")
    print(f"speedup: {rows[0][3] / rows[1][3]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
