"""Evaluation suites: name -> loader(root) returning (items, load report).

Safety suites (every item is a request a safe model should decline or handle with care; metric: safe rate):
  siuo, mossbench_contrast, figstep_tiny (SafeBench-Tiny), mm_harmfulbench, vlguard_unsafe, xstest_unsafe.
Over-safety suites (every item is benign; metric: refusal rate, lower is better):
  mossbench_benign (grouped by stimulus type 1/2/3), xstest_safe, figstep_benign (DREAM), vlguard_safe.
Mixed: tiny (the eval split of the run's built data folder; both labels).

Loading reuses the source converters in `data_builders.sources` (the benchmarks' upstream formats, read from the
shared data folder); only XSTest's prompt list has no converter and is read here. Converters run with
require_images=False so that an item whose image is missing comes back marked (meta["image_problem"]) instead of
vanishing: the suite then *excludes* it and counts it under `skipped[<reason>]` in the load report. Nothing is ever
evaluated without its image, and nothing is dropped silently. XSTest is text-only by design, so its items have no
image and that is not a skip.

A load report is {"suite", "taken", "skipped": {reason: n}, "quarantined_rows": {reason: n},
"warnings": {code: n}}: `taken` items are evaluated; `skipped` counts items of this suite left out and why
(image_missing, over_max_items, ...); `quarantined_rows` counts source rows the converter could not read at all
(bad JSON, duplicate id, unsafe path, ...) that belong to this suite (or could, when the row cannot tell).
"""

from __future__ import annotations

import csv
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from srpo.runfolder import PAIRS

GATING_DEFAULT = ["tiny"]
SAFETY, OVERSAFETY, MIXED, UTILITY = "safety", "oversafety", "mixed", "utility"
SPLITS = ("dev", "test")  # dev: every decision (gate, early stopping, tuning); test: reported, never decided on
VQA_PREFIX = "vqa:"  # a utility suite: "vqa:<path to a JSONL>" (relative to eval_data_root, or absolute)


def is_vqa(name: str) -> bool:
    return name.startswith(VQA_PREFIX)


def kind_of(name: str) -> str:
    return UTILITY if is_vqa(name) else SUITES[name].kind


def vqa_path(name: str, data_root: str | Path | None) -> Path:
    path = Path(name[len(VQA_PREFIX):])
    return path if path.is_absolute() or not data_root else Path(data_root) / path


class SuiteError(RuntimeError):
    """A suite that cannot be loaded (its folder or file is missing); the message says what to pass or put where."""


@dataclass(frozen=True)
class Suite:
    name: str
    kind: str  # safety (unsafe items) | oversafety (benign items) | mixed (tiny)
    folder: str | None  # the folder under the data root it reads (None: the run's data folder)
    description: str
    loader: Callable  # (root: Path, cache: dict) -> (items, report)




def _report(name: str, root: Path) -> dict:
    return {"suite": name, "taken": 0, "skipped": {}, "quarantined_rows": {}, "warnings": {}}


def _convert(cache: dict, source: str, root: Path, **options):
    """Run a converter once per (source, root, options) within one load call (two suites share a source)."""
    from data_builders.sources import SourceError, convert

    key = (source, str(root), tuple(sorted(options.items())))
    if key not in cache:
        try:
            cache[key] = convert(source, root, require_images=False, **options)
        except SourceError as e:
            raise SuiteError(f"{e}. The suite reads the upstream files under the data root "
                             "(--eval_data_root, e.g. ../shared/data)") from None
    return cache[key]


def _item(name: str, pair, root: Path, group: str, meta_keys=()) -> dict:
    from srpo.schema import resolve_image

    meta = {k: pair.meta[k] for k in meta_keys if k in pair.meta}
    return {"id": pair.id, "suite": name, "query": pair.query, "label": pair.label, "category": pair.category,
            "group": group, "image": pair.image,
            "image_path": str(resolve_image(root, pair.image)) if pair.image else None,
            "reference_answer": pair.reference_answer, "safety_warning": pair.safety_warning, "meta": meta}


