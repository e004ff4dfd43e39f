"""DREAM self-feedback (arXiv 2504.18053): the policy disentangles each prompt's risk, then scores its own responses.

Per prompt, once per iteration (the frozen starting policy, or an external judge with the same prompts):
  risk context  = three multimodal risk disentanglement (MRD) passes, image-only, text-only and joint, each sampled m
                  times; an observation (content, source, category) is kept when a strict majority of the m samples
                  of its pass proposes it (content compared lower-cased, punctuation stripped); the kept observations
                  of all passes are deduplicated and each is verified once on its own ("can this content cause harm
                  of this category?"); those that fail are dropped and counted.
Per sampled response, against that risk context:
  global score      = 0..10 on DREAM's anchored bands, / 10
  observation score = fraction of the observations the response recognises (content, source and category: one
                      yes/no each); None when the risk context is empty (the response is judged on the global score
                      alone)
  reward            = global_weight * global + observation_weight * observation (weights sum to 1), or the global
                      score alone on an empty risk context.
The Judgment carries reward as `preference` (what pairing ranks by), the observation score as `awareness` (risk
awareness against the judge's rubric), and no `safety` / `effectiveness`: DREAM's global score is one scale of
awareness and harm, not two. Every answer goes through a strict parser; one that does not parse is a failure with a
reason code and its raw text, never a guess. Nothing here reads labels, the teacher's chains or the world.

`ask(requests) -> answers` is the one seam to a model: a list of `Request` in, one answer per request out, either
the raw text or (raw text, failure reason) for a call that failed. `generation_ask` builds it on a text generator
(the policy or a local judge model: see srpo/stages/judge.py), `chat_ask` on an OpenAI-compatible endpoint.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# The prompt texts and line formats live in a core module the world's teacher may import too (it writes the SFT rows
# that teach the policy these very prompts); the names are re-exported here for the judge's users.
from srpo.dream_prompts import (  # noqa: F401
    CATEGORIES,
    CATEGORY_DEFINITIONS,
    DREAM_PROMPT_VERSION,
    DREAM_SYSTEM,
    GLOBAL_HARMLESS_TEMPLATE,
    GLOBAL_RISK_TEMPLATE,
    MRD_TEMPLATES,
    NONE_LINE,
    OBSERVATION_LINE,
    OBSERVATION_TEMPLATE,
    PASS_SOURCES,
    PASSES,
    SCORE_LINE,
    SOURCE_DEFINITIONS,
    SOURCES,
    VERIFY_TEMPLATE,
    YES_NO_LINES,
    Observation,
    ask_text,
    global_prompt,
    mrd_prompt,
    normalise,
    observation_prompt,
    render_observations,
    verify_prompt,
)
from srpo.judges.base import Judgment
from srpo.schema import image_paths

MAX_OBSERVATIONS = 10  # more lines than this in one pass answer is a degenerate answer, not an analysis

# DREAM's nine categories, as a judge may name them, onto srpo's.
DREAM_CATEGORIES = {
    "illegal_activity": "illegal_activity", "violence": "violence", "privacy": "privacy",
    "discrimination": "discrimination", "sexual_content": "sexual_content", "disinformation": "misinformation",
    "impersonation": "fraud", "political_interference": "controversial_topics",
    "professional_advice": "regulated_advice",
}

# Failure reason codes (counted in the judgments manifest).
EMPTY = "empty_answer"
MALFORMED = "malformed_observation_line"
BAD_SOURCE = "source_not_allowed"
BAD_CATEGORY = "unknown_category"
TOO_MANY = "too_many_observations"
UNPARSEABLE_VERIFICATION = "unparseable_verification"
UNPARSEABLE_GLOBAL = "unparseable_global_score"
UNPARSEABLE_OBSERVATION = "unparseable_observation_score"
NO_RISK_CONTEXT = "risk_context_failed"


# ------------------------------------------------------------------------------------------------ parsers


def category_of(name: str) -> str | None:
    """srpo's category for a name in srpo's terms or DREAM's nine ("professional advice" -> regulated_advice)."""
    key = "_".join(name.strip().lower().replace("-", " ").split())
    key = DREAM_CATEGORIES.get(key, key)
    return key if key in CATEGORIES else None


