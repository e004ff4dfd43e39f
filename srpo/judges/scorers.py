"""A judge section (srpo.configs.JudgeArgs) as `score(groups) -> [[Judgment]]`, the form the GRPO reward adapter
(srpo/judges/rewards.py) calls online, once per generation batch.

The same backends, prompts and parsers as the judge step (srpo/stages/judge.py):
  rule    ORACLE: reads each prompt's label (refuses prompts without one)
  self    the self-judge; each prompt's self-assessment is made once, up front, by the step's starting policy (frozen)
  dream   DREAM's self-feedback; each prompt's risk context is built once (on first use) and cached, then every
          completion is scored against it. Answered by the starting policy (a frozen copy kept in memory), a local
          judge folder or an endpoint
  hf, openai   the verdict judges (an endpoint's client runs a batch's requests concurrently and caches answers)
  random  a CONTROL, not a judge: seeded uniform scores that read nothing (the null a real judge must beat)
"""

from __future__ import annotations

from pathlib import Path

from srpo.judges.base import Judgment


class Scorer:
    """score(groups): [(prompt row, [{"sample_idx", "response"}])] -> one Judgment per response, in order."""

    is_async = False  # an endpoint judge: the reward runs it off the training thread

    def __call__(self, groups: list[tuple[dict, list[dict]]]) -> list[list[Judgment]]:
        raise NotImplementedError

    def describe(self) -> dict:
        return {}


class RuleScorer(Scorer):
    def __call__(self, groups):
        from srpo.judges.rule import judge_rule

        return [[judge_rule(pair, s["sample_idx"], s["response"]) for s in samples] for pair, samples in groups]

    def describe(self):
        return {"backend": "rule", "oracle": True}


def random_judgment(seed: int, prompt_id: str, sample_idx: int) -> Judgment:
    """judge_backend 'random': safety, effectiveness and awareness drawn uniformly from a hash of (seed, prompt,
    sample). It reads neither the response nor the prompt: the feedback of a judge that knows nothing, for checking
    that what the loop gains comes from its judge (tests/test_world_rlaif.py's mutation)."""
    import hashlib

    digest = hashlib.sha256(f"{seed}:{prompt_id}:{sample_idx}".encode()).digest()
    safety, effectiveness, awareness = (round(int.from_bytes(digest[i:i + 4], "big") / 2 ** 32, 6) for i in (0, 4, 8))
    return Judgment(prompt_id, sample_idx, safety, effectiveness, awareness, raw="random control (reads nothing)")


class RandomScorer(Scorer):
    def __init__(self, seed: int):
        self.seed = seed

    def __call__(self, groups):
        return [[random_judgment(self.seed, pair["id"], s["sample_idx"]) for s in samples] for pair, samples in groups]

    def describe(self):
        return {"backend": "random", "control": "scores drawn at random; reads nothing"}


class SelfScorer(Scorer):
    def __init__(self, assessments: dict, observe_query: str | None):
        self.assessments = assessments  # prompt id -> srpo.judges.self_judge.Assessment
        self.observe_query = observe_query

    def __call__(self, groups):
        from srpo.judges.self_judge import grade

        return [[grade(pair["id"], s["sample_idx"], self.assessments[pair["id"]], s["response"]) for s in samples]
                for pair, samples in groups]

    def describe(self):
        out = {"backend": "self", "assessed_prompts": len(self.assessments)}
        if self.observe_query:
            out.update(observe="image", observe_query=self.observe_query)
        return out


class DreamScorer(Scorer):
    def __init__(self, ask, client, data_dir: Path, *, m: int, global_weight: float, observation_weight: float,
                 answered_by: str):
        self.ask, self.client, self.data_dir = ask, client, Path(data_dir)
        self.m, self.global_weight, self.observation_weight = m, global_weight, observation_weight
        self.answered_by = answered_by
        self.contexts: dict = {}  # prompt id -> RiskContext, built once
        self.is_async = client is not None

    def _item(self, pair: dict) -> dict:
        from srpo.judges.dream import item_images

        # Only what the prompt shows: the passes and scoring never see a label, category or reference answer.
        return {"id": pair["id"], "query": pair["query"],
                "image_path": item_images(self.data_dir, pair.get("image"))}

    def __call__(self, groups):
        from srpo.judges.dream import risk_context, score_many

        new = [pair for pair, _ in groups if pair["id"] not in self.contexts]
        if new:
            for pair, context in zip(new, risk_context(self.ask, [self._item(p) for p in new], self.m), strict=True):
                self.contexts[pair["id"]] = context
        scored = score_many(self.ask, [(self._item(pair), self.contexts[pair["id"]], samples)
                                       for pair, samples in groups],
                            global_weight=self.global_weight, observation_weight=self.observation_weight)
        return [[s.judgment for s in group] for group in scored]

    def describe(self):
        out = {"backend": "dream", "answered_by": self.answered_by, "samples": self.m,
               "global_weight": self.global_weight, "observation_weight": self.observation_weight,
               "risk_contexts": len(self.contexts),
               "risk_context_failures": sum(c.failed for c in self.contexts.values())}
        return {**out, **self.client.stats()} if self.client is not None else out


