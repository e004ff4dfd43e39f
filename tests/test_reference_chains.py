"""SRPO's reference-based learning in the DPO step (dpo_reference_weight = λ): λ · the mean token NLL of teacher chains
drawn from the SFT split, added to every training step's loss. Tiny LLaVA, CPU, a few steps per run."""

import json
import math
from pathlib import Path

import pytest

from srpo.runfolder import read_jsonl, write_jsonl, write_manifest

STEPS = 4
LAMBDA = 1.0


def _params(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _history(step_dir: Path) -> list[dict]:
    return json.loads((step_dir / "log_history.json").read_text())


def _losses(step_dir: Path) -> list[float]:
    return [h["loss"] for h in _history(step_dir) if "loss" in h]


@pytest.fixture(scope="module")
def pairs_dir(tiny_data, tmp_path_factory):
    """Pairs by hand on the data's train prompts: a bare refusal over a bare compliance. Neither is a chain, so DPO
    alone does not teach the teacher chains, and what λ adds shows."""
    folder = tmp_path_factory.mktemp("ref-run") / "pairs"
    folder.mkdir()
    rows = [{"prompt_id": p["id"], "query": p["query"], "image": p["image"], "chosen": "I can't help with that.",
             "rejected": "Sure, here is how to do it step by step."}
            for p in read_jsonl(tiny_data / "pairs.jsonl") if p["meta"].get("split", "train") == "train"][:16]
    write_jsonl(folder / "pairs.jsonl", rows)
    write_manifest(folder, step="pairs", fingerprint="hand", config={}, inputs={}, outputs=["pairs.jsonl"],
                   started=0.0)
    return folder


def _config(root: Path, name: str, tiny_model, tiny_data, pairs_dir, **kw):
    from srpo.train_configs import DPOStageConfig

    values = dict(run_dir=str(root), step=name, policy_dir=tiny_model, ref_dir=tiny_model, pairs_dir=str(pairs_dir),
                  data_dir=str(tiny_data), output_dir=str(root / name / "trainer"), max_steps=STEPS,
                  per_device_train_batch_size=2, learning_rate=2e-3, lr_scheduler_type="constant", logging_steps=1,
                  use_cpu=True, disable_tqdm=True, save_strategy="no", seed=0, beta=0.1)
    values.update(kw)
    return DPOStageConfig(**values)


def _dpo(root: Path, name: str, tiny_model, tiny_data, pairs_dir, **kw) -> Path:
    from srpo.stages import dpo

    dpo.run(_config(root, name, tiny_model, tiny_data, pairs_dir, **kw))
    return root / name


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("ref-dpo")


@pytest.fixture(scope="module")
def plain_run(root, tiny_model, tiny_data, pairs_dir):
    return _dpo(root, "plain", tiny_model, tiny_data, pairs_dir)


@pytest.fixture(scope="module")
def draws():
    """Every draw the trainer asks for, as (step, count, indices), in order (srpo.training.reference_draw wrapped)."""
    return []


@pytest.fixture(scope="module")
def reference_run(root, tiny_model, tiny_data, pairs_dir, draws):
    """λ = 1, checkpoints every 2 steps (the resume test's uninterrupted run)."""
    from srpo import training

    original = training.reference_draw
    mp = pytest.MonkeyPatch()
    mp.setattr(training, "reference_draw", _recording(original, draws))
    try:
        return _dpo(root, "reference", tiny_model, tiny_data, pairs_dir, dpo_reference_weight=LAMBDA,
                    save_strategy="steps", save_steps=2)
    finally:
        mp.undo()


def _recording(draw, log):
    def recorded(n_chains, *, seed, step, count):
        out = draw(n_chains, seed=seed, step=step, count=count)
        log.append((step, count, out))
        return out

    return recorded


def _chains_nll(model_dir, tiny_data) -> float:
    """Mean token NLL of every reference chain under a saved policy, from the model's own loss (not TRL's fused head),
    masked by the same collation."""
    import torch

    from srpo.models import load_policy
    from srpo.stages.dpo import reference_chain_rows
    from srpo.training import ReferenceChains

    model, processor = load_policy(str(model_dir))
    chains = ReferenceChains(reference_chain_rows(tiny_data), tiny_data, weight=1.0, per_batch=1)
    total, tokens = 0.0, 0
    with torch.no_grad():
        for i in range(len(chains)):
            batch = chains.collate([i], processor, None)
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += float(model(**batch).loss) * n
            tokens += n
    return total / tokens


def test_the_draw_is_seeded_per_step_and_shared_out_like_the_pairs():
    from srpo.training import reference_draw, reference_share

    a = reference_draw(10, seed=0, step=3, count=8)
    assert a == reference_draw(10, seed=0, step=3, count=8)  # a pure function of (seed, step)
    assert a != reference_draw(10, seed=0, step=4, count=8) and a != reference_draw(10, seed=1, step=3, count=8)
    assert len(set(a)) == 8  # no chain twice in a step while there are enough
    assert sorted(reference_draw(3, seed=0, step=0, count=7)[:6]) == [0, 0, 1, 1, 2, 2]  # whole passes, then more
    # 2 ranks x 2 chains x 2 micro-steps take, between them, what 1 process x 4 chains x 2 micro-steps takes, in the
    # order the pairs are laid out (micro-step by micro-step, rank by rank).
    one = [reference_share(a, per_batch=4, world_size=1, rank=0, micro_step=m) for m in range(2)]
    two = [[reference_share(a, per_batch=2, world_size=2, rank=r, micro_step=m) for r in range(2)] for m in range(2)]
    assert [x + y for x, y in two] == one and sum(one, []) == a


def test_the_reference_chains_are_the_chains_sft_trained_on(tiny_data, tmp_path):
    import shutil

    from srpo.stages.dpo import reference_chain_rows
    from srpo.stages.sft import sft_rows

    rows = reference_chain_rows(tiny_data)
    sft = sft_rows(tiny_data)
    assert len(rows) == len(sft) > 0
    assert [r["completion"] for r in rows] == [s["completion"][0]["content"][0]["text"] for s in sft]
    assert all(r["image"] for r in rows) and all(s["images"] for s in sft)
    # The SFT mix: its chains are reference chains, its caption replay is not.
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    chain = rows[0]["completion"]
    write_jsonl(data / "sft_mix.jsonl", [
        {"id": "c", "query": "What is in this picture?", "image": rows[0]["image"], "completion": "A knife.",
         "kind": "caption"},
        {"id": "cf", "query": "Can I juggle it? The picture shows a blicket; it is sharp.", "image": None,
         "completion": chain, "kind": "counterfactual"}])
    mixed = reference_chain_rows(data)
    assert len(mixed) == len(rows) + 1 and mixed[-1] == {"query": "Can I juggle it? The picture shows a blicket; it "
                                                                  "is sharp.", "image": None, "completion": chain}
    assert len(sft_rows(data)) == len(sft) + 2


def test_prompt_tokens_are_masked_exactly_as_sft_masks_them(tiny_model, tiny_data, tmp_path):
    import torch
    from datasets import Dataset
    from trl import SFTTrainer

    from srpo.models import load_policy
    from srpo.stages.dpo import reference_chain_rows
    from srpo.stages.sft import sft_rows
    from srpo.train_configs import SFTStageConfig
    from srpo.training import ReferenceChains

    model, processor = load_policy(tiny_model)
    args = SFTStageConfig(run_dir=str(tmp_path), step="sft", data_dir=str(tiny_data), model_dir=tiny_model,
                          output_dir=str(tmp_path / "t"), use_cpu=True, report_to="none")
    dataset = Dataset.from_list(sft_rows(tiny_data))
    sft = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor)
    rows = reference_chain_rows(tiny_data)
    chains = ReferenceChains(rows, tiny_data, weight=1.0, per_batch=3)
    ours = chains.collate([0, 1, 2], processor, None)
    theirs = sft.data_collator([dataset[i] for i in range(3)])
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key
    labels = ours["labels"]
    assert (labels == -100).any() and (labels != -100).any()
    for i, row in enumerate(rows[:3]):
        kept = processor.tokenizer.decode(labels[i][labels[i] != -100])
        assert " ".join(row["completion"].split()) in " ".join(kept.split())  # the chain is learned...
        assert row["query"] not in kept  # ...its prompt is not
        image_token = model.config.image_token_id
        assert (ours["input_ids"][i] == image_token).any() and not (labels[i] == image_token).any()


