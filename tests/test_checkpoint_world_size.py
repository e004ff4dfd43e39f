"""A trainer checkpoint resumed by a different number of processes: refused for DeepSpeed ZeRO, a warning for DDP.

The folder layouts are the ones transformers 5 + DeepSpeed 0.19.8 write, fabricated with empty files. The ZeRO-2 one
is copied from a real 2-process CPU run (bf16 on, killed after its first checkpoint); the ZeRO-3 names follow
DeepSpeed's `_get_ckpt_name` / `_get_rank_zero_ckpt_name` (one model- and one optimizer-state file per rank).
"""

import logging

import pytest

from srpo.training import CheckpointWorldSizeError, check_resume_world_size, saved_world_size

TRAINER_FILES = ["chat_template.jinja", "config.json", "generation_config.json", "model.safetensors",
                 "processor_config.json", "scheduler.pt", "tokenizer.json", "tokenizer_config.json",
                 "trainer_state.json", "training_args.bin"]


def _checkpoint(tmp_path, files: list[str], latest: str | None = "global_step1"):
    checkpoint = tmp_path / "sft" / "trainer" / "checkpoint-1"
    for name in TRAINER_FILES + files:
        (checkpoint / name).parent.mkdir(parents=True, exist_ok=True)
        (checkpoint / name).write_bytes(b"")
    if latest is not None:
        (checkpoint / "latest").write_text(latest)
    return str(checkpoint)


def _zero2(ranks: int) -> list[str]:  # the real layout, bf16 on
    return ["global_step1/mp_rank_00_model_states.pt", "zero_to_fp32.py", "zero_to_torch.py"] + \
        [f"global_step1/bf16_zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(ranks)] + \
        [f"rng_state_{r}.pth" for r in range(ranks)]


def _zero3(ranks: int) -> list[str]:  # fp32
    return [f"global_step1/zero_pp_rank_{r}_mp_rank_00_{kind}_states.pt" for r in range(ranks)
            for kind in ("model", "optim")] + [f"rng_state_{r}.pth" for r in range(ranks)]


def test_saved_world_size_reads_the_layout(tmp_path):
    assert saved_world_size(_checkpoint(tmp_path / "z2", _zero2(2))) == (2, True)
    assert saved_world_size(_checkpoint(tmp_path / "z3", _zero3(4))) == (4, True)
    assert saved_world_size(_checkpoint(tmp_path / "nolatest", _zero3(3), latest=None)) == (3, True)
    ddp = _checkpoint(tmp_path / "ddp", ["optimizer.pt", "rng_state_0.pth", "rng_state_1.pth", "rng_state_2.pth"],
                      latest=None)
    assert saved_world_size(ddp) == (3, False)
    one = _checkpoint(tmp_path / "one", ["optimizer.pt", "rng_state.pth"], latest=None)
    assert saved_world_size(one) == (1, False)
    assert saved_world_size(_checkpoint(tmp_path / "bare", [], latest=None)) == (None, False)


@pytest.mark.parametrize("layout,saved,current", [("zero2", 2, 1), ("zero2", 2, 4), ("zero3", 4, 8)])
def test_zero_checkpoint_at_another_world_size_is_refused_with_the_ways_out(tmp_path, layout, saved, current):
    checkpoint = _checkpoint(tmp_path, (_zero2 if layout == "zero2" else _zero3)(saved))
    check_resume_world_size(checkpoint, saved)  # the same world size resumes
    with pytest.raises(CheckpointWorldSizeError) as e:
        check_resume_world_size(checkpoint, current)
    message = str(e.value)
    for expected in (checkpoint, f"written by {saved} processes", f"this run has {current}",
                     f"--num_processes {saved}", f"delete {tmp_path / 'sft' / 'trainer'}", "'sft'",
                     f"ds_to_universal --input_folder {checkpoint}/global_step1 ",
                     f"--output_folder {checkpoint}/global_step1_universal", f"into {checkpoint}/latest",
                     '"checkpoint": {"load_universal": true}'):
        assert expected in message, (expected, message)


def test_a_universal_checkpoint_resumes_at_any_world_size(tmp_path, caplog):
    # ds_to_universal's output: per-parameter folders under zero/ and the mp_rank model states, no optimizer shards.
    universal = ["global_step1_universal/mp_rank_00_model_states.pt", "global_step1_universal/zero/optimizer_state.pt",
                 "global_step1_universal/zero/lm_head.weight/fp32.pt"]
    checkpoint = _checkpoint(tmp_path, _zero2(2) + universal, latest="global_step1_universal")
    with caplog.at_level(logging.WARNING, logger="srpo.training"):
        check_resume_world_size(checkpoint, 1)
    assert "written by 2 process(es), with 1" in caplog.text  # the data position still differs: said, not refused


@pytest.mark.parametrize("files,saved,current", [
    (["optimizer.pt", "rng_state_0.pth", "rng_state_1.pth"], 2, 4),   # DDP 2 -> 4
    (["optimizer.pt", "rng_state.pth"], 1, 2),                        # one process -> DDP 2
])
def test_a_ddp_checkpoint_resumes_at_another_world_size_with_a_warning(tmp_path, caplog, files, saved, current):
    checkpoint = _checkpoint(tmp_path, files, latest=None)
    with caplog.at_level(logging.WARNING, logger="srpo.training"):
        check_resume_world_size(checkpoint, saved)
        assert not caplog.records
        check_resume_world_size(checkpoint, current)
    assert f"written by {saved} process(es), with {current}" in caplog.text
    assert "gradient_accumulation_steps" in caplog.text


def test_no_checkpoint_is_nothing_to_check():
    check_resume_world_size(None, 8)
