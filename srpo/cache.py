"""A content-addressed answer cache on disk, and a chat client wrapper that uses it.

The key is the sha256 of a canonical JSON of everything that decides an answer: the messages (each inline image
replaced by the sha256 of its bytes, so the key does not depend on how the image was given or encoded), the
model/teacher id, the prompt version and the sampling parameters. Each entry is one JSON file,
`root/ab/abcdef....json`, written to a temp file in the same folder and renamed, so a reader sees a whole entry or
none, and concurrent writers of the same key (same content by construction) cannot tear it.

Only successful answers are stored: a failure must be retried on the next run, never replayed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the cache itself needs no client; only the wrapper below does, and it imports lazily
    from srpo.clients.openai_compat import ChatClient, ChatRequest, ChatResult, Validator

CACHE_FORMAT = 1  # bump when the key recipe or the entry layout changes; old entries then simply miss
_KEY = re.compile(r"^[0-9a-f]{64}$")
_DATA_URL = re.compile(r"^data:([^;,]*)(;base64)?,", re.IGNORECASE)


def _hash_data_url(url: str) -> dict | str:
    m = _DATA_URL.match(url)
    if not m:
        return url  # a remote URL: the URL is all we know about the content
    payload = url[m.end():]
    try:
        data = base64.b64decode(payload, validate=True) if m.group(2) else payload.encode("utf-8")
    except (binascii.Error, ValueError):
        data = payload.encode("utf-8")
    return {"sha256": hashlib.sha256(data).hexdigest()}


def hash_images(obj: Any) -> Any:
    """A copy of `obj` (messages) with every data URL replaced by {"sha256": <hash of the decoded bytes>}."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "url" and isinstance(v, str):
                out[k] = _hash_data_url(v)
            else:
                out[k] = hash_images(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [hash_images(v) for v in obj]
    return obj


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def cache_key(messages: Sequence[dict], model: str, prompt_version: str, params: dict | None = None) -> str:
    """sha256 hex of the canonical (format, model, prompt version, params, messages with images hashed)."""
    doc = {
        "format": CACHE_FORMAT,
        "model": model,
        "prompt_version": prompt_version,
        "params": dict(params or {}),
        "messages": hash_images(list(messages)),
    }
    return hashlib.sha256(canonical_json(doc).encode("utf-8")).hexdigest()


class DiskCache:
    """`get(key)` / `put(key, value)` over one JSON file per key. Thread-safe; safe across processes too."""

    def __init__(self, root: str | os.PathLike, fsync: bool = False) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # fsync is off by default: an entry lost or emptied by a crash reads as a miss and is recomputed.
        self.fsync = fsync
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.puts = 0
        self.corrupt = 0
        self.refused = 0  # put() of a failure

    def __repr__(self) -> str:
        return f"DiskCache(root={str(self.root)!r})"

    def path_for(self, key: str) -> Path:
        if not _KEY.match(key):
            # Keys become file names: anything but a sha256 hex could point outside the root.
            raise ValueError(f"cache key must be 64 lowercase hex characters; got {key[:80]!r}")
        return self.root / key[:2] / f"{key}.json"

    def _bump(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def get(self, key: str) -> dict | None:
        path = self.path_for(key)
        try:
            with open(path, encoding="utf-8") as f:
                value = json.load(f)
        except FileNotFoundError:
            self._bump("misses")
            return None
        except (OSError, ValueError):
            self._bump("corrupt")
            self._bump("misses")
            return None
        if not isinstance(value, dict) or value.get("ok") is False:
            self._bump("corrupt")
            self._bump("misses")
            return None
        self._bump("hits")
        return value

    def put(self, key: str, value: dict) -> bool:
        """Store `value` (a JSON object); a value with ok=False is refused (returns False): failures are not kept."""
        if value.get("ok") is False:
            self._bump("refused")
            return False
        from srpo.runfolder import atomic_write_text

        atomic_write_text(self.path_for(key), canonical_json(value), fsync=self.fsync)
        self._bump("puts")
        return True

    def __contains__(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def stats(self) -> dict:
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "puts": self.puts, "corrupt": self.corrupt,
                    "refused": self.refused}


class CachedChatClient:
    """A ChatClient in front of a DiskCache: hits make no call, misses go out concurrently and are stored if ok.

    Identical requests within one batch are sent once. A hit is re-checked with `validate` when one is given, so
    a stricter validator never accepts an old answer it would have rejected.
    """

    def __init__(self, client: ChatClient, cache: DiskCache, prompt_version: str = "v1",
                 teacher_id: str | None = None) -> None:
        self.client = client
        self.cache = cache
        self.prompt_version = prompt_version
        self.teacher_id = teacher_id or client.model

    def __repr__(self) -> str:
        return f"CachedChatClient({self.client!r}, {self.cache!r}, prompt_version={self.prompt_version!r})"

    def key_for(self, request: ChatRequest | str | dict | list) -> str:
        messages, params = self.client.request_spec(request)
        return cache_key(messages, self.teacher_id, self.prompt_version, params)

    def complete(self, request: ChatRequest | str | dict | list, validate: Validator | None = None,
                 max_reasks: int = 2) -> ChatResult:
        return self.complete_many([request], validate=validate, max_reasks=max_reasks)[0]

    def complete_many(self, requests: Iterable[ChatRequest | str | dict | list], validate: Validator | None = None,
                      max_reasks: int = 2) -> list[ChatResult]:
        from srpo.clients.openai_compat import ChatResult, coerce_request

        reqs = [coerce_request(r) for r in requests]
        keys = [self.key_for(r) for r in reqs]
        results: list[ChatResult | None] = [None] * len(reqs)
        pending: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            if key in pending:
                pending[key].append(i)
                continue
            hit = self.cache.get(key)
            text = hit.get("text") if hit else None
            if isinstance(text, str) and (validate is None or not validate(text)):
                results[i] = ChatResult(ok=True, text=text, cached=True, request_id=reqs[i].id,
                                        finish_reason=hit.get("finish_reason"))
            else:
                pending[key] = [i]

        def fetch(key: str) -> ChatResult:
            res = self.client.complete(reqs[pending[key][0]], validate=validate, max_reasks=max_reasks)
            if res.ok:  # failures are never stored: the next run must try again
                self.cache.put(key, {
                    "ok": True, "text": res.text, "model": self.teacher_id, "prompt_version": self.prompt_version,
                    "prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
                    "finish_reason": res.finish_reason, "created_unix": round(time.time(), 3),
                })
            return res

        # Store as each answer lands (inside the workers), so an interrupted run keeps what it already paid for.
        fetched = self.client.map(fetch, list(pending))
        for key, res in zip(pending, fetched, strict=True):
            for n, i in enumerate(pending[key]):
                if n == 0:
                    results[i] = res
                else:  # a duplicate within the batch shares the answer without paying for it again
                    results[i] = ChatResult(**{**res.to_dict(), "attempts": 0, "prompt_tokens": 0,
                                               "completion_tokens": 0, "request_id": reqs[i].id})
        return [r for r in results if r is not None]

    def stats(self) -> dict:
        return {"client": self.client.stats(), "cache": self.cache.stats()}

    def to_manifest(self) -> dict:
        return {**self.client.to_manifest(), "cache": {"root": str(self.cache.root), "prompt_version":
                                                        self.prompt_version, "teacher_id": self.teacher_id,
                                                        "format": CACHE_FORMAT, **self.cache.stats()}}


def cache_dir() -> Path:
    """srpo's own cache (tiny models, the world's base models, eval judge answers): $SRPO_CACHE or ~/.cache/srpo."""
    return Path(os.environ.get("SRPO_CACHE", Path.home() / ".cache" / "srpo"))
