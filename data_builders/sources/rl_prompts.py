"""Prompt-only sources for the RL split: an image and a query per row, no label, no chain.

    from data_builders.sources.rl_prompts import convert_prompts
    result = convert_prompts("prompts/rl.jsonl")

One JSON object per line: `query` (required), `image` (relative to the file's folder, never escaping it; required
unless require_images=False, which keeps a row with a missing or broken image text-only), `id` (optional: a string
or an integer; without one the row's id is a hash of its image and query, so two identical rows are a duplicate).
Any other field (a label, a category, a reference answer) is ignored and counted, never stored: RL prompts are the
cheap, unlabelled data the self-judge learns from, and nothing on the feedback path may read a label off them.

Bad rows are quarantined as the pair sources' are (validate.Collector: file, line, field, reason and what to do), and
rows_seen == len(prompts) + len(quarantined).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from srpo.schema import resolve_image

from .validate import (
    Collector,
    LengthRule,
    QuarantineRecord,
    RowProblem,
    SourceError,
    get_field,
    get_query,
    length_problem,
    read_jsonl,
)

SOURCE = "rl_prompts"
READ = ("id", "image", "query")  # the only fields an RL prompt has
RL_SPLIT = "rl"


@dataclass
class RLPrompt:
    """One RL prompt as stored in the data folder's RL prompt file: no label, category or chain fields at all."""

    id: str
    query: str
    image: str | None
    source: str
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"id": self.id, "query": self.query, "image": self.image, "source": self.source, "meta": self.meta}


@dataclass
class PromptConversion:
    root: Path
    prompts: list[RLPrompt]
    quarantined: list[QuarantineRecord]
    rows_seen: int
    ignored_fields: dict[str, int]  # field name -> rows that had it (dropped, never stored)
    warnings: dict[str, int]


def length_checked(query: str) -> SimpleNamespace:
    """The view of a prompt the length rule measures: its query, and no reference answer or warning to add."""
    return SimpleNamespace(query=query, reference_answer=None, safety_warning=None)


def convert_prompts(path: str | Path, *, strict: bool = False, require_images: bool = True,
                    lengths: LengthRule | None = None, taken_ids: frozenset[str] = frozenset(),
                    source: str = SOURCE) -> PromptConversion:
    """Read a prompt-only JSONL. `taken_ids` are ids already used (the labelled pairs'): a row reusing one is a
    duplicate, so a prompt id always names one row of the data folder."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{source}: {path} not found; build_rl_source must be a prompt-only .jsonl file")
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        raise SourceError(f"{source}: {path.name}: unsupported file type {path.suffix!r}; RL prompts are a .jsonl "
                          'file, one {"id"?, "image", "query"} object per line')
    col = Collector(source, path.parent, strict=strict, require_images=require_images)
    disp = col.display(path)
    prompts: list[RLPrompt] = []
    first_seen: dict[str, int] = {}
    ignored: Counter = Counter()
    for lineno, raw in read_jsonl(col, path):
        with col.row(disp, lineno, raw, f"line {lineno}"):
            query = get_query(raw, "query")
            given = get_field(raw, "id", (str, int), required=False)
            image, problem = col.image("", raw.get("image"))
            pid = str(given).strip() if given is not None else _content_id(raw.get("image"), query)
            if pid in taken_ids:
                raise RowProblem("id", "duplicate_id", f"id {pid!r} is already a pair's id in the labelled source")
            if pid in first_seen:
                what = f"id {pid!r}" if given is not None else "the same image and query"
                raise RowProblem("id", "duplicate_id", f"{what} was already used at {disp} line {first_seen[pid]}")
            if lengths is not None:
                too_long = length_problem(length_checked(query), lengths, resolve_image(col.root, image) if image
                                          else None)
                if too_long:
                    raise RowProblem(*too_long)
            meta = {"split": RL_SPLIT, "source_file": disp, "source_line": lineno}
            if problem:
                meta["image_problem"], meta["image_expected"] = problem[0], problem[1] or None
                col.warn(problem[0], f"{disp}, line {lineno}: image unusable ({problem[0]}); prompt {pid} kept "
                         "text-only", disp, lineno)
            first_seen[pid] = lineno
            ignored.update(k for k in raw if k not in READ)
            prompts.append(RLPrompt(pid, query, image, source, meta))
    result = col.result
    return PromptConversion(col.root, prompts, result.quarantined, result.rows_seen, dict(sorted(ignored.items())),
                            dict(sorted(result.warning_counts().items())))


def _content_id(image, query: str) -> str:
    return "rl-" + hashlib.sha256(json.dumps([image, query]).encode()).hexdigest()[:12]
