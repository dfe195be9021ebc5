"""Fixtures of the flows part: one real Prefect stack per test session (server with SQLite,
process work pool, concurrency limits, the deployments of flows/prefect.yaml, a worker) on a
free loopback port, with its own PREFECT_HOME, result storage, LLM cache and neighbor store
under a temp dir. Its vllm-local deployment points at the session's real vLLM server and the
random-weight CLAP checkpoint."""
from __future__ import annotations

import socket

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def prefect_stack(tmp_path_factory, vllm_server, clap_checkpoint, clap_tokenizer_dir):
    """A running `flows.stack.Stack`; stopped (and checked stopped) at the end of the session."""
    import psutil

    from sept.flows.stack import Stack, StackConfig, StackError

    root = tmp_path_factory.mktemp("prefect-stack")
    cfg = StackConfig(
        root=root / "stack", port=free_port(), pool="sept-test", llm_limit=4,
        vllm_base_url=vllm_server.base_url, vllm_served_model=vllm_server.model,
        clap_checkpoint=clap_checkpoint, clap_tokenizer=clap_tokenizer_dir,
        store=root / "store", llm_cache=root / "llm-cache", timeout=180,
    )
    stack = Stack(cfg, log=lambda m: print(f"[stack] {m}"))
    try:
        stack.up()
    except StackError as e:
        stack.down()
        pytest.fail(f"the Prefect stack did not come up: {e}")
    pids = [p.pid for p in stack.parts().values()]
    try:
        yield stack
    finally:
        stack.down()
        left = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        assert not left, f"stack processes still running after down: {left}"
