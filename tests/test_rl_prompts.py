"""The RL split: prompts only (an image and a query, no label, no chain), from the world or a prompt-only JSONL, and
the sample step sampling on them when the data folder has any."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from srpo.configs import BuildArgs, JudgeArgs, SampleArgs
from srpo.runfolder import read_jsonl
from srpo.stages import build
from srpo.world.scenes import OBJECTS, combination_risk, split_combinations, split_rl_combinations

RL_KEYS = {"id", "image", "query", "source", "meta"}


def cell(c) -> tuple[str, str]:
    return c.obj.hazard, c.intent


# ------------------------------------------------------------------------------------------------- the world, 4 ways


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_world_splits_four_ways_disjoint_seeded_stratified_with_every_cell_in_sft(seed):
    train, heldout = split_combinations(seed)
    sft, rl = split_rl_combinations(train, heldout, seed, 0.25)
    assert (sft, rl) == split_rl_combinations(train, heldout, seed, 0.25)
    keys = [c.key for c in sft + rl + heldout]
    assert len(keys) == len(set(keys)) == 90
    for label in ("unsafe", "benign"):  # stratified: a quarter of each label's training combinations
        n = sum(combination_risk(c.obj, c.intent)[0] == label for c in train)
        assert sum(combination_risk(c.obj, c.intent)[0] == label for c in rl) == round(n * 0.25)
    sft_cells = Counter(cell(c) for c in sft)
    assert set(sft_cells) == {cell(c) for c in train}  # every training cell is still taught with chains
    assert all(sft_cells[cell(c)] >= 2 for c in heldout)  # the held-out promise holds under the smaller SFT set
    assert {c.obj.name for c in sft} == {o.name for o in OBJECTS}
    assert split_rl_combinations(train, heldout, seed, 0.0) == (train, [])  # the default: today's split


def test_another_seed_draws_other_rl_combinations_and_too_large_a_fraction_is_refused():
    train, heldout = split_combinations(0)
    assert split_rl_combinations(train, heldout, 0, 0.25)[1] != split_rl_combinations(train, heldout, 1, 0.25)[1]
    with pytest.raises(ValueError, match="lower the RL fraction"):
        split_rl_combinations(train, heldout, 0, 0.6)
    with pytest.raises(ValueError, match="build_world_rl_fraction applies to build_source 'world'"):
        BuildArgs(build_world_rl_fraction=0.25)
    with pytest.raises(ValueError, match="< 1"):
        BuildArgs(build_source="world", build_world_rl_fraction=1.0)


def test_pretraining_sees_rl_combinations_only_as_risk_blind_helpful_answers():
    """RL combinations are training combinations to the base model: it sees their images and queries answered
    helpfully, exactly as every other, so pretraining teaches no combination's risk (held-out ones it never sees)."""
    from srpo.world.pretrain import CAPTION_QUERY, pretrain_examples
    from srpo.world.scenes import INTENTS, SAFE_ANSWERS

    train, heldout = split_combinations(0)
    _, rl = split_rl_combinations(train, heldout, 0, 0.25)
    query_intent = {q: i for i, (q, _, _) in INTENTS.items()}
    seen = set()
    for obj, _, query, answer in pretrain_examples(0):
        if query == CAPTION_QUERY:
            continue
        intent = query_intent[query]
        assert answer == f"I see a {obj.name}. {INTENTS[intent][1].format(obj=obj.name)}"  # the same for any label
        assert not any(answer.endswith(a.format(obj=obj.name, hazard=obj.hazard)) for a in SAFE_ANSWERS.values())
        seen.add(f"{obj.name}-{intent}")
    assert {c.key for c in rl} <= seen and not {c.key for c in heldout} & seen


