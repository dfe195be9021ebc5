"""`sept stack up|status|down` through the CLI: idempotent up, and a down that leaves no
process behind (its own small stack: server, work pool, deployments, worker; no vLLM)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fixtures_prefect import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def sept(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sept", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_stack_up_is_idempotent_and_down_leaves_no_process(tmp_path):
    root, port = tmp_path / "stack", free_port()
    family: set[int] = set()
    up = sept("stack", "up", "--dir", str(root), "--port", str(port), "--pool", "sept-stack-test",
              "--store", str(tmp_path / "store"), "--timeout", "120")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        status = json.loads(sept("stack", "status", "--dir", str(root), "--json").stdout)
        assert status["up"] and set(status["parts"]) == {"server", "worker"}
        pids = {name: part["pid"] for name, part in status["parts"].items()}
        assert (root / "pids" / "server.pid").read_text().strip() == str(pids["server"])
        assert (root / "logs" / "server.log").stat().st_size > 0 and (root / "logs" / "worker.log").stat().st_size > 0
        assert f"PREFECT_API_URL=http://127.0.0.1:{port}/api" in (root / "env.sh").read_text()

        # the deployments exist on the server, one per backend kind, and margins
        env = dict(os.environ, COLUMNS="400")  # rich tables: no truncated names
        for line in (root / "env.sh").read_text().splitlines():
            if line.startswith("export "):
                key, value = line[len("export "):].split("=", 1)
                env[key] = value.strip("'")
        listed = subprocess.run([sys.executable, "-m", "prefect", "deployment", "ls"], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=120)
        assert listed.returncode == 0, listed.stderr
        for name in ("generate-neighbors/vllm-local", "generate-neighbors/openai", "generate-neighbors/anthropic",
                     "compute-margins/default"):
            assert name in listed.stdout.replace("\n", ""), listed.stdout

        # one global concurrency limit per LLM backend, shared by every run
        limits = subprocess.run([sys.executable, "-m", "prefect", "global-concurrency-limit", "ls"], cwd=REPO,
                                env=env, capture_output=True, text=True, timeout=120)
        assert limits.returncode == 0, limits.stderr
        for backend in ("vllm", "openai", "anthropic"):
            assert f"llm-{backend}" in limits.stdout, limits.stdout

        # up again: a no-op on a healthy stack (same processes, no restart, no redeploy)
        t0 = time.monotonic()
        again = sept("stack", "up", "--dir", str(root), "--port", str(port), "--pool", "sept-stack-test",
                     "--store", str(tmp_path / "store"))
        assert again.returncode == 0, again.stdout + again.stderr
        assert time.monotonic() - t0 < 30
        assert "starting" not in again.stderr and "deploying" not in again.stderr
        status = json.loads(sept("stack", "status", "--dir", str(root), "--json").stdout)
        assert {n: p["pid"] for n, p in status["parts"].items()} == pids

        # a different port while it runs is refused, naming the running one
        clash = sept("stack", "up", "--dir", str(root), "--port", str(free_port()), "--pool", "sept-stack-test")
        assert clash.returncode != 0 and f"port={port}" in clash.stderr

        family |= set(pids.values())
        for pid in pids.values():
            family |= {c.pid for c in psutil.Process(pid).children(recursive=True)}
    finally:
        down = sept("stack", "down", "--dir", str(root))
    assert down.returncode == 0, down.stdout + down.stderr
    assert "worker" in down.stdout and "server" in down.stdout
    left = [p for p in family if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not left, f"processes left after stack down: {left}"
    assert sept("stack", "status", "--dir", str(root)).returncode == 1
    assert not list((root / "pids").glob("*.pid"))
    # nothing listens on the port any more
    import socket

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
