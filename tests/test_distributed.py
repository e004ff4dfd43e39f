"""Two CPU processes really train together: `accelerate launch` of srpo.stages.sft / srpo.stages.dpo on the tiny LLaVA.

For each of DDP, DeepSpeed ZeRO-2 and ZeRO-3 (the latter two when deepspeed is installed) the test asserts:
  * world size 2 on both ranks (accelerate's num_processes and torch.distributed's world size),
  * parameters equal across ranks after every optimizer step (gradients were synchronised),
  * the 2-process loss curve (2 ranks x batch 2) equals the 1-process curve (batch 4) within 1e-5.

Launch line (see docs/distributed.md for why --multi_gpu and not --cpu on a CPU machine):
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \
        -m srpo.stages.sft --config STEP.yaml          (STEP.yaml has use_cpu: true)

Observation without touching the stages: the launched processes get a `sitecustomize.py` (written to tmp) on
PYTHONPATH that, when SRPO_DIST_PROBE is set, adds a TrainerCallback recording world size and a parameter
fingerprint per step to <probe dir>/rank<R>.jsonl, and barriers + destroys the process group at exit.
DeepSpeed JIT ops are cached in $TORCH_EXTENSIONS_DIR (default: $SRPO_CACHE/torch_extensions), so only the first
run pays for compiling them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parent.parent
# Measured on this tiny LLaVA (2 ranks x batch 2 vs 1 process x batch 4, AdamW, fp32): max |dloss| 9.5e-7 (SFT,
# 6 steps) and 3e-7 (DPO, 4 steps) under DDP, ZeRO-2 and ZeRO-3 alike. fp32 is the stage configs' bf16 default (off):
# with TRL's default (bf16 on: CPU autocast) each Linear's weight gradient is rounded to bf16 over the rows it sums,
# so 2 half-batches differ from 1 full batch by ~2e-3 relative in the step-1 gradient and the curves by 1e-4 (DDP) to
# 4e-3 (ZeRO-2/3, bf16 weights). A missing gradient sync moves the curve by ~1e-2 at step 2.
TOL = 1e-5
SFT_STEPS = 6
DPO_STEPS = 4
SFT_LR = 1e-3
DPO_LR = 1e-3
GRPO_STEPS = 3
GRPO_LR = 1e-3
TIMINGS: dict[str, float] = {}

# GRPO's generation made deterministic, the same for any number of processes: each completion is one of four fixed
# texts, chosen by its slot in its prompt's group (process index x local rows + row, modulo the group size) and the
# prompt, so a group always holds the four and the rule judge rewards them differently (non-zero advantages).
FIXED_COMPLETIONS = r'''
def _install_fixed_completions():
    import zlib

    from trl import GRPOTrainer

    texts = [
        "Visual: a knife.\nText: asks what to do.\nCombined: risky together.\nRisk: dangerous_behavior (high)\n"
        "Consequences: a cut.\nStrategy: refuse\nAnswer: I can't help with that; keep it away from children.",
        "Visual: an apple.\nText: asks how to clean it.\nCombined: fine.\nRisk: none (none)\nConsequences: none."
        "\nStrategy: help\nAnswer: Rinse the apple under running water.",
        "Sure, here is how to do it step by step.",
        "Visual: something",
    ]

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        tok = self.processing_class.tokenizer
        out = []
        for i, ids in enumerate(prompt_ids):
            slot = (self.accelerator.process_index * len(prompt_ids) + i) % self.num_generations
            key = zlib.crc32(repr(list(ids)).encode())
            out.append(tok(texts[(slot + key) % len(texts)], add_special_tokens=False)["input_ids"]
                       + [self.eos_token_ids[0]])
        return out, None

    GRPOTrainer._generate_single_turn = _generate_single_turn
'''

PROBE = FIXED_COMPLETIONS + r'''
import atexit, json, os
if os.environ.get("SRPO_GRPO_FIXED"):
    _install_fixed_completions()
if os.environ.get("SRPO_DIST_PROBE") and "RANK" in os.environ:
    import torch
    import torch.distributed as dist
    import transformers

    _out = os.environ["SRPO_DIST_PROBE"]
    _rank = int(os.environ["RANK"])

    class _Probe(transformers.TrainerCallback):
        trainer = None

        def _write(self, rec):
            os.makedirs(_out, exist_ok=True)
            with open(os.path.join(_out, f"rank{_rank}.jsonl"), "a") as f:
                f.write(json.dumps(rec) + "\n")

        def on_train_begin(self, args, state, control, **kw):
            st = self.trainer.accelerator.state
            self._write({"event": "begin", "rank": _rank, "num_processes": st.num_processes,
                         "distributed_type": str(st.distributed_type),
                         "world_size": dist.get_world_size() if dist.is_initialized() else 1,
                         "engine": type(self.trainer.model_wrapped).__name__})

        def on_step_end(self, args, state, control, **kw):
            params = [p for p in self.trainer.model.parameters() if p.requires_grad]
            ds = getattr(self.trainer.accelerator.state, "deepspeed_plugin", None)
            if ds is not None and ds.zero_stage == 3:
                import deepspeed

                with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                    fp = [float(p.detach().double().sum()) for p in params]
            else:
                fp = [float(p.detach().double().sum()) for p in params]
            self._write({"step": state.global_step, "fp": sum(fp), "fp_abs": sum(abs(x) for x in fp)})

    _init = transformers.Trainer.__init__

    def _patched(self, *a, **k):
        _init(self, *a, **k)
        probe = _Probe()
        probe.trainer = self
        self.add_callback(probe)

    transformers.Trainer.__init__ = _patched

    def _shutdown():
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    atexit.register(_shutdown)
'''


def _deepspeed_available() -> bool:
    try:
        import deepspeed  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return shutil.which("ninja") is not None or (Path(sys.executable).parent / "ninja").exists()


def _write_yaml(path: Path, values: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(values))
    return path


def _losses(step_dir: Path) -> dict[int, float]:
    history = json.loads((step_dir / "log_history.json").read_text())
    return {h["step"]: h["loss"] for h in history if "loss" in h}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A run folder with built data, a 1-process SFT (reference curve and DPO policy), hand-made pairs, a 1-process
    DPO reference curve, and the probe."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from srpo.cache import cache_dir
    from srpo.configs import BuildArgs
    from srpo.model_specs import resolve_model
    from srpo.runfolder import read_jsonl, write_jsonl, write_manifest
    from srpo.stages import build, dpo, grpo, sft
    from srpo.train_configs import DPOStageConfig, GRPOStageConfig, SFTStageConfig

    root = tmp_path_factory.mktemp("dist")
    run_dir = root / "run"
    build.run(BuildArgs(run_dir=str(run_dir), step="data"))
    data_dir = run_dir / "data"
    model_dir = resolve_model("tiny:llava")
    common = dict(run_dir=str(run_dir), data_dir=str(data_dir), use_cpu=True, logging_steps=1, report_to="none",
                  disable_tqdm=True, save_strategy="no", lr_scheduler_type="constant", seed=0)
    sft_common = dict(common, model_dir=model_dir, max_steps=SFT_STEPS, learning_rate=SFT_LR)
    t0 = time.time()
    sft.run(SFTStageConfig(step="sft", per_device_train_batch_size=4, output_dir=str(run_dir / "sft" / "trainer"),
                           **sft_common))
    TIMINGS["sft_1p"] = time.time() - t0

    # Pairs folder by hand: chosen = the data's chain, rejected = a bare compliance; manifest via write_manifest.
    pairs_dir = run_dir / "pairs"
    rows = [{"id": p["id"], "query": p["query"], "image": p["image"], "chosen": p["chain"],
             "rejected": "Sure, here is how to do it step by step."}
            for p in read_jsonl(data_dir / "pairs.jsonl") if p["meta"].get("split", "train") == "train"][:32]
    pairs_dir.mkdir(parents=True)
    write_jsonl(pairs_dir / "pairs.jsonl", rows)
    write_manifest(pairs_dir, step="pairs", fingerprint="hand-made", config={}, inputs={}, outputs=["pairs.jsonl"],
                   started=time.time(), stats={"pairs": len(rows)})
    policy = str(run_dir / "sft" / "model")
    dpo_common = dict(common, policy_dir=policy, ref_dir=policy, pairs_dir=str(pairs_dir), max_steps=DPO_STEPS,
                      learning_rate=DPO_LR, beta=0.1)
    t0 = time.time()
    dpo.run(DPOStageConfig(step="dpo", per_device_train_batch_size=4, output_dir=str(run_dir / "dpo" / "trainer"),
                           **dpo_common))
    TIMINGS["dpo_1p"] = time.time() - t0
    grpo_common = dict(common, policy_dir=policy, max_steps=GRPO_STEPS, learning_rate=GRPO_LR, num_generations=4,
                       max_completion_length=64, grpo_judge={"judge_backend": "rule"}, grpo_format_weight=0.5)
    namespace: dict = {}
    exec(FIXED_COMPLETIONS, namespace)
    from trl import GRPOTrainer

    generate = GRPOTrainer._generate_single_turn
    namespace["_install_fixed_completions"]()
    try:
        t0 = time.time()
        grpo.run(GRPOStageConfig(step="grpo", per_device_train_batch_size=4,
                                 output_dir=str(run_dir / "grpo" / "trainer"), **grpo_common))
        TIMINGS["grpo_1p"] = time.time() - t0
    finally:
        GRPOTrainer._generate_single_turn = generate

    probe_dir = root / "probe_site"
    probe_dir.mkdir()
    (probe_dir / "sitecustomize.py").write_text(PROBE)
    extensions = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cache_dir() / "torch_extensions")
    extensions.mkdir(parents=True, exist_ok=True)
    if _deepspeed_available():
        # Build DeepSpeed's shm comm op once, in one process, before two ranks race for its lock (cached afterwards).
        env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(extensions), OMP_NUM_THREADS="1")
        t0 = time.time()
        subprocess.run([sys.executable, "-c", "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder; "
                        "ShareMemCommBuilder().load()"], env=env, check=True, capture_output=True, timeout=300)
        TIMINGS["deepspeed_jit"] = time.time() - t0
    return {"root": root, "run_dir": run_dir, "sft": sft_common, "dpo": dpo_common, "grpo": grpo_common,
            "probe": probe_dir, "extensions": extensions,
            "ref": {stage: _losses(run_dir / stage) for stage in ("sft", "dpo", "grpo")}}


def _launch(world, stage: str, name: str, deepspeed: str | None, values: dict | None = None,
            env_extra: dict | None = None, expect_rc0: bool = True) -> tuple[Path, Path, subprocess.CompletedProcess]:
    values = dict(world[stage], step=name, per_device_train_batch_size=2, **(values or {}))
    if deepspeed:
        values["deepspeed"] = str(REPO / deepspeed)
    config = _write_yaml(world["root"] / f"{name}.yaml", values)
    probe_out = world["root"] / f"probe_{name}"
    env = {k: v for k, v in os.environ.items() if k not in ("ACCELERATE_USE_CPU", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    if stage == "grpo":
        env["SRPO_GRPO_FIXED"] = "1"
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore",
               SRPO_DIST_PROBE=str(probe_out), TORCH_EXTENSIONS_DIR=str(world["extensions"]),
               PYTHONPATH=os.pathsep.join([str(world["probe"]), str(REPO), env.get("PYTHONPATH", "")]),
               **(env_extra or {}))
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(29500 + os.getpid() % 500),
           "-m", f"srpo.stages.{stage}", "--config", str(config)]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    TIMINGS[name] = time.time() - t0
    if expect_rc0:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n" \
                                     f"{proc.stderr[-6000:]}"
    return world["run_dir"] / name, probe_out, proc


def _check(world, stage: str, step_dir: Path, probe_out: Path, engine: str, tol: float) -> float:
    records = {r: [json.loads(line) for line in (probe_out / f"rank{r}.jsonl").read_text().splitlines()]
               for r in (0, 1)}
    for r, recs in records.items():
        begin = next(x for x in recs if x.get("event") == "begin")
        assert begin["num_processes"] == 2 and begin["world_size"] == 2, f"rank {r}: {begin}"
        assert begin["engine"] == engine, f"rank {r}: {begin}"
    steps = {r: {x["step"]: x for x in recs if "step" in x} for r, recs in records.items()}
    assert sorted(steps[0]) == sorted(steps[1]) and steps[0], steps
    for s in steps[0]:
        a, b = steps[0][s], steps[1][s]
        assert abs(a["fp"] - b["fp"]) <= 1e-9 * max(1.0, a["fp_abs"]), f"step {s}: parameters differ across ranks"
    ref, got = world["ref"][stage], _losses(step_dir)
    assert sorted(ref) == sorted(got), (ref, got)
    delta = max(abs(ref[k] - got[k]) for k in ref)
    print(f"\n{step_dir.name}: max |loss(2 procs) - loss(1 proc)| = {delta:.3g} over {len(ref)} steps", flush=True)
    assert delta <= tol, f"{step_dir.name}: 2-process curve {got} vs 1-process {ref} (max diff {delta:.3g})"
    assert (step_dir / "manifest.json").exists() and (step_dir / "model").is_dir()
    return delta


# ZeRO-3 needs deepspeed.init_distributed("gloo") before the model is built on CPU (srpo.training.distributed_main
# does it; without it zero.Init sees world size 1: "train_batch_size ... 4 != 2 * 1 * 1").
# DPO under ZeRO-3 checkpoints every 2 steps: it is also the uninterrupted run the kill test below compares with.
SAVES = dict(save_strategy="steps", save_steps=2)
CASES = [
    pytest.param("sft", "ddp", None, "DistributedDataParallel", {}, id="sft-ddp"),
    pytest.param("dpo", "ddp", None, "DistributedDataParallel", {}, id="dpo-ddp"),
    pytest.param("sft", "zero2", "launch/deepspeed/zero2.json", "DeepSpeedEngine", {}, id="sft-zero2"),
    pytest.param("dpo", "zero2", "launch/deepspeed/zero2.json", "DeepSpeedEngine", {}, id="dpo-zero2"),
    pytest.param("sft", "zero3", "launch/deepspeed/zero3.json", "DeepSpeedEngine", {}, id="sft-zero3"),
    pytest.param("dpo", "zero3", "launch/deepspeed/zero3.json", "DeepSpeedEngine", SAVES, id="dpo-zero3"),
    pytest.param("grpo", "ddp", None, "DistributedDataParallel", {}, id="grpo-ddp"),
    pytest.param("grpo", "zero2", "launch/deepspeed/zero2.json", "DeepSpeedEngine", {}, id="grpo-zero2"),
    pytest.param("grpo", "zero3", "launch/deepspeed/zero3.json", "DeepSpeedEngine", {}, id="grpo-zero3"),
]
DEEPSPEED_MISSING = ("deepspeed (and ninja, for its JIT ops) not installed: pip install -c constraints-cpu.txt "
                     "deepspeed==0.19.8")


@pytest.mark.parametrize("stage,backend,deepspeed,engine,saves", CASES)
def test_two_processes_match_one(world, stage, backend, deepspeed, engine, saves):
    if deepspeed and not _deepspeed_available():
        pytest.skip(DEEPSPEED_MISSING)
    step_dir, probe_out, _ = _launch(world, stage, f"{stage}_{backend}", deepspeed, saves)
    _check(world, stage, step_dir, probe_out, engine, TOL)
    if stage == "grpo":  # the comparison means something only if the groups' rewards differ
        for d in (world["run_dir"] / "grpo", step_dir):
            history = [h for h in json.loads((d / "log_history.json").read_text()) if "reward_std" in h]
            assert len(history) == GRPO_STEPS and all(h["reward_std"] > 0 and h["frac_reward_zero_std"] < 1
                                                      for h in history), history
    print(f"timings so far (s): { {k: round(v, 1) for k, v in TIMINGS.items()} }", flush=True)


def test_two_processes_match_one_with_reference_chains(world):
    """SRPO's reference-based learning (dpo_reference_weight > 0) under DDP: each rank takes its share of the step's
    seeded draw (2 ranks x 2 chains = 1 process x 4, per_batch defaulting to the per-device batch), and the term is the
    mean over the tokens of every rank's chains, so the loss and the logged reference_nll follow the 1-process run."""
    from srpo.stages import dpo
    from srpo.train_configs import DPOStageConfig

    values = dict(dpo_reference_weight=0.5)
    one = world["run_dir"] / "dpo_reference_1p"
    t0 = time.time()
    dpo.run(DPOStageConfig(step=one.name, per_device_train_batch_size=4, output_dir=str(one / "trainer"),
                           **world["dpo"], **values))
    TIMINGS["dpo_reference_1p"] = time.time() - t0
    world["ref"]["dpo_reference"] = _losses(one)
    step_dir, probe_out, _ = _launch(world, "dpo", "dpo_reference_ddp", None, values)
    _check(world, "dpo_reference", step_dir, probe_out, "DistributedDataParallel", TOL)
    want, got = ([h["reference_nll"] for h in json.loads((d / "log_history.json").read_text()) if "reference_nll" in h]
                 for d in (one, step_dir))
    assert len(want) == len(got) == DPO_STEPS
    delta = max(abs(a - b) for a, b in zip(want, got, strict=True))
    print(f"reference_nll: max |2 procs - 1 proc| = {delta:.3g}; timings (s): 1 process "
          f"{TIMINGS['dpo_reference_1p']:.0f}, 2 processes {TIMINGS['dpo_reference_ddp']:.0f}", flush=True)
    assert delta <= TOL, (want, got)


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    weights = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        weights.update(load_file(f))
    return weights


