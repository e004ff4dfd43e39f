"""Branched sampling (sample_mode: branched), SRPO's step-level paths: one response per prompt cut just before a chain
step, K continuations of that prefix, pairs that differ from that step on, and DPO on them, which is DPO with the
prefix in the prompt.

The tiny model writes no chains, so the first draw of each prompt is a canned response (a chain, a chain out of order,
no chain); the continuations are the tiny model's own, seeded as the step seeds them.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
from PIL import Image

from srpo.chain import STEPS, RiskChain, parse_chain
from srpo.configs import PairArgs, SampleArgs
from srpo.runfolder import JUDGMENTS, PAIRS, SAMPLES, read_jsonl, write_jsonl, write_manifest

K = 3
N_PROMPTS = 6  # batches of 2: [p0 p1] [p2 p3] [p4 p5]


def canned_first_response(i: int) -> str:
    chain = RiskChain(visual=f"item {i} on a kitchen table", text=f"asks what to do with item {i}",
                      combined=f"item {i} near a child", category="dangerous_behavior", severity="high",
                      consequences="cuts", strategy="refuse", answer="I can't recommend that.").render()
    if i == 4:  # the Risk step before Text and Combined: not a chain up to Combined
        lines = chain.splitlines()
        return "\n".join([lines[0], lines[3], lines[1], lines[2], *lines[4:]])
    if i == 5:
        return "I cannot tell what this is."
    return chain


EXPECTED_FALLBACK = {"p4": "not_a_chain_before_step", "p5": "no_step_line"}


@pytest.fixture(scope="module")
def rl_data(tmp_path_factory) -> Path:
    """A data folder of 6 RL prompts, the even ones with an image."""
    from srpo.configs import BuildArgs
    from srpo.stages import build

    root = tmp_path_factory.mktemp("branched-ds")
    (root / "img").mkdir()
    rows = []
    for i in range(N_PROMPTS):
        row = {"id": f"p{i}", "query": f"What is item {i}?"}
        if i % 2 == 0:
            Image.new("RGB", (8, 8), color=(40 * i, 90, 200)).save(root / f"img/{i}.png")
            row["image"] = f"img/{i}.png"
        rows.append(row)
    (root / "rl.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = root / "run"
    build.run(BuildArgs(run_dir=str(run), step="data", build_rl_source=str(root / "rl.jsonl"), build_model_dir="",
                        build_require_images=False))
    return run / "data"


def stub_first_draw(mp) -> list[dict]:
    """Make the first draw of branched sampling (a generate call without prefixes) return the canned responses; the
    continuations still come from the model. Returns the list of calls, as they happen."""
    import srpo.models as models

    real, calls = models.generate, []

    def generate(model, processor, prompts, *, k=1, seed=0, prefixes=None, **kw):
        calls.append({"queries": [q for q, _ in prompts], "k": k, "seed": seed, "prefixes": prefixes})
        if prefixes is None:
            return [[canned_first_response(int(q.split()[-1].rstrip("?")))] * k for q, _ in prompts]
        return real(model, processor, prompts, k=k, seed=seed, prefixes=prefixes, **kw)

    mp.setattr(models, "generate", generate)
    return calls


def sample_args(tiny_model, data, run_dir, step, **kw) -> SampleArgs:
    return SampleArgs(run_dir=str(run_dir), step=step, policy_dir=tiny_model, data_dir=str(data), sample_k=K,
                      sample_batch_size=2, sample_max_new_tokens=10, seed=7, **{"sample_mode": "branched", **kw})


@pytest.fixture(scope="module")
def branched_run(tiny_model, rl_data, tmp_path_factory):
    from srpo.stages import sample

    run_dir = tmp_path_factory.mktemp("branched-run")
    with pytest.MonkeyPatch.context() as mp:
        calls = stub_first_draw(mp)
        manifest = sample.run(sample_args(tiny_model, rl_data, run_dir, "samples"))
    return run_dir, run_dir / "samples", manifest, calls


# ------------------------------------------------------------------------------------------ the cut (pure functions)


@pytest.mark.parametrize("step", [key for key, _ in STEPS[1:]])
def test_the_prefix_is_the_chain_up_to_just_before_the_step_line(step):
    from srpo.stages.sample import branch_prefix

    chain = canned_first_response(0)
    prefix, why = branch_prefix(chain, step)
    keys = [key for key, _ in STEPS]
    assert why is None and prefix.endswith("\n")
    assert chain[len(prefix):].startswith(f"{dict(STEPS)[step]}:")
    assert list(parse_chain(prefix).fields) == keys[:keys.index(step)]


@pytest.mark.parametrize(("response", "step", "why"), [
    ("I cannot tell what this is.", "combined", "no_step_line"),
    ("Visual: a\nText: b\nRisk: violence (high)\n", "combined", "no_step_line"),
    (canned_first_response(4), "combined", "not_a_chain_before_step"),  # a later step before it
    ("Visual: a\nCombined: c\nText: b\n", "combined", "not_a_chain_before_step"),  # an earlier step missing
    ("Sure!\nVisual: a\nText: b\nCombined: c\n", "combined", "not_a_chain_before_step"),  # text before the chain
    ("Visual: a\nVisual: again\nText: b\nCombined: c\n", "combined", "not_a_chain_before_step"),  # a step twice
    ("Visual: a\nText: b\nCombined: c\nRisk: it is bad\nConsequences: d\n", "consequences",
     "not_a_chain_before_step"),  # a malformed Risk step in the prefix
    ("Combined: c\nVisual: a\nText: b\n", "combined", "not_a_chain_before_step"),  # the step line comes first
])
def test_a_response_that_is_no_chain_up_to_the_step_has_no_prefix(response, step, why):
    from srpo.stages.sample import branch_prefix

    assert branch_prefix(response, step) == (None, why)


def test_the_token_check_sees_a_merge_across_the_prefix_boundary():
    import re

    from srpo.stages.sample import keeps_prefix_tokens

    def tokenizer(text, add_special_tokens):  # newlines in a run merge into one token, as "\n\n" does in many BPEs
        return {"input_ids": re.findall(r"\n+|[^\n]+", text)}

    assert keeps_prefix_tokens(tokenizer, "Visual: a\n", "Visual: a\nCombined: c")
    assert not keeps_prefix_tokens(tokenizer, "Visual: a\n", "Visual: a\n\nCombined: c")


def test_sample_mode_options():
    from srpo.configs import field_types, literal_choices

    assert (SampleArgs().sample_mode, SampleArgs().sample_branch_step) == ("whole", "combined")
    assert literal_choices(field_types(SampleArgs)["sample_branch_step"]) == tuple(key for key, _ in STEPS[1:])
    with pytest.raises(ValueError, match="first step.*sample_mode: whole"):
        SampleArgs(sample_mode="branched", sample_branch_step="visual")
    with pytest.raises(ValueError, match="sample_branch_step must be one of text, combined"):
        SampleArgs(sample_mode="branched", sample_branch_step="Combined")
    with pytest.raises(ValueError, match="sample_mode must be one of whole, branched"):
        SampleArgs(sample_mode="tree")
    assert typing.get_args(field_types(SampleArgs)["sample_mode"]) == ("whole", "branched")


# ---------------------------------------------------------------------------------------------- the sample step


def test_every_sample_of_a_branched_prompt_starts_with_its_prefix_and_continues_differently(branched_run):
    from srpo.stages.sample import batch_seed, continuation_seed

    _, folder, manifest, calls = branched_run
    rows = read_jsonl(folder / SAMPLES)
    assert [(r["prompt_id"], r["sample_idx"]) for r in rows] == [(f"p{i}", k) for i in range(N_PROMPTS)
                                                                for k in range(K)]
    for i in range(N_PROMPTS):
        mine = [r for r in rows if r["prompt_id"] == f"p{i}"]
        if f"p{i}" in EXPECTED_FALLBACK:
            assert all(not r["branched"] and r["branch_step"] is None and r["branch_prefix"] == "" for r in mine)
            assert {r["branch_fallback"] for r in mine} == {EXPECTED_FALLBACK[f"p{i}"]}
            continue
        first = canned_first_response(i)
        prefix = first[:first.index("Combined:")]
        assert prefix.endswith(f"asks what to do with item {i}\n")
        for r in mine:
            assert r["branched"] and r["branch_step"] == "combined" and r["branch_fallback"] is None
            assert r["branch_prefix"] == prefix and r["response"].startswith(prefix)
            assert r["prefix_tokens_kept"] is True
        continuations = [r["response"][len(prefix):] for r in mine]
        assert len(set(continuations)) == K, continuations  # K different paths from the same prefix
        assert all(c and not c[0].isspace() for c in continuations)

    stats = manifest["stats"]
    assert stats["sample_mode"] == "branched" and stats["branch_step"] == "combined"
    assert stats["branched_prompts"] == 4 and stats["fallback_prompts"] == 2
    assert stats["fallback_reasons"] == {"no_step_line": 1, "not_a_chain_before_step": 1}
    assert stats["prefix_token_mismatches"] == 0 and stats["samples"] == N_PROMPTS * K

    # Per batch b: a first draw (1 sample, the batch seed), then K continuations of (prompt + prefix) with the batch's
    # continuation seed; a prompt that fell back is sampled whole there, from an empty prefix.
    assert [(c["k"], c["seed"], c["prefixes"] is None) for c in calls] == [
        (k, seed, first) for b in range(3)
        for k, seed, first in ((1, batch_seed(7, b), True), (K, continuation_seed(7, b), False))]
    assert calls[5]["prefixes"] == ["", ""] and all(calls[c]["prefixes"][0].startswith("Visual:") for c in (1, 3))


def test_branched_sampling_is_deterministic_and_resumes_after_a_kill_between_batches(tiny_model, rl_data,
                                                                                      branched_run):
    from srpo import chaos
    from srpo.stages import sample

    run_dir, folder, _, _ = branched_run
    reference = (folder / SAMPLES).read_bytes()
    with pytest.MonkeyPatch.context() as mp:
        stub_first_draw(mp)
        sample.run(sample_args(tiny_model, rl_data, run_dir, "again"))
    assert (run_dir / "again" / SAMPLES).read_bytes() == reference

    class Killed(Exception):
        pass

    def kill(step, event):
        if event == "batch":
            raise Killed  # right after the first batch reached the part file, as chaos's SIGKILL would be

    with pytest.MonkeyPatch.context() as mp:
        stub_first_draw(mp)
        mp.setattr(chaos, "point", kill)
        with pytest.raises(Killed):
            sample.run(sample_args(tiny_model, rl_data, run_dir, "killed"))
    killed = run_dir / "killed"
    assert not (killed / "manifest.json").exists()
    assert len(read_jsonl(killed / "parts" / "samples.rank0.jsonl")) == 2 * K
    with pytest.MonkeyPatch.context() as mp:
        calls = stub_first_draw(mp)
        manifest = sample.run(sample_args(tiny_model, rl_data, run_dir, "killed"))
    assert (killed / SAMPLES).read_bytes() == reference
    assert [c["queries"] for c in calls if c["prefixes"] is None] == [[f"What is item {i}?" for i in (2, 3)],
                                                                      [f"What is item {i}?" for i in (4, 5)]]
    assert manifest["stats"]["branched_prompts"] == 4  # counted over all rows, the resumed batch's too


def test_a_batch_drawn_alone_is_the_batch_of_the_whole_run(tiny_model, rl_data, branched_run):
    """What a rank of a sharded run does: batch b alone, in a fresh process state, draws the rows one process drew."""
    import srpo.models as models
    from srpo.stages import sample

    _, folder, _, _ = branched_run
    args = sample_args(tiny_model, rl_data, folder.parent, "unused")
    prompts = sample.choose_prompts(rl_data, "auto")[1]
    model, processor = models.load_policy(tiny_model)
    model.eval()
    with pytest.MonkeyPatch.context() as mp:
        stub_first_draw(mp)
        rows = sample.branched_rows(args, 1, prompts[2:4], models.pair_inputs(rl_data, prompts[2:4]),
                                    lambda p, **kw: models.generate(model, processor, p, do_sample=True, **kw),
                                    processor.tokenizer)
    assert rows == [r for r in read_jsonl(folder / SAMPLES) if r["prompt_id"] in ("p2", "p3")]


def test_whole_mode_is_sampling_as_before(tiny_model, rl_data, tmp_path):
    import srpo.models as models
    from srpo.stages import sample

    args = sample_args(tiny_model, rl_data, tmp_path, "whole", sample_mode="whole")
    manifest = sample.run(args)
    rows = read_jsonl(tmp_path / "whole" / SAMPLES)
    assert all(set(r) == {"prompt_id", "sample_idx", "response"} for r in rows)
    assert "sample_mode" not in manifest["config"] and "sample_mode" not in manifest["stats"]
    prompts = sample.choose_prompts(rl_data, "auto")[1]
    model, processor = models.load_policy(tiny_model)
    model.eval()
    expected = [{"prompt_id": p["id"], "sample_idx": k, "response": t}
                for b in range(3) for p, ks in zip(prompts[2 * b:2 * b + 2], models.generate(
                    model, processor, models.pair_inputs(rl_data, prompts[2 * b:2 * b + 2]), max_new_tokens=10,
                    k=K, do_sample=True, seed=sample.batch_seed(7, b)), strict=True) for k, t in enumerate(ks)]
    assert rows == expected


# --------------------------------------------------------------------------------------------------------- pairs


def _hand_folder(path: Path, files: dict) -> str:
    path.mkdir(parents=True)
    for name, rows in files.items():
        write_jsonl(path / name, rows)
    write_manifest(path, step=path.name, fingerprint="hand", config={}, inputs={}, outputs=list(files), started=0.0,
                   stats={})
    return str(path)


def _pairs(samples_dir: Path, data: Path, tmp_path: Path) -> tuple[list[dict], dict]:
    from srpo.stages import pairs

    samples = read_jsonl(samples_dir / SAMPLES)
    judgments = _hand_folder(tmp_path / "judgments", {JUDGMENTS: [  # sample 0 best, the last worst
        {"prompt_id": s["prompt_id"], "sample_idx": s["sample_idx"], "failed": False,
         "safety": 1.0 if s["sample_idx"] == 0 else 0.5, "effectiveness": 1.0 if s["sample_idx"] < K - 1 else 0.0}
        for s in samples]})
    manifest = pairs.run(PairArgs(run_dir=str(tmp_path), step="pairs", data_dir=str(data),
                                  samples_dir=str(samples_dir), judgments_dir=judgments))
    return read_jsonl(tmp_path / "pairs" / PAIRS), manifest


def test_pairs_of_branched_samples_carry_their_branch_step(branched_run, rl_data, tmp_path):
    _, folder, _, _ = branched_run
    rows, manifest = _pairs(folder, rl_data, tmp_path)
    samples = {(s["prompt_id"], s["sample_idx"]): s for s in read_jsonl(folder / SAMPLES)}
    assert [(r["prompt_id"], r["chosen_idx"], r["rejected_idx"]) for r in rows] == [(f"p{i}", 0, K - 1)
                                                                                    for i in range(N_PROMPTS)]
    for r in rows:
        prefix = samples[(r["prompt_id"], 0)]["branch_prefix"]
        if r["prompt_id"] in EXPECTED_FALLBACK:
            assert r["branch_step"] is None and prefix == ""
        else:
            assert r["branch_step"] == "combined" and prefix
            assert r["chosen"].startswith(prefix) and r["rejected"].startswith(prefix) and r["chosen"] != r["rejected"]
    assert manifest["stats"]["step_level_pairs"] == 4
    assert manifest["stats"]["step_level_by_branch_step"] == {"combined": 4}


def test_pairs_of_whole_samples_are_as_before(rl_data, tmp_path):
    samples = _hand_folder(tmp_path / "samples", {SAMPLES: [
        {"prompt_id": f"p{i}", "sample_idx": k, "response": f"Answer: {i}-{k}"} for i in range(2) for k in range(K)]})
    rows, manifest = _pairs(Path(samples), rl_data, tmp_path)
    assert len(rows) == 2 and not any("branch_step" in r for r in rows)
    assert manifest["stats"]["step_level_pairs"] == 0


# ------------------------------------------------------------------------------------ DPO: the prefix cancels out


@pytest.mark.parametrize("prompt_id", ["p0", "p1"])  # with an image, text only
def test_dpo_with_the_prefix_in_both_completions_is_dpo_with_the_prefix_in_the_prompt(
        prompt_id, tiny_model, rl_data, branched_run, tmp_path):
    """The pair as srpo feeds it (dpo_rows: the shared prefix inside chosen and rejected) against the same pair with
    the prefix moved into TRL's prompt: the same tokens, the prefix counted in the completions or not, and the same
    sigmoid DPO loss and gradient. Measured on these pairs: |Δloss| <= 3e-6, |Δgrad| <= 1e-6, against >= 1e-2 and
    >= 0.25 when the prefix is taken out of the chosen side only (no longer shared)."""
    import torch
    from datasets import Dataset
    from trl import DPOTrainer

    from srpo.models import load_policy, user_message
    from srpo.stages.dpo import dpo_rows
    from srpo.train_configs import DPOStageConfig

    _, folder, _, _ = branched_run
    chosen, rejected = [s for s in read_jsonl(folder / SAMPLES) if s["prompt_id"] == prompt_id][:2]
    prefix = chosen["branch_prefix"]
    assert prefix and rejected["branch_prefix"] == prefix
    prompt = {p["id"]: p for p in read_jsonl(rl_data / "rl_prompts.jsonl")}[prompt_id]
    write_jsonl(tmp_path / PAIRS, [{"image": prompt.get("image"), "query": prompt["query"],
                                    "chosen": chosen["response"], "rejected": rejected["response"]}])
    as_srpo = dpo_rows(tmp_path / PAIRS, rl_data)

    model, processor = load_policy(tiny_model)
    reference, _ = load_policy(tiny_model)
    torch.manual_seed(0)
    with torch.no_grad():  # a policy away from its reference, so the log-ratios are not all zero
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    template = processor.apply_chat_template(user_message(prompt["query"], prompt.get("image") is not None),
                                             add_generation_prompt=True, tokenize=False)
    end = "<|im_end|>\n"  # how the chat template closes an assistant turn
    in_prompt = [{"images": as_srpo[0]["images"], "prompt": template + prefix,
                  "chosen": chosen["response"][len(prefix):] + end,
                  "rejected": rejected["response"][len(prefix):] + end}]
    args = DPOStageConfig(output_dir=str(tmp_path / "trainer"), per_device_train_batch_size=1, use_cpu=True,
                          disable_tqdm=True)

    def batch_of(rows):
        trainer = DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=processor)
        return trainer, trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))

    def loss_and_grads(trainer, inputs):
        model.zero_grad()
        loss = trainer.compute_loss(model, inputs)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    trainer_a, a = batch_of(as_srpo)
    trainer_b, b = batch_of(in_prompt)
    n_prefix = len(processor.tokenizer(prefix, add_special_tokens=False)["input_ids"])
    assert torch.equal(a["input_ids"], b["input_ids"])  # one token sequence: the boundary tokenizes alike
    assert (a["completion_mask"] - b["completion_mask"]).sum(dim=1).tolist() == [n_prefix, n_prefix]
    loss_a, grads_a = loss_and_grads(trainer_a, a)
    loss_b, grads_b = loss_and_grads(trainer_b, b)
    assert abs(loss_a - loss_b) < 3e-5
    assert max(float((grads_a[n] - grads_b[n]).abs().max()) for n in grads_a) < 1e-5

    # The cancellation needs the prefix on both sides: counted in the chosen completion only, the loss moves.
    one_sided = b["completion_mask"].clone()
    one_sided[0] = a["completion_mask"][0]
    loss_c, _ = loss_and_grads(trainer_b, dict(b, completion_mask=one_sided))
    assert abs(loss_a - loss_c) > 1e-3


# -------------------------------------------------------------------------------------------------------- vLLM


FAKE_VLLM = '''
CALLS = []


class SamplingParams:
    def __init__(self, n, temperature, top_p, max_tokens, seed):
        self.n, self.seed = n, seed


class _Completion:
    def __init__(self, index, text):
        self.index, self.text = index, text


class _Output:
    def __init__(self, outputs):
        self.outputs = outputs


class LLM:
    def __init__(self, model, **kwargs):
        pass

    def generate(self, requests, params, use_tqdm=True):
        CALLS.append((requests, params))
        out = []
        for r, p in zip(requests, params):
            if r["prompt"].endswith("assistant\\n"):  # a first draw: a chain
                texts = ["Visual: v\\nText: t\\nCombined: c\\nRisk: none (none)\\nConsequences: x\\nStrategy: help\\n"
                         "Answer: a"] * p.n
            else:
                texts = [f" Combined: s{p.seed}-k{k}" for k in range(p.n)]
            out.append(_Output([_Completion(k, t) for k, t in enumerate(texts)]))
        return out
'''


def test_vllm_continues_the_prefix_as_the_hf_path_does(tiny_model, rl_data, tmp_path, monkeypatch):
    import sys

    from srpo.stages import sample
    from srpo.stages.sample import batch_seed, continuation_seed

    (tmp_path / "fakepkgs" / "vllm").mkdir(parents=True)
    (tmp_path / "fakepkgs" / "vllm" / "__init__.py").write_text(FAKE_VLLM)
    monkeypatch.syspath_prepend(str(tmp_path / "fakepkgs"))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    import vllm

    try:
        manifest = sample.run(sample_args(tiny_model, rl_data, tmp_path, "samples", sample_backend="vllm"))
    finally:
        sys.modules.pop("vllm", None)
    rows = read_jsonl(tmp_path / "samples" / SAMPLES)
    assert manifest["stats"]["branched_prompts"] == N_PROMPTS
    first_draws, continuations = vllm.CALLS[0::2], vllm.CALLS[1::2]
    assert len(first_draws) == len(continuations) == 3
    for b, ((_, first_params), (requests, params)) in enumerate(zip(first_draws, continuations, strict=True)):
        assert [p.n for p in first_params] == [1, 1] and [p.n for p in params] == [K, K]
        assert [p.seed for p in first_params] == [batch_seed(7, b) * 1000 + i for i in range(2)]
        assert [p.seed for p in params] == [continuation_seed(7, b) * 1000 + i for i in range(2)]
        assert all(r["prompt"].endswith("assistant\nVisual: v\nText: t\n") for r in requests)
    assert rows[1]["response"] == f"Visual: v\nText: t\nCombined: s{continuation_seed(7, 0) * 1000}-k1"
