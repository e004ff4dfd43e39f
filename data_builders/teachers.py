"""Teachers write a risk-disentangled chain for each pair, behind one batch interface.

    teacher.write_chains(pairs, images_root) -> [TeacherResult]   # chain text, or why there is none, per pair
    teacher.write_twin_queries(pairs, images_root) -> [TeacherResult]   # a harmless query about each pair's image
    teacher.stats()  # calls, cache hits, retries, re-asks, tokens, estimated cost

Implementations:

* `OfflineTeacher`: deterministic, no model. For pairs of the synthetic world it is the world's teacher (it knows
  every object's hazard). For any other pair it writes a conservative chain from the pair's own label, category and
  safety warning: useful for plumbing and as a format example, not as a substitute for a strong VLM teacher.
* `OpenAITeacher`: any OpenAI-compatible endpoint through `srpo.clients.ChatClient` (concurrency, retries, bounded
  re-asks when the answer does not parse as a chain) behind the content-addressed `srpo.cache.DiskCache`, so a re-run
  makes no calls for answers it already has. The API key is read from the environment variable *named* in the
  config at call time; it is never an attribute and never reaches a log, a result or a manifest.
* `HFTeacher`: a local `AutoModelForImageTextToText` folder, batched greedy generation through
  `srpo.models.generate`, answers validated with `parse_chain` and cached by content hash the same way.

A failure is a result (`ok=False`, `reason`, `detail`), never an exception and never a chain: the build step writes
it to failed.jsonl and counts it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from srpo.chain import RiskChain, parse_chain
from srpo.schema import SSUIPair, image_paths, resolve_image
from srpo.world.scenes import OBJECT_BY_NAME
from srpo.world.teacher import world_chain

from .prompts import (
    OFFLINE_TWIN_QUERIES,
    TEACHER_PROMPT_VERSION,
    TWIN_PROMPT_VERSION,
    chain_prompt,
    parse_twin_query,
    twin_prompt,
    validate_twin,
)

OFFLINE_TEACHER_VERSION = "offline-v1"

# Failure reasons the teachers add to the client's own (timeout, http_429, exhausted_retries, invalid_answer, ...).
IMAGE_UNREADABLE = "image_unreadable"
GENERATION_ERROR = "generation_error"
INVALID_ANSWER = "invalid_answer"


@dataclass
class TeacherResult:
    """One pair's outcome: `text` (the chain, or the twin query) when ok, else `reason` (+ `detail`)."""

    id: str
    ok: bool
    text: str | None = None
    reason: str | None = None
    last_error: str | None = None  # for exhausted_retries: what the last attempt failed with
    detail: str = ""
    cached: bool = False
    calls: int = 0  # calls this pair cost (HTTP attempts over retries and re-asks; generate() rows for hf)
    reasks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def chain(self) -> str | None:
        return self.text

    @property
    def reason_key(self) -> str:
        """The reason as counted in manifests: 'exhausted_retries(timeout)' keeps what the retries failed on."""
        if self.ok:
            return "ok"
        return f"{self.reason}({self.last_error})" if self.last_error else str(self.reason)

    def to_dict(self) -> dict:
        return asdict(self)


@runtime_checkable
class Teacher(Protocol):
    teacher_id: str  # names the model (and its version), part of every cache key
    prompt_version: str  # data_builders.prompts.TEACHER_PROMPT_VERSION for prompted teachers

    def write_chains(self, pairs: Sequence[SSUIPair], images_root: str | Path) -> list[TeacherResult]:
        """One result per pair, in order; image paths are relative to images_root."""
        ...

    def write_twin_queries(self, pairs: Sequence[SSUIPair], images_root: str | Path) -> list[TeacherResult]:
        """For each (unsafe) pair, a harmless query about the same image; `text` is the query."""
        ...

    def stats(self) -> dict: ...

    def describe(self) -> dict:
        """What a manifest records about this teacher (never a secret)."""
        ...

    def close(self) -> None: ...


def canonical_chain(text: str) -> tuple[str | None, str | None]:
    """(the chain re-rendered in canonical form, None) when `text` parses cleanly, else (None, what is wrong)."""
    parsed = parse_chain(text)
    if not parsed.ok:
        return None, "; ".join(parsed.errors) or "not a risk chain"
    return parsed.chain.render(), None


