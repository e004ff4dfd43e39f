"""The synthetic world: the split, what pretraining and building may see, and that training feedback never reads the
rule table (only held-out evaluation may)."""

from pathlib import Path

import pytest

from srpo.world.scenes import INTENTS, OBJECTS, all_combinations, combination_risk, split_combinations

ROOT = Path(__file__).resolve().parents[1]


def test_split_is_seeded_and_held_out_cells_are_trained_through_other_objects():
    train, heldout = split_combinations(0)
    assert (train, heldout) == split_combinations(0)
    assert {c.key for c in train} & {c.key for c in heldout} == set()
    assert len(train) + len(heldout) == len(all_combinations())
    for c in heldout:
        others = [t for t in train if (t.obj.hazard, t.intent) == (c.obj.hazard, c.intent)]
        assert len(others) >= 2, c.key
    assert 2 <= sum(combination_risk(c.obj, c.intent)[0] == "unsafe" for c in heldout) <= len(heldout) - 2
    assert {c.obj.name for c in train} == {o.name for o in OBJECTS}


def test_pretraining_never_sees_a_held_out_combination():
    from srpo.world.pretrain import CAPTION_QUERY, pretrain_examples

    _, heldout = split_combinations(0)
    held = {(c.obj.name, c.query) for c in heldout}
    seen = {(obj.name, q) for obj, _, q, _ in pretrain_examples(0)}
    assert not seen & held
    assert {q for _, q in seen} == {CAPTION_QUERY} | {q for q, _, _ in INTENTS.values()}


def test_world_build_writes_chains_for_training_combinations_only(tmp_path):
    from srpo.configs import BuildArgs
    from srpo.runfolder import read_jsonl
    from srpo.stages import build

    build.run(BuildArgs(run_dir=str(tmp_path), step="data", build_source="world", build_chains_for_eval=False))
    rows = read_jsonl(tmp_path / "data" / "pairs.jsonl")
    _, heldout = split_combinations(0)
    held = {c.key for c in heldout}
    assert {r["meta"]["combination"] for r in rows if r["meta"]["split"] == "eval"} == held
    assert all(r["chain"] is None for r in rows if r["meta"]["split"] == "eval")
    assert all(r["chain"] and r["meta"]["combination"] not in held for r in rows if r["meta"]["split"] == "train")


# The training-feedback path: sampling, judging, pairing and training, with everything they import.
FEEDBACK_PATH = ["srpo.stages.sample", "srpo.stages.judge", "srpo.stages.pairs", "srpo.stages.dpo", "srpo.stages.sft",
                 "srpo.pairing", "srpo.training", "srpo.models", "srpo.sharding", "srpo.vllm_backend",
                 "srpo.judges.self_judge", "srpo.judges.rule", "srpo.judges.model_judge", "srpo.judges.pairwise",
                 "srpo.judges.backends", "srpo.judges.verdict", "srpo.judges.base", "srpo.judges.dream"]


def test_feedback_path_does_not_import_the_rule_table():
    """Followed transitively, lazy imports included: no module on the path reaches srpo.world."""
    from import_graph import import_graph, reachable

    graph = import_graph()
    for start in FEEDBACK_PATH:
        assert start in graph, f"{start} no longer exists: update FEEDBACK_PATH"
        leaks = sorted(m for m in reachable(graph, start) | {start} if m.startswith("srpo.world"))
        assert leaks == [], (start, leaks)


def test_the_leak_check_follows_imports_through_other_modules():
    from import_graph import reachable

    graph = {"srpo.stages.judge": {"srpo.judges.x"}, "srpo.judges.x": {"srpo.util"},
             "srpo.util": {"srpo.world.scenes"}}
    assert "srpo.world.scenes" in reachable(graph, "srpo.stages.judge")


@pytest.mark.slow
def test_self_judged_iteration_runs_with_the_rule_table_disabled(tiny_model, tmp_path, monkeypatch):
    """Build (the teacher may know the world), then poison the rule table and run sample -> self-judge -> pairs."""
    import srpo.world.scenes as scenes
    from srpo.configs import BuildArgs, JudgeArgs, PairArgs, SampleArgs
    from srpo.stages import build, judge, pairs, sample
    from srpo.stages.base import BaseArgs
    from srpo.stages.base import run as register_base

    build.run(BuildArgs(run_dir=str(tmp_path), step="data", build_source="world", build_chains_for_eval=False))
    register_base(BaseArgs(run_dir=str(tmp_path), step="base", model_dir=tiny_model))

    def forbidden(*a, **k):
        raise AssertionError("the training feedback path read the world's rule table")

    import sys

    # Poison the table where it is defined AND wherever a module bound it with `from ... import`.
    for name in ("combination_risk", "reference_answer", "split_combinations"):
        original = getattr(scenes, name)
        for module in list(sys.modules.values()):
            if getattr(module, name, None) is original:
                monkeypatch.setattr(module, name, forbidden)
    data, policy = str(tmp_path / "data"), str(tmp_path / "base" / "model")
    sample.run(SampleArgs(run_dir=str(tmp_path), step="it/samples", policy_dir=policy, data_dir=data, sample_k=2,
                          sample_max_new_tokens=16, sample_batch_size=64))
    m = judge.run(JudgeArgs(run_dir=str(tmp_path), step="it/judgments", samples_dir=str(tmp_path / "it/samples"),
                            data_dir=data, judge_backend="self", policy_dir=policy, judge_max_new_tokens=16,
                            judge_batch_size=64))
    # A random model cannot write a chain: every self-assessment is a counted failure, never a score.
    assert m["stats"]["judge_failure_rate"] == 1.0
    p = pairs.run(PairArgs(run_dir=str(tmp_path), step="it/pairs", judgments_dir=str(tmp_path / "it/judgments"),
                           samples_dir=str(tmp_path / "it/samples"), data_dir=data))
    assert p["stats"]["pairs"] == 0


