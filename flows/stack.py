"""The local Prefect stack: server, work pool, concurrency limits, deployments, worker,
and optionally a vLLM server, all on loopback, all under one state folder.

    stack = Stack(StackConfig(port=4200))   # root: $SEPT_HOME/stack (default ./.sept/stack)
    stack.up()        # idempotent: a healthy stack is left as it is
    stack.status()
    stack.down()      # stops only the processes this stack started

Layout of the state folder (default `$SEPT_HOME/stack`, SEPT_HOME defaulting to `./.sept` in
the working directory; nothing is ever written beside the installed package):

    prefect/          PREFECT_HOME (SQLite database, profiles)
    results/          Prefect result + task-cache storage shared by server, worker and CLI
    logs/<part>.log   output of each started process (cli.log: prefect CLI calls)
    pids/<part>.pid   pid (= process group) of each started process
    stack.json        what was started: pids, start times, ports, the config
    llm-cache/        LLM response cache of a non-default stack (the default one shares
                      `$SEPT_HOME/llm-cache` with `sept generate`)
    prefect.yaml      the deployments file (a copy of the packaged flows/prefect.yaml)
    env.sh            `source` it to point the prefect CLI at this stack

The deployments name their flows by module (`sept.flows.generate:generate_neighbors`), so the
worker imports them from the installed package; its flow runs start in the stack's working
directory (`workdir`, the folder `sept stack up` ran in), where relative paths resolve.

Processes are started in their own session (process group) with SIGINT and SIGTERM at
their defaults, so `down` can stop each one and everything it spawned. Every wait has a
timeout and says what it was waiting for and where the log is.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from sept.atomic import atomic_write, atomic_write_json
from sept.errors import SeptError
from sept.home import sept_home

# read from the package, never written: the stack deploys a copy kept in its state folder
PREFECT_FILE = Path(__file__).resolve().parent / "prefect.yaml"
FLOW_FILES = (Path(__file__).resolve().parent / "generate.py",)
BACKENDS = ("vllm", "vllm-offline", "openai", "anthropic")
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_ANTHROPIC_MODEL = "claude-haiku-4-5"


class StackError(SeptError, RuntimeError):
    """The stack could not be brought up, or is in a state that needs a person."""


@dataclass
class StackConfig:
    """Where and how the stack runs. Paths may be relative to the current folder."""

    root: Path = field(default_factory=lambda: sept_home() / "stack")
    # where the stack's processes and flow runs start (relative paths resolve there)
    workdir: Path = field(default_factory=Path.cwd)
    host: str = "127.0.0.1"
    port: int = 4200
    pool: str = "sept"
    # slots of the `llm-<backend>` global concurrency limits, shared by every run
    llm_limit: int = 8
    # serve this model folder with a local vLLM server (None: no local server)
    vllm_model: Path | None = None
    vllm_port: int = 8000
    vllm_python: Path | None = None  # None: $SEPT_VLLM_PYTHON or <repo>/.venv-vllm
    # or use an OpenAI-compatible server already running elsewhere
    vllm_base_url: str | None = None
    vllm_served_model: str | None = None
    openai_model: str = DEFAULT_OPENAI_MODEL
    anthropic_model: str = DEFAULT_ANTHROPIC_MODEL
    clap_checkpoint: Path | None = None
    clap_tokenizer: Path | None = None
    store: Path | None = None
    llm_cache: Path | None = None
    note: str = ""  # manifest message of runs of these deployments
    extra_env: dict[str, str] = field(default_factory=dict)
    timeout: float = 180.0  # per wait

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser().resolve()
        self.workdir = Path(self.workdir).expanduser().resolve()
        for name in ("vllm_model", "clap_checkpoint", "clap_tokenizer", "store", "llm_cache"):
            value = getattr(self, name)
            if value is not None and str(value) != "":
                setattr(self, name, Path(value).expanduser().resolve())
        if self.vllm_python is not None:
            self.vllm_python = Path(self.vllm_python).expanduser()
        if self.vllm_model is not None and self.vllm_base_url:
            raise StackError("give either a model folder to serve (vllm_model) or an existing server (vllm_base_url), not both")

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def llm_base_url(self) -> str:
        if self.vllm_base_url:
            return self.vllm_base_url.rstrip("/")
        return f"http://{self.host}:{self.vllm_port}/v1"

    @property
    def llm_model_name(self) -> str:
        if self.vllm_served_model:
            return self.vllm_served_model
        return self.vllm_model.name if self.vllm_model is not None else ""

    def to_json(self) -> dict:
        d = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


@dataclass
class Part:
    """One process the stack started."""

    name: str
    pid: int
    pgid: int
    create_time: float
    log: str
    cmd: list[str]
    log_offset: int = 0  # where this start's output begins in the (appended) log


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _port_in_use(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _restore_signals() -> None:
    # A process started from a background shell job inherits SIGINT ignored and a
    # Prefect worker then never stops on SIGTERM; give children the default dispositions.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _alive(part: Part) -> bool:
    import psutil

    try:
        p = psutil.Process(part.pid)
        # a recycled pid belongs to someone else: compare start times
        return abs(p.create_time() - part.create_time) < 1.0 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class Stack:
    def __init__(self, cfg: StackConfig | None = None, log: Callable[[str], None] = print):
        self.cfg = cfg or StackConfig()
        self.log = log
        self.root = self.cfg.root
        self.state_file = self.root / "stack.json"

    # ---- environment -------------------------------------------------------------
    def prefect_env(self) -> dict[str, str]:
        """Variables that point Prefect (CLI, worker, flow runs) at this stack."""
        cfg = self.cfg
        return {
            "PREFECT_HOME": str(self.root / "prefect"),
            "PREFECT_API_URL": cfg.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(self.root / "results"),
            "PREFECT_LOCAL_STORAGE_PATH": str(self.root / "results"),
            "PREFECT_SERVER_API_HOST": cfg.host,
            "PREFECT_SERVER_API_PORT": str(cfg.port),
            "PREFECT_UI_API_URL": cfg.api_url,
            "PREFECT_CLI_PROMPT": "false",
            # so `prefect deployment run --watch` shows the run's log lines (the reason of a failure)
            "PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED": "true",
            "PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED": "true",
        }

    def deploy_env(self) -> dict[str, str]:
        """The SEPT_* variables flows/prefect.yaml reads at deploy time and at pull time."""
        cfg = self.cfg
        store = cfg.store or (cfg.workdir / os.environ.get("SEPT_STORE", "neighbor-store")).resolve()
        # the default stack shares `sept generate`'s response cache; another stack keeps its own
        default_cache = sept_home() / "llm-cache" if self.root == sept_home() / "stack" else self.root / "llm-cache"
        cache = cfg.llm_cache or default_cache
        return {
            "SEPT_WORK_POOL": cfg.pool,
            "SEPT_WORKDIR": str(cfg.workdir),
            "SEPT_STORE": str(store),
            "SEPT_LLM_CACHE": str(cache),
            "SEPT_VLLM_BASE_URL": cfg.llm_base_url if (cfg.vllm_model or cfg.vllm_base_url) else "",
            "SEPT_VLLM_MODEL": cfg.llm_model_name,
            "SEPT_OPENAI_MODEL": cfg.openai_model,
            "SEPT_ANTHROPIC_MODEL": cfg.anthropic_model,
            "SEPT_CLAP_CHECKPOINT": str(cfg.clap_checkpoint or ""),
            "SEPT_CLAP_TOKENIZER": str(cfg.clap_tokenizer or ""),
            "SEPT_RUN_NOTE": cfg.note,
        }

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.prefect_env())
        env.update(self.deploy_env())
        env.update(self.cfg.extra_env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        # the stack's own parts find their state folder whatever their working directory
        env["SEPT_HOME"] = str(sept_home())
        return env

    # ---- state -------------------------------------------------------------------
    def _read_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as e:
            raise StackError(f"{self.state_file}: unreadable stack state ({e}); stop leftover processes by hand and delete it") from e

    def _write_state(self, state: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.state_file, state, indent=2)

    def parts(self) -> dict[str, Part]:
        return {name: Part(**p) for name, p in self._read_state().get("parts", {}).items()}

    def _save_part(self, part: Part) -> None:
        state = self._read_state()
        state.setdefault("parts", {})[part.name] = asdict(part)
        self._write_state(state)

    # ---- processes -----------------------------------------------------------------
    def _start(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Part:
        import psutil

        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        with open(log_path, "ab") as out:
            offset = out.tell()
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                cmd, cwd=cwd or self.cfg.workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_restore_signals,
            )
        part = Part(name=name, pid=proc.pid, pgid=proc.pid, create_time=psutil.Process(proc.pid).create_time(),
                    log=str(log_path), cmd=cmd, log_offset=offset)
        self._save_part(part)
        (self.root / "pids").mkdir(exist_ok=True)
        atomic_write(self.root / "pids" / f"{name}.pid", f"{proc.pid}\n")
        self._procs = getattr(self, "_procs", {})
        self._procs[name] = proc
        return part

    def _wait(self, what: str, ready: Callable[[], bool], part: Part | None, timeout: float | None = None) -> None:
        timeout = self.cfg.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if part is not None and not _alive(part):
                raise StackError(f"{what}: process {part.pid} exited before it was ready; last lines of {part.log}:\n"
                                 f"{_tail(Path(part.log))}")
            time.sleep(0.5)
        log = f"; last lines of {part.log}:\n{_tail(Path(part.log))}" if part else ""
        raise StackError(f"{what} not ready after {timeout:.0f} s{log}")

    def _prefect(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "prefect", *args]
        try:
            res = subprocess.run(cmd, cwd=self.root, env=self.env(), capture_output=True, text=True,
                                 timeout=timeout or self.cfg.timeout)
        except subprocess.TimeoutExpired as e:
            raise StackError(f"`prefect {' '.join(args)}` did not finish within {e.timeout:.0f} s") from e
        with open(self.root / "logs" / "cli.log", "a") as f:
            f.write(f"\n=== prefect {shlex.join(args)} -> {res.returncode}\n{res.stdout}\n{res.stderr}\n")
        return res

    # ---- parts -------------------------------------------------------------------------
    def _server_ok(self) -> bool:
        return _http_ok(f"{self.cfg.api_url}/health")

    def _vllm_ok(self) -> bool:
        return _http_ok(f"{self.cfg.llm_base_url}/models")

    def _up_server(self, parts: dict[str, Part]) -> None:
        part = parts.get("server")
        if part and _alive(part) and self._server_ok():
            return
        if _port_in_use(self.cfg.host, self.cfg.port):
            raise StackError(f"port {self.cfg.host}:{self.cfg.port} is taken by another process; choose another --port")
        (self.root / "prefect").mkdir(parents=True, exist_ok=True)
        (self.root / "results").mkdir(parents=True, exist_ok=True)
        self.log(f"starting Prefect server on {self.cfg.api_url} (log: {self.root / 'logs' / 'server.log'})")
        part = self._start("server", [sys.executable, "-m", "prefect", "server", "start",
                                      "--host", self.cfg.host, "--port", str(self.cfg.port)], self.env())
        self._wait("Prefect server", self._server_ok, part)

    def _up_vllm(self, parts: dict[str, Part]) -> None:
        cfg = self.cfg
        if cfg.vllm_model is None:
            if cfg.vllm_base_url and not self._vllm_ok():
                self.log(f"warning: no OpenAI-compatible server answers at {cfg.llm_base_url}; runs of "
                         f"generate-neighbors/vllm-local fail until one does")
            return
        part = parts.get("vllm")
        if part and _alive(part) and self._vllm_ok():
            return
        if not (cfg.vllm_model / "config.json").is_file():
            raise StackError(f"{cfg.vllm_model}: not a model folder (no config.json)")
        from sept.pipeline.llm.vllm_server import default_vllm_python, vllm_server_command

        python = Path(cfg.vllm_python or default_vllm_python())
        if not python.exists():
            raise StackError(f"{python}: no vLLM environment; run `make setup-vllm` (or set SEPT_VLLM_PYTHON)")
        if _port_in_use(cfg.host, cfg.vllm_port):
            raise StackError(f"port {cfg.host}:{cfg.vllm_port} is taken by another process; choose another --vllm-port")
        cmd, vllm_env = vllm_server_command(cfg.vllm_model, host=cfg.host, port=cfg.vllm_port,
                                            python=str(python), served_model_name=cfg.llm_model_name,
                                            scratch_dir=self.root / "vllm-scratch")
        env = {k: v for k, v in vllm_env.items() if not k.startswith(("PREFECT_", "SEPT_"))}
        self.log(f"starting vLLM server on {cfg.llm_base_url} (log: {self.root / 'logs' / 'vllm.log'})")
        part = self._start("vllm", cmd, env, cwd=self.root)
        self._wait("vLLM server", self._vllm_ok, part, timeout=max(cfg.timeout, 300))

    def _provision(self) -> None:
        """Work pool and the `llm-<backend>` global concurrency limits (idempotent)."""
        import anyio

        from prefect.settings import PREFECT_API_URL, temporary_settings

        async def go() -> None:
            from prefect.client.orchestration import get_client
            from prefect.client.schemas.actions import (
                GlobalConcurrencyLimitCreate,
                GlobalConcurrencyLimitUpdate,
                WorkPoolCreate,
            )
            from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
            from prefect.workers.process import ProcessWorker

            async with get_client() as client:
                try:
                    await client.read_work_pool(self.cfg.pool)
                except ObjectNotFound:
                    try:
                        await client.create_work_pool(WorkPoolCreate(
                            name=self.cfg.pool, type="process",
                            base_job_template=ProcessWorker.get_default_base_job_template()))
                    except ObjectAlreadyExists:
                        pass
                for backend in BACKENDS:
                    name = f"llm-{backend}"
                    try:
                        gcl = await client.read_global_concurrency_limit_by_name(name)
                        if gcl.limit != self.cfg.llm_limit:
                            await client.update_global_concurrency_limit(
                                name, GlobalConcurrencyLimitUpdate(limit=self.cfg.llm_limit))
                    except ObjectNotFound:
                        try:
                            await client.create_global_concurrency_limit(
                                GlobalConcurrencyLimitCreate(name=name, limit=self.cfg.llm_limit))
                        except ObjectAlreadyExists:
                            pass

        # a new server answers /health a moment before its database is ready: retry a while
        deadline = time.monotonic() + min(self.cfg.timeout, 60)
        while True:
            try:
                with temporary_settings(updates={PREFECT_API_URL: self.cfg.api_url}):
                    anyio.run(go)
                return
            except Exception as e:
                if time.monotonic() > deadline:
                    raise StackError(f"could not create the work pool and concurrency limits on "
                                     f"{self.cfg.api_url}: {type(e).__name__}: {e}") from e
                time.sleep(1.0)

    def _deploy_fingerprint(self) -> str:
        h = hashlib.sha256(PREFECT_FILE.read_bytes())
        h.update(json.dumps(self.deploy_env(), sort_keys=True).encode())
        for path in FLOW_FILES:
            h.update(path.read_bytes())
        return h.hexdigest()[:16]

    def _deploy(self, force: bool = False) -> None:
        fp = self._deploy_fingerprint()
        if not force and self._read_state().get("deployed") == fp:
            return
        self.log("deploying flows/prefect.yaml")
        # deployed from a copy in the state folder, prefect's working directory: whatever
        # `prefect deploy` writes lands there, not in the installed package
        atomic_write(self.root / "prefect.yaml", PREFECT_FILE.read_bytes())
        res = self._prefect("--no-prompt", "deploy", "--all", "--prefect-file", "prefect.yaml")
        if res.returncode != 0:
            raise StackError(f"prefect deploy failed (exit {res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        state = self._read_state()
        state["deployed"] = fp
        self._write_state(state)

    def _worker_ok(self, part: Part) -> bool:
        with open(part.log, "rb") as f:
            f.seek(part.log_offset)
            return b"started!" in f.read()

    def _up_worker(self, parts: dict[str, Part]) -> None:
        part = parts.get("worker")
        if part and _alive(part):
            return
        self.log(f"starting worker on pool {self.cfg.pool!r} (log: {self.root / 'logs' / 'worker.log'})")
        part = self._start("worker", [sys.executable, "-m", "prefect", "worker", "start", "--pool", self.cfg.pool,
                                      "--type", "process", "--name", f"sept-{self.cfg.port}"], self.env())
        self._wait("Prefect worker", lambda: self._worker_ok(part), part)

    # ---- public ------------------------------------------------------------------------
    def up(self, redeploy: bool = False) -> dict:
        """Bring every part up (or leave it be when healthy). Returns `status()`."""
        state = self._read_state()
        old = state.get("config")
        if old and self.parts() and any(_alive(p) for p in self.parts().values()):
            for key in ("port", "host", "pool", "vllm_port", "vllm_model", "vllm_base_url"):
                if old.get(key) != self.cfg.to_json().get(key):
                    raise StackError(f"the stack in {self.root} runs with {key}={old.get(key)!r}, not "
                                     f"{self.cfg.to_json().get(key)!r}; run `sept stack down` first")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        state = self._read_state()
        state["config"] = self.cfg.to_json()
        self._write_state(state)
        parts = self.parts()
        before = {name: p.pid for name, p in parts.items() if _alive(p)}
        try:
            self._up_server(parts)
            self._up_vllm(parts)
            self._provision()
            self._deploy(force=redeploy)
            self._up_worker(parts)
        except BaseException:
            # a half-up stack helps nobody: stop what this call started, keep what was running
            started = [p for name, p in self.parts().items() if before.get(name) != p.pid]
            self._stop(started)
            raise
        self._write_env_file()
        return self.status()

    def _write_env_file(self) -> None:
        lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(self.prefect_env().items())
                 if k in ("PREFECT_HOME", "PREFECT_API_URL", "PREFECT_SERVER_ANALYTICS_ENABLED",
                          "PREFECT_RESULTS_LOCAL_STORAGE_PATH", "PREFECT_LOCAL_STORAGE_PATH")]
        atomic_write(self.root / "env.sh", "# source this file to point the prefect CLI at the sept stack\n"
                     + "\n".join(lines) + "\n")

    def status(self) -> dict:
        parts = self.parts()
        out: dict = {"root": str(self.root), "api_url": self.cfg.api_url, "parts": {}}
        cfg = self._read_state().get("config") or {}
        api_url = f"http://{cfg.get('host', self.cfg.host)}:{cfg.get('port', self.cfg.port)}/api"
        out["api_url"] = api_url
        for name, part in parts.items():
            alive = _alive(part)
            healthy = alive
            if name == "server":
                healthy = alive and _http_ok(f"{api_url}/health")
            elif name == "vllm":
                base = f"http://{cfg.get('host', self.cfg.host)}:{cfg.get('vllm_port', self.cfg.vllm_port)}/v1"
                healthy = alive and _http_ok(f"{base}/models")
            out["parts"][name] = {"pid": part.pid, "alive": alive, "healthy": healthy, "log": part.log}
        out["up"] = bool(parts) and all(p["healthy"] for p in out["parts"].values())
        return out

    def down(self, timeout: float = 20.0) -> list[str]:
        """Stop what this stack started (each process group and any descendant that left it).
        Returns the names of the parts that were stopped."""
        stopped = self._stop(list(self.parts().values()), timeout)
        state = self._read_state()
        state.pop("parts", None)
        state.pop("deployed", None)
        if state:
            self._write_state(state)
        for pid_file in (self.root / "pids").glob("*.pid") if (self.root / "pids").exists() else []:
            pid_file.unlink()
        return stopped

    def _stop(self, parts: list[Part], timeout: float = 20.0) -> list[str]:
        import psutil

        stopped = []
        # worker first so it does not report the server gone; vLLM and server after
        order = sorted(parts, key=lambda p: {"worker": 0, "vllm": 1, "server": 2}.get(p.name, 3))
        for part in order:
            if not _alive(part):
                continue
            try:
                root = psutil.Process(part.pid)
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                procs = []
            groups = {part.pgid}
            for p in procs:
                try:
                    groups.add(os.getpgid(p.pid))
                except OSError:
                    pass
            for g in groups:
                try:
                    os.killpg(g, signal.SIGTERM)
                except OSError:
                    pass
            _, left = psutil.wait_procs(procs, timeout=timeout)
            for p in left:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            for g in groups:
                try:
                    os.killpg(g, signal.SIGKILL)
                except OSError:
                    pass
            psutil.wait_procs(left, timeout=5)
            proc = getattr(self, "_procs", {}).get(part.name)
            if proc is not None:
                proc.poll()
            stopped.append(part.name)
            self.log(f"stopped {part.name} (pid {part.pid})")
            state = self._read_state()
            state.get("parts", {}).pop(part.name, None)
            self._write_state(state)
            (self.root / "pids" / f"{part.name}.pid").unlink(missing_ok=True)
        return stopped