def _image_files(pair: SSUIPair, images_root: str | Path) -> tuple[list[Path], str | None]:
    """(the absolute paths of the pair's images, in order: [] for text-only, None), or ([], problem) when one cannot
    be read."""
    files = []
    for rel in image_paths(pair.image):
        try:
            path = resolve_image(images_root, rel)
        except ValueError as e:
            return [], str(e)
        if not path.is_file():
            return [], f"image {rel!r} not found under {images_root}"
        files.append(path)
    return files, None


def _empty_stats() -> dict:
    return {"calls": 0, "requests": 0, "cache_hits": 0, "cache_misses": 0, "retries": {}, "reasks": 0,
            "prompt_tokens": 0, "completion_tokens": 0, "estimated_cost_usd": 0.0, "failures": {}}


# ----------------------------------------------------------------------------------------------------------- offline


class OfflineTeacher:
    teacher_id = OFFLINE_TEACHER_VERSION
    prompt_version = OFFLINE_TEACHER_VERSION  # no prompt: the chain is a function of the pair

    def __init__(self) -> None:
        self._requests = 0

    def write_chain(self, pair: SSUIPair) -> RiskChain:
        if pair.source in ("tiny", "world") and pair.meta.get("object") in OBJECT_BY_NAME:
            return world_chain(OBJECT_BY_NAME[pair.meta["object"]], pair.meta["intent"])
        unsafe = pair.label == "unsafe"
        warning = pair.safety_warning or f"answering as asked risks {pair.category.replace('_', ' ')}"
        return RiskChain(
            visual="the image as given; its content is judged together with the request.",
            text=f"asks: {' '.join(pair.query.split())[:160]}",
            combined=("together, image and request point to a real risk." if unsafe
                      else "together, image and request are harmless."),
            category=pair.category if unsafe else "none",
            severity="high" if unsafe else "none",
            consequences=warning if unsafe else "none.",
            strategy="refuse" if unsafe else "help",
            answer=(pair.reference_answer or (
                "I can't help with that as asked, because it could cause harm. If you are at risk, please reach out "
                "to someone you trust or local emergency services.") if unsafe
                else pair.reference_answer or "Here is a helpful answer to your question."),
        )

    def write_chains(self, pairs: Sequence[SSUIPair], images_root: str | Path = ".") -> list[TeacherResult]:
        self._requests += len(pairs)
        return [TeacherResult(p.id, True, self.write_chain(p).render()) for p in pairs]

    def write_twin_queries(self, pairs: Sequence[SSUIPair], images_root: str | Path = ".") -> list[TeacherResult]:
        self._requests += len(pairs)
        return [TeacherResult(p.id, True, OFFLINE_TWIN_QUERIES.get(p.category, OFFLINE_TWIN_QUERIES["_default"]))
                for p in pairs]

    def stats(self) -> dict:
        return {**_empty_stats(), "requests": self._requests}

    def describe(self) -> dict:
        return {"teacher": "offline", "teacher_id": self.teacher_id, "prompt_version": self.prompt_version}

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------------------------ openai


