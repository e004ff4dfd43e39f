"""Configs of the training steps: TRL's SFTConfig / DPOConfig plus the fields srpo adds (where to read, what to train).

Importing this module imports TRL (seconds); only the training steps and the driver do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig, GRPOConfig, SFTConfig


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
        "Regex of the modules LoRA wraps; the default hits the language model only (`language_model`, Idefics3's "
        "`text_model`), never the vision tower.",
        default=r".*(language_model|text_model).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)")
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
class TrainerDefaultsMixin:
    """TRL defaults that do not suit srpo's steps (tiny models on CPU, resumable runs), declared once for all three."""

    activation_checkpointing: bool | None = _help("Trade compute for memory (on for 7B models, off for tiny ones).",
                                                  default=False)
    gradient_checkpointing: bool | None = _help("Deprecated alias of activation_checkpointing.", default=None)
    logging_steps: float = _help("Log every N steps.", default=1)
    save_steps: float = _help("Checkpoint every N steps (resume point after a kill).", default=50)
    save_total_limit: int | None = _help("Keep at most this many checkpoints.", default=2)
    report_to: None | str | list[str] = _help("Trackers: none, tensorboard, wandb, trackio.", default="none")


@dataclass
class SFTStageConfig(ModelArgsMixin, TrainerDefaultsMixin, SFTConfig):
    model_dir: str = _help("The model to fine-tune: a local HF folder (resolved by the driver from run_model).",
                           default="")
    # TRL defaults that do not suit VLM chains on small machines.
    max_length: int | None = _help("Truncate sequences to this many tokens; None for VLMs (images expand).",
                                   default=None)

    def __post_init__(self):
        self._check_model_args()
        super().__post_init__()


@dataclass
class DPOStageConfig(ModelArgsMixin, TrainerDefaultsMixin, DPOConfig):
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


@dataclass
class GRPOStageConfig(ModelArgsMixin, TrainerDefaultsMixin, GRPOConfig):
    """One block of online RL (TRL GRPOTrainer) from the current policy, rewarded by one of srpo's judges."""

    policy_dir: str = _help("The policy to improve (a step folder of this run); the self and dream judges' model, "
                            "frozen at this step's start.", default="")
    grpo_judge: dict | str | None = _help(
        "The judge section (srpo.configs.JudgeArgs keys: judge_backend, judge_model, ...), which the driver copies "
        "from the recipe's `judge:`; a JSON object on the command line. Default: the self-judge.", default=None)
    grpo_prompt_set: str = _help("Which prompts: 'auto' (the data folder's RL prompts when it has any, else the SFT "
                                 "training prompts), 'rl' or 'train' (as sample_prompt_set).", default="auto")
    grpo_safety_weight: float = _help("Weight of the judge's safety score in the reward.", default=1.0)
    grpo_effectiveness_weight: float = _help("Weight of the judge's effectiveness score.", default=1.0)
    grpo_awareness_weight: float = _help("Weight of risk awareness (rule and self judges measure it).", default=0.5)
    grpo_format_weight: float = _help("Weight of chain validity (the completion parses as the seven-step chain): no "
                                      "judge needed.", default=0.0)
    grpo_consistency_weight: float = _help(
        "Weight of step consistency (srpo/judges/rewards.py: the combined reading and the answer mention what the "
        "visual reading names, the strategy refuses iff the answer refuses, risk 'none' iff plain help).",
        default=0.0)
    grpo_length_weight: float = _help("Weight of the length guard: 1 up to grpo_max_tokens completion tokens, then "
                                      "down to 0 at twice that.", default=0.0)
    grpo_max_tokens: int = _help("The length guard's budget in tokens; 0 = max_completion_length.", default=0)
    # TRL defaults that do not suit this step.
    num_generations: int | None = _help("Completions per prompt (the group GRPO normalises over).", default=4)
    max_completion_length: int | None = _help("Generation budget per completion (the sampling step's 96).",
                                              default=96)
    per_device_train_batch_size: int = _help("Completions per device per micro-batch (a multiple of "
                                             "num_generations keeps groups whole).", default=8)
    learning_rate: float = _help("Learning rate.", default=1e-5)
    num_train_epochs: float = _help("Passes over the prompts (max_steps wins when set).", default=1.0)
    max_length: int | None = _help("Unused by GRPO (prompts are not truncated: images expand).", default=None)

    def __post_init__(self):
        import json

        self._check_model_args()
        if isinstance(self.grpo_judge, str):
            try:
                self.grpo_judge = json.loads(self.grpo_judge) if self.grpo_judge.strip() else None
            except json.JSONDecodeError as e:
                raise ValueError(f"grpo_judge must be a mapping of judge keys (a JSON object on the command line); "
                                 f"got {self.grpo_judge[:80]!r}: {e}") from None
        if self.grpo_judge is not None and not isinstance(self.grpo_judge, dict):
            raise ValueError(f"grpo_judge must be a mapping of judge keys; got {type(self.grpo_judge).__name__}")
        if self.grpo_prompt_set not in ("auto", "rl", "train"):
            raise ValueError(f"grpo_prompt_set must be one of auto, rl, train; got {self.grpo_prompt_set!r}")
        weights = {n: getattr(self, n) for n in ("grpo_safety_weight", "grpo_effectiveness_weight",
                                                  "grpo_awareness_weight", "grpo_format_weight",
                                                  "grpo_consistency_weight", "grpo_length_weight")}
        bad = [n for n, w in weights.items() if not w >= 0]
        if bad:
            raise ValueError(f"{bad[0]} must be >= 0 (0 turns that reward off); got {weights[bad[0]]}")
        if not any(weights.values()):
            raise ValueError("every grpo_*_weight is 0: the reward would be constant and GRPO would learn nothing")
        if self.grpo_max_tokens < 0:
            raise ValueError(f"grpo_max_tokens must be >= 0 (0 = max_completion_length); got {self.grpo_max_tokens}")
        # TRL derives these two from the number of processes: a config written by one process for another count (the
        # driver's, for `accelerate launch`) must let the launched ranks derive them again.
        self._derived = [n for n in ("generation_batch_size", "steps_per_generation") if getattr(self, n) is None]
        if self.num_generations is not None and self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2: GRPO's advantage compares completions of one prompt; "
                             f"got {self.num_generations}")
        super().__post_init__()

    def derived_fields(self) -> list[str]:
        """Fields TRL derived from this process's world size (srpo.steps.launch_values leaves them out)."""
        return list(getattr(self, "_derived", []))

    def judge_args(self):
        """The judge section as srpo.configs.JudgeArgs (checked like the judge step's)."""
        from srpo.cli_util import build_from_dict
        from srpo.configs import JudgeArgs

        values = {k: v for k, v in (self.grpo_judge or {}).items() if k not in ("run_dir", "step", "seed")}
        return build_from_dict(JudgeArgs, {**values, "run_dir": self.run_dir, "step": self.step, "seed": self.seed,
                                           "policy_dir": self.policy_dir, "data_dir": self.data_dir},
                               "grpo_judge")