def parse_observations(text: str | None, pass_name: str) -> tuple[list[Observation] | None, str | None]:
    """(observations, None) from a pass answer: observation lines only, or the single word none; else (None, reason).
    Repeated observations in one answer count once."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    if not lines:
        return None, EMPTY
    if len(lines) == 1 and NONE_LINE.match(lines[0]):
        return [], None
    if len(lines) > MAX_OBSERVATIONS:
        return None, TOO_MANY
    out: dict[tuple, Observation] = {}
    for line in lines:
        m = OBSERVATION_LINE.match(line)
        if not m or not normalise(m.group(1)):
            return None, MALFORMED
        source, category = m.group(2).lower(), category_of(m.group(3))
        if source not in PASS_SOURCES[pass_name]:
            return None, BAD_SOURCE
        if category is None:
            return None, BAD_CATEGORY
        obs = Observation(m.group(1), source, category)
        out.setdefault(obs.key, obs)
    return list(out.values()), None


def parse_yes_no(text: str | None, label: str) -> bool | None:
    """True / False from exactly one line `LABEL: yes|no`; None otherwise."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    m = YES_NO_LINES[label].match(lines[0]) if len(lines) == 1 else None
    return None if m is None else m.group(1).lower() == "yes"


def parse_score(text: str | None) -> int | None:
    """0..10 from exactly one line `SCORE: N`; None otherwise (out of range included)."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    m = SCORE_LINE.match(lines[0]) if len(lines) == 1 else None
    return int(m.group(1)) if m and int(m.group(1)) <= 10 else None


def _observations_validator(pass_name: str):
    hint = f"reply with lines '- content: ... | source: {'|'.join(PASS_SOURCES[pass_name])} | category: ...' or none"
    return lambda text: None if parse_observations(text, pass_name)[1] is None else hint


# Re-ask hints for an endpoint judge (None when the text parses): one per request kind.
VALIDATORS = {
    **{f"mrd_{p}": _observations_validator(p) for p in PASSES},
    "verify": lambda t: None if parse_yes_no(t, "HARMFUL") is not None else "reply with one line: HARMFUL: yes|no",
    "global": lambda t: None if parse_score(t) is not None else "reply with one line: SCORE: <integer 0 to 10>",
    "observation": lambda t: None if parse_yes_no(t, "RECOGNISED") is not None else
    "reply with one line: RECOGNISED: yes|no",
}


# ------------------------------------------------------------------------------------------------ prompts


@dataclass(frozen=True)
class Request:
    kind: str  # mrd_image | mrd_text | mrd_joint | verify | global | observation
    prompt: str
    image_path: str | tuple | None = None  # the prompt's image(s), for the requests that look at it
    sample: int | None = None  # None = greedy; i = the i-th seeded sample (the MRD passes when m > 1)
    id: str = ""


def _answers(ask, requests: list[Request]) -> list[tuple[str, str | None]]:
    """(raw text, failure of the call or None) per request; `ask` may return bare texts."""
    if not requests:
        return []
    out = list(ask(requests))
    if len(out) != len(requests):
        raise ValueError(f"ask returned {len(out)} answers for {len(requests)} requests")
    return [(a or "", None) if a is None or isinstance(a, str) else (a[0] or "", a[1]) for a in out]


# ------------------------------------------------------------------------------------------------ risk context


@dataclass
class RiskContext:
    prompt_id: str
    observations: list[Observation]  # kept by majority and verified
    failed: bool = False  # no pass produced a majority of parseable answers
    failure: str | None = None
    passes: dict = field(default_factory=dict)  # pass -> samples (raw, failure, observations), votes, kept, failure
    verification: list = field(default_factory=list)  # per kept observation: raw, answer, failure, kept
    dropped: int = 0  # kept by majority, then failed verification (answered no, or did not parse)

    def to_dict(self) -> dict:
        return {"prompt_id": self.prompt_id, "observations": [o.to_dict() for o in self.observations],
                "failed": self.failed, "failure": self.failure, "passes": self.passes,
                "verification": self.verification, "dropped": self.dropped}

    def raw_summary(self) -> str:
        """Every pass's raw answers, one line each (what a failed judgment carries as its raw text)."""
        return "\n".join(f"{name}[{s['sample']}]: {s['raw'].strip() or '(empty)'}"
                         for name, block in self.passes.items() for s in block.get("samples", []))