class OpenAITeacher:
    """Chains from an OpenAI-compatible endpoint, through the disk cache (hits make no call)."""

    def __init__(self, model: str, base_url: str, cache_dir: str | Path, *, api_key_env: str | None = "OPENAI_API_KEY",
                 concurrency: int = 8, max_reasks: int = 2, timeout_s: float = 60.0, max_retries: int = 5,
                 max_tokens: int = 1024, hints: bool = True, seed: int = 0, backoff_base_s: float = 0.5,
                 backoff_max_s: float = 30.0, price_prompt_per_1k: float = 0.0,
                 price_completion_per_1k: float = 0.0) -> None:
        from srpo.cache import CachedChatClient, DiskCache
        from srpo.clients import ChatClient

        self.teacher_id = f"openai:{model}"
        self.prompt_version = TEACHER_PROMPT_VERSION
        self.max_reasks = max_reasks
        self.hints = hints
        self.client = ChatClient(base_url, model, api_key_env=api_key_env, concurrency=concurrency,
                                 timeout_s=timeout_s, max_retries=max_retries, max_tokens=max_tokens,
                                 temperature=0.0, seed=seed, backoff_base_s=backoff_base_s,
                                 backoff_max_s=backoff_max_s, price_prompt_per_1k=price_prompt_per_1k,
                                 price_completion_per_1k=price_completion_per_1k)
        self.cache = DiskCache(Path(cache_dir))
        self._chains = CachedChatClient(self.client, self.cache, TEACHER_PROMPT_VERSION, self.teacher_id)
        self._twins = CachedChatClient(self.client, self.cache, TWIN_PROMPT_VERSION, self.teacher_id)

    def __repr__(self) -> str:
        return f"OpenAITeacher({self.client!r}, cache={self.cache!r})"

    def _run(self, cached_client, pairs, images_root, prompt_fn, validate, finish) -> list[TeacherResult]:
        from srpo.clients import ChatRequest

        out: list[TeacherResult | None] = [None] * len(pairs)
        requests, where = [], []
        for i, p in enumerate(pairs):
            images, problem = _image_files(p, images_root)
            if problem:
                out[i] = TeacherResult(p.id, False, reason=IMAGE_UNREADABLE, detail=problem)
                continue
            system, user = prompt_fn(p, len(images))
            requests.append(ChatRequest(prompt=user, system=system, images=images, id=p.id))
            where.append(i)
        for i, res in zip(where, cached_client.complete_many(requests, validate=validate,
                                                             max_reasks=self.max_reasks), strict=True):
            r = TeacherResult(pairs[i].id, res.ok, reason=res.error, last_error=res.last_error, detail=res.detail,
                              cached=res.cached, calls=res.attempts, reasks=res.reasks,
                              prompt_tokens=res.prompt_tokens, completion_tokens=res.completion_tokens)
            if res.ok:
                r.text, problem = finish(res.text)
                if problem:  # validated already, so only a validator/renderer mismatch lands here
                    r.ok, r.reason, r.detail = False, INVALID_ANSWER, problem
            out[i] = r
        return [r for r in out if r is not None]

    def write_chains(self, pairs: Sequence[SSUIPair], images_root: str | Path) -> list[TeacherResult]:
        from srpo.clients import validate_chain

        return self._run(self._chains, pairs, images_root,
                         lambda p, has_image: chain_prompt(p, has_image=has_image, hints=self.hints),
                         validate_chain, canonical_chain)

    def write_twin_queries(self, pairs: Sequence[SSUIPair], images_root: str | Path) -> list[TeacherResult]:
        return self._run(self._twins, pairs, images_root, lambda p, _has_image: twin_prompt(p), validate_twin,
                         parse_twin_query)

    def stats(self) -> dict:
        c, k = self.client.stats(), self.cache.stats()
        return {"calls": c["calls"], "requests": c["requests"], "cache_hits": k["hits"], "cache_misses": k["misses"],
                "retries": c["retries"], "reasks": c["reasks"], "prompt_tokens": c["prompt_tokens"],
                "completion_tokens": c["completion_tokens"], "estimated_cost_usd": c["estimated_cost_usd"],
                "failures": c["failures"]}

    def describe(self) -> dict:
        m = self.client.to_manifest()
        m.pop("stats", None)
        return {"teacher": "openai", "teacher_id": self.teacher_id, "prompt_version": self.prompt_version,
                "twin_prompt_version": TWIN_PROMPT_VERSION, "hints": self.hints, "max_reasks": self.max_reasks,
                "cache_root": str(self.cache.root), "client": m}

    def close(self) -> None:
        self.client.close()


# ---------------------------------------------------------------------------------------------------------------- hf


def model_fingerprint(folder: str | Path) -> str:
    """A cheap identity for a local model folder: its config and the names and sizes of its weight files."""
    folder = Path(folder)
    h = hashlib.sha256()
    for name in ("config.json", "adapter_config.json"):
        if (folder / name).is_file():
            h.update((folder / name).read_bytes())
    for p in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        h.update(f"{p.name}:{p.stat().st_size}".encode())
    return h.hexdigest()[:12]


