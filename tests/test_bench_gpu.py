"""benchmarks/gpu.py off a GPU: its clear no-CUDA exit, and its setup and figures run on the CPU."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def bench_module():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_so_and_exits_zero(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}        # no device, even on a GPU machine
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--workdir", str(tmp_path)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "no CUDA device" in result.stdout and "nothing measured" in result.stdout
    assert list(tmp_path.iterdir()) == []                     # it stopped before building anything


def test_figures_on_the_cpu_through_the_trainer(backbone, clap_checkpoint, tmp_path, capsys):
    gpu = bench_module()
    args = gpu.parse_args(["--device", "cpu", "--tiny"])
    assert (args.classes, args.shots, args.neighbors) == (4, 2, 2)
    # the trainer autocasts on CUDA only; CPU bf16 autocast runs the same dtype path through the prompts
    contexts = {"fp32": lambda: torch.autocast("cpu", enabled=False),
                "bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}
    f = gpu.measure(backbone, clap_checkpoint, tmp_path, args.classes, args.shots, args.neighbors, args.repeats,
                    contexts=contexts)
    fp32, bf16 = f["epoch"]["fp32"], f["epoch"]["bf16"]
    assert fp32["steps"] == 8 and fp32["K"] == 8 and fp32["epoch_s"] > 0
    assert fp32["margins"] == "computed" and bf16["margins"] == "store"      # attached by the first run
    assert fp32["cache"]["misses"] == 12 and (bf16["cache"]["hits"], bf16["cache"]["misses"]) == (12, 0)
    # off CUDA a bf16 config trains in fp32: the same epoch, the same loss
    assert bf16["loss"] == fp32["loss"] and fp32["peak_bytes"] is None
    t = f["text_encoder"]
    assert t["prompts"] == 4 + 8
    assert all(t[p]["forward_per_s"] > 0 and t[p]["train_per_s"] > 0 for p in ("fp32", "bf16"))
    assert 1e-4 < t["max_abs_diff"] < 0.1                    # bf16 rounding, not a different computation
    gpu.report(f)
    out = capsys.readouterr().out
    assert "prompts/s forward+backward" in out and "max |embedding difference|" in out
