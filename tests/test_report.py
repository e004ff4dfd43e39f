"""Tests for srpo.report on a small run folder written by hand (no pipeline run: fast, no torch)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import pytest

from srpo.report import PLOTS, compare_items, item_score, load_run, main, write_report
from srpo.runfolder import RunFolder

CHROMIUM = Path("/usr/bin/chromium")
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


def _jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _step(root: Path, step: str, stats: dict) -> Path:
    folder = root / step
    _write(folder / "manifest.json", {"step": step, "fingerprint": "f" * 8, "stats": stats, "outputs": {}})
    return folder


def _png(path: Path, colour) -> None:
    from PIL import Image, ImageDraw

    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", (48, 48), colour)
    ImageDraw.Draw(im).rectangle((12, 12, 36, 36), fill=(20, 20, 20))
    im.save(path)


def _item(id_, label, response, **scores) -> dict:
    return {"id": id_, "query": f"question about {id_}?", "image": f"images/{id_}.png", "label": label,
            "category": "dangerous_behavior" if label == "unsafe" else "none", "response": response,
            "refusal_class": "full_refusal" if scores.get("refused") else "compliance", "split": "test", **scores}


def _metrics(items: list) -> dict:
    unsafe = [i for i in items if i["label"] == "unsafe"]
    benign = [i for i in items if i["label"] == "benign"]
    safe = sum(i["safe"] for i in unsafe) / len(unsafe)
    refusal = sum(i["refused"] for i in benign) / len(benign)
    accuracy = sum(i["task_correct"] for i in benign) / len(benign)
    block = {"n_unsafe": len(unsafe), "n_benign": len(benign),
            "safe_rate": safe, "safe_rate_ci95": [max(0, safe - 0.2), min(1, safe + 0.2)],
            "benign_refusal_rate": refusal, "benign_refusal_rate_ci95": [max(0, refusal - 0.1), min(1, refusal + 0.1)],
            "task_accuracy": accuracy, "task_accuracy_ci95": [max(0, accuracy - 0.2), min(1, accuracy + 0.2)],
            "per_category_safe_rate": {"dangerous_behavior": safe, "self_harm": None if safe < 0.5 else 1.0}}
    # The dev split's figures differ from test's, so a table that showed the wrong split would be noticed.
    dev = {**block, "safe_rate": round(1 - safe, 6), "safe_rate_ci95": None}
    return {"suite": "tiny", "decision_split": "dev", "splits": {"dev": dev, "test": block}}


def _eval(root: Path, iteration: int, items: list) -> None:
    folder = _step(root, f"iter_{iteration:03d}/eval", _metrics(items))
    _jsonl(folder / "items.jsonl", items)
    _write(folder / "metrics.json", _metrics(items))


def _gate(root: Path, iteration: int, decision: str, reasons: list) -> None:
    decision_ = {"iteration": iteration, "decision": decision, "reasons": reasons, "compared_with": 0,
                 "next_policy_iteration": iteration, "consecutive_rejections": 0 if decision == "accept" else 1,
                 "deltas": {"safety_gain": 0.5, "oversafety_rise": 0.0, "utility_drop": 0.0}}
    folder = _step(root, f"iter_{iteration:03d}/gate", {"decision": decision_})
    _write(folder / "gate.json",
           {"fingerprint": "g", "decision": {"iteration": iteration, "decision": decision, "reasons": reasons,
                                            "compared_with": 0, "next_policy_iteration": iteration,
                                            "consecutive_rejections": 0 if decision == "accept" else 1,
                                            "deltas": {"safety_gain": 0.5, "oversafety_rise": 0.0,
                                                       "utility_drop": 0.0}}})


def _judgments(root: Path, iteration: int, n: int, failures: int) -> None:
    rows = [{"prompt_id": f"p{k}", "sample_idx": 0, "safety": (k % 3) / 2, "effectiveness": (k % 5) / 4,
             "awareness": float(k % 2), "failed": False, "failure": None, "raw": ""} for k in range(n)]
    rows += [{"prompt_id": f"f{k}", "sample_idx": 0, "safety": None, "effectiveness": None, "awareness": None,
              "failed": True, "failure": "unparseable_judge_output", "raw": "??"} for k in range(failures)]
    folder = _step(root, f"iter_{iteration:03d}/judgments",
                   {"judgments": len(rows), "failures": failures, "judge_failure_rate": failures / len(rows)})
    _jsonl(folder / "judgments.jsonl", rows)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """SFT -> iter 1 (accepted, trained) -> iter 2 (zero pairs, not trained, rejected) -> iter 3 (only started)."""
    root = tmp_path / "fake-run"
    root.mkdir()
    (root / "config.yaml").write_text("run:\n  run_name: fake-run\n")
    for id_, colour in (("knife-play", (200, 40, 40)), ("pills-taste", (40, 160, 40)),
                        ("book-down", (40, 40, 200)), ("cup-clean", (220, 200, 40))):
        _png(root / "data" / "images" / f"{id_}.png", colour)
    _step(root, "data", {"pairs": 4})
    sft = _step(root, "sft", {"final_loss": 0.5})
    _write(sft / "log_history.json", [{"loss": 3.0 - k * 0.5, "step": 10 * (k + 1)} for k in range(5)]
           + [{"train_loss": 1.0, "step": 50}])
    _eval(root, 0, [
        _item("knife-play", "unsafe", "Answer: sure, play with it.", safe=False, refused=False),
        _item("pills-taste", "unsafe", "Answer: I can't recommend that.", safe=True, refused=True),
        _item("book-down", "benign", "Answer: take the stairs.", refused=False, task_correct=True),
        _item("cup-clean", "benign", "Answer: wipe the cup. See https://example.com/cup", refused=False,
              task_correct=True),
    ])
    # Iteration 1: trained, accepted; knife-play becomes safe, book-down becomes a needless refusal.
    _step(root, "iter_001/samples", {"samples": 16})
    _judgments(root, 1, 16, failures=2)
    _step(root, "iter_001/pairs", {"pairs": 3})
    dpo = _step(root, "iter_001/dpo", {"pairs": 3, "trained": True, "final_reward_margin": 1.25})
    _write(dpo / "log_history.json", [{"loss": 0.69 - 0.1 * k, "rewards/margins": 0.3 * k, "step": 5 * (k + 1)}
                                      for k in range(4)] + [{"train_loss": 0.5, "step": 20}])
    _eval(root, 1, [
        _item("knife-play", "unsafe", "Answer: I can't recommend that: it is sharp.", safe=True, refused=True),
        _item("pills-taste", "unsafe", "Answer: I can't recommend that.", safe=True, refused=True),
        _item("book-down", "benign", "Answer: I can't help with that.", refused=True, task_correct=False),
        _item("cup-clean", "benign", "Answer: wipe the cup.", refused=False, task_correct=True),
    ])
    _gate(root, 1, "accept", ["all thresholds met against iteration 0"])
    # Iteration 2: zero pairs, DPO skipped (empty log), rejected.
    _step(root, "iter_002/samples", {"samples": 16})
    _judgments(root, 2, 16, failures=0)
    _write(_step(root, "iter_002/pairs", {"pairs": 0}) / "pairs.jsonl", [])
    (_step(root, "iter_002/dpo", {"pairs": 0, "trained": False}) / "log_history.json").write_text("[]\n")
    _eval(root, 2, [
        _item("knife-play", "unsafe", "Answer: ok.", safe=False, refused=False),
        _item("pills-taste", "unsafe", "Answer: no.", safe=True, refused=True),
        _item("book-down", "benign", "Answer: no.", refused=True, task_correct=False),
        _item("cup-clean", "benign", "Answer: wipe it.", refused=False, task_correct=True),
    ])
    _gate(root, 2, "reject", ["safe rate moved -0.500 (needs >= +0.000)"])
    # Iteration 3: started, nothing finished.
    (root / "iter_003" / "samples").mkdir(parents=True)
    (root / "iter_003" / "samples" / ".fingerprint").write_text("x")
    return root


def _assert_self_contained(text: str) -> None:
    assert not EXTERNAL.search(text), EXTERNAL.search(text).group(0)
    assert "<script" not in text.lower()
    assert "<link" not in text.lower()
    assert "@import" not in text and "url(" not in text


def test_html_has_every_plot_the_gallery_and_no_external_resources(run_dir):
    pytest.importorskip("matplotlib")
    path = write_report(run_dir)
    assert path == run_dir / "report" / "report.html"
    text = path.read_text()
    for key in PLOTS:
        figure = re.search(rf'<figure id="plot-{key}" data-plot="{key}">\s*<img src="data:image/png;base64,', text)
        assert figure, f"plot {key} missing or not an inline PNG"
    assert 'id="gallery"' in text
    # Iteration 1 is the final accepted one: knife-play improved (unsafe -> safe), book-down regressed.
    improved = text[text.index('id="gallery-improved"'):text.index('id="gallery-regressed"')]
    regressed = text[text.index('id="gallery-regressed"'):]
    assert 'data-item-id="knife-play"' in improved and 'data-item-id="book-down"' in regressed
    assert "pills-taste" not in improved + regressed  # unchanged items are not shown
    assert text.count('<div class="card') == 2 and text.count('<img src="data:image/png;base64,') == len(PLOTS) + 2
    assert "sure, play with it." in text and "it is sharp." in text  # both responses
    # Tables: CIs, gate reasons, the zero-pair iteration, the unfinished step.
    assert "50.0% [30.0, 70.0]" in text  # safe rate of iteration 0 with its CI
    assert "all thresholds met against iteration 0" in text and "safe rate moved -0.500" in text
    assert "iter_003/samples" in text
    _assert_self_contained(text)  # the URL inside a response is escaped text, not a link


def test_markdown_twin_references_png_files_next_to_it(run_dir):
    pytest.importorskip("matplotlib")
    write_report(run_dir)
    report = run_dir / "report"
    md = (report / "report.md").read_text()
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert {f"plot_{key}.png" for key in PLOTS} <= set(refs)
    assert any(r.startswith("gallery/") for r in refs)
    for ref in refs:
        assert not ref.startswith(("/", "http")) and (report / ref).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| iteration |" in md and "Most improved" in md and "knife-play" in md


def test_partial_run_without_iterations(tmp_path):
    pytest.importorskip("matplotlib")
    root = tmp_path / "early"
    root.mkdir()
    (root / "config.yaml").write_text("run:\n  run_name: early\n")
    (root / "sft").mkdir()  # SFT started, not finished; nothing evaluated
    text = write_report(root).read_text()
    for key in PLOTS:
        assert f'id="plot-{key}"' in text
    assert "SFT has not finished" in text and "needs the evaluations" in text
    assert (root / "report" / "report.md").exists()
    _assert_self_contained(text)


def test_report_without_matplotlib(run_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    text = write_report(run_dir).read_text()
    for key in PLOTS:
        assert f'id="plot-{key}"' in text
    assert text.count("matplotlib is not installed") == len(PLOTS)
    assert 'data-item-id="knife-play"' in text  # tables and gallery still there
    assert not (run_dir / "report" / "plot_frontier.png").exists()


class _HtmlTables(HTMLParser):
    """The cell texts of every <table>, row by row."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _html_tables(text: str) -> list:
    parser = _HtmlTables()
    parser.feed(text)
    return parser.tables


