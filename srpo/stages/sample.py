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
"""

from __future__ import annotations

from pathlib import Path

from srpo.configs import SampleArgs
from srpo.runfolder import PAIRS, RL_PROMPTS, SAMPLES
from srpo.sharding import ShardedGeneration, inference_device
from srpo.steps import StepRun, append_batches, model_input


def batch_seed(seed: int, batch_index: int) -> int:
    return seed * 100_003 + batch_index


def prompts_of(data_dir: Path, split: str) -> list[dict]:
    from srpo.runfolder import read_jsonl

    return sorted((p for p in read_jsonl(data_dir / PAIRS) if p["meta"].get("split", "train") == split),
                  key=lambda p: p["id"])


def rl_prompts_of(data_dir: Path) -> list[dict]:
    from srpo.runfolder import read_jsonl

    path = data_dir / RL_PROMPTS
    return sorted(read_jsonl(path), key=lambda p: p["id"]) if path.is_file() else []


def choose_prompts(data_dir: Path, prompt_set: str) -> tuple[str, list[dict], dict]:
    """(which set, its prompts, how many of each the data folder has): RL prompts when asked for or, for 'auto',
    when there are any; else the SFT training prompts."""
    rl, train = rl_prompts_of(data_dir), prompts_of(data_dir, "train")
    counts = {"rl": len(rl), "train": len(train)}
    if prompt_set == "rl" and not rl:
        raise ValueError(f"sample_prompt_set='rl' but {data_dir} has no RL prompts ({RL_PROMPTS}); build the data "
                         "with build_rl_source (a prompt-only JSONL) or, for the world, build_world_rl_fraction")
    if prompt_set == "rl" or (prompt_set == "auto" and rl):
        return "rl", rl, counts
    return "train", train, counts


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
            sampler = VLLMSampler(args.policy_dir, step.folder)
            gen = sampler.generate
        else:
            model, processor = load_policy(args.policy_dir)
            model.to(inference_device()).eval()

            def gen(prompts, **kw):
                return generate(model, processor, prompts, do_sample=True, **kw)
        def produce(numbered):
            b, batch = numbered
            texts = gen(pair_inputs(data_dir, batch), max_new_tokens=args.sample_max_new_tokens, k=args.sample_k,
                        temperature=args.sample_temperature, top_p=args.sample_top_p, seed=batch_seed(args.seed, b))
            return [{"prompt_id": p["id"], "sample_idx": k, "response": t}
                    for p, ks in zip(batch, texts, strict=True) for k, t in enumerate(ks)]

        append_batches(shard.part_path, todo, produce, step=args.step, desc="sampling")
    position = {p["id"]: i for i, p in enumerate(prompts)}
    rows = shard.merge(out_path, key=lambda r: (r["prompt_id"], r["sample_idx"]),
                       order=lambda r: (position[r["prompt_id"]], r["sample_idx"]))
    manifest = step.finish([SAMPLES], {"prompts": len(prompts), "samples": len(rows), "k": args.sample_k,
                                       "prompt_set": prompt_set, "prompts_available": available,
                                       "processes": shard.world, "backend": args.sample_backend})
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
