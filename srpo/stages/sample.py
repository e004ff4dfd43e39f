"""Sample K responses per prompt from the current policy (batched HF generation).

    srpo sample --config runs/<name>/iter_001/samples/step_config.yaml

    accelerate launch --config_file launch/accelerate/ddp.yaml -m srpo.stages.sample --config <same>

The prompts (sample_prompt_set, default auto): the data folder's RL prompts (rl_prompts.jsonl: an image and a query
each, no label, no chain; build_rl_source or build_world_rl_fraction) when it has any, else its SFT training prompts,
which the policy has already been trained on with their chains. The manifest says which (stats.prompt_set: rl or
train) and how many of each the folder had.

Writes <step>/samples.jsonl ({prompt_id, sample_idx, response}). Batches are generated one at a time and appended to
a part file per process (srpo/sharding.py): a killed run resumes after the last complete batch, and because every
batch has its own seed the result equals an uninterrupted run, with any number of processes.

sample_mode: branched (SRPO's step-level paths; docs/judges.md, "Step-level pairs"): per prompt one response is drawn
with the batch seed and cut just before its sample_branch_step line; the K responses are that prefix plus K
continuations of it, drawn from (prompt + prefix) with a second seed of the same batch. A prompt whose first response
is no chain up to that step is sampled whole (prefix ""). Rows add branched, branch_step, branch_prefix,
branch_fallback (why a prompt was sampled whole) and prefix_tokens_kept; the manifest counts both kinds of prompt.

sample_observed: n (DREAM's image-only pass as a rollout): per prompt with an image, the policy first answers
sample_observe_query about the image alone (greedy, as the self-judge's pass), then n more responses are sampled on
from "Visual: <that answer>" with a third seed of the batch. They follow the K others (sample_idx K..K+n-1) with
observed: true, observation and branch_prefix; the manifest counts them.
"""

from __future__ import annotations

from pathlib import Path

from srpo.configs import SampleArgs
from srpo.runfolder import SAMPLES, choose_prompts, prompts_of, rl_prompts_of  # noqa: F401 (the step's prompts)
from srpo.sharding import ShardedGeneration, inference_device
from srpo.steps import StepRun, append_batches, model_input


def batch_seed(seed: int, batch_index: int) -> int:
    return seed * 100_003 + batch_index


def continuation_seed(seed: int, batch_index: int) -> int:
    """The seed of a batch's K continuations (branched): its own stream, a function of the global batch alone."""
    import hashlib

    return int(hashlib.sha256(repr(("branch", seed, batch_index)).encode()).hexdigest()[:8], 16)


def branch_prefix(response: str, step: str) -> tuple[str | None, str | None]:
    """(prefix, None): the response up to the start of its first `step` line, when what comes before is exactly the
    chain's steps before `step`, in order and well formed; else (None, why)."""
    import re

    from srpo.chain import STEPS, parse_chain

    keys = [key for key, _ in STEPS]
    starts_step = re.compile(rf"\s*{dict(STEPS)[step]}\s*:", re.IGNORECASE)
    offset = 0
    for line in response.splitlines(keepends=True):
        if starts_step.match(line):
            prefix = response[:offset]
            parsed = parse_chain(prefix)
            problems = [e for e in parsed.errors if not e.startswith("missing step(s)")]
            if list(parsed.fields) != keys[:keys.index(step)] or problems:
                return None, "not_a_chain_before_step"
            return prefix, None
        offset += len(line)
    return None, "no_step_line"


def keeps_prefix_tokens(tokenizer, prefix: str, response: str) -> bool:
    """Whether the response's tokens start with the prefix's own: then DPO's log-probabilities of the shared prefix
    are the same in every sample of the prompt and cancel between chosen and rejected."""
    head = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    return tokenizer(response, add_special_tokens=False)["input_ids"][:len(head)] == head


