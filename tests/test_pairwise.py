"""Pairwise judging: order shuffled against position bias, winners mapped back to the right sample, failures counted
and never scored, pairs built from the win rates, and the endpoint's calls and cost reported for the tracker."""

import json
import re

import pytest

from srpo.configs import JudgeArgs
from srpo.judges.pairwise import PairwiseStats, judge_groups_pairwise, parse_better, presentation
from srpo.pairing import best_vs_worst
from srpo.runfolder import write_jsonl, write_manifest

PAIR = {"id": "p1", "query": "What can my kid play with here?", "image": None, "label": "unsafe",
        "safety_warning": "the knife is sharp"}
SAMPLES = [{"sample_idx": k, "response": text} for k, text in enumerate(
    ["Sure, play catch with the knife.", "Careful: the knife is sharp; pick the ball instead.", "Play with it.",
     "Anything goes."])]


def _shown(prompt: str) -> tuple[str, str]:
    a = re.search(r"\[Response A\]\n(.*?)\n\n\[Response B\]", prompt, re.S).group(1)
    b = re.search(r"\[Response B\]\n(.*?)\n\nThe better", prompt, re.S).group(1)
    return a, b


class StubJudge:
    """answer(prompt) -> text; records what was asked."""

    def __init__(self, answer):
        self.answer, self.asked, self.calls = answer, [], 0

    def ask_many(self, requests, system, validate):
        self.calls += 1
        self.asked += [prompt for prompt, _, _ in requests]
        return [(self.answer(prompt), None) for prompt, _, _ in requests]


def test_parse_better_is_strict():
    assert parse_better("BETTER: a") == "A" and parse_better(" BETTER: TIE \n") == "TIE"
    for bad in ("A", "BETTER: A\nbecause", "The better one is A", "", None, "BETTER: C"):
        assert parse_better(bad) is None, bad


@pytest.mark.parametrize("k", [2, 3, 4, 5, 8])
def test_order_is_balanced_shuffled_and_seeded(k):
    orders = [presentation(0, f"p{n}", list(range(k))) for n in range(50)]
    for order in orders:
        assert len(order) == k * (k - 1) // 2
        for idx in range(k):
            first = sum(f == idx for f in order.values())
            assert (k - 1) // 2 <= first <= k // 2, (idx, order)  # shown first in half its comparisons
    if k > 2:
        assert len({tuple(o.items()) for o in orders}) > 1  # which sample goes first differs per prompt
    assert orders == [presentation(0, f"p{n}", list(range(k))) for n in range(50)]  # a rerun asks the same


def test_winner_is_mapped_back_wherever_it_was_shown(tmp_path):
    # The judge prefers the careful answer in whichever position it appears.
    judge = StubJudge(lambda p: "BETTER: A" if "Careful" in _shown(p)[0] else
                      "BETTER: B" if "Careful" in _shown(p)[1] else "BETTER: TIE")
    for seed in range(5):
        stats = PairwiseStats()
        (js,) = judge_groups_pairwise(judge, [(PAIR, SAMPLES)], tmp_path, seed=seed, stats=stats)
        pref = {j.sample_idx: j.preference for j in js}
        assert pref[1] == 1.0 and pref[0] == pref[2] == pref[3] == pytest.approx(1 / 3)  # 1 loss + 2 ties of 3
        pairs = best_vs_worst([j.to_dict() for j in js], margin=0.1, awareness_weight=0.0)
        assert pairs[0]["chosen_idx"] == 1 and pairs[0]["rejected_idx"] == 0
        assert stats.to_dict()["comparisons"] == 6 and stats.to_dict()["comparison_failures"] == 0
    assert len(judge.asked) == 5 * 6  # K(K-1)/2 comparisons per prompt
    # Several prompts in one call: one ask_many, each prompt's judgments as if asked alone.
    other = {**PAIR, "id": "p2"}
    calls = len(judge.asked)
    both = judge_groups_pairwise(judge, [(PAIR, SAMPLES), (other, SAMPLES[::-1])], tmp_path, seed=4)
    assert len(judge.asked) == calls + 12 and judge.calls == 6
    assert [j.to_dict() for j in both[0]] == [j.to_dict() for j in js]  # seed 4 was the loop's last
    assert [j.preference for j in both[1]] == [pytest.approx(x) for x in (1 / 3, 1.0, 1 / 3, 1 / 3)]
    careful_first = sum("Careful" in _shown(p)[0] for p in judge.asked if "Careful" in p)
    assert 0 < careful_first < 15  # the careful answer was shown first in some comparisons, second in others


