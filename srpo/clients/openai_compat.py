"""An OpenAI-compatible chat client for teachers and judges, on the `openai` SDK.

It sends `POST {base_url}/chat/completions` (OpenAI, vLLM, SGLang, llama.cpp and friends all speak it) and gives back,
for each request, a `ChatResult` that holds either the answer's text or a failure reason code.

The SDK does the transport: a pool of keep-alive connections, the timeout (`timeout_s`, for each connect, read and
write), and the retries (`max_retries`) of timeouts, connection errors, 408, 409, 429 and 5xx. Between attempts it
waits what the server's `Retry-After` says (seconds or an HTTP date; it does not retry when the wait is longer than
it allows), or else its own jittered exponential backoff. Other 4xx are final.

What this module adds, because the SDK does not do it:

* Retries of an unusable 200: a body that is not JSON (`malformed_json`) or that has no text choice
  (`missing_choices`). The SDK hands these back as they are. They are sent again at once, within the same budget of
  `1 + max_retries` attempts as the SDK's own retries.
* Retry counts per reason. The SDK retries inside one call and reports only how the call ended, so the SDK's HTTP
  transport is wrapped to note what each attempt got (a status, or a transport error). The SDK still does all the
  retrying. That was chosen over `max_retries=0` and a loop here, which would re-implement its backoff and its
  `Retry-After` handling just to see each attempt.
* Re-asks: `complete_many(requests, validate=...)`. When `validate(text)` returns an error string, the model is
  re-asked with its own answer and a short correction, at most `max_reasks` times. An answer that never validates
  ends as a failure with `error="invalid_answer"`, never as text.
* Secrets: the API key is read from the environment variable named by `api_key_env` for each HTTP attempt, and the
  wrapped transport puts it into that request's Authorization header. Neither this object nor the SDK client holds
  it (the SDK is given a placeholder, whose header the transport replaces). Error text from a server is scrubbed of
  it before it reaches a result, a log line, `stats()` or an exception.
* Accounting: `stats()` counts calls, requests, retries and failures per reason, re-asks, prompt and completion
  tokens, and an estimated cost from the per-1k prices.
* Bounded concurrency: `complete_many` runs at most `concurrency` requests at once, on a thread pool that shares
  one SDK client.
* Results: each request ends as text or as a reason code (timeout, connection_error, http_503, exhausted_retries,
  invalid_answer, ...). Failures are counted and never become text.

`backoff_base_s`, `backoff_max_s` and `seed` are still accepted, so existing callers and configs keep working, and
they are recorded in the manifest. The waits are the SDK's; a warning says so when the backoff is set to other values.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import importlib
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from srpo.chain import parse_chain

log = logging.getLogger("srpo.clients")

ImageInput = bytes | bytearray | str | os.PathLike
Validator = Callable[[str], "str | None"]

# Reason codes. Transport/protocol failures are named after what happened; the two terminal ones say why we stopped.
TIMEOUT = "timeout"
CONNECTION_RESET = "connection_reset"
CONNECTION_ERROR = "connection_error"
PROTOCOL_ERROR = "protocol_error"
MALFORMED_JSON = "malformed_json"
MISSING_CHOICES = "missing_choices"
EXHAUSTED_RETRIES = "exhausted_retries"
INVALID_ANSWER = "invalid_answer"

_TRANSIENT = frozenset({TIMEOUT, CONNECTION_RESET, CONNECTION_ERROR, PROTOCOL_ERROR, MALFORMED_JSON, MISSING_CHOICES})
_TRANSIENT_STATUS = frozenset({408, 409, 429})  # plus every 5xx: what the SDK retries
_SAMPLING_KEYS = ("temperature", "max_tokens", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty", "n")
_DEFAULT_BACKOFF = (0.5, 30.0)
_PLACEHOLDER_KEY = "placeholder"  # the SDK insists on a key; the transport replaces the header made from it
_REASK = (
    "Your previous answer could not be used: {error}. Reply again with the complete answer in exactly the required "
    "format, with nothing before or after it."
)
# Things that look like credentials in text a server sends back (OpenAI echoes part of a bad key in its 401 body).
_SECRETISH = re.compile(r"(Bearer\s+)\S+|\bsk-[A-Za-z0-9_\-]{6,}", re.IGNORECASE)


class ChatClientError(RuntimeError):
    """Raised by `ChatResult.raise_for_error()`; the message carries the reason code and scrubbed detail only."""




@dataclass
class ChatRequest:
    """One chat request: a prompt with optional images and system message, or ready-made OpenAI `messages`."""

    prompt: str | None = None
    images: Sequence[ImageInput] = ()
    system: str | None = None
    messages: list[dict] | None = None
    params: dict = field(default_factory=dict)  # per-request sampling overrides (temperature, max_tokens, seed, ...)
    id: str | None = None  # the caller's own id; echoed on the result

    def __post_init__(self) -> None:
        if self.messages is None and not (isinstance(self.prompt, str) and self.prompt.strip()):
            raise ValueError("ChatRequest needs a non-empty `prompt` or a `messages` list")
        if self.messages is not None and (self.prompt is not None or self.images or self.system is not None):
            raise ValueError("ChatRequest takes either `messages` or `prompt`/`images`/`system`, not both")
        unknown = set(self.params) - set(_SAMPLING_KEYS)
        if unknown:
            raise ValueError(f"unknown sampling parameter(s) {sorted(unknown)}; known: {list(_SAMPLING_KEYS)}")

    def to_messages(self) -> list[dict]:
        if self.messages is not None:
            return [dict(m) for m in self.messages]
        out: list[dict] = []
        if self.system:
            out.append({"role": "system", "content": self.system})
        if self.images:
            # Images first: most open VLM chat templates (Qwen-VL, LLaVA) expect the image before the question.
            parts: list[dict] = [{"type": "image_url", "image_url": {"url": image_data_url(im)}} for im in self.images]
            parts.append({"type": "text", "text": self.prompt})
            out.append({"role": "user", "content": parts})
        else:
            out.append({"role": "user", "content": self.prompt})
        return out


def coerce_request(request: ChatRequest | str | dict | list) -> ChatRequest:
    """A ChatRequest from a request, a prompt string, a dict of ChatRequest fields, or a messages list."""
    if isinstance(request, ChatRequest):
        return request
    if isinstance(request, str):
        return ChatRequest(prompt=request)
    if isinstance(request, dict):
        return ChatRequest(**request)
    if isinstance(request, list):
        return ChatRequest(messages=request)
    raise TypeError(f"cannot make a chat request from {type(request).__name__}")


def _sniff_mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"  # servers decode by content anyway; png is the documented default


def image_data_url(image: ImageInput) -> str:
    """A data URL for image bytes or a file path; `data:` and http(s) URLs pass through unchanged."""
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    elif isinstance(image, str) and image.startswith(("data:", "http://", "https://")):
        return image
    elif isinstance(image, (str, os.PathLike)):
        data = Path(image).read_bytes()
    else:
        raise TypeError(f"an image is bytes or a path; got {type(image).__name__}")
    return f"data:{_sniff_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"


def validate_chain(text: str) -> str | None:
    """A `validate` for complete_many: None when `text` is a well-formed risk chain, else what is wrong with it."""
    parsed = parse_chain(text)
    return None if parsed.ok else "; ".join(parsed.errors) or "not a risk chain"




@dataclass
class ChatResult:
    ok: bool
    text: str | None = None  # set only when ok (and, with a validator, only when it validated)
    error: str | None = None  # reason code when not ok
    last_error: str | None = None  # for exhausted_retries: the reason of the last attempt
    detail: str = ""  # short, scrubbed explanation for people
    attempts: int = 0  # HTTP attempts, over all re-asks
    reasks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    cached: bool = False
    request_id: str | None = None
    rejected_text: str | None = None  # the last answer that failed validation, for debugging; never used as output

    def raise_for_error(self) -> None:
        if not self.ok:
            extra = f" (last: {self.last_error})" if self.last_error else ""
            raise ChatClientError(f"chat request failed: {self.error}{extra}: {self.detail}")

    def to_dict(self) -> dict:
        return asdict(self)


class _Counters:
    """Thread-safe run counters; one lock, held only for the increment."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.requests = 0
        self.ok = 0
        self.failed = 0
        self.reasks = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.retries: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.failures_last_error: Counter[str] = Counter()

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def count(self, which: str, reason: str) -> None:
        with self._lock:
            getattr(self, which)[reason] += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "calls": self.calls,
                "requests": self.requests,
                "ok": self.ok,
                "failed": self.failed,
                "reasks": self.reasks,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "retries": dict(sorted(self.retries.items())),
                "failures": dict(sorted(self.failures.items())),
                "failures_last_error": dict(sorted(self.failures_last_error.items())),
            }


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _redact_url(url: str) -> str:
    # A base URL may carry user:password@; keep it out of repr/stats/manifests.
    parts = urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url




