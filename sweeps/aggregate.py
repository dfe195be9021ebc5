"""Run records -> a `Table` of rows (method, arm) x datasets, in percent, beside the published figures.

A row's method is a `MethodId` token (sept.sweeps.spec): `coop`, `dept:coop`, `coop+aspl`,
`kgcoop@reference`, so DePT, an audio prompt or another recipe is a row of its own. The SEPT
paper's figures stand only beside the rows that are exactly its methods (`MethodId.plain`).

Base-to-new, per (dataset, method, arm): Base and New are the mean and sample std over
folds x seeds; H per dataset is the harmonic mean of those means. The average over datasets is
the mean of the per-dataset Base, New and H (the SEPT paper's convention: its CoOp row reads
65.00 / 34.09 / 42.83, where H of the means would be 44.72); H of the mean Base and New is kept
too (`H_of_means`, the CoOp paper's convention). A row averages over the datasets it has a cell
for; `n_datasets` says how many.

Cross-dataset: accuracy on the source's own test split and on each target; the average is over
the targets only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sept.sweeps.records import RunRecord
from sept.sweeps.spec import ARMS, MethodId, row_label
from sept.trainer.metrics import harmonic_mean

if TYPE_CHECKING:
    from sept.sweeps.plan import Plan

# The SEPT paper's 11-dataset base-to-new averages (Base, New, H), in percent; keys are plain
# methods (no DePT, no audio prompt, PALM's recipe, which the paper's PALM-based code trains with).
PUBLISHED: dict[tuple[str, str], tuple[float, float, float]] = {
    ("coop", "off"): (65.00, 34.09, 42.83),
    ("coop", "on"): (64.36, 42.98, 49.70),
    ("cocoop", "off"): (69.13, 36.83, 46.26),
    ("cocoop", "on"): (68.63, 42.59, 50.65),
    ("kgcoop", "off"): (37.99, 37.42, 36.39),
    ("kgcoop", "on"): (58.92, 45.28, 49.79),
}


@dataclass
class Cell:
    """Base-to-new figures of one (dataset, method, arm), in percent."""

    base: float
    base_std: float
    new: float
    new_std: float
    H: float                 # from the means
    n: int                   # runs (folds x seeds)


@dataclass
class AccuracyCell:
    """Cross-dataset accuracy of one (dataset, method, arm), in percent."""

    accuracy: float
    std: float
    n: int


@dataclass
class Row:
    method: str                                  # MethodId token
    arm: str
    cells: dict[str, Any]                       # dataset (or target) -> Cell / AccuracyCell
    average: dict[str, float] = field(default_factory=dict)
    n_datasets: int = 0

    @property
    def label(self) -> str:
        return row_label(self.method, self.arm)

    @property
    def published(self) -> tuple[float, float, float] | None:
        """The SEPT paper's average, only beside the row that is exactly that paper's method."""
        try:
            plain = MethodId.parse(self.method).plain
        except ValueError:
            return None
        return PUBLISHED.get((self.method, self.arm)) if plain else None


@dataclass
class Table:
    protocol: str
    columns: list[str]          # datasets (base2new) or [source, *targets] (cross)
    rows: list[Row]


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else 0.0)


def _row_order(records: list[RunRecord], methods: list[str] | None, arms: list[str] | None) -> list[tuple[str, str]]:
    methods = methods or list(dict.fromkeys(r.method for r in records))
    arms = arms or [a for a in ARMS if any(r.arm == a for r in records)]
    return [(m, a) for m in methods for a in arms]


def aggregate_base2new(records: list[RunRecord], datasets: list[str], methods: list[str] | None = None,
                       arms: list[str] | None = None) -> Table:
    """Rows (method, arm) x dataset cells; averages over the datasets that have a cell."""
    rows = []
    for method, arm in _row_order(records, methods, arms):
        cells: dict[str, Any] = {}
        for d in datasets:
            got = [r for r in records if (r.method, r.arm, r.dataset) == (method, arm, d) and r.base is not None]
            if not got:
                continue
            base, base_std = _mean_std([100 * r.base for r in got])
            new, new_std = _mean_std([100 * r.new for r in got])
            cells[d] = Cell(base, base_std, new, new_std, harmonic_mean(base, new), len(got))
        row = Row(method, arm, cells, n_datasets=len(cells))
        if cells:
            b = float(np.mean([c.base for c in cells.values()]))
            n = float(np.mean([c.new for c in cells.values()]))
            row.average = {"base": b, "new": n, "H": float(np.mean([c.H for c in cells.values()])),
                           "H_of_means": harmonic_mean(b, n)}
        rows.append(row)
    return Table("base2new", list(datasets), rows)


def aggregate_cross(records: list[RunRecord], source: str, targets: list[str], methods: list[str] | None = None,
                    arms: list[str] | None = None) -> Table:
    """Rows (method, arm) x [source, *targets] accuracy cells; average over the targets."""
    rows = []
    for method, arm in _row_order(records, methods, arms):
        got = [r for r in records if (r.method, r.arm) == (method, arm) and r.accuracy is not None]
        cells: dict[str, Any] = {}
        if got:
            acc, std = _mean_std([100 * r.accuracy for r in got])
            cells[source] = AccuracyCell(acc, std, len(got))
        for t in targets:
            values = [100 * r.transfer[t] for r in got if t in r.transfer]
            if values:
                acc, std = _mean_std(values)
                cells[t] = AccuracyCell(acc, std, len(values))
        row = Row(method, arm, cells, n_datasets=sum(t in cells for t in targets))
        if row.n_datasets:
            row.average = {"accuracy": float(np.mean([cells[t].accuracy for t in targets if t in cells]))}
        rows.append(row)
    return Table("cross", [source, *targets], rows)


def build_table(plan: Plan, records: list[RunRecord]) -> Table:
    """The table of a plan's protocol, rows in the spec's method and arm order."""
    spec = plan.spec
    if spec.protocol == "base2new":
        return aggregate_base2new(records, plan.datasets, plan.method_order(), spec.sept)
    return aggregate_cross(records, spec.source, list(spec.targets), plan.method_order(), spec.sept)
