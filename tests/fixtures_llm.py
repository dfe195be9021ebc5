"""Fixtures of the LLM part: the tiny local chat model, a real vLLM server on loopback, and the
stand-in fault server (tests/fault_server.py) for faults a real server will not produce."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VLLM_PYTHON = Path(os.environ.get("SEPT_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))


@pytest.fixture(scope="session")
def tiny_llm_dir() -> Path:
    """The tiny chat model built by `python -m sept.tiny_llm --cached`, once per machine (cached
    by hash under the checkout's .sept, as `sept demo` run from the checkout finds it)."""
    # In a child process: training it here would leave torch threads and memory in the test process.
    env = {**os.environ, "SEPT_HOME": os.environ.get("SEPT_HOME", str(REPO / ".sept"))}
    proc = subprocess.run([sys.executable, "-m", "sept.tiny_llm", "--cached"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=1200)
    if proc.returncode != 0:
        pytest.fail(f"python -m sept.tiny_llm failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert (path / "config.json").is_file(), f"no model in {path}"
    return path


@dataclass(frozen=True)
class RunningVLLM:
    base_url: str
    model: str
    log_path: Path


@pytest.fixture(scope="session")
def vllm_server(tiny_llm_dir, tmp_path_factory):
    """A real vLLM OpenAI-compatible server on a free loopback port, serving the tiny model."""
    from sept.pipeline.llm.vllm_server import VLLMServer

    if not VLLM_PYTHON.exists():
        pytest.fail(f"the vLLM environment is missing: {VLLM_PYTHON} (run `make setup-vllm`)")
    scratch = tmp_path_factory.mktemp("vllm")
    try:
        server = VLLMServer.start(tiny_llm_dir, python=str(VLLM_PYTHON), scratch_dir=scratch,
                                  log_path=scratch / "server.log", served_model_name="tiny-llm",
                                  max_model_len=2048, ready_timeout=240)
    except (RuntimeError, TimeoutError) as e:
        pytest.fail(str(e))
    try:
        yield RunningVLLM(server.base_url, server.model, server.log_path)
    finally:
        code = server.stop()
        assert code is not None, "vLLM server did not stop"


@pytest.fixture
def fault_server():
    """The stand-in fault-injecting server (not a model); see tests/fault_server.py."""
    from fault_server import FaultServer

    server = FaultServer().start()
    try:
        yield server
    finally:
        server.stop()