@dataclass
class _Outcome:
    """How one SDK call ended (the attempts it made are in the caller's attempt list)."""

    ok: bool
    text: str | None = None
    error: str | None = None
    detail: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None


def _transient(reason: str | None) -> bool:
    """Whether a failure is of the kind that is retried, so that failing on it after the last attempt means
    `exhausted_retries`."""
    if reason in _TRANSIENT:
        return True
    status = reason[5:] if reason and reason.startswith("http_") else ""
    return status.isdigit() and (int(status) in _TRANSIENT_STATUS or int(status) >= 500)


def _http_library(openai: Any) -> Any:
    """The HTTP library the installed SDK is built on: httpx2 from openai 3 on, httpx before."""
    for cls in openai.DefaultHttpxClient.__mro__:
        root = cls.__module__.partition(".")[0]
        if root in ("httpx", "httpx2"):
            return importlib.import_module(root)
    raise ImportError(f"cannot tell which HTTP library openai {openai.__version__} is built on")


def _transport_reason(lib: Any, exc: BaseException) -> str:
    if isinstance(exc, lib.TimeoutException):
        return TIMEOUT
    if isinstance(exc, lib.ConnectError):
        return CONNECTION_ERROR
    if isinstance(exc, (lib.ReadError, lib.WriteError, lib.RemoteProtocolError)):
        return CONNECTION_RESET  # closed or reset without a (whole) response
    if isinstance(exc, lib.ProtocolError):
        return PROTOCOL_ERROR
    return CONNECTION_ERROR  # DNS, TLS and the like


