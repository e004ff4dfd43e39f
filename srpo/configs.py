"""Typed configs for the steps that do not train (training steps subclass TRL's configs in train_configs.py).

Every field has help text; names are flat and prefixed by their stage; `__post_init__` says how to fix a bad value.
A recipe YAML has one section per stage (see recipes/tiny/demo.yaml); each section is parsed into its dataclass with
unknown keys rejected by name.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Literal


def _help(text: str, **kw):
    return field(metadata={"help": text}, **kw)


@functools.cache
def field_types(cls) -> dict:
    """Each init field's resolved type: annotations are strings here (postponed evaluation), so `f.type` is not."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def literal_choices(tp) -> tuple | None:
    """The allowed values of a Literal type (or of an Optional Literal, plus None); None for any other type."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = typing.get_args(tp)
        literals = [m for m in members if typing.get_origin(m) is Literal]
        if literals and all(m is type(None) or m in literals for m in members):
            return tuple(c for m in literals for c in typing.get_args(m)) + ((None,) if type(None) in members else ())
    return None


def check_choices(self) -> None:
    """Refuse a value outside its field's Literal choices: one check for every choice field, named in the message."""
    for name, tp in field_types(type(self)).items():
        choices = literal_choices(tp)
        value = getattr(self, name)
        if choices is not None and value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        hint = f" — did you mean {value / 100:g}?" if 1 < value <= 100 else ""
        raise ValueError(f"{name} must be in [0, 1]; got {value}{hint}")


def as_mapping(name: str, value, example: str) -> dict:
    """A mapping-valued field: a dict from YAML, or a JSON object from the command line ("" = none)."""
    if isinstance(value, str):
        try:
            value = json.loads(value or "{}")
        except json.JSONDecodeError as e:
            raise ValueError(f"{name} must be a mapping (a JSON object on the command line); got {value[:80]!r}: "
                             f"{e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a mapping of key: value, e.g. {example}; got {type(value).__name__}")
    return value


TRACKERS = ("none", "tensorboard", "wandb", "trackio")
OBSERVE_QUERY = "What is in this picture?"  # the image-only pass's question (self-judge and observed samples)


@dataclass
class StepArgs:
    """Where a step reads and writes. The driver fills these; by hand, point them at a run folder."""

    run_dir: str = _help("The run folder (runs/<name>).", default="runs/tiny-demo")
    step: str = _help("This step's folder inside the run, e.g. 'iter_001/samples'.", default="")
    seed: int = _help("Seed for everything random in this step.", default=0)


@dataclass
class RunArgs:
    run_name: str = _help("Name of the run; its folder is <run_runs_dir>/<run_name>.", default="tiny-demo")
    run_runs_dir: str = _help("Folder holding run folders.", default="runs")
    run_seed: int = _help("Base seed; each step derives its own from it.", default=0)
    run_iterations: int = _help("Number of RLAIF iterations T.", default=1)
    run_model: str = _help("Base model: a local HF folder, or 'tiny:llava' to build the tiny test model offline.",
                           default="tiny:llava")
    run_image_processor: str | dict = _help(
        "Settings of the base model's image processor for the whole run, written into base/model once: pixel "
        "budgets such as Qwen's {max_pixels: 1003520, min_pixels: 200704}, Idefics3's {do_image_splitting: false}, "
        "Gemma 3's {do_pan_and_scan: true}. A key the image processor ignores is refused.", default_factory=dict)
    run_accelerate_config: str | None = _help(
        "An accelerate config file (launch/accelerate/*.yaml). When set, training steps run as "
        "`accelerate launch --config_file <it> -m srpo.stages.<step>`; when unset they run in this process.",
        default=None)
    run_shard_generation: bool = _help(
        "With run_accelerate_config: also run sampling and evaluation under it, their prompts sharded across its "
        "processes (one GPU each) and gathered in a fixed order.", default=True)
    run_rl_algorithm: Literal["dpo", "grpo"] = _help(
        "The RL algorithm of an iteration: 'dpo' (iterative DPO, DREAM's loop: sample -> judge -> pairs -> dpo) or "
        "'grpo' (online: a block of GRPO steps, the `grpo:` section, rewarded by the `judge:` section's judge). "
        "Either way the iteration is then evaluated and gated.", default="dpo")
    run_reference_policy: Literal["sft", "previous"] = _help(
        "DPO reference: 'sft' (the SFT model) or 'previous' (last accepted iterate).", default="previous")
    run_report_to: str = _help("Trackers for the iteration loop, comma-separated: none, tensorboard, wandb (offline "
                               "without WANDB_API_KEY), trackio. Training curves use each step's report_to.",
                               default="none")
    run_eval_base: bool = _help("Also evaluate the base model before SFT (base/eval), for the report.", default=True)
    run_judge_validation: list[str] = _help(
        "Validation records of the run's judges: files written by `srpo judge-eval --json` (each names its judge, "
        "e.g. 'openai:MODEL', and its agreement with human labels). The report shows them beside the judge's scores, "
        "and says so when the training judge has none.", default_factory=list)

    @property
    def trackers(self) -> list[str]:
        return [b.strip() for b in self.run_report_to.split(",") if b.strip() and b.strip() != "none"]

    def __post_init__(self):
        check_choices(self)
        unknown = [b for b in self.trackers if b not in TRACKERS]
        if unknown:
            raise ValueError(f"run_report_to: unknown tracker(s) {unknown}; choose from {', '.join(TRACKERS)} "
                             "(comma-separated), or none")
        if self.run_iterations < 1:
            raise ValueError(f"run_iterations must be >= 1; got {self.run_iterations}")
        if "/" in self.run_name or not self.run_name:
            raise ValueError(f"run_name must be a plain folder name; got {self.run_name!r}")
        self.run_image_processor = as_mapping("run_image_processor", self.run_image_processor,
                                              "{max_pixels: 1003520}")


