"""plots/*.png of a bench table: the figures per dataset and row, and SEPT's gain per method.

base2new: base_new_h.png (Base, New, H per dataset and the average) and sept_gain.png (each arm
minus the same method's "off" row, New and H); cross: cross_accuracy.png and sept_gain.png
(accuracy). matplotlib runs headless (Agg); each PNG is written atomically.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from sept.atomic import atomic_write
from sept.sweeps.aggregate import Table


def write_plots(table: Table, folder: Path) -> list[Path]:
    """plots/*.png: figures per dataset and row, and SEPT's gain per method (arm minus off)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rows = [r for r in table.rows if r.cells]
    if not rows:
        return written

    def save(fig, name: str) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        atomic_write(folder / name, buf.getvalue())
        written.append(folder / name)

    def bars(ax, groups: list[str], series: list[tuple[str, list[float | None]]], ylabel: str) -> None:
        x = np.arange(len(groups))
        width = 0.8 / max(len(series), 1)
        for i, (label, values) in enumerate(series):
            ax.bar(x + (i - (len(series) - 1) / 2) * width,
                   [np.nan if v is None else v for v in values], width, label=label)
        ax.set_xticks(x, groups, rotation=30, ha="right")
        ax.set_ylabel(ylabel)
        ax.axhline(0, color="black", linewidth=0.6)

    if table.protocol == "base2new":
        groups = table.columns + ["Average"]
        fig, axes = plt.subplots(3, 1, figsize=(max(6, 1.1 * len(groups) * max(1, len(rows)) / 2), 9), sharex=True,
                                 layout="constrained")
        for ax, key, title in zip(axes, ("base", "new", "H"), ("Base", "New", "H")):
            series = [(r.label, [getattr(r.cells[d], key) if d in r.cells else None for d in table.columns]
                       + [r.average.get(key)]) for r in rows]
            bars(ax, groups, series, f"{title} (%)")
            ax.set_title(title)
        axes[0].legend(fontsize=7, ncol=2)
        save(fig, "base_new_h.png")
        keys, titles = ("new", "H"), ("New gain", "H gain")
    else:
        groups = table.columns + ["Average"]
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups)), 4), layout="constrained")
        series = [(r.label, [r.cells[d].accuracy if d in r.cells else None for d in table.columns]
                   + [r.average.get("accuracy")]) for r in rows]
        bars(ax, groups, series, "accuracy (%)")
        ax.set_title(f"trained on {table.columns[0]}")
        ax.legend(fontsize=7)
        save(fig, "cross_accuracy.png")
        keys, titles = ("accuracy",), ("Accuracy gain",)

    # SEPT's gain: each arm minus the same method's "off" row
    by = {(r.method, r.arm): r for r in rows}
    pairs = [(by[(m, a)], by[(m, "off")]) for (m, a) in by if a != "off" and (m, "off") in by]
    if pairs:
        fig, axes = plt.subplots(len(keys), 1, figsize=(max(6, 1.1 * len(groups)), 3.5 * len(keys)), squeeze=False,
                                 layout="constrained")
        for ax, key, title in zip(axes[:, 0], keys, titles):
            series = []
            for arm_row, off in pairs:
                values: list[float | None] = []
                for d in table.columns:
                    a, o = arm_row.cells.get(d), off.cells.get(d)
                    values.append(getattr(a, key) - getattr(o, key) if a and o else None)
                aa, oa = arm_row.average.get(key), off.average.get(key)
                values.append(aa - oa if aa is not None and oa is not None else None)
                series.append((f"{arm_row.label} − {off.label}", values))
            bars(ax, groups, series, f"{title} (points)")
            ax.set_title(title)
        axes[0, 0].legend(fontsize=7)
        save(fig, "sept_gain.png")
    return written