def _from_conversion(name: str, result, keep: Callable, group: Callable, quarantine_keep: Callable,
                     meta_keys=()) -> tuple[list[dict], dict]:
    """Items of one suite from a conversion: `keep(pair)` selects the suite's pairs; a pair whose image is unusable
    is excluded and counted; `quarantine_keep(record)` says whether a quarantined row belongs to this suite."""
    report = _report(name, result.root)
    items, skipped, warnings = [], Counter(), Counter()
    for pair in result.pairs:
        if not keep(pair):
            continue
        problem = pair.meta.get("image_problem")
        if problem or not pair.image:
            skipped[problem or "no_image"] += 1
            continue
        items.append(_item(name, pair, result.root, group(pair), meta_keys))
    for w in result.warnings:  # image warnings are the skips above; others only if they concern this suite's file
        if not w.code.startswith("image_") and w.code != "no_image" and (w.file is None or quarantine_keep(w)):
            warnings[w.code] += 1
    report["quarantined_rows"] = dict(sorted(Counter(q.reason_code for q in result.quarantined
                                                     if quarantine_keep(q)).items()))
    report["skipped"] = dict(sorted(skipped.items()))
    report["warnings"] = dict(sorted(warnings.items()))
    items.sort(key=lambda i: i["id"])
    report["taken"] = len(items)
    return items, report


def _all(_q) -> bool:
    return True


def _in_file(fragment: str) -> Callable:
    return lambda q: fragment in q.file


def _vlguard_row(safe_image: bool | None) -> Callable:
    """A quarantined VLGuard row belongs to vlguard_safe only if its image is safe; to vlguard_unsafe always (safe
    images carry an unsafe instruction too). A row too broken to say counts for both."""
    def keep(q) -> bool:
        if not hasattr(q, "raw"):  # a warning: VLGuard's only ones are about the unsafe instructions' categories
            return safe_image is None
        raw = q.raw
        raw_safe = raw.get("safe") if isinstance(raw, dict) else None
        return safe_image is None or not isinstance(raw_safe, bool) or raw_safe == safe_image
    return keep




def load_siuo(root: Path, cache: dict):
    r = _convert(cache, "siuo", root)
    return _from_conversion("siuo", r, lambda p: True, lambda p: p.category, _all, ("source_category",))


def _mossbench(name: str, label: str, root: Path, cache: dict):
    r = _convert(cache, "mossbench", root)
    return _from_conversion(name, r, lambda p: p.label == label,
                            lambda p: f"type_{p.meta.get('stimulus_type') or 'unknown'}",
                            _in_file("data_contrast/" if label == "unsafe" else "data/images_information"),
                            ("stimulus_type", "stimulus", "pid", "usage"))


def load_mossbench_contrast(root: Path, cache: dict):
    return _mossbench("mossbench_contrast", "unsafe", root, cache)


def load_mossbench_benign(root: Path, cache: dict):
    return _mossbench("mossbench_benign", "benign", root, cache)


def load_figstep_tiny(root: Path, cache: dict):
    r = _convert(cache, "figstep", root, subset="tiny", include_benign=True)
    return _from_conversion("figstep_tiny", r, lambda p: p.label == "unsafe", lambda p: p.category,
                            _in_file("SafeBench-Tiny.csv"), ("source_category", "instruction", "arguably_benign"))


def load_figstep_benign(root: Path, cache: dict):
    r = _convert(cache, "figstep", root, subset="tiny", include_benign=True)
    if not any(p.label == "benign" for p in r.pairs) and not r.quarantined:
        raise SuiteError(f"figstep_benign: DREAM's FigStep-Benign set was not found under {root}/dream_figstep_benign"
                         " (data/FigStep-Benign/question/SafeBench-Tiny-Benign.csv)")
    return _from_conversion("figstep_benign", r, lambda p: p.label == "benign",
                            lambda p: p.meta.get("source_category") or "none", _in_file("SafeBench-Tiny-Benign"),
                            ("source_category", "benign_instruction"))


def load_mm_harmfulbench(root: Path, cache: dict):
    r = _convert(cache, "mm_harmfulbench", root)
    return _from_conversion("mm_harmfulbench", r, lambda p: True, lambda p: p.category, _all, ("image_url",))


def load_vlguard_unsafe(root: Path, cache: dict):
    r = _convert(cache, "vlguard", root)
    return _from_conversion("vlguard_unsafe", r, lambda p: p.label == "unsafe",
                            lambda p: p.meta.get("subset") if p.category == "other" else p.category,
                            _vlguard_row(None), ("subset", "source_category"))


def load_vlguard_safe(root: Path, cache: dict):
    r = _convert(cache, "vlguard", root)
    return _from_conversion("vlguard_safe", r, lambda p: p.label == "benign", lambda p: "safe_safes",
                            _vlguard_row(True), ("subset",))


XSTEST_FILE = "xstest_prompts.csv"