@functools.cache
def _transport_class(lib: Any) -> type:
    """A transport for the SDK's HTTP client: it stamps the API key on each attempt and notes how the attempt went."""

    class WatchedStream(lib.SyncByteStream):
        # A 2xx body is read after the transport has returned; a reset or a timeout while reading it counts too.
        def __init__(self, stream: Any, note: Callable[[str], None]) -> None:
            self._stream, self._note = stream, note

        def __iter__(self):
            try:
                yield from self._stream
            except Exception as exc:
                self._note(_transport_reason(lib, exc))
                raise

        def close(self) -> None:
            self._stream.close()

    class WatchedTransport(lib.BaseTransport):
        def __init__(self, owner: ChatClient, limits: Any) -> None:
            self._owner = owner
            self._inner = lib.HTTPTransport(limits=limits)

        def handle_request(self, request: Any) -> Any:
            self._owner._authorize(request.headers)
            note = self._owner._new_attempt()
            try:
                response = self._inner.handle_request(request)
            except Exception as exc:
                note(_transport_reason(lib, exc))
                raise
            if 200 <= response.status_code < 300:
                response.stream = WatchedStream(response.stream, note)
            else:
                note(f"http_{response.status_code}")
            return response

        def close(self) -> None:
            self._inner.close()

    return WatchedTransport