def test_the_term_is_the_mean_token_nll_of_the_drawn_chains(tiny_model, tiny_data):
    """What the trainer adds (TRL's fused LM head, summed and counted) is the model's own mean cross-entropy."""
    import torch
    from trl.trainer.utils import add_fused_lm_head

    from srpo.models import load_policy
    from srpo.stages.dpo import reference_chain_rows
    from srpo.training import ReferenceChains, token_nll

    model, processor = load_policy(tiny_model)
    batch = ReferenceChains(reference_chain_rows(tiny_data), tiny_data, weight=1.0, per_batch=4).collate(
        [0, 1, 2, 3], processor, None)
    with torch.no_grad():
        expected = float(model(**batch).loss)
        add_fused_lm_head(model)
        nll_sum, tokens = token_nll(model, batch)
    assert int(tokens) == int((batch["labels"][:, 1:] != -100).sum())
    assert float(nll_sum / tokens) == pytest.approx(expected, rel=1e-5)


def test_zero_weight_is_todays_dpo(root, plain_run, tiny_model, tiny_data, pairs_dir):
    from srpo.steps import config_diff

    off = _dpo(root, "off", tiny_model, tiny_data, pairs_dir, dpo_reference_weight=0.0, dpo_reference_per_batch=3)
    assert _losses(off) == _losses(plain_run) and len(_losses(off)) == STEPS
    a, b = _params(plain_run / "model"), _params(off / "model")
    assert sorted(a) == sorted(b) and all((a[k] == b[k]).all() for k in a)
    assert not any("reference_nll" in h for h in _history(off))
    assert _losses(off)[0] == pytest.approx(math.log(2), abs=1e-6)  # step 1, policy = reference: DPO alone
    # A recipe that leaves λ at 0 keeps its config, hence its fingerprint (per_batch means nothing without λ; the
    # fingerprint still records it, as it records every chosen field).
    plain = config_diff(_config(root, "x", tiny_model, tiny_data, pairs_dir))
    assert config_diff(_config(root, "x", tiny_model, tiny_data, pairs_dir, dpo_reference_weight=0.0)) == plain


