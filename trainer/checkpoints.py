"""Run checkpoints: <run_dir>/checkpoints/epoch_<e>.pt, with the RNG state to resume exactly.

A checkpoint is a dict of tensors and plain values only:
  epoch, config (TrainConfig.to_dict()), learner (state dict), audio_prompt (state dict or None),
  optimizer, scheduler (state dicts or None), history (per-epoch losses),
  rng {"torch": ByteTensor, "numpy": {name, keys, pos, has_gauss, cached_gaussian}, "python": tuple}
so `load_checkpoint` reads it with `torch.load(weights_only=True)`: a file from elsewhere cannot run
code when it is resumed or evaluated. Files are written through `sept.atomic` (whole or absent).
"""
from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sept.atomic import atomic_save
from sept.trainer.errors import TrainError

# Fields that may change between an interrupted run and its resumption (trust_checkpoint only
# decides whether the CLAP file may be unpickled, not what the run computes).
RESUMABLE_CHANGES = {"epochs", "eval_every", "targets", "device", "out_dir", "cache_dir", "trust_checkpoint"}


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: Path, epoch: int) -> Path:
    return checkpoint_dir(run_dir) / f"epoch_{epoch}.pt"


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(checkpoint_dir(run_dir).glob("epoch_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    return found[-1] if found else None


def save_checkpoint(run_dir: Path, epoch: int, state: dict[str, Any]) -> Path:
    """Write epoch `epoch`'s checkpoint: `state` (config, learner, audio_prompt, optimizer,
    scheduler, history) plus the epoch and this process's RNG state, now."""
    path = checkpoint_path(run_dir, epoch)
    state = {"epoch": epoch, **state, "rng": rng_state()}
    atomic_save(path, lambda tmp: torch.save(state, tmp))
    return path


def rng_state() -> dict[str, Any]:
    """torch's, numpy's and Python's global RNG state, in types `weights_only` loading accepts."""
    # numpy's state tuple holds an ndarray, which only full pickle can load: store it as a tensor
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy = {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
             "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    return {"torch": torch.get_rng_state(), "numpy": numpy, "python": random.getstate()}


def restore_rng(state: dict[str, Any]) -> None:
    """Set the global RNGs to a checkpoint's `state["rng"]`."""
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    n = rng["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(rng["python"])


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A run checkpoint: tensors and plain types only, loaded without running pickle code.

    `weights_only=True` refuses any other object (a class, a function, an ndarray), so a
    checkpoint from elsewhere cannot execute code when it is resumed or evaluated."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise TrainError(f"{path}: refused, the checkpoint holds objects other than tensors and plain "
                         f"values, which sept never saves ({str(e).splitlines()[0]})") from None
    except (RuntimeError, EOFError) as e:
        raise TrainError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or "learner" not in state:
        raise TrainError(f"{path}: not a sept run checkpoint (no 'learner' state)")
    return state


def check_resumable(saved: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    """Refuse to resume from `path` when its config `saved` differs from the run's `now` in a field
    outside RESUMABLE_CHANGES."""
    diff = [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in now
            if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]]
    if diff:
        raise TrainError(f"cannot resume from {path}: the configuration changed ({'; '.join(diff)})")
