"""Plots of one version, for `sept store plot` and the review page: the same PNGs in both.

- `scores-<key>.png`: per score key, one histogram per neighbor kind, accepted vs rejected;
- `counts-per-class.png`: accepted and rejected per class, in the version's class order;
- `rejection-reasons.png`: rejected candidates per reason (`clap_confuser:dog` counts as
  `clap_confuser`, so the bars stay few).

A version without scores (a human import) gets the last two only.
"""
from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path

from sept.atomic import atomic_write
from sept.neighbor_store.version import Version

COUNTS = "counts-per-class"
REASONS = "rejection-reasons"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _score_name(key: str) -> str:
    return "scores-" + (_SAFE.sub("_", key).strip("._") or "score")


def _score_plots(v: Version) -> dict[str, str]:
    """Plot name -> score key, for every score key some record of `v` carries."""
    keys = sorted({k for r in (*v.neighbors, *v.rejected) for k in r.scores})
    out: dict[str, str] = {}
    for k in keys:
        name = _score_name(k)
        while name in out:  # two keys that sanitize alike still get a plot each
            name += "_"
        out[name] = k
    return out


def plot_names(v: Version) -> list[str]:
    return [*_score_plots(v), COUNTS, REASONS]


def reason_group(reason: str | None) -> str:
    return (reason or "review").split(":", 1)[0]


def _figure_scores(v: Version, key: str):
    from matplotlib.figure import Figure

    records = [r for r in (*v.neighbors, *v.rejected) if key in r.scores]
    kinds = sorted({r.kind for r in records})
    cols = min(3, len(kinds))
    rows = -(-len(kinds) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    values = [r.scores[key] for r in records]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    bins = [lo + (hi - lo) * i / 20 for i in range(21)]
    for ax, kind in zip(axes.flat, kinds):
        acc = [r.scores[key] for r in records if r.kind == kind and r.status == "accepted"]
        rej = [r.scores[key] for r in records if r.kind == kind and r.status == "rejected"]
        ax.hist([acc, rej], bins=bins, label=[f"accepted ({len(acc)})", f"rejected ({len(rej)})"],
                color=["#2b7bba", "#d95f02"], histtype="barstacked", alpha=0.85)
        ax.set_title(f"kind: {kind}", fontsize=10)
        ax.set_xlabel(key)
        ax.set_ylabel("neighbors")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(kinds):]:
        ax.set_visible(False)
    fig.suptitle(f"{v.ref}: {key} by kind, accepted vs rejected")
    return fig


def _figure_counts(v: Version):
    from matplotlib.figure import Figure

    acc = Counter(r.class_ for r in v.neighbors)
    rej = Counter(r.class_ for r in v.rejected)
    n = len(v.classes)
    fig = Figure(figsize=(8, max(2.5, 0.22 * n + 1.2)), layout="constrained")
    ax = fig.subplots()
    ys = list(range(n))
    a = [acc[c] for c in v.classes]
    ax.barh(ys, a, color="#2b7bba", label="accepted")
    ax.barh(ys, [rej[c] for c in v.classes], left=a, color="#d95f02", label="rejected")
    ax.set_yticks(ys, labels=v.classes, fontsize=8 if n <= 60 else 5)
    ax.invert_yaxis()
    ax.set_xlabel("candidates")
    ax.legend(loc="lower right")
    ax.set_title(f"{v.ref}: candidates per class")
    return fig


def _figure_reasons(v: Version):
    from matplotlib.figure import Figure

    counts = Counter(reason_group(r.reason) for r in v.rejected).most_common()
    fig = Figure(figsize=(7, max(2.5, 0.35 * len(counts) + 1.2)), layout="constrained")
    ax = fig.subplots()
    if counts:
        ys = list(range(len(counts)))
        ax.barh(ys, [c for _, c in counts], color="#d95f02")
        ax.set_yticks(ys, labels=[r for r, _ in counts])
        ax.invert_yaxis()
        ax.set_xlabel("rejected candidates")
    else:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no rejected candidates", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"{v.ref}: rejection reasons")
    return fig


def render_plot(v: Version, name: str) -> bytes:
    """PNG bytes of plot `name` (one of `plot_names(v)`); KeyError for any other name."""
    scores = _score_plots(v)
    if name in scores:
        fig = _figure_scores(v, scores[name])
    elif name == COUNTS:
        fig = _figure_counts(v)
    elif name == REASONS:
        fig = _figure_reasons(v)
    else:
        raise KeyError(name)
    buf = io.BytesIO()
    # Figure + its own canvas, no pyplot: no global state, safe from the review server's threads
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).print_png(buf)
    return buf.getvalue()


def write_plots(v: Version, out_dir: str | Path) -> list[Path]:
    """Write every plot of `v` as `<out_dir>/<name>.png`; each file appears whole or not at all."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in plot_names(v):
        data = render_plot(v, name)
        path = out / f"{name}.png"
        atomic_write(path, data)
        written.append(path)
    return written
