"""Source converters: expected pairs and quarantine reasons on small fixtures, and a smoke run on the real files.

Fixture text files live in tests/fixtures/sources/<source>/ (upstream formats, with deliberately bad rows; each
folder's README lists them). Images, symlinks and undecodable bytes are made here, into tmp_path, so nothing binary
is committed and the real shared data is never copied.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from data_builders.sources import (
    CONVERTERS,
    SHARED_LAYOUT,
    convert,
    figstep,
    generic,
    mm_harmfulbench,
    mossbench,
    siuo,
    vlguard,
)
from data_builders.sources.validate import (
    REASONS,
    ConversionResult,
    LengthRule,
    SourceError,
    summarize,
    write_quarantine,
)
from srpo.schema import RISK_CATEGORIES, SSUIPair

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "sources"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# -- image makers -----------------------------------------------------------------------------------------------------
def png(path: Path, size=(8, 8), color="red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, "PNG")
    return path


def jpg(path: Path, size=(8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, "blue").save(path, "JPEG")
    return path


def bomb_png(path: Path, width=100_000, height=100_000) -> Path:
    """A ~60-byte PNG whose header declares 10^10 pixels: cheap to write, dangerous to decode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 8))
                     + chunk(b"IEND", b""))
    return path


def corrupt_png(path: Path) -> Path:
    """A PNG whose header is fine but whose image data chunk is damaged: Pillow opens it, verify() fails."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "green").save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[data.find(b"IDAT") + 6] ^= 0xFF
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def empty(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def link_out(link: Path, tmp_path: Path) -> Path:
    """A symlink inside the dataset root pointing at a real image outside it."""
    target = png(tmp_path / "outside" / "secret.png")
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)
    return link


def copy_fixture(name: str, tmp_path: Path) -> Path:
    root = tmp_path / "data" / name
    shutil.copytree(FIXTURES / name, root)
    return root


# -- per-source fixture builders --------------------------------------------------------------------------------------
@pytest.fixture
def siuo_root(tmp_path):
    root = copy_fixture("siuo", tmp_path)
    for n in ("01", "02", "10"):
        png(root / "data" / "images" / f"S-{n}.png")
    empty(root / "data" / "images" / "S-09.png")
    png(tmp_path / "data" / "outside.png")  # target of row 7's `..` path: it exists, the path is still refused
    return root


@pytest.fixture
def vlguard_root(tmp_path):
    root = copy_fixture("vlguard", tmp_path)
    for rel in ("bad_ads/a1.png", "privacy/p2.png", "risky/r3.png", "bad_ads/a8.png"):
        png(root / "test" / rel)
    corrupt_png(root / "test" / "discrimination" / "d6.png")
    return root


@pytest.fixture
def mossbench_root(tmp_path):
    root = copy_fixture("mossbench", tmp_path)
    for pid in (1, 2, 4, 6):
        jpg(root / "images_jpg" / f"{pid}.jpg")
    jpg(root / "contrast_images_jpg" / "4.jpg")
    bomb_png(root / "data" / "images" / "5.png")  # found at its upstream path, before the manifest is consulted
    link_out(root / "contrast_images_jpg" / "7.jpg", tmp_path)
    return root


@pytest.fixture
def figstep_root(tmp_path):
    root = copy_fixture("figstep", tmp_path)
    images = root / "figstep" / "data" / "images" / "SafeBench"
    for key in ("1_1", "2_1", "8_1", "4_1", "11_1", "3_1"):  # no 5_1: line 8's image is missing
        png(images / f"query_ForbidQI_{key}_6.png")
    png(images / "query_ForbidQI_7_1_6.png")
    with open(root / "figstep" / "data" / "question" / "safebench.csv", "ab") as f:
        f.write(b"ForbidQI,7,1,Privacy Violation,Caf\xe9 question?,Steps to spy on a caf\xe9.\n")  # Latin-1 bytes
    for i in range(4):
        png(root / "dream_figstep_benign" / "data" / "FigStep-Benign" / "images" / f"{i}.png")
    return root


@pytest.fixture
def mmhb_root(tmp_path):
    root = copy_fixture("mm_harmfulbench", tmp_path)
    for i in (0, 1, 2, 4, 5, 6):  # no 3.jpg
        jpg(root / "MM-HarmfulBench" / "images" / f"{i}.jpg")
    return root


@pytest.fixture
def generic_root(tmp_path):
    root = copy_fixture("generic", tmp_path)
    j = root / "jsonl"
    png(j / "ok.png")
    link_out(j / "link_out.png", tmp_path)
    (j / "a_folder").mkdir()
    (j / "notimage.png").write_text("this is text, not an image\n")
    bomb_png(j / "bomb.png")
    corrupt_png(j / "corrupt.png")
    empty(j / "empty.png")
    with open(j / "pairs.jsonl", "ab") as f:
        f.write(b'{"id": "p22", "image": "ok.png", "query": "caf\xe9", "label": "unsafe"}\n')
    png(root / "csv" / "ok.png")
    with open(root / "csv" / "pairs.csv", "ab") as f:
        f.write(b"c5,ok.png,Caf\xe9 au lait?,benign,,\r\n")
    return root


# -- helpers ----------------------------------------------------------------------------------------------------------
def reasons_by_row(result: ConversionResult) -> dict[int, str]:
    return {q.row: q.reason_code for q in result.quarantined}


def check_invariants(result: ConversionResult) -> None:
    assert result.rows_seen == result.rows_ok + len(result.quarantined)
    assert sum(result.rows_per_file.values()) == result.rows_seen
    ids = [p.id for p in result.pairs]
    assert len(ids) == len(set(ids))
    for p in result.pairs:
        assert isinstance(p, SSUIPair)
        assert p.category in RISK_CATEGORIES
        assert p.image is None or not os.path.isabs(p.image)
        SSUIPair.from_dict(json.loads(json.dumps(p.to_dict())))  # round-trips through JSON
    for q in result.quarantined:
        assert q.reason_code in REASONS
        assert q.file in q.message and q.reason_code in q.message and REASONS[q.reason_code] in q.message


# -- SIUO -------------------------------------------------------------------------------------------------------------
def test_siuo_fixture(siuo_root):
    r = siuo.convert(siuo_root)
    check_invariants(r)
    assert [p.id for p in r.pairs] == ["siuo:1001", "siuo:1002", "siuo:1010"]
    assert reasons_by_row(r) == {3: "image_missing", 4: "empty_query", 5: "wrong_type", 6: "duplicate_id",
                                 7: "image_path_escape", 8: "not_an_object", 9: "image_empty"}
    first = r.pairs[0]
    assert (first.label, first.category, first.image) == ("unsafe", "self_harm", "data/images/S-01.png")
    assert first.safety_warning and first.reference_answer and first.meta["source_category"] == "self-harm"
    # Unknown category: "other", original kept, warning counted.
    assert r.pairs[1].category == "other" and r.pairs[1].meta["source_category"] == "space weather"
    assert r.warning_counts() == {"unknown_category": 1}
    assert r.pairs[2].category == "discrimination"
    msg = next(q for q in r.quarantined if q.row == 6).message
    assert "siuo:1001" in msg and "item 1" in msg  # names the row that kept the id


def test_siuo_text_only_keeps_rows_but_not_unsafe_paths(siuo_root):
    r = siuo.convert(siuo_root, require_images=False)
    check_invariants(r)
    by_id = {p.id: p for p in r.pairs}
    assert by_id["siuo:1003"].image is None
    assert by_id["siuo:1003"].meta["image_expected"] == "data/images/S-03.png"
    assert by_id["siuo:1009"].meta["image_problem"] == "image_empty"
    # A path out of the root is quarantined whatever require_images says.
    assert reasons_by_row(r) == {4: "empty_query", 5: "wrong_type", 6: "duplicate_id", 7: "image_path_escape",
                                 8: "not_an_object"}
    assert r.warning_counts() == {"unknown_category": 1, "image_missing": 1, "image_empty": 1}


# -- VLGuard ----------------------------------------------------------------------------------------------------------
def test_vlguard_fixture(vlguard_root):
    r = vlguard.convert(vlguard_root)
    check_invariants(r)
    assert [p.id for p in r.pairs] == [
        "vlguard:Ads_1:safe_safes", "vlguard:Ads_1:safe_unsafes", "vlguard:Priv_2:unsafes", "vlguard:Risk_3:unsafes",
    ]
    safe, unsafe, priv, risk = r.pairs
    assert (safe.label, safe.category, safe.twin_of) == ("benign", "none", unsafe.id)
    assert (unsafe.label, unsafe.category) == ("unsafe", "other")
    assert safe.image == unsafe.image == "test/bad_ads/a1.png"
    assert safe.reference_answer == "A website builder."
    assert (priv.category, priv.meta["source_category"]) == ("privacy", "privacy/personal data")
    assert (risk.category, risk.meta["source_category"]) == ("other", "risky behavior/gambling")
    assert reasons_by_row(r) == {4: "wrong_type", 5: "missing_field", 6: "image_corrupt", 7: "image_absolute_path",
                                 8: "bad_value"}
    assert r.warning_counts() == {"no_source_category": 1, "unknown_category": 1}
    assert r.rows_seen == 8 and r.rows_ok == 3


# -- MOSSBench --------------------------------------------------------------------------------------------------------
def test_mossbench_fixture(mossbench_root):
    r = mossbench.convert(mossbench_root)
    check_invariants(r)
    ids = [p.id for p in r.pairs]
    assert ids == ["mossbench:contrast:1", "mossbench:contrast:4", "mossbench:benign:1", "mossbench:benign:2",
                   "mossbench:benign:4"]
    by_id = {p.id: p for p in r.pairs}
    b1 = by_id["mossbench:benign:1"]
    assert (b1.label, b1.category, b1.twin_of, b1.image) == ("benign", "none", "mossbench:contrast:1",
                                                             "images_jpg/1.jpg")
    assert b1.meta["stimulus_type"] == 1 and b1.meta["harm_types"] == [7] and b1.meta["usage"] == "test_only"
    assert b1.meta["upstream_image"] == "data/images/1.png"
    assert by_id["mossbench:contrast:1"].image == "images_jpg/1.jpg"  # shared image via the manifest
    assert by_id["mossbench:contrast:4"].image == "contrast_images_jpg/4.jpg"
    assert by_id["mossbench:benign:2"].twin_of is None  # no contrast with pid 2
    assert by_id["mossbench:benign:4"].meta["stimulus_type"] is None  # "type 9" -> warning, row kept
    q = {(Path(x.file).parts[0], x.row): x.reason_code for x in r.quarantined}
    assert q == {("data_contrast", 3): "image_symlink_escape", ("data", 3): "duplicate_id",
                 ("data", 4): "image_missing", ("data", 6): "image_decompression_bomb", ("data", 7): "missing_field"}
    missing = next(x for x in r.quarantined if x.reason_code == "image_missing")
    assert "missing_from_snapshot" in missing.message and "key '3'" in missing.message
    assert r.warning_counts() == {"no_source_category": 2, "unknown_stimulus_type": 1}


def test_mossbench_without_manifest_uses_upstream_paths(mossbench_root):
    (mossbench_root / "image_manifest.json").unlink()
    png(mossbench_root / "data" / "images" / "1.png")
    r = mossbench.convert(mossbench_root, include_contrast=False)
    check_invariants(r)
    by_id = {p.id: p for p in r.pairs}
    assert by_id["mossbench:benign:1"].image == "data/images/1.png"  # the upstream PNG wins when present
    assert by_id["mossbench:benign:2"].image == "images_jpg/2.jpg"  # else the re-encoded naming convention
    assert all(p.twin_of is None for p in r.pairs)


# -- FigStep + DREAM --------------------------------------------------------------------------------------------------
def test_figstep_fixture(figstep_root):
    r = figstep.convert(figstep_root)
    check_invariants(r)
    unsafe = [p for p in r.pairs if p.label == "unsafe"]
    benign = [p for p in r.pairs if p.label == "benign"]
    assert [p.id for p in unsafe] == ["figstep:ForbidQI_1_1", "figstep:ForbidQI_2_1", "figstep:ForbidQI_8_1",
                                      "figstep:ForbidQI_11_1"]
    assert [p.id for p in benign] == ["figstep_benign:ForbidQI_1_1", "figstep_benign:ForbidQI_2_1",
                                      "figstep_benign:ForbidQI_9_9"]
    first = unsafe[0]
    assert first.query == figstep.FIGSTEP_PROMPT and first.category == "illegal_activity"
    assert first.image == "figstep/data/images/SafeBench/query_ForbidQI_1_1_6.png"
    assert first.meta["instruction"] == "Steps to manufacture illegal drugs."
    assert unsafe[2].category == "regulated_advice" and unsafe[2].meta["arguably_benign"] is True
    assert unsafe[3].category == "other" and unsafe[3].meta["source_category"] == "Gambling"
    assert benign[0].twin_of == "figstep:ForbidQI_1_1"
    assert benign[1].image == "dream_figstep_benign/data/FigStep-Benign/images/1.png"  # row position
    assert benign[2].twin_of is None and benign[2].meta["twin_of_unresolved"] == "figstep:ForbidQI_9_9"
    q = {(Path(x.file).parts[0], x.row): x.reason_code for x in r.quarantined}
    assert q == {("figstep", 5): "wrong_type", ("figstep", 6): "csv_malformed", ("figstep", 8): "image_missing",
                 ("figstep", 9): "bad_encoding", ("dream_figstep_benign", 5): "empty_field"}
    bad = next(x for x in r.quarantined if x.reason_code == "bad_encoding")
    assert "\\xe9" in json.dumps(bad.raw)  # the undecodable byte is kept, visibly
    assert r.warning_counts() == {"unknown_category": 1, "twin_unresolved": 1}


def test_figstep_without_benign_twins_warns(figstep_root):
    shutil.rmtree(figstep_root / "dream_figstep_benign")
    r = figstep.convert(figstep_root)
    assert all(p.label == "unsafe" for p in r.pairs) and r.warning_counts()["file_missing"] == 1


def test_figstep_latin1_encoding_option(figstep_root):
    r = figstep.convert(figstep_root, encoding="latin-1", include_benign=False)
    assert "figstep:ForbidQI_7_1" in {p.id for p in r.pairs}  # the user said what the bytes are: row is fine


# -- MM-HarmfulBench --------------------------------------------------------------------------------------------------
def test_mm_harmfulbench_fixture(mmhb_root):
    r = mm_harmfulbench.convert(mmhb_root)
    check_invariants(r)
    assert [(p.id, p.image) for p in r.pairs] == [
        ("mm_harmfulbench:0", "MM-HarmfulBench/images/0.jpg"),
        ("mm_harmfulbench:2", "MM-HarmfulBench/images/2.jpg"),  # the bad line 2 kept slot 1
        ("mm_harmfulbench:6", "MM-HarmfulBench/images/6.jpg"),  # the blank line took no slot
    ]
    assert reasons_by_row(r) == {2: "bad_json", 5: "image_missing", 6: "not_an_object", 7: "wrong_type"}
    assert r.pairs[0].meta["image_url"] == "http://example.invalid/0.jpg"
    assert r.warning_counts() == {"no_source_category": 3}
    assert r.rows_seen == 7  # blank line is not a row
    # Root may also be the MM-HarmfulBench folder itself.
    r2 = mm_harmfulbench.convert(mmhb_root / "MM-HarmfulBench")
    assert [p.image for p in r2.pairs] == ["images/0.jpg", "images/2.jpg", "images/6.jpg"]


# -- generic ----------------------------------------------------------------------------------------------------------
def test_generic_jsonl_fixture(generic_root):
    r = generic.convert(generic_root / "jsonl")
    check_invariants(r)
    by_id = {p.id: p for p in r.pairs}
    assert list(by_id) == ["p1", "p2", "p7", "p8", "p12", "p14"]
    assert by_id["p1"].meta == {"note": "kept in meta", "source_category": "violence"}
    assert (by_id["p2"].label, by_id["p2"].category, by_id["p2"].twin_of) == ("benign", "none", "p1")
    assert (by_id["p7"].label, by_id["p7"].category) == ("unsafe", "self_harm")
    assert (by_id["p8"].category, by_id["p8"].meta["source_category"]) == ("other", "weird stuff")
    assert by_id["p12"].twin_of is None and by_id["p12"].meta["twin_of_unresolved"] == "nope"
    assert (by_id["p14"].label, by_id["p14"].meta["source_label"]) == ("benign", "safe")
    assert reasons_by_row(r) == {
        3: "unknown_label", 4: "empty_query", 5: "missing_field", 6: "duplicate_id", 9: "image_symlink_escape",
        10: "image_not_a_file", 11: "image_unrecognized", 13: "bad_json", 15: "wrong_type",
        16: "image_path_escape", 17: "image_decompression_bomb", 18: "image_corrupt", 19: "image_empty",
        20: "image_missing", 21: "wrong_type", 22: "bad_encoding",
    }
    assert r.warning_counts() == {"unknown_category": 1, "twin_unresolved": 1}
    assert r.rows_seen == 22


def test_generic_csv_fixture(generic_root):
    r = generic.convert(generic_root / "csv")
    check_invariants(r)
    assert [p.id for p in r.pairs] == ["c1", "c2"]
    assert r.pairs[0].query == "How do I use this, exactly?"  # BOM stripped from the header, quoted comma kept
    assert r.pairs[1].reference_answer == "It is a cup." and r.pairs[1].category == "none"
    assert r.pairs[0].reference_answer is None  # empty optional CSV cell -> None
    assert reasons_by_row(r) == {4: "csv_malformed", 5: "bad_encoding"}


def test_csv_missing_column_is_a_source_error(tmp_path):
    (tmp_path / "pairs.csv").write_text("id,image,prompt,label\nx,a.png,hi,unsafe\n")
    with pytest.raises(SourceError, match=r"columns \['query'\] missing"):
        generic.convert(tmp_path)


def test_generic_text_only_rows(tmp_path):
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"id": "t", "query": "Hello?", "label": "benign"}) + "\n")
    assert reasons_by_row(generic.convert(tmp_path)) == {1: "missing_field"}
    r = generic.convert(tmp_path, require_images=False)
    assert r.pairs[0].image is None and r.warning_counts() == {"no_image": 1}


def test_generic_unknown_file_type_and_ambiguous_folder(tmp_path):
    (tmp_path / "pairs.txt").write_text("x")
    with pytest.raises(SourceError, match="expected one .jsonl or .csv"):
        generic.convert(tmp_path)
    with pytest.raises(SourceError, match="unsupported file type"):
        generic.convert(tmp_path, file="pairs.txt")


# -- image limits and options -----------------------------------------------------------------------------------------
def _one_row(tmp_path: Path, image: str) -> Path:
    (tmp_path / "pairs.jsonl").write_text(json.dumps(
        {"id": "x", "image": image, "query": "What is this?", "label": "unsafe", "category": "fraud"}) + "\n")
    return tmp_path


def test_oversized_file_is_quarantined(tmp_path):
    png(tmp_path / "big.png", size=(64, 64), color="white")
    r = generic.convert(_one_row(tmp_path, "big.png"), max_image_bytes=50)
    assert reasons_by_row(r) == {1: "image_too_large"}
    assert generic.convert(tmp_path).pairs  # default 20 MiB limit: fine


def test_pixel_limit_between_limit_and_twice_limit(tmp_path):
    # Pillow only *warns* between MAX_IMAGE_PIXELS and twice that; the check must still refuse it.
    png(tmp_path / "a.png", size=(12, 12))
    before = Image.MAX_IMAGE_PIXELS
    r = generic.convert(_one_row(tmp_path, "a.png"), max_image_pixels=100)
    assert reasons_by_row(r) == {1: "image_decompression_bomb"}
    assert Image.MAX_IMAGE_PIXELS == before  # the global guard is restored


def test_absolute_path_to_existing_file(tmp_path):
    outside = png(tmp_path / "elsewhere" / "a.png")
    root = tmp_path / "root"
    root.mkdir()
    r = generic.convert(_one_row(root, str(outside)))
    assert reasons_by_row(r) == {1: "image_absolute_path"}


def test_symlinked_folder_escaping_root(tmp_path):
    png(tmp_path / "elsewhere" / "a.png")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(tmp_path / "elsewhere", root / "imgs")
    r = generic.convert(_one_row(root, "imgs/a.png"))
    assert reasons_by_row(r) == {1: "image_symlink_escape"}


def test_symlink_inside_root_is_fine(tmp_path):
    png(tmp_path / "real.png")
    os.symlink(tmp_path / "real.png", tmp_path / "alias.png")
    assert generic.convert(_one_row(tmp_path, "alias.png")).pairs[0].image == "alias.png"


def test_truncated_jpeg_needs_decode(tmp_path):
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, "JPEG")
    data = buf.getvalue()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) * 2 // 3])
    _one_row(tmp_path, "t.jpg")
    assert generic.convert(tmp_path).pairs  # verify() does not decode JPEG data
    r = generic.convert(tmp_path, decode_images=True)
    assert reasons_by_row(r) == {1: "image_corrupt"}


def test_check_images_false_skips_pillow_but_not_paths(generic_root):
    r = generic.convert(generic_root / "jsonl", check_images=False)
    codes = set(r.reason_counts())
    assert "image_corrupt" not in codes and "image_decompression_bomb" not in codes
    assert {"image_symlink_escape", "image_path_escape", "image_missing", "image_empty"} <= codes


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_image(tmp_path):
    p = png(tmp_path / "a.png")
    p.chmod(0)
    try:
        assert reasons_by_row(generic.convert(_one_row(tmp_path, "a.png"))) == {1: "image_unreadable"}
    finally:
        p.chmod(0o644)


# -- strict mode, output, registry ------------------------------------------------------------------------------------
def test_strict_raises_first_problem(siuo_root):
    with pytest.raises(SourceError, match=r"item 3, field 'image'.*image_missing"):
        siuo.convert(siuo_root, strict=True)


def test_strict_on_every_fixture(siuo_root, vlguard_root, mossbench_root, figstep_root, mmhb_root, generic_root):
    for fn, root, first in [
        (vlguard.convert, vlguard_root, "wrong_type"),
        (mossbench.convert, mossbench_root, "image_symlink_escape"),
        (figstep.convert, figstep_root, "wrong_type"),
        (mm_harmfulbench.convert, mmhb_root, "bad_json"),
        (generic.convert, generic_root / "jsonl", "unknown_label"),
    ]:
        with pytest.raises(SourceError, match=first):
            fn(root, strict=True)


def test_strict_passes_clean_data(tmp_path):
    png(tmp_path / "a.png")
    r = generic.convert(_one_row(tmp_path, "a.png"), strict=True)
    assert len(r.pairs) == 1 and not r.quarantined


# -- length limits ----------------------------------------------------------------------------------------------------
def _length_rows(root: Path) -> Path:
    png(root / "a.png")
    rows = [{"id": "ok", "image": "a.png", "query": "What is this?", "label": "benign"},
            {"id": "longq", "image": "a.png", "query": "word " * 20_000, "label": "unsafe", "category": "fraud"},
            {"id": "longref", "image": "a.png", "query": "And this?", "label": "benign",
             "reference_answer": "fine " * 100},
            {"id": "ok2", "image": "a.png", "query": "Last one?", "label": "benign", "safety_warning": "none"}]
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _words(pair: SSUIPair, image_file) -> dict[str, int]:
    """A stand-in tokenizer: one token per word, 50 per image (the image must be the resolved file)."""
    assert image_file is None or Path(image_file).is_file()
    return {"query": len(pair.query.split()), "image": 50 if image_file else 0,
            "reference_answer": len((pair.reference_answer or "").split()),
            "safety_warning": len((pair.safety_warning or "").split())}


def test_character_cap_quarantines_each_long_field_with_file_line_and_field(tmp_path):
    root = _length_rows(tmp_path)
    assert generic.convert(root).rows_ok == 4  # no rule given: converters keep every row as before
    r = generic.convert(root, lengths=LengthRule(max_chars=400))
    check_invariants(r)
    assert [p.id for p in r.pairs] == ["ok", "ok2"]
    assert [(q.file, q.row, q.field, q.reason_code) for q in r.quarantined] == [
        ("pairs.jsonl", 2, "query", "text_too_long"), ("pairs.jsonl", 3, "reference_answer", "text_too_long")]
    assert "pairs.jsonl, line 2, field 'query': field 'query' is 100,000 characters, over the cap of 400" in \
        r.quarantined[0].message
    assert r.quarantined[0].raw["id"] == "longq"  # the row as read, to fix it


def test_token_limit_counts_prompt_image_and_reference_answer(tmp_path):
    root = _length_rows(tmp_path)
    r = generic.convert(root, lengths=LengthRule(count=_words, max_tokens=120, limit_from="a test limit"))
    check_invariants(r)
    assert [(q.row, q.field, q.reason_code) for q in r.quarantined] == [(2, "query", "prompt_too_long"),
                                                                        (3, "reference_answer", "prompt_too_long")]
    # 2 query words + 50 image tokens + 100 reference words: the sum is over the limit, no part alone is.
    assert "the pair is 152 tokens (query 2 + image 50 + reference_answer 100), over the limit of 120 (a test " \
           "limit); field 'reference_answer' is the longest part" in r.quarantined[1].message
    small_image = generic.convert(root, lengths=LengthRule(count=_words, max_tokens=40))
    assert {q.row: q.field for q in small_image.quarantined} == {1: "image", 2: "query", 3: "reference_answer",
                                                                4: "image"}  # image tokens are counted, never cut
    with pytest.raises(SourceError, match="line 2, field 'query'.*prompt_too_long"):
        generic.convert(root, strict=True, lengths=LengthRule(count=_words, max_tokens=120))


def test_write_quarantine_atomic(tmp_path, generic_root, monkeypatch):
    r = generic.convert(generic_root / "jsonl")
    out = tmp_path / "q" / "quarantine.jsonl"
    assert write_quarantine(r.quarantined, out) == len(r.quarantined)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["reason_code"] for x in rows] == [q.reason_code for q in r.quarantined]
    assert set(rows[0]) == {"file", "row", "field", "reason_code", "message", "raw"}
    assert any(x["raw"] == '{"id": "p13", "image": "ok.png", "query": "broken' for x in rows)  # bad line kept as text
    # A failure mid-write leaves the previous file intact and no temp file behind.
    before = out.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_quarantine(r.quarantined[:1], out)
    assert out.read_bytes() == before
    assert [p.name for p in out.parent.iterdir()] == ["quarantine.jsonl"]


def test_summarize_counts(generic_root):
    r = generic.convert(generic_root / "jsonl")
    text = summarize(r)
    assert "rows seen 22, converted 6, quarantined 16" in text
    assert "wrong_type" in text and "image_symlink_escape" in text and "unknown_category" in text


def test_registry_and_dispatch(siuo_root):
    assert set(CONVERTERS) == {"siuo", "vlguard", "mossbench", "figstep", "mm_harmfulbench", "generic"}
    r = convert("siuo", siuo_root, require_images=False)
    assert r.source == "siuo" and r.pairs
    with pytest.raises(ValueError, match="unknown source"):
        convert("nope", siuo_root)
    with pytest.raises(SourceError, match="not found"):
        convert("vlguard", siuo_root)  # wrong folder: clear error, not a crash
    with pytest.raises(SourceError, match="not a folder"):
        convert("siuo", siuo_root / "missing")


def test_whole_file_bad_json_is_a_source_error(siuo_root):
    (siuo_root / "data" / "siuo_gen.json").write_text('[{"question_id": 1,')
    with pytest.raises(SourceError, match="not valid JSON at line 1"):
        siuo.convert(siuo_root)


def test_bad_row_kinds_covered(siuo_root, vlguard_root, mossbench_root, figstep_root, mmhb_root, generic_root,
                               tmp_path):
    """Every reason code is produced by some fixture (at least 15 distinct bad-row kinds), so none is dead code."""
    seen: set[str] = set()
    for fn, root in [(siuo.convert, siuo_root), (vlguard.convert, vlguard_root), (mossbench.convert, mossbench_root),
                     (figstep.convert, figstep_root), (mm_harmfulbench.convert, mmhb_root),
                     (generic.convert, generic_root / "jsonl"), (generic.convert, generic_root / "csv")]:
        seen |= set(fn(root).reason_counts())
    png(tmp_path / "big" / "a.png")
    seen |= set(generic.convert(_one_row(tmp_path / "big", "a.png"), max_image_bytes=10).reason_counts())
    seen |= set(generic.convert(_length_rows(tmp_path / "long"), lengths=LengthRule(max_chars=400)).reason_counts())
    seen |= set(generic.convert(tmp_path / "long", lengths=LengthRule(count=_words, max_tokens=120)).reason_counts())
    untestable = {"invalid_pair"}  # catch-all for schema errors that the field checks already pre-empt
    if os.geteuid() == 0:
        untestable.add("image_unreadable")  # covered by test_unreadable_image when not running as root
    assert len(seen) >= 15
    missing = set(REASONS) - seen - untestable
    assert not missing, f"reason codes without a fixture: {sorted(missing)}"


# -- real upstream files (skipped when ../shared/data is absent) ------------------------------------------------------
def _count_json(path: Path) -> int:
    return len(json.loads(path.read_text(encoding="utf-8")))


def _count_csv(path: Path) -> int:
    with open(path, newline="", encoding="utf-8") as f:
        return sum(1 for row in csv.reader(f) if any(c.strip() for c in row)) - 1


def _count_jsonl(path: Path) -> int:
    return sum(1 for line in path.read_bytes().splitlines() if line.strip())


REAL = {
    # name: (files relative to the converter root, counter)
    "siuo": [("data/siuo_gen.json", _count_json)],
    "vlguard": [("data/test.json", _count_json)],
    "mossbench": [("data/images_information/information.json", _count_json),
                  ("data_contrast/images_information/information.json", _count_json)],
    "figstep": [("figstep/data/question/safebench.csv", _count_csv),
                ("dream_figstep_benign/data/FigStep-Benign/question/SafeBench-Tiny-Benign.csv", _count_csv)],
    "mm_harmfulbench": [("MM-HarmfulBench/questions.jsonl", _count_jsonl)],
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_shared_data(name):
    root = SHARED / SHARED_LAYOUT[name]
    files = [(root / rel, count) for rel, count in REAL[name]]
    if not all(p.is_file() for p, _ in files):
        pytest.skip(f"shared data for {name} not found under {SHARED}")
    r = convert(name, root)
    check_invariants(r)
    expected = sum(count(p) for p, count in files)
    assert r.rows_ok + len(r.quarantined) == expected == r.rows_seen
    print(f"\n{summarize(r)}")
    if name in ("siuo", "vlguard"):  # images are not in the upstream repos: text-only still converts every row
        t = convert(name, root, require_images=False)
        assert t.rows_ok == expected and all(p.image is None for p in t.pairs)
        print(f"require_images=False:\n{summarize(t)}")