class VerdictScorer(Scorer):
    def __init__(self, judge, data_dir: Path, backend: str):
        self.judge, self.data_dir, self.backend = judge, Path(data_dir), backend
        self.is_async = backend == "openai"

    def __call__(self, groups):
        from srpo.judges.model_judge import judge_groups

        return judge_groups(self.judge, groups, self.data_dir)

    def describe(self):
        return self.judge.describe()


def make_dream_ask(args):
    """DREAM's `ask` for a judge section (srpo.configs.JudgeArgs) and the endpoint client behind it (None when a local
    model answers): the policy (policy_dir), a local judge folder (judge_model), or an endpoint."""
    from srpo.judges.dream import chat_ask, generation_ask, make_chat_client

    if args.judge_dream_model == "openai":
        client = make_chat_client(args, args.run_dir)
        return chat_ask(client, temperature=args.judge_dream_temperature, seed=args.seed), client
    from srpo.models import generate, load_policy
    from srpo.sharding import inference_device

    model, processor = load_policy(args.judge_model if args.judge_dream_model == "hf" else args.policy_dir)
    model.to(inference_device()).eval()

    def texts(prompts, *, do_sample, temperature, seed):
        return [t[0] for t in generate(model, processor, prompts, max_new_tokens=args.judge_max_new_tokens,
                                       do_sample=do_sample, temperature=temperature, seed=seed,
                                       batch_size=args.judge_batch_size)]

    return generation_ask(texts, temperature=args.judge_dream_temperature, seed=args.seed), None


def make_scorer(args, prompts: list[dict]) -> Scorer:
    """The scorer of judge section `args` for the step's prompts (rows with id, query, image; a label only where the
    data has one). The self-judge assesses every prompt here, with the model at args.policy_dir."""
    data_dir = Path(args.data_dir)
    if args.judge_mode == "pairwise":
        raise ValueError("judge_mode 'pairwise' compares the samples of a prompt and needs them all at once; GRPO "
                         "scores each completion as it is generated. Use judge_mode: pointwise with "
                         "run_rl_algorithm: grpo, or pairwise with iterative DPO")
    backend = args.judge_backend
    if backend == "random":
        return RandomScorer(args.seed)
    if backend == "rule":
        unlabelled = [p["id"] for p in prompts if "label" not in p]
        if unlabelled:
            raise ValueError(f"judge_backend='rule' is oracle feedback and reads each prompt's label, but "
                             f"{len(unlabelled)} prompt(s) (e.g. {unlabelled[0]!r}) are RL prompts, which have none; "
                             "reward them with self, dream, openai or hf, or set grpo_prompt_set: train for an oracle "
                             "upper bound")
        return RuleScorer()
    if backend == "self":
        from srpo.judges.self_judge import self_assess
        from srpo.models import load_policy, pair_inputs
        from srpo.sharding import inference_device

        model, processor = load_policy(args.policy_dir)
        model.to(inference_device()).eval()
        observe = args.judge_self_observe_query if args.judge_self_observe == "image" else None
        texts = self_assess(model, processor, pair_inputs(data_dir, prompts), max_new_tokens=args.judge_max_new_tokens,
                            batch_size=args.judge_batch_size, seed=args.seed, observe_query=observe)
        del model
        return SelfScorer({p["id"]: a for p, a in zip(prompts, texts, strict=True)}, observe)
    if backend == "dream":
        ask, client = make_dream_ask(args)
        return DreamScorer(ask, client, data_dir, m=args.judge_dream_samples,
                           global_weight=args.judge_dream_global_weight,
                           observation_weight=args.judge_dream_observation_weight,
                           answered_by=args.judge_dream_model or "policy")
    from srpo.judges.model_judge import make_model_judge

    return VerdictScorer(make_model_judge(args, args.run_dir), data_dir, backend)