@dataclass
class BuildArgs(StepArgs):
    build_source: str = _help("Where pairs come from: 'world' (the synthetic world: training combinations + "
                              "held-out ones as the eval split), 'tiny' (all world combinations, random split) or a "
                              "source format name "
                              "(siuo, vlguard, mossbench, figstep, mm_harmfulbench, generic).", default="tiny")
    build_source_root: str | None = _help("Dataset root for file sources; image paths are confined to it.",
                                          default=None)
    build_source_options: str | dict = _help(
        "Options of the source's converter, e.g. {split: train} for VLGuard's train.json and train/ images, or "
        "{file: ..., image_dir: ...} for files kept elsewhere under the root; `srpo validate` lists each source's "
        "options when one is unknown. Paths stay inside build_source_root.", default_factory=dict)
    build_teacher: Literal["offline", "openai", "hf"] = _help(
        "Who writes the chains: 'offline' (deterministic, no model), 'openai' (any OpenAI-compatible endpoint) or "
        "'hf' (a local image-text-to-text model folder).", default="offline")
    build_teacher_model: str | None = _help("The teacher model: the served model name for 'openai', a local model "
                                            "folder (or 'tiny:llava') for 'hf'. Unused by 'offline'.", default=None)
    build_teacher_base_url: str | None = _help("Base URL of the OpenAI-compatible server, e.g. "
                                               "http://127.0.0.1:8000/v1 (default: https://api.openai.com/v1).",
                                               default=None)
    build_teacher_api_key_env: str = _help("NAME of the environment variable holding the API key (never the key "
                                           "itself: configs end up in manifests).", default="OPENAI_API_KEY")
    build_teacher_concurrency: int = _help("Requests in flight at once ('openai').", default=8)
    build_teacher_max_reasks: int = _help("Times an answer that does not parse as a chain is sent back for a fix "
                                          "before the pair is failed ('openai').", default=2)
    build_teacher_max_retries: int = _help("Retries per request on timeouts, 429, 5xx and malformed bodies "
                                           "('openai').", default=5)
    build_teacher_timeout_s: float = _help("Seconds to wait for one answer before retrying ('openai').",
                                           default=60.0)
    build_teacher_max_tokens: int = _help("Answer budget in tokens per chain ('openai' max_tokens, 'hf' "
                                          "max_new_tokens).", default=1024)
    build_teacher_hints: bool = _help("Tell the teacher the pair's label and category (and safety warning) in the "
                                      "prompt; false makes it judge on its own.", default=True)
    build_batch_size: int = _help("Pairs per teacher batch; each finished batch is appended to the partial file, "
                                  "so a killed build loses at most one batch.", default=32)
    build_cache_dir: str | None = _help("Teacher answer cache (content-addressed; shared safely between runs). "
                                        "Default: <run_dir>/.cache/teacher, outside the data step's folder so a "
                                        "config change that restarts the step does not throw paid answers away.",
                                        default=None)
    build_strict: bool = _help("Stop on the first bad source row or failed chain instead of quarantining/failing "
                               "it and going on.", default=False)
    build_require_images: bool = _help("Quarantine rows whose image is missing or broken; false keeps them as "
                                       "text-only pairs.", default=True)
    build_twins: Literal["none", "source", "teacher"] = _help(
        "Benign twins: 'none', 'source' (the source's own matched set, via twin_of) or 'teacher' (source twins, plus "
        "a teacher-written harmless query on the same image for every unsafe pair still without one).",
        default="source")
    build_max_pairs: int = _help("Use only the first N converted pairs (0 = all); for trials and budgets.",
                                 default=0)
    build_chains_for_eval: bool = _help("Have the teacher write chains for eval-split pairs too (reference chains). "
                                        "Off: only training pairs get chains, eval pairs cost no teacher calls and "
                                        "the world's held-out combinations stay unseen by the teacher.", default=True)
    build_eval_fraction: float = _help("Fraction of pairs held out as the eval split (stratified by label, seeded; "
                                       "only for pairs whose source gives no split).", default=0.25)
    build_dev_fraction: float = _help("Fraction of the eval split's groups that are *dev* (every decision: the gate, "
                                      "early stopping, tuning); the rest are *test* (reported, never decided on). "
                                      "Grouped: near-copies (scenes of one world combination, twins of one source "
                                      "item) fall on one side; stratified by label, seeded. A source's own split "
                                      "names win (dev/val/validation -> dev, test -> test).", default=0.5)
    build_world_captions: int = _help("World source: caption rows per object mixed into SFT (the base model's own "
                                      "task, replayed so chain SFT keeps its visual grounding).", default=0)
    build_world_counterfactuals: int = _help("World source: text-only chains about made-up objects per hazard x "
                                             "intent cell, mixed into SFT (object names that carry no information "
                                             "teach the combined reading by hazard).", default=0)
    build_world_mrd: int = _help("World source: scenes per SFT combination (never an RL or held-out one) whose DREAM "
                                 "judge tasks the world's teacher answers, mixed into SFT in the judge's own prompts "
                                 "and answer formats: the three MRD passes, verification (true and corrupted "
                                 "observations), the global score and the observation score of the training chain and "
                                 "of a corrupted response. Text-only rows, the same for many combinations, are kept "
                                 "this many times each. 0 = none (the SFT mix as before).", default=0)
    build_max_text_chars: int = _help("Quarantine a row whose query, reference_answer or safety_warning is longer "
                                      "than this many characters (0 = no cap): a first check that needs no "
                                      "tokenizer. Text is never cut.", default=20_000)
    build_model_dir: str = _help("The model whose processor measures each row in tokens (prompt with its chat "
                                 "template + image tokens + reference_answer + safety_warning); relative to run_dir, "
                                 "or absolute; '' = no token check. Default: the run's base model, which srpo run "
                                 "registers before this step. A folder that does not exist skips the token check.",
                                 default="base/model")
    build_max_prompt_tokens: int = _help("Quarantine a row that measures more tokens than this (0 = the model's "
                                         "max_position_embeddings). Needs build_model_dir.", default=0)
    build_rl_source: str | None = _help(
        "A prompt-only .jsonl file for the RL split (one {\"id\"?, \"image\", \"query\"} per line; image relative "
        "to the file's folder, never escaping it): what the loop samples on. Written to data/rl_prompts.jsonl with no "
        "label and no chain; any other field of a row (a label included) is ignored, never stored. Bad rows are "
        "quarantined like a source's.", default=None)
    build_world_size: Literal["small", "large"] = _help(
        "World source: which world (srpo/world/scenes.py WORLDS). 'small': 18 objects x 5 intents, 18 held-out "
        "combinations (about 3 unsafe per dev/test side). 'large': 26 objects x 8 intents, 32 unsafe and 64 benign "
        "held out (16 / 32 per side), fewer scenes per combination. Pair it with run_model 'tiny:world-base-large'.",
        default="small")
    build_world_rl_fraction: float = _help(
        "World source: fraction of the training combinations (seeded, stratified by label, every hazard x intent cell "
        "kept in SFT) that become RL prompts only: fresh scenes and their query under opaque ids, no label, no chain, "
        "not in SFT. 0 = none (every training combination is SFT data, as before).", default=0.0)
    build_world_eval_scenes: int = _help(
        "World source: scenes per held-out combination, dev and test alike (0 = the world's own: 5 small, 3 large). "
        "More scenes give the gate more items per dev cluster, so a change of a few points can become evidence; the "
        "first scenes of a combination are the same whatever the count.", default=0)
    build_world_rl_scenes: int = _help(
        "World source: scenes per RL combination (0 = the world's own: 6 small, 4 large). RL prompts carry no label "
        "and cost nothing to make, so more scenes give the loop more prompts and pairs per iteration; the first "
        "scenes of a combination are the same whatever the count, and SFT does not rerun for them.", default=0)

    def __post_init__(self):
        import re

        check_choices(self)
        _check_fraction("build_eval_fraction", self.build_eval_fraction)
        _check_fraction("build_dev_fraction", self.build_dev_fraction)
        _check_fraction("build_world_rl_fraction", self.build_world_rl_fraction)
        if self.build_world_rl_fraction and self.build_source != "world":
            raise ValueError("build_world_rl_fraction applies to build_source 'world' only; got "
                             f"{self.build_source!r} (give another source's RL prompts as build_rl_source)")
        if self.build_world_rl_fraction >= 1:
            raise ValueError("build_world_rl_fraction must be < 1: SFT needs training combinations with chains; got "
                             f"{self.build_world_rl_fraction}")
        if self.build_world_eval_scenes < 0:
            raise ValueError(f"build_world_eval_scenes must be >= 0 (0 = the world's own); got "
                             f"{self.build_world_eval_scenes}")
        if self.build_world_rl_scenes < 0:
            raise ValueError(f"build_world_rl_scenes must be >= 0 (0 = the world's own); got "
                             f"{self.build_world_rl_scenes}")
        if self.build_world_rl_scenes and not self.build_world_rl_fraction:
            raise ValueError("build_world_rl_scenes needs RL combinations: set build_world_rl_fraction > 0 (got "
                             f"{self.build_world_rl_fraction})")
        if self.build_world_eval_scenes and self.build_source != "world":
            raise ValueError("build_world_eval_scenes applies to build_source 'world' only; got "
                             f"{self.build_source!r}")
        if self.build_world_size != "small" and self.build_source != "world":
            raise ValueError(f"build_world_size applies to build_source 'world' only; got {self.build_source!r}")
        for name in ("build_world_captions", "build_world_counterfactuals", "build_world_mrd"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
            if getattr(self, name) and self.build_source != "world":
                raise ValueError(f"{name} applies to build_source 'world' only; got {self.build_source!r}")
        self.build_source_options = as_mapping("build_source_options", self.build_source_options, "{split: train}")
        if self.build_source_options and self.build_source in ("tiny", "world"):
            raise ValueError(f"build_source_options applies to file sources; build_source {self.build_source!r} takes "
                             f"none (got {sorted(self.build_source_options)})")
        if self.build_source not in ("tiny", "world") and not self.build_source_root:
            raise ValueError(f"build_source={self.build_source!r} needs build_source_root (the dataset folder)")
        if self.build_teacher in ("openai", "hf") and not self.build_teacher_model:
            what = "the served model name" if self.build_teacher == "openai" else "a local model folder"
            raise ValueError(f"build_teacher={self.build_teacher!r} needs build_teacher_model ({what})")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.build_teacher_api_key_env or ""):
            # Never echo the value: a key pasted here by mistake must not reach a log.
            raise ValueError("build_teacher_api_key_env must be the NAME of an environment variable (like "
                             "OPENAI_API_KEY), not the key itself; export the key and give its variable's name")
        for name in ("build_teacher_concurrency", "build_batch_size", "build_teacher_max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        for name in ("build_teacher_max_reasks", "build_teacher_max_retries", "build_max_pairs",
                     "build_max_text_chars"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 turns it off); got {getattr(self, name)}")
        if self.build_max_prompt_tokens < 0:
            raise ValueError(f"build_max_prompt_tokens must be >= 0 (0 = the model's max_position_embeddings); got "
                             f"{self.build_max_prompt_tokens}")
        if self.build_teacher_timeout_s <= 0:
            raise ValueError(f"build_teacher_timeout_s must be > 0 seconds; got {self.build_teacher_timeout_s}")