def branched_rows(args: SampleArgs, b: int, batch: list[dict], inputs: list, gen, tokenizer) -> list[dict]:
    """One batch of branched sampling: a first response per prompt, its prefix, K continuations of it."""
    budget = dict(max_new_tokens=args.sample_max_new_tokens, temperature=args.sample_temperature,
                  top_p=args.sample_top_p)
    first = gen(inputs, k=1, seed=batch_seed(args.seed, b), **budget)
    cuts = [branch_prefix(texts[0], args.sample_branch_step) for texts in first]
    prefixes = [prefix or "" for prefix, _ in cuts]
    texts = gen(inputs, k=args.sample_k, seed=continuation_seed(args.seed, b), prefixes=prefixes, **budget)
    rows = []
    for p, (prefix, why), ks in zip(batch, cuts, texts, strict=True):
        for k, continuation in enumerate(ks):
            # The continuation is stripped, so it starts at a non-space character right after the prefix's line
            # break, where the usual BPE pre-tokenizers always split (prefix_tokens_kept checks it for this one).
            response = (prefix or "") + continuation
            rows.append({"prompt_id": p["id"], "sample_idx": k, "response": response, "branched": prefix is not None,
                         "branch_step": args.sample_branch_step if prefix is not None else None,
                         "branch_prefix": prefix or "", "branch_fallback": why,
                         "prefix_tokens_kept": keeps_prefix_tokens(tokenizer, prefix, response)
                         if prefix is not None else None})
    return rows


def observed_seed(seed: int, batch_index: int) -> int:
    """The seed of a batch's observed samples: a stream of its own, so turning them on leaves the K others as they
    were."""
    import hashlib

    return int(hashlib.sha256(repr(("observed", seed, batch_index)).encode()).hexdigest()[:8], 16)


def observed_rows(args: SampleArgs, b: int, batch: list[dict], inputs: list, gen) -> list[dict]:
    """A batch's sample_observed responses per image prompt: the policy's greedy answer about the image alone, then
    continuations of the Visual step that answer starts ({prompt_id, sample_idx >= K, response, observed,
    observation, branch_prefix})."""
    from srpo.judges.self_judge import OBSERVE_MAX_NEW_TOKENS, visual_prefix

    with_image = [i for i, (_, image) in enumerate(inputs) if image is not None]
    if not with_image:
        return []
    seen = gen([(args.sample_observe_query, inputs[i][1]) for i in with_image], k=1,
               max_new_tokens=OBSERVE_MAX_NEW_TOKENS, temperature=0.0, top_p=1.0, seed=batch_seed(args.seed, b))
    observations = [texts[0].strip() for texts in seen]
    prefixes = [visual_prefix(o) if o else "" for o in observations]
    texts = gen([inputs[i] for i in with_image], k=args.sample_observed, max_new_tokens=args.sample_max_new_tokens,
                temperature=args.sample_temperature, top_p=args.sample_top_p, seed=observed_seed(args.seed, b),
                prefixes=prefixes)
    return [{"prompt_id": batch[i]["id"], "sample_idx": args.sample_k + j, "response": prefix + continuation,
             "observed": True, "observation": observation, "branch_prefix": prefix}
            for i, observation, prefix, ks in zip(with_image, observations, prefixes, texts, strict=True)
            for j, continuation in enumerate(ks)]


def branch_stats(rows: list[dict], step: str) -> dict:
    from collections import Counter

    first = {r["prompt_id"]: r for r in rows if r["sample_idx"] == 0}.values()
    reasons = Counter(r["branch_fallback"] for r in first if not r["branched"])
    return {"sample_mode": "branched", "branch_step": step,
            "branched_prompts": sum(r["branched"] for r in first),
            "fallback_prompts": sum(not r["branched"] for r in first),
            "fallback_reasons": dict(sorted(reasons.items())),
            "prefix_token_mismatches": sum(r["prefix_tokens_kept"] is False for r in rows)}




def inputs(args) -> dict:
    return {"policy": model_input(args.policy_dir), "data": args.data_dir}


