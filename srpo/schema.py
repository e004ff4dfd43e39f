"""The SSUI pair: the unit every builder produces and every stage consumes.

A pair is an image and a query that may be benign one by one but risky together. Pairs are stored one JSON object per
line; `image` is a path relative to the dataset root (never absolute, never escaping the root), or for a multi-image
prompt a list of such paths, in the order the prompt shows them. `image_paths` and `join_images` read either form.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

LABELS = ("unsafe", "benign")

# Our risk taxonomy: SIUO's nine categories plus the usual text-safety ones. Sources map their own names onto these
# (the original stays in `meta["source_category"]`).
RISK_CATEGORIES = (
    "self_harm",
    "dangerous_behavior",
    "illegal_activity",
    "violence",
    "privacy",
    "discrimination",
    "misinformation",
    "morality",
    "religion",
    "controversial_topics",
    "sexual_content",
    "hate_speech",
    "malware",
    "fraud",
    "regulated_advice",
    "other",
    "none",  # benign pairs
)


class PairError(ValueError):
    """A pair row that cannot be used; the message names the field and what to do."""


@dataclass
class SSUIPair:
    id: str
    query: str
    label: str  # "unsafe" | "benign"
    category: str = "none"  # one of RISK_CATEGORIES
    image: str | list[str] | None = None  # relative to the dataset root; a list for a multi-image prompt
    source: str = "user"
    twin_of: str | None = None  # id of the pair this one is the benign twin of
    reference_answer: str | None = None
    safety_warning: str | None = None  # what a safe answer must take into account (SIUO)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.id, str) or not self.id:
            raise PairError("field 'id' must be a non-empty string")
        if not isinstance(self.query, str) or not self.query.strip():
            raise PairError("field 'query' must be a non-empty string")
        if self.label not in LABELS:
            raise PairError(f"field 'label' must be one of {LABELS}; got {self.label!r}")
        if self.category not in RISK_CATEGORIES:
            raise PairError(f"field 'category' must be one of {RISK_CATEGORIES}; got {self.category!r}")
        if isinstance(self.image, list):
            if not self.image:
                raise PairError("field 'image' is an empty list; give null for a text-only pair")
            if len(self.image) == 1:
                self.image = self.image[0]
        for path in image_paths(self.image) if isinstance(self.image, str | list) else [self.image]:
            if path is None:
                continue
            if not isinstance(path, str) or not path:
                raise PairError("field 'image' must be a relative path string, a list of them, or null")
            if os.path.isabs(path) or ".." in Path(path).parts:
                raise PairError(f"field 'image' must be a path inside the dataset root; got {path!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, row: dict) -> SSUIPair:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(row) - known)
        if unknown:
            raise PairError(f"unknown field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**row)


def image_paths(value) -> list:
    """The images of a pair's (or an item's) `image` / `image_path` value, in order: [] for none, one for a path,
    all of a multi-image list."""
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def join_images(root: str | os.PathLike, value):
    """`value` (None, a path or a list of paths) with every path joined under `root`, as strings, in the same shape."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return [str(Path(root) / v) for v in value]
    return str(Path(root) / value)


def resolve_image(root: str | os.PathLike, rel: str) -> Path:
    """The absolute path of `rel` under `root`; refuses anything (`..`, absolute paths, symlinks) that leaves root."""
    root_real = Path(root).resolve()
    if os.path.isabs(rel):
        raise PairError(f"image path {rel!r} is absolute; give it relative to the dataset root {root}")
    path = (root_real / rel).resolve()
    if path != root_real and root_real not in path.parents:
        raise PairError(f"image path {rel!r} escapes the dataset root {root}")
    return path