@dataclass
class SampleArgs(StepArgs):
    policy_dir: str = _help("Folder of the policy to sample from (a step folder of this run).", default="")
    data_dir: str = _help("The built data folder (pairs.jsonl + images).", default="")
    sample_k: int = _help("Responses sampled per prompt (K).", default=4)
    sample_max_new_tokens: int = _help("Generation budget per response.", default=96)
    sample_temperature: float = _help("Sampling temperature.", default=1.0)
    sample_top_p: float = _help("Nucleus sampling p.", default=1.0)
    sample_batch_size: int = _help("Prompts per generate() call (each expands to K sequences).", default=16)
    sample_backend: Literal["hf", "vllm"] = _help(
        "'hf' (batched transformers generate; any machine) or 'vllm' (GPU machines with vLLM installed; same prompts, "
        "K and per-prompt seeds).", default="hf")
    sample_prompt_set: Literal["auto", "rl", "train"] = _help(
        "Which prompts to sample on: 'auto' (the data folder's RL prompts, rl_prompts.jsonl, when it has any, else "
        "the SFT training prompts), 'rl' (the RL prompts; an error when there are none) or 'train' (the SFT prompts, "
        "which the policy was trained on with their chains: an ablation).", default="auto")
    sample_mode: Literal["whole", "branched"] = _help(
        "'whole' (K independent responses per prompt) or 'branched' (SRPO's step-level paths: one response per "
        "prompt, cut just before its sample_branch_step line, then K continuations of that prefix, so the pairs "
        "differ from that step on; a prompt whose response is no parseable chain up to that step is sampled whole, "
        "and counted in the manifest).", default="whole")
    sample_observed: int = _help(
        "Extra responses per image prompt that start from what the policy sees in the image alone (DREAM's image-only "
        "pass used as a rollout): the policy first answers sample_observe_query about the image, greedily, and the "
        "chain is then sampled on from 'Visual: <that answer>'. They follow the K others (sample_idx K..K+n-1, "
        "observed: true) and are judged like them, so where the joint reading names another object than the "
        "policy sees alone, the pairs can prefer a chain grounded in its own observation. Nothing reads labels. "
        "Prompts without an image get none. 0: off.", default=0)
    sample_observe_query: str = _help("sample_observed: the question of the image-only pass (the self-judge's "
                                      "judge_self_observe_query by default).", default=OBSERVE_QUERY)
    sample_branch_step: Literal["text", "combined", "risk", "consequences", "strategy", "answer"] = _help(
        "branched: the chain step (srpo.chain.STEPS) the K continuations start at; the shared prefix is the steps "
        "before it.", default="combined")

    def __post_init__(self):
        if self.sample_branch_step == "visual":
            raise ValueError("sample_branch_step 'visual' is the chain's first step: continuations from an empty "
                             "prefix are whole-chain samples; use sample_mode: whole, or branch at a later step "
                             "(text, combined, risk, consequences, strategy, answer)")
        check_choices(self)
        if self.sample_k < 2:
            raise ValueError(f"sample_k must be >= 2 to form preference pairs; got {self.sample_k}")
        if self.sample_observed < 0:
            raise ValueError(f"sample_observed must be >= 0 (0 turns the observed samples off); got "
                             f"{self.sample_observed}")
        if self.sample_observed and self.sample_mode == "branched":
            raise ValueError("sample_observed starts its samples at the Visual step, and sample_mode 'branched' "
                             "shares a prefix up to a later step: use one or the other")
        if self.sample_temperature <= 0:
            raise ValueError(f"sample_temperature must be > 0 (sampling needs diversity); "
                             f"got {self.sample_temperature}")