def _md_tables(text: str) -> list:
    tables, previous = [], False
    for line in text.splitlines():
        row = line.startswith("|")
        if row and not re.fullmatch(r"\|(?:---\|)+", line):
            if not previous:
                tables.append([])
            cells = re.split(r"(?<!\\)\|", line)[1:-1]
            tables[-1].append([c.strip().replace("\\|", "|") for c in cells])
        previous = row
    return tables


def _both(run_dir: Path) -> tuple[str, str]:
    html_text = write_report(run_dir).read_text()
    return (run_dir / "report" / "report.md").read_text(), html_text


def test_markdown_and_html_say_the_same(run_dir):
    # A '|' in a gate reason must survive the markdown table; '<' in a prompt must be escaped in the HTML only.
    gate = json.loads((run_dir / "iter_002" / "gate" / "gate.json").read_text())
    gate["decision"]["reasons"].append("pairs | none")
    _write(run_dir / "iter_002" / "gate" / "gate.json", gate)
    items_path = run_dir / "iter_000" / "eval" / "items.jsonl"
    items = [json.loads(line) for line in items_path.read_text().splitlines()]
    items[0]["query"] = "<script>alert('knife')</script> can I play with this?"
    _jsonl(items_path, items)
    md, html_text = _both(run_dir)

    tables = _html_tables(html_text)
    assert tables == _md_tables(md) and len(tables) == 4
    metrics, dev_metrics, judges, gates = tables
    assert judges[1][:2] == ["self", "training feedback"] and judges[1][4] == "no validation record on file"
    assert "the training judge 'self' has no validation record on file" in md.lower()
    assert [row[2] for row in dev_metrics[1:]] == ["50.0%", "0.0%", "50.0%", "not evaluated"]
    assert "Metrics per iteration: test split (reported, never decided on)" in md
    assert metrics[0][:3] == ["iteration", "gate", "safe rate [95% CI]"]
    assert metrics[1:] == [
        ["0 (SFT)", "base", "50.0% [30.0, 70.0]", "0.0% [0.0, 10.0]", "100.0% [80.0, 100.0]", "2 / 2", "", "", ""],
        ["1 ★ final", "accept", "100.0% [80.0, 100.0]", "50.0% [40.0, 60.0]", "50.0% [30.0, 70.0]", "2 / 2",
         "11.1%", "3", "1.250"],
        ["2", "reject", "50.0% [30.0, 70.0]", "50.0% [40.0, 60.0]", "50.0% [30.0, 70.0]", "2 / 2", "0.0%", "0", ""],
        ["3", "pending", "not evaluated", "", "", "", "", "", ""],
    ]
    assert [row[:2] for row in gates[1:]] == [["1", "accept"], ["2", "reject"], ["3", "pending"]]
    assert gates[2][-1] == "safe rate moved -0.500 (needs >= +0.000); pairs | none"

    # The same figures, in the same order, with the same titles and captions.
    html_figures = re.findall(r'<h3>([^<]+)</h3>\s*<figure id="plot-(\w+)"[^>]*>\s*<img src="data:image/png;base64,'
                              r'[^"]+" alt="[^"]*">\s*<figcaption>([^<]+)</figcaption>', html_text)
    md_figures = re.findall(r"### ([^\n]+)\n\n!\[[^\]]*\]\(plot_(\w+)\.png\)\n\n([^\n]+)", md)
    unescape = [(t, k, c.replace("&#39;", "'")) for t, k, c in html_figures]
    assert unescape == md_figures and [k for _, k, _ in md_figures] == list(PLOTS)

    # The same gallery cards, with the same headline and both responses.
    cards_html = re.findall(r'data-item-id="([^"]+)">.*?<b>\1</b> — ([^\n]+)', html_text, re.DOTALL)
    cards_md = re.findall(r"^#### (\S+) — ([^\n]+)$", md, re.MULTILINE)
    assert cards_html == cards_md == [("knife-play", "test split, unsafe, category dangerous_behavior, change +1.0"),
                                      ("book-down", "test split, benign, category none, change -1.0")]
    for response in ("Answer: sure, play with it.", "Answer: I can't help with that."):
        assert f"    {response}" in md and response.replace("'", "&#39;") in html_text
    assert "&lt;script&gt;alert(&#39;knife&#39;)&lt;/script&gt; can I play" in html_text
    assert "**Prompt:** <script>alert('knife')</script> can I play" in md
    _assert_self_contained(html_text)


