"""vLLM as the sampling engine (GPU users; optional): the same prompts, K samples and seeds as the HF sampler.

    sample:
      sample_backend: vllm        # pip install vllm (not a dependency of srpo)

The prompt text is the processor's chat template with the image placeholder, exactly what the HF path feeds
`generate`, and the image goes in as vLLM multi-modal data. Every prompt gets its own seed (the batch seed plus its
position), so a rerun — or a resumed or sharded one — draws the same samples. An adapter (LoRA) policy is merged
into its base once, into `<step>/.merged/` (vLLM loads full weights; safetensors only), and removed with the step's
resume files. Branched sampling (sample_mode: branched) continues a prefix as the HF path does: the prefix is appended
to the prompt text.
"""

from __future__ import annotations

from pathlib import Path


class VLLMSampler:
    def __init__(self, policy_dir: str, step_folder: Path, max_model_len: int = 4096,
                 gpu_memory_utilization: float = 0.85, trust_remote_code: bool = False, max_images: int = 1):
        try:
            from vllm import LLM
        except ImportError:
            raise ImportError("sample_backend 'vllm' needs vLLM on a GPU machine: pip install vllm (or use "
                              "sample_backend 'hf')") from None
        from transformers import AutoProcessor

        model_dir = full_weights(policy_dir, step_folder)
        self.processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        self.llm = LLM(model=model_dir, max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization,
                       trust_remote_code=trust_remote_code, limit_mm_per_prompt={"image": max(1, max_images)})

    def generate(self, prompts: list[tuple[str, object]], *, max_new_tokens: int, k: int, temperature: float,
                 top_p: float, seed: int, prefixes: list[str] | None = None) -> list[list[str]]:
        """K texts per (query, PIL image, a list of them, or None) prompt, in order; with prefixes, the continuations
        of each prompt's prefix (the start of the assistant's answer), as in srpo.models.generate."""
        from vllm import SamplingParams

        from srpo.models import as_image_list, user_message

        requests, params = [], []
        for i, (query, image) in enumerate(prompts):
            images = as_image_list(image)
            text = self.processor.apply_chat_template(user_message(query, len(images)),
                                                      add_generation_prompt=True, tokenize=False)
            text += prefixes[i] if prefixes is not None else ""
            # vLLM takes one image as itself and several as a list, in prompt order.
            data = {"multi_modal_data": {"image": images[0] if len(images) == 1 else images}} if images else {}
            requests.append({"prompt": text, **data})
            params.append(SamplingParams(n=k, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                                         seed=seed * 1000 + i))
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [[c.text.strip() for c in sorted(out.outputs, key=lambda c: c.index)] for out in outputs]


def merged_dir(step_folder: Path) -> Path:
    return Path(step_folder) / ".merged"


def full_weights(policy_dir: str, step_folder: Path) -> str:
    """The policy as a full-weights folder: itself, or its adapter merged into the base (once per step; under
    several processes rank 0 calls this first, behind a barrier)."""
    if not (Path(policy_dir) / "adapter_config.json").exists():
        return str(policy_dir)
    merged = merged_dir(step_folder)
    if not (merged / "config.json").exists():
        import os
        import shutil

        from srpo.models import load_policy

        model, processor = load_policy(policy_dir)  # merges the adapter into its base
        tmp = merged.with_name(".merged.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        os.replace(tmp, merged)  # a killed merge never looks finished
    return str(merged)