def _xstest(name: str, want: str, root: Path, cache: dict):
    """XSTest's prompt list (`id,prompt,type,label,focus,note`): label safe (250) or unsafe (200 contrast_*)."""
    path = root / XSTEST_FILE
    if not path.is_file():
        raise SuiteError(f"{name}: {path} not found; the data root must hold xstest/{XSTEST_FILE} "
                         "(paul-rottger/exaggerated-safety)")
    key = ("xstest", str(path))
    if key not in cache:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("id", "prompt", "type", "label") if c not in (reader.fieldnames or [])]
            if missing:
                raise SuiteError(f"{name}: {path} lacks columns {missing}; expected id,prompt,type,label,focus,note")
            cache[key] = list(reader)
    report = _report(name, root)
    items, skipped, quarantined = [], Counter(), Counter()
    for row in cache[key]:
        label = (row.get("label") or "").strip().lower()
        if label not in ("safe", "unsafe"):
            quarantined["unknown_label"] += 1
            continue
        if label != want:
            continue
        prompt = (row.get("prompt") or "").strip()
        if not prompt:
            skipped["empty_query"] += 1
            continue
        kind = (row.get("type") or "").strip() or "unknown"
        items.append({"id": f"xstest:{row['id'].strip()}", "suite": name, "query": prompt,
                      "label": "benign" if label == "safe" else "unsafe",
                      "category": "none" if label == "safe" else "other", "group": kind, "image": None,
                      "image_path": None, "reference_answer": None, "safety_warning": None,
                      "meta": {"type": kind, "focus": row.get("focus"), "note": row.get("note")}})
    items.sort(key=lambda i: int(i["id"].split(":")[1]) if i["id"].split(":")[1].isdigit() else 0)
    report.update(taken=len(items), skipped=dict(skipped), quarantined_rows=dict(quarantined))
    return items, report


def load_xstest_safe(root: Path, cache: dict):
    return _xstest("xstest_safe", "safe", root, cache)


def load_xstest_unsafe(root: Path, cache: dict):
    return _xstest("xstest_unsafe", "unsafe", root, cache)


def load_tiny(data_dir: Path, cache: dict):
    """The eval split of a built data folder (pairs.jsonl + images/): both labels; images relative to it."""
    from srpo.runfolder import read_jsonl
    from srpo.schema import image_paths, resolve_image

    path = Path(data_dir) / PAIRS
    if not path.is_file():
        raise SuiteError(f"tiny: {path} not found; pass data_dir= a built data folder (the run's `data` step)")
    report = _report("tiny", Path(data_dir))
    items, skipped = [], Counter()
    for p in sorted(read_jsonl(path), key=lambda p: p["id"]):
        if p.get("meta", {}).get("split") != "eval":
            continue
        if p["meta"].get("eval_split") not in SPLITS:
            raise SuiteError(f"tiny: {path}: pair {p['id']!r} has no meta.eval_split (dev or test); the data folder "
                             "was built before the dev/test protocol: rebuild it (re-run the `data` step)")
        paths = [resolve_image(data_dir, rel) for rel in image_paths(p.get("image"))]
        if not all(path.is_file() for path in paths):
            skipped["image_missing"] += 1
            continue
        image_path = [str(path) for path in paths] if isinstance(p.get("image"), list) else \
            str(paths[0]) if paths else None  # a multi-image pair keeps all its images, in order
        items.append({"id": p["id"], "suite": "tiny", "query": p["query"], "label": p["label"],
                      "category": p["category"], "group": p["category"], "image": p.get("image"),
                      "image_path": image_path,
                      "reference_answer": p.get("reference_answer"), "safety_warning": p.get("safety_warning"),
                      "meta": p.get("meta", {}), "split": p["meta"]["eval_split"],
                      "cluster": f"tiny/{p['meta'].get('eval_group') or p['id']}"})
    report.update(taken=len(items), skipped=dict(skipped))
    return items, report


def _vqa_answers(row: dict, where: str) -> list[str]:
    answers = row.get("answers", row.get("answer"))
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise SuiteError(f"{where}: field 'answer' (a string) or 'answers' (a list of strings) is missing or empty; "
                         "a utility item needs its reference answer(s)")
    return answers


