"""Preference pairs from judgments: pure functions, tested without a model.

reward = w_s * safety + w_e * effectiveness + w_a * risk_awareness + w_f * chain_valid  (scores in [0, 1]; failed
judgments excluded; a score the judge does not measure, None, adds nothing). A judge that gives its own overall score
as `preference` (the pairwise win rate; DREAM's mixed reward) is ranked by (w_s + w_e) * preference (+ the format
term) alone: its awareness is already inside that score and is not counted twice.
best-vs-worst: per prompt, the highest-reward sample is chosen and the lowest rejected when their gap >= margin
(ties broken by the lower sample index, so pairs are deterministic). On benign prompts effectiveness carries the
reward, so a refusal there is the rejected side: the loop cannot buy safety with refusals.
"""

from __future__ import annotations

from collections import defaultdict


def reward(judgment: dict, safety_weight: float, effectiveness_weight: float, awareness_weight: float,
           format_weight: float = 0.0) -> float:
    if judgment.get("preference") is not None:
        value = (safety_weight + effectiveness_weight) * judgment["preference"]
    else:
        value = safety_weight * judgment["safety"] + effectiveness_weight * judgment["effectiveness"]
        if judgment.get("awareness") is not None:
            value += awareness_weight * judgment["awareness"]
    if format_weight and judgment.get("chain_valid") is not None:
        value += format_weight * judgment["chain_valid"]
    return value


def best_vs_worst(judgments: list[dict], *, margin: float, safety_weight: float = 1.0,
                  effectiveness_weight: float = 1.0, awareness_weight: float = 0.5,
                  format_weight: float = 0.0) -> list[dict]:
    """One pair per prompt whose best and worst samples differ by >= margin, in prompt order."""
    by_prompt: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for j in judgments:
        if j.get("failed"):
            continue
        r = reward(j, safety_weight, effectiveness_weight, awareness_weight, format_weight)
        by_prompt[j["prompt_id"]].append((r, j["sample_idx"]))
    pairs = []
    for prompt_id in sorted(by_prompt):
        scored = by_prompt[prompt_id]
        if len(scored) < 2:
            continue
        best = max(scored, key=lambda s: (s[0], -s[1]))
        worst = min(scored, key=lambda s: (s[0], s[1]))
        if best[0] - worst[0] >= margin and best[1] != worst[1]:
            pairs.append({"prompt_id": prompt_id, "chosen_idx": best[1], "rejected_idx": worst[1],
                          "chosen_reward": round(best[0], 6), "rejected_reward": round(worst[0], 6)})
    return pairs


def balance_by_group(pairs: list[dict], group_of: dict[str, str], seed: int) -> list[dict]:
    """Down-sample so every group (e.g. the label a prompt was *judged* to have) contributes equally many pairs.

    Without it, whichever kind of prompt the policy is least consistent on dominates the DPO data and drags the
    policy that way (measured in the world: 2:1 helpful-vs-refusal pairs cost held-out safety).
    """
    import random

    groups: dict[str, list[dict]] = defaultdict(list)
    for p in pairs:
        groups[group_of[p["prompt_id"]]].append(p)
    if len(groups) < 2:
        return pairs
    n = min(len(g) for g in groups.values())
    rng = random.Random(seed)
    keep = {id(p) for g in groups.values() for p in (rng.sample(g, n) if len(g) > n else g)}
    return [p for p in pairs if id(p) in keep]
