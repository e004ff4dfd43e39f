"""The bad-input corpus for recipes and run commands: each kind gets one clear message naming the place and the key,
never a traceback. (Bad rows and files of the data sources are covered kind by kind in test_sources.py, whose reason
codes are counted here too.)"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (what is wrong, recipe text, words the message must contain)
RECIPES = [
    ("unknown section", "smple:\n  sample_k: 4\n", ["'smple'", "did you mean 'sample'"]),
    ("unknown key", "sft:\n  learnign_rate: 1.0e-3\n", ["[sft]", "'learnign_rate'", "'learning_rate'"]),
    ("fraction out of range", "gate:\n  gate_max_oversafety_rise: 5\n", ["gate_max_oversafety_rise", "0.05"]),
    ("negative margin", "pairs:\n  pairs_margin: -1\n", ["pairs_margin must be >= 0"]),
    ("K too small", "sample:\n  sample_k: 1\n", ["sample_k must be >= 2"]),
    ("zero temperature", "sample:\n  sample_temperature: 0\n", ["sample_temperature must be > 0"]),
    ("QLoRA without LoRA", "dpo:\n  load_in_4bit: true\n", ["use_lora: true"]),
    ("negative NLL weight", "dpo:\n  nll_weight: -0.5\n", ["nll_weight must be >= 0"]),
    ("unknown judge", "judge:\n  judge_backend: gpt\n", ["judge_backend must be one of"]),
    ("endpoint judge without URL", "judge:\n  judge_backend: openai\n  judge_model: m\n", ["judge_base_url"]),
    ("file source without root", "build:\n  build_source: siuo\n", ["build_source_root"]),
    ("driver-owned key", "sample:\n  policy_dir: x\n", ["srpo run sets itself"]),
    ("zero iterations", "run:\n  run_iterations: 0\n", ["run_iterations must be >= 1"]),
    ("bad reference policy", "run:\n  run_reference_policy: base\n", ["run_reference_policy"]),
    ("run name with a slash", "run:\n  run_name: a/b\n", ["run_name must be a plain folder name"]),
    ("not YAML", "sft: [unclosed\n", ["not valid YAML"]),
    ("not a mapping", "- just\n- a list\n", ["must be a mapping"]),
    ("section not a mapping", "sft: 3\n", ["section 'sft' must be a mapping"]),
    ("wrong type", "sample:\n  sample_k: many\n", ["sample_k"]),
    ("unknown tracker", "run:\n  run_report_to: mlflow\n", ["run_report_to", "mlflow"]),
    ("section twice", "run:\n  run_name: a\nsft:\n  max_steps: 3\nrun:\n  run_name: b\n",
     ["'run' appears twice", "lines 1 and 5"]),
    ("key twice", "sft:\n  max_steps: 3\n  max_steps: 4\n", ["'max_steps' appears twice"]),
    ("empty recipe", "", ["is empty"]),
    ("section a list", "run: [1, 2]\n", ["section 'run' must be a mapping", "got list"]),
    ("inverted preference", "dpo:\n  beta: -1\n", ["beta must be > 0"]),
    ("no samples", "sample:\n  sample_k: 0\n", ["sample_k must be >= 2"]),
    ("unknown suite", "eval:\n  eval_suites: [tiny, xstst]\n", ["[eval]", "'xstst'", "known suites"]),
    ("benchmark suite without data root", "eval:\n  eval_suites: [tiny, xstest_safe]\n", ["set eval_data_root"]),
]


def _validate(path: Path) -> None:
    """What `srpo run` checks before it creates anything: the product's own check, static part."""
    from srpo.recipe import validate

    validate(str(path))


@pytest.mark.parametrize("what,text,words", RECIPES, ids=[r[0] for r in RECIPES])
def test_bad_recipe_gets_a_clear_error(tmp_path, what, text, words):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises((ValueError, TypeError)) as e:
        _validate(path)
    for w in words:
        assert w in str(e.value), (what, str(e.value))


