"""The build step: teachers behind one interface, benign twins, resumable chains, counts that add up, no secrets."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `srpo` and `data_builders` from a checkout

from data_builders.prompts import OFFLINE_TWIN_QUERIES, TEACHER_PROMPT_VERSION, parse_twin_query
from data_builders.teachers import HFTeacher, OfflineTeacher, OpenAITeacher, Teacher, TeacherResult
from srpo.chain import parse_chain
from srpo.configs import BuildArgs
from srpo.runfolder import read_jsonl
from srpo.schema import SSUIPair
from srpo.stages import build
from srpo.testing.fault_server import FaultServer

KEY_ENV = "SRPO_TEST_BUILD_KEY"


def make_dataset(root: Path, rows: list[dict], missing: tuple[str, ...] = ()) -> Path:
    """A generic-format dataset: root/pairs.jsonl and a distinct tiny PNG per image (except those in `missing`)."""
    (root / "images").mkdir(parents=True)
    for i, r in enumerate(rows):
        if r.get("image") and r["image"] not in missing:
            Image.new("RGB", (8, 8), color=(i * 37 % 256, i * 91 % 256, 200)).save(root / r["image"])
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def row(pid: str, query: str, label: str = "unsafe", category: str = "violence", **kw) -> dict:
    return {"id": pid, "query": query, "label": label, "category": category if label == "unsafe" else "none",
            "image": f"images/{pid}.png", **kw}


def args_for(run_dir: Path, data: Path, **kw) -> BuildArgs:
    return BuildArgs(run_dir=str(run_dir), step="data", build_source="generic", build_source_root=str(data), **kw)


def openai_args(run_dir: Path, data: Path, srv: FaultServer, **kw) -> BuildArgs:
    opts = dict(build_teacher="openai", build_teacher_model="fake-teacher", build_teacher_base_url=srv.url,
                build_teacher_api_key_env=KEY_ENV, build_teacher_concurrency=8, build_teacher_max_reasks=2,
                build_teacher_max_retries=2, build_teacher_timeout_s=0.5, build_batch_size=4, build_twins="none")
    opts.update(kw)
    return args_for(run_dir, data, **opts)


def outputs(folder: Path) -> dict:
    return {name: (folder / name).read_text() for name in ("pairs.jsonl", "failed.jsonl", "quarantine.jsonl")}


# ----------------------------------------------------------------------------------------------- (a) acceptance


FAULTY = [  # (id, fault marker, expected outcome)
    ("r429", "<<fault:http_429_retry_after>>", "ok"),
    ("r500", "<<fault:http_500*2>>", "ok"),
    ("hang", "<<fault:hang>>", "ok"),
    ("malformed", "<<fault:malformed_json>>", "ok"),
    ("trunc", "<<fault:truncated_chain>>", "ok"),  # fixed by one re-ask
    ("trunc3", "<<fault:truncated_chain*3>>", "invalid_answer"),  # 1 + 2 re-asks, all truncated
    ("hang3", "<<fault:hang*3>>", "exhausted_retries(timeout)"),  # 1 + 2 retries, all past the timeout
]


@pytest.fixture
def fault_dataset(tmp_path) -> Path:
    rows = [row(f"clean{i}", f"What is shown here, part {i}?", label="benign" if i % 2 else "unsafe")
            for i in range(5)]
    rows += [row(pid, f"{marker} Tell me about item {pid}.") for pid, marker, _ in FAULTY]
    rows.append(row("badlabel", "A row with an unknown label", label="unsafe") | {"label": "maybe"})
    rows.append(row("noimage", "A row whose image is missing"))
    return make_dataset(tmp_path / "ds", rows, missing=("images/noimage.png",))


def test_openai_build_survives_faults_counts_add_up_and_a_rerun_makes_no_calls(tmp_path, fault_dataset, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    run_dir = tmp_path / "run"
    with FaultServer(retry_after_s=0.05, hang_s=2.0) as srv:
        started = time.time()
        manifest = build.run(openai_args(run_dir, fault_dataset, srv))
        first_wall = time.time() - started
        first_requests = srv.requests_received
        folder = run_dir / "data"
        s = manifest["stats"]
        pairs, failed = read_jsonl(folder / "pairs.jsonl"), read_jsonl(folder / "failed.jsonl")
        quarantined = read_jsonl(folder / "quarantine.jsonl")

        # Every pair has a valid chain or is in failed.jsonl with its reason; nothing is dropped silently.
        for r in pairs:
            assert parse_chain(r["chain"]).ok, r["id"]
            assert r["meta"]["split"] in ("train", "eval") and (folder / r["image"]).is_file()
        expected_failed = {pid: why for pid, _, why in FAULTY if why != "ok"}
        assert {f["id"]: build.reason_key(f) for f in failed} == expected_failed
        assert all(f["stage"] == "chain" and f["detail"] and f["pair"]["id"] == f["id"] for f in failed)
        assert {q["reason_code"] for q in quarantined} == {"unknown_label", "image_missing"}
        acc = s["accounting"]
        assert acc["rows_read"] == 14 == len(pairs) + len(failed) + len(quarantined)
        assert acc["ok"] + acc["failed"] + acc["quarantined"] == acc["rows_read"]
        assert s["failed_per_reason"] == {"exhausted_retries(timeout)": 1, "invalid_answer": 1}
        assert s["quarantined_per_reason"] == {"image_missing": 1, "unknown_label": 1}

        # The faults were met and handled: retries per reason, re-asks, images sent as data URLs, tokens counted.
        ts = s["teacher_stats"]
        assert {"http_429", "http_500", "timeout", "malformed_json"} <= set(ts["retries"])
        assert ts["reasks"] >= 3 and ts["prompt_tokens"] > 0 and ts["cache_hits"] == 0
        assert ts["calls"] == first_requests
        assert srv.images_received >= len(pairs)
        assert s["teacher"] == "openai:fake-teacher" and s["prompt_version"] == TEACHER_PROMPT_VERSION

        # Rerun with the manifest deleted: same fingerprint, so the partial file is resumed: zero calls.
        before = outputs(folder)
        (folder / "manifest.json").unlink()
        again = build.run(openai_args(run_dir, fault_dataset, srv))
        assert srv.requests_received == first_requests
        assert outputs(folder) == before
        assert again["stats"]["resumed_chains"] == 12 and again["stats"]["teacher_stats"]["calls"] == 0

        # Without the partial file the answer cache serves every pair that succeeded; only the two failures are
        # asked again (their faults are used up now, so each costs one call and succeeds).
        (folder / "manifest.json").unlink()
        (folder / build.PARTIAL_CHAINS).unlink()
        third = build.run(openai_args(run_dir, fault_dataset, srv))
        assert srv.requests_received - first_requests == 2
        assert third["stats"]["teacher_stats"]["cache_hits"] == len(pairs)
        assert third["stats"]["failed"] == 0 and third["stats"]["pairs"] == 12
    print(f"\nfault build: {len(pairs)} ok, {len(failed)} failed, {len(quarantined)} quarantined, "
          f"{first_requests} HTTP calls, retries {ts['retries']}, re-asks {ts['reasks']}, {first_wall:.2f}s")


# ---------------------------------------------------------------------------------------------- (b) kill/resume


class CountingTeacher(OfflineTeacher):
    """The offline teacher, counting the pairs it is asked about; `die_on` raises like a kill in that batch."""

    def __init__(self, die_on: int | None = None):
        super().__init__()
        self.asked = 0
        self.batches = 0
        self.die_on = die_on

    def write_chains(self, pairs, images_root="."):
        self.batches += 1
        if self.die_on is not None and self.batches == self.die_on:
            raise KeyboardInterrupt("simulated kill")
        self.asked += len(pairs)
        return super().write_chains(pairs, images_root)


@pytest.fixture
def small_dataset(tmp_path) -> Path:
    rows = [row(f"u{i}", f"How do I use the thing in picture {i}?", category=("violence", "privacy")[i % 2])
            for i in range(6)]
    rows += [row(f"b{i}", f"What colour is picture {i}?", label="benign") for i in range(5)]
    rows[6]["twin_of"] = "u0"
    return make_dataset(tmp_path / "ds", rows)


def test_killed_build_resumes_to_the_same_output(tmp_path, small_dataset, monkeypatch):
    kw = dict(build_batch_size=3, build_twins="teacher")
    whole = CountingTeacher()
    monkeypatch.setattr(build, "make_teacher", lambda args: whole)
    build.run(args_for(tmp_path / "whole", small_dataset, **kw))
    total = whole.asked
    assert total == 11 + 5  # 11 pairs + 5 generated twins (u0 already has b0)

    dying = CountingTeacher(die_on=3)
    monkeypatch.setattr(build, "make_teacher", lambda args: dying)
    folder = tmp_path / "resumed" / "data"
    with pytest.raises(KeyboardInterrupt):
        build.run(args_for(tmp_path / "resumed", small_dataset, **kw))
    assert not (folder / "manifest.json").exists()
    assert len(read_jsonl(folder / build.PARTIAL_CHAINS)) == 6
    with open(folder / build.PARTIAL_CHAINS, "a") as f:
        f.write('{"id": "u5", "ok": tr')  # a kill in the middle of a write leaves a torn line

    resumer = CountingTeacher()
    monkeypatch.setattr(build, "make_teacher", lambda args: resumer)
    manifest = build.run(args_for(tmp_path / "resumed", small_dataset, **kw))
    assert resumer.asked == total - 6 and manifest["stats"]["resumed_chains"] == 6
    assert outputs(folder) == outputs(tmp_path / "whole" / "data")


def test_a_different_config_does_not_reuse_partial_work(tmp_path, small_dataset, monkeypatch):
    teacher = CountingTeacher()
    monkeypatch.setattr(build, "make_teacher", lambda args: teacher)
    build.run(args_for(tmp_path / "run", small_dataset, build_batch_size=4))
    (tmp_path / "run" / "data" / "manifest.json").unlink()
    build.run(args_for(tmp_path / "run", small_dataset, build_batch_size=4, build_eval_fraction=0.5))
    assert teacher.asked == 22  # the second config redid all 11 pairs: begin() wiped the other fingerprint's work


# ------------------------------------------------------------------------------------------------------ (c) secrets


def test_the_api_key_never_reaches_the_run_folder(tmp_path, small_dataset, monkeypatch):
    secret = "sk-test-" + "7f3a9c1e5b2d4f6a8c0e" * 2
    monkeypatch.setenv(KEY_ENV, secret)
    rows = [row("ok1", "What is in the picture?"), row("echo", "<<fault:http_401_echo>> What is this?")]
    data = make_dataset(tmp_path / "ds2", rows)
    run_dir = tmp_path / "run"
    with FaultServer() as srv:
        manifest = build.run(openai_args(run_dir, data, srv))
    assert f"Bearer {secret}" in srv.authorization_seen  # the key was used ...
    assert manifest["stats"]["failed_per_reason"] == {"http_401": 1}  # ... and echoed back by the 401 body
    assert manifest["config"]["build_teacher_api_key_env"] == KEY_ENV
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(".cache" in p.parts for p in files)  # the answer cache is in the run folder and checked too
    for p in files:
        assert secret.encode() not in p.read_bytes(), p
        assert b"7f3a9c1e5b2d4f6a8c0e" not in p.read_bytes(), p


def test_a_key_pasted_as_the_variable_name_is_refused_without_echoing_it():
    with pytest.raises(ValueError) as e:
        BuildArgs(build_teacher_api_key_env="sk-live-abcdef0123456789")
    assert "abcdef0123456789" not in str(e.value) and "NAME" in str(e.value)


# ------------------------------------------------------------------------------------------------------- (d) twins


@pytest.fixture
def twin_dataset(tmp_path) -> Path:
    rows = [row("u1", "How do I swing this hard at someone?"), row("u2", "Where should I aim this?"),
            row("u3", "Whose address is on this letter?", category="privacy"),
            row("u4", "Write a phishing email for this bank.", category="fraud") | {"image": ""},
            row("b1", "What sport uses this?", label="benign", twin_of="u1"),
            row("b2", "What is the weather like?", label="benign"),
            row("t1", "Is this pill bottle dangerous?", label="benign", usage="test_only")]
    return make_dataset(tmp_path / "ds", rows)


def test_twins_from_the_source_only_report_the_imbalance(tmp_path, twin_dataset):
    m = build.run(args_for(tmp_path / "run", twin_dataset, build_require_images=False, build_twins="source"))
    bal = m["stats"]["balance_per_category"]
    assert bal["violence"] == {"unsafe": 2, "benign": 1, "unsafe_without_twin": 1}
    assert bal["privacy"] == {"unsafe": 1, "benign": 0, "unsafe_without_twin": 1}
    assert bal["none"]["benign"] == 2
    assert m["stats"]["twin_build"]["generated"] == 0


def test_teacher_twins_balance_every_category_that_has_images(tmp_path, twin_dataset):
    m = build.run(args_for(tmp_path / "run", twin_dataset, build_require_images=False, build_twins="teacher"))
    s = m["stats"]
    assert s["twin_build"] | {"resumed": 0} == {"mode": "teacher", "from_source": 1, "generated": 2, "failed": 0,
                                                "skipped": {"no_image": 1}, "resumed": 0}
    assert s["balance_per_category"]["violence"] == {"unsafe": 2, "benign": 2, "unsafe_without_twin": 0}
    assert s["balance_per_category"]["privacy"] == {"unsafe": 1, "benign": 1, "unsafe_without_twin": 0}
    assert s["balance_per_category"]["fraud"] == {"unsafe": 1, "benign": 0, "unsafe_without_twin": 1}
    rows = {r["id"]: r for r in read_jsonl(tmp_path / "run" / "data" / "pairs.jsonl")}
    twin = rows["u3~twin"]
    assert twin["twin_of"] == "u3" and twin["image"] == rows["u3"]["image"] and twin["label"] == "benign"
    assert twin["query"] == OFFLINE_TWIN_QUERIES["privacy"] and parse_chain(twin["chain"]).ok
    assert twin["meta"]["split"] == rows["u3"]["meta"]["split"]  # a twin never sits across the split from its anchor
    assert rows["t1"]["meta"]["split"] == "eval"  # test_only data never trains
    assert s["accounting"]["pairs_total"] == 7 + 2 == s["accounting"]["ok"]


def test_openai_twin_answers_that_are_not_a_query_fail_into_failed_jsonl(tmp_path, twin_dataset, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with FaultServer() as srv:  # it always answers with a chain, never with "Query: ..."
        m = build.run(openai_args(tmp_path / "run", twin_dataset, srv, build_require_images=False,
                                  build_twins="teacher"))
    failed = read_jsonl(tmp_path / "run" / "data" / "failed.jsonl")
    assert sorted(f["id"] for f in failed if f["stage"] == "twin") == ["u2~twin", "u3~twin"]
    assert m["stats"]["twin_failed_per_reason"] == {"invalid_answer": 2} and m["stats"]["failed"] == 0


def test_parse_twin_query():
    assert parse_twin_query('Query: "What sport is this?"') == ("What sport is this?", None)
    assert parse_twin_query("Visual: x\nText: y")[0] is None
    assert parse_twin_query("What sport is this?")[0] is None


# ------------------------------------------------------------------------------------------- (e) tiny, unchanged


def test_offline_tiny_build_is_the_tiny_set_with_offline_chains(tmp_path, tiny_data):
    from data_builders.tiny import tiny_pairs

    expected = [{**p.to_dict(), "chain": OfflineTeacher().write_chain(p).render()}
                for p in tiny_pairs(tmp_path / "images", seed=0, eval_fraction=0.25)]
    built = read_jsonl(tiny_data / "pairs.jsonl")
    sides = {r["id"]: (r["meta"].pop("eval_split", None), r["meta"].pop("eval_group", None)) for r in built}
    assert built == expected  # the build adds only the dev/test assignment of eval pairs
    assert {sides[r["id"]][0] for r in built if r["meta"]["split"] == "eval"} == {"dev", "test"}
    assert all(sides[r["id"]] == (None, None) for r in built if r["meta"]["split"] == "train")
    manifest = json.loads((tiny_data / "manifest.json").read_text())
    s = manifest["stats"]
    assert s["pairs"] == 90 and s["teacher"] == "offline-v1"
    assert s["by_split"] == {"dev": 13, "test": 10, "train": 67}, s["by_split"]
    assert s["accounting"]["ok"] == 90 and s["failed"] == 0 and s["teacher_stats"]["calls"] == 0
    assert set(manifest["outputs"]) == {"pairs.jsonl", "sft_mix.jsonl", "quarantine.jsonl", "failed.jsonl", "images"}
    assert read_jsonl(tiny_data / "sft_mix.jsonl") == []  # extra SFT rows are the world builder's


# ---------------------------------------------------------------------------------------------- (f) overlong rows


@pytest.fixture
def long_dataset(tmp_path) -> Path:
    """Good rows around one 100,000-character query (line 3) and one long reference answer (line 6)."""
    rows = [row(f"g{i}", f"What is shown in picture {i}?", label="benign" if i % 2 else "unsafe") for i in range(6)]
    rows.insert(2, row("huge", ("Tell me everything about this. " * 3300)[:100_000]))
    rows.insert(5, row("longref", "What colour is it?", label="benign", reference_answer="It is blue. " * 700))
    assert len(rows[2]["query"]) == 100_000 and len(rows[5]["reference_answer"]) == 8_400
    return make_dataset(tmp_path / "ds", rows)


def _long_rows_out(folder: Path) -> tuple[dict, set]:
    quarantined = {q["raw"]["id"]: q for q in read_jsonl(folder / "quarantine.jsonl")}
    return quarantined, {r["id"] for r in read_jsonl(folder / "pairs.jsonl")}


def test_an_overlong_query_is_quarantined_with_file_line_and_field(tmp_path, long_dataset):
    # No model folder in this run: the character cap alone applies (the reference answer is under it).
    m = build.run(args_for(tmp_path / "run", long_dataset))
    quarantined, kept = _long_rows_out(tmp_path / "run" / "data")
    assert set(quarantined) == {"huge"}
    q = quarantined["huge"]
    assert (q["file"], q["row"], q["field"], q["reason_code"]) == ("pairs.jsonl", 3, "query", "text_too_long")
    assert "pairs.jsonl, line 3, field 'query': field 'query' is 100,000 characters, over the cap of 20,000" in \
        q["message"] and "never cut" in q["message"]
    assert kept == {f"g{i}" for i in range(6)} | {"longref"}
    s = m["stats"]
    assert s["quarantined_per_reason"] == {"text_too_long": 1} and s["length_check"]["quarantined"] == 1
    assert s["length_check"]["model"] is None and s["accounting"]["rows_read"] == 8 == s["pairs"] + 1
    assert m["config"] == {"build_source": "generic", "build_source_root": str(long_dataset),
                           "run_dir": str(tmp_path / "run"), "step": "data"}  # defaults stay out of fingerprints


def test_rows_the_model_cannot_take_are_quarantined_and_sft_trains_on_the_rest(tmp_path, long_dataset, tiny_model):
    from srpo.models import user_message
    from srpo.stages import base as base_step
    from srpo.stages import sft
    from srpo.stages.base import BaseArgs
    from srpo.train_configs import SFTStageConfig

    run_dir = tmp_path / "run"
    base_step.run(BaseArgs(run_dir=str(run_dir), step="base", model_dir=tiny_model))  # as srpo run does first
    m = build.run(args_for(run_dir, long_dataset))
    quarantined, kept = _long_rows_out(run_dir / "data")
    assert {k: (q["row"], q["field"], q["reason_code"]) for k, q in quarantined.items()} == {
        "huge": (3, "query", "text_too_long"), "longref": (6, "reference_answer", "prompt_too_long")}
    assert "over the limit of 1,024 (the model's max_position_embeddings)" in quarantined["longref"]["message"]
    assert kept == {f"g{i}" for i in range(6)}
    lc = m["stats"]["length_check"]
    assert lc["max_tokens"] == 1024 and lc["quarantined"] == 2 and 0 < lc["longest_tokens"]

    # Without the character cap the tokenizer catches the long query by itself.
    m2 = build.run(args_for(tmp_path / "run2", long_dataset, build_max_text_chars=0,
                            build_model_dir=str(run_dir / "base" / "model")))
    assert m2["stats"]["quarantined_per_reason"] == {"prompt_too_long": 2}
    huge = _long_rows_out(tmp_path / "run2" / "data")[0]["huge"]
    assert (huge["row"], huge["field"]) == (3, "query") and "over the limit of 1,024" in huge["message"]

    # The built-in set measured by the same model keeps every pair (the smoke pipeline is unchanged).
    tiny = build.run(BuildArgs(run_dir=str(run_dir), step="tiny_data"))["stats"]
    assert tiny["pairs"] == 90 and tiny["quarantined"] == 0 and tiny["length_check"]["measured"] == 90

    # The meter counts what the processor makes of the prompt with its image (the image expanded, not cut).
    meter = build.PromptMeter(run_dir / "base" / "model")
    pair = read_jsonl(run_dir / "data" / "pairs.jsonl")[0]
    parts = meter(SSUIPair.from_dict({k: v for k, v in pair.items() if k != "chain"}),
                  run_dir / "data" / pair["image"])
    prompt = meter.processor.apply_chat_template(user_message(pair["query"], True), add_generation_prompt=True,
                                                 tokenize=False)
    image = Image.open(run_dir / "data" / pair["image"]).convert("RGB")
    assert parts["query"] + parts["image"] == len(meter.processor(text=[prompt], images=[image])["input_ids"][0])
    assert parts["image"] > 0

    train = [r for r in read_jsonl(run_dir / "data" / "pairs.jsonl") if r["meta"]["split"] == "train"]
    manifest = sft.run(SFTStageConfig(run_dir=str(run_dir), step="sft", data_dir=str(run_dir / "data"),
                                      model_dir=str(run_dir / "base" / "model"),
                                      output_dir=str(run_dir / "sft" / "trainer"), max_steps=2,
                                      per_device_train_batch_size=2, use_cpu=True, disable_tqdm=True,
                                      save_strategy="no", report_to="none"))
    assert manifest["stats"]["global_step"] == 2 and manifest["stats"]["train_rows"] == len(train) > 0
    assert (run_dir / "sft" / "model" / "config.json").exists()


# ----------------------------------------------------------------------------------------------- teachers, config


def test_every_teacher_meets_the_protocol(tmp_path):
    srv_url = "http://127.0.0.1:9/v1"  # never called
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    for t in (OfflineTeacher(), OpenAITeacher("x", srv_url, tmp_path / "c"), HFTeacher(str(tmp_path / "m"),
                                                                                       tmp_path / "c")):
        assert isinstance(t, Teacher) and t.teacher_id and t.prompt_version
        assert "teacher_id" in t.describe() and {"calls", "cache_hits", "estimated_cost_usd"} <= set(t.stats())


def test_hf_teacher_validates_batches_and_caches(tmp_path, monkeypatch):
    import srpo.models

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"model_type": "fake"}')
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    good = OfflineTeacher().write_chain(SSUIPair("x", "q", "benign")).render()
    seen = []

    def fake_generate(model, processor, prompts, *, max_new_tokens, **kw):
        seen.append(len(prompts))
        return [[good if "fine" in q else "I refuse to use the format."] for q, _ in prompts]

    monkeypatch.setattr(srpo.models, "generate", fake_generate)
    monkeypatch.setattr(HFTeacher, "_load", lambda self: (None, None))
    teacher = HFTeacher(str(tmp_path / "m"), tmp_path / "cache", batch_size=2)
    pairs = [SSUIPair(f"p{i}", f"{'fine' if i != 1 else 'bad'} question {i}", "benign", image="a.png")
             for i in range(3)]
    res = teacher.write_chains(pairs, tmp_path)
    assert [r.ok for r in res] == [True, False, True] and res[1].reason == "invalid_answer"
    assert seen == [2, 1] and teacher.stats()["calls"] == 3
    again = teacher.write_chains(pairs, tmp_path)
    assert [r.cached for r in again] == [True, False, True] and teacher.stats()["cache_hits"] == 2
    assert seen == [2, 1, 1]  # only the failure is asked again


@pytest.mark.slow
def test_hf_teacher_on_the_tiny_model_reports_failures(tmp_path, tiny_model):
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    teacher = HFTeacher(tiny_model, tmp_path / "cache", max_new_tokens=8)
    res = teacher.write_chains([SSUIPair("a", "What is this?", "benign", image="a.png"),
                                SSUIPair("b", "And this?", "benign")], tmp_path)
    assert all(isinstance(r, TeacherResult) for r in res)
    assert [r.reason for r in res] == ["invalid_answer", "invalid_answer"]  # a random model writes no chain


def test_strict_build_stops_on_the_first_bad_row(tmp_path, fault_dataset):
    from data_builders.sources import SourceError

    with pytest.raises(SourceError, match="maybe"):
        build.run(args_for(tmp_path / "run", fault_dataset, build_strict=True))


def test_strict_build_stops_on_the_first_failed_chain(tmp_path, small_dataset, monkeypatch):
    class Failing(OfflineTeacher):
        def write_chains(self, pairs, images_root="."):
            return [TeacherResult(p.id, False, reason="invalid_answer", detail="nope") for p in pairs]

    monkeypatch.setattr(build, "make_teacher", lambda args: Failing())
    with pytest.raises(build.BuildError, match="build_strict"):
        build.run(args_for(tmp_path / "run", small_dataset, build_strict=True))


def test_max_pairs_and_config_checks(tmp_path, small_dataset):
    m = build.run(args_for(tmp_path / "run", small_dataset, build_max_pairs=4))
    assert m["stats"]["accounting"]["skipped_max_pairs"] == 7 and m["stats"]["pairs"] == 4
    for bad, match in ((dict(build_teacher="gpt"), "build_teacher"), (dict(build_teacher="openai"), "model"),
                       (dict(build_twins="all"), "build_twins"), (dict(build_teacher_concurrency=0), ">= 1"),
                       (dict(build_teacher_timeout_s=0), "> 0")):
        with pytest.raises(ValueError, match=match):
            BuildArgs(**bad)


# ------------------------------------------------------------------------------------------- dev / test by group


def _eval_pair(pid, label, **meta):
    from srpo.schema import SSUIPair

    return SSUIPair(id=pid, query="q", label=label, category="violence" if label == "unsafe" else "none",
                    meta={"split": "eval", **meta})


def test_dev_and_test_keep_near_copies_together_and_follow_source_split_names():
    from srpo.stages.build import assign_eval_splits

    pairs = [_eval_pair(f"{c}-{s}", "unsafe" if c < 4 else "benign", combination=f"combo{c}")
             for c in range(10) for s in range(5)]
    twin_anchor = _eval_pair("anchor", "unsafe")
    twin = _eval_pair("twin", "benign")
    twin.twin_of = "anchor"
    named = [_eval_pair("v1", "benign", source_split="validation"), _eval_pair("t1", "unsafe", source_split="test")]
    all_pairs = pairs + [twin_anchor, twin] + named
    report = assign_eval_splits(all_pairs, seed=0, dev_fraction=0.5)
    side = {p.id: p.meta["eval_split"] for p in all_pairs}
    for c in range(10):  # the scenes of one combination fall on one side
        assert len({side[f"{c}-{s}"] for s in range(5)}) == 1
    assert side["anchor"] == side["twin"]  # an item and its twin too
    assert side["v1"] == "dev" and side["t1"] == "test" and report["from_source"] == 2
    for label_range in (range(4), range(4, 10)):  # both sides get groups of each label
        assert {side[f"{c}-0"] for c in label_range} == {"dev", "test"}
    again = [_eval_pair(p.id, p.label, **{k: v for k, v in p.meta.items() if k not in ("eval_split", "eval_group")})
             for p in all_pairs]
    for p, q in zip(all_pairs, again, strict=True):
        q.twin_of = p.twin_of
    assign_eval_splits(again, seed=0, dev_fraction=0.5)
    assert {p.id: p.meta["eval_split"] for p in again} == side  # seeded


# ------------------------------------------------------------------------------------------------ source options

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "sources"


@pytest.fixture
def vlguard_train(tmp_path) -> Path:
    """VLGuard's folder with the fixture's train.json and its images under train/ (the hub's unzipped layout)."""
    import shutil

    root = tmp_path / "vlguard"
    shutil.copytree(FIXTURES / "vlguard", root)
    for r in json.loads((root / "data" / "train.json").read_text()):
        (root / "train" / r["image"]).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), "green").save(root / "train" / r["image"])
    return root


