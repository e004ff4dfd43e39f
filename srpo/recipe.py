"""Recipes: loading (YAML + `--set` overrides), the section table, and every check that can run before any work.

    srpo validate RECIPE [--set section.key=value ...]              static: keys, types, values, trackers, suites,
                                                                     the launch configs it names
    srpo validate --preflight RECIPE [--set ...]                     + this machine and these files: model folders,
                                                                     data roots, GPUs against the accelerate config,
                                                                     optional packages the recipe needs

`srpo run` runs the preflight first: a refused recipe creates no run folder and no step folder.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections import Counter
from pathlib import Path

import yaml

from srpo.cli_util import ConfigError, build_from_dict, unknown_key_error

SECTION_NAMES = ("run", "build", "sft", "sample", "judge", "pairs", "dpo", "grpo", "eval", "gate")

TRAINING = ("sft", "dpo", "grpo")  # the sections that subclass TRL's configs (trainer output, devices)

# Keys the driver sets for every step; a recipe that sets them would be silently overridden, so it is refused.
INJECTED = {"run_dir", "step", "seed", "data_dir", "model_dir", "policy_dir", "ref_dir", "pairs_dir", "samples_dir",
            "judgments_dir", "output_dir", "gate_iteration", "eval_dirs", "previous_gate_dirs", "grpo_judge"}

# What the driver injects, as placeholders: enough to build each section's config for a static check.
_PLACEHOLDERS = {"build": {}, "sft": {"data_dir": "d", "model_dir": "m"},
                 "sample": {"policy_dir": "p/model", "data_dir": "d"},
                 "judge": {"samples_dir": "s", "data_dir": "d", "policy_dir": "p/model"},
                 "pairs": {"judgments_dir": "j", "samples_dir": "s", "data_dir": "d"},
                 "dpo": {"policy_dir": "p/model", "ref_dir": "r/model", "pairs_dir": "x", "data_dir": "d"},
                 "grpo": {"policy_dir": "p/model", "data_dir": "d"},
                 "eval": {"policy_dir": "p/model", "data_dir": "d"}}


def sections() -> dict:
    """Section name -> its config dataclass (the training ones subclass TRL's configs, hence the lazy import)."""
    from srpo.configs import BuildArgs, EvalArgs, GateArgs, JudgeArgs, PairArgs, RunArgs, SampleArgs
    from srpo.train_configs import DPOStageConfig, GRPOStageConfig, SFTStageConfig

    return {"run": RunArgs, "build": BuildArgs, "sft": SFTStageConfig, "sample": SampleArgs, "judge": JudgeArgs,
            "pairs": PairArgs, "dpo": DPOStageConfig, "grpo": GRPOStageConfig, "eval": EvalArgs, "gate": GateArgs}


class _StrictLoader(yaml.SafeLoader):
    """YAML with duplicate keys refused: plain YAML keeps the last, so a second `run:` would silently win."""


def _no_duplicates(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"key '{key}' appears twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); "
                              "YAML would silently keep the second: merge them into one")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_recipe(path: str, overrides: list[str] = ()) -> dict:
    """The recipe as {section: dict}, with `section.key=value` overrides applied; unknown names are errors."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"recipe {path} does not exist; see recipes/tiny/demo.yaml for an example") from None
    except IsADirectoryError:
        raise ConfigError(f"recipe {path} is a folder; give a recipe YAML file") from None
    try:
        recipe = yaml.load(text, Loader=_StrictLoader)
    except ConfigError as e:
        raise ConfigError(f"recipe {path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {path} is not valid YAML: {e}") from None
    if recipe is None:
        # An empty file would run the whole default pipeline, which nobody means to do.
        raise ConfigError(f"recipe {path} is empty; a recipe needs at least a run section (see "
                          "recipes/tiny/demo.yaml)")
    if not isinstance(recipe, dict):
        raise ConfigError(f"recipe {path} must be a mapping of sections ({', '.join(SECTION_NAMES)})")
    bad = sorted(set(map(str, recipe)) - set(SECTION_NAMES))
    if bad:
        raise unknown_key_error(f"recipe {path}", bad, list(SECTION_NAMES))
    for name, values in recipe.items():
        if values is None:
            recipe[name] = {}
        elif not isinstance(values, dict):
            raise ConfigError(f"recipe {path}: section '{name}' must be a mapping of keys to values (like "
                              f"'{name}:\\n  {name}_...: ...'); got {type(values).__name__}")
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. sft.learning_rate=1e-3")
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        if section not in SECTION_NAMES:
            raise unknown_key_error("override", [section], list(SECTION_NAMES))
        recipe.setdefault(section, {})[name] = yaml.safe_load(value)
    for name, values in recipe.items():
        injected = sorted(set(values) & INJECTED)
        if injected:
            raise ConfigError(f"recipe {path}: section '{name}' sets {injected}, which srpo run sets itself; "
                              "remove them (run a single step by hand to choose them)")
    return recipe


def check_recipe(path: str | os.PathLike, overrides: list[str] = (), *, preflight: bool = False,
                 deepspeed: str | None = None, world_size: int | None = None) -> list[str]:
    """Every problem of a recipe, each naming the section and key and saying how to fix it; [] when it is fine.

    Static checks need nothing but the recipe; `preflight` adds what this machine and its files must provide."""
    return _check(path, overrides, preflight, deepspeed, world_size)[1]


def validate(path: str | os.PathLike, overrides: list[str] = (), *, preflight: bool = False) -> dict:
    """The loaded recipe, or ConfigError listing every problem (one line each)."""
    recipe, problems = _check(path, overrides, preflight, None, None)
    if problems:
        head = f"recipe {path} was refused before any work ({len(problems)} problem{'s' * (len(problems) > 1)}):"
        guide = Path(path).parent / "README.md"
        tail = (f"\nHow to get this recipe's model and data in place, and the commands to run it: {guide}"
                if preflight and guide.is_file() else "")
        raise ConfigError(head + "\n  - " + "\n  - ".join(problems) + tail)
    return recipe


def _check(path, overrides, preflight: bool, deepspeed: str | None, world_size: int | None) -> tuple[dict, list]:
    name = str(path)
    try:
        recipe = load_recipe(name, list(overrides))
    except ConfigError as e:
        return {}, [str(e)]
    built, problems = _build_sections(recipe, name)
    if "eval" in built:
        from srpo.evals.suites import check_suites

        ev = built["eval"]
        try:
            check_suites(ev.eval_suites, ev.eval_gating_suites, ev.eval_data_root, files=False,
                         dev_suites=ev.eval_dev_suites)
        except ValueError as e:
            problems.append(f"{name} [eval]: {e}")
    problems += _launch_problems(recipe, name, deepspeed, world_size)
    problems += _world_problems(built, name)
    problems += _source_problems(built, name)
    problems += _grpo_problems(built, name)
    if preflight and not problems:
        problems += _preflight(recipe, built, name)
    return recipe, list(dict.fromkeys(problems))


def _build_sections(recipe: dict, name: str) -> tuple[dict, list[str]]:
    """Each section's config built as the driver will build it (with placeholder folders); every section is
    built, so the user sees all problems at once."""
    classes, built, problems = sections(), {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for section in SECTION_NAMES:
            values = dict(recipe.get(section, {}))
            if section not in ("run", "gate"):
                values.update(_PLACEHOLDERS.get(section, {}), run_dir=tmp, step=f"check/{section}", seed=0)
            if section in TRAINING:
                values.setdefault("use_cpu", True)  # validate the config, not this machine's devices
                values["output_dir"] = tmp
            try:
                built[section] = build_from_dict(classes[section], values, f"{name} [{section}]")
            except ConfigError as e:
                problems.append(str(e))
            except Exception as e:  # noqa: BLE001 (e.g. TrainingArguments refusing a combination)
                from srpo.launch_checks import one_line

                problems.append(f"{name} [{section}]: {one_line(e)}")
    return built, problems


def _launch_problems(recipe: dict, name: str, deepspeed: str | None, world_size: int | None) -> list[str]:
    """The accelerate config the recipe names, and its DeepSpeed JSON against the sft/dpo sections."""
    from srpo import launch_checks as lc

    problems, run = [], recipe.get("run", {})
    accel, nproc = run.get("run_accelerate_config"), world_size
    if accel:
        found = lc.resolve_near(accel, Path(name).parent)
        if found is None:
            return [f"{name}: key 'run.run_accelerate_config': {accel} does not exist (it is read relative to the "
                    "directory you launch from: the repository root)"]
        problems += lc.check_accelerate(found, follow_deepspeed=False)  # its DeepSpeed JSON is checked below
        raw = lc.read_accelerate(found)[0] or {}
        nproc = nproc or raw.get("num_processes")
        mp = raw.get("mixed_precision", "no")
        # With a DeepSpeed JSON the precision is the JSON's ("auto": the step config's), checked below.
        json_precision = bool((raw.get("deepspeed_config") or {}).get("deepspeed_config_file"))
        for section in TRAINING:
            values = recipe.get(section, {})
            want = "bf16" if values.get("bf16") else "fp16" if values.get("fp16") else "no"
            if section in recipe and mp != want and not json_precision:
                problems.append(f"{name}: key '{section}.bf16/fp16' asks for precision {want!r} but {found} has "
                                f"mixed_precision: {mp!r}; make them agree")
        if deepspeed is None:
            ds_file = lc.accelerate_deepspeed_file(found)
            deepspeed = str(ds_file) if ds_file else None
    if deepspeed:
        for section in TRAINING:
            if section in recipe:
                problems += lc.check_deepspeed(deepspeed, world_size=nproc or 2, training=recipe[section],
                                               where=f"{name} [{section}]")
    return problems


def _world_problems(built: dict, name: str) -> list[str]:
    """A world base model pretrained on another world than the build's has seen the wrong combinations."""
    run, build = built.get("run"), built.get("build")
    if run is None or build is None or build.build_source != "world":
        return []
    world_base = {"tiny:world-base": "small", "tiny:world-base-large": "large"}.get(run.run_model)
    if world_base and world_base != build.build_world_size:
        want = "tiny:world-base" + ("" if build.build_world_size == "small" else f"-{build.build_world_size}")
        return [f"{name}: run.run_model {run.run_model!r} is pretrained on the {world_base} world but "
                f"build.build_world_size is {build.build_world_size!r}; use {want!r}"]
    return []


def _source_problems(built: dict, name: str) -> list[str]:
    """The build's source: a known format, and options its converter takes."""
    build = built.get("build")
    if build is None or build.build_source in ("tiny", "world"):
        return []
    from data_builders.sources import CONVERTERS, check_options

    if build.build_source not in CONVERTERS:
        return [f"{name}: key 'build.build_source': unknown source {build.build_source!r}; the sources are tiny, "
                "world, " + ", ".join(sorted(CONVERTERS))]
    return [f"{name}: key 'build.build_source_options': {p}"
            for p in check_options(build.build_source, build.build_source_options)]


def _source_data_problems(build, name: str) -> list[str]:
    """The preflight's look at the source's files: the converter run over them without decoding an image. Refused
    when it cannot read them, or when no row (or only a minority, the rest for missing images: an archive not
    unpacked where the converter looks) would survive."""
    from data_builders.sources import SourceError, convert

    where = f"{name}: key 'build.build_source_root'"
    try:
        result = convert(build.build_source, Path(build.build_source_root), require_images=build.build_require_images,
                         **{**build.build_source_options, "check_images": False})
    except SourceError as e:
        return [f"{where}: {e}"]
    reasons = Counter(q.reason_code for q in result.quarantined)
    if result.rows_ok and reasons.get("image_missing", 0) <= result.rows_ok:
        return []
    if not result.rows_seen:
        return [f"{where}: {build.build_source} found no rows under {build.build_source_root}"]
    first = next((q for q in result.quarantined if q.reason_code == reasons.most_common(1)[0][0]), None)
    example = f"; e.g. {first.message}" if first else ""
    return [f"{where}: {result.rows_seen - result.rows_ok} of {result.rows_seen} {build.build_source} rows would be "
            f"quarantined ({dict(reasons.most_common(3))}){example}. Put the data where the converter looks (see "
            "docs/sources.md) or set build.build_source_options"]


def _grpo_problems(built: dict, name: str) -> list[str]:
    """What GRPO cannot do with the recipe's judge (srpo/judges/scorers.py says the same at run time)."""
    run, judge = built.get("run"), built.get("judge")
    if run is None or judge is None or run.run_rl_algorithm != "grpo":
        return []
    if judge.judge_mode == "pairwise":
        return [f"{name}: key 'judge.judge_mode': 'pairwise' compares all samples of a prompt at once; GRPO rewards "
                "each completion as it is generated. Use judge_mode: pointwise with run_rl_algorithm: grpo"]
    return []


def _preflight(recipe: dict, built: dict, name: str) -> list[str]:
    """What this machine and its files must provide for the recipe to run to the end."""
    from srpo.model_specs import TINY_KINDS, TINY_PREFIX, check_model_folder

    problems = []

    def model(where: str, spec: str | None) -> None:
        if not spec:
            return
        if spec.startswith(TINY_PREFIX):
            if spec[len(TINY_PREFIX):] not in TINY_KINDS:
                problems.append(f"{name}: key '{where}': unknown built-in model {spec!r}; the built-in ones are "
                                + ", ".join(TINY_PREFIX + k for k in TINY_KINDS))
            return
        try:
            check_model_folder(spec)
        except FileNotFoundError as e:
            problems.append(f"{name}: key '{where}': {e}")

    def package(where: str, module: str, extra: str) -> None:
        if importlib.util.find_spec(module) is None:
            problems.append(f"{name}: key '{where}' needs the '{module}' package, which is not installed; "
                            f"`pip install 'srpo[{extra}]'` (or {module}) and run again")

    run, build, judge, ev = built["run"], built["build"], built["judge"], built["eval"]
    model("run.run_model", run.run_model)
    if run.run_image_processor and not problems and not run.run_model.startswith(TINY_PREFIX):
        from srpo.model_families import processor_with

        try:
            processor_with(run.run_model, run.run_image_processor)
        except (ValueError, OSError) as e:
            problems.append(f"{name}: key 'run.run_image_processor': {e}")
    if build.build_teacher == "hf":
        model("build.build_teacher_model", build.build_teacher_model)
    if judge.judge_backend == "hf" or (judge.judge_backend == "dream" and judge.judge_dream_model == "hf"):
        model("judge.judge_model", judge.judge_model)
    if ev.eval_judge_backend == "hf":
        model("eval.eval_judge_model", ev.eval_judge_model)
    if build.build_source_root and not Path(build.build_source_root).is_dir():
        problems.append(f"{name}: key 'build.build_source_root': {build.build_source_root!r} is not a folder; give "
                        "the dataset folder the source's files are in")
    elif build.build_source_root and build.build_source not in ("tiny", "world"):
        problems += _source_data_problems(build, name)
    from srpo.evals.suites import check_suites

    try:  # the static checks passed: what is left is the benchmark files on this machine
        check_suites(ev.eval_suites, ev.eval_gating_suites, ev.eval_data_root, files=True,
                     dev_suites=ev.eval_dev_suites)
    except ValueError as e:
        problems.append(f"{name}: key 'eval.eval_data_root': {e}")
    if run.run_accelerate_config:
        from srpo.launch_checks import machine_problems

        problems += [f"{name}: {p}" for p in machine_problems(run.run_accelerate_config)]
    for section in TRAINING:
        if built[section].load_in_4bit:
            package(f"{section}.load_in_4bit", "bitsandbytes", "qlora")
    if built["sample"].sample_backend == "vllm":
        package("sample.sample_backend", "vllm", "vllm")
    if run.run_rl_algorithm == "grpo" and built["grpo"].use_vllm:
        package("grpo.use_vllm", "vllm", "vllm")
    for tracker in run.trackers:
        package("run.run_report_to", {"tensorboard": "tensorboard"}.get(tracker, tracker), "tracking")
    return problems