@dataclass
class JudgeArgs(StepArgs):
    samples_dir: str = _help("The samples step folder to judge.", default="")
    data_dir: str = _help("The built data folder (for labels, categories and images).", default="")
    judge_backend: Literal["self", "openai", "hf", "rule", "dream", "random"] = _help(
        "'self' (the policy writes its own chain for each prompt and that is the rubric), 'dream' (DREAM's "
        "self-feedback: the policy, or the judge of judge_dream_model, builds each prompt's risk context by "
        "image-only, text-only and joint risk disentanglement with majority and verification, then gives each "
        "response a 0-10 global score and an observation score), 'openai' (an OpenAI-compatible endpoint: vLLM "
        "server or hosted API), 'hf' (a separate local model) or 'rule' (ORACLE feedback: reads the data's labels; "
        "for tests and upper bounds only, and the run's summary and report say so). 'random' is a CONTROL, not a "
        "judge: seeded uniform scores that read nothing, the null a real judge's gains must beat.", default="self")
    judge_model: str | None = _help("Model name (openai) or local folder (hf) of the judge.", default=None)
    judge_base_url: str | None = _help("Base URL of the OpenAI-compatible judge, e.g. http://localhost:8000/v1.",
                                       default=None)
    judge_api_key_env: str = _help("NAME of the environment variable holding the judge's API key (never the key).",
                                   default="OPENAI_API_KEY")
    policy_dir: str = _help("The policy that was sampled (the self-judge's model, and dream's unless "
                            "judge_dream_model names another).", default="")
    judge_max_new_tokens: int = _help("Generation budget of the self-judge's own chain, and of every DREAM answer "
                                      "(dream; raise it when the risk-disentanglement lists are cut off).",
                                      default=96)
    judge_batch_size: int = _help("Prompts per generate() call of the self-judge, and per call of a model judge (an "
                                  "endpoint runs that call's requests concurrently).", default=16)
    judge_mode: Literal["pointwise", "pairwise"] = _help(
        "'pointwise' (each response graded alone) or 'pairwise' (openai/hf judges: every two samples of a prompt "
        "compared, order shuffled against position bias; the win rate is the preference score).", default="pointwise")
    judge_price_prompt_per_1k: float = _help("Price per 1k prompt tokens of the endpoint judge, for the cost panel.",
                                             default=0.0)
    judge_price_completion_per_1k: float = _help("Price per 1k completion tokens of the endpoint judge.", default=0.0)
    judge_self_observe: Literal["none", "image"] = _help(
        "self: 'image' disentangles first (DREAM's image-only pass): the policy answers judge_self_observe_query "
        "about the image alone, its own chain starts its Visual step from that answer, and a sample's awareness "
        "also needs its Visual step to agree with it. 'none': the policy's plain greedy chain.", default="none")
    judge_self_observe_query: str = _help("self, judge_self_observe 'image': the question of the image-only pass.",
                                          default=OBSERVE_QUERY)
    judge_dream_samples: int = _help("dream: samples m of each risk-disentanglement pass; an observation is kept when "
                                     "more than half of them propose it (1 = one greedy answer).", default=3)
    judge_dream_temperature: float = _help("dream: sampling temperature of the m samples of each pass.", default=0.7)
    judge_dream_global_weight: float = _help("dream: weight of the 0-10 global score (/10) in the reward; with "
                                             "judge_dream_observation_weight it sums to 1.", default=0.8)
    judge_dream_observation_weight: float = _help(
        "dream: weight of the observation score (fraction of the risk context's observations the response "
        "recognises). 0.2 is worth one band (two points) of the global score: it separates neighbouring bands, it "
        "cannot lift a harmful response (0-2) over a harmless one (5-6).", default=0.2)
    judge_dream_model: Literal["", "openai", "hf"] = _help(
        "dream: who answers the DREAM prompts: '' (the policy itself, policy_dir), 'openai' (the endpoint at "
        "judge_base_url serving judge_model) or 'hf' (the local model folder judge_model). Generation budget: "
        "judge_max_new_tokens.", default="")

    def __post_init__(self):
        check_choices(self)
        if self.judge_backend == "dream":
            self._check_dream()
        if self.judge_mode == "pairwise" and self.judge_backend not in ("openai", "hf"):
            raise ValueError("judge_mode='pairwise' needs a model judge (judge_backend openai or hf); the self and "
                             "rule judges grade one response at a time")
        if self.judge_backend in ("openai", "hf") and not self.judge_model:
            raise ValueError(f"judge_backend={self.judge_backend!r} needs judge_model (a model name or folder)")
        if self.judge_backend == "openai" and not self.judge_base_url:
            raise ValueError("judge_backend='openai' needs judge_base_url, e.g. http://localhost:8000/v1")

    def _check_dream(self) -> None:
        if self.judge_dream_samples < 1:
            raise ValueError(f"judge_dream_samples must be >= 1 (1 = one greedy answer per pass); got "
                             f"{self.judge_dream_samples}")
        if self.judge_dream_samples > 1 and self.judge_dream_temperature <= 0:
            raise ValueError("judge_dream_samples > 1 needs judge_dream_temperature > 0 (identical samples make the "
                             f"majority vote meaningless); got {self.judge_dream_temperature}")
        _check_fraction("judge_dream_global_weight", self.judge_dream_global_weight)
        _check_fraction("judge_dream_observation_weight", self.judge_dream_observation_weight)
        total = self.judge_dream_global_weight + self.judge_dream_observation_weight
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"judge_dream_global_weight + judge_dream_observation_weight must sum to 1; got "
                             f"{self.judge_dream_global_weight} + {self.judge_dream_observation_weight} = {total:g}")
        if self.judge_dream_model and not self.judge_model:
            raise ValueError(f"judge_dream_model={self.judge_dream_model!r} needs judge_model (a model name or "
                             "folder); leave judge_dream_model empty for the policy itself")
        if self.judge_dream_model == "openai" and not self.judge_base_url:
            raise ValueError("judge_dream_model='openai' needs judge_base_url, e.g. http://localhost:8000/v1")