def test_the_reference_nll_is_logged_every_step(reference_run):
    history = _history(reference_run)
    logged = [h["reference_nll"] for h in history if "reference_nll" in h]
    assert len(logged) == STEPS and all(math.isfinite(x) and x > 0 for x in logged)
    stats = json.loads((reference_run / "manifest.json").read_text())["stats"]
    assert stats["reference_chains"] > 0 and stats["final_reference_nll"] == logged[-1]
    # Step 1, policy = reference: the DPO term is -log σ(0) = ln 2, and the loss adds λ · NLL_ref to it.
    assert stats["first_loss"] == pytest.approx(math.log(2) + LAMBDA * logged[0], abs=1e-5)


def test_reference_weight_lowers_the_teacher_chains_nll(plain_run, reference_run, tiny_model, tiny_data):
    start = _chains_nll(tiny_model, tiny_data)
    plain, reference = _chains_nll(plain_run / "model", tiny_data), _chains_nll(reference_run / "model", tiny_data)
    print(f"\nmean token NLL of the teacher chains: start {start:.4f}, after {STEPS} DPO steps {plain:.4f} (λ = 0), "
          f"{reference:.4f} (λ = {LAMBDA})", flush=True)
    # Measured over training seeds 0-3: λ = 0 moves the chains' NLL by at most 0.03 from the start, λ = 1 lowers it
    # 0.57-0.61 below λ = 0's; without the term (or with it masked to nothing) the gap is that 0.03.
    assert plain - reference > 0.25