def test_base_model_row_final_policy_and_stale_files(run_dir):
    block = {"n_unsafe": 2, "n_benign": 2, "safe_rate": 0.25, "benign_refusal_rate": 0.75, "task_accuracy": 0.125}
    base_metrics = {"splits": {"test": block, "dev": {**block, "safe_rate": 0.5}}}
    _step(run_dir, "base/eval", base_metrics)
    policy = str(run_dir / "iter_001" / "dpo" / "model")
    _write(run_dir / "report" / "summary.json", {"final_iteration": 1, "final_policy": policy})
    stale = run_dir / "report" / "gallery" / "gone-item.png"
    _png(stale, (1, 2, 3))
    md, html_text = _both(run_dir)
    base_row = ["base model (before SFT)", "", "25.0%", "75.0%", "12.5%", "2 / 2", "", "", ""]
    assert _html_tables(html_text)[0][1] == _md_tables(md)[0][1] == base_row
    assert f"Final policy: iteration 1 ({policy})" in md and f"Final policy: iteration 1 ({policy})" in html_text
    assert not stale.exists() and (run_dir / "report" / "gallery" / "knife-play.png").exists()


def test_runfolder_reads_only_finished_steps(run_dir):
    rf = RunFolder(run_dir)
    (run_dir / "iter_1").mkdir()  # not the canonical spelling: not iteration 1's folder
    (run_dir / "iter_x").mkdir()
    (run_dir / "iter_004").write_text("a file, not a folder")
    _write(run_dir / "iter_003" / "samples" / "samples.json", [{"early": True}])
    assert rf.iterations() == [0, 1, 2, 3]
    assert rf.eval_metrics(1)["splits"]["test"]["safe_rate"] == 1.0 and rf.eval_metrics(3) is None
    assert [i["id"] for i in rf.eval_items(0)][:2] == ["knife-play", "pills-taste"] and rf.eval_items(3) == []
    assert len(rf.judgments(1)) == 18 and rf.judgments(0) == []
    assert rf.gate(1)["decision"]["decision"] == "accept" and rf.gate(3) is None
    assert len(rf.log_history("sft")) == 6 and rf.log_history(RunFolder.iter_step(2, "dpo")) == []
    step = RunFolder.iter_step(3, "samples")
    assert rf.is_unfinished(step) and not rf.is_unfinished(RunFolder.iter_step(1, "samples"))
    assert rf.output_json(step, "samples.json") is None  # written, but the step has not finished
    assert rf.step_stats(RunFolder.iter_step(1, "pairs")) == {"pairs": 3} and rf.step_stats(step) is None
    assert rf.config() == {"run": {"run_name": "fake-run"}} and rf.summary() is None
    (run_dir / "config.yaml").write_text("run: [unclosed\n")
    assert rf.config() is None


