"""Prefect task of the train-sweep flow: one training run, in-process, on the worker's one CLAP.

In an importable module (not the flow file, which Prefect loads by path) so that Ray workers
unpickle the task by module name. The backbone comes from `sept.clap.get_backbone` through the
trainer, cached per process: a thread pool or a Ray worker loads it once however many runs it
takes.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from prefect import task
from prefect.cache_policies import NO_CACHE

from sept.errors import SeptError


class SweepRunError(SeptError, RuntimeError):
    """A planned run that cannot be trained as planned (its config no longer has its hash)."""


@dataclass
class SweepProgress:
    bar: Any          # a running rich.progress.Progress
    runs: Any         # its task id of the bar over runs


# The display of the sweep that the current context drives (`sept bench`), else None. A context
# variable, not a module global: Prefect's thread runner copies the submitting context into each
# task's thread, so the runs of that sweep (and only they) add their epoch bars beneath its bar
# over runs; a Ray worker, another process, sees None and shows no bars.
_DISPLAY: ContextVar["SweepProgress | None"] = ContextVar("sept_sweep_display", default=None)


@contextmanager
def sweep_display(display: "SweepProgress | None") -> Iterator[None]:
    """Within the block, runs of the sweep started here draw beneath `display`."""
    token = _DISPLAY.set(display)
    try:
        yield
    finally:
        _DISPLAY.reset(token)


def current_display() -> "SweepProgress | None":
    return _DISPLAY.get()

# Threads runner on a multi-GPU machine: each concurrent run takes the least busy GPU.
_GPU_LOCK = threading.Lock()
_GPU_BUSY: dict[int, int] = {}


def _take_gpu(device: str) -> int | None:
    if device != "auto":
        return None
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count <= 1:
        return None      # CPU, one GPU, or a Ray task that sees only its own GPU
    with _GPU_LOCK:
        index = min(range(count), key=lambda i: _GPU_BUSY.get(i, 0))
        _GPU_BUSY[index] = _GPU_BUSY.get(index, 0) + 1
    return index


def _give_gpu(index: int | None) -> None:
    if index is not None:
        with _GPU_LOCK:
            _GPU_BUSY[index] -= 1


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@task(name="train-run", cache_policy=NO_CACHE, persist_result=False, task_run_name="{name}")
def train_run_task(name: str, config: dict[str, Any], config_hash: str) -> dict[str, Any]:
    """Train and evaluate one run of the sweep (sept.trainer.train.train); returns where and when it
    ran. A run folder holding checkpoints of the same config continues from the latest one."""
    from sept.clap import factory
    from sept.sweeps.records import write_sweep_info
    from sept.trainer.config import config_from_dict, config_hash as hash_of
    from sept.trainer.train import latest_checkpoint, train

    cfg = config_from_dict(config)
    if hash_of(cfg) != config_hash:
        raise SweepRunError(f"run {name}: its config does not match its hash {config_hash} (planned by another version?)")
    run_dir = Path(cfg.out_dir) / cfg.run_name
    resume = False
    if latest_checkpoint(run_dir) is not None and (run_dir / "config.json").is_file():
        import json

        try:
            resume = hash_of(json.loads((run_dir / "config.json").read_text(encoding="utf-8"))) == config_hash
        except (OSError, ValueError):    # an unreadable leftover is trained anew
            resume = False
    gpu = _take_gpu(cfg.device)
    started = time.time()
    try:
        if gpu is not None:
            cfg = cfg.replace(device=f"cuda:{gpu}")
        display = current_display()
        train(cfg, resume=resume, show_progress=display.bar if display is not None else False)
    finally:
        _give_gpu(gpu)
    info = {"config_hash": config_hash, "started": started, "ended": time.time(), "worker": worker_id(),
            "clap_loads": factory.load_count, "resumed": resume}
    write_sweep_info(run_dir, info)
    return {"name": name, **info}