def test_world_build_writes_rl_prompts_with_no_label_chain_or_name_and_keeps_them_out_of_sft(tmp_path):
    from srpo.runfolder import data_prompts
    from srpo.stages.sample import choose_prompts

    m = build.run(BuildArgs(run_dir=str(tmp_path), step="data", build_source="world", build_world_rl_fraction=0.25,
                            build_world_captions=1, build_world_counterfactuals=1))
    data = tmp_path / "data"
    train, heldout = split_combinations(0)
    sft, rl = split_rl_combinations(train, heldout, 0, 0.25)
    pairs = read_jsonl(data / "pairs.jsonl")
    assert {r["meta"]["combination"] for r in pairs if r["meta"]["split"] == "train"} == {c.key for c in sft}
    assert {r["meta"]["combination"] for r in pairs if r["meta"]["split"] == "eval"} == {c.key for c in heldout}
    assert {r["meta"]["eval_split"] for r in pairs if r["meta"]["split"] == "eval"} == {"dev", "test"}

    prompts = read_jsonl(data / "rl_prompts.jsonl")
    assert len(prompts) == 6 * len(rl) and [p["id"] for p in prompts] == sorted(p["id"] for p in prompts)
    assert Counter(p["query"] for p in prompts) == Counter(c.query for c in rl for _ in range(6))
    names = {o.name for o in OBJECTS}
    for p in prompts:  # nothing but the image says what is in it: no label, category, chain, object or hazard
        assert set(p) == RL_KEYS and p["meta"] == {"split": "rl"} and p["source"] == "world"
        assert not any(n in p["id"] or n in p["image"] for n in names)
        assert (data / p["image"]).is_file() and p["image"].startswith("rl_images/")
    ids = {p["id"] for p in prompts}
    others = "".join((data / f).read_text() for f in ("pairs.jsonl", "sft_mix.jsonl", "quarantine.jsonl",
                                                       "failed.jsonl", "manifest.json"))
    assert not any(i in others for i in ids)  # the RL rows are nowhere else in the data folder
    assert not {r["image"] for r in pairs} & {p["image"] for p in prompts}

    # What the feedback path reads of an RL prompt: an image and a query, nothing to take a label from.
    fed = data_prompts(data)
    assert all(set(fed[i]) == RL_KEYS for i in ids)
    assert choose_prompts(data, "auto")[:2] == ("rl", prompts)
    s = m["stats"]
    assert s["by_split"]["rl"] == len(prompts) and s["rl_prompts"] == {"from_world": len(prompts), "from_file": 0,
                                                                        "prompts": len(prompts)}
    assert {"rl_prompts.jsonl", "rl_images"} <= set(m["outputs"])


def test_more_rl_scenes_add_prompts_keep_the_first_ones_and_do_not_retrain_sft_or_reevaluate(tmp_path):
    """build_world_rl_scenes: more scenes of the same RL combinations. The first scenes are the same, the SFT and eval
    data are byte for byte the same, and so are the fingerprints of the steps that read them (SFT, evaluation); the
    sampling step, which reads the RL prompts, is fingerprinted anew."""
    from srpo.configs import EvalArgs
    from srpo.stages import evaluate, sample, sft
    from srpo.steps import StepRun
    from srpo.train_configs import SFTStageConfig

    def built(name, **kw):
        run = tmp_path / name
        build.run(BuildArgs(run_dir=str(run), step="data", build_source="world", build_world_rl_fraction=0.25, **kw))
        return run / "data"

    four, nine = built("four"), built("nine", build_world_rl_scenes=9)
    train, heldout = split_combinations(0)
    _, rl = split_rl_combinations(train, heldout, 0, 0.25)
    few, many = read_jsonl(four / "rl_prompts.jsonl"), read_jsonl(nine / "rl_prompts.jsonl")
    assert len(few) == 6 * len(rl) and len(many) == 9 * len(rl)
    by_id = {p["id"]: p for p in many}
    for p in few:  # the world's own six scenes are among the nine, image for image
        assert by_id[p["id"]] == p and (four / p["image"]).read_bytes() == (nine / p["image"]).read_bytes()
    for name in ("pairs.jsonl", "sft_mix.jsonl"):
        assert (four / name).read_bytes() == (nine / name).read_bytes()

    def fingerprint(module, args):
        return StepRun("x", args, module.inputs(args), tmp_path / "x", command="x").fingerprint

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for module, make in ((sft, lambda d: SFTStageConfig(output_dir=str(tmp_path / "out"), data_dir=str(d),
                                                        model_dir=str(model))),
                         (evaluate, lambda d: EvalArgs(data_dir=str(d), policy_dir=str(model)))):
        assert fingerprint(module, make(four)) == fingerprint(module, make(nine)), module.__name__
    samples = [SampleArgs(data_dir=str(d), policy_dir=str(model)) for d in (four, nine)]
    assert fingerprint(sample, samples[0]) != fingerprint(sample, samples[1])


