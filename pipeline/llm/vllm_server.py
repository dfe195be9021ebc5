"""Launch a local vLLM OpenAI-compatible server (CPU build, in its own venv) and wait for it.

Used by the test fixtures and by `sept stack`. The command line and environment are the ones
known to work on a CPU-only machine: the `vllm serve` entry point of the CPU package is broken,
so the server module is run directly; the V1 engine runs in-process (no multiprocessing); the
KV cache is kept at 1 GiB; and caches/temp files go to a scratch folder, not the home dir.

    argv, env = vllm_server_command("path/to/model", port=8011)
    with VLLMServer.start("path/to/model", log_path="vllm.log") as server:
        server.base_url, server.model   # -> "http://127.0.0.1:<port>/v1", served model name
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CPU_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "HF_HUB_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


def default_vllm_python() -> str:
    """$SEPT_VLLM_PYTHON, else the repo's .venv-vllm, else this interpreter."""
    env = os.environ.get("SEPT_VLLM_PYTHON")
    if env:
        return env
    venv = REPO / ".venv-vllm" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def vllm_server_command(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
                        python: str | None = None, served_model_name: str | None = None,
                        max_model_len: int = 1024, scratch_dir: str | Path | None = None,
                        seed: int = 0) -> tuple[list[str], dict[str, str]]:
    """(argv, env) to start the server. `env` is the full environment for the child.

    `env --default-signal=INT` restores SIGINT for the child, which a shell's background job
    would otherwise ignore; without it SIGTERM/SIGINT shutdown can hang.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"vLLM model folder {model_dir} has no config.json")
    argv = [
        "env", "--default-signal=INT",
        python or default_vllm_python(), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", served_model_name or model_dir.name,
        "--host", host, "--port", str(port),
        "--dtype", "float32",
        "--max-model-len", str(max_model_len),
        "--enforce-eager",
        "--distributed-executor-backend", "uni",
        "--seed", str(seed),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    env.update(CPU_ENV)
    # the server must not pick up this process's venv or source tree
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    if scratch_dir is not None:
        scratch = Path(scratch_dir)
        for name, sub in (("TMPDIR", "tmp"), ("VLLM_CACHE_ROOT", "vllm-cache"), ("TORCHINDUCTOR_CACHE_DIR", "inductor")):
            (scratch / sub).mkdir(parents=True, exist_ok=True)
            env[name] = str(scratch / sub)
    return argv, env


class VLLMServer:
    """A running server process; stop it with `stop()` or use it as a context manager."""

    def __init__(self, process: subprocess.Popen, host: str, port: int, model: str, log_path: Path):
        self.process = process
        self.host = host
        self.port = port
        self.model = model
        self.log_path = log_path

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @classmethod
    def start(cls, model_dir: str | Path, host: str = "127.0.0.1", port: int | None = None,
              log_path: str | Path | None = None, scratch_dir: str | Path | None = None,
              python: str | None = None, served_model_name: str | None = None, max_model_len: int = 1024,
              ready_timeout: float | None = 180.0) -> "VLLMServer":
        """Start the server; wait until it answers (unless `ready_timeout` is None)."""
        port = port or free_port(host)
        log_path = Path(log_path) if log_path else Path(scratch_dir or ".") / f"vllm-{port}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        name = served_model_name or Path(model_dir).name
        argv, env = vllm_server_command(model_dir, host, port, python, name, max_model_len, scratch_dir)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        server = cls(process, host, port, name, log_path)
        if ready_timeout is not None:
            try:
                server.wait_ready(ready_timeout)
            except BaseException:
                server.stop()
                raise
        return server

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                models = json.load(r)
            return any(m.get("id") == self.model for m in models.get("data", []))
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Poll `/v1/models` until the model is listed; raise with the log tail if the process
        exits or the timeout passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(f"vLLM server exited with code {code} before it was ready; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.5)
        raise TimeoutError(f"vLLM server not ready after {timeout:.0f}s; log {self.log_path}:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait, then SIGKILL the process group if it will not go."""
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            except ProcessLookupError:
                pass
        return self.process.returncode

    def __enter__(self) -> "VLLMServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