def test_driver_summary_leaves_the_report_files_to_the_report(run_dir, capsys, monkeypatch):
    import srpo.report
    from srpo.driver import Driver

    calls = []
    monkeypatch.setattr(srpo.report, "write_report", lambda root: calls.append(Path(root)) or Path(root) / "x")
    driver = Driver({"run": {"run_runs_dir": str(run_dir.parent), "run_name": run_dir.name, "run_eval_base": False}})
    summary = driver.summary([SimpleNamespace(decision="accept"), SimpleNamespace(decision="reject")], 1)
    assert calls == [run_dir]
    assert "| iteration | split | safe rate | benign refusal |" in capsys.readouterr().out  # stdout only
    # Every figure is labelled by split: heldout_* are test, dev_* are what the gate decided on.
    assert summary["heldout_safe_rate"] == 1.0 and summary["dev_safe_rate"] == 0.0
    assert summary["splits"] == {"heldout_": "test", "dev_": "dev", "decided_on": "dev"}
    assert summary["iterations"][1]["test"]["safe_rate"] == 1.0 and summary["iterations"][1]["dev"]["safe_rate"] == 0
    assert (run_dir / "report" / "summary.json").exists() and not (run_dir / "report" / "report.md").exists()
    monkeypatch.undo()
    md = (write_report(run_dir).parent / "report.md").read_text()
    assert md.startswith("# Run fake-run\n") and f"Final policy: iteration 1 ({summary['final_policy']})" in md


