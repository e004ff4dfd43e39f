"""Teacher-client throughput: sequential vs concurrent chains/s against a loopback server, then a cached second pass.

    python benchmarks/teacher_client.py [--n 256] [--seq-n 32] [--concurrency 32] [--latency-ms 200]

The server (srpo.testing.fault_server) answers every call with a valid risk chain after `--latency-ms`, with no faults.
The sequential pass (concurrency 1) runs only the first `--seq-n` requests: throughput is a rate, and 256 calls at
200 ms each would take 51 s to say the same thing. The concurrent pass runs all `--n` requests through the cache
(cold: every request is a miss and is stored); the second pass over the same requests must make 0 calls. Every
answer is validated as a chain. The last line is `speedup: N.Nx` (concurrent chains/s over sequential chains/s).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# Run from a checkout without installing: the repo root holds `srpo`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srpo.cache import CachedChatClient, DiskCache
from srpo.clients import ChatClient, ChatRequest, validate_chain
from srpo.testing.fault_server import FaultServer

# A 1x1 PNG, so the requests carry an image the way teacher calls do.
_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


def _requests(n: int) -> list[ChatRequest]:
    return [ChatRequest(prompt=f"Request {i}: what is shown here, and is it safe to do what the caption says?",
                        images=[_PNG], system="Answer with the risk-disentangled chain.", id=f"r{i}")
            for i in range(n)]


def _run(client: ChatClient | CachedChatClient, reqs: list[ChatRequest]) -> tuple[float, int]:
    t0 = time.perf_counter()
    results = client.complete_many(reqs, validate=validate_chain)
    elapsed = time.perf_counter() - t0
    bad = [r for r in results if not r.ok]
    if bad:
        raise SystemExit(f"{len(bad)} request(s) failed, first: {bad[0].error}: {bad[0].detail}")
    return elapsed, len(results)


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=256, help="requests in the concurrent and cached passes")
    ap.add_argument("--seq-n", type=int, default=32, help="requests in the sequential pass (a rate, so fewer)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency-ms", type=float, default=200.0, help="server think time per call")
    args = ap.parse_args(argv)
    reqs = _requests(args.n)
    seq_n = min(args.seq_n, args.n)

    with FaultServer(latency_s=args.latency_ms / 1000) as srv, tempfile.TemporaryDirectory() as tmp:
        print(f"server {srv.url}: {args.latency_ms:g} ms per call, no faults")
        with ChatClient(srv.url, "bench-teacher", api_key_env=None, concurrency=1) as seq:
            t_seq, k = _run(seq, reqs[:seq_n])
        seq_rate = k / t_seq
        print(f"sequential   (concurrency 1):  {k:4d} chains in {t_seq:6.2f} s = {seq_rate:7.2f} chains/s "
              f"(first {seq_n} requests only; throughput is a rate)")

        with ChatClient(srv.url, "bench-teacher", api_key_env=None, concurrency=args.concurrency) as conc:
            cached = CachedChatClient(conc, DiskCache(Path(tmp) / "cache"), prompt_version="bench-v1")
            t_conc, k = _run(cached, reqs)
            conc_rate = k / t_conc
            print(f"concurrent   (concurrency {args.concurrency}): {k:4d} chains in {t_conc:6.2f} s = "
                  f"{conc_rate:7.2f} chains/s (cold cache: every request a miss, answers stored)")
            calls_before, received_before = conc.stats()["calls"], srv.requests_received
            t_hit, k = _run(cached, reqs)
            calls = conc.stats()["calls"] - calls_before
            print(f"cached pass  (same {k} requests): {t_hit:6.3f} s, calls made: {calls}, "
                  f"server requests: {srv.requests_received - received_before}, cache {cached.cache.stats()}")
    speedup = conc_rate / seq_rate
    print(f"ideal speedup at {args.latency_ms:g} ms latency is {args.concurrency}x (calls overlap fully)")
    print(f"speedup: {speedup:.1f}x")
    return speedup


if __name__ == "__main__":
    main()