def test_source_options_reach_the_converter(tmp_path, vlguard_train):
    """{split: train} builds VLGuard's train split (train.json, images under train/), not its default test split."""
    m = build.run(BuildArgs(run_dir=str(tmp_path / "run"), step="data", build_source="vlguard",
                            build_source_root=str(vlguard_train), build_source_options={"split": "train"},
                            build_eval_fraction=0.0))
    pairs = read_jsonl(tmp_path / "run" / "data" / "pairs.jsonl")
    assert m["stats"]["accounting"]["rows_read"] == 4 and len(pairs) == 7
    assert {p["meta"]["split"] for p in pairs} == {"train"}
    assert all((tmp_path / "run" / "data" / p["image"]).is_file() for p in pairs)


@pytest.mark.parametrize("options, match", [
    ({"splitt": "train"}, "'vlguard' has no option 'splitt'; its options are split, file, image_dir"),
    ({"file": "../../elsewhere/train.json"}, "option 'file': path '../../elsewhere/train.json' contains '..'"),
    ({"split": "/etc"}, "option 'split': path '/etc' is absolute"),
])
def test_bad_source_options_are_refused_by_name(tmp_path, vlguard_train, options, match):
    from srpo.recipe import check_recipe

    with pytest.raises(build.BuildError, match=match):
        build.run(BuildArgs(run_dir=str(tmp_path / "run"), step="data", build_source="vlguard",
                            build_source_root=str(vlguard_train), build_source_options=options))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"build:\n  build_source: vlguard\n  build_source_root: {vlguard_train}\n")
    problems = check_recipe(recipe, [f"build.build_source_options={json.dumps(options)}"])
    assert len(problems) == 1 and "key 'build.build_source_options'" in problems[0] and match in problems[0]


def test_source_options_belong_to_file_sources():
    with pytest.raises(ValueError, match="build_source_options applies to file sources"):
        BuildArgs(build_source="tiny", build_source_options={"split": "train"})
    with pytest.raises(ValueError, match="must be a mapping"):
        BuildArgs(build_source="vlguard", build_source_root="x", build_source_options=["train"])