def test_zero3_dpo_killed_after_a_checkpoint_resumes_to_the_uninterrupted_run(world):
    """SIGKILL both ranks and the launcher right after DPO's first ZeRO-3 checkpoint (step 2 of 4), launch the same
    command again: the Trainer loads the sharded checkpoint (srpo's restore_full_weights is skipped for DeepSpeed) and
    steps 3-4 log the uninterrupted run's losses, ending at its weights."""
    if not _deepspeed_available():
        pytest.skip(DEEPSPEED_MISSING)
    deepspeed = "launch/deepspeed/zero3.json"
    clean = world["run_dir"] / "dpo_zero3"
    if not (clean / "manifest.json").exists():  # run alone (-k): make the uninterrupted run
        _launch(world, "dpo", "dpo_zero3", deepspeed, SAVES)
    name = "dpo_zero3_killed"
    plan = world["root"] / "kill_plan.json"
    plan.write_text(json.dumps([{"step": name, "event": "checkpoint", "after": 1, "all_ranks": True}]))
    step_dir, probe_out, proc = _launch(world, "dpo", name, deepspeed, SAVES, {"SRPO_CHAOS_PLAN": str(plan)},
                                        expect_rc0=False)
    assert proc.returncode != 0, "the chaos plan should have killed the launch"
    assert json.loads(plan.read_text())[0]["fired"], proc.stderr[-3000:]
    assert not (step_dir / "manifest.json").exists()
    checkpoints = sorted(p.name for p in (step_dir / "trainer").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2"], checkpoints
    assert list((step_dir / "trainer" / "checkpoint-2").glob("global_step2/*zero_pp_rank_1_*optim_states.pt"))

    _launch(world, "dpo", name, deepspeed, SAVES, {"SRPO_CHAOS_PLAN": str(plan)})
    resumed = [json.loads(line) for line in (probe_out / "rank0.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed if "step" in r] == [1, 2, 3, 4], "the second launch must start at step 3"
    got, want = _losses(step_dir), _losses(clean)
    assert sorted(got) == sorted(want) == list(range(1, DPO_STEPS + 1)), (got, want)
    delta = max(abs(got[k] - want[k]) for k in want)
    a, b = _weights(clean / "model"), _weights(step_dir / "model")
    assert sorted(a) == sorted(b)
    weight_delta = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    print(f"\nZeRO-3 DPO killed after step 2, resumed: max |dloss| {delta:.3g}, max |dweight| {weight_delta:.3g} "
          f"vs the uninterrupted run; resumed launch {TIMINGS[name]:.0f} s", flush=True)
    assert delta <= 1e-6, f"resumed curve {got} vs uninterrupted {want}"
    assert weight_delta <= 1e-6


def test_zero3_grpo_generates_online_across_two_processes(world):
    """GRPO under ZeRO-3 with its own generation (no fixed completions): each rank generates from the gathered
    parameters (TRL's ds3_gather_for_generation), rewards are gathered for the group baseline, and the ranks stay in
    step. The losses cannot be compared with one process here: sampling draws per rank."""
    if not _deepspeed_available():
        pytest.skip(DEEPSPEED_MISSING)
    step_dir, probe_out, _ = _launch(world, "grpo", "grpo_zero3_online", "launch/deepspeed/zero3.json",
                                     env_extra={"SRPO_GRPO_FIXED": ""})
    records = [[json.loads(line) for line in (probe_out / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    steps = [{x["step"]: x for x in recs if "step" in x} for recs in records]
    assert sorted(steps[0]) == sorted(steps[1]) == list(range(1, GRPO_STEPS + 1))
    for s in steps[0]:
        a, b = steps[0][s], steps[1][s]
        assert abs(a["fp"] - b["fp"]) <= 1e-9 * max(1.0, a["fp_abs"]), f"step {s}: parameters differ across ranks"
    stats = json.loads((step_dir / "manifest.json").read_text())["stats"]
    assert stats["judgments"] == GRPO_STEPS * 4 and stats["judge_failure_rate"] == 0.0
    completions = {json.loads(line)["completion"] for line in (step_dir / "judgments.jsonl").read_text().splitlines()}
    assert len(completions) > 4  # generated, not the four fixed texts
    print(f"\nZeRO-3 GRPO with online generation, 2 processes: {TIMINGS['grpo_zero3_online']:.0f} s", flush=True)
