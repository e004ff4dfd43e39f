"""Readers of human-labelled response sets in their upstream formats, for measuring judges against people.

    read_labelled("xstest", "xstest_v2_completions_mistralinstruct.csv") -> [LabelledRow, ...]

One row per (prompt, response) with the human label in srpo's terms: `refusal` in srpo.refusal's classes, `unsafe`
for "the response is harmful". A benchmark that does not label one of them leaves it None, and that row is left out
of the metrics that need it. Row numbers are 1-based data rows of the file read (the CSV header is not a row), so an
error message points at the row and a replay file lines up with it.

Pure Python (csv, json): no torch, no srpo layer above core.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from srpo.refusal import COMPLIANCE, FULL_REFUSAL, PARTIAL_REFUSAL

BENCHMARKS = ("xstest", "msts", "harmbench", "mossbench")

XSTEST_LABELS = {"1_full_compliance": COMPLIANCE, "2_full_refusal": FULL_REFUSAL,
                 "3_partial_refusal": PARTIAL_REFUSAL}
# MSTS's response taxonomy (final_taxonomy "1.1 - rejection or rebuttal"): 1.x safe, 2.x unsafe. As a refusal label,
# rejecting or refusing outright is a full refusal, answering with safety considerations a partial one, and every
# other response (clarifying, misunderstanding, describing the image, encouraging, advising) complies.
MSTS_REFUSAL = {"1.1": FULL_REFUSAL, "1.2": FULL_REFUSAL, "1.3": PARTIAL_REFUSAL}
_MSTS_TAXONOMY_RE = re.compile(r"^\s*([12])\.(\w+)\s*(?:-|$)")
_XSTEST_MODEL_RE = re.compile(r"^xstest_v2_completions_(.+)$")
HARMBENCH_HUMANS = ("human_0", "human_1", "human_2")


class LabelledDataError(ValueError):
    """A labelled file that cannot be read as its benchmark's upstream format; the message names file, row, field."""


@dataclass
class LabelledRow:
    benchmark: str  # xstest | msts | harmbench | mossbench
    file: str  # the path read
    row: int  # 1-based data row in that file (error messages and replay alignment)
    prompt: str
    response: str
    model: str  # the responding model ("" when unknown)
    refusal: str | None  # COMPLIANCE / FULL_REFUSAL / PARTIAL_REFUSAL, or None when not labelled for refusal
    unsafe: bool | None  # humans judged the response unsafe / harmful; None when not labelled for that
    category: str | None  # xstest `type`, msts `final_taxonomy`, harmbench `behavior_id`
    image: str | None = None
    meta: dict = field(default_factory=dict)


def read_labelled(benchmark: str, path) -> list[LabelledRow]:
    """The rows of one labelled file of `benchmark`; LabelledDataError on anything that is not its upstream format."""
    readers = {"xstest": _read_xstest, "msts": _read_msts, "harmbench": _read_harmbench,
               "mossbench": _read_mossbench}
    if benchmark not in readers:
        raise LabelledDataError(f"unknown benchmark {benchmark!r}; use one of {', '.join(BENCHMARKS)}")
    path = Path(path)
    if not path.is_file():
        raise LabelledDataError(f"{path}: no such file (the {benchmark} labelled set; check the path)")
    try:
        return readers[benchmark](path)
    except UnicodeDecodeError as e:
        raise LabelledDataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); "
                                f"is this the {benchmark} file?") from None
    except csv.Error as e:
        raise LabelledDataError(f"{path}: not a readable CSV ({e}); is this the {benchmark} file?") from None


def _error(path: Path, row: int | None, column: str, problem: str) -> LabelledDataError:
    where = f"{path}: row {row}: " if row is not None else f"{path}: "
    return LabelledDataError(f"{where}field '{column}' {problem}")


def _csv_rows(path: Path, required: tuple[str, ...], benchmark: str, hint: str) -> list[dict]:
    # utf-8-sig: a CSV saved by a spreadsheet starts with a BOM that would otherwise rename the first column.
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        for col in required:
            if col not in columns:
                raise _error(path, None, col, f"is missing: no such column (found: {', '.join(columns) or 'none'}); "
                                              f"{benchmark} needs {', '.join(required)} ({hint})")
        return list(reader)


def _read_xstest(path: Path) -> list[LabelledRow]:
    rows = _csv_rows(path, ("prompt", "completion", "final_label"), "xstest",
                     "the upstream xstest_v2_completions_<model>.csv")
    stem = _XSTEST_MODEL_RE.match(path.stem)
    file_model = stem.group(1) if stem else ""
    out = []
    for n, r in enumerate(rows, 1):
        label = (r.get("final_label") or "").strip()
        if label not in XSTEST_LABELS:
            raise _error(path, n, "final_label", f"has unknown value {label!r}; "
                                                 f"expected one of {', '.join(XSTEST_LABELS)}")
        out.append(LabelledRow(
            benchmark="xstest", file=str(path), row=n, prompt=r["prompt"] or "", response=r["completion"] or "",
            model=(r.get("model") or "").strip() or file_model, refusal=XSTEST_LABELS[label], unsafe=None,
            category=(r.get("type") or "").strip() or None,
            meta={k: r[k] for k in ("id", "type") if r.get(k)}))
    return out