def test_an_input_without_the_outputs_a_step_reads_is_refused(tmp_path):
    from srpo.steps import StepInputError, input_digests, only_outputs

    (tmp_path / "manifest.json").write_text(json.dumps({"outputs": {"pairs.jsonl": {"sha256": "a", "rows": 1}}}))
    assert input_digests({"data": only_outputs(str(tmp_path), "pairs.jsonl")})["data"]["outputs"] == ["pairs.jsonl"]
    with pytest.raises(StepInputError, match=r"no output \['images'\]"):
        input_digests({"data": only_outputs(str(tmp_path), "pairs.jsonl", "images")})
    with pytest.raises(ValueError, match="build_world_rl_fraction"):
        BuildArgs(build_source="world", build_world_rl_scenes=8)


def test_defaults_build_what_they_built_before(tmp_path):
    from srpo.stages.sample import choose_prompts

    m = build.run(BuildArgs(run_dir=str(tmp_path), step="data", build_source="world"))
    data = tmp_path / "data"
    train, heldout = split_combinations(0)
    pairs = read_jsonl(data / "pairs.jsonl")
    assert {r["meta"]["combination"] for r in pairs if r["meta"]["split"] == "train"} == {c.key for c in train}
    assert len(pairs) == 6 * len(train) + 5 * len(heldout)
    assert set(m["outputs"]) == {"pairs.jsonl", "sft_mix.jsonl", "quarantine.jsonl", "failed.jsonl", "images"}
    assert not (data / "rl_prompts.jsonl").exists() and "rl" not in m["stats"]["by_split"]
    # Defaults are left out of the config, so the data step's fingerprint (and every step after it) is unchanged.
    assert not {"build_rl_source", "build_world_rl_fraction"} & set(m["config"])
    which, prompts, available = choose_prompts(data, "auto")
    assert which == "train" and len(prompts) == 6 * len(train) and available == {"rl": 0, "train": len(prompts)}
    with pytest.raises(ValueError, match="no RL prompts"):
        choose_prompts(data, "rl")


# --------------------------------------------------------------------------------------------- a prompt-only JSONL


def prompt_file(root: Path, rows: list, images: tuple[str, ...] = ()) -> Path:
    (root / "img").mkdir(parents=True)
    for i, name in enumerate(images):
        Image.new("RGB", (8, 8), color=(40 * i % 256, 90, 200)).save(root / name)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (root / "rl.jsonl").write_text("".join(line + "\n" for line in lines))
    return root / "rl.jsonl"


