"""ChatClient and the answer cache against a real loopback server that injects faults (srpo.testing.fault_server)."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout
from email.utils import formatdate
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `srpo` from a checkout

from srpo.cache import CachedChatClient, DiskCache, cache_key
from srpo.chain import parse_chain
from srpo.clients import (
    ChatClient,
    ChatClientError,
    ChatRequest,
    image_data_url,
    parse_retry_after,
    validate_chain,
)
from srpo.testing.fault_server import FaultServer

ROOT = Path(__file__).resolve().parents[1]
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


@pytest.fixture
def server():
    # A short Retry-After and hang keep the fault matrix fast; the Retry-After test uses its own server.
    with FaultServer(retry_after_s=0.05, hang_s=3.0) as srv:
        yield srv


def make_client(srv: FaultServer, **kw) -> ChatClient:
    opts = {"api_key_env": None, "timeout_s": 0.5, "concurrency": 8}
    opts.update(kw)
    return ChatClient(srv.url, "fake-teacher", **opts)


# ------------------------------------------------------------------------------------------------------- transport


def test_plain_request_returns_a_parseable_chain_and_counts_tokens(server):
    with make_client(server, price_prompt_per_1k=1.0, price_completion_per_1k=2.0) as client:
        res = client.complete("Is it safe to climb this ladder?", validate=validate_chain)
    assert res.ok and res.error is None and res.attempts == 1
    assert parse_chain(res.text).ok
    assert "climb this ladder" in res.text
    assert res.prompt_tokens > 0 and res.completion_tokens > 0
    stats = client.stats()
    assert stats["calls"] == 1 and stats["ok"] == 1 and stats["completion_tokens"] == res.completion_tokens
    assert stats["estimated_cost_usd"] == pytest.approx(res.prompt_tokens / 1000 + 2 * res.completion_tokens / 1000)
    assert client.to_manifest()["sdk"].startswith("openai ")
    assert server.authorization_seen == set()  # no key configured: no Authorization header (not the SDK's placeholder)
    # Closing drops the connections, not the client: the next call opens new ones.
    assert client.complete("And this one?").ok and client.stats()["calls"] == 2


RETRIED = {
    "http_429_retry_after": "http_429",
    "http_429_date": "http_429",
    "http_429": "http_429",
    "http_408": "http_408",
    "http_500": "http_500",
    "http_502": "http_502",
    "http_503": "http_503",
    "hang": "timeout",
    "malformed_json": "malformed_json",
    "missing_choices": "missing_choices",
    "connection_reset": "connection_reset",
    "cut_body": "connection_reset",
}


@pytest.mark.parametrize("kind", sorted(RETRIED))
def test_transient_fault_is_retried_then_succeeds(server, kind):
    with make_client(server, timeout_s=0.3) as client:
        res = client.complete(f"Tell me about kites <<fault:{kind}>>", validate=validate_chain)
    assert res.ok, (res.error, res.detail)
    assert res.attempts == 2 and res.reasks == 0
    assert parse_chain(res.text).ok
    assert client.stats()["retries"] == {RETRIED[kind]: 1}
    assert server.faults_injected == {kind: 1} and server.requests_received == 2


@pytest.mark.parametrize("kind", ["truncated_chain", "format_break"])
def test_bad_chain_is_reasked_and_fixed(server, kind):
    with make_client(server) as client:
        res = client.complete(f"Explain this chart <<fault:{kind}>>", validate=validate_chain, max_reasks=2)
    assert res.ok and res.reasks == 1 and res.attempts == 2
    parsed = parse_chain(res.text)
    assert parsed.ok and parsed.chain.strategy == "help" and "Explain this chart" in parsed.chain.answer
    assert client.stats()["reasks"] == 1 and client.stats()["retries"] == {}


def test_format_break_is_actually_rejected_by_the_chain_parser(server):
    # The injected answer must fail parsing on its own merits, or the re-ask test above proves nothing.
    with make_client(server) as client:
        res = client.complete("Hello <<fault:format_break>>")
    assert res.ok and res.text.startswith("Ignore the required format")
    assert validate_chain(res.text) is not None


@pytest.mark.parametrize("kind,status", [("http_400", "http_400"), ("http_401_echo", "http_401")])
def test_client_errors_are_not_retried(server, kind, status):
    with make_client(server) as client:
        res = client.complete(f"q <<fault:{kind}>>")
    assert not res.ok and res.error == status and res.attempts == 1 and res.text is None
    assert server.requests_received == 1
    assert client.stats()["failures"] == {status: 1} and client.stats()["retries"] == {}


def test_persistent_5xx_ends_as_exhausted_retries_with_the_last_reason(server):
    with make_client(server, max_retries=2) as client:
        res = client.complete("q <<fault:http_503*99>>")
    assert not res.ok and res.text is None
    assert (res.error, res.last_error, res.attempts) == ("exhausted_retries", "http_503", 3)
    stats = client.stats()
    assert stats["retries"] == {"http_503": 2}
    assert stats["failures"] == {"exhausted_retries": 1} and stats["failures_last_error"] == {"http_503": 1}
    with pytest.raises(ChatClientError, match="exhausted_retries"):
        res.raise_for_error()


def test_permanently_bad_answer_is_a_failure_never_text(server):
    with make_client(server) as client:
        res = client.complete("q <<fault:truncated_chain*99>>", validate=validate_chain, max_reasks=2)
    assert not res.ok and res.error == "invalid_answer" and res.text is None
    assert res.reasks == 2 and res.attempts == 3
    assert "missing step" in res.detail
    assert res.rejected_text and not parse_chain(res.rejected_text).ok
    assert client.stats()["failures"] == {"invalid_answer": 1}


def test_connection_refused_is_reported():
    with socket.socket() as s:  # a port nobody listens on: bind, read it, close
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ChatClient(f"http://127.0.0.1:{port}/v1", "m", api_key_env=None, max_retries=1)
    res = client.complete("hello")
    assert not res.ok and res.error == "exhausted_retries" and res.last_error == "connection_error"


# ------------------------------------------------------------------------------------------------- retry-after/backoff


def _timed(fault: str, retry_after_s: int):
    """(result, seconds waited, client stats) of one request that meets `fault` first."""
    with FaultServer(retry_after_s=retry_after_s) as srv, make_client(srv) as client:
        t0 = time.monotonic()
        res = client.complete(f"q <<fault:{fault}>>")
        return res, time.monotonic() - t0, client.stats()


def test_retry_after_seconds_is_honoured():
    res, waited, _ = _timed("http_429_retry_after", 1)
    assert res.ok and res.attempts == 2
    assert waited >= 1.0, waited  # the SDK's own first backoff is at most 0.5 s: this was the header's wait
    assert waited < 2.5, waited


def test_retry_after_as_an_http_date_is_honoured():
    res, waited, stats = _timed("http_429_date", 2)
    assert res.ok and res.attempts == 2 and stats["retries"] == {"http_429": 1}
    assert waited >= 0.9, waited  # the date has whole seconds, so the wait is between 1 and 2 s
    assert waited < 3.5, waited


def test_retry_after_longer_than_the_sdk_waits_is_never_slept():
    with FaultServer(retry_after_s=1000) as srv, make_client(srv) as client:
        t0 = time.monotonic()
        res = client.complete("q <<fault:http_429_retry_after>>")
        waited = time.monotonic() - t0
        received = srv.requests_received
    assert waited < 1.5, waited
    stats = client.stats()
    if res.ok:  # openai 1.x: ignores a Retry-After past its limit and retries after its own backoff
        assert (res.attempts, received, stats["retries"]) == (2, 2, {"http_429": 1})
    else:  # openai 3: does not retry at all when it will not wait as long as the server asks
        assert (res.error, res.attempts, res.text, received) == ("http_429", 1, None, 1)
        assert "Retry-After: 1000s" in res.detail
        assert stats["failures"] == {"http_429": 1} and stats["retries"] == {}


def test_parse_retry_after_forms():
    now = time.time()
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 29 <= parse_retry_after(formatdate(now + 30, usegmt=True), now=now) <= 30
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0


def test_retries_back_off():
    with FaultServer() as srv, make_client(srv) as client:
        t0 = time.monotonic()
        res = client.complete("q <<fault:http_500*2>>")
        waited = time.monotonic() - t0
    assert res.ok and res.attempts == 3 and client.stats()["retries"] == {"http_500": 2}
    # The SDK waits about 0.5 s, then about 1 s (each cut by at most a quarter): not a burst of immediate retries.
    assert 1.1 <= waited < 4.0, waited


def test_backoff_settings_other_than_the_defaults_are_reported_as_unused(caplog):
    with caplog.at_level(logging.WARNING, logger="srpo.clients"):
        ChatClient("http://127.0.0.1:9/v1", "m", api_key_env=None, backoff_base_s=0.5, backoff_max_s=30.0)
        assert not caplog.records
        ChatClient("http://127.0.0.1:9/v1", "m", api_key_env=None, backoff_base_s=0.01)
    assert "not used" in caplog.text and "0.01" in caplog.text


def test_importing_the_clients_does_not_import_the_sdk():
    code = ("import sys, srpo, srpo.clients, srpo.cache, srpo.testing.fault_server; "
            "print(sorted(m for m in ('openai', 'httpx', 'httpx2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------------------------------ concurrency


def test_counts_add_up_under_concurrency_and_order_is_kept():
    kinds = ["", "<<fault:http_500*2>>", "<<fault:connection_reset>>", "<<fault:http_400>>",
             "<<fault:truncated_chain*9>>", "<<fault:malformed_json>>"]
    reqs = [f"Request {i}: a question {kinds[i % len(kinds)]}" for i in range(48)]
    # Rate faults land on the marker-free requests, by arrival order.
    srv = FaultServer(faults={"http_503": 0.2, "http_429": 0.1}, seed=3)
    with srv, make_client(srv, max_retries=8, concurrency=8) as client:
        results = client.complete_many(reqs, validate=validate_chain, max_reasks=1)
        stats = client.stats()
        received = srv.requests_received
    assert len(results) == 48
    for i, res in enumerate(results):
        kind = kinds[i % len(kinds)]
        if "http_400" in kind:
            assert (res.ok, res.error) == (False, "http_400")
        elif "truncated_chain" in kind:
            assert (res.ok, res.error) == (False, "invalid_answer")
        else:
            assert res.ok, (i, res.error, res.detail)
            assert f"Request {i}: a question" in parse_chain(res.text).chain.answer  # result i answers request i
    ok = sum(r.ok for r in results)
    failed = sum(not r.ok for r in results)
    assert ok + failed == 48 == stats["requests"]
    assert (stats["ok"], stats["failed"]) == (ok, failed) == (32, 16)
    assert sum(stats["failures"].values()) == failed
    assert stats["calls"] == received == sum(r.attempts for r in results)
    # Which requests the rate faults hit depends on arrival order; that every injected transient fault was retried
    # exactly once does not.
    injected = srv.faults_injected
    for kind in ("http_500", "http_503", "http_429", "connection_reset", "malformed_json"):
        assert stats["retries"].get(kind, 0) == injected.get(kind, 0), kind
    assert (injected["http_500"], injected["connection_reset"], injected["http_400"]) == (16, 8, 8)


def test_images_go_as_data_urls(server, tmp_path):
    path = tmp_path / "img.png"
    path.write_bytes(PNG)
    assert image_data_url(PNG).startswith("data:image/png;base64,")
    assert image_data_url(path) == image_data_url(PNG) == image_data_url(str(path))
    assert image_data_url(b"\xff\xd8\xff\xe0rest").startswith("data:image/jpeg;base64,")
    msg = ChatRequest(prompt="what is this?", images=[PNG], system="be careful").to_messages()
    assert msg[0] == {"role": "system", "content": "be careful"}
    assert msg[1]["content"][0]["type"] == "image_url" and msg[1]["content"][-1] == {"type": "text",
                                                                                        "text": "what is this?"}
    with make_client(server) as client:
        res = client.complete(ChatRequest(prompt="what is this?", images=[PNG, path]), validate=validate_chain)
    assert res.ok and server.images_received == 2 and "Visual: 2 image(s)" in res.text


def test_caller_errors_fail_fast_before_any_call(server, tmp_path):
    with make_client(server) as client:
        with pytest.raises(FileNotFoundError):
            client.complete_many(["fine", ChatRequest(prompt="x", images=[tmp_path / "missing.png"])])
        with pytest.raises(ValueError, match="sampling"):
            client.complete_many([ChatRequest(prompt="x", params={"temprature": 0.2})])
    assert server.requests_received == 0


# ------------------------------------------------------------------------------------------------------------ cache


def test_second_pass_through_the_cache_makes_zero_calls(server, tmp_path):
    reqs = [ChatRequest(prompt=f"Request {i}", images=[PNG], id=f"r{i}") for i in range(12)]
    with make_client(server) as client:
        first = CachedChatClient(client, DiskCache(tmp_path / "c"), prompt_version="p1").complete_many(
            reqs, validate=validate_chain)
        assert client.stats()["calls"] == 12 and all(r.ok and not r.cached for r in first)
        # A fresh wrapper over the same folder stands in for the next run.
        again = CachedChatClient(client, DiskCache(tmp_path / "c"), prompt_version="p1")
        second = again.complete_many(reqs, validate=validate_chain)
        assert client.stats()["calls"] == 12 and server.requests_received == 12
    assert [r.text for r in second] == [r.text for r in first]
    assert all(r.cached and r.ok for r in second) and [r.request_id for r in second] == [f"r{i}" for i in range(12)]
    assert again.cache.stats()["hits"] == 12 and again.cache.stats()["misses"] == 0


def test_failures_are_not_cached(server, tmp_path):
    with make_client(server, max_retries=0) as client:
        cached = CachedChatClient(client, DiskCache(tmp_path / "c"))
        reqs = ["q1 <<fault:http_400>>", "q2 <<fault:http_503>>", "q3 <<fault:truncated_chain*2>>"]
        first = cached.complete_many(reqs, validate=validate_chain, max_reasks=1)
        # With no retries a 503 has used up its one attempt; a 400 is final whatever the budget.
        assert [r.error for r in first] == ["http_400", "exhausted_retries", "invalid_answer"]
        assert not any(cached.key_for(r) in cached.cache for r in reqs)
        assert not list((tmp_path / "c").rglob("*.json"))
        # The markers are spent, so the next run's retries succeed and only then get stored.
        second = cached.complete_many(reqs, validate=validate_chain, max_reasks=1)
        assert all(r.ok and not r.cached for r in second)
        assert all(cached.key_for(r) in cached.cache for r in reqs)
    assert cached.cache.put("0" * 64, {"ok": False, "error": "http_500"}) is False


def test_duplicates_in_a_batch_are_sent_once(server, tmp_path):
    with make_client(server) as client:
        res = CachedChatClient(client, DiskCache(tmp_path)).complete_many(["same", "same", "other", "same"])
    assert server.requests_received == 2 and res[0].text == res[1].text == res[3].text


def test_cache_key_hashes_images_and_covers_what_decides_the_answer(tmp_path):
    path = tmp_path / "i.png"
    path.write_bytes(PNG)
    client = ChatClient("http://127.0.0.1:9/v1", "teacher-a", api_key_env=None)
    wrap = CachedChatClient(client, DiskCache(tmp_path / "c"), prompt_version="v1")
    base = wrap.key_for(ChatRequest(prompt="q", images=[PNG]))
    assert wrap.key_for(ChatRequest(prompt="q", images=[path])) == base  # bytes or path: same content, same key
    assert wrap.key_for(ChatRequest(prompt="q", images=[PNG + b"\0"])) != base
    assert wrap.key_for(ChatRequest(prompt="q", images=[PNG], params={"temperature": 0.7})) != base
    assert CachedChatClient(client, wrap.cache, prompt_version="v2").key_for(
        ChatRequest(prompt="q", images=[PNG])) != base
    assert CachedChatClient(ChatClient("http://127.0.0.1:9/v1", "teacher-b", api_key_env=None), wrap.cache,
                            prompt_version="v1").key_for(ChatRequest(prompt="q", images=[PNG])) != base
    messages, _ = client.request_spec(ChatRequest(prompt="q", images=[PNG]))
    assert PNG.hex() not in json.dumps(messages) and image_data_url(PNG) in json.dumps(messages)
    # Canonical: dict order does not matter.
    assert cache_key(messages, "m", "v", {"a": 1, "b": 2}) == cache_key(messages, "m", "v", {"b": 2, "a": 1})


def test_disk_cache_layout_atomicity_and_corruption(tmp_path):
    cache = DiskCache(tmp_path)
    key = "ab" + "c" * 62
    assert cache.get(key) is None
    assert cache.put(key, {"ok": True, "text": "hello"})
    assert (tmp_path / "ab" / f"{key}.json").is_file()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert cache.get(key) == {"ok": True, "text": "hello"}
    (tmp_path / "ab" / f"{key}.json").write_text('{"ok": true, "te')  # a torn file from elsewhere reads as a miss
    assert cache.get(key) is None
    assert cache.stats() == {"hits": 1, "misses": 2, "puts": 1, "corrupt": 1, "refused": 0}
    with pytest.raises(ValueError, match="hex"):
        cache.path_for("../../etc/passwd")


def test_disk_cache_is_thread_safe(tmp_path):
    cache = DiskCache(tmp_path)
    keys = [f"{i:064x}" for i in range(20)]

    def worker(_: int) -> None:
        for k in keys:
            cache.put(k, {"ok": True, "text": k})
            assert cache.get(k) == {"ok": True, "text": k}

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))  # list() re-raises a worker's exception here
    assert cache.stats()["puts"] == cache.stats()["hits"] == 160
    assert len(list(tmp_path.rglob("*.json"))) == 20 and not list(tmp_path.rglob("*.tmp"))


# ---------------------------------------------------------------------------------------------------------- secrets


def test_api_key_is_sent_as_header_and_never_leaks(monkeypatch, caplog, tmp_path):
    secret = "sk-PLANTED-secret-0123456789abcdef"
    monkeypatch.setenv("SRPO_TEST_API_KEY", secret)
    caplog.set_level(logging.DEBUG, logger="srpo.clients")
    with FaultServer(retry_after_s=0.01) as srv:
        client = make_client(srv, api_key_env="SRPO_TEST_API_KEY", max_retries=1)
        cached = CachedChatClient(client, DiskCache(tmp_path / "c"))
        results = cached.complete_many(
            ["fine", "q <<fault:http_401_echo>>", "q <<fault:http_500*9>>", "q <<fault:http_400>>",
             "q <<fault:truncated_chain*9>>"], validate=validate_chain, max_reasks=1)
        client.close()
        assert srv.authorization_seen == {f"Bearer {secret}"}  # it was sent, as the Authorization header
    assert [r.ok for r in results] == [True, False, False, False, False]
    messages = []
    for res in results[1:]:
        with pytest.raises(ChatClientError) as info:
            res.raise_for_error()
        messages.append(str(info.value))
    assert "***" in results[1].detail  # the echoed key was there, and was scrubbed
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        print(client, cached, client.stats(), client.to_manifest(), cached.to_manifest(), results)
    surfaces = {
        "repr": repr(client) + repr(cached),
        "attributes": repr(vars(client)),
        "stats": json.dumps(client.stats()) + json.dumps(cached.stats()),
        "manifest": json.dumps(client.to_manifest()) + json.dumps(cached.to_manifest(), default=str),
        "results": json.dumps([r.to_dict() for r in results]),
        "exceptions": "\n".join(messages),
        "log": caplog.text,
        "stdout": stdout.getvalue(),
        "cache files": "".join(p.read_text() for p in (tmp_path / "c").rglob("*.json")),
    }
    for where, text in surfaces.items():
        assert secret not in text, f"API key leaked into {where}"
        assert "PLANTED" not in text, f"part of the API key leaked into {where}"
    assert caplog.text  # the failures were logged, so the log check above looked at something


def test_malformed_api_key_is_refused_without_quoting_it(monkeypatch, server):
    monkeypatch.setenv("SRPO_TEST_API_KEY", "sk-PLANTED bad\nkey")
    with make_client(server, api_key_env="SRPO_TEST_API_KEY") as client, pytest.raises(ChatClientError) as info:
        client.complete("hello")
    assert "PLANTED" not in str(info.value) and "SRPO_TEST_API_KEY" in str(info.value)
    assert server.requests_received == 0


# -------------------------------------------------------------------------------------------------------- benchmark


def test_benchmark_runs_small_and_reports(monkeypatch):
    spec = importlib.util.spec_from_file_location("teacher_client_bench", ROOT / "benchmarks" / "teacher_client.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = io.StringIO()
    with redirect_stdout(out):
        speedup = bench.main(["--n", "32", "--seq-n", "4", "--concurrency", "8", "--latency-ms", "30"])
    lines = out.getvalue().strip().splitlines()
    assert lines[-1] == f"speedup: {speedup:.1f}x"
    assert "calls made: 0," in out.getvalue()
    assert speedup > 2