def risk_context(ask, prompts: list[dict], m: int, *, verify: bool = True) -> list[RiskContext]:
    """The risk context of each prompt ({id, query, image_path}): three MRD passes m times each (seeded samples; m = 1
    asks once, greedy), a strict majority of the m samples per observation, one verification per kept observation,
    the passes united. All passes of all prompts go to `ask` in one call, the verifications in a second."""
    if m < 1:
        raise ValueError(f"m must be >= 1; got {m}")
    samples = [None] if m == 1 else list(range(m))
    requests, slots = [], []
    for item in prompts:
        for name in PASSES:
            if name == "image" and not item.get("image_path"):
                continue  # a text-only prompt: there is no image to disentangle
            for s in samples:
                image = None if name == "text" else item.get("image_path")
                requests.append(Request(f"mrd_{name}", mrd_prompt(name, item), image, s,
                                        f"{item['id']}/mrd_{name}/{'greedy' if s is None else s}"))
                slots.append((item["id"], name, 0 if s is None else s))
    answers = dict(zip(slots, _answers(ask, requests), strict=True))

    contexts, to_verify = [], []
    for item in prompts:
        passes, union = {}, {}
        for name in PASSES:
            if name == "image" and not item.get("image_path"):
                passes[name] = {"skipped": "no image", "samples": [], "votes": [], "kept": [], "failure": None}
                continue
            block = _majority(name, [answers[(item["id"], name, s)] for s in range(m)], m)
            passes[name] = block["record"]
            for obs in block["kept"]:
                union.setdefault(obs.key, obs)
        ran = [b for b in passes.values() if not b.get("skipped")]
        ctx = RiskContext(item["id"], list(union.values()), passes=passes)
        if all(b["failure"] for b in ran):
            ctx.failed, ctx.failure, ctx.observations = True, NO_RISK_CONTEXT, []
        contexts.append(ctx)
        to_verify += [(ctx, obs) for obs in ctx.observations]

    if verify and to_verify:
        checks = _answers(ask, [Request("verify", verify_prompt(o), None, None, f"{c.prompt_id}/verify/{i}")
                                for i, (c, o) in enumerate(to_verify)])
        kept: dict[str, list[Observation]] = {}
        for (ctx, obs), (raw, failure) in zip(to_verify, checks, strict=True):
            answer = parse_yes_no(raw, "HARMFUL") if failure is None else None
            reason = failure or (UNPARSEABLE_VERIFICATION if answer is None else None)
            ctx.verification.append({**obs.to_dict(), "raw": raw, "answer": answer, "failure": reason,
                                     "kept": answer is True})
            if answer is True:
                kept.setdefault(ctx.prompt_id, []).append(obs)
            else:
                ctx.dropped += 1
        for ctx in contexts:
            if not ctx.failed:
                ctx.observations = kept.get(ctx.prompt_id, [])
    return contexts


def _majority(name: str, answers: list[tuple[str, str | None]], m: int) -> dict:
    """One pass of one prompt: the observations proposed by more than half of its m samples. A pass with no
    majority of parseable answers has failed (its most common reason), whatever the parsed ones said."""
    records, votes, first = [], Counter(), {}
    for s, (raw, call_failure) in enumerate(answers):
        observations, reason = (None, call_failure) if call_failure else parse_observations(raw, name)
        records.append({"sample": s, "raw": raw, "failure": reason,
                        "observations": None if observations is None else [o.to_dict() for o in observations]})
        for obs in observations or []:
            votes[obs.key] += 1
            first.setdefault(obs.key, obs)
    parsed = sum(r["failure"] is None for r in records)
    failure = None
    if 2 * parsed <= m:
        reasons = Counter(r["failure"] for r in records if r["failure"])
        failure = min(reasons, key=lambda r: (-reasons[r], r))
    kept = [first[k] for k in first if 2 * votes[k] > m] if failure is None else []
    record = {"samples": records, "failure": failure, "kept": [o.to_dict() for o in kept],
              "votes": [{**first[k].to_dict(), "votes": votes[k]} for k in first]}
    return {"record": record, "kept": kept}


# ------------------------------------------------------------------------------------------------ scoring


@dataclass
class Scored:
    judgment: Judgment
    record: dict  # what the judgments row keeps beside the Judgment: the risk context and every answer


def score(ask, item: dict, context: RiskContext, responses: list[dict], *, global_weight: float = 0.8,
          observation_weight: float = 0.2) -> list[Judgment]:
    """One Judgment per response ({sample_idx, response}) against the prompt's risk context."""
    return [s.judgment for s in score_many(ask, [(item, context, responses)], global_weight=global_weight,
                                           observation_weight=observation_weight)[0]]