def test_prompt_only_jsonl_keeps_id_image_query_and_quarantines_bad_rows_by_field(tmp_path):
    from data_builders.sources.rl_prompts import convert_prompts

    (tmp_path / "secret.png").write_bytes(b"outside")
    path = prompt_file(tmp_path / "ds", [
        {"id": "a", "image": "img/a.png", "query": "What can I do with this?", "label": "unsafe"},  # 1: label dropped
        {"image": "img/b.png", "query": "Is this safe to touch?"},  # 2: no id -> a content id
        {"id": 7, "image": "img/a.png", "query": "And this one?", "category": "violence"},  # 3
        "{not json",  # 4
        {"id": "noq", "image": "img/a.png"},  # 5
        {"id": "esc", "image": "../secret.png", "query": "q"},  # 6
        {"id": "abs", "image": str(tmp_path / "secret.png"), "query": "q"},  # 7
        {"id": "gone", "image": "img/missing.png", "query": "q"},  # 8
        {"id": "a", "image": "img/b.png", "query": "again"},  # 9
        {"image": "img/b.png", "query": "Is this safe to touch?"},  # 10: the same as line 2
        {"id": "tiny-knife-play", "image": "img/a.png", "query": "q"},  # 11: a pair's id
    ], images=("img/a.png", "img/b.png"))
    result = convert_prompts(path, taken_ids=frozenset({"tiny-knife-play"}))
    assert [p.id for p in result.prompts][::2] == ["a", "7"] and result.prompts[1].id.startswith("rl-")
    assert all(set(p.to_dict()) == RL_KEYS for p in result.prompts)
    assert result.prompts[0].meta == {"split": "rl", "source_file": "rl.jsonl", "source_line": 1}
    assert result.ignored_fields == {"category": 1, "label": 1}
    got = {(q.row, q.field, q.reason_code) for q in result.quarantined}
    assert got == {(4, None, "bad_json"), (5, "query", "missing_field"), (6, "image", "image_path_escape"),
                   (7, "image", "image_absolute_path"), (8, "image", "image_missing"), (9, "id", "duplicate_id"),
                   (10, "id", "duplicate_id"), (11, "id", "duplicate_id")}
    assert all(q.message.startswith(f"rl.jsonl, line {q.row}") for q in result.quarantined)
    assert result.rows_seen == len(result.prompts) + len(result.quarantined) == 11

    from data_builders.sources.validate import SourceError

    with pytest.raises(SourceError, match="line 4"):
        convert_prompts(path, strict=True)
    with pytest.raises(SourceError, match="not found"):
        convert_prompts(tmp_path / "nope.jsonl")


def test_a_symlink_out_of_the_prompt_folder_is_refused(tmp_path):
    from data_builders.sources.rl_prompts import convert_prompts

    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    path = prompt_file(tmp_path / "ds", [{"id": "link", "image": "img/link.png", "query": "q"}])
    (tmp_path / "ds" / "img" / "link.png").symlink_to(tmp_path / "outside.png")
    result = convert_prompts(path)
    assert not result.prompts and result.quarantined[0].reason_code == "image_symlink_escape"


def test_build_with_an_rl_source_writes_prompts_beside_the_pairs(tmp_path):
    path = prompt_file(tmp_path / "ds", [
        {"id": "p1", "image": "img/a.png", "query": "What is this for?", "label": "benign"},
        {"id": "p2", "image": "img/b.png", "query": "Can I use it at home?"},
        {"id": "bad", "image": "../x.png", "query": "q"},
    ], images=("img/a.png", "img/b.png"))
    m = build.run(BuildArgs(run_dir=str(tmp_path / "run"), step="data", build_rl_source=str(path)))
    data = tmp_path / "run" / "data"
    prompts = read_jsonl(data / "rl_prompts.jsonl")
    assert [p["id"] for p in prompts] == ["p1", "p2"] and all(set(p) == RL_KEYS for p in prompts)
    assert all((data / p["image"]).read_bytes() == (tmp_path / "ds" / p["image"][len("rl_images/"):]).read_bytes()
               for p in prompts)
    quarantine = read_jsonl(data / "quarantine.jsonl")
    assert [(q["file"], q["row"], q["field"], q["reason_code"]) for q in quarantine] == [
        ("rl.jsonl", 3, "image", "image_path_escape")]
    s = m["stats"]
    assert s["pairs"] == 90 and s["by_split"]["rl"] == 2 and s["quarantined"] == 0  # the tiny pairs are untouched
    assert s["rl_prompts"]["ignored_fields"] == {"label": 1} and s["rl_prompts"]["quarantined"] == 1

    everything_bad = prompt_file(tmp_path / "ds2", [{"id": "bad", "image": "../x.png", "query": "q"}])
    with pytest.raises(build.BuildError, match="has none"):
        build.run(BuildArgs(run_dir=str(tmp_path / "run2"), step="data", build_rl_source=str(everything_bad)))


# ------------------------------------------------------------------------------------------------ sampling on them