def test_a_position_biased_judge_is_neutralised_and_reported(tmp_path):
    judge = StubJudge(lambda p: "BETTER: A")  # always the first shown
    stats = PairwiseStats()
    (js,) = judge_groups_pairwise(judge, [(PAIR, SAMPLES)], tmp_path, seed=0, stats=stats)
    assert stats.to_dict()["position_a_rate"] == 1.0
    # Without shuffling sample 0 would win all 3 and sample 3 none; shuffled, no sample wins or loses everything.
    assert all(0.0 < j.preference < 1.0 for j in js), [j.preference for j in js]


def test_garbage_comparisons_are_failures_not_scores(tmp_path):
    judge = StubJudge(lambda p: "I think both are fine.")
    stats = PairwiseStats()
    (js,) = judge_groups_pairwise(judge, [(PAIR, SAMPLES)], tmp_path, seed=0, stats=stats)
    assert all(j.failed and j.preference is None and j.failure == "unparseable_judge_output" for j in js)
    assert stats.to_dict()["comparison_failures"] == 6
    assert best_vs_worst([j.to_dict() for j in js], margin=0.0) == []


def test_pairwise_needs_a_model_judge():
    with pytest.raises(ValueError, match="pairwise"):
        JudgeArgs(judge_backend="rule", judge_mode="pairwise")


def test_pairwise_judge_step_through_an_endpoint(tiny_data, tmp_path, monkeypatch):
    """The judge step with judge_mode=pairwise against a loopback endpoint that prefers the longer answer and fails
    some calls with HTTP 500 (retried): judgments from win rates, comparisons and cost in the manifest, and a rerun
    from the cache makes no call."""
    from srpo.stages import judge
    from srpo.testing.fault_server import FaultServer
    from srpo.tracking import cost_panel

    monkeypatch.setenv("SRPO_TEST_JUDGE_KEY", "sk-test-judge")
    pairs = [json.loads(line) for line in (tiny_data / "pairs.jsonl").read_text().splitlines()][:3]
    samples = tmp_path / "samples"
    samples.mkdir()
    write_jsonl(samples / "samples.jsonl", [{"prompt_id": p["id"], "sample_idx": k, "response": "word " * (k + 1)}
                                            for p in pairs for k in range(3)])
    write_manifest(samples, step="samples", fingerprint="hand", config={}, inputs={}, outputs=["samples.jsonl"],
                   started=0.0)

    def longer(prompt):
        a, b = _shown(prompt)
        return "BETTER: A" if len(a) > len(b) else "BETTER: B"

    args = dict(run_dir=str(tmp_path), samples_dir=str(samples), data_dir=str(tiny_data), judge_backend="openai",
                judge_model="judge", judge_api_key_env="SRPO_TEST_JUDGE_KEY", judge_mode="pairwise",
                judge_price_prompt_per_1k=0.5, judge_price_completion_per_1k=1.0)
    with FaultServer(answer=longer, faults={"http_500": 0.3}, seed=1) as srv:
        manifest = judge.run(JudgeArgs(step="judgments", judge_base_url=srv.url, **args))
        assert srv.faults_injected.get("http_500", 0) > 0
    rows = [json.loads(line) for line in (tmp_path / "judgments" / "judgments.jsonl").read_text().splitlines()]
    assert [r["preference"] for r in rows] == [0.0, 0.5, 1.0] * 3  # the longest answer always wins
    stats = manifest["stats"]
    assert stats["judge_mode"] == "pairwise" and stats["judge_prompt_version"] == "srpo-pairwise-v1"
    assert stats["comparisons"] == 9 and stats["comparison_failures"] == 0 and stats["judge_failure_rate"] == 0.0
    assert 0.0 < stats["position_a_rate"] < 1.0
    panel = cost_panel(stats)
    assert panel["cost/judge_calls"] >= 9 + 1 and panel["cost/judge_retries"] >= 1
    assert panel["cost/judge_estimated_cost_usd"] > 0 and "cost/judge_seconds" in panel
    assert "sk-test-judge" not in json.dumps(manifest)

    with FaultServer(answer=longer) as srv:  # another step, same questions: all from the cache
        again = judge.run(JudgeArgs(step="judgments_again", judge_base_url=srv.url, **args))
        assert srv.requests_received == 0
    assert cost_panel(again["stats"])["cost/judge_cache_hits"] == 9
