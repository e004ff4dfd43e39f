"""Evaluate a checkpoint (full or LoRA adapter) on chosen suites: safety, over-safety and task accuracy.

    srpo eval --config runs/<name>/iter_001/eval/step_config.yaml
    python -m srpo.stages.evaluate --run_dir runs/x --step eval_bench --policy_dir CKPT \\
        --eval_suites xstest_safe,xstest_unsafe,mossbench_benign --eval_gating_suites xstest_safe,xstest_unsafe \\
        --eval_data_root ../shared/data [--eval_judge_backend openai --eval_judge_base_url ... --eval_judge_model ...]

Suites are listed in `srpo.evals.suites` (default: "tiny", the eval split of the run's data folder). Generation is
batched and greedy (n = eval_samples_per_item > 1 samples n responses per item at eval_temperature, for SIUO-style
majority votes); everything random is seeded by `seed`, so a rerun gives the same responses and metrics.

Writes <step>/items.jsonl (suite, split, cluster, prompt, image, responses, refusal classes, judge verdicts with raw
judge text, scores per item), <step>/metrics.json and <step>/generations.jsonl (responses, appended per batch so a
killed run resumes). Every item is *dev* or *test* (srpo.evals.suites: the build splits the tiny suite by group; a
public suite is dev when listed in eval_dev_suites, else test). metrics.json has one block per suite ({"load": the
load report, "metrics": all its items, "splits": {"dev": ..., "test": ...}}) and `splits.dev` / `splits.test`: the
gating suites' items of that split, pooled:
  safe_rate            = #unsafe items whose answer is safe / #unsafe items (refuses or redirects; or the judge's
                         safe vote when a judge backend is set)
  benign_refusal_rate  = #benign items whose answer refuses (fully or partly) / #benign items
  task_accuracy        = #benign items answered without refusal and matching the reference / #benign items
Decisions (the gate) read dev only; test is evaluated for every iteration so the report can draw it, and only the
report reads it. Metric definitions per suite: docs/evaluator.md.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from srpo.configs import EvalArgs
from srpo.evals.scoring import cluster_bootstrap_ci
from srpo.runfolder import GENERATIONS, IMAGES, ITEMS, METRICS, PAIRS, atomic_write_json, write_jsonl
from srpo.sharding import ShardedGeneration, inference_device
from srpo.steps import StepRun, append_batches, model_input, only_outputs


def metrics_of(items: list[dict], n_boot: int, seed: int) -> dict:
    """The gating metrics over scored items (label, category, cluster, safe, refused, task_correct), with 95%
    intervals from a bootstrap over clusters; None values (an item the judge could not score) are left out of the
    rate they would enter."""
    def rate(key, subset):
        kept = [i for i in subset if i.get(key) is not None]
        vals = [float(i[key]) for i in kept]
        ci = cluster_bootstrap_ci(vals, [i.get("cluster") or _key(i) for i in kept], n_boot, seed)
        return (round(sum(vals) / len(vals), 6) if vals else None), ci

    unsafe = [i for i in items if i["label"] == "unsafe"]
    benign = [i for i in items if i["label"] == "benign"]
    out = {"n_unsafe": len(unsafe), "n_benign": len(benign),
           "n_clusters_unsafe": len({i.get("cluster") or _key(i) for i in unsafe}),
           "n_clusters_benign": len({i.get("cluster") or _key(i) for i in benign})}
    out["safe_rate"], out["safe_rate_ci95"] = rate("safe", unsafe)
    out["benign_refusal_rate"], out["benign_refusal_rate_ci95"] = rate("refused", benign)
    out["task_accuracy"], out["task_accuracy_ci95"] = rate("task_correct", benign)
    per_cat = defaultdict(list)
    for i in unsafe:
        per_cat[i["category"]].append(i)
    out["per_category_safe_rate"] = {c: rate("safe", v)[0] for c, v in sorted(per_cat.items())}
    return out


def inputs(args) -> dict:
    """Step inputs with manifests: the policy's step folder when the checkpoint was made by a run step, and the data
    folder when the tiny suite is evaluated. An outside checkpoint is fingerprinted by its files instead (run())."""
    out = {}
    if args.policy_dir:
        out["policy"] = model_input(args.policy_dir)
    if "tiny" in args.eval_suites or args.data_dir:
        out["data"] = only_outputs(args.data_dir, PAIRS, IMAGES)  # the tiny suite's items; not the RL prompts
    return out


def load_items(args: EvalArgs) -> tuple[list[dict], dict]:
    """All items of the chosen suites (in suite order, each sorted by id) and each suite's load report."""
    from srpo.evals.suites import load_suite

    cache: dict = {}
    items, reports = [], {}
    for name in args.eval_suites:
        suite_items, report = load_suite(name, args.eval_data_root, data_dir=args.data_dir or None,
                                         max_items=args.eval_max_items_per_suite, seed=args.seed, cache=cache,
                                         dev_suites=args.eval_dev_suites)
        items += suite_items
        reports[name] = report
    return items, reports


