"""The vLLM sampling backend's plumbing, against a stand-in `vllm` module (vLLM itself needs a GPU machine): the
prompts it is given are the HF path's chat-templated texts with the image as multi-modal data, K samples per prompt
with per-prompt seeds, outputs mapped back in order, an adapter policy merged once into full weights for it, and a
clear message when vLLM is not installed."""

import json
import sys

import pytest

FAKE_VLLM = '''
CALLS = []


class SamplingParams:
    def __init__(self, n, temperature, top_p, max_tokens, seed):
        self.n, self.temperature, self.top_p, self.max_tokens, self.seed = n, temperature, top_p, max_tokens, seed


class _Completion:
    def __init__(self, index, text):
        self.index, self.text = index, text


class _Output:
    def __init__(self, outputs):
        self.outputs = outputs


class LLM:
    def __init__(self, model, **kwargs):
        import os

        assert os.path.exists(os.path.join(model, "config.json")), model  # full weights only
        CALLS.append(("init", model, kwargs))

    def generate(self, requests, params, use_tqdm=True):
        CALLS.append(("generate", requests, params))
        # Completions out of index order, as vLLM may return them; text names the seed and the sample.
        return [_Output([_Completion(k, f" s{p.seed}-k{k}-img{int('multi_modal_data' in r)} ")
                         for k in reversed(range(p.n))]) for r, p in zip(requests, params)]
'''


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    pkg = tmp_path / "fakepkgs" / "vllm"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE_VLLM)
    monkeypatch.syspath_prepend(str(tmp_path / "fakepkgs"))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    import vllm

    yield vllm
    sys.modules.pop("vllm", None)


def _lora_policy(tiny_model, folder):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            task_type="CAUSAL_LM"))
    peft.save_pretrained(folder)
    return str(folder)


def test_vllm_backend_samples_through_the_same_interface(fake_vllm, tiny_model, tiny_data, tmp_path):
    from srpo.configs import SampleArgs
    from srpo.runfolder import read_jsonl
    from srpo.stages import sample

    policy = _lora_policy(tiny_model, tmp_path / "adapter")
    args = dict(run_dir=str(tmp_path / "run"), policy_dir=policy, data_dir=str(tiny_data), sample_k=3,
                sample_batch_size=5, sample_backend="vllm", seed=2)
    manifest = sample.run(SampleArgs(step="samples", **args))
    folder = tmp_path / "run" / "samples"
    rows = read_jsonl(folder / "samples.jsonl")
    prompts = sample.prompts_of(tiny_data, "train")
    assert manifest["stats"]["backend"] == "vllm" and len(rows) == 3 * len(prompts)
    assert [(r["prompt_id"], r["sample_idx"]) for r in rows] == [(p["id"], k) for p in prompts for k in range(3)]

    inits = [c for c in fake_vllm.CALLS if c[0] == "init"]
    assert len(inits) == 1 and inits[0][1].endswith(".merged")  # the adapter was merged into full weights
    assert not (folder / ".merged").exists()  # and removed once the step finished
    gens = [c for c in fake_vllm.CALLS if c[0] == "generate"]
    assert len(gens) == -(-len(prompts) // 5)
    requests = [r for _, reqs, _ in gens for r in reqs]
    params = [p for _, _, ps in gens for p in ps]
    assert len({p.seed for p in params}) == len(prompts)  # one seed per prompt
    assert all(p.n == 3 and p.max_tokens == 96 for p in params)
    for prompt, req, p, k0 in zip(prompts, requests, params, rows[::3], strict=True):
        assert req["prompt"].startswith("<|im_start|>user\n") and req["prompt"].endswith("<|im_start|>assistant\n")
        assert prompt["query"] in req["prompt"]
        assert ("<image>" in req["prompt"]) == (prompt["image"] is not None) == ("multi_modal_data" in req)
        assert k0["response"] == f"s{p.seed}-k0-img{int(prompt['image'] is not None)}"  # in order, stripped

    # The same step again draws the same samples (seeds are a function of the batch and the position).
    sample.run(SampleArgs(step="again", **args))
    assert (tmp_path / "run" / "again" / "samples.jsonl").read_bytes() == (folder / "samples.jsonl").read_bytes()


def test_vllm_backend_without_vllm_says_what_to_do(tiny_model, tiny_data, tmp_path, monkeypatch):
    from srpo.configs import SampleArgs
    from srpo.stages import sample

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(ImportError, match="pip install vllm"):
        sample.run(SampleArgs(run_dir=str(tmp_path), step="samples", policy_dir=tiny_model, data_dir=str(tiny_data),
                              sample_backend="vllm"))
    with pytest.raises(ValueError, match="sample_backend"):
        SampleArgs(sample_backend="sglang")
    assert json.dumps(SampleArgs().sample_backend) == '"hf"'