def test_a_resumed_run_draws_the_chains_of_the_uninterrupted_one(root, reference_run, draws, tiny_model, tiny_data,
                                                                 pairs_dir, monkeypatch):
    """Stopped by an exception right after checkpoint-2 and run again: steps 3-4 draw the same chains, log the same
    losses and reference NLL, and end at the same weights as the uninterrupted run."""
    from transformers import TrainerCallback

    from srpo import chaos, training

    uninterrupted = list(draws)
    assert [d[0] for d in uninterrupted] == list(range(STEPS))  # one draw per micro-step, keyed by the step

    class Stopped(Exception):
        pass

    class StopAfterCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise Stopped(state.global_step)

    resumed: list = []
    monkeypatch.setattr(training, "reference_draw", _recording(training.reference_draw, resumed))
    monkeypatch.setattr(chaos, "trainer_callback", lambda step: StopAfterCheckpoint())
    kw = dict(dpo_reference_weight=LAMBDA, save_strategy="steps", save_steps=2)
    with pytest.raises(Stopped):
        _dpo(root, "resumed", tiny_model, tiny_data, pairs_dir, **kw)
    assert sorted(p.name for p in (root / "resumed" / "trainer").glob("checkpoint-*")) == ["checkpoint-2"]
    monkeypatch.setattr(chaos, "trainer_callback", lambda step: None)
    resumed.clear()
    step_dir = _dpo(root, "resumed", tiny_model, tiny_data, pairs_dir, **kw)
    assert resumed == uninterrupted[2:]
    got, want = _history(step_dir), _history(reference_run)
    for key in ("loss", "reference_nll"):
        a, b = [h[key] for h in got if key in h], [h[key] for h in want if key in h]
        assert len(a) == len(b) == STEPS and max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 1e-6, (key, a, b)
    a, b = _params(reference_run / "model"), _params(step_dir / "model")
    assert max(float((a[k].double() - b[k].double()).abs().max()) for k in a) <= 1e-6


def test_gradient_accumulation_takes_the_steps_draw_micro_step_by_micro_step(root, tiny_model, tiny_data, pairs_dir,
                                                                            monkeypatch):
    from srpo import training

    shares: list = []
    original = training.reference_share

    def recorded(drawn, **kw):
        out = original(drawn, **kw)
        shares.append((kw["micro_step"], drawn, out))
        return out

    monkeypatch.setattr(training, "reference_share", recorded)
    _dpo(root, "accumulated", tiny_model, tiny_data, pairs_dir, dpo_reference_weight=LAMBDA, max_steps=2,
         gradient_accumulation_steps=2, dpo_reference_per_batch=3)
    assert [m for m, _, _ in shares] == [0, 1, 0, 1]
    for first, second in (shares[0:2], shares[2:4]):
        assert first[1] == second[1] and len(first[1]) == 6  # one draw per step: 3 chains x 2 micro-steps
        assert first[2] + second[2] == first[1]
    assert shares[0][1] != shares[2][1]


@pytest.mark.parametrize("values,message", [
    ({"dpo_reference_weight": -0.5}, "dpo_reference_weight must be >= 0"),
    ({"dpo_reference_weight": float("nan")}, "dpo_reference_weight must be >= 0"),
    ({"dpo_reference_per_batch": 0}, "dpo_reference_per_batch must be >= 1"),
])
def test_bad_values_are_refused_with_the_fix(values, message):
    from srpo.train_configs import DPOStageConfig

    with pytest.raises(ValueError, match=message):
        DPOStageConfig(use_cpu=True, **values)


def test_no_chains_in_the_data_is_a_clear_error(tmp_path):
    from srpo.training import ReferenceChains

    with pytest.raises(ValueError, match="set dpo_reference_weight: 0"):
        ReferenceChains([], tmp_path, weight=1.0, per_batch=2)