def _field(obj: Any, name: str) -> Any:
    # The SDK builds its response models without validation, so a part may be a model, a plain dict, or junk.
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _count(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and value >= 0 else 0


class ChatClient:
    """Concurrent, retrying client for `POST {base_url}/chat/completions`, on the openai SDK."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 32,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_base_s: float = _DEFAULT_BACKOFF[0],
        backoff_max_s: float = _DEFAULT_BACKOFF[1],
        max_tokens: int | None = 1024,
        temperature: float | None = 0.0,
        *,
        top_p: float | None = None,
        price_prompt_per_1k: float = 0.0,
        price_completion_per_1k: float = 0.0,
        seed: int = 0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an http(s) URL like http://127.0.0.1:8000/v1; "
                             f"got {_redact_url(base_url)!r}")
        if concurrency < 1 or max_retries < 0 or timeout_s <= 0:
            raise ValueError("need concurrency >= 1, max_retries >= 0 and timeout_s > 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency = int(concurrency)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        if (self.backoff_base_s, self.backoff_max_s) != _DEFAULT_BACKOFF:
            log.warning("backoff_base_s=%g and backoff_max_s=%g are not used: the openai SDK picks the waits "
                        "between retries", self.backoff_base_s, self.backoff_max_s)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.price_prompt_per_1k = float(price_prompt_per_1k)
        self.price_completion_per_1k = float(price_completion_per_1k)
        self.seed = int(seed)
        self._counters = _Counters()
        # Each SDK call runs on one thread, attempts and all, so the transport finds the call's attempt list here.
        self._local = threading.local()
        self._sdk_lock = threading.Lock()
        self._sdk: Any = None
        self._sdk_client()  # built now, so a missing SDK or a bad setting shows here rather than in the first call

    def __repr__(self) -> str:
        # The name of the key's variable, never the key.
        return (f"ChatClient(base_url={_redact_url(self.base_url)!r}, model={self.model!r}, "
                f"api_key_env={self.api_key_env!r}, concurrency={self.concurrency})")

    def stats(self) -> dict:
        snap = self._counters.snapshot()
        snap["estimated_cost_usd"] = round(
            snap["prompt_tokens"] / 1000 * self.price_prompt_per_1k
            + snap["completion_tokens"] / 1000 * self.price_completion_per_1k, 6)
        return snap

    def to_manifest(self) -> dict:
        import openai

        return {
            "client": "openai_compat",
            "sdk": f"openai {openai.__version__}",
            "base_url": _redact_url(self.base_url),
            "model": self.model,
            "api_key_env": self.api_key_env,
            "concurrency": self.concurrency,
            "timeout_s": self.timeout_s,
            "max_retries": self.max_retries,
            "backoff_base_s": self.backoff_base_s,
            "backoff_max_s": self.backoff_max_s,
            "sampling": self.sampling_params(),
            "price_prompt_per_1k": self.price_prompt_per_1k,
            "price_completion_per_1k": self.price_completion_per_1k,
            "seed": self.seed,
            "stats": self.stats(),
        }

    def close(self) -> None:
        """Close the connections; a later call opens new ones."""
        with self._sdk_lock:
            sdk, self._sdk = self._sdk, None
        if sdk is not None:
            sdk.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sampling_params(self, request: ChatRequest | None = None) -> dict:
        params: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens, "top_p": self.top_p}
        if request is not None:
            params.update(request.params)
        return {k: v for k, v in sorted(params.items()) if v is not None}

    def request_spec(self, request: ChatRequest | str | dict | list) -> tuple[list[dict], dict]:
        """(messages, sampling params) exactly as they will be sent; the cache keys on these."""
        req = coerce_request(request)
        return req.to_messages(), self.sampling_params(req)

    def complete(self, request: ChatRequest | str | dict | list, validate: Validator | None = None,
                 max_reasks: int = 2) -> ChatResult:
        req = coerce_request(request)
        messages, params = req.to_messages(), self.sampling_params(req)
        self._api_key()  # a malformed key fails here, before anything is sent
        return self._complete(messages, params, req.id, validate, max_reasks)

    def complete_many(self, requests: Iterable[ChatRequest | str | dict | list], validate: Validator | None = None,
                      max_reasks: int = 2) -> list[ChatResult]:
        """Results in request order. Requests are built up front so a caller error (a missing image) fails fast."""
        reqs = [coerce_request(r) for r in requests]
        specs = [(r.to_messages(), self.sampling_params(r), r.id) for r in reqs]
        self._api_key()
        return self.map(lambda s: self._complete(s[0], s[1], s[2], validate, max_reasks), specs)

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """`fn` over `items` on up to `concurrency` threads, results in order (the cache wrapper reuses it)."""
        if not items:
            return []
        workers = min(self.concurrency, len(items))
        if workers == 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="srpo-chat") as pool:
            return list(pool.map(fn, items))

    def _complete(self, messages: list[dict], params: dict, request_id: str | None, validate: Validator | None,
                  max_reasks: int) -> ChatResult:
        self._counters.add(requests=1)
        convo = messages
        attempts = reasks = prompt_tokens = completion_tokens = 0
        while True:
            res = self._call(convo, params)
            attempts += res.attempts
            prompt_tokens += res.prompt_tokens
            completion_tokens += res.completion_tokens
            res.attempts, res.reasks, res.request_id = attempts, reasks, request_id
            res.prompt_tokens, res.completion_tokens = prompt_tokens, completion_tokens
            if not res.ok:
                return self._fail(res)
            problem = validate(res.text or "") if validate is not None else None
            if not problem:
                self._counters.add(ok=1)
                return res
            if reasks >= max_reasks:
                return self._fail(ChatResult(
                    ok=False, error=INVALID_ANSWER, detail=f"answer still invalid after {reasks} re-ask(s): {problem}",
                    attempts=attempts, reasks=reasks, prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens, finish_reason=res.finish_reason, request_id=request_id,
                    rejected_text=res.text))
            reasks += 1
            self._counters.add(reasks=1)
            log.debug("re-asking (%d/%d): %s", reasks, max_reasks, problem)
            # Only the latest bad answer goes back, so the prompt grows by one exchange however many re-asks.
            convo = [*messages, {"role": "assistant", "content": res.text or ""},
                     {"role": "user", "content": _REASK.format(error=problem)}]

    def _fail(self, res: ChatResult) -> ChatResult:
        self._counters.add(failed=1)
        self._counters.count("failures", res.error or "unknown")
        if res.last_error:
            self._counters.count("failures_last_error", res.last_error)
        res.detail = self._scrub(res.detail)
        log.warning("chat request %sfailed: %s%s: %s", f"{res.request_id} " if res.request_id else "", res.error,
                    f" (last: {res.last_error})" if res.last_error else "", res.detail)
        return res

    def _call(self, messages: list[dict], params: dict) -> ChatResult:
        """One question, with every attempt it takes: the SDK's retries and ours for an unusable 200."""
        attempts: list[str | None] = []  # per HTTP attempt: None when it got a 2xx, else why it failed
        self._local.attempts = attempts
        try:
            while True:
                out = self._send(messages, params, retries=self.max_retries - len(attempts))
                if out.ok or out.error not in (MALFORMED_JSON, MISSING_CHOICES) or len(attempts) > self.max_retries:
                    break
        finally:
            self._local.attempts = None
        for reason in attempts[:-1]:  # every attempt but the last was followed by another, so it was retried
            self._counters.count("retries", reason or "unknown")
        n = len(attempts)
        if out.ok:
            self._counters.add(prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens)
            return ChatResult(ok=True, text=out.text, attempts=n, prompt_tokens=out.prompt_tokens,
                              completion_tokens=out.completion_tokens, finish_reason=out.finish_reason)
        if _transient(out.error) and n > self.max_retries:
            return ChatResult(ok=False, error=EXHAUSTED_RETRIES, last_error=out.error, attempts=n,
                              detail=f"gave up after {n} attempt(s); last: {out.error}: {out.detail}")
        return ChatResult(ok=False, error=out.error, detail=out.detail, attempts=n)

    def _send(self, messages: list[dict], params: dict, retries: int) -> _Outcome:
        """One SDK call, which makes up to `1 + retries` attempts; how it ended, as an outcome with a reason code."""
        import openai

        sdk = self._sdk_client()
        if retries != self.max_retries:
            sdk = sdk.with_options(max_retries=retries)
        attempts = self._local.attempts
        try:
            completion = sdk.chat.completions.create(model=self.model, messages=messages, **params)
        except openai.APIStatusError as exc:
            return _Outcome(False, error=f"http_{exc.status_code}", detail=self._status_detail(exc.response))
        except openai.APITimeoutError:
            return _Outcome(False, error=TIMEOUT, detail=f"no answer within {self.timeout_s:g}s")
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            return _Outcome(False, error=(attempts[-1] if attempts else None) or CONNECTION_ERROR,
                            detail=f"{type(cause).__name__}: {self._scrub(str(cause))[:200]}")
        except openai.APIError as exc:
            return _Outcome(False, error=PROTOCOL_ERROR, detail=type(exc).__name__)
        except ValueError:
            if not attempts or attempts[-1] is not None:
                raise  # not from decoding a 2xx body: a bug, not a server fault
            # The SDK decodes a 2xx body as JSON when it reads it, and lets the decode error through.
            attempts[-1] = MALFORMED_JSON
            return _Outcome(False, error=MALFORMED_JSON, detail="a 2xx body that is not JSON")
        return self._parse(completion, attempts)

    def _parse(self, completion: Any, attempts: list[str | None]) -> _Outcome:
        if isinstance(completion, str):  # a non-JSON content type: the SDK returns the text
            attempts[-1] = MALFORMED_JSON
            return _Outcome(False, error=MALFORMED_JSON, detail=f"a 2xx body of {len(completion)} chars, not JSON")
        choices = _field(completion, "choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        content = _field(_field(first, "message"), "content")
        if isinstance(content, list):  # some servers return content parts even for text
            content = "".join(str(_field(p, "text") or "") for p in content)
        if not isinstance(content, str):
            attempts[-1] = MISSING_CHOICES
            return _Outcome(False, error=MISSING_CHOICES,
                            detail="response has no choices" if first is None else "first choice has no text content")
        usage = _field(completion, "usage")
        return _Outcome(True, text=content, prompt_tokens=_count(_field(usage, "prompt_tokens")),
                        completion_tokens=_count(_field(usage, "completion_tokens")),
                        finish_reason=_field(first, "finish_reason"))

    def _status_detail(self, response: Any) -> str:
        try:
            body = response.text
        except Exception:  # an error body that could not be read is no reason to lose the status
            body = ""
        # Scrubbed before it is cut short, so a cut cannot leave part of a key behind.
        snippet = self._scrub(body).replace("\n", " ")[:300]
        detail = f"HTTP {response.status_code}: {snippet}"
        wait = parse_retry_after(response.headers.get("retry-after"))
        return detail if wait is None else f"{detail} (Retry-After: {wait:g}s)"

    def _sdk_client(self) -> Any:
        with self._sdk_lock:
            if self._sdk is None:
                import openai

                lib = _http_library(openai)
                # As many idle connections as workers; no cap on open ones, so a second batch never waits for one.
                limits = lib.Limits(max_connections=None, max_keepalive_connections=self.concurrency)
                # Redirects are not followed: a POST that moved is a configuration error to report, not to chase.
                http_client = openai.DefaultHttpxClient(transport=_transport_class(lib)(self, limits),
                                                        timeout=self.timeout_s, follow_redirects=False)
                self._sdk = openai.OpenAI(api_key=_PLACEHOLDER_KEY, base_url=_redact_url(self.base_url),
                                          timeout=self.timeout_s, max_retries=self.max_retries,
                                          http_client=http_client)
            return self._sdk

    def _new_attempt(self) -> Callable[[str | None], None]:
        """Called by the transport as an attempt starts: count it, and return how to note what it got."""
        self._counters.add(calls=1)
        attempts = getattr(self._local, "attempts", None)
        if attempts is None:  # a request from outside `_call`: counted, with no list to note it in
            attempts = []
        attempts.append(None)
        i = len(attempts) - 1

        def note(reason: str | None) -> None:
            attempts[i] = reason

        return note

    def _api_key(self) -> str:
        # Read now, not at construction: keys rotate, and nothing on the object should hold one.
        key = (os.environ.get(self.api_key_env) or "").strip() if self.api_key_env else ""
        if key and (not (key.isascii() and key.isprintable()) or any(c.isspace() for c in key)):
            # The HTTP library would reject the header with an exception that may quote the value; say what is
            # wrong without it.
            raise ChatClientError(f"the API key in ${self.api_key_env} has whitespace or non-ASCII characters")
        return key

    def _authorize(self, headers: Any) -> None:
        key = self._api_key()
        headers.pop("Authorization", None)  # the SDK's, made from the placeholder
        if key:
            headers["Authorization"] = f"Bearer {key}"

    def _scrub(self, text: str) -> str:
        key = (os.environ.get(self.api_key_env) or "").strip() if self.api_key_env else ""
        if len(key) >= 4:
            text = text.replace(key, "***")
        return _SECRETISH.sub(lambda m: (m.group(1) or "") + "***", text)