def msts_refusal(taxonomy: str) -> str | None:
    """The refusal class of an MSTS final_taxonomy value ("1.1 - rejection or rebuttal" -> full_refusal); None when
    it is not a taxonomy value."""
    m = _MSTS_TAXONOMY_RE.match(taxonomy or "")
    if not m:
        return None
    return MSTS_REFUSAL.get(f"{m.group(1)}.{m.group(2)}", COMPLIANCE)


def _read_msts(path: Path) -> list[LabelledRow]:
    rows = _csv_rows(path, ("prompt_text", "response", "final_label", "final_taxonomy"), "msts",
                     "the upstream dev_annotations/english_multimodal.csv")
    out = []
    for n, r in enumerate(rows, 1):
        label = (r.get("final_label") or "").strip()
        if label[:1] not in ("1", "2"):
            raise _error(path, n, "final_label", f"has unknown value {label!r}; expected '1 - safe' or '2 - unsafe'")
        taxonomy = (r.get("final_taxonomy") or "").strip()
        refusal = msts_refusal(taxonomy)
        if refusal is None:
            raise _error(path, n, "final_taxonomy", f"has unknown value {taxonomy!r}; expected a code like "
                                                    f"'1.1 - rejection or rebuttal' (1.x safe, 2.x unsafe)")
        meta = {k: r[k] for k in ("case_id", "prompt_type", "unsafe_image_description") if r.get(k)}
        out.append(LabelledRow(
            benchmark="msts", file=str(path), row=n, prompt=r["prompt_text"] or "", response=r["response"] or "",
            model=(r.get("model") or "").strip(), refusal=refusal, unsafe=label.startswith("2"), category=taxonomy,
            meta=meta))
    return out


def _human_label(path: Path, n: int, rec: dict, key: str) -> bool:
    value = rec.get(key)
    if isinstance(value, bool) or str(value).strip() not in ("0", "1"):
        raise _error(path, n, key, f"has value {value!r}; expected 0 or 1 (1 = harmful), as in HarmBench's "
                                   f"classifier_val_sets")
    return str(value).strip() == "1"


def _read_harmbench(path: Path) -> list[LabelledRow]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LabelledDataError(f"{path}: not JSON ({e.msg} at line {e.lineno}); expected HarmBench's "
                                f"classifier_val_sets/text_behaviors_val_set.json") from None
    if not isinstance(data, dict):
        raise LabelledDataError(f"{path}: expected a JSON object behavior_id -> list of records, as in HarmBench's "
                                f"classifier_val_sets; got {type(data).__name__}")
    out = []
    n = 0
    for behavior_id, records in data.items():
        if not isinstance(records, list):
            raise _error(path, n + 1, behavior_id, "is not a list of records")
        for rec in records:
            n += 1
            if not isinstance(rec, dict):
                raise _error(path, n, behavior_id, f"holds a {type(rec).__name__}, not a record")
            for key in ("test_case", "generation"):
                if not isinstance(rec.get(key), str):
                    raise _error(path, n, key, "is missing or not text")
            harmful = sum(_human_label(path, n, rec, k) for k in HARMBENCH_HUMANS) >= 2  # majority of three
            model = str(rec.get("model") or "").removesuffix(".json").strip()
            model = model or str(rec.get("experiment") or "").strip() or "unknown"
            out.append(LabelledRow(
                benchmark="harmbench", file=str(path), row=n, prompt=rec["test_case"], response=rec["generation"],
                model=model, refusal=COMPLIANCE if harmful else None, unsafe=harmful, category=str(behavior_id),
                meta={k: rec[k] for k in ("method", "experiment") if rec.get(k)}))
    return out


def _read_mossbench(path: Path) -> list[LabelledRow]:
    out = []
    with path.open(encoding="utf-8") as f:
        lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
    for n, (line_no, line) in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise LabelledDataError(f"{path}: row {n} (line {line_no}): not JSON ({e.msg}); expected one "
                                    f'{{"prompt": ..., "completion": ...}} object per line') from None
        if not isinstance(rec, dict) or not isinstance(rec.get("completion", ""), str) or "completion" not in rec:
            raise _error(path, n, "completion", 'is missing or not text; each line needs {"prompt": ..., '
                                                '"completion": ...}')
        image = rec.get("image")
        out.append(LabelledRow(
            benchmark="mossbench", file=str(path), row=n, prompt=str(rec.get("prompt") or ""),
            response=rec["completion"], model=path.stem, refusal=None, unsafe=None, category=None,
            image=image if isinstance(image, str) else None,
            meta={k: v for k, v in rec.items() if k not in ("prompt", "completion", "image")
                  and isinstance(v, str | int | float | bool)}))
    return out
