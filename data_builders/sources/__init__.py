"""Source converters: one pure function per public benchmark format (plus a generic user format) -> SSUI pairs.

    from data_builders.sources import convert, summarize
    result = convert("siuo", "../shared/data/siuo", require_images=False)
    print(summarize(result))

Each converter is `convert(root, **options) -> ConversionResult`; common options (strict, require_images,
check_images, max_image_bytes, max_image_pixels, decode_images) are described in `validate.Collector`.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from . import figstep, generic, mm_harmfulbench, mossbench, siuo, vlguard
from .validate import (
    ConversionResult,
    ConversionWarning,
    QuarantineRecord,
    SourceError,
    path_problem,
    summarize,
    write_quarantine,
)

CONVERTERS = {
    "siuo": siuo.convert,
    "vlguard": vlguard.convert,
    "mossbench": mossbench.convert,
    "figstep": figstep.convert,
    "mm_harmfulbench": mm_harmfulbench.convert,
    "generic": generic.convert,
}

# The folder under the shared data directory that each converter's `root` should be (figstep's root holds both the
# FigStep and the DREAM checkouts, so it is the shared directory itself).
SHARED_LAYOUT = {
    "siuo": "siuo",
    "vlguard": "vlguard",
    "mossbench": "mossbench",
    "figstep": ".",
    "mm_harmfulbench": "mm_harmfulbench",
}


# Collector options a recipe may pass as source options (strict, require_images and lengths have build keys).
IMAGE_OPTIONS = ("check_images", "max_image_bytes", "max_image_pixels", "decode_images")
# Options naming (or naming part of) a file or folder under the dataset root: like image paths, they may not leave it.
PATH_OPTIONS = ("split", "file", "image_dir", "subdir", "manifest", "figstep_dir", "benign_dir")


def source_options(source_name: str) -> dict[str, object]:
    """The options a source's converter takes beyond its root, with their defaults (e.g. VLGuard's split)."""
    params = inspect.signature(CONVERTERS[source_name]).parameters
    own = {n: p.default for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return {**own, **{n: None for n in IMAGE_OPTIONS}}


def check_options(source_name: str, options: dict) -> list[str]:
    """Each problem of a recipe's source options (unknown name, a path leaving the root), as a sentence; [] when
    they are fine. An unknown source is not checked here (the build names it)."""
    if source_name not in CONVERTERS:
        return []
    if not isinstance(options, dict):
        return [f"must be a mapping of option: value; got {type(options).__name__}"]
    known, problems = source_options(source_name), []
    for name, value in options.items():
        if name not in known:
            problems.append(f"{source_name!r} has no option {name!r}; its options are {', '.join(known)}")
        elif name in PATH_OPTIONS and value is not None:
            problem = None if isinstance(value, str) else ("wrong_type", f"must be a path string, got {value!r}")
            problem = problem or path_problem(value)
            if problem:
                problems.append(f"option {name!r}: {problem[1].replace('image path', 'path')}; give a path "
                                "relative to build_source_root, inside it")
    return problems


def convert(source_name: str, root: str | Path, **options) -> ConversionResult:
    """Run the converter registered as `source_name` on `root`."""
    try:
        fn = CONVERTERS[source_name]
    except KeyError:
        raise ValueError(f"unknown source {source_name!r}; known sources are {sorted(CONVERTERS)}") from None
    return fn(Path(root), **options)


__all__ = [
    "CONVERTERS",
    "SHARED_LAYOUT",
    "ConversionResult",
    "ConversionWarning",
    "QuarantineRecord",
    "SourceError",
    "check_options",
    "convert",
    "source_options",
    "summarize",
    "write_quarantine",
]