def _srpo(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "srpo.cli", *args], cwd=cwd, env=env, capture_output=True, text=True)


SMOKE = str(ROOT / "recipes" / "tiny" / "smoke.yaml")
# `srpo run` refusals that need the machine or its files (the preflight), each naming the key to fix.
RUN_REFUSALS = [
    ("misspelt key", ["--set", "sft.learning_rat=1e-4"], ["[sft]", "'learning_rat'", "'learning_rate'"]),
    ("misspelt key, another section", ["--set", "judge.judge_bakend=self"], ["[judge]", "'judge_backend'"]),
    ("unknown tracker", ["--set", "run.run_report_to=mlflow"], ["run_report_to", "mlflow"]),
    ("unknown suite", ["--set", "eval.eval_suites=tiny,xstst"], ["'xstst'", "known suites"]),
    ("missing data root", ["--set", "eval.eval_suites=tiny,xstest_safe", "--set", "eval.eval_data_root=nowhere"],
     ["eval_data_root", "'nowhere'", "not a folder"]),
    ("missing source root", ["--set", "build.build_source=generic", "--set", "build.build_source_root=nowhere"],
     ["build.build_source_root", "not a folder"]),
    ("missing model folder", ["--set", "run.run_model=models/nope"], ["run.run_model", "not a local model folder"]),
    ("missing judge model", ["--set", "judge.judge_backend=hf", "--set", "judge.judge_model=nope"],
     ["judge.judge_model", "not a local model folder"]),
    ("missing accelerate config", ["--set", "run.run_accelerate_config=nope.yaml"], ["run_accelerate_config",
                                                                                    "does not exist"]),
]


@pytest.mark.parametrize("what,overrides,words", RUN_REFUSALS, ids=[r[0] for r in RUN_REFUSALS])
def test_run_refuses_before_any_step_folder(tmp_path, monkeypatch, capsys, what, overrides, words):
    from srpo.cli import main

    monkeypatch.chdir(tmp_path)  # relative paths resolve here, and nothing may be written here either
    rc = main(["run", SMOKE, "--set", "run.run_runs_dir=runs", *overrides])
    out, err = capsys.readouterr()
    assert rc == 2, (what, out[-2000:], err[-2000:])
    assert "Traceback" not in err
    for w in words:
        assert w in err, (what, w, err)
    assert list(tmp_path.iterdir()) == [], (what, sorted(p.name for p in tmp_path.rglob("*")))


def test_validate_command(tmp_path, monkeypatch, capsys):
    from srpo.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["validate", SMOKE]) == 0 and capsys.readouterr().out.startswith("OK ")
    assert main(["validate", "--preflight", SMOKE, "--set", "run.run_model=models/nope"]) == 2
    assert "run.run_model" in capsys.readouterr().err
    # Static checks do not look at this machine's files: the same recipe passes without --preflight.
    assert main(["validate", SMOKE, "--set", "run.run_model=models/nope"]) == 0
    assert list(tmp_path.iterdir()) == []


def test_no_bitsandbytes_noise_unless_qlora(tmp_path):
    proc = _srpo(["validate", SMOKE], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "gemm_4bit_forward" not in proc.stderr + proc.stdout


CLI_CASES = [["run", "missing.yaml"], ["run", SMOKE, "--set", "nonsense"], ["run", SMOKE, "--set", "sft.max_stepz=3"],
             ["frobnicate"], ["validate"]]


def test_cli_prints_one_paragraph_no_traceback(tmp_path):
    for args in CLI_CASES:
        proc = _srpo(args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stderr.strip(), (args, proc.stderr)
    assert list(tmp_path.iterdir()) == []  # nothing written where it was run


def test_corpus_counts_at_least_thirty_kinds():
    from data_builders.sources import validate

    source_kinds = len(validate.REASONS)  # each reason code has a fixture in test_sources.py (checked there)
    assert source_kinds + len(RECIPES) + len(RUN_REFUSALS) + len(CLI_CASES) >= 30, (source_kinds, len(RECIPES))