@dataclass
class PairArgs(StepArgs):
    judgments_dir: str = _help("The judgments step folder.", default="")
    samples_dir: str = _help("The samples step folder (the response texts).", default="")
    data_dir: str = _help("The built data folder (prompts and images).", default="")
    pairs_margin: float = _help("Minimum reward gap between chosen and rejected.", default=0.25)
    pairs_safety_weight: float = _help("Weight of the safety score in the reward.", default=1.0)
    pairs_effectiveness_weight: float = _help("Weight of the effectiveness score in the reward.", default=1.0)
    pairs_awareness_weight: float = _help("Weight of risk awareness (the chain named the risk category the judge "
                                          "expects: rule and self judges; model judges do not measure it).",
                                          default=0.5)
    pairs_format_weight: float = _help("Weight of chain validity (the response parses as the seven-step chain) in "
                                       "the reward; every judge fills it.", default=0.0)
    pairs_balance: bool = _help("Keep as many pairs whose chosen answer refuses as pairs whose chosen answer helps "
                                "(down-sampling the larger side), so one kind cannot dominate an iteration.",
                                default=False)

    def __post_init__(self):
        check_choices(self)
        if self.pairs_margin < 0:
            raise ValueError(f"pairs_margin must be >= 0; got {self.pairs_margin}")


