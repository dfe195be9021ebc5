"""One run of a bench as it stands: `RunRecord` (a row of runs.csv), read from the run's folder.

A run folder holds the trainer's results.json (with the config it ran) and the sweep's
sweep.json (where and when it ran: worker, start, end, CLAP loads of that worker). Figures are
fractions, as in results.json; the tables turn them into percent.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sept.atomic import atomic_write_json
from sept.trainer.config import ConfigError, fewshot_sha256
from sept.trainer.metrics import harmonic_mean

if TYPE_CHECKING:
    from sept.sweeps.plan import PlannedRun

RESULTS = "results.json"
SWEEP_INFO = "sweep.json"


@dataclass
class RunRecord:
    """One run's row of runs.csv: where it stands and its figures (fractions, as in results.json)."""

    name: str
    dataset: str
    fold: int | None
    method: str
    arm: str
    seed: int
    config_hash: str
    status: str                        # trained | skipped | failed | pending
    run_dir: str
    base: float | None = None
    new: float | None = None
    H: float | None = None
    accuracy: float | None = None      # cross: the source's own test split
    transfer: dict[str, float] = field(default_factory=dict)
    seconds: float | None = None
    started: float | None = None
    ended: float | None = None
    worker: str = ""
    clap_loads: int | None = None
    error: str = ""
    fewshot_sha256: str = ""           # sha256 of the run's few-shot file (`sept bench --fewshot-dir`), else ""


def load_record(run: PlannedRun, status: str | None = None, error: str = "") -> RunRecord:
    """The run's record from its folder (results.json, sweep.json); figures None when absent."""
    rec = RunRecord(run.name, run.dataset, run.fold, run.method, run.arm, run.seed, run.config_hash,
                    status or ("skipped" if run.done() else "pending"), str(run.run_dir), error=error)
    if run.config.get("fewshot_file"):
        try:
            rec.fewshot_sha256 = fewshot_sha256(run.config["fewshot_file"])
        except ConfigError:
            pass        # removed since the plan read it: the row says nothing rather than fail the table
    if status != "failed" and run.done():
        results = json.loads((run.run_dir / RESULTS).read_text(encoding="utf-8"))
        metrics = results.get("metrics", {})
        if "base" in metrics:
            rec.base, rec.new = metrics["base"]["accuracy"], metrics["new"]["accuracy"]
            rec.H = metrics.get("H", harmonic_mean(rec.base, rec.new))
        if "all" in metrics:
            rec.accuracy = metrics["all"]["accuracy"]
        rec.transfer = {k: v["accuracy"] for k, v in results.get("transfer", {}).items()}
        rec.seconds = results.get("seconds")
    info_path = run.run_dir / SWEEP_INFO
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
            # a leftover of another config of the same run name says nothing about this run
            if info.get("config_hash") == run.config_hash:
                rec.started, rec.ended = info.get("started"), info.get("ended")
                rec.worker, rec.clap_loads = info.get("worker", ""), info.get("clap_loads")
        except ValueError:
            pass
    return rec


def write_json(path: Path, data: Any) -> None:
    """A bench file (summary.json, sweep.json), written atomically."""
    atomic_write_json(path, data)


def write_sweep_info(run_dir: Path, info: dict[str, Any]) -> None:
    """sweep.json of a run: config_hash, started, ended, worker, clap_loads, resumed."""
    write_json(Path(run_dir) / SWEEP_INFO, info)