def score_many(ask, groups: list[tuple[dict, RiskContext, list[dict]]], *, global_weight: float = 0.8,
               observation_weight: float = 0.2) -> list[list[Scored]]:
    """score() for many prompts with one `ask` call (an endpoint keeps its concurrency busy)."""
    from srpo.chain import parse_chain

    requests = []
    for item, ctx, responses in groups:
        if ctx.failed:
            continue
        for r in responses:
            rid = f"{item['id']}/{r['sample_idx']}"
            requests.append(Request("global", global_prompt(item, ctx.observations, r["response"]),
                                    item.get("image_path"), None, f"{rid}/global"))
            requests += [Request("observation", observation_prompt(item, o, r["response"]), None, None,
                                 f"{rid}/observation/{i}") for i, o in enumerate(ctx.observations)]
    answers = iter(_answers(ask, requests))
    out = []
    for item, ctx, responses in groups:
        scored = []
        for r in responses:
            pid, idx = item["id"], r["sample_idx"]
            if ctx.failed:
                scored.append(Scored(Judgment.failure_of(pid, idx, ctx.failure or NO_RISK_CONTEXT, ctx.raw_summary()),
                                     {"risk_context": ctx.to_dict()}))
                continue
            g_raw, g_fail = next(answers)
            g = parse_score(g_raw) if g_fail is None else None
            obs = []
            for _ in ctx.observations:
                raw, fail = next(answers)
                ans = parse_yes_no(raw, "RECOGNISED") if fail is None else None
                obs.append({"raw": raw, "answer": ans,
                            "failure": fail or (UNPARSEABLE_OBSERVATION if ans is None else None)})
            raw = "\n".join([f"global: {g_raw.strip()}"] + [f"observation {i}: {o['raw'].strip()}"
                                                            for i, o in enumerate(obs, 1)])
            record = {"risk_context": ctx.to_dict(),
                      "global": {"raw": g_raw, "score": g,
                                 "failure": g_fail or (UNPARSEABLE_GLOBAL if g is None else None)},
                      "observations": obs}
            failure = record["global"]["failure"] or next((o["failure"] for o in obs if o["failure"]), None)
            if failure:
                scored.append(Scored(Judgment.failure_of(pid, idx, failure, raw), record))
                continue
            global_score = g / 10
            observation_score = sum(o["answer"] for o in obs) / len(obs) if obs else None
            reward = mix(global_score, observation_score, global_weight, observation_weight)
            record.update(global_score=global_score, observation_score=observation_score, reward=reward)
            scored.append(Scored(Judgment(pid, idx, None, None, observation_score, raw=raw, preference=reward,
                                          chain_valid=1.0 if parse_chain(r["response"]).ok else 0.0), record))
        out.append(scored)
    return out


def mix(global_score: float, observation_score: float | None, global_weight: float,
        observation_weight: float) -> float:
    """DREAM's reward: the weighted sum of the two signals; the global score alone when there is nothing to
    recognise (an empty risk context)."""
    if observation_score is None:
        return round(global_score, 6)
    return round(global_weight * global_score + observation_weight * observation_score, 6)


def item_images(data_dir, image):
    """A pair's image value as a judge item's `image_path`: its path(s) under data_dir; several as a tuple (requests
    are frozen values)."""
    from srpo.schema import join_images

    joined = join_images(data_dir, image)
    return tuple(joined) if isinstance(joined, list) else joined


def judge_groups(ask, groups: list[tuple[dict, list[dict]]], data_dir, *, m: int, global_weight: float,
                 observation_weight: float) -> list[dict]:
    """The judge step's batch: (pair, its samples) -> judgments rows (Judgment fields plus `dream`: the risk context
    and every answer). The risk context is built once per prompt, then every sample is scored against it."""

    items = [{**pair, "image_path": item_images(data_dir, pair.get("image"))} for pair, _ in groups]
    # Only what the prompt shows: the MRD passes and scoring never see a label, category or reference answer.
    items = [{"id": it["id"], "query": it["query"], "image_path": it["image_path"]} for it in items]
    contexts = risk_context(ask, items, m)
    scored = score_many(ask, [(item, ctx, responses) for item, ctx, (_, responses) in zip(items, contexts, groups,
                                                                                           strict=True)],
                        global_weight=global_weight, observation_weight=observation_weight)
    return [{**s.judgment.to_dict(), "dream": s.record} for group in scored for s in group]


