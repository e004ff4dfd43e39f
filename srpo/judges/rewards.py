"""srpo's judges as GRPO rewards: one adapter for every judge backend, plus chain rewards that need no judge.

A completion's reward is one number, the weighted sum

    w_judge-part (srpo.pairing.reward: w_s * safety + w_e * effectiveness + w_a * awareness, or DREAM's mixed score)
    + w_f * format + w_c * consistency + w_l * length

or None when the judge failed on it (its call failed after retries, its verdict did not parse, the self-assessment of
its prompt did not parse). It is one reward function on purpose: TRL sums several functions with `nansum`, so a
failed judge (None) beside a chain reward would count as a judge score of 0. A single function that returns None makes
the completion unscorable for TRL (every reward function returned None): it is left out of its group's mean and its
advantage is 0. A failure is counted, never scored.

Chain rewards (pure functions of the completion's text):
  format       1 if the completion parses as the seven-step chain, else 0
  consistency  the share of four agreements between its steps: the combined reading mentions what the visual reading
               names; the answer mentions it too; the strategy refuses iff the answer is a refusal; the risk category
               is 'none' iff the strategy is plain help. 0 for a completion that is no chain.
  length       1 up to `max_tokens` completion tokens, then down linearly to 0 at twice that

Nothing here reads a label or the world's rule table (the rule judge, an oracle, reads labels by definition, and only
when a recipe names it).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from srpo.chain import parse_chain
from srpo.pairing import reward as judge_part
from srpo.refusal import is_refusal

COMPONENTS = ("judge", "format", "consistency", "length")
_WORD = re.compile(r"[a-z]+")
# Words that carry nothing about the object a reading names.
_FUNCTION_WORDS = frozenset("a an the this that these those there here is are it its of in on at with and or to "
                            "something someone shows showing see".split())


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _FUNCTION_WORDS}


def format_reward(text: str) -> float:
    return 1.0 if parse_chain(text).ok else 0.0


def consistency_reward(text: str) -> float:
    """The share of the four agreements between the chain's steps (module docstring); 0 when it is no chain."""
    chain = parse_chain(text).chain
    if chain is None:
        return 0.0
    seen = content_words(chain.visual)
    refused = is_refusal(chain.answer)
    checks = [
        bool(seen & content_words(chain.combined)),
        bool(seen & content_words(chain.answer)),
        (chain.strategy == "refuse") == refused,
        (chain.category == "none") == (chain.strategy == "help"),
    ]
    return sum(checks) / len(checks)


def length_reward(n_tokens: int, max_tokens: int) -> float:
    if n_tokens <= max_tokens:
        return 1.0
    return max(0.0, 1.0 - (n_tokens - max_tokens) / max_tokens)


@dataclass
class RewardWeights:
    safety: float = 1.0
    effectiveness: float = 1.0
    awareness: float = 0.5
    format: float = 0.0
    consistency: float = 0.0
    length: float = 0.0
    max_tokens: int = 96  # the length guard's budget

    @property
    def uses_judge(self) -> bool:
        return bool(self.safety or self.effectiveness or self.awareness)


@dataclass
class RewardLog:
    """What the reward saw since the last flush: component sums, counts and failures (one logging step's worth)."""

    sums: dict = field(default_factory=lambda: defaultdict(float))
    counts: dict = field(default_factory=lambda: defaultdict(int))
    judged: int = 0
    failures: int = 0
    reasons: dict = field(default_factory=lambda: defaultdict(int))

    def add(self, name: str, value: float) -> None:
        self.sums[name] += value
        self.counts[name] += 1


