"""Checks of DeepSpeed JSONs and accelerate YAMLs without launching anything (one process, CPU, seconds per file).

Used by `srpo validate` (srpo/recipe.py, for the launch config a recipe names) and by
`python -m srpo.launch_validate FILES` (srpo/launch_validate.py).

What is checked:
  DeepSpeed JSON    top-level keys against a whitelist (DeepSpeed itself ignores unknown top-level keys, so a typo
                    like `zero_optimisation` would silently train without ZeRO); transformers'
                    TrainingArguments(deepspeed=...) fill-in of "auto" values and its DeepSpeed-vs-TrainingArguments
                    mismatch checks (batch, accumulation, lr, precision); DeepSpeed's own DeepSpeedConfig parsing with
                    N emulated ranks (stage, sub-key typos, batch arithmetic); accelerate's DeepSpeedPlugin.
  accelerate YAML   accelerate's own config class (unknown keys, distributed_type), the deepspeed_config sub-keys,
                    that deepspeed_config_file exists (and validates), process/machine counts, and the CPU traps.
  recipes           (srpo/recipe.py) batch / accumulation / lr / precision of the sft and dpo sections against the
                    DeepSpeed JSON they launch with.

Every message names the file and the key. Heavy imports (transformers, deepspeed, accelerate) happen inside functions.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import tempfile
from pathlib import Path

# DeepSpeed ignores unknown top-level keys; this list is what its config parser reads (deepspeed 0.17-0.19).
# If a newer DeepSpeed adds a section you need, add it here.
DS_TOP_LEVEL_KEYS = {
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "optimizer", "scheduler",
    "fp16", "bf16", "bfloat16", "amp", "torch_autocast", "gradient_clipping", "prescale_gradients",
    "gradient_predivide_factor", "sparse_gradients", "zero_optimization", "zero_allow_untested_optimizer",
    "zero_force_ds_cpu_optimizer", "steps_per_print", "wall_clock_breakdown", "memory_breakdown", "dump_state",
    "flops_profiler", "activation_checkpointing", "aio", "comms_logger", "tensorboard", "wandb", "csv_monitor",
    "comet", "elasticity", "checkpoint", "data_types", "communication_data_type",
    "seq_parallel_communication_data_type", "data_efficiency", "curriculum_learning", "compression_training",
    "autotuning", "disable_allgather", "fp32_allreduce", "pipeline", "eigenvalue", "progressive_layer_drop",
    "sparse_attention", "quantize_training", "weight_quantization", "hybrid_engine", "compile", "timers",
    "graph_harvesting", "use_data_before_expert_parallelism", "use_node_local_storage", "nebula", "tensor_parallel",
    "zenflow", "dataloader_drop_last",
}

# accelerate launch's deepspeed_config entries (accelerate/commands/launch.py).
ACCELERATE_DS_KEYS = {
    "deepspeed_config_file", "zero_stage", "offload_optimizer_device", "offload_param_device",
    "offload_optimizer_nvme_path", "offload_param_nvme_path", "gradient_accumulation_steps", "gradient_clipping",
    "zero3_init_flag", "zero3_save_16bit_model", "deepspeed_hostfile", "deepspeed_exclusion_filter",
    "deepspeed_inclusion_filter", "deepspeed_multinode_launcher", "deepspeed_moe_layer_cls_names",
}
# With deepspeed_config_file, accelerate refuses these (they belong in the JSON).
ACCELERATE_DS_KEYS_IN_JSON = {"zero_stage", "offload_optimizer_device", "offload_param_device",
                              "offload_optimizer_nvme_path", "offload_param_nvme_path", "gradient_accumulation_steps",
                              "gradient_clipping", "zero3_save_16bit_model"}
MIXED_PRECISIONS = ("no", "fp16", "bf16", "fp8")

# Fields of a training section that DeepSpeed "auto" values are filled from, and must agree with explicit ones.
_CONSISTENCY_FIELDS = ("per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "bf16", "fp16",
                       "max_grad_norm", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon")


class LaunchConfigError(ValueError):
    """One or more problems in launch configs; the message lists each with its file and key."""


def _hint(key: str, known) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


@contextlib.contextmanager
def _isolated():
    """Undo what validation leaves behind: env vars accelerate/transformers set and transformers' global DeepSpeed
    weakref (which would make every later from_pretrained in this process think ZeRO-3 is on)."""
    env = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(env)
        try:
            from transformers.integrations.deepspeed import unset_hf_deepspeed_config

            unset_hf_deepspeed_config()
        except Exception:  # noqa: BLE001 (transformers absent or changed: nothing to undo)
            pass


def _tiny_model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1))


class _EmulatedRanks:
    """Let DeepSpeedConfig do its batch arithmetic for N ranks without torch.distributed."""

    def __init__(self, world_size: int):
        self.world_size = world_size

    def __enter__(self):
        import deepspeed.runtime.config as dsc

        self.dsc = dsc
        self.orig = dsc.dist.get_rank, dsc.dist.get_world_size
        dsc.dist.get_rank = lambda *a, **k: 0
        dsc.dist.get_world_size = lambda *a, **k: self.world_size
        return self

    def __exit__(self, *exc):
        self.dsc.dist.get_rank, self.dsc.dist.get_world_size = self.orig


def load_json(path: str | os.PathLike) -> tuple[dict | None, list[str]]:
    try:
        cfg = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None, [f"{path}: file does not exist"]
    except json.JSONDecodeError as e:
        return None, [f"{path}: not valid JSON: {e}"]
    if not isinstance(cfg, dict):
        return None, [f"{path}: must be a JSON object of DeepSpeed settings"]
    return cfg, []


def check_deepspeed(path: str | os.PathLike, *, world_size: int = 2, training: dict | None = None,
                    where: str | None = None, max_steps: int = 10) -> list[str]:
    """Problems of one DeepSpeed JSON (empty list = valid). `training`: TrainingArguments values to check it against
    (per_device_train_batch_size, gradient_accumulation_steps, learning_rate, bf16, ...), e.g. a recipe section."""
    name = str(path)
    cfg, problems = load_json(path)
    if cfg is None:
        return problems
    against = f" (against {where})" if where else ""
    for key in sorted(set(cfg) - DS_TOP_LEVEL_KEYS):
        problems.append(f"{name}: key '{key}': unknown top-level DeepSpeed key{_hint(key, DS_TOP_LEVEL_KEYS)}; "
                        "DeepSpeed would silently ignore it")
    zero = cfg.get("zero_optimization", {})
    if not isinstance(zero, dict):
        problems.append(f"{name}: key 'zero_optimization' must be an object, e.g. {{\"stage\": 2}}")
        zero = {}
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        problems.append(f"{name}: key 'zero_optimization.stage' must be 0, 1, 2 or 3; got {stage!r}")
    enabled = [k for k in ("fp16", "bf16") if isinstance(cfg.get(k), dict) and cfg[k].get("enabled") is True]
    if len(enabled) == 2:
        problems.append(f"{name}: keys 'fp16.enabled' and 'bf16.enabled' are both true; enable at most one "
                        "(or set both to \"auto\" to follow the recipe's bf16/fp16)")
    if problems:
        return problems  # the layers below would only repeat these less clearly

    training = dict(training or {})
    hf_fields = {k: training[k] for k in _CONSISTENCY_FIELDS if training.get(k) is not None}
    hf_fields.setdefault("per_device_train_batch_size", 2)
    filled = None
    with _isolated(), tempfile.TemporaryDirectory() as tmp:
        # 1) transformers: fill "auto" values from TrainingArguments and collect mismatches.
        try:
            from transformers import TrainingArguments

            model = _tiny_model()
            args = TrainingArguments(output_dir=tmp, deepspeed=json.loads(json.dumps(cfg)), max_steps=max_steps,
                                     report_to="none", use_cpu=True, **hf_fields)
            hf = args.hf_deepspeed_config
            hf.trainer_config_finalize(args, model, max_steps)
            filled = json.loads(json.dumps(hf.config))
        except Exception as e:  # noqa: BLE001
            problems.append(f"{name}{against}: [transformers] {one_line(e)}")
        # 2) DeepSpeed's own parser, with the batch arithmetic done for world_size ranks.
        if filled is not None:
            try:
                import deepspeed.runtime.config as dsc

                if isinstance(filled.get("train_batch_size"), int) and cfg.get("train_batch_size") in (None, "auto"):
                    # transformers filled it for world size 1 (this process); scale to the emulated world
                    filled["train_batch_size"] *= world_size
                with _EmulatedRanks(world_size):
                    dsc.DeepSpeedConfig(filled)
            except ImportError:
                problems.append(f"{name}: [deepspeed] not installed: pip install deepspeed (or `srpo[deepspeed]`)")
            except Exception as e:  # noqa: BLE001
                problems.append(f"{name}{against}: [deepspeed, world size {world_size}] {one_line(e)}")
        # 3) accelerate's plugin (what `accelerate launch` with this file builds).
        try:
            from accelerate.utils import DeepSpeedPlugin

            DeepSpeedPlugin(hf_ds_config=json.loads(json.dumps(cfg)))
        except Exception as e:  # noqa: BLE001
            problems.append(f"{name}: [accelerate] {one_line(e)}")
    return problems


def one_line(e: Exception) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:1200]}"


def resolve_near(path: str, base: Path) -> Path | None:
    """A relative path as accelerate would read it (from the cwd), else relative to a parent of `base`."""
    p = Path(path)
    if p.is_absolute():
        return p if p.exists() else None
    if p.exists():
        return p
    for parent in base.resolve().parents:
        if (parent / p).exists():
            return parent / p
    return None


def read_accelerate(path: str | os.PathLike) -> tuple[dict | None, list[str]]:
    import yaml

    name = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        return None, [f"{name}: file does not exist"]
    except yaml.YAMLError as e:
        return None, [f"{name}: not valid YAML: {e}"]
    if not isinstance(raw, dict):
        return None, [f"{name}: must be a mapping of accelerate settings"]
    return raw, []


def check_accelerate(path: str | os.PathLike, *, follow_deepspeed: bool = True) -> list[str]:
    """Problems of one accelerate config YAML (empty list = valid)."""
    name = str(path)
    raw, problems = read_accelerate(path)
    if raw is None:
        return problems
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import DistributedType

    known = set(ClusterConfig.__dataclass_fields__)
    for key in sorted(set(raw) - known):
        problems.append(f"{name}: key '{key}': unknown accelerate config key{_hint(key, known)}")
    dtypes = [d.value for d in DistributedType]
    dtype = raw.get("distributed_type", "NO")
    if dtype not in dtypes:
        problems.append(f"{name}: key 'distributed_type': {dtype!r} is not one of {dtypes}{_hint(str(dtype), dtypes)}")
    mp = raw.get("mixed_precision", "no")
    if mp not in MIXED_PRECISIONS:
        problems.append(f"{name}: key 'mixed_precision': {mp!r} is not one of {list(MIXED_PRECISIONS)}")
    nproc, nmach, rank = raw.get("num_processes", 1), raw.get("num_machines", 1), raw.get("machine_rank", 0)
    for key, value, low in (("num_processes", nproc, 1), ("num_machines", nmach, 1), ("machine_rank", rank, 0)):
        if not isinstance(value, int) or value < low:
            problems.append(f"{name}: key '{key}' must be an integer >= {low}; got {value!r}")
    if not problems:
        if rank >= nmach:
            problems.append(f"{name}: key 'machine_rank' ({rank}) must be < num_machines ({nmach})")
        if nproc % nmach:
            problems.append(f"{name}: key 'num_processes' ({nproc}) is the TOTAL over all machines and must be a "
                            f"multiple of num_machines ({nmach})")
        if nmach > 1 and not raw.get("main_process_ip"):
            problems.append(f"{name}: key 'main_process_ip' is required when num_machines > 1")
    if dtype == "MULTI_CPU" and nproc > 1 and "mpirun_config" not in raw:
        problems.append(f"{name}: key 'distributed_type': MULTI_CPU without mpirun starts ONE process; for several "
                        "processes on one machine use MULTI_GPU here and `use_cpu: true` in the step config "
                        "(see docs/distributed.md)")
    if dtype == "DEEPSPEED" and raw.get("use_cpu"):
        problems.append(f"{name}: key 'use_cpu': true with DEEPSPEED sets ACCELERATE_USE_CPU, which silently turns "
                        "DeepSpeed into plain DDP (and crashes ZeRO-3); set use_cpu in the step config instead")
    ds = raw.get("deepspeed_config") or {}
    if ds and not isinstance(ds, dict):
        problems.append(f"{name}: key 'deepspeed_config' must be a mapping")
        ds = {}
    if ds and dtype != "DEEPSPEED":
        problems.append(f"{name}: key 'deepspeed_config' is set but distributed_type is {dtype!r}, not DEEPSPEED")
    for key in sorted(set(ds) - ACCELERATE_DS_KEYS):
        problems.append(f"{name}: key 'deepspeed_config.{key}': unknown{_hint(key, ACCELERATE_DS_KEYS)}")
    if dtype == "DEEPSPEED" and not ds:
        problems.append(f"{name}: key 'deepspeed_config' is required with distributed_type DEEPSPEED "
                        "(give deepspeed_config_file: launch/deepspeed/<stage>.json)")
    file = ds.get("deepspeed_config_file")
    if file:
        clash = sorted(set(ds) & ACCELERATE_DS_KEYS_IN_JSON)
        for key in clash:
            problems.append(f"{name}: key 'deepspeed_config.{key}' cannot be combined with deepspeed_config_file "
                            "(accelerate refuses it); set it in the JSON")
        if "mixed_precision" in raw:
            # accelerate launch passes it on and the DeepSpeed plugin then stops every rank ("the following accelerate
            # config variables will be ignored"), whatever its value: measured on a GPU with zero3.yaml.
            problems.append(f"{name}: key 'mixed_precision' cannot be combined with deepspeed_config_file (accelerate "
                            "stops at launch); remove it: the JSON's bf16/fp16 'auto' follow the step config's bf16")
        found = resolve_near(file, Path(path).parent)
        if found is None:
            problems.append(f"{name}: key 'deepspeed_config.deepspeed_config_file': {file} does not exist "
                            "(accelerate reads it relative to the directory you launch from: the repository root)")
        elif follow_deepspeed:
            problems += check_deepspeed(found, world_size=nproc if isinstance(nproc, int) else 2, where=name)
            cfg, _ = load_json(found)
            for prec in ("bf16", "fp16"):
                value = (cfg or {}).get(prec, {}).get("enabled") if isinstance((cfg or {}).get(prec), dict) else None
                if value is True and mp != prec:
                    problems.append(f"{name}: key 'mixed_precision' is {mp!r} but {found} sets '{prec}.enabled': "
                                    f"true; make them agree (or use \"auto\" in the JSON)")
    if not problems and dtype in dtypes:
        try:
            ClusterConfig.from_yaml_file(str(path))
        except Exception as e:  # noqa: BLE001
            problems.append(f"{name}: [accelerate] {one_line(e)}")
    return problems


def accelerate_deepspeed_file(path: str | os.PathLike) -> Path | None:
    raw, _ = read_accelerate(path)
    file = ((raw or {}).get("deepspeed_config") or {}).get("deepspeed_config_file")
    return resolve_near(file, Path(path).parent) if file else None


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def machine_problems(path: str) -> list[str]:
    """What stops an accelerate config from running on THIS machine (GPU count, GPU-only distributed types); the
    preflight of `srpo run`, before anything is launched."""
    import yaml

    try:
        cfg = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        return [f"key 'run.run_accelerate_config': {path} does not exist (a relative path is read from the directory "
                "you run srpo from); the shipped ones are in launch/accelerate/"]
    import torch

    wanted, gpus = int(cfg.get("num_processes", 1)), torch.cuda.device_count()
    on_cpu = cfg.get("use_cpu") or cfg.get("distributed_type") == "MULTI_CPU"
    if not on_cpu and gpus and wanted > gpus * int(cfg.get("num_machines", 1)):
        return [f"{path} asks for {wanted} processes but this machine has {gpus} GPU(s); set num_processes: {gpus} "
                "(or run on a machine with more GPUs)"]
    if not on_cpu and not gpus and cfg.get("distributed_type") not in (None, "NO", "MULTI_GPU", "DEEPSPEED"):
        return [f"{path} needs GPUs ({cfg.get('distributed_type')}) and this machine has none"]
    return []