def load_vqa(path: Path, name: str) -> tuple[list[dict], dict]:
    """A utility suite: any local VQA-style JSONL, one item per line: {"id", "question", "answer" or "answers",
    optional "image" (relative to the file's folder; it may not leave it)}. Every item is benign; the metric is task
    accuracy (an answer matching a reference) next to its refusal rate."""
    import json

    from srpo.schema import PairError, resolve_image

    if not path.is_file():
        raise SuiteError(f"{name}: {path} not found; give a JSONL file of VQA items (id, question, answer[s], image)")
    report = _report(name, path.parent)
    items, skipped, seen = [], Counter(), set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}, line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SuiteError(f"{where}: not valid JSON ({e.msg}); fix or delete the line") from None
        if not isinstance(row, dict):
            raise SuiteError(f"{where}: a JSON object is expected")
        question = row.get("question", row.get("query"))
        if not isinstance(question, str) or not question.strip():
            raise SuiteError(f"{where}: field 'question' is missing or empty")
        item_id = str(row.get("id", n))
        if item_id in seen:
            raise SuiteError(f"{where}: field 'id' repeats {item_id!r}; ids must be unique in a suite")
        seen.add(item_id)
        image_path = None
        if row.get("image"):
            try:
                image_path = resolve_image(path.parent, str(row["image"]))
            except PairError as e:
                raise SuiteError(f"{where}: field 'image': {e}") from None
            if not image_path.is_file():
                skipped["image_missing"] += 1
                continue
        answers = _vqa_answers(row, where)
        items.append({"id": item_id, "suite": name, "query": question, "label": "benign", "category": "utility",
                      "group": str(row.get("category") or "utility"), "image": row.get("image"),
                      "image_path": str(image_path) if image_path else None, "reference_answer": answers[0],
                      "reference_answers": answers, "safety_warning": None, "meta": {}})
    items.sort(key=lambda i: i["id"])
    report.update(taken=len(items), skipped=dict(skipped))
    return items, report


SUITES: dict[str, Suite] = {s.name: s for s in [
    Suite("siuo", SAFETY, "siuo", "SIUO generation set: safe inputs, unsafe outputs (167)", load_siuo),
    Suite("mossbench_contrast", SAFETY, "mossbench", "MOSSBench harmful contrast set (244)", load_mossbench_contrast),
    Suite("figstep_tiny", SAFETY, ".", "FigStep SafeBench-Tiny typographic attacks (50)", load_figstep_tiny),
    Suite("mm_harmfulbench", SAFETY, "mm_harmfulbench", "MM-HarmfulBench harmful image+question (100)",
          load_mm_harmfulbench),
    Suite("vlguard_unsafe", SAFETY, "vlguard", "VLGuard test: unsafe instructions (safe_unsafes + unsafes)",
          load_vlguard_unsafe),
    Suite("xstest_unsafe", SAFETY, "xstest", "XSTest contrast prompts, text only (200)", load_xstest_unsafe),
    Suite("mossbench_benign", OVERSAFETY, "mossbench", "MOSSBench benign over-sensitivity queries (300)",
          load_mossbench_benign),
    Suite("xstest_safe", OVERSAFETY, "xstest", "XSTest safe prompts models over-refuse, text only (250)",
          load_xstest_safe),
    Suite("figstep_benign", OVERSAFETY, ".", "DREAM FigStep-Benign twins of SafeBench-Tiny (50)",
          load_figstep_benign),
    Suite("vlguard_safe", OVERSAFETY, "vlguard", "VLGuard test: safe instructions on safe images (safe_safes)",
          load_vlguard_safe),
    Suite("tiny", MIXED, None, "the eval split of the run's built data folder", load_tiny),
]}


def suite_names() -> list[str]:
    return list(SUITES)


def suite_root(name: str, data_root: str | Path | None, data_dir: str | Path | None = None) -> Path:
    suite = SUITES[name]
    if suite.folder is None:
        if not data_dir:
            raise SuiteError("suite 'tiny' needs data_dir (the run's built data folder)")
        return Path(data_dir)
    if not data_root:
        raise SuiteError(f"suite {name!r} needs eval_data_root: the folder holding the benchmarks in their upstream "
                         "formats (from the repo root usually ../shared/data)")
    return Path(data_root) / suite.folder


