"""Benchmark: neighbor generation for 50 classes at concurrency 8 against a local STAND-IN
server (tests/fault_server.py) that answers every request after a fixed latency.

Goal: wall time <= 1.3 x ceil(50 / 8) x latency (the concurrency bound is used, and the
overhead of the client, validation and cache writes is small); a second run costs 0 requests.
Measured beside it, in the same run: a bare `httpx` client sending the same 50 requests at the
same concurrency, i.e. the floor this machine and the stand-in reach without sept.

    python benchmarks/generate.py [--classes 50] [--concurrency 8] [--latency 0.2]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))          # the fixtures (stand-in servers); sept is installed

from sept.pipeline.generate import GenerationSettings, generate_all  # noqa: E402
from sept.pipeline.llm import ResponseCache, make_backend  # noqa: E402
from sept.prompts import load_prompt  # noqa: E402


async def bare_client(base_url: str, classes: list[str], concurrency: int) -> float:
    """Wall time of the same requests through a bare httpx client: no SDK, no parsing, no cache."""
    import httpx

    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=60) as client:
        async def one(c: str) -> None:
            async with limit:
                r = await client.post(f"{base_url}/chat/completions", json={
                    "model": "stand-in-model", "messages": [{"role": "user", "content": f'neighbors of the class "{c}"'}]})
                r.raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*(one(c) for c in classes))
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--latency", type=float, default=0.2)
    args = ap.parse_args()

    os.environ["OPENAI_API_KEY"] = "sk-benchmark-not-a-real-key"
    classes = [f"class {i:02d}" for i in range(args.classes)]
    prompt = load_prompt("default")
    settings = GenerationSettings(dataset="bench", n_per_class=10, concurrency=args.concurrency)
    # The stand-in runs in its own process so that its threads do not share the client's GIL.
    server = subprocess.Popen([sys.executable, str(REPO / "tests" / "fault_server.py"), "--latency", str(args.latency),
                               "--items", "15"], stdout=subprocess.PIPE, text=True)
    try:
        base_url = server.stdout.readline().strip()

        def stats() -> dict:
            with urllib.request.urlopen(base_url.rsplit("/v1", 1)[0] + "/stats", timeout=5) as r:
                return json.load(r)

        bare = asyncio.run(bare_client(base_url, classes, args.concurrency))

        with tempfile.TemporaryDirectory() as tmp:
            backend = make_backend("openai", "stand-in-model", base_url=base_url)
            cache = ResponseCache(Path(tmp) / "cache")

            t0 = time.perf_counter()
            first = asyncio.run(generate_all(backend, classes, prompt, settings, cache))
            wall = time.perf_counter() - t0
            s1 = stats()

            t0 = time.perf_counter()
            second = asyncio.run(generate_all(backend, classes, prompt, settings, cache))
            wall2 = time.perf_counter() - t0
            second_requests = stats()["count"] - s1["count"]
        first_requests, peak = s1["count"] - len(classes), s1["max_in_flight"]
    finally:
        server.terminate()
        server.wait(10)

    ideal = math.ceil(args.classes / args.concurrency) * args.latency
    goal = 1.3 * ideal
    candidates = sum(len(r.candidates) for r in first.values())
    print(f"classes {args.classes}, concurrency {args.concurrency}, latency {args.latency:.3f} s per request (stand-in server)")
    print(f"ideal ceil({args.classes}/{args.concurrency}) x latency = {ideal:.3f} s; goal 1.3 x ideal = {goal:.3f} s")
    print(f"bare httpx client:  wall {bare:.3f} s, ratio to ideal {bare / ideal:.3f}")
    print(f"sept generate_all:  wall {wall:.3f} s, ratio to ideal {wall / ideal:.3f} (goal <= 1.3): "
          f"{'OK' if wall <= goal else 'MISSED'}; ratio to bare client {wall / bare:.3f}")
    print(f"                    requests {first_requests}, peak in flight {peak}, candidates {candidates}")
    print(f"second run: wall {wall2:.3f} s, requests {second_requests} (goal 0): {'OK' if second_requests == 0 else 'MISSED'}, "
          f"cache hits {sum(r.cache_hits for r in second.values())}")


if __name__ == "__main__":
    main()
