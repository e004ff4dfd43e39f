"""Generic user format: a JSONL or CSV file plus an image folder.

Columns: id, image, query, label, category. Optional: twin_of, reference_answer, safety_warning. Any other column is
kept in meta (so nothing a user wrote is dropped). `image` is relative to `image_dir` (default: the root itself).

Rules (each bad row is quarantined with its reason; the others convert):
- id: non-empty string (an integer is accepted in JSONL and becomes its string form); unique in the file.
- query: non-empty string.
- label: "unsafe" or "benign" (case-insensitive; "safe" and "harmful" are accepted aliases, noted in
  meta["source_label"]).
- category: one of RISK_CATEGORIES, or a spelling of one ("Self-Harm", "self harm"); anything else -> "other" with an
  `unknown_category` warning and the original in meta["source_category"]. Empty: "none" for benign pairs, "other"
  with a warning for unsafe ones.
- twin_of: the id of another pair in the file; a twin_of that names no converted pair is cleared with a warning.
- image: required unless require_images=False (then an empty or broken image gives a text-only pair with a warning).
  In JSONL it may be a list of paths: a multi-image prompt, its images in the order the prompt shows them. Every one
  of them must be usable (a prompt about two pictures is another prompt with one), so a missing or broken image
  quarantines the row whatever require_images says; a one-path list is the single-image pair.
"""

from __future__ import annotations

import re
from pathlib import Path

from srpo.schema import RISK_CATEGORIES

from .validate import (
    Collector,
    ConversionResult,
    RowProblem,
    SourceError,
    get_field,
    get_id,
    get_label,
    get_query,
    read_csv,
    read_jsonl,
)

SOURCE = "user"
KNOWN = ("id", "image", "query", "label", "category", "twin_of", "reference_answer", "safety_warning")

# Our own names map to themselves; spelling variants ("Self-Harm", "hate speech") are normalised before lookup.
CATEGORY_MAP = {c: c for c in RISK_CATEGORIES}


def _norm(value: str) -> str:
    return re.sub(r"[\s\-/]+", "_", value.strip().lower())


def convert(
    root: str | Path,
    *,
    file: str | None = None,
    image_dir: str = "",
    source: str = SOURCE,
    encoding: str = "utf-8",
    **options,
) -> ConversionResult:
    """Convert a user file. `root` is the dataset folder; `file` (relative to root) defaults to the single
    *.jsonl or *.csv file found in it."""
    col = Collector(source, root, **options)
    path = col.root / file if file else _find_file(col.root)
    if not path.is_file():
        raise SourceError(f"{source}: {path} not found; pass file= relative to {col.root}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = read_jsonl(col, path)
    elif suffix == ".csv":
        rows = read_csv(col, path, encoding, required=("id", "query", "label"))
    else:
        raise SourceError(f"{source}: {path.name}: unsupported file type {suffix!r}; use .jsonl or .csv")
    disp = col.display(path)
    for lineno, raw in rows:
        with col.row(disp, lineno, raw, f"line {lineno}"):
            pid = get_id(raw, "id")
            query = get_query(raw, "query")
            label = get_label(raw, "label")
            category, source_category = _category(col, raw, label, disp, lineno)
            twin_of = get_field(raw, "twin_of", (str, int), required=False)
            image, problem = _images(col, image_dir, raw.get("image"))
            meta = {k: v for k, v in raw.items() if k not in KNOWN}
            meta["source_category"] = source_category
            if str(raw["label"]).strip().lower() != label:
                meta["source_label"] = raw["label"]
            col.add(disp, lineno, id=pid, query=query, label=label, category=category, image=image,
                    image_problem=problem, source=source, twin_of=None if twin_of is None else str(twin_of),
                    reference_answer=get_field(raw, "reference_answer", str, required=False),
                    safety_warning=get_field(raw, "safety_warning", str, required=False), meta=meta)
    return col.finish()


def _images(col: Collector, image_dir: str, value) -> tuple:
    """(image value for the pair, problem) of the row's `image`: one path, or a JSONL list of them."""
    if not isinstance(value, list):
        return col.image(image_dir, value)
    if not value:
        raise RowProblem("image", "empty_field", "'image' is an empty list; give one path, a list of paths, or "
                                                 "leave it out for a text-only pair")
    paths = []
    for j, item in enumerate(value):
        path, problem = col.image(image_dir, item, fld=f"image[{j}]")
        if problem:
            code, rel = problem
            raise RowProblem(f"image[{j}]", code, f"image {rel or item!r} of this multi-image prompt is unusable "
                                                  f"({code}); every image of the prompt is needed")
        paths.append(path)
    return paths, None  # a one-path list becomes the single-image pair (SSUIPair)


def _category(col: Collector, raw: dict, label: str, disp: str, lineno: int) -> tuple[str, str | None]:
    value = get_field(raw, "category", str, required=False)
    if value is None:
        if label == "benign":
            return "none", None
        return col.category(CATEGORY_MAP, None, disp, lineno), None
    return col.category(CATEGORY_MAP, value, disp, lineno, normalize=_norm), value


def _find_file(root: Path) -> Path:
    found = sorted(p for p in root.iterdir() if p.suffix.lower() in (".jsonl", ".ndjson", ".csv") and p.is_file())
    if len(found) != 1:
        names = [p.name for p in found]
        raise SourceError(f"{SOURCE}: expected one .jsonl or .csv file in {root}, found {names}; pass file=")
    return found[0]