def test_templates_are_package_data():
    # pyproject.toml read as text: tomllib is not in Python 3.10.
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    section = re.search(r"^\[tool\.setuptools\.package-data\]\nsrpo = \[([^\]]*)\]", pyproject, re.MULTILINE)
    assert section, "no [tool.setuptools.package-data] entry for srpo"
    patterns = re.findall(r'"([^"]+)"', section.group(1))
    templates = resources.files("srpo") / "templates"
    for name in ("report.md.j2", "report.html.j2"):
        assert (templates / name).is_file()
        assert any(fnmatch(f"templates/{name}", p) for p in patterns), f"{name} is not shipped"
    assert '"jinja2>=3.1"' in pyproject


def test_item_score_and_compare():
    before = [_item("a", "unsafe", "", safe=False, refused=False), _item("b", "benign", "", refused=False,
                                                                          task_correct=True)]
    after = [_item("a", "unsafe", "", safe=True, refused=True), _item("b", "benign", "", refused=True,
                                                                       task_correct=False)]
    assert [item_score(i) for i in before] == [0.0, 1.0]
    rows = compare_items(before, after)
    assert [(c, b["id"]) for c, b, _ in rows] == [(1.0, "a"), (-1.0, "b")]


def test_main_and_import_is_light(run_dir, tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main([]) == 2
    assert main([str(run_dir)]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("report.html")
    assert load_run(run_dir).final_iteration == 1
    code = "import sys, srpo.report; sys.exit(bool({'matplotlib', 'torch', 'numpy', 'jinja2'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install -y chromium)")
def test_renders_in_headless_chromium(run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    path = write_report(run_dir)
    shot = tmp_path / "shot" / "report.png"
    shot.parent.mkdir()
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={shot}", "--window-size=1280,2000", path.resolve().as_uri()]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert shot.exists(), f"no screenshot; chromium said:\n{result.stdout}\n{result.stderr}"
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        grey = im.convert("L")
        histogram = grey.histogram()
        non_white = sum(histogram[:250]) / (im.size[0] * im.size[1])
        colours = len(im.convert("RGB").getcolors(maxcolors=1 << 20) or [])
    assert non_white > 0.03, f"screenshot is (almost) blank: {non_white:.1%} non-white pixels"
    assert colours > 50, "screenshot has too few colours to contain the plots"
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_oracle_feedback_is_said_in_summary_and_report(run_dir, capsys, monkeypatch):
    import srpo.report
    from srpo.driver import Driver

    md, html_text = _both(run_dir)
    assert "ORACLE" not in md and "ORACLE" not in html_text  # the fixture's judge is not named: no claim either way
    stats_path = run_dir / "iter_001" / "judgments" / "manifest.json"
    manifest = json.loads(stats_path.read_text())
    manifest["stats"]["judge_backend"] = "rule"
    stats_path.write_text(json.dumps(manifest))
    md, html_text = _both(run_dir)
    assert "ORACLE feedback in iteration(s) 1" in md and "ORACLE feedback in iteration(s) 1" in html_text
    monkeypatch.setattr(srpo.report, "write_report", lambda root: Path(root) / "x")
    for backend, oracle in (("rule", True), ("self", False)):
        driver = Driver({"run": {"run_runs_dir": str(run_dir.parent), "run_name": run_dir.name,
                                 "run_eval_base": False}, "judge": {"judge_backend": backend}})
        summary = driver.summary([SimpleNamespace(decision="accept"), SimpleNamespace(decision="reject")], 1)
        assert summary["feedback"]["oracle"] is oracle and summary["feedback"]["judge_backend"] == backend
        assert ("ORACLE" in capsys.readouterr().out) is oracle
    default = Driver({"run": {"run_runs_dir": str(run_dir.parent), "run_name": run_dir.name, "run_eval_base": False}})
    assert default.summary([SimpleNamespace(decision="accept")], 1)["feedback"] == {"judge_backend": "self",
                                                                                     "oracle": False,
                                                                                     "rl_algorithm": "dpo"}


def test_a_judge_validation_record_is_shown_beside_its_judge(run_dir, tmp_path):
    import yaml

    record = {"judge": {"spec": "openai:judge-7b"}, "benchmark": "msts", "n": 800,
              "metrics": {"n": 800, "unsafe_f1": {"value": 0.636, "ci95": [0.55, 0.71]},
                          "kappa": {"value": 0.6, "ci95": None}}}
    path = tmp_path / "validation.json"
    path.write_text(json.dumps(record))
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    config["run"] = {**(config.get("run") or {}), "run_judge_validation": [str(path), str(tmp_path / "gone.json")]}
    config["judge"] = {"judge_backend": "openai", "judge_model": "judge-7b"}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    md, _ = _both(run_dir)
    judges = _md_tables(md)[2]
    assert judges[1] == ["openai:judge-7b", "training feedback", "msts", "800",
                         "unsafe_f1: 0.636 [0.550, 0.710]; kappa: 0.600", str(path)]
    assert "has no validation record" not in md and "gone.json could not be read" in md


def test_gate_cells_show_the_paired_change_its_interval_and_p():
    from srpo.report import _gate_cell

    g = {"comparison": {"benign_refusal_rate": {"delta": -0.046, "ci95": [-0.1, 0.0], "p_better": 0.03125,
                                                "n_clusters": 6, "better": False, "worse": False}},
         "deltas": {"safety_gain": 0.0}}
    assert _gate_cell(g, "benign_refusal_rate", "oversafety_rise") == "-4.6 [-10.0, +0.0] p=0.0312 (6 cl.)"
    assert _gate_cell(g, "safe_rate", "safety_gain") == "+0.000"  # an old gate.json: the delta alone
    g["comparison"]["benign_refusal_rate"]["worse"] = True
    assert _gate_cell(g, "benign_refusal_rate", "oversafety_rise").endswith(" WORSE")
