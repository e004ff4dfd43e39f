"""The `srpo` command: `srpo run RECIPE`, each step alone (`srpo sft --config ...`), and helpers.

Errors a user can fix are printed as one paragraph; `--debug` shows the traceback.
"""

from __future__ import annotations

import sys

STEPS = {"base": "base", "build": "build", "sft": "sft", "sample": "sample", "judge": "judge", "pairs": "pairs",
         "dpo": "dpo", "grpo": "grpo", "eval": "evaluate", "gate": "gate"}

USAGE = """usage: srpo <command> [options]

  srpo run RECIPE [--set section.key=value ...]   run (or resume) the whole pipeline (preflight first)
  srpo validate [--preflight] RECIPE [--set ...]  check a recipe without running anything (--preflight: also the
                                                  model folders, data roots, GPUs and packages it needs here)
  srpo status RUN_DIR                             where a run stands and how to resume it
  srpo report RUN_DIR                             write report/report.html (plots, gallery) and report.md
  srpo compare RUN... [--split test|dev] [--json|--markdown] [--allow-mixed]
                                                  seeds of one recipe: per-seed figures and mean ± 95% interval
  srpo judge-eval --judge JUDGE --benchmark {xstest,msts,harmbench,mossbench} FILE... [--json]
                                                  a judge (refusal, rule, hf:PATH, openai:MODEL, replay:FILE#COL)
                                                  against human labels: agreement, unsafe-F1, kappa, 95% intervals
  srpo chat RUN --image PATH [--query TEXT] [--iteration N] [--json]
                                                  a run's final (or iteration N's) policy answers; chain and
                                                  answer shown apart
  srpo tiny-model                                 build the offline tiny test VLM and print its folder
  srpo <step> --config STEP.yaml [--key value]    run one step alone: """ + ", ".join(STEPS) + """

Add --debug to any command to see full tracebacks."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    try:
        return _dispatch(command, rest)
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001  (one readable paragraph unless --debug)
        if debug:
            raise
        from srpo.cli_util import ConfigError
        from srpo.steps import StepFailed, StepInputError

        kind = "config error" if isinstance(e, ConfigError) else "error"
        known = (ConfigError, StepInputError, StepFailed, FileNotFoundError, ValueError)
        print(f"srpo {command}: {kind}: {e}" + ("" if isinstance(e, known) else f" ({type(e).__name__})")
              + "\n(run again with --debug for the traceback)", file=sys.stderr)
        return 2


def _dispatch(command: str, rest: list[str]) -> int:
    import importlib

    if command in ("run", "validate"):
        preflight = command == "run" or "--preflight" in rest
        rest = [a for a in rest if a != "--preflight"] if command == "validate" else rest
        if not rest or rest[0].startswith("-"):
            print(f"usage: srpo {command} {'[--preflight] ' * (command == 'validate')}RECIPE "
                  "[--set section.key=value ...]", file=sys.stderr)
            return 2
        recipe, overrides = rest[0], _overrides(rest[1:])
        if command == "validate":
            from srpo.recipe import validate

            validate(recipe, overrides, preflight=preflight)
            print(f"OK {recipe}" + (" (static checks and preflight)" if preflight else " (static checks; add "
                                    "--preflight for this machine's files, GPUs and packages)"))
            return 0
        from srpo.driver import run_recipe

        run_recipe(recipe, overrides)
        return 0
    if command == "status":
        from srpo.status import print_status

        return print_status(rest[0] if rest else "")
    if command == "report":
        from srpo.report import main as report_main

        return report_main(rest)
    if command == "compare":
        from srpo.compare import main as compare_main

        return compare_main(rest)
    if command == "judge-eval":
        from srpo.judge_eval import main as judge_eval_main

        return judge_eval_main(rest)
    if command == "chat":
        from srpo.chat import main as chat_main

        return chat_main(rest)
    if command == "tiny-model":
        from srpo.model_specs import resolve_model

        print(resolve_model("tiny:llava"))
        return 0
    if command in STEPS:
        importlib.import_module(f"srpo.stages.{STEPS[command]}").main(rest)
        return 0
    print(f"srpo: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


def _overrides(tokens: list[str]) -> list[str]:
    overrides = []
    it = iter(tokens)
    for token in it:
        if token == "--set":
            overrides.append(next(it, ""))
        elif token.startswith("--set="):
            overrides.append(token[len("--set="):])
        else:
            raise ValueError(f"unexpected argument {token!r}; overrides are given as --set section.key=value")
    return overrides


if __name__ == "__main__":
    sys.exit(main())
