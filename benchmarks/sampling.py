"""Generated tokens/s of srpo's batched K-sampler vs naive per-prompt, per-sample `generate`, in one run.

    python benchmarks/sampling.py [--prompts 16] [--k 4] [--new-tokens 48] [--batch 32]

Both sides run the same tiny model (built offline), the same prompts and images, the same sampling settings and the
same number of new tokens per sequence (EOS suppressed via min_new_tokens so the token counts are equal). The naive
side is what a first script does: one `generate` call per prompt per sample. The batched side is srpo.models.generate:
left-padded prompts, `num_return_sequences=K` (the prompt is expanded after the processor, so images are encoded
once per prompt), KV cache on. Last line: `speedup: N.Nx`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--batch", type=int, default=32, help="prompts per batched generate() call")
    a = ap.parse_args()
    os.environ.setdefault("SRPO_CACHE", str(Path(tempfile.gettempdir()) / "srpo-bench-cache"))
    import torch

    from srpo.model_specs import resolve_model
    from srpo.models import load_policy, user_message
    from srpo.world.scenes import INTENTS, OBJECTS, render_scene

    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    model, processor = load_policy(resolve_model("tiny:llava"))
    model.eval()
    queries = [q for q, _, _ in INTENTS.values()]
    prompts = [(queries[i % len(queries)], render_scene(OBJECTS[i % len(OBJECTS)], seed=i)) for i in range(a.prompts)]
    common = dict(max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens)

    # Naive: one generate() per prompt per sample.
    tok = processor.tokenizer
    tok.padding_side = "left"
    t0 = time.perf_counter()
    naive_tokens = 0
    for n, (q, img) in enumerate(prompts):
        text = processor.apply_chat_template(user_message(q, True), add_generation_prompt=True, tokenize=False)
        inputs = processor(text=[text], images=[img], return_tensors="pt")
        for k in range(a.k):
            torch.manual_seed(n * 1000 + k)
            with torch.no_grad():
                out = model.generate(**inputs, do_sample=True, top_k=0, pad_token_id=tok.pad_token_id, **common)
            naive_tokens += out.shape[1] - inputs["input_ids"].shape[1]
    naive_s = time.perf_counter() - t0

    # Batched: srpo's sampler.
    import srpo.models as models

    t0 = time.perf_counter()
    batched_tokens = 0
    original = model.generate

    def counting_generate(**kw):
        nonlocal batched_tokens
        out = original(**kw, min_new_tokens=a.new_tokens)
        batched_tokens += (out.shape[1] - kw["input_ids"].shape[1]) * out.shape[0]
        return out

    model.generate = counting_generate
    for i in range(0, len(prompts), a.batch):
        models.generate(model, processor, prompts[i:i + a.batch], max_new_tokens=a.new_tokens, k=a.k,
                        do_sample=True, seed=i)
    batched_s = time.perf_counter() - t0

    naive_rate, batched_rate = naive_tokens / naive_s, batched_tokens / batched_s
    print(f"prompts={a.prompts} k={a.k} new_tokens={a.new_tokens} batch={a.batch} threads={torch.get_num_threads()}")
    print(f"naive   : {naive_tokens} tokens in {naive_s:.2f} s = {naive_rate:.0f} tok/s ({a.prompts * a.k} calls)")
    print(f"batched : {batched_tokens} tokens in {batched_s:.2f} s = {batched_rate:.0f} tok/s "
          f"({-(-a.prompts // a.batch)} calls)")
    print(f"speedup: {batched_rate / naive_rate:.1f}x")


if __name__ == "__main__":
    main()