@pytest.mark.parametrize("seed", range(8))
def test_large_world_holds_out_enough_for_dev_and_test_and_keeps_every_cell_trained(seed):
    """The large world's promise: 16 unsafe and 32 benign held-out combinations per dev/test side, each a new
    composition (its hazard x intent cell trained through two other objects), and a quarter of training still free
    for RL prompts."""
    from srpo.world.scenes import split_rl_combinations, world_spec

    spec = world_spec("large")
    train, heldout = split_combinations(seed, world="large")
    assert (train, heldout) == split_combinations(seed, world="large")
    assert len(train) + len(heldout) == len(all_combinations("large")) == len(spec.objects) * len(spec.intents)
    labels = [combination_risk(c.obj, c.intent)[0] for c in heldout]
    assert (labels.count("unsafe"), labels.count("benign")) == (32, 64)
    for c in heldout:
        assert sum((t.obj.hazard, t.intent) == (c.obj.hazard, c.intent) for t in train) >= 2, c.key
    assert {c.obj.name for c in train} == {o.name for o in spec.objects}
    sft, rl = split_rl_combinations(train, heldout, seed, 0.25)
    assert len(rl) == 28 and {c.obj.name for c in sft} == {o.name for o in spec.objects}


def test_large_world_dev_and_test_sides_have_enough_clusters(tmp_path):
    from collections import Counter

    from data_builders.world import world_pairs
    from srpo.stages.build import assign_eval_splits

    pairs = world_pairs(tmp_path, seed=0, world="large")
    assign_eval_splits(pairs, seed=0, dev_fraction=0.5)
    clusters = Counter((p.meta["eval_split"], p.label) for p in {p.meta["combination"]: p for p in pairs
                                                                  if p.meta["split"] == "eval"}.values())
    assert min(clusters["dev", "unsafe"], clusters["test", "unsafe"]) >= 15
    assert min(clusters["dev", "benign"], clusters["test", "benign"]) >= 30


def test_more_eval_scenes_per_held_out_combination(tmp_path):
    """build_world_eval_scenes: more items per dev and test cluster, the same clusters on the same sides, and the
    first scenes of a combination unchanged; refused for any other source."""
    from collections import Counter

    from srpo.configs import BuildArgs
    from srpo.runfolder import read_jsonl
    from srpo.stages import build

    def held(name: str, scenes: int) -> list[dict]:
        build.run(BuildArgs(run_dir=str(tmp_path / name), step="data", build_source="world",
                            build_chains_for_eval=False, build_world_eval_scenes=scenes))
        return [r for r in read_jsonl(tmp_path / name / "data" / "pairs.jsonl") if r["meta"]["split"] == "eval"]

    default, more = held("default", 0), held("more", 8)
    per = Counter(r["meta"]["combination"] for r in more)
    assert set(per.values()) == {8} and set(per) == {r["meta"]["combination"] for r in default}
    side = {r["meta"]["combination"]: r["meta"]["eval_split"] for r in default}
    assert all(side[r["meta"]["combination"]] == r["meta"]["eval_split"] for r in more)
    by_id = {r["id"]: r for r in more}
    for r in default:  # 5 of the 8 unchanged: same id, query and rendered scene
        twin = by_id[r["id"]]
        assert r["query"] == twin["query"]
        assert (tmp_path / "default" / "data" / r["image"]).read_bytes() == \
            (tmp_path / "more" / "data" / twin["image"]).read_bytes()
    with pytest.raises(ValueError, match="build_world_eval_scenes applies to build_source 'world' only"):
        BuildArgs(build_source="tiny", build_world_eval_scenes=3)
    with pytest.raises(ValueError, match=">= 0"):
        BuildArgs(build_source="world", build_world_eval_scenes=-1)


def test_every_object_of_every_world_is_drawn_differently():
    import numpy as np

    from srpo.world.scenes import EXTRA_OBJECTS, render_scene

    drawings = {np.asarray(render_scene(o, seed=0)).tobytes() for o in OBJECTS + EXTRA_OBJECTS}
    assert len(drawings) == len(OBJECTS + EXTRA_OBJECTS)


def test_recipe_refuses_a_world_base_model_of_another_world():
    from srpo.recipe import check_recipe

    demo = ROOT / "recipes" / "tiny" / "demo.yaml"
    assert check_recipe(demo) == []
    assert check_recipe(demo, ["build.build_world_size=large", "run.run_model=tiny:world-base-large"]) == []
    problems = check_recipe(demo, ["build.build_world_size=large"])
    assert len(problems) == 1 and "tiny:world-base-large" in problems[0]
