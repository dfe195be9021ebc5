"""Evaluation figures: accuracy, macro-F1 (overall and per class), Base/New/H, seed summaries.

Values are fractions in [0, 1]; reports print percentages.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    """[C, C] counts, rows = true class, columns = predicted class."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return m


def classification_metrics(y_true, y_pred, classes: list[str]) -> dict[str, Any]:
    """accuracy, macro_f1 (over classes with support or predictions), per-class precision/recall/f1/support."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size == 0:
        raise ValueError("no samples to evaluate")
    m = confusion(y_true, y_pred, len(classes))
    tp = np.diag(m).astype(float)
    support, predicted = m.sum(1).astype(float), m.sum(0).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    # like sklearn's macro average over labels present in y_true or y_pred
    present = (support > 0) | (predicted > 0)
    return {
        "n": int(y_true.size),
        "accuracy": float((y_true == y_pred).mean()),
        "macro_f1": float(f1[present].mean()),
        "per_class": {
            c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                "support": int(support[i])}
            for i, c in enumerate(classes)
        },
    }


def harmonic_mean(base: float, new: float) -> float:
    """H = 2BN / (B + N), 0 when both are 0."""
    return 0.0 if base + new == 0 else 2 * base * new / (base + new)


def headline(results: dict[str, Any]) -> dict[str, float]:
    """The scalar figures of one run's results: accuracy/macro-F1 per split, H, per-target accuracy."""
    out: dict[str, float] = {}
    for split, m in results.get("metrics", {}).items():
        if isinstance(m, dict):
            out[f"{split}/accuracy"] = m["accuracy"]
            out[f"{split}/macro_f1"] = m["macro_f1"]
        else:
            out[split] = float(m)
    for target, m in results.get("transfer", {}).items():
        out[f"transfer/{target}/accuracy"] = m["accuracy"]
    return out


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean ± sample std (ddof=1; 0 for one run) of every headline figure over runs (seeds)."""
    figures: dict[str, list[float]] = {}
    for run in runs:
        for k, v in headline(run).items():
            figures.setdefault(k, []).append(v)
    out = {}
    for k, values in figures.items():
        arr = np.asarray(values, dtype=float)
        std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
        out[k] = {"mean": float(arr.mean()), "std": std, "n": int(arr.size), "values": values}
    return out


def format_summary(summary: dict[str, dict[str, Any]]) -> list[str]:
    return [f"{k}: {100 * v['mean']:.2f} ± {100 * v['std']:.2f} (n={v['n']})" for k, v in summary.items()
            if not math.isnan(v["mean"])]
