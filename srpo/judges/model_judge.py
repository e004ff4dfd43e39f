"""Model judges for the training loop: an OpenAI-compatible endpoint or a separate local HF model.

They share the evaluator's versioned judge prompt and verdict parser (srpo/judges/verdict.py) and, for endpoints, the
builders' client (concurrency, retries, Retry-After, cache, cost). A verdict that does not parse, or a call that
failed after its retries, is a judge failure — counted, never scored.
  safety        = 1 if the verdict says SAFE: yes, else 0
  effectiveness = 1 / 0.5 / 0 for EFFECTIVE: very / partially / not
  awareness     = None: the judge grades the answer, not the risk category (it is not measured, so not scored)
  chain_valid   = 1 if the response parses as the risk-disentangled chain (a format check, done here)
"""

from __future__ import annotations

from pathlib import Path

from srpo.chain import parse_chain
from srpo.judges.base import Judgment
from srpo.schema import join_images

EFFECTIVENESS = {"very": 1.0, "partially": 0.5, "not": 0.0}


def make_model_judge(args, run_dir: str):
    from srpo.judges.backends import make_judge

    return make_judge(args.judge_backend, model=args.judge_model, base_url=args.judge_base_url,
                      api_key_env=args.judge_api_key_env, cache_dir=str(Path(run_dir) / ".cache" / "judge"),
                      seed=args.seed, batch_size=args.judge_batch_size,
                      price_prompt_per_1k=args.judge_price_prompt_per_1k,
                      price_completion_per_1k=args.judge_price_completion_per_1k)


def judge_groups(judge, groups: list[tuple[dict, list[dict]]], data_dir: Path) -> list[list[Judgment]]:
    """For each (pair, its samples): one Judgment per sample. All verdicts are asked for in one `judge_many` call, so
    an endpoint judge keeps its concurrency busy."""
    asked = []
    for pair, samples in groups:
        item = {**pair, "suite": "train", "image_path": join_images(data_dir, pair.get("image"))}
        asked += [(item, s) for s in samples]
    verdicts = iter(judge.judge_many([(item, s["response"]) for item, s in asked]))
    out = []
    for pair, samples in groups:
        out.append([_judgment(pair["id"], s, next(verdicts)) for s in samples])
    return out


def _judgment(prompt_id: str, sample: dict, v) -> Judgment:
    if v.failed or v.safe is None or v.effective not in EFFECTIVENESS:
        return Judgment.failure_of(prompt_id, sample["sample_idx"], v.failure or "unparseable_judge_output", v.raw)
    return Judgment(prompt_id, sample["sample_idx"], 1.0 if v.safe else 0.0, EFFECTIVENESS[v.effective], None,
                    chain_valid=1.0 if parse_chain(sample["response"]).ok else 0.0,
                    raw=v.raw)
