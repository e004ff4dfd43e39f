"""Observed samples (sample_observed): DREAM's image-only pass used as a rollout. Per image prompt the policy answers
the plain question about the image alone, greedily, and n more responses are sampled on from "Visual: <that
answer>"; they follow the K others and are judged like them.

The tiny model writes no chains and no sensible captions, so one test stubs the image-only answer; the rest use the
model's own text, generated as the step seeds it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from srpo.configs import OBSERVE_QUERY, JudgeArgs, SampleArgs
from srpo.runfolder import SAMPLES, read_jsonl

K = 2


@pytest.fixture(scope="module")
def rl_data(tmp_path_factory) -> Path:
    """A data folder of 4 RL prompts; p0, p1 and p3 have an image, p2 is text only."""
    from srpo.configs import BuildArgs
    from srpo.stages import build

    root = tmp_path_factory.mktemp("observed-ds")
    (root / "img").mkdir()
    rows = []
    for i in range(4):
        row = {"id": f"p{i}", "query": f"Can my kid play with item {i}?"}
        if i != 2:
            Image.new("RGB", (8, 8), color=(60 * i, 120, 30)).save(root / f"img/{i}.png")
            row["image"] = f"img/{i}.png"
        rows.append(row)
    (root / "rl.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build.run(BuildArgs(run_dir=str(root / "run"), step="data", build_rl_source=str(root / "rl.jsonl"),
                        build_model_dir="", build_require_images=False))
    return root / "run" / "data"


def args_of(tiny_model, data, run_dir, step, **kw) -> SampleArgs:
    return SampleArgs(run_dir=str(run_dir), step=step, policy_dir=tiny_model, data_dir=str(data), sample_k=K,
                      sample_batch_size=2, sample_max_new_tokens=8, seed=3, **kw)


def test_options():
    assert SampleArgs().sample_observed == 0
    assert SampleArgs().sample_observe_query == JudgeArgs().judge_self_observe_query == OBSERVE_QUERY
    with pytest.raises(ValueError, match="sample_observed must be >= 0"):
        SampleArgs(sample_observed=-1)
    with pytest.raises(ValueError, match="use one or the other"):
        SampleArgs(sample_observed=1, sample_mode="branched")


def test_observed_samples_follow_the_k_others_from_the_policys_own_image_only_answer(tiny_model, rl_data, tmp_path):
    import srpo.models as models
    from srpo.judges.self_judge import OBSERVE_MAX_NEW_TOKENS, visual_prefix
    from srpo.stages import sample

    plain = sample.run(args_of(tiny_model, rl_data, tmp_path, "plain"))
    manifest = sample.run(args_of(tiny_model, rl_data, tmp_path, "observed", sample_observed=2))
    before, rows = read_jsonl(tmp_path / "plain" / SAMPLES), read_jsonl(tmp_path / "observed" / SAMPLES)

    # The K others are the samples of a run without observed ones, byte for byte.
    assert [r for r in rows if not r.get("observed")] == before
    observed = [r for r in rows if r.get("observed")]
    assert sorted((r["prompt_id"], r["sample_idx"]) for r in observed) == [
        (p, i) for p in ("p0", "p1", "p3") for i in (K, K + 1)]  # the text-only prompt gets none
    assert manifest["stats"].items() >= {"observed_per_prompt": 2, "observed_samples": 6, "observed_prompts": 3,
                                         "samples": 4 * K + 6}.items()
    assert "observed_samples" not in plain["stats"]

    # The observation is the policy's greedy answer about the image alone; each observed response starts with it.
    prompts = {p["id"]: p for p in sample.choose_prompts(rl_data, "auto")[1]}
    model, processor = models.load_policy(tiny_model)
    model.eval()
    for r in observed:
        image = models.pair_inputs(rl_data, [prompts[r["prompt_id"]]])[0][1]
        greedy = models.generate(model, processor, [(OBSERVE_QUERY, image)], max_new_tokens=OBSERVE_MAX_NEW_TOKENS)
        assert r["observation"] == greedy[0][0]
        assert r["branch_prefix"] == (visual_prefix(r["observation"]) if r["observation"] else "")
        assert r["response"].startswith(r["branch_prefix"])
    # Two continuations of one prefix are drawn as two samples, not one copied.
    assert len({r["response"] for r in observed}) > 3

    again = sample.run(args_of(tiny_model, rl_data, tmp_path / "again", "observed", sample_observed=2))
    assert read_jsonl(tmp_path / "again" / "observed" / SAMPLES) == rows
    assert again["fingerprint"] == manifest["fingerprint"] != plain["fingerprint"]


def test_the_image_only_answer_is_greedy_and_starts_every_observed_sample(tiny_model, rl_data, tmp_path, monkeypatch):
    """Stubbed image-only answer ("A stove."): it is asked greedily, as the self-judge's own pass, and every observed
    continuation is drawn from "Visual: a stove"."""
    import srpo.models as models
    from srpo.stages import sample

    real, calls = models.generate, []

    def generate(model, processor, prompts, *, k=1, prefixes=None, **kw):
        calls.append({"queries": [q for q, _ in prompts], "k": k, "prefixes": prefixes, **kw})
        if prompts and prompts[0][0] == OBSERVE_QUERY:
            return [["A stove."] for _ in prompts]
        return real(model, processor, prompts, k=k, prefixes=prefixes, **kw)

    monkeypatch.setattr(models, "generate", generate)
    sample.run(args_of(tiny_model, rl_data, tmp_path, "observed", sample_observed=1))
    observe_calls = [c for c in calls if c["queries"][0] == OBSERVE_QUERY]
    assert observe_calls and all(not c["do_sample"] for c in observe_calls)  # greedy, as the judge's own pass
    continued = [c for c in calls if c["prefixes"]]
    assert continued and all(set(c["prefixes"]) == {"Visual: a stove"} for c in continued)
    observed = [r for r in read_jsonl(tmp_path / "observed" / SAMPLES) if r.get("observed")]
    assert {r["observation"] for r in observed} == {"A stove."}
    assert all(r["response"].startswith("Visual: a stove") for r in observed)

