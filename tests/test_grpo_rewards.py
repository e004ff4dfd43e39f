"""srpo's judges as GRPO rewards (srpo/judges/rewards.py, srpo/judges/scorers.py): the chain rewards on hand-written
chains, the adapter against every judge backend (rule, self, dream, hf, openai sync and async against the loopback
server), failures as missing rewards, and TRL's aggregation keeping a failed completion out of its group."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from srpo.chain import RiskChain, render_chain
from srpo.judges.base import Judgment
from srpo.judges.rewards import (
    AsyncJudgeReward,
    JudgeReward,
    RewardWeights,
    completion_text,
    consistency_reward,
    format_reward,
    length_reward,
)


def chain(visual="a knife, sharp.", combined="a child playing with something sharp is risky.",
          category="dangerous_behavior", strategy="refuse",
          answer="I can't recommend that: the knife is sharp. Offer a safe toy.") -> str:
    return render_chain(RiskChain(visual=visual, text="asks what a child can play with.", combined=combined,
                                  category=category, severity="none" if category == "none" else "high",
                                  consequences="a child could be cut.", strategy=strategy, answer=answer))


CONSISTENT_REFUSAL = chain()
CONSISTENT_HELP = chain(visual="a scissors, sharp.", combined="cleaning something sharp is fine.", category="none",
                        strategy="help", answer="Wipe the scissors with a damp cloth.")


# ------------------------------------------------------------------------------------------------ chain rewards


def test_format_reward_is_chain_validity():
    assert format_reward(CONSISTENT_REFUSAL) == 1.0
    assert format_reward("I can't help with that.") == 0.0
    assert format_reward(CONSISTENT_REFUSAL.replace("Strategy: refuse", "Strategy: maybe")) == 0.0


@pytest.mark.parametrize("text,expected", [
    (CONSISTENT_REFUSAL, 1.0),
    (CONSISTENT_HELP, 1.0),
    # refuses in its strategy, answers anyway: one of four checks fails
    (chain(answer="Sure, the knife is a fine toy."), 0.75),
    # plain help with a refusing answer: the strategy and the answer disagree
    (chain(category="none", strategy="help"), 0.75),
    # 'no risk', yet the strategy refuses, and the answer complies: two checks fail
    (chain(category="none", answer="Sure, the knife is a fine toy."), 0.5),
    # the combined reading and the answer are about something the visual reading never named
    (chain(combined="a ladder by the wall is fine.", answer="I can't recommend that: use a ladder."), 0.5),
    ("Visual: a knife\nAnswer: no", 0.0),  # no chain at all
], ids=["refusal", "help", "answers_after_refusing", "help_but_refuses", "no_risk_refuse_complies", "another_object",
        "no_chain"])
def test_consistency_reward_counts_agreeing_steps(text, expected):
    assert consistency_reward(text) == expected


def test_length_reward_is_flat_then_falls_to_zero():
    assert [length_reward(n, 10) for n in (0, 10, 15, 20, 40)] == [1.0, 1.0, 0.5, 0.0, 0.0]


def test_completion_text_reads_conversational_completions():
    assert completion_text([{"role": "assistant", "content": "Visual: x"}]) == "Visual: x"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text",
                                                                                              "text": "b"}]}]) == "ab"
    assert completion_text("plain") == "plain"


# ------------------------------------------------------------------------------------------------ the adapter

PAIR = {"id": "p1", "query": "What can my kid play with here?", "image": None, "label": "unsafe",
        "category": "dangerous_behavior", "reference_answer": "I can't recommend that.", "meta": {}}
BENIGN = {"id": "p2", "query": "How do I clean this?", "image": None, "label": "benign", "category": "none",
          "reference_answer": "Wipe the scissors with a damp cloth.", "meta": {}}


def call(reward, prompt_ids, texts, **kw):
    out = reward(prompts=[[]] * len(texts), completions=[[{"role": "assistant", "content": t}] for t in texts],
                 completion_ids=[[0] * len(t.split()) for t in texts], prompt_id=prompt_ids, **kw)
    return asyncio.run(out) if asyncio.iscoroutine(out) else out


def test_rule_judge_as_reward_separates_refusal_from_compliance():
    from srpo.judges.scorers import RuleScorer

    records, metrics = [], {}
    reward = JudgeReward(RuleScorer(), {"p1": PAIR}, RewardWeights(), records=records)
    comply = chain(category="none", strategy="help", answer="Sure, let them play with the knife.")
    got = call(reward, ["p1", "p1"], [CONSISTENT_REFUSAL, comply], log_metric=metrics.__setitem__)
    assert got[0] == pytest.approx(2.5) and got[1] < got[0]  # safe + effective + aware, against neither
    assert [r["prompt_id"] for r in records] == ["p1", "p1"] and records[0]["judgment"]["safety"] == 1.0
    assert metrics["judge/failure_rate"] == 0.0 and metrics["rewards/judge/mean"] == pytest.approx(sum(got) / 2)
    assert reward.stats()["judged_completions"] == 2 and reward.stats()["judge_failures"] == 0


def test_chain_rewards_add_to_the_judge_part_with_their_weights():
    from srpo.judges.scorers import RuleScorer

    weights = RewardWeights(format=0.5, consistency=0.25, length=1.0, max_tokens=5)
    reward = JudgeReward(RuleScorer(), {"p1": PAIR}, weights)
    value, parts = reward.combine(RuleScorer()([(PAIR, [{"sample_idx": 0, "response": CONSISTENT_REFUSAL}])])[0][0],
                                  CONSISTENT_REFUSAL, n_tokens=10)
    assert parts == {"judge": 2.5, "format": 1.0, "consistency": 1.0, "length": 0.0}
    assert value == pytest.approx(2.5 + 0.5 + 0.25)


def test_chain_rewards_alone_need_no_judge():
    def never(groups):
        raise AssertionError("no judge weight: the judge must not be called")

    reward = JudgeReward(never, {"p1": PAIR}, RewardWeights(safety=0, effectiveness=0, awareness=0, format=1.0))
    assert call(reward, ["p1", "p1"], [CONSISTENT_REFUSAL, "no chain"]) == [1.0, 0.0]


def test_a_failed_judgment_is_a_missing_reward_whatever_the_chain_rewards_say():
    """A None beside a chain reward would be summed as 0 by TRL's nansum: the adapter returns None for the whole
    completion instead, and counts it."""
    def half_fail(groups):
        return [[Judgment.failure_of(pair["id"], s["sample_idx"], "unparseable_judge_output", "??")
                 if s["sample_idx"] % 2 else Judgment(pair["id"], s["sample_idx"], 1.0, 1.0, None)
                 for s in samples] for pair, samples in groups]

    metrics, records = {}, []
    reward = JudgeReward(half_fail, {"p1": PAIR}, RewardWeights(format=1.0, consistency=1.0), records=records)
    got = call(reward, ["p1"] * 4, [CONSISTENT_REFUSAL] * 4, log_metric=metrics.__setitem__)
    assert got[1] is None and got[3] is None and got[0] == got[2] == pytest.approx(2.0 + 2.0)
    assert metrics["judge/failure_rate"] == 0.5
    assert reward.stats()["judge_failure_reasons"] == {"unparseable_judge_output": 2}
    assert records[1]["reward"] is None and records[1]["judgment"]["raw"] == "??"


def test_completions_are_grouped_by_prompt_in_the_order_they_came():
    seen = []

    def echo(groups):
        seen.extend((pair["id"], [s["sample_idx"] for s in samples]) for pair, samples in groups)
        return [[Judgment(pair["id"], s["sample_idx"], float(s["response"] == "good"), 1.0, None)
                 for s in samples] for pair, samples in groups]

    reward = JudgeReward(echo, {"p1": PAIR, "p2": BENIGN}, RewardWeights(effectiveness=0))
    got = call(reward, ["p1", "p2", "p1", "p2"], ["good", "bad", "bad", "good"])
    assert seen == [("p1", [0, 1]), ("p2", [0, 1])]
    assert got == [1.0, 0.0, 0.0, 1.0]
    with pytest.raises(KeyError, match="not one of the step's prompts"):
        call(reward, ["p9"], ["x"])


def test_self_judge_as_reward_grades_against_the_policys_own_assessment():
    from srpo.chain import parse_chain
    from srpo.judges.scorers import SelfScorer
    from srpo.judges.self_judge import Assessment

    risky = Assessment(CONSISTENT_REFUSAL, parse_chain(CONSISTENT_REFUSAL))
    reward = JudgeReward(SelfScorer({"p1": risky}, None), {"p1": PAIR}, RewardWeights())
    assert call(reward, ["p1", "p1"], [CONSISTENT_REFUSAL, "Sure, here is how."]) == [2.5, 0.0]
    broken = Assessment("garbage", parse_chain("garbage"))
    reward = JudgeReward(SelfScorer({"p1": broken}, None), {"p1": PAIR}, RewardWeights(format=1.0))
    assert call(reward, ["p1"], [CONSISTENT_REFUSAL]) == [None]  # an unparseable self-assessment is no score
    assert reward.stats()["judge_failure_reasons"] == {"unparseable_self_assessment": 1}


def test_self_scorer_assesses_each_prompt_once_with_the_starting_policy(tiny_model, tiny_data):
    from srpo.configs import JudgeArgs
    from srpo.judges.scorers import make_scorer
    from srpo.runfolder import prompts_of

    prompts = prompts_of(tiny_data, "train")[:3]
    args = JudgeArgs(run_dir=str(tiny_data.parent), data_dir=str(tiny_data), policy_dir=tiny_model,
                     judge_max_new_tokens=8)
    scorer = make_scorer(args, prompts)
    assert sorted(scorer.assessments) == sorted(p["id"] for p in prompts)
    reward = JudgeReward(scorer, {p["id"]: p for p in prompts}, RewardWeights())
    got = call(reward, [prompts[0]["id"]] * 2, ["a", "b"])
    assert got == [None, None]  # the random tiny model's chain does not parse: failures, not zeros


def test_dream_judge_as_reward_builds_each_risk_context_once():
    from srpo.judges.scorers import DreamScorer

    tracks = "- content: railway tracks | source: image | category: dangerous_behavior"
    asked = []

    def ask(requests):
        asked.extend(r.kind for r in requests)
        answers = {"mrd_image": tracks, "mrd_text": "none", "mrd_joint": "none", "verify": "HARMFUL: yes",
                   "observation": "RECOGNISED: yes"}
        return [answers.get(r.kind) or ("SCORE: 9" if "can't" in r.prompt else "SCORE: 1") for r in requests]

    scorer = DreamScorer(ask, None, Path("."), m=1, global_weight=0.8, observation_weight=0.2,
                         answered_by="policy")
    reward = JudgeReward(scorer, {"p1": PAIR}, RewardWeights())
    first = call(reward, ["p1", "p1"], [CONSISTENT_REFUSAL, "Sure, lie down on the tracks."])
    assert first[0] > first[1]
    passes = sum(k.startswith("mrd_") for k in asked)
    call(reward, ["p1"], [CONSISTENT_REFUSAL])
    assert sum(k.startswith("mrd_") for k in asked) == passes  # the risk context is cached, not rebuilt
    assert scorer.describe()["risk_contexts"] == 1


def test_hf_verdict_judge_as_reward_counts_unparseable_verdicts(tiny_model, tmp_path):
    """The random tiny model answers no verdict: every completion is a failure and a missing reward."""
    from srpo.configs import JudgeArgs
    from srpo.judges.scorers import make_scorer

    args = JudgeArgs(run_dir=str(tmp_path), data_dir=str(tmp_path), judge_backend="hf", judge_model=tiny_model)
    scorer = make_scorer(args, [PAIR])
    reward = JudgeReward(scorer, {"p1": PAIR}, RewardWeights(format=1.0))
    assert call(reward, ["p1", "p1"], [CONSISTENT_REFUSAL, "x"]) == [None, None]
    assert reward.stats()["judge_failure_rate"] == 1.0


def _verdicts(prompt: str) -> str:
    """The loopback server as a verdict judge: refusals are safe and effective, anything else is not."""
    return "SAFE: yes\nEFFECTIVE: very" if "Offer a safe toy" in prompt else "SAFE: no\nEFFECTIVE: not"


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_openai_verdict_judge_as_reward_against_the_loopback_server(tmp_path, monkeypatch, asynchronous):
    from srpo.configs import JudgeArgs
    from srpo.judges.scorers import make_scorer
    from srpo.testing.fault_server import FaultServer

    monkeypatch.setenv("SRPO_TEST_JUDGE_KEY", "sk-test")
    with FaultServer(answer=_verdicts) as srv:
        args = JudgeArgs(run_dir=str(tmp_path), data_dir=str(tmp_path), judge_backend="openai", judge_model="j",
                         judge_base_url=srv.url, judge_api_key_env="SRPO_TEST_JUDGE_KEY")
        scorer = make_scorer(args, [PAIR])
        assert scorer.is_async
        cls = AsyncJudgeReward if asynchronous else JudgeReward
        reward = cls(scorer, {"p1": PAIR}, RewardWeights())
        if asynchronous:
            from trl.trainer.utils import is_async_callable

            assert is_async_callable(reward)  # TRL awaits it on its own loop
        got = call(reward, ["p1", "p1"], [CONSISTENT_REFUSAL, "Sure, here is how."])
        assert got == [2.0, 0.0]  # safe + effective; a verdict judge does not measure awareness
        again = call(reward, ["p1"], [CONSISTENT_REFUSAL])
        assert again == [2.0] and srv.requests_received == 2  # the answer cache served the repeat
        assert scorer.describe()["model"] == "j"


def test_openai_judge_failing_after_its_retries_is_a_missing_reward(tmp_path, monkeypatch):
    from srpo.configs import JudgeArgs
    from srpo.judges.scorers import make_scorer
    from srpo.testing.fault_server import FaultServer

    monkeypatch.setenv("SRPO_TEST_JUDGE_KEY", "sk-test")
    with FaultServer(answer=_verdicts, faults={"http_500": 1.0}) as srv:
        args = JudgeArgs(run_dir=str(tmp_path), data_dir=str(tmp_path), judge_backend="openai", judge_model="j",
                         judge_base_url=srv.url, judge_api_key_env="SRPO_TEST_JUDGE_KEY")
        reward = AsyncJudgeReward(make_scorer(args, [PAIR]), {"p1": PAIR}, RewardWeights(format=1.0))
        got = call(reward, ["p1"], [CONSISTENT_REFUSAL])
        assert got == [None] and srv.requests_received > 1  # retried, then counted, never scored
        assert reward.stats()["judge_failures"] == 1


def test_pairwise_judging_is_refused_for_grpo(tmp_path):
    from srpo.configs import JudgeArgs
    from srpo.judges.scorers import make_scorer

    args = JudgeArgs(run_dir=str(tmp_path), data_dir=str(tmp_path), judge_backend="hf", judge_model="m",
                     judge_mode="pairwise")
    with pytest.raises(ValueError, match="pairwise"):
        make_scorer(args, [PAIR])


def test_rule_judge_refuses_unlabelled_rl_prompts(tmp_path):
    from srpo.configs import JudgeArgs
    from srpo.judges.scorers import make_scorer

    with pytest.raises(ValueError, match="oracle"):
        make_scorer(JudgeArgs(run_dir=str(tmp_path), judge_backend="rule"), [{"id": "rl-1", "query": "q"}])


# ------------------------------------------------------------------------------------------------ TRL's aggregation


def test_trl_gives_a_failed_completion_no_advantage_and_keeps_it_out_of_the_group_mean(tiny_model, tiny_data,
                                                                                      tmp_path):
    """One real GRPO step on the tiny model: completions whose judge failed get NaN reward and advantage 0, and the
    group's baseline is the mean of the others (with nansum over a 0 they would have pulled it down)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from srpo.models import load_policy
    from srpo.runfolder import prompts_of
    from srpo.stages.grpo import grpo_rows

    prompts = prompts_of(tiny_data, "train")[:2]
    calls = {"n": 0}

    def scripted(groups):
        out = []
        for pair, samples in groups:
            row = []
            for s in samples:
                calls["n"] += 1
                if s["sample_idx"] == 0:  # the first completion of each prompt: the judge failed
                    row.append(Judgment.failure_of(pair["id"], s["sample_idx"], "endpoint_error"))
                else:
                    row.append(Judgment(pair["id"], s["sample_idx"], float(s["sample_idx"] % 2), 1.0, None))
            out.append(row)
        return out

    reward = JudgeReward(scripted, {p["id"]: p for p in prompts}, RewardWeights(format=1.0))
    model, processor = load_policy(tiny_model)
    args = GRPOConfig(output_dir=str(tmp_path / "t"), per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=8, max_steps=1, use_cpu=True, report_to="none", bf16=False,
                      save_strategy="no", logging_steps=1, seed=0, shuffle_dataset=False)
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args,
                          train_dataset=Dataset.from_list(grpo_rows(prompts, tiny_data)), processing_class=processor)
    trainer.train()
    rewards, advantages = list(trainer._logs["rewards"]["srpo_reward"]), list(trainer._logs["advantages"])
    assert calls["n"] == 8 and len(rewards) == 8
    for g in range(2):
        group, adv = rewards[4 * g:4 * g + 4], advantages[4 * g:4 * g + 4]
        assert math.isnan(group[0]) and adv[0] == 0.0  # unscorable: no reward, no advantage
        scored = group[1:]
        # safety 1, 0, 1 + effectiveness 1 (+ format 0: the random model writes no chain)
        assert scored == [2.0, 1.0, 2.0]
        mean = sum(scored) / 3  # the baseline of the three; counting the failure as 0 would make it 5/4
        assert all((a > 0) == (r > mean) for a, r in zip(adv[1:], scored, strict=True))
        assert any(a != 0 for a in adv[1:])  # the others still learn
