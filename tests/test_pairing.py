from srpo.pairing import best_vs_worst


def j(pid, idx, s, e, a=0.0, failed=False):
    return {"prompt_id": pid, "sample_idx": idx, "safety": s, "effectiveness": e, "awareness": a, "failed": failed}


def test_best_vs_worst_above_margin():
    judgments = [j("p1", 0, 0, 0), j("p1", 1, 1, 1, 1), j("p1", 2, 1, 0),
                 j("p2", 0, 1, 1), j("p2", 1, 1, 0.9)]  # p2's gap 0.1 is below the margin
    pairs = best_vs_worst(judgments, margin=0.25)
    assert pairs == [{"prompt_id": "p1", "chosen_idx": 1, "rejected_idx": 0, "chosen_reward": 2.5,
                      "rejected_reward": 0.0}]


def test_failed_judgments_never_pair():
    judgments = [j("p1", 0, None, None, None, failed=True), j("p1", 1, 1, 1), j("p1", 2, 0, 0)]
    pairs = best_vs_worst(judgments, margin=0.1)
    assert pairs[0]["rejected_idx"] == 2  # the failed sample is not treated as the worst
    only_one = [j("p1", 0, None, None, None, failed=True), j("p1", 1, 1, 1)]
    assert best_vs_worst(only_one, margin=0.0) == []


def test_benign_refusal_is_rejected():
    # On a benign prompt both answers are "safe"; the helpful one wins on effectiveness.
    judgments = [j("benign", 0, 1, 0), j("benign", 1, 1, 1)]
    assert best_vs_worst(judgments, margin=0.5)[0]["chosen_idx"] == 1


def test_weights_and_ties_are_deterministic():
    judgments = [j("p", 0, 1, 0), j("p", 1, 0, 1), j("p", 2, 0, 0)]
    safety_first = best_vs_worst(judgments, margin=0.1, safety_weight=2.0, effectiveness_weight=1.0)
    assert safety_first[0]["chosen_idx"] == 0
    tied = best_vs_worst([j("p", 0, 1, 1), j("p", 1, 1, 1), j("p", 2, 0, 0)], margin=0.1)
    assert tied[0]["chosen_idx"] == 0


def test_unmeasured_awareness_adds_nothing_and_format_has_its_own_weight():
    from srpo.pairing import reward

    model_judged = {"safety": 1.0, "effectiveness": 0.5, "awareness": None, "chain_valid": 1.0}
    assert reward(model_judged, 1.0, 1.0, 0.5) == 1.5  # awareness not measured: no term, and no crash
    assert reward(model_judged, 1.0, 1.0, 0.5, format_weight=0.25) == 1.75
    rule_judged = {"safety": 1.0, "effectiveness": 0.0, "awareness": 1.0, "chain_valid": 0.0}
    assert reward(rule_judged, 1.0, 1.0, 0.5, format_weight=0.25) == 1.5
    # A chain that parses but answers worse must not win on format alone unless format is weighted.
    judgments = [{**model_judged, "prompt_id": "p", "sample_idx": 0, "effectiveness": 1.0, "chain_valid": 0.0},
                 {**model_judged, "prompt_id": "p", "sample_idx": 1, "effectiveness": 0.5, "chain_valid": 1.0}]
    assert best_vs_worst(judgments, margin=0.1)[0]["chosen_idx"] == 0
    assert best_vs_worst(judgments, margin=0.1, format_weight=1.0)[0]["chosen_idx"] == 1


def test_a_judge_with_its_own_overall_score_is_not_counted_twice():
    from srpo.pairing import reward

    # DREAM: preference already mixes the global and observation scores; awareness is that observation score.
    dream = {"preference": 0.5, "awareness": 1.0, "chain_valid": 1.0}
    assert reward(dream, 1.0, 1.0, 0.5) == 1.0
    assert reward(dream, 1.0, 1.0, 0.5, format_weight=0.5) == 1.5
    pointwise = {"safety": 1.0, "effectiveness": 0.5, "awareness": 1.0}
    assert reward(pointwise, 1.0, 1.0, 0.5) == 2.0
