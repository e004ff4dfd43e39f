"""The world's SFT rows for the DREAM judge's own tasks (data_builders/world.py `world_mrd_rows`, the teacher's answers
in srpo/world/teacher.py): SFT combinations only, the judge's exact prompts, answers its parsers read, negatives, and
nothing at all when the option is 0."""

from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from data_builders.world import world_mrd_rows, world_sft_mix
from srpo import dream_prompts
from srpo.judges import dream
from srpo.world.scenes import INTENTS, OBJECTS, split_combinations, split_rl_combinations
from srpo.world.teacher import world_observations, world_responses

KINDS = {"dream_mrd_image", "dream_mrd_text", "dream_mrd_joint", "dream_verify", "dream_global", "dream_observation"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two scenes per SFT combination, with a quarter of the training combinations taken as RL prompts."""
    root = tmp_path_factory.mktemp("mrd")
    return root, world_mrd_rows(root / "images", seed=0, scenes=2, rl_fraction=0.25)


def sft_and_not(seed=0, rl_fraction=0.25):
    train, heldout = split_combinations(seed)
    sft, rl = split_rl_combinations(train, heldout, seed, rl_fraction)
    return sft, rl + heldout


def test_rows_come_from_sft_combinations_only(built):
    root, rows = built
    sft, others = sft_and_not()
    assert others and {r["kind"] for r in rows} == KINDS
    with_image = [r for r in rows if r["image"]]
    # Every scene row names its combination in its id, and every SFT combination has its scenes.
    keys = Counter(r["id"].split("-")[2] + "-" + r["id"].split("-")[3] for r in with_image)
    assert set(keys) == {c.key for c in sft}
    assert all((root / r["image"]).is_file() for r in with_image)
    # No row pairs an object with the query of a combination that is not SFT (RL or held out): neither in its prompt
    # nor in its answer (the responses scored name the object, the prompts quote the query).
    forbidden = {(c.obj.name, c.query) for c in others}
    for r in rows:
        text = r["query"] + "\n" + r["completion"]
        queries = {q for q, _, _ in INTENTS.values() if q in text}
        names = {o.name for o in OBJECTS if f" {o.name}" in text}
        if r["image"]:
            names.add(r["id"].split("-")[2])
        assert not {(n, q) for n in names for q in queries} & forbidden, r["id"]


def test_every_answer_parses_with_the_judges_own_parsers(built):
    _, rows = built
    for r in rows:
        kind, answer = r["kind"].removeprefix("dream_"), r["completion"]
        if kind.startswith("mrd_"):
            assert dream.parse_observations(answer, kind.removeprefix("mrd_"))[1] is None, r["id"]
        elif kind == "verify":
            assert dream.parse_yes_no(answer, "HARMFUL") is not None, r["id"]
        elif kind == "global":
            assert dream.parse_score(answer) is not None, r["id"]
        else:
            assert dream.parse_yes_no(answer, "RECOGNISED") is not None, r["id"]
        assert dream.VALIDATORS[kind](answer) is None  # what an endpoint judge would be held to as well


def test_negatives_are_present_for_every_yes_no_task_and_the_scores_span_the_bands(built):
    _, rows = built
    answers = Counter((r["kind"], r["completion"]) for r in rows)
    for kind, label in (("dream_verify", "HARMFUL"), ("dream_observation", "RECOGNISED")):
        assert answers[(kind, f"{label}: yes")] and answers[(kind, f"{label}: no")], kind
    scores = [dream.parse_score(r["completion"]) for r in rows if r["kind"] == "dream_global"]
    assert min(scores) <= 2 and max(scores) >= 9
    for kind in ("dream_mrd_image", "dream_mrd_joint"):
        assert answers[(kind, "none")] and sum(n for (k, a), n in answers.items() if k == kind and a != "none")
    assert {a for (k, a) in answers if k == "dream_mrd_text"} == {"none"}  # every world query is harmless alone
    # Verification refuses a true observation given a category it cannot have, and a benign reading called risky.
    no = [r for r in rows if r["kind"] == "dream_verify" and r["completion"].endswith("no")]
    assert any("Risk category: privacy" in r["query"] or "Risk category: fraud" in r["query"] for r in no)
    assert any("cleaning something" in r["query"] for r in no)


def test_text_only_rows_are_kept_at_most_once_per_scene_count(built):
    _, rows = built
    copies = Counter((r["query"], r["completion"]) for r in rows if r["image"] is None)
    assert max(copies.values()) <= 2 and len([r for r in rows if r["kind"] == "dream_mrd_text"]) == 2 * len(INTENTS)


class MemorisedRows:
    """A perfect student of the rows: answers a DREAM request exactly when a row asked that very text over that very
    image, and fails the test otherwise. The judge's `generation_ask` wraps it, so the rows must be the judge's
    prompts as it sends them to a local model (system line and all)."""

    def __init__(self, root: Path, rows: list[dict]):
        self.answers = {(r["query"], self.pixels(root / r["image"]) if r["image"] else None): r["completion"]
                        for r in rows}

    @staticmethod
    def pixels(path):
        with Image.open(path) as im:
            return im.convert("RGB").tobytes()

    def __call__(self, prompts, *, do_sample, temperature, seed):
        out = []
        for text, image in prompts:
            key = (text, image.tobytes() if image is not None else None)
            assert key in self.answers, f"the judge asked a prompt no row teaches:\n{text[:400]}"
            out.append(self.answers[key])
        return out


def test_a_student_of_the_rows_builds_the_teachers_risk_context_and_ranks_the_training_chain_first(built):
    root, rows = built
    ask = dream.generation_ask(MemorisedRows(root, rows), temperature=0.7, seed=0)
    sft, _ = sft_and_not()
    unsafe = [c for c in sft if world_observations(c.obj, c.intent)["joint"]]
    benign_hazard = [c for c in sft if not world_observations(c.obj, c.intent)["joint"] and c.obj.hazard != "none"]
    harmless = [c for c in sft if c.obj.hazard == "none"]
    for combo in (unsafe[0], benign_hazard[0], harmless[0]):
        for scene in (0, 1):  # an unsafe combination's bad response complies on even scenes, miscategorises on odd
            image = root / "images" / f"mrd-{combo.key}-{scene}.png"
            item = {"id": combo.key, "query": combo.query, "image_path": str(image)}
            (ctx,) = dream.risk_context(ask, [item], m=1)
            expected = [o for name in dream.PASSES for o in world_observations(combo.obj, combo.intent)[name]]
            assert not ctx.failed and ctx.dropped == 0 and ctx.observations == expected, combo.key
            responses = [{"sample_idx": i, "response": text}
                         for i, (_, text, _, _) in enumerate(world_responses(combo.obj, combo.intent, scene))]
            good, bad = dream.score(ask, item, ctx, responses)
            assert not good.failed and not bad.failed and good.preference > bad.preference, combo.key
            if combo in unsafe:
                assert (good.awareness, bad.awareness) == (1.0, 0.0)
            elif expected:  # a benign request with a hazard in the image: both name it, the global score decides
                assert (good.awareness, bad.awareness) == (1.0, 1.0)


def test_the_rows_follow_the_judges_prompts_when_those_change(tmp_path, monkeypatch):
    before = {r["id"]: r["query"] for r in world_mrd_rows(tmp_path / "a", seed=0, scenes=1)}
    monkeypatch.setitem(dream_prompts.MRD_TEMPLATES, "joint", "Joint risks of {query} over {image_note}, as lines.")
    monkeypatch.setattr(dream_prompts, "DREAM_SYSTEM", "Another system line.")
    after = {r["id"]: r["query"] for r in world_mrd_rows(tmp_path / "b", seed=0, scenes=1)}
    assert before.keys() == after.keys() and all(after[i] != before[i] for i in after)
    queries = {c.key: c.query for c in split_combinations(0)[0]}
    joint = [i for i in after if i.endswith("-mrd_joint")]
    assert joint
    for i in joint:  # world-mrd-<object>-<intent>-<scene>-mrd_joint
        key = "-".join(i.split("-")[2:4])
        judge_sends = dream.ask_text(dream.mrd_prompt("joint", {"query": queries[key], "image_path": "x.png"}))
        assert after[i] == judge_sends
        assert judge_sends == f"Another system line.\n\nJoint risks of {queries[key]} over attached, as lines."


def test_zero_adds_nothing_to_the_sft_mix(tmp_path):
    from srpo.configs import BuildArgs

    assert world_mrd_rows(tmp_path / "a", seed=0, scenes=0) == []
    plain = world_sft_mix(tmp_path / "b", seed=0, captions_per_object=1, counterfactuals_per_cell=1)
    zero = world_sft_mix(tmp_path / "c", seed=0, captions_per_object=1, counterfactuals_per_cell=1, mrd_scenes=0,
                         rl_fraction=0.25)
    assert zero == plain and not any(r["kind"].startswith("dream_") for r in plain)
    assert BuildArgs.build_world_mrd == 0  # the default, left out of the step config (so of every fingerprint)
    with pytest.raises(ValueError, match="build_world_mrd must be >= 0"):
        BuildArgs(build_source="world", build_world_mrd=-1)
    with pytest.raises(ValueError, match="applies to build_source 'world' only"):
        BuildArgs(build_source="tiny", build_world_mrd=1)
