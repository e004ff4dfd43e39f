"""max_length that would cut image tokens is an error naming the row and the limit, never a silent drop."""

from __future__ import annotations

import pytest
from PIL import Image

from srpo.model_specs import resolve_model
from srpo.models import assistant_message, load_policy, user_message
from srpo.training import TruncationError, check_truncation


def _row(answer_words: int = 20, **answers) -> dict:
    answers = answers or {"completion": assistant_message("A red square. " * answer_words)}
    return {"images": [Image.new("RGB", (64, 64), "red")], "prompt": user_message("What is this?", True), **answers}


@pytest.mark.parametrize("family", ["tiny:llava", "tiny:qwen2.5-vl"])
def test_lengths_are_what_trl_feeds_the_model_and_trl_alone_would_cut_the_image(family):
    """The measured length is the TRL collator's; at a max_length inside the image TRL truncates regardless (LLaVA
    then fails on features against tokens, Qwen2.5-VL trains on an image whose tokens are gone): srpo refuses first."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    model, processor = load_policy(resolve_model(family))
    longest = check_truncation(processor, [_row()], ["r"], 10**6)["longest_sequence"]
    assert DataCollatorForVisionLanguageModeling(processor=processor)([_row()])["input_ids"].shape[1] == longest
    cut = DataCollatorForVisionLanguageModeling(processor=processor, max_length=10)([_row()])
    assert cut["input_ids"].shape[1] == 10
    try:
        with torch.no_grad():
            model(**{k: v for k, v in cut.items() if k != "labels"})
        silent = True
    except ValueError:
        silent = False
    assert silent == (family == "tiny:qwen2.5-vl")
    with pytest.raises(TruncationError, match=r"max_length 10 would cut 1 training sequence\(s\): r \(completion"):
        check_truncation(processor, [_row()], ["r"], 10)


def test_only_the_answer_cut_is_counted_not_refused():
    _, processor = load_policy(resolve_model("tiny:llava"))
    longest = check_truncation(processor, [_row()], ["r"], 10**6)["longest_sequence"]
    fit = check_truncation(processor, [_row(), _row(answer_words=1)], ["a", "b"], longest - 5)
    assert fit == {"max_length": longest - 5, "truncated_sequences": 1, "longest_sequence": longest}
    assert check_truncation(processor, [_row()], ["r"], None) == {}


def test_keep_end_cuts_the_prompt_and_dpo_rows_are_checked_per_answer():
    _, processor = load_policy(resolve_model("tiny:llava"))
    row = _row(chosen=assistant_message("I can't help with that."), rejected=assistant_message("Sure. " * 60))
    longest = check_truncation(processor, [row], ["x"], 10**6)["longest_sequence"]
    # keep_start at longest - 40 keeps the image (it comes first); keep_end drops the prompt's start, image included.
    assert check_truncation(processor, [row], ["x"], longest - 40)["truncated_sequences"] == 1
    with pytest.raises(TruncationError, match=r"x \(rejected: \d+ tokens; 16 of its 16 image tokens fall outside "
                                              r"the last \d+ that keep_end keeps\)"):
        check_truncation(processor, [row], ["x"], longest - 40, "keep_end")


def test_a_prompt_that_fills_max_length_leaves_nothing_to_train_on():
    _, processor = load_policy(resolve_model("tiny:llava"))
    row = _row()
    text = processor.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    prompt = len(processor(text=[text], images=[row["images"]])["input_ids"][0])
    with pytest.raises(TruncationError, match=f"r \\(completion: the prompt alone fills max_length {prompt}\\)"):
        check_truncation(processor, [row], ["r"], prompt)
    assert check_truncation(processor, [row], ["r"], prompt + 1)["truncated_sequences"] == 1


def test_the_sft_step_refuses_before_training_and_names_the_pair(tmp_path, tiny_data, tiny_model):
    from srpo.stages import sft
    from srpo.train_configs import SFTStageConfig

    args = SFTStageConfig(run_dir=str(tmp_path), step="sft", data_dir=str(tiny_data), model_dir=tiny_model,
                          output_dir=str(tmp_path / "sft" / "trainer"), max_steps=1, per_device_train_batch_size=2,
                          use_cpu=True, disable_tqdm=True, save_strategy="no", report_to="none", max_length=8)
    with pytest.raises(TruncationError, match=r"pairs\.jsonl: max_length 8 would cut \d+ training sequence\(s\): "
                                              r"pairs\.jsonl pair \S+ \(completion: \d+ tokens; "):
        sft.run(args)
    assert not (tmp_path / "sft" / "manifest.json").exists() and not (tmp_path / "sft" / "trainer").exists()