class JudgeReward:
    """A GRPO reward function (TRL's signature: prompts, completions, completion_ids and the dataset's columns as
    lists) from a judge's `score(groups)`: [(prompt row, [{"sample_idx", "response"}])] -> [[Judgment]] in the same
    order. `prompts_by_id` are the rows the dataset's `prompt_id` column names. `records`, when given, receives one
    dict per completion (the judgment, its components and reward), one `extend` per call, for the step's judgments
    file.

    The judge is called once per TRL generation batch with every completion of this process, grouped by prompt; a
    judge that fails a whole call (an exception) is a bug, not a failure, and is raised.
    """

    __name__ = "srpo_reward"  # TRL names the logged columns after it

    def __init__(self, score, prompts_by_id: dict[str, dict], weights: RewardWeights, *, records=None):
        self.score = score
        self.prompts_by_id = prompts_by_id
        self.weights = weights
        self.records = records
        self.total = RewardLog()  # the whole step's counts (the manifest's)
        self.judge_seconds = 0.0  # time spent waiting on the judge (this process)

    def __call__(self, prompts, completions, completion_ids=None, prompt_id=None, log_metric=None, trainer_state=None,
                 **_columns) -> list[float | None]:
        if prompt_id is None:
            raise ValueError("the GRPO dataset needs a prompt_id column: the reward finds each prompt's row by it")
        texts = [completion_text(c) for c in completions]
        judgments = self._judge(prompt_id, texts) if self.weights.uses_judge else [None] * len(texts)
        step = trainer_state.global_step if trainer_state is not None else None
        log = RewardLog()
        out, rows = [], []
        for i, (pid, text, judgment) in enumerate(zip(prompt_id, texts, judgments, strict=True)):
            n_tokens = len(completion_ids[i]) if completion_ids is not None else len(text.split())
            value, parts = self.combine(judgment, text, n_tokens)
            log.judged += 1
            if value is None:
                log.failures += 1
                log.reasons[judgment.failure or "judge_failure"] += 1
            for name, part in parts.items():
                log.add(name, part)
            out.append(value)
            if self.records is not None:
                rows.append({"global_step": step, "prompt_id": pid, "completion": text,
                                     "judgment": judgment.to_dict() if judgment is not None else None,
                                     "components": parts, "reward": value})
        if self.records is not None:
            self.records.extend(rows)
        self._merge(log)
        if log_metric is not None:
            for name in COMPONENTS:
                if log.counts.get(name):
                    log_metric(f"rewards/{name}/mean", log.sums[name] / log.counts[name])
            log_metric("judge/failure_rate", log.failures / log.judged if log.judged else 0.0)
        return out

    def combine(self, judgment, text: str, n_tokens: int) -> tuple[float | None, dict]:
        """(the completion's reward or None, its components) from its judgment (None: no judge weight) and text."""
        w = self.weights
        parts = {}
        if judgment is not None:
            if judgment.failed:
                return None, parts
            parts["judge"] = judge_part(judgment.to_dict(), w.safety, w.effectiveness, w.awareness)
        if w.format:
            parts["format"] = format_reward(text)
        if w.consistency:
            parts["consistency"] = consistency_reward(text)
        if w.length:
            parts["length"] = length_reward(n_tokens, w.max_tokens)
        value = parts.get("judge", 0.0) + sum(getattr(w, name) * parts[name] for name in COMPONENTS[1:]
                                              if name in parts)
        return value, parts

    def _judge(self, prompt_ids: list[str], texts: list[str]) -> list:
        order: dict[str, list[int]] = defaultdict(list)
        for i, pid in enumerate(prompt_ids):
            order[pid].append(i)
        unknown = [pid for pid in order if pid not in self.prompts_by_id]
        if unknown:
            raise KeyError(f"prompt_id {unknown[0]!r} is not one of the step's prompts")
        groups = [(self.prompts_by_id[pid], [{"sample_idx": j, "response": texts[i]} for j, i in enumerate(rows)])
                  for pid, rows in order.items()]
        import time

        started = time.time()
        scored = self.score(groups)
        self.judge_seconds += time.time() - started
        out = [None] * len(texts)
        for rows, judgments in zip(order.values(), scored, strict=True):
            if len(judgments) != len(rows):
                raise RuntimeError(f"the judge returned {len(judgments)} judgments for {len(rows)} completions")
            for i, judgment in zip(rows, judgments, strict=True):
                out[i] = judgment
        return out

    def _merge(self, log: RewardLog) -> None:
        t = self.total
        t.judged += log.judged
        t.failures += log.failures
        for reason, n in log.reasons.items():
            t.reasons[reason] += n
        for name in log.sums:
            t.sums[name] += log.sums[name]
            t.counts[name] += log.counts[name]

    def stats(self) -> dict:
        t = self.total
        return {"judged_completions": t.judged, "judge_failures": t.failures,
                "judge_failure_rate": t.failures / t.judged if t.judged else 0.0,
                "judge_failure_reasons": dict(sorted(t.reasons.items())),
                "judge_seconds": round(self.judge_seconds, 3),
                **{f"mean_{name}": round(t.sums[name] / t.counts[name], 6) for name in COMPONENTS
                   if t.counts.get(name)}}


class AsyncJudgeReward(JudgeReward):
    """The same reward as a coroutine function, for judges that wait on an endpoint: TRL awaits async reward
    functions on its own event loop, so the endpoint's requests (run concurrently by the client) do not hold the
    training loop's thread."""

    async def __call__(self, *args, **kwargs):  # noqa: D102
        import asyncio

        return await asyncio.to_thread(JudgeReward.__call__, self, *args, **kwargs)


def completion_text(completion) -> str:
    """A TRL completion as text: conversational completions are [{"role": "assistant", "content": ...}]."""
    if isinstance(completion, str):
        return completion
    parts = []
    for message in completion:
        content = message.get("content", "")
        if isinstance(content, list):
            content = "".join(c.get("text") or "" for c in content if isinstance(c, dict))
        parts.append(content)
    return "".join(parts)