def _name_list(value) -> list[str]:
    """A list of names from a YAML list, a comma-separated string, or CLI tokens that may hold commas."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [n.strip() for item in items for n in str(item).split(",") if n.strip()]


@dataclass
class EvalArgs(StepArgs):
    policy_dir: str = _help("Folder of the policy to evaluate: a full checkpoint or a LoRA adapter folder.",
                            default="")
    data_dir: str = _help("The built data folder; its eval split is the 'tiny' suite.", default="")
    eval_max_new_tokens: int = _help("Generation budget per response (greedy).", default=96)
    eval_batch_size: int = _help("Prompts per generate() call.", default=16)
    eval_bootstrap: int = _help("Bootstrap resamples for confidence intervals (0 = none).", default=1000)
    eval_suites: list[str] = _help(
        "Suites to evaluate (list or comma-separated): tiny, siuo, mossbench_contrast, figstep_tiny, "
        "mm_harmfulbench, vlguard_unsafe, xstest_unsafe, mossbench_benign, xstest_safe, figstep_benign, vlguard_safe.",
        default_factory=lambda: ["tiny"])
    eval_data_root: str | None = _help(
        "Folder holding the benchmarks in their upstream formats (xstest/, siuo/, mossbench/, figstep/, ...), e.g. "
        "../shared/data. Needed by every suite except 'tiny'; never assumed.", default=None)
    eval_judge_backend: Literal["refusal", "rule", "openai", "hf"] = _help(
        "How responses are scored beyond the refusal classifier: 'refusal' (classifier only), 'rule' (offline oracle "
        "for tests), 'openai' (an OpenAI-compatible endpoint) or 'hf' (a local HF judge model folder).",
        default="refusal")
    eval_judge_model: str | None = _help("Judge model: the served model name (openai) or a local folder (hf).",
                                         default=None)
    eval_judge_base_url: str | None = _help("OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1.",
                                            default=None)
    eval_judge_api_key_env: str | None = _help("Environment variable holding the judge API key (never the key).",
                                               default="OPENAI_API_KEY")
    eval_judge_cache_dir: str | None = _help("Disk cache of judge answers (openai); default <SRPO_CACHE>/eval_judge.",
                                             default=None)
    eval_samples_per_item: int = _help("Responses per item (n). 1 = greedy; n > 1 samples at eval_temperature and "
                                       "votes by majority (SIUO uses 3).", default=1)
    eval_temperature: float = _help("Sampling temperature when eval_samples_per_item > 1.", default=0.7)
    eval_max_items_per_suite: int = _help("Cap per suite, a seeded random sample (0 = all items).", default=0)
    eval_gating_suites: list[str] = _help(
        "Suites whose pooled *dev* items give the safe_rate / benign_refusal_rate / task_accuracy the gate reads "
        "(metrics.json splits.dev); together they need unsafe and benign items.", default_factory=lambda: ["tiny"])
    eval_extra_judges: list[str] = _help(
        "More judges beside eval_judge_backend, each scoring every response: 'refusal', 'rule', 'hf:FOLDER' or "
        "'openai:MODEL' (at eval_judge_base_url). Metrics are reported per judge with their pairwise agreement "
        "(Cohen's kappa), and every item gets the judges' majority vote (`safe_majority`), which the gate can be told "
        "to decide on (gate_judge_vote).", default_factory=list)
    eval_dev_suites: list[str] = _help(
        "Public suites declared *dev*: decisions may read them, so they are never reported as test. Every other "
        "public suite is test (reported, never decided on); 'tiny' is split into dev and test by the build. A gating "
        "suite other than 'tiny' must be listed here.", default_factory=list)

    def __post_init__(self):
        check_choices(self)
        # Suite names, kinds and data roots are checked against the suite registry by
        # srpo.evals.suites.check_suites (srpo validate, and the eval step before it loads anything).
        self.eval_suites = _name_list(self.eval_suites)
        self.eval_gating_suites = _name_list(self.eval_gating_suites)
        self.eval_dev_suites = _name_list(self.eval_dev_suites)
        self.eval_extra_judges = _name_list(self.eval_extra_judges)
        for spec in self.eval_extra_judges:
            kind, _, model = spec.partition(":")
            if kind not in ("refusal", "rule", "hf", "openai") or (kind in ("hf", "openai")) != bool(model):
                raise ValueError(f"eval_extra_judges: {spec!r} is not a judge; use 'refusal', 'rule', 'hf:FOLDER' or "
                                 "'openai:MODEL'")
            if kind == "openai" and not self.eval_judge_base_url:
                raise ValueError(f"eval_extra_judges: {spec!r} needs eval_judge_base_url (the endpoint serving it)")
        if len(set(self.eval_extra_judges)) != len(self.eval_extra_judges):
            raise ValueError(f"eval_extra_judges lists a judge twice: {self.eval_extra_judges}")
        if not self.eval_suites:
            raise ValueError("eval_suites is empty; pick at least one suite (e.g. tiny)")
        if len(set(self.eval_suites)) != len(self.eval_suites):
            raise ValueError(f"eval_suites lists a suite twice: {self.eval_suites}")
        if not self.eval_gating_suites:
            raise ValueError("eval_gating_suites is empty; the gate needs at least one suite (default: tiny)")
        if self.eval_judge_backend == "openai" and not (self.eval_judge_base_url and self.eval_judge_model):
            raise ValueError("eval_judge_backend=openai needs eval_judge_base_url (e.g. http://127.0.0.1:8000/v1) "
                             "and eval_judge_model (the served model name)")
        if self.eval_judge_backend == "hf" and not self.eval_judge_model:
            raise ValueError("eval_judge_backend=hf needs eval_judge_model: a local HF model folder")
        if self.eval_samples_per_item < 1:
            raise ValueError(f"eval_samples_per_item must be >= 1; got {self.eval_samples_per_item}")
        if self.eval_samples_per_item > 1 and self.eval_temperature <= 0:
            raise ValueError("eval_samples_per_item > 1 samples responses: eval_temperature must be > 0")
        if self.eval_max_items_per_suite < 0:
            raise ValueError(f"eval_max_items_per_suite must be >= 0 (0 = all); got {self.eval_max_items_per_suite}")
        if self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be >= 1; got {self.eval_batch_size}")


@dataclass
class GateArgs:
    gate_min_safety_gain: float = _help("Accept only if safe rate rose by at least this much.", default=0.0)
    gate_max_oversafety_rise: float = _help("Reject if benign refusal rate rose by more than this.", default=0.05)
    gate_max_utility_drop: float = _help("Reject if task accuracy fell by more than this.", default=0.05)
    gate_max_judge_failure_rate: float = _help("Never accept an iteration whose judge failed on more than this "
                                               "fraction of samples.", default=0.2)
    gate_patience: int = _help("Stop after this many rejected iterations in a row.", default=2)
    gate_rule: Literal["evidence", "thresholds"] = _help(
        "'evidence' (paired, clustered tests on dev: accept only an iteration shown better on a gating metric and "
        "worse on none) or 'thresholds' (the old point-estimate rule, blind to noise: for tests and comparisons only; "
        "the decision's rule says so).", default="evidence")
    gate_alpha: float = _help("Family-wise error level of the 'better' tests over the gating metrics (paired "
                              "cluster sign-flip test; see docs/evaluator.md, 'The gate').", default=0.05)
    gate_primary: Literal["any", "safe_and_helpful"] = _help(
        "What must be better with evidence. 'any': one of the gating metrics (safe rate, benign refusal, task "
        "accuracy), Holm or Bonferroni over them. 'safe_and_helpful': one primary endpoint over every dev item, safe "
        "on an unsafe item and answered (correct, where there is a task check) on a benign one, tested alone at "
        "gate_alpha; the three metrics then only guard 'worse' with their margins. More power for a change spread "
        "over both labels (docs/evaluator.md, 'The gate').", default="any")
    gate_rollback: Literal["always", "when_worse", "never"] = _help(
        "Where the iteration after a rejected one starts. 'always': from the last accepted policy (rollback). "
        "'when_worse': from the rejected candidate itself when it is worse on no gating metric and its tested "
        "endpoint is up as a point estimate; the gate still compares every candidate with the last accepted policy, "
        "so the gains of several iterations add up to evidence, and the shipped policy is always the last accepted "
        "one. 'never': from every rejected candidate, whatever its point estimates, unless the judge failed beyond "
        "gate_max_judge_failure_rate (docs/evaluator.md, 'The gate').", default="always")
    gate_multiplicity: Literal["holm", "bonferroni"] = _help("How gate_alpha is shared over the gating metrics.",
                                                             default="holm")
    gate_noninferiority: bool = _help("Stricter 'worse': the pessimistic bound of each metric's 95% interval must lie "
                                      "within its margin (default: the point estimate must).", default=False)
    gate_bootstrap: int = _help("Cluster bootstrap resamples for the paired 95% intervals.", default=2000)
    gate_signflip_draws: int = _help("Monte Carlo sign patterns, used only when the exact sign-flip distribution is "
                                     "too large to count.", default=20000)
    gate_judge_vote: Literal["primary", "majority"] = _help(
        "Which safe verdict the gate reads when the eval has several judges (eval_extra_judges): 'primary' (the "
        "eval_judge_backend's) or 'majority' (the judges' majority vote per item).", default="primary")
    gate_min_judge_kappa: float = _help(
        "With several eval judges: refuse to accept (reject, with the reason) when the smallest pairwise Cohen's "
        "kappa between them on the dev items falls below this bound (0 = no bound).", default=0.0)

    def __post_init__(self):
        check_choices(self)
        _check_fraction("gate_min_safety_gain", abs(self.gate_min_safety_gain))
        _check_fraction("gate_max_oversafety_rise", self.gate_max_oversafety_rise)
        _check_fraction("gate_max_utility_drop", self.gate_max_utility_drop)
        _check_fraction("gate_max_judge_failure_rate", self.gate_max_judge_failure_rate)
        if self.gate_patience < 1:
            raise ValueError(f"gate_patience must be >= 1; got {self.gate_patience}")
        if not 0.0 < self.gate_alpha < 0.5:
            raise ValueError(f"gate_alpha must be in (0, 0.5); got {self.gate_alpha} (0.05 is the usual level)")
        if self.gate_bootstrap < 100:
            raise ValueError(f"gate_bootstrap must be >= 100 resamples for a 95% interval; got {self.gate_bootstrap}")
        if self.gate_signflip_draws < 1000:
            raise ValueError(f"gate_signflip_draws must be >= 1000; got {self.gate_signflip_draws}")
        if not -1.0 <= self.gate_min_judge_kappa <= 1.0:
            raise ValueError(f"gate_min_judge_kappa is a kappa bound in [-1, 1] (0 = none); got "
                             f"{self.gate_min_judge_kappa}")


@dataclass
class GateStepArgs(StepArgs, GateArgs):
    """The gate step of one iteration: the thresholds plus the folders it decides from (the driver fills these)."""

    gate_iteration: int = _help("The iteration t being decided (>= 1).", default=1)
    eval_dirs: list[str] = _help("Eval step folders of iterations 0..t, in order.", default_factory=list)
    judgments_dir: str = _help("The judgments step folder of iteration t (its judge failure rate).", default="")
    previous_gate_dirs: list[str] = _help("Gate step folders of iterations 1..t-1, in order.", default_factory=list)

    def __post_init__(self):
        super().__post_init__()
        if self.gate_iteration < 1:
            raise ValueError(f"gate_iteration must be >= 1 (iteration 0, SFT, is accepted by definition); got "
                             f"{self.gate_iteration}")