def run(args: SampleArgs) -> dict | None:
    step = StepRun.of(args, inputs(args), command="sample")
    folder = step.folder
    if step.done():
        return None
    with ShardedGeneration(folder, "samples") as shard, step:
        return _sample(args, step, shard)


def _sample(args: SampleArgs, step: StepRun, shard: ShardedGeneration) -> dict | None:
    from srpo.models import generate, load_policy, pair_inputs

    data_dir = Path(args.data_dir)
    prompt_set, prompts, available = choose_prompts(data_dir, args.sample_prompt_set)
    out_path = step.folder / SAMPLES
    done = {r["prompt_id"] for r in shard.finished_rows(out_path)}
    batches = [prompts[i:i + args.sample_batch_size] for i in range(0, len(prompts), args.sample_batch_size)]
    todo = [(b, batch) for b, batch in shard.mine(batches) if not all(p["id"] in done for p in batch)]
    if args.sample_backend == "vllm":
        from srpo.vllm_backend import VLLMSampler, full_weights

        if shard.rank == 0:
            full_weights(args.policy_dir, step.folder)  # an adapter policy is merged once, before other ranks read it
        shard.barrier()
    if todo:
        if args.sample_backend == "vllm":
            from srpo.schema import image_paths

            sampler = VLLMSampler(args.policy_dir, step.folder,
                                  max_images=max((len(image_paths(p.get("image"))) for p in prompts), default=1))
            gen, tokenizer = sampler.generate, sampler.processor.tokenizer
        else:
            model, processor = load_policy(args.policy_dir)
            model.to(inference_device()).eval()
            tokenizer = processor.tokenizer

            def gen(prompts, **kw):  # temperature 0 is greedy, as in vLLM
                return generate(model, processor, prompts, do_sample=kw["temperature"] > 0, **kw)

        def produce(numbered):
            b, batch = numbered
            inputs = pair_inputs(data_dir, batch)
            if args.sample_mode == "branched":
                return branched_rows(args, b, batch, inputs, gen, tokenizer)
            texts = gen(inputs, max_new_tokens=args.sample_max_new_tokens, k=args.sample_k,
                        temperature=args.sample_temperature, top_p=args.sample_top_p, seed=batch_seed(args.seed, b))
            rows = [{"prompt_id": p["id"], "sample_idx": k, "response": t}
                    for p, ks in zip(batch, texts, strict=True) for k, t in enumerate(ks)]
            return rows + (observed_rows(args, b, batch, inputs, gen) if args.sample_observed else [])

        append_batches(shard.part_path, todo, produce, step=args.step, desc="sampling")
    position = {p["id"]: i for i, p in enumerate(prompts)}
    rows = shard.merge(out_path, key=lambda r: (r["prompt_id"], r["sample_idx"]),
                       order=lambda r: (position[r["prompt_id"]], r["sample_idx"]))
    stats = {"prompts": len(prompts), "samples": len(rows), "k": args.sample_k, "prompt_set": prompt_set,
             "prompts_available": available, "processes": shard.world, "backend": args.sample_backend}
    if args.sample_mode == "branched" and shard.rank == 0:
        stats.update(branch_stats(rows, args.sample_branch_step))
    if args.sample_observed:
        observed = [r for r in rows if r.get("observed")]
        stats.update(observed_per_prompt=args.sample_observed, observed_samples=len(observed),
                     observed_prompts=len({r["prompt_id"] for r in observed}))
    manifest = step.finish([SAMPLES], stats)
    shard.cleanup()
    if shard.rank == 0 and args.sample_backend == "vllm":
        import shutil

        from srpo.vllm_backend import merged_dir

        shutil.rmtree(merged_dir(step.folder), ignore_errors=True)  # a resume aid, like the part files
    return manifest


def main(argv=None) -> None:
    from srpo.cli_util import parse_step_args

    run(parse_step_args(SampleArgs, argv))


if __name__ == "__main__":
    main()
