"""Shared validation for source converters: every bad row is quarantined with a reason, no valid row is lost.

A converter reads its upstream files row by row inside `Collector.row(...)`. Anything wrong with a row (bad JSON,
missing or wrong-typed field, empty query, unknown label, unsafe or broken image, duplicate id) raises `RowProblem`
inside that block; the collector turns it into a `QuarantineRecord` naming file, row, field and what to do, and goes
on with the next row. `strict=True` raises `SourceError` on the first problem instead, for pipelines that must not
proceed with a partial dataset. `lengths=LengthRule(...)` also quarantines pairs longer than the model can take.

Invariant the tests check: rows_seen == rows_ok + len(quarantined), per conversion.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from PIL import Image, UnidentifiedImageError

from srpo.schema import LABELS, RISK_CATEGORIES, PairError, SSUIPair, image_paths, resolve_image

MiB = 1024 * 1024
DEFAULT_MAX_IMAGE_BYTES = 20 * MiB
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000

# Machine-readable reason codes -> what the user should do about it. Every quarantine message ends with the hint, so
# a reader of the quarantine file never has to look the code up.
REASONS: dict[str, str] = {
    "bad_json": "fix the JSON syntax on that line (one JSON object per line)",
    "not_an_object": "each row must be a JSON object with named fields",
    "bad_encoding": "re-save the file as UTF-8, or pass encoding= with the file's real encoding",
    "csv_malformed": "make the row have exactly the header's columns (quote fields that contain commas)",
    "missing_field": "add the field to the row",
    "wrong_type": "give the field the expected type",
    "empty_query": "give a non-empty query text, or drop the row",
    "empty_field": "give a non-empty value, or drop the row",
    "unknown_label": f"use one of {LABELS}",
    "bad_value": "use one of the documented values for this field",
    "duplicate_id": "give every row a unique id (the first row with this id was kept)",
    "invalid_pair": "fix the row so it forms a valid SSUI pair",
    "image_absolute_path": "give the image path relative to the dataset root",
    "image_path_escape": "remove '..' so the image path stays inside the dataset root",
    "image_symlink_escape": "replace the symlink with the real file inside the dataset root",
    "image_missing": "put the image file at that path (or pass require_images=False for text-only use)",
    "image_not_a_file": "point the image field at a file, not a directory",
    "image_empty": "the image file is zero bytes; re-download or re-export it",
    "image_too_large": "shrink/re-encode the image, or raise max_image_bytes if it is legitimate",
    "image_decompression_bomb": "resize the image, or raise max_image_pixels if the resolution is legitimate",
    "image_unrecognized": "the file is not an image format Pillow can read; convert it to PNG or JPEG",
    "image_corrupt": "the image data is broken; re-download or re-export it",
    "image_unreadable": "check the file's permissions",
    "text_too_long": "shorten the text or drop the row (text is never cut); raise the character cap only if the "
                     "model's tokenizer says it fits",
    "prompt_too_long": "shorten the field named (or use a smaller image, or a model with a longer context); the "
                       "training sequence would not fit the model, and text and image tokens are never cut",
}

# The text of a pair that ends up in a training sequence: the query in the prompt, the reference answer and the
# safety warning in the teacher's prompt and (offline teacher) in the chain the policy is trained on.
TEXT_FIELDS = ("query", "reference_answer", "safety_warning")

# Path problems are a safety issue (a row trying to read outside the dataset): they always quarantine, even with
# require_images=False, because a row that points outside the root is not trustworthy as a whole.
PATH_SECURITY_CODES = frozenset({"image_absolute_path", "image_path_escape", "image_symlink_escape"})


class SourceError(RuntimeError):
    """A source that cannot be converted (missing/unparseable file), or the first bad row under strict=True."""


class RowProblem(Exception):
    """Raised inside `Collector.row` to quarantine the current row."""

    def __init__(self, field: str | None, code: str, detail: str):
        assert code in REASONS, code
        super().__init__(detail)
        self.field = field
        self.code = code
        self.detail = detail


@dataclass
class QuarantineRecord:
    file: str
    row: int | None  # 1-based line (JSONL/CSV) or item index (JSON array/object)
    field: str | None
    reason_code: str
    message: str
    raw: object = None  # the row as read (dict, or the raw text for a line that did not parse)

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "row": self.row,
            "field": self.field,
            "reason_code": self.reason_code,
            "message": self.message,
            "raw": self.raw,
        }


@dataclass
class ConversionWarning:
    code: str
    message: str
    file: str | None = None
    row: int | None = None


@dataclass
class ConversionResult:
    source: str
    root: Path
    pairs: list[SSUIPair] = field(default_factory=list)
    quarantined: list[QuarantineRecord] = field(default_factory=list)
    warnings: list[ConversionWarning] = field(default_factory=list)
    rows_seen: int = 0  # source rows looked at, across all files
    rows_per_file: dict[str, int] = field(default_factory=dict)

    @property
    def rows_ok(self) -> int:
        return self.rows_seen - len(self.quarantined)

    def reason_counts(self) -> Counter:
        return Counter(q.reason_code for q in self.quarantined)

    def warning_counts(self) -> Counter:
        return Counter(w.code for w in self.warnings)


@dataclass
class ImageOptions:
    require_images: bool = True
    check_images: bool = True  # False skips Pillow (path safety is still checked): for quick text-only passes
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    decode_images: bool = False  # True also fully decodes (catches truncated JPEGs that verify() lets through)


@dataclass
class LengthRule:
    """How long a pair may be. `max_chars` caps each of TEXT_FIELDS (0 = no cap; needs no tokenizer). With `count`,
    the pair's tokens must also add up to at most `max_tokens`: `count(pair, image_file)` returns tokens per part,
    {"query": prompt with its chat template, "image": the image's tokens, "reference_answer": ..., ...}."""

    max_chars: int = 0
    count: Callable[[SSUIPair, Path | list[Path] | None], dict[str, int]] | None = None
    max_tokens: int = 0
    limit_from: str = ""  # where max_tokens comes from, for the message


def length_problem(pair: SSUIPair, rule: LengthRule, image_file) -> tuple[str, str, str] | None:
    """(field, reason_code, detail) when the pair is longer than `rule` allows, else None. `image_file`: the pair's
    image file, a list of them (a multi-image pair), or None."""
    for fld in TEXT_FIELDS:
        n = len(getattr(pair, fld) or "")
        if rule.max_chars and n > rule.max_chars:
            return fld, "text_too_long", f"field {fld!r} is {n:,} characters, over the cap of {rule.max_chars:,}"
    if rule.count is None or not rule.max_tokens:
        return None
    parts = rule.count(pair, image_file)
    total = sum(parts.values())
    if total <= rule.max_tokens:
        return None
    fld = max(parts, key=parts.get)
    shown = " + ".join(f"{k} {v:,}" for k, v in parts.items() if v)
    where = f" ({rule.limit_from})" if rule.limit_from else ""
    return fld, "prompt_too_long", (f"the pair is {total:,} tokens ({shown}), over the limit of {rule.max_tokens:,}"
                                    f"{where}; field {fld!r} is the longest part")


def path_problem(rel: str) -> tuple[str, str] | None:
    """Cheap lexical checks before touching the filesystem."""
    if os.path.isabs(rel) or PureWindowsPath(rel).is_absolute() or PureWindowsPath(rel).drive:
        return "image_absolute_path", f"image path {rel!r} is absolute"
    if ".." in PurePosixPath(rel.replace("\\", "/")).parts:
        return "image_path_escape", f"image path {rel!r} contains '..'"
    return None


def inspect_image(root: Path, rel: str, opts: ImageOptions) -> tuple[str, str] | None:
    """(reason_code, detail) for the first problem with image `rel` under `root`, or None when it is usable."""
    problem = path_problem(rel)
    if problem:
        return problem
    try:
        path = resolve_image(root, rel)
    except PairError as e:
        # Lexical `..` and absolute paths were caught above, so what resolve_image still refuses is a symlink
        # (the file itself or a parent folder) that points out of the root.
        return "image_symlink_escape", str(e)
    if not path.exists():
        return "image_missing", f"image file {rel!r} not found under {root}"
    if not path.is_file():
        return "image_not_a_file", f"image path {rel!r} is not a regular file"
    try:
        size = path.stat().st_size
    except OSError as e:
        return "image_unreadable", f"cannot stat image {rel!r}: {e}"
    if size == 0:
        return "image_empty", f"image file {rel!r} is zero bytes"
    if size > opts.max_image_bytes:
        return "image_too_large", f"image file {rel!r} is {size} bytes, over the limit of {opts.max_image_bytes}"
    if not opts.check_images:
        return None
    return _pillow_check(path, rel, opts)


def _pillow_check(path: Path, rel: str, opts: ImageOptions) -> tuple[str, str] | None:
    # Pillow's bomb guard is a module global: set it to our limit for the duration of the check and restore it, so
    # we neither loosen nor tighten the limit for other code in the process. Between the limit and twice the limit
    # Pillow only warns; turning that warning into an error makes the limit exact.
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = opts.max_image_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > opts.max_image_pixels:  # formats that skip Pillow's own check still get caught here
                    return "image_decompression_bomb", f"image {rel!r} is {w}x{h} pixels, over {opts.max_image_pixels}"
                im.verify()
            if opts.decode_images:
                with Image.open(path) as im:
                    im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return "image_decompression_bomb", f"image {rel!r}: {e}"
    except UnidentifiedImageError:
        return "image_unrecognized", f"{rel!r} is not a recognised image file"
    except PermissionError as e:
        return "image_unreadable", f"cannot read image {rel!r}: {e}"
    except Exception as e:  # noqa: BLE001 - Pillow signals broken data with SyntaxError, OSError, struct.error, ...
        return "image_corrupt", f"image {rel!r} is corrupt: {type(e).__name__}: {e}"
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    return None


class Collector:
    """Accumulates pairs, quarantine records and warnings for one conversion; see the module docstring."""

    def __init__(
        self,
        source: str,
        root: str | os.PathLike,
        *,
        strict: bool = False,
        require_images: bool = True,
        check_images: bool = True,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        decode_images: bool = False,
        lengths: LengthRule | None = None,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(f"{source}: dataset root {self.root} is not a folder; pass the folder holding the data")
        self.strict = strict
        self.images = ImageOptions(require_images, check_images, max_image_bytes, max_image_pixels, decode_images)
        self.lengths = lengths
        self.result = ConversionResult(source=source, root=self.root)
        self._ids: dict[str, str] = {}  # pair id -> "file row" where it was first seen
        self._image_cache: dict[str, tuple[str, str] | None] = {}  # several pairs often share one image
        self._pending: list[SSUIPair] | None = None

    # -- display helpers ----------------------------------------------------------------------------------------------
    def display(self, path: str | os.PathLike) -> str:
        """A file path as shown in messages: relative to the root when it is inside it."""
        p = Path(path)
        try:
            return p.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(p)

    # -- recording ----------------------------------------------------------------------------------------------------
    def warn(self, code: str, message: str, file: str | None = None, row: int | None = None) -> None:
        self.result.warnings.append(ConversionWarning(code, message, file, row))

    def quarantine(self, file: str, row: int | None, fld: str | None, code: str, detail: str, raw=None,
                   where: str | None = None) -> None:
        where = where or (f"row {row}" if row is not None else "file")
        on_field = f", field {fld!r}" if fld else ""
        message = f"{file}, {where}{on_field}: {detail} [{code}] -> {REASONS[code]}"
        if self.strict:
            raise SourceError(message)
        self.result.quarantined.append(QuarantineRecord(file, row, fld, code, message, _jsonable(raw)))

    def count_row(self, file: str) -> None:
        self.result.rows_seen += 1
        self.result.rows_per_file[file] = self.result.rows_per_file.get(file, 0) + 1

    @contextmanager
    def row(self, file: str, row: int | None, raw, where: str | None = None) -> Iterator[None]:
        """One source row: pairs added inside are kept only if the whole row is good (a row is the unit of
        quarantine, so rows_seen == rows_ok + quarantined holds even for rows that yield several pairs)."""
        self.count_row(file)
        self._pending = []
        n_warnings = len(self.result.warnings)
        try:
            yield
        except RowProblem as p:
            self._pending = None
            del self.result.warnings[n_warnings:]  # warnings about a row that is quarantined would double count it
            self.quarantine(file, row, p.field, p.code, p.detail, raw, where)
            return
        pending, self._pending = self._pending, None
        for pair in pending:
            self._ids[pair.id] = f"{file} {where or f'row {row}'}"
            self.result.pairs.append(pair)

    # -- building pairs -----------------------------------------------------------------------------------------------
    def image(self, prefix: str, value, fld: str = "image") -> tuple[str | None, tuple[str, str] | None]:
        """Check the image a row names (`value`, relative to `prefix` under the root).

        Returns (path for the pair, None) when usable. Path-safety problems always quarantine the row. Other problems
        quarantine when require_images is set; otherwise the result is (None, (code, path)) and the caller passes that
        to `add(image_problem=...)`, which keeps the pair text-only, records the path in meta and warns.
        """
        if value is None or (isinstance(value, str) and not value.strip()):
            if self.images.require_images:
                raise RowProblem(fld, "missing_field", "no image given")
            return None, ("no_image", "")  # a warning code only: the row is a text-only pair by the user's choice
        if not isinstance(value, str):
            raise RowProblem(fld, "wrong_type", f"image path must be a string, got {type(value).__name__}")
        # Check the row's own value before joining: joining "/etc/x" or "C:\\x" under a prefix could hide it.
        problem = path_problem(value)
        if problem:
            raise RowProblem(fld, *problem)
        rel = posixpath.join(prefix, value) if prefix not in ("", ".") else value
        if rel not in self._image_cache:
            self._image_cache[rel] = inspect_image(self.root, rel, self.images)
        problem = self._image_cache[rel]
        if problem is None:
            return rel, None
        return self.image_problem(fld, rel, *problem)

    def image_problem(self, fld: str, rel: str, code: str, detail: str) -> tuple[None, tuple[str, str]]:
        """Apply the image policy to a problem found by a converter (e.g. an image a manifest lists as missing)."""
        if code in PATH_SECURITY_CODES or self.images.require_images:
            raise RowProblem(fld, code, detail)
        return None, (code, rel)

    def add(self, file: str, row: int | None, **fields) -> SSUIPair:
        """Build a pair (inside `row`), turning schema errors into reason codes and checking for duplicate ids.
        If the image had a problem that require_images=False tolerates, pass `image_problem=(code, original_path)`."""
        assert self._pending is not None, "add() must be called inside Collector.row()"
        image_problem = fields.pop("image_problem", None)
        try:
            pair = SSUIPair(**fields)
        except PairError as e:
            raise RowProblem(*_classify_pair_error(str(e))) from None
        if pair.id in self._ids or any(p.id == pair.id for p in self._pending):
            first = self._ids.get(pair.id, "this same row")
            raise RowProblem("id", "duplicate_id", f"id {pair.id!r} was already used at {first}")
        if self.lengths is not None:
            files = [resolve_image(self.root, rel) for rel in image_paths(pair.image)]
            problem = length_problem(pair, self.lengths, files if len(files) > 1 else files[0] if files else None)
            if problem:
                raise RowProblem(*problem)
        if image_problem:
            code, original = image_problem
            if original:
                pair.meta["image_expected"] = original
            pair.meta["image_problem"] = code
            self.warn(code, f"{file}, row {row}: image {original!r} unusable ({code}); pair {pair.id} kept text-only",
                      file, row)
        self._pending.append(pair)
        return pair

    def finish(self) -> ConversionResult:
        """Post-pass over all kept pairs: a twin_of that points at no kept pair (its row was quarantined, or the id is
        wrong) is cleared with a warning, so consumers never follow a dangling reference."""
        ids = {p.id for p in self.result.pairs}
        for p in self.result.pairs:
            if p.twin_of is not None and p.twin_of not in ids:
                self.warn("twin_unresolved", f"pair {p.id}: twin_of {p.twin_of!r} is not among the converted pairs")
                p.meta["twin_of_unresolved"] = p.twin_of
                p.twin_of = None
        return self.result

    # -- category mapping ---------------------------------------------------------------------------------------------
    def category(self, table: dict[str, str], value, file: str, row: int | None, normalize=None) -> str:
        """Map a source category through `table` (keys are lower-cased, or `normalize(value)`); unknown -> "other"
        with a counted warning."""
        if value is None or (isinstance(value, str) and not value.strip()):
            self.warn("no_source_category", f"{file}, row {row}: no category given; using 'other'", file, row)
            return "other"
        key = normalize(str(value)) if normalize else str(value).strip().lower()
        if key in table:
            return table[key]
        self.warn("unknown_category", f"{file}, row {row}: category {value!r} not in the mapping; using 'other'",
                  file, row)
        return "other"


def _classify_pair_error(msg: str) -> tuple[str, str, str]:
    """Map SSUIPair's PairError messages (field named in quotes) onto (field, code, detail)."""
    for fld, code in (("query", "empty_query"), ("label", "unknown_label"), ("id", "wrong_type"),
                      ("category", "bad_value"), ("image", "image_path_escape")):
        if f"field '{fld}'" in msg:
            return fld, code, msg
    return None, "invalid_pair", msg


def _jsonable(raw):
    """Make a raw row safe for JSON: CSV text decoded with surrogateescape keeps its bad bytes as lone surrogates,
    which json.dumps(ensure_ascii=True) can write; anything else exotic becomes its repr."""
    try:
        json.dumps(raw, ensure_ascii=True)
        return raw
    except (TypeError, ValueError):
        return repr(raw)


# -- field helpers: each raises RowProblem with the field name --------------------------------------------------------
_MISSING = object()


def get_field(raw: dict, name: str, types, *, required: bool = True, empty_code: str = "empty_field"):
    """raw[name] checked for presence, type and (for strings) non-emptiness. Returns None for an absent optional."""
    value = raw.get(name, _MISSING) if isinstance(raw, dict) else _MISSING
    if value is _MISSING or value is None:
        if required:
            raise RowProblem(name, "missing_field", f"field {name!r} is missing")
        return None
    # bool is an int subclass: an id or count given as true/false is a type error, not the number 1/0.
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise RowProblem(name, "wrong_type", f"field {name!r} must be {_typename(types)}, got bool")
    if not isinstance(value, types):
        raise RowProblem(name, "wrong_type", f"field {name!r} must be {_typename(types)}, got {type(value).__name__}")
    if isinstance(value, str) and not value.strip():
        if required and empty_code:
            raise RowProblem(name, empty_code, f"field {name!r} is empty")
        return None
    return value


def require_object(raw) -> dict:
    if not isinstance(raw, dict):
        raise RowProblem(None, "not_an_object", f"row is a JSON {type(raw).__name__}, expected an object")
    return raw


def get_query(raw: dict, name: str) -> str:
    return get_field(raw, name, str, empty_code="empty_query")


def get_id(raw: dict, name: str) -> str:
    """Ids may be strings or integers upstream (SIUO uses ints); both become strings."""
    value = get_field(raw, name, (str, int))
    return str(value).strip()


def _typename(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = {str: "a string", int: "an integer", bool: "true/false", dict: "an object", list: "a list"}
    return " or ".join(names.get(t, t.__name__) for t in types)


LABEL_ALIASES = {"unsafe": "unsafe", "benign": "benign", "safe": "benign", "harmful": "unsafe"}


def get_label(raw: dict, name: str = "label") -> str:
    value = get_field(raw, name, str)
    label = LABEL_ALIASES.get(value.strip().lower())
    if label is None:
        raise RowProblem(name, "unknown_label", f"label {value!r} is not one of {sorted(LABEL_ALIASES)}")
    return label


# -- readers ----------------------------------------------------------------------------------------------------------
def require_file(source: str, path: Path, hint: str) -> Path:
    if not path.is_file():
        raise SourceError(f"{source}: {path} not found; {hint}")
    return path


def read_json(source: str, path: Path):
    """A whole-file JSON document. A syntax error here cannot be isolated to a row, so it stops the conversion."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise SourceError(f"{source}: {path} is not UTF-8 ({e}); re-save it as UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=_Pairs)
    except json.JSONDecodeError as e:
        raise SourceError(f"{source}: {path} is not valid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


class _Pairs(list):
    """A JSON object kept as its (key, value) list so duplicate keys are visible (json.load keeps only the last)."""


def plain(obj):
    """Convert `_Pairs` back to dicts, keeping the first value of a duplicated nested key."""
    if isinstance(obj, _Pairs):
        out: dict = {}
        for k, v in obj:
            out.setdefault(k, plain(v))
        return out
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    return obj


def json_items(doc) -> Iterator[tuple[int, str | None, object]]:
    """Rows of a JSON array or of a JSON object keyed by id: (1-based index, key or None, row value).
    Duplicate keys in the object are all yielded, so the duplicate-id check sees them."""
    if isinstance(doc, _Pairs):
        for i, (k, v) in enumerate(doc, 1):
            yield i, k, plain(v)
    elif isinstance(doc, list):
        for i, v in enumerate(doc, 1):
            yield i, None, plain(v)
    else:
        raise SourceError(f"expected a JSON array or object of rows, got {type(doc).__name__}")


def _bad_line(col: Collector, file: str, lineno: int, code: str, detail: str, raw) -> None:
    """Quarantine a line the reader itself rejects (it never reaches Collector.row, so count it here)."""
    col.count_row(file)
    col.quarantine(file, lineno, None, code, detail, raw, f"line {lineno}")


def read_jsonl(col: Collector, path: Path) -> Iterator[tuple[int, dict]]:
    """(1-based line number, row) for each good line; bad lines are quarantined and reading goes on."""
    file = col.display(path)
    with open(path, "rb") as f:
        for lineno, raw_line in enumerate(f, 1):
            if not raw_line.strip():  # blank lines (often a trailing one) are not rows
                continue
            try:
                line = raw_line.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                _bad_line(col, file, lineno, "bad_encoding", f"line is not UTF-8 ({e.reason} at byte {e.start})",
                          raw_line.decode("utf-8", "backslashreplace").rstrip("\n"))
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                _bad_line(col, file, lineno, "bad_json", f"invalid JSON: {e.msg} at column {e.colno}",
                          line.rstrip("\n"))
                continue
            if not isinstance(row, dict):
                _bad_line(col, file, lineno, "not_an_object", f"line holds a JSON {type(row).__name__}", row)
                continue
            yield lineno, row


def read_csv(col: Collector, path: Path, encoding: str = "utf-8", required: tuple[str, ...] = ()
             ) -> Iterator[tuple[int, dict]]:
    """(1-based line where the record starts, row) for each good CSV record; `required` columns must be in the header.

    The file is decoded with surrogateescape so one row with bytes that are not valid in `encoding` (a Latin-1
    export, say) is quarantined on its own instead of making the whole file unreadable. A UTF-8 BOM is dropped.
    """
    file = col.display(path)
    data = path.read_bytes()
    if encoding.lower().replace("-", "") in ("utf8", "utf8sig"):
        encoding = "utf-8"
        data = data.removeprefix(b"\xef\xbb\xbf")
    text = data.decode(encoding, errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise SourceError(f"{file} is empty; expected a header row") from None
    header = [h.strip() for h in header]
    if _has_surrogates(header):
        raise SourceError(f"{file}: the header is not valid {encoding}; re-save the file as UTF-8")
    absent = [c for c in required if c not in header]
    if absent:
        # A missing column is a file-level mistake (wrong file, wrong delimiter): say so once instead of
        # quarantining every row with the same reason.
        raise SourceError(f"{file}: columns {absent} missing from the header {header}")
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            _bad_line(col, file, start, "csv_malformed", f"CSV syntax error: {e}", None)
            start = reader.line_num + 1
            continue
        lineno, start = start, reader.line_num + 1
        if not values or all(not v.strip() for v in values):  # blank line
            continue
        raw = dict(zip(header, values, strict=False))
        if _has_surrogates(values):
            _bad_line(col, file, lineno, "bad_encoding", f"row contains bytes that are not valid {encoding}",
                      {k: _show_bad_bytes(v) for k, v in raw.items()})
            continue
        if len(values) != len(header):
            _bad_line(col, file, lineno, "csv_malformed",
                      f"row has {len(values)} fields, the header has {len(header)}", values)
            continue
        yield lineno, raw


def _has_surrogates(values) -> bool:
    return any(any("\udc80" <= ch <= "\udcff" for ch in v) for v in values)


def _show_bad_bytes(s: str) -> str:
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# -- output -----------------------------------------------------------------------------------------------------------
def write_quarantine(records: list[QuarantineRecord], path: str | os.PathLike) -> int:
    """Write quarantine records as JSONL atomically (temp file in the same folder, fsync, os.replace): a reader sees
    the old file or the whole new one, never half of it. ensure_ascii keeps undecodable bytes writable."""
    from srpo.runfolder import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r.to_dict(), ensure_ascii=True, sort_keys=True, default=repr) + "\n"
                                    for r in records))
    return len(records)


def summarize(result: ConversionResult) -> str:
    """Human-readable counts: rows, pairs, quarantine per reason, warnings per code, and the first few messages."""
    lines = [
        f"source {result.source} (root {result.root})",
        (
            f"  rows seen {result.rows_seen}, converted {result.rows_ok}, quarantined {len(result.quarantined)}; "
            f"pairs {len(result.pairs)}"
        ),
    ]
    for file, n in sorted(result.rows_per_file.items()):
        lines.append(f"    {file}: {n} rows")
    labels = Counter(p.label for p in result.pairs)
    cats = Counter(p.category for p in result.pairs)
    if result.pairs:
        lines.append("  labels: " + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())))
        lines.append("  categories: " + ", ".join(f"{k} {cats[k]}" for k in RISK_CATEGORIES if cats[k]))
    if result.quarantined:
        lines.append("  quarantined by reason:")
        lines += [f"    {code:<26} {n}" for code, n in sorted(result.reason_counts().items())]
        lines.append("  first problems:")
        lines += [f"    {q.message}" for q in result.quarantined[:3]]
    if result.warnings:
        lines.append("  warnings by code:")
        lines += [f"    {code:<26} {n}" for code, n in sorted(result.warning_counts().items())]
    return "\n".join(lines)