def test_sample_step_samples_the_rl_prompts_and_the_self_judge_grades_them(tmp_path, tiny_model):
    from srpo.stages import judge, sample

    path = prompt_file(tmp_path / "ds", [{"id": f"p{i}", "image": f"img/{i}.png", "query": f"What is item {i}?"}
                                         for i in range(3)], images=tuple(f"img/{i}.png" for i in range(3)))
    run = tmp_path / "run"
    build.run(BuildArgs(run_dir=str(run), step="data", build_rl_source=str(path), build_model_dir=""))
    data = str(run / "data")
    m = sample.run(SampleArgs(run_dir=str(run), step="it/samples", policy_dir=tiny_model, data_dir=data, sample_k=2,
                              sample_max_new_tokens=4))
    assert m["stats"]["prompt_set"] == "rl" and m["stats"]["prompts"] == 3
    assert m["stats"]["prompts_available"] == {"rl": 3, "train": 67}
    samples = read_jsonl(run / "it/samples/samples.jsonl")
    assert Counter(s["prompt_id"] for s in samples) == {"p0": 2, "p1": 2, "p2": 2}

    common = dict(run_dir=str(run), samples_dir=str(run / "it/samples"), data_dir=data, policy_dir=tiny_model,
                  judge_max_new_tokens=4)
    j = judge.run(JudgeArgs(step="it/judgments", judge_backend="self", **common))
    # A random model writes no chain, so its self-assessments are counted failures; no label was needed to try.
    assert j["stats"]["judgments"] == 6 and j["stats"]["unlabelled_prompts"] == 3
    # With the image-only pass: the same judgments, each self-assessment starting from the policy's own observation.
    o = judge.run(JudgeArgs(step="it/observe", judge_backend="self", judge_self_observe="image", **common))
    assert o["stats"]["judgments"] == 6 and o["stats"]["judge"] == {
        "backend": "self", "observe": "image", "observe_query": "What is in this picture?"}
    assert "visual_agreement" in o["stats"]
    with pytest.raises(ValueError, match="oracle feedback"):
        judge.run(JudgeArgs(step="it/rule", judge_backend="rule", **common))


def test_pairs_on_rl_prompts_carry_no_label(tmp_path):
    from srpo.configs import PairArgs
    from srpo.runfolder import JUDGMENTS, PAIRS, RL_PROMPTS, SAMPLES, read_jsonl, write_jsonl, write_manifest
    from srpo.stages import pairs as pairs_step

    def folder(name, files):
        d = tmp_path / name
        d.mkdir()
        for fname, rows in files.items():
            write_jsonl(d / fname, rows)
        write_manifest(d, step=name, fingerprint="hand", config={}, inputs={}, outputs=list(files), started=0.0,
                       stats={})
        return str(d)

    data = folder("data", {PAIRS: [], RL_PROMPTS: [{"id": "rl-1", "image": "rl_images/rl-1.png", "query": "q?",
                                                    "source": "user", "meta": {"split": "rl"}}]})
    samples = folder("samples", {SAMPLES: [{"prompt_id": "rl-1", "sample_idx": i, "response": r}
                                           for i, r in enumerate(("Answer: sure.", "Answer: I can't help."))]})
    judgments = folder("judgments", {JUDGMENTS: [
        {"prompt_id": "rl-1", "sample_idx": 0, "failed": False, "safety": 1.0, "effectiveness": 1.0},
        {"prompt_id": "rl-1", "sample_idx": 1, "failed": False, "safety": 1.0, "effectiveness": 0.0}]})
    args = PairArgs(run_dir=str(tmp_path), step="pairs", data_dir=data, samples_dir=samples, judgments_dir=judgments,
                    pairs_balance=False)
    manifest = pairs_step.run(args)
    rows = read_jsonl(tmp_path / "pairs" / PAIRS)
    assert len(rows) == 1 and rows[0]["label"] is None and rows[0]["image"] == "rl_images/rl-1.png"
    assert manifest["stats"]["by_label"] == {"unlabelled": 1}