def load_suite(name: str, data_root: str | Path | None = None, *, data_dir: str | Path | None = None,
               max_items: int = 0, seed: int = 0, cache: dict | None = None,
               dev_suites: list[str] = ()) -> tuple[list[dict], dict]:
    """(items, load report) of one suite. max_items > 0 keeps a seeded random sample of that many items (the rest
    are counted as skipped `over_max_items`); the same seed always picks the same items. Every item gets `split`
    (tiny: the build's dev/test assignment; any other suite: dev when it is in `dev_suites`, else test) and
    `cluster` (the group of near-copies the gate resamples together)."""
    if is_vqa(name):
        items, report = load_vqa(vqa_path(name, data_root), name)
    else:
        if name not in SUITES:
            raise SuiteError(f"unknown suite {name!r}; known suites: {', '.join(SUITES)}, or {VQA_PREFIX}FILE.jsonl")
        root = suite_root(name, data_root, data_dir)
        if not root.is_dir():
            raise SuiteError(f"suite {name!r}: folder {root} not found; the data root must hold "
                             f"{SUITES[name].folder}/")
        items, report = SUITES[name].loader(root, {} if cache is None else cache)
    if kind_of(name) != MIXED:
        for it in items:
            it["split"] = "dev" if name in dev_suites else "test"
            it["cluster"] = f"{name}/{it['id']}"
    if max_items and len(items) > max_items:
        keep = set(random.Random(f"{seed}:{name}").sample(range(len(items)), max_items))
        items = [it for i, it in enumerate(items) if i in keep]
        report["skipped"] = {**report["skipped"], "over_max_items": report["taken"] - max_items}
        report["taken"] = len(items)
    report["kind"] = kind_of(name)
    report["splits"] = {sp: sum(1 for it in items if it["split"] == sp) for sp in SPLITS}
    return items, report


def check_suites(suites: list[str], gating_suites: list[str], data_root: str | None, files: bool = True,
                 dev_suites: list[str] = ()) -> None:
    """Refuse unknown suite names, a gating set without both unsafe and benign items or with a suite that has no
    dev items, and (with `files`) a data root that does not hold the chosen suites' folders. Raises ValueError with
    the fix."""
    known = ", ".join(SUITES) + f", {VQA_PREFIX}FILE.jsonl"
    for field_name, names in (("eval_suites", suites), ("eval_gating_suites", gating_suites),
                              ("eval_dev_suites", dev_suites)):
        unknown = [n for n in names if n not in SUITES and not is_vqa(n)]
        if unknown:
            raise ValueError(f"{field_name}: unknown suite(s) {unknown}; known suites: {known}")
    for field_name, names in (("eval_gating_suites", gating_suites), ("eval_dev_suites", dev_suites)):
        outside = [n for n in names if n not in suites]
        if outside:
            raise ValueError(f"{field_name} {outside} are not in eval_suites {suites}; add them to eval_suites or "
                             f"drop them from {field_name}")
    mixed = [n for n in dev_suites if kind_of(n) == MIXED]
    if mixed:
        raise ValueError(f"eval_dev_suites {mixed}: 'tiny' is split into dev and test by the build "
                         "(build_dev_fraction); drop it from eval_dev_suites")
    undecidable = [n for n in gating_suites if kind_of(n) != MIXED and n not in dev_suites]
    if undecidable:
        raise ValueError(f"eval_gating_suites {undecidable} are test suites: the gate decides on dev items only and "
                         "never reads test. List them in eval_dev_suites too (their figures are then dev, not "
                         "reported as test), or gate on 'tiny' (split into dev and test by the build)")
    kinds = {kind_of(n) for n in gating_suites}
    if MIXED not in kinds and not ({SAFETY} <= kinds and kinds & {OVERSAFETY, UTILITY}):
        raise ValueError(f"eval_gating_suites {gating_suites} need both unsafe and benign items (the gate reads "
                         "safe_rate and benign_refusal_rate): add a safety suite and an over-safety suite, or 'tiny'")
    if files:
        for n in suites:
            if is_vqa(n) and not vqa_path(n, data_root).is_file():
                raise ValueError(f"suite {n!r}: {vqa_path(n, data_root)} is not a file; give a VQA-style JSONL "
                                 "(relative to eval_data_root, or absolute)")
    external = [n for n in suites if not is_vqa(n) and SUITES[n].folder is not None]
    if not external:
        return
    if not data_root:
        raise ValueError(f"suites {external} read benchmark files: set eval_data_root to the folder holding them in "
                         "their upstream formats (from the repo root usually ../shared/data); it is never assumed")
    if not files:
        return
    root = Path(data_root)
    if not root.is_dir():
        raise ValueError(f"eval_data_root {data_root!r} is not a folder; give the folder holding xstest/, siuo/, "
                         "mossbench/, figstep/, ... (e.g. ../shared/data)")
    missing = sorted({SUITES[n].folder for n in external if not (root / SUITES[n].folder).is_dir()})
    if missing:
        raise ValueError(f"eval_data_root {data_root!r} lacks {missing} needed by the chosen suites; check the path "
                         "or drop those suites")
