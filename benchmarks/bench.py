"""Sweep benchmarks: `sept bench` against the same runs called in a plain loop, side by side.

S1  overhead: 8 tiny runs (2 datasets x coop, palm x SEPT off, on; 1 epoch, 1 shot) through
    `sept bench base2new` (in-process, Prefect flow train-sweep on a real local Prefect server,
    threads runner) against `sept.trainer.train.train` on the same configs in a plain loop in one
    process; goal <= 1.15x.
S2  Ray: the same 8 runs through `sept bench --task-runner ray` on a local 2-worker Ray cluster
    against the plain loop: the ratio (whole command, and the span from the first run's start to
    the last run's end), and the CLAP loads per worker process (goal: one per worker).

Random-weight LAION-CLAP (HTSAT-tiny + RoBERTa, the real classes), mini copies of Beijing-Opera
and CREMA-D (real class lists), synthesized clips. Before timing, the main process loads CLAP
once, caches every clip's audio embedding and attaches the SEPT margins, so both S1 legs find
the same warm caches, and trains one untimed run per method and one untimed sweep (the first
flow of a process pays one-time imports); the timed legs then alternate
(loop, sept bench, loop, sept bench) so that a change in the machine's load hits both. Ray
workers load their own CLAP (counted in S2, whose ratio is against the best loop). The sweep's figures
include planning, `sept data check`, Prefect's task runs and writing runs.csv, tables and plots.

    python benchmarks/bench.py [--methods coop,palm] [--epochs 1] [--repeats 2] [--threads 1] [--workdir DIR]

Threads: torch runs with one thread here by default (Ray workers get one too, OMP_NUM_THREADS=1).
With torch's default of 2 on a 2-core machine shared with other jobs, the loop in the main
thread ran 3-5x slower than the same runs in a Prefect worker thread (36.6 s and 54.1 s vs
11.6 s and 10.8 s for these 8 runs); with one thread both took 8.6 s. The main thread's 2-thread
OpenMP team waits on descheduled threads, and a worker thread does not get that team, so the
default setting would credit the sweep with a speed-up that is not its doing.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
ROOT = Path(__file__).resolve().parents[1]
# sept comes from the installed package; the tests' fixtures build the data
sys.path.insert(0, str(ROOT / "tests"))

DATASETS = ["Beijing-Opera", "CREMA-D"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_prefect_server(home: Path) -> tuple[subprocess.Popen, str]:
    """A real Prefect server on loopback (Ray tasks cannot use the ephemeral one)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    log = open(home / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise SystemExit(f"the Prefect server did not start; see {home / 'server.log'}")


def prepare(work: Path):
    """Datasets, CLAP checkpoint and tokenizer, a store with base-only versions (tag base-v1)."""
    from fixtures_audio import write_benchmark_root
    from sept.clap.tiny import write_random_checkpoint, write_tokenizer
    from sept.neighbor_store import NeighborRecord, Store
    from sept.splits import resolve_split

    root = write_benchmark_root(work / "data", DATASETS, clips_per_class=1)
    tokenizer = write_tokenizer(work / "tokenizer")
    os.environ["SEPT_ROBERTA_TOKENIZER"] = str(tokenizer)
    checkpoint = write_random_checkpoint(work / "clap-random.pt", seed=0)
    store = Store(work / "store")
    for name in DATASETS:
        with open(root / name / "train.csv", newline="") as f:
            classes = sorted({row["classname"] for row in csv.DictReader(f)})
        base = resolve_split(classes).base
        records = [NeighborRecord(**{"class": c, "text": t.format(c)}) for c in base
                   for t in ("a loud {}", "a distant {}", "{} in a small room")]
        store.write_version(name, base, records, params={"backend": "human", "visible_classes": base}, tag="base-v1")
    return root, checkpoint, work / "store"


def warm(plan) -> None:
    """Load CLAP in this process, cache every clip's embedding and attach the margins."""
    from sept.clap import get_backbone
    from sept.clap.margins import compute_margins
    from sept.neighbor_store import Store
    from sept.prompts import load_templates
    from sept.trainer.audio_cache import AudioCache
    from sept.trainer.config import config_from_dict
    from sept.trainer.data import load_dataset

    cfg = config_from_dict(plan.runs[0].config)
    backbone = get_backbone(cfg.checkpoint, amodel=cfg.amodel, device="cpu")
    cache = AudioCache(cfg.cache_dir, backbone, cfg.crop)
    for name in plan.datasets:
        for fold in {r.fold for r in plan.runs if r.dataset == name}:
            ds = load_dataset(Path(plan.spec.datasets_root) / name, fold)
            cache.embed([s.path for s in ds.train + ds.test])
    store = Store(plan.spec.store)
    for ref in set(plan.neighbors.values()):
        version = store.read(ref)
        if store.read_margins(version.ref, backbone.fingerprint) is None:
            values = compute_margins(backbone, version.classes, version.neighbors, load_templates(cfg.margin_templates))
            store.attach_margins(version.ref, backbone.fingerprint, values, version.neighbor_ids, meta={})


def warm_runs(plan, out: Path) -> None:
    """One untimed run per method, so neither timed leg pays first-call costs (allocator, kernels)."""
    from sept.trainer.config import config_from_dict
    from sept.trainer.train import train

    seen = set()
    for run in plan.runs:
        if run.method not in seen:
            seen.add(run.method)
            train(config_from_dict(run.config).replace(out_dir=str(out)))


def plain_loop(plan, out: Path) -> float:
    from sept.trainer.config import config_from_dict
    from sept.trainer.train import train

    t0 = time.perf_counter()
    for run in plan.runs:
        train(config_from_dict(run.config).replace(out_dir=str(out)))
    return time.perf_counter() - t0


def sept_bench(args: list[str]) -> float:
    from sept.cli import app

    t0 = time.perf_counter()
    try:
        app(["bench", "base2new", *args], standalone_mode=False)
    except SystemExit as e:
        if e.code:
            raise
    return time.perf_counter() - t0


def run_span(out: Path) -> tuple[float, dict[str, int], int]:
    rows = list(csv.DictReader((out / "runs.csv").open()))
    started = min(float(r["started"]) for r in rows)
    ended = max(float(r["ended"]) for r in rows)
    loads: dict[str, int] = {}
    for r in rows:
        loads[r["worker"]] = max(loads.get(r["worker"], 0), int(r["clap_loads"]))
    return ended - started, loads, sum(r["status"] == "trained" for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=str(ROOT / ".sept" / "bench-sweep"))
    ap.add_argument("--methods", default="coop,palm")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="alternating loop / sept bench pairs")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads in this process (0: torch's default); see the note below")
    ap.add_argument("--skip-ray", action="store_true")
    a = ap.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)

    work = Path(a.workdir)
    shutil.rmtree(work, ignore_errors=True)
    (work / "prefect").mkdir(parents=True)
    server, api_url = start_prefect_server(work / "prefect")
    os.environ.update(PREFECT_API_URL=api_url, PREFECT_HOME=str(work / "prefect"),
                      PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(work / "prefect" / "results"),
                      PREFECT_LOGGING_LEVEL="WARNING")
    try:
        root, checkpoint, store = prepare(work)
        from sept.sweeps import plan_bench, spec_from

        options = [f"epochs={a.epochs}", "shots=1", "n_ctx=4", "batch_size=4", "device=cpu",
                   f"cache_dir={work / 'audio-cache'}"]
        common = ["--datasets-root", str(root), "--checkpoint", str(checkpoint), "--datasets", ",".join(DATASETS),
                  "--methods", a.methods, "--sept", "off,on", "--neighbors", "base-v1", "--seeds", "1",
                  "--folds", "1", "--store", str(store), "-q"]
        plan = plan_bench(spec_from(dict(datasets_root=str(root), checkpoint=str(checkpoint), datasets=DATASETS,
                                         methods=a.methods, sept="off,on", neighbors="base-v1", seeds="1",
                                         folds="1", store=str(store), out=str(work / "bench-threads"),
                                         options=options)))
        import torch

        print(f"{len(plan.runs)} runs: {', '.join(DATASETS)} x {a.methods} x SEPT off,on; epochs {a.epochs}, 1 shot; "
              f"torch threads {torch.get_num_threads()}", flush=True)
        t0 = time.perf_counter()
        warm(plan)
        print(f"warm-up (CLAP load, audio cache, margins): {time.perf_counter() - t0:.1f} s", flush=True)

        warm_runs(plan, work / "warm")
        # and one untimed sweep: the first flow in a process pays one-time imports and client set-up
        sept_bench([*common, "--out", str(work / "bench-warm"), *options])
        print(f"warm-up (+ one untimed run per method, one untimed sweep): {time.perf_counter() - t0:.1f} s",
              flush=True)

        # legs alternate (loop, bench, loop, bench, ...) so a change in machine load hits both
        loops, benches = [], []
        for i in range(a.repeats):
            loops.append(plain_loop(plan, work / f"loop-{i}"))
            print(f"[{i}] plain loop, one process:             {loops[-1]:7.1f} s", flush=True)
            benches.append(sept_bench([*common, "--out", str(work / f"bench-threads-{i}"), *options]))
            span, loads, trained = run_span(work / f"bench-threads-{i}")
            print(f"[{i}] sept bench, Prefect, threads:        {benches[-1]:7.1f} s  ({trained} runs trained; "
                  f"first start to last end {span:.1f} s)  ratio {benches[-1] / loops[-1]:.3f}x", flush=True)
        loop = min(loops)
        print(f"S1 overhead ratio (sum sept bench / sum loop): {sum(benches) / sum(loops):7.3f}x; "
              f"best of each: {min(benches) / loop:.3f}x   (goal <= 1.15x)", flush=True)
        if not a.skip_ray:
            ray = sept_bench([*common, "--out", str(work / "bench-ray"), "--task-runner", "ray", "--ray-workers", "2",
                              *options])
            span, loads, trained = run_span(work / "bench-ray")
            print(f"sept bench, Prefect, Ray (2 workers):    {ray:7.1f} s  ({trained} runs trained; "
                  f"first start to last end {span:.1f} s)", flush=True)
            print(f"S2 Ray ratio (sept bench ray / best loop): {ray / loop:7.3f}x   (runs' span / loop: "
                  f"{span / loop:.3f}x)", flush=True)
            print(f"S2 CLAP loads per Ray worker:            {json.dumps(loads)}   (goal: 1 each)", flush=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