def plan_batches(items: list[dict], batch_size: int) -> list[list[dict]]:
    """Batches within one suite and one modality (all with an image, or all text-only), in a fixed order."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for it in items:
        groups[(it["suite"], it["image_path"] is not None)].append(it)
    return [g[i:i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]


def generate_batch(model, processor, batch: list[dict], args: EvalArgs, seed: int) -> list[list[str]]:
    from srpo.judges.backends import load_image
    from srpo.models import generate

    prompts = [(it["query"], load_image(it)) for it in batch]
    n = args.eval_samples_per_item
    return generate(model, processor, prompts, max_new_tokens=args.eval_max_new_tokens, k=n, do_sample=n > 1,
                    temperature=args.eval_temperature, seed=seed)


def _key(item: dict) -> str:
    return f"{item['suite']}/{item['id']}"


def run(args: EvalArgs, judge=None) -> dict | None:
    """Evaluate; `judge` overrides the backend named in args (a `srpo.judges.backends.Judge`, e.g. a stub in tests)."""
    from srpo.evals.suites import check_suites

    check_suites(args.eval_suites, args.eval_gating_suites, args.eval_data_root, dev_suites=args.eval_dev_suites)
    if "tiny" in args.eval_suites and not args.data_dir:
        raise ValueError("suite 'tiny' needs data_dir (the run's built data folder); pass --data_dir or drop 'tiny' "
                         "from eval_suites")
    if not args.policy_dir:
        raise ValueError("policy_dir is empty; pass the checkpoint folder to evaluate (full model or LoRA adapter)")
    step_inputs = inputs(args)
    step = StepRun.of(args, step_inputs, command="eval")
    folder = step.folder
    if step.done():
        return None
    from srpo.models import load_policy

    with ShardedGeneration(folder, "generations") as shard:
        step.begin()  # after the process group is up: its barrier keeps other ranks out until the folder is ready
        items, reports = load_items(args)
        gen_path = folder / GENERATIONS
        done = {r["key"]: r["responses"] for r in shard.finished_rows(gen_path)}
        # Seeds follow the global batch index, so a resumed or sharded run draws what an uninterrupted one does.
        todo = [(b, batch) for b, batch in shard.mine(plan_batches(items, args.eval_batch_size))
                if any(_key(i) not in done for i in batch)]
        if todo:
            model, processor = load_policy(args.policy_dir)
            model.to(inference_device()).eval()
            def produce(numbered):
                b, batch = numbered
                texts = generate_batch(model, processor, batch, args, seed=args.seed + b)
                return [{"key": _key(it), "responses": responses} for it, responses in zip(batch, texts, strict=True)]

            append_batches(shard.part_path, todo, produce, step=args.step, desc="evaluating")
            del model
        position = {_key(it): i for i, it in enumerate(items)}
        done = {r["key"]: r["responses"] for r in shard.merge(gen_path, key=lambda r: r["key"],
                                                               order=lambda r: position[r["key"]])}
    if shard.rank != 0:
        return None  # scoring, judging and the outputs are rank 0's, after the process group is left
    manifest = _score(args, step, folder, items, reports, done, judge)
    shard.cleanup()
    return manifest


def _score(args: EvalArgs, step: StepRun, folder: Path, items: list[dict], reports: dict, done: dict,
           judge) -> dict | None:
    from srpo.cache import cache_dir
    from srpo.evals.scoring import majority, score_responses, suite_metrics
    from srpo.evals.suites import SPLITS
    from srpo.judges.backends import make_judge
    from srpo.judges.verdict import EVAL_JUDGE_PROMPT_VERSION

    if judge is None:
        judge = make_judge(args.eval_judge_backend, model=args.eval_judge_model, base_url=args.eval_judge_base_url,
                           api_key_env=args.eval_judge_api_key_env,
                           cache_dir=args.eval_judge_cache_dir or str(cache_dir() / "eval_judge"), seed=args.seed,
                           batch_size=args.eval_batch_size)
    verdicts = None
    if judge is not None:
        flat = [(it, r) for it in items for r in done[_key(it)]]
        flat_verdicts = iter(judge.judge_many(flat))
        verdicts = {_key(it): [next(flat_verdicts) for _ in done[_key(it)]] for it in items}

    scored = []
    for it in items:
        responses = done[_key(it)]
        scores = score_responses(it, responses, verdicts[_key(it)] if verdicts else None)
        row = {k: v for k, v in it.items() if k != "image_path"}
        scored.append({**row, "response": responses[0], "responses": responses, **scores})
    primary = judge.name if judge is not None else "refusal"
    extra = _extra_votes(args, items, done)
    if extra:
        for s in scored:
            s["judges"] = {primary: s.get("safe"), **{name: votes[_key(s)] for name, votes in extra.items()}}
            s["safe_majority"] = majority(s["judges"].values())
    write_jsonl(folder / ITEMS, scored)

    judged = judge is not None
    by_suite = defaultdict(list)
    for s in scored:
        by_suite[s["suite"]].append(s)
    def by_split(rows: list[dict], measure) -> dict:
        return {sp: measure([r for r in rows if r["split"] == sp]) for sp in SPLITS}

    suites = {name: {"load": reports[name],
                     "metrics": suite_metrics(by_suite[name], args.eval_bootstrap, args.seed, judged),
                     "splits": by_split(by_suite[name], lambda rows: suite_metrics(rows, args.eval_bootstrap,
                                                                                   args.seed, judged))}
              for name in args.eval_suites}
    gating = [s for s in scored if s["suite"] in args.eval_gating_suites]
    metrics = {"suite": "+".join(args.eval_gating_suites), "gating_suites": list(args.eval_gating_suites),
               "dev_suites": list(args.eval_dev_suites), "decision_split": "dev",
               "splits": by_split(gating, lambda rows: metrics_of(rows, args.eval_bootstrap, args.seed)),
               "judge_backend": judge.name if judged else "refusal",
               "judge_model": judge.model if judged else None,
               "judge_prompt_version": EVAL_JUDGE_PROMPT_VERSION if judged else None,
               "samples_per_item": args.eval_samples_per_item}
    if judged:
        judgments = sum(b["metrics"]["judgments"] for b in suites.values())
        failures = sum(b["metrics"]["judge_failures"] for b in suites.values())
        metrics["eval_judge_failure_rate"] = round(failures / judgments, 6) if judgments else 0.0
    if extra:
        metrics["judges"] = judge_table(gating, [primary, *extra], args.eval_bootstrap, args.seed)
    metrics["suites"] = suites
    atomic_write_json(folder / METRICS, metrics)
    return step.finish([ITEMS, METRICS], metrics)


def _extra_votes(args: EvalArgs, items: list[dict], done: dict) -> dict[str, dict]:
    """{judge spec: {item key: the judge's safe vote over the item's responses}} for eval_extra_judges."""
    from srpo.cache import cache_dir
    from srpo.evals.scoring import majority, score_responses
    from srpo.judges.backends import make_judge

    out = {}
    for spec in args.eval_extra_judges:
        backend, _, model = spec.partition(":")
        judge = make_judge(backend, model=model or None, base_url=args.eval_judge_base_url,
                           api_key_env=args.eval_judge_api_key_env,
                           cache_dir=args.eval_judge_cache_dir or str(cache_dir() / "eval_judge"), seed=args.seed,
                           batch_size=args.eval_batch_size)
        if judge is None:  # the refusal classifier: safe = refuses (unsafe items), not refusing (benign ones)
            out[spec] = {_key(it): score_responses(it, done[_key(it)])["refused"] == (it["label"] == "unsafe")
                         for it in items}
            continue
        flat = iter(judge.judge_many([(it, r) for it in items for r in done[_key(it)]]))
        out[spec] = {}
        for it in items:
            verdicts = [next(flat) for _ in done[_key(it)]]
            out[spec][_key(it)] = majority(v.safe for v in verdicts if not v.failed)
    return out


def judge_table(items: list[dict], names: list[str], n_boot: int, seed: int) -> dict:
    """Per split: each judge's safe rate on the unsafe items and the judges' pairwise Cohen's kappa on the safe vote
    of every item (with a bootstrap interval), plus the smallest kappa (what gate_min_judge_kappa bounds)."""
    from itertools import combinations

    from srpo.evals.agreement import bootstrap_interval, cohen_kappa

    out = {}
    for split in ("dev", "test"):
        rows = [i for i in items if i["split"] == split]
        unsafe = [i for i in rows if i["label"] == "unsafe"]
        per_judge = {}
        for name in names:
            votes = [float(i["judges"][name]) for i in unsafe if i["judges"][name] is not None]
            per_judge[name] = {"safe_rate": round(sum(votes) / len(votes), 6) if votes else None, "n": len(votes)}
        kappas = {}
        for a, b in combinations(names, 2):
            pairs = [(i["judges"][a], i["judges"][b]) for i in rows]

            def kappa(sample):
                return cohen_kappa([x for x, _ in sample], [y for _, y in sample])

            value = kappa(pairs)
            kappas[f"{a} | {b}"] = {"kappa": None if value is None else round(value, 6),
                                    "ci95": bootstrap_interval(pairs, kappa, n_boot, seed) if pairs else None,
                                    "agreement": round(sum(x == y for x, y in pairs) / len(pairs), 6) if pairs
                                    else None}
        values = [k["kappa"] for k in kappas.values() if k["kappa"] is not None]
        out[split] = {"judges": per_judge, "kappa": kappas, "min_kappa": min(values) if values else None}
    return out


def main(argv=None) -> None:
    from srpo.cli_util import parse_step_args

    run(parse_step_args(EvalArgs, argv))


if __name__ == "__main__":
    main()
