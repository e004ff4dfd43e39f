"""Configs of the training steps: TRL's SFTConfig / DPOConfig plus the fields srpo adds (where to read, what to train).

Importing this module imports TRL (seconds); only the training steps and the driver do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig, SFTConfig


def _help(text: str, **kw):
    return field(metadata={"help": text}, **kw)


@dataclass
class ModelArgsMixin:
    """Fields shared by every step that loads a policy for training (declared once, used by both configs)."""

    run_dir: str = _help("The run folder (runs/<name>).", default="runs/tiny-demo")
    step: str = _help("This step's folder inside the run.", default="")
    data_dir: str = _help("The built data folder (pairs.jsonl + images).", default="")
    use_lora: bool = _help("Train LoRA adapters instead of all weights.", default=False)
    lora_r: int = _help("LoRA rank.", default=16)
    lora_alpha: int = _help("LoRA alpha.", default=32)
    lora_target_modules: str = _help(
        "Regex of the modules LoRA wraps; the default hits the language model only, never the vision tower.",
        default=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)")
    load_in_4bit: bool = _help("QLoRA: load the base in 4-bit NF4 via bitsandbytes (needs use_lora).", default=False)
    freeze_vision_tower: bool = _help("Keep the vision tower frozen (the papers' practice).", default=True)
    trust_remote_code: bool = _help("Run model code shipped with the checkpoint. Off unless you trust it.",
                                    default=False)
    # TRL turns bf16 on when it is unset, even on CPU (bf16 autocast there; bf16 weights under DeepSpeed "auto"). That
    # made the step-1 gradients depend on how rows are split across ranks by ~1e-3 relative (2 ranks x 2 rows vs 1 x 4:
    # loss curves 1e-4 apart, 1e-6 in fp32), and disagreed with launch_validate, which reads an unset bf16 as fp32.
    bf16: bool | None = _help("bf16 mixed precision. Off unless set (TRL's default is on): the 7B recipes set it.",
                              default=False)

    def _check_model_args(self):
        if self.load_in_4bit and not self.use_lora:
            raise ValueError("load_in_4bit (QLoRA) trains adapters only: set use_lora: true as well")
        if self.lora_r < 1:
            raise ValueError(f"lora_r must be >= 1; got {self.lora_r}")


@dataclass
class SFTStageConfig(ModelArgsMixin, SFTConfig):
    model_dir: str = _help("The model to fine-tune: a local HF folder (resolved by the driver from run_model).",
                           default="")
    # TRL defaults that do not suit VLM chains on small machines.
    max_length: int | None = _help("Truncate sequences to this many tokens; None for VLMs (images expand).",
                                   default=None)
    activation_checkpointing: bool | None = _help("Trade compute for memory (on for 7B models, off for tiny ones).",
                                                  default=False)
    gradient_checkpointing: bool | None = _help("Deprecated alias of activation_checkpointing.", default=None)
    logging_steps: float = _help("Log every N steps.", default=1)
    save_steps: float = _help("Checkpoint every N steps (resume point after a kill).", default=50)
    save_total_limit: int | None = _help("Keep at most this many checkpoints.", default=2)
    report_to: None | str | list[str] = _help("Trackers: none, tensorboard, wandb, trackio.", default="none")

    def __post_init__(self):
        self._check_model_args()
        super().__post_init__()


@dataclass
class DPOStageConfig(ModelArgsMixin, DPOConfig):
    policy_dir: str = _help("The policy to improve (a step folder of this run).", default="")
    ref_dir: str = _help("The frozen reference policy (a step folder of this run).", default="")
    pairs_dir: str = _help("The pairs step folder (pairs.jsonl).", default="")
    nll_weight: float = _help("SRPO's λ: weight of an NLL term on the chosen chain, added through TRL's "
                              "loss_type=['sigmoid', 'sft'] and loss_weights. 0 disables it.", default=0.0)
    dpo_reference_weight: float = _help(
        "SRPO's reference-based learning, λ: adds λ · (mean token NLL under the policy of teacher chains from the "
        "data folder's SFT split, prompt masked as SFT masks it) to every training step's loss. 0 is plain DPO.",
        default=0.0)
    dpo_reference_per_batch: int | None = _help(
        "Teacher chains beside each per-device batch of pairs when dpo_reference_weight > 0, drawn per optimizer step "
        "(seeded) and shared out across processes like the pairs. Unset: per_device_train_batch_size.", default=None)
    max_length: int | None = _help("Truncate sequences to this many tokens; None for VLMs.", default=None)
    activation_checkpointing: bool | None = _help("Trade compute for memory.", default=False)
    gradient_checkpointing: bool | None = _help("Deprecated alias of activation_checkpointing.", default=None)
    logging_steps: float = _help("Log every N steps.", default=1)
    save_steps: float = _help("Checkpoint every N steps.", default=50)
    save_total_limit: int | None = _help("Keep at most this many checkpoints.", default=2)
    report_to: None | str | list[str] = _help("Trackers: none, tensorboard, wandb, trackio.", default="none")

    def __post_init__(self):
        self._check_model_args()
        if self.nll_weight < 0:
            raise ValueError(f"nll_weight must be >= 0; got {self.nll_weight}")
        if not self.dpo_reference_weight >= 0:  # also refuses NaN
            raise ValueError(f"dpo_reference_weight must be >= 0 (SRPO's λ; 0 turns reference chains off); got "
                             f"{self.dpo_reference_weight}")
        if self.dpo_reference_per_batch is not None and self.dpo_reference_per_batch < 1:
            raise ValueError(f"dpo_reference_per_batch must be >= 1, or unset for per_device_train_batch_size; got "
                             f"{self.dpo_reference_per_batch}")
        if self.beta <= 0:
            # DPO's beta scales the implicit reward: 0 learns nothing, a negative beta prefers the rejected answer.
            raise ValueError(f"beta must be > 0 (DPO's KL strength, typically 0.05-0.5); got {self.beta}")
        if self.nll_weight > 0:
            # SRPO/RPO: L = L_DPO + λ·NLL(chosen), expressed with TRL's own multi-loss support.
            self.loss_type = ["sigmoid", "sft"]
            self.loss_weights = [1.0, self.nll_weight]
        super().__post_init__()