def manifest_stats(rows: list[dict]) -> dict:
    """What the judgments manifest reports for DREAM, from the rows on disk (so a resumed step counts them all)."""
    contexts = {r["prompt_id"]: r["dream"]["risk_context"] for r in rows if r.get("dream")}
    built = [c for c in contexts.values() if not c["failed"]]
    scored = [r["dream"] for r in rows if not r["failed"] and r.get("dream")]
    sample_failures = Counter(s["failure"] for c in contexts.values() for b in c["passes"].values()
                              for s in b.get("samples", []) if s["failure"])
    pass_failures = Counter(name for c in contexts.values() for name, b in c["passes"].items() if b.get("failure"))

    def mean(values):
        values = [v for v in values if v is not None]
        return round(sum(values) / len(values), 6) if values else None

    return {
        "failure_reasons": dict(sorted(Counter(r["failure"] for r in rows if r["failed"]).items())),
        "dream_prompts": len(contexts),
        "dream_context_failures": len(contexts) - len(built),
        "dream_pass_failures": dict(sorted(pass_failures.items())),
        "dream_sample_failures": dict(sorted(sample_failures.items())),
        "dream_kept_by_majority": sum(len(c["verification"]) for c in built),
        "dream_verification_drops": sum(c["dropped"] for c in built),
        "dream_verification_failures": sum(1 for c in built for v in c["verification"] if v["failure"]),
        "dream_observations_per_prompt": mean(len(c["observations"]) for c in built),
        "dream_prompts_without_risk": sum(1 for c in built if not c["observations"]),
        "mean_global_score": mean(s["global_score"] for s in scored),
        "mean_observation_score": mean(s["observation_score"] for s in scored),
        "mean_preference": mean(s["reward"] for s in scored),
    }


# ------------------------------------------------------------------------------------------------ asks


def generation_ask(texts, *, temperature: float, seed: int):
    """`ask` on a text generator `texts(prompts, do_sample=, temperature=, seed=) -> one text per (prompt, image)`,
    e.g. srpo.models.generate over the policy. Greedy requests go together; sample i of every request is drawn with
    seed + i, so the m samples of a pass differ and a rerun draws the same ones."""
    def ask(requests: list[Request]) -> list[str]:
        images: dict[str, object] = {}  # each image opened once per call, however many requests look at it

        def image(path):
            if isinstance(path, tuple):  # a multi-image prompt
                return [image(p) for p in path]
            if path and path not in images:
                from PIL import Image

                with Image.open(path) as im:
                    images[path] = im.convert("RGB")
            return images.get(path) if path else None

        out: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):  # one batch per sample index, with and without an image apart
            groups.setdefault((-1 if r.sample is None else r.sample, r.image_path is None), []).append(i)
        for (sample, _), idx in sorted(groups.items()):
            prompts = [(ask_text(requests[i].prompt), image(requests[i].image_path)) for i in idx]
            got = texts(prompts, do_sample=sample >= 0, temperature=temperature, seed=seed + max(sample, 0))
            for i, t in zip(idx, got, strict=True):
                out[i] = t
        return out

    return ask


def chat_ask(client, *, temperature: float, seed: int, max_reasks: int = 1):
    """`ask` on an OpenAI-compatible endpoint (`ChatClient`, or the cached one): our system prompt, the image when
    the request looks at it, greedy (temperature 0) or sample i at `temperature` with seed + i, and a re-ask when an
    answer does not parse. An answer that never parses comes back as text and fails in the parser; a call that
    failed after its retries comes back with its reason."""
    from srpo.clients.openai_compat import ChatRequest

    def ask(requests: list[Request]) -> list[tuple[str, str | None]]:
        out: list = [None] * len(requests)
        by_kind: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            by_kind.setdefault(r.kind, []).append(i)
        for kind, idx in by_kind.items():
            reqs = [ChatRequest(prompt=requests[i].prompt, system=DREAM_SYSTEM, id=requests[i].id,
                                images=image_paths(requests[i].image_path),
                                params={"temperature": 0.0} if requests[i].sample is None else
                                {"temperature": temperature, "seed": seed + requests[i].sample})
                    for i in idx]
            for i, res in zip(idx, client.complete_many(reqs, validate=VALIDATORS[kind], max_reasks=max_reasks),
                              strict=True):
                if res.ok:
                    out[i] = (res.text, None)
                elif res.error == "invalid_answer":
                    out[i] = (res.rejected_text or "", None)  # the parser names why it is invalid
                else:
                    out[i] = (res.rejected_text or res.detail or "", res.error)
        return out

    return ask


def make_chat_client(args, run_dir: str):
    """The cached endpoint client for `judge_dream_model: openai`, keyed on DREAM's prompt version."""
    from pathlib import Path

    from srpo.cache import CachedChatClient, DiskCache
    from srpo.clients.openai_compat import ChatClient

    client = ChatClient(args.judge_base_url, args.judge_model, api_key_env=args.judge_api_key_env,
                        max_tokens=args.judge_max_new_tokens, temperature=0.0, seed=args.seed,
                        price_prompt_per_1k=args.judge_price_prompt_per_1k,
                        price_completion_per_1k=args.judge_price_completion_per_1k)
    return CachedChatClient(client, DiskCache(str(Path(run_dir) / ".cache" / "judge")),
                            prompt_version=DREAM_PROMPT_VERSION)