class HFTeacher:
    """Greedy chains from a local image-text-to-text model folder, batched, cached by content hash."""

    def __init__(self, model: str, cache_dir: str | Path, *, batch_size: int = 8, max_new_tokens: int = 1024,
                 hints: bool = True) -> None:
        from srpo.cache import DiskCache

        if not (Path(model) / "config.json").exists() and not (Path(model) / "adapter_config.json").exists():
            raise FileNotFoundError(f"build_teacher_model {model!r} is not a local model folder (no config.json); "
                                    "srpo never downloads: give a folder (`srpo run` also accepts tiny:llava)")
        self.model_dir = str(model)
        self.teacher_id = f"hf:{Path(self.model_dir).name}:{model_fingerprint(self.model_dir)}"
        self.prompt_version = TEACHER_PROMPT_VERSION
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.hints = hints
        self.cache = DiskCache(Path(cache_dir))
        self._model = self._processor = None
        self._lock = threading.Lock()
        self._counts: Counter = Counter()
        self._failures: Counter = Counter()

    def _load(self):
        with self._lock:
            if self._model is None:
                from srpo.models import load_policy
                from srpo.sharding import inference_device

                model, processor = load_policy(self.model_dir)
                model.to(inference_device()).eval()  # the checkpoint's own dtype (transformers loads it as saved)
                self._model, self._processor = model, processor
        return self._model, self._processor

    def _key(self, text: str, image_sha: str | None, prompt_version: str) -> str:
        from srpo.cache import cache_key

        content = ([{"type": "image", "sha256": image_sha}] if image_sha else []) + [{"type": "text", "text": text}]
        return cache_key([{"role": "user", "content": content}], self.teacher_id, prompt_version,
                         {"max_new_tokens": self.max_new_tokens, "do_sample": False})

    def _run(self, pairs, images_root, prompt_fn, finish, prompt_version) -> list[TeacherResult]:
        out: list[TeacherResult | None] = [None] * len(pairs)
        todo = []  # (index, key, text, image paths)
        for i, p in enumerate(pairs):
            self._counts["requests"] += 1
            images, problem = _image_files(p, images_root)
            if problem:
                out[i] = TeacherResult(p.id, False, reason=IMAGE_UNREADABLE, detail=problem)
                continue
            system, user = prompt_fn(p, len(images))
            text = f"{system}\n\n{user}"  # srpo.models.generate sends one user turn; the system text leads it
            shas = [hashlib.sha256(f.read_bytes()).hexdigest() for f in images]
            key = self._key(text, ",".join(shas) or None, prompt_version)  # one image: its sha, as before
            hit = self.cache.get(key)
            if hit and isinstance(hit.get("text"), str) and not finish(hit["text"])[1]:
                self._counts["cache_hits"] += 1
                out[i] = TeacherResult(p.id, True, finish(hit["text"])[0], cached=True)
                continue
            self._counts["cache_misses"] += 1
            todo.append((i, key, text, images))
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start:start + self.batch_size]
            try:
                from srpo.models import generate, open_images

                model, processor = self._load()
                prompts = [(text, open_images(images) or None) for _, _, text, images in batch]
                texts = [k[0] for k in generate(model, processor, prompts, max_new_tokens=self.max_new_tokens)]
            except Exception as e:  # noqa: BLE001 - one bad batch (OOM, a broken image) must not lose the others
                for i, *_ in batch:
                    out[i] = TeacherResult(pairs[i].id, False, reason=GENERATION_ERROR,
                                           detail=f"{type(e).__name__}: {str(e)[:200]}")
                    self._failures[GENERATION_ERROR] += 1
                continue
            self._counts["calls"] += len(batch)
            for (i, key, _, _), answer in zip(batch, texts, strict=True):
                value, problem = finish(answer)
                if problem:
                    self._failures[INVALID_ANSWER] += 1
                    out[i] = TeacherResult(pairs[i].id, False, reason=INVALID_ANSWER, calls=1,
                                           detail=f"{problem}; answer began {answer[:80]!r}")
                    continue
                self.cache.put(key, {"ok": True, "text": answer, "model": self.teacher_id,
                                     "prompt_version": prompt_version})
                out[i] = TeacherResult(pairs[i].id, True, value, calls=1)
        return [r for r in out if r is not None]

    def write_chains(self, pairs: Sequence[SSUIPair], images_root: str | Path) -> list[TeacherResult]:
        return self._run(pairs, images_root, lambda p, has_image: chain_prompt(p, has_image=has_image,
                                                                               hints=self.hints),
                         canonical_chain, TEACHER_PROMPT_VERSION)

    def write_twin_queries(self, pairs: Sequence[SSUIPair], images_root: str | Path) -> list[TeacherResult]:
        return self._run(pairs, images_root, lambda p, _has_image: twin_prompt(p), parse_twin_query,
                         TWIN_PROMPT_VERSION)

    def stats(self) -> dict:
        return {**_empty_stats(), **{k: self._counts[k] for k in ("calls", "requests", "cache_hits",
                                                                  "cache_misses")},
                "failures": dict(sorted(self._failures.items()))}

    def describe(self) -> dict:
        return {"teacher": "hf", "teacher_id": self.teacher_id, "prompt_version": self.prompt_version,
                "twin_prompt_version": TWIN_PROMPT_VERSION, "model_dir": self.model_dir, "hints": self.hints,
                "batch_size": self.batch_size, "max_new_tokens": self.max_new_tokens, "greedy": True,
                "cache_root": str(self.cache.root)}

    def close(self) -> None:
        self._model = self._processor = None
