"""The bench folder's files: runs.csv (a row per run), table.csv and table.md (the paper's layout).

    write_outputs(plan, records)     # runs.csv, table.md, table.csv, plots/*.png in plan.out

runs.csv names each run's method token, row label and recipe, and keeps fractions as percent with 4 decimals; table.csv keeps full precision; table.md
prints 2 decimals with the SEPT paper's published averages beside the rows that are exactly its
methods. Every file is written atomically: a reader sees the previous table or the new one.
"""
from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING, Any

from sept.atomic import atomic_write
from sept.sweeps.aggregate import Table, build_table
from sept.sweeps.plots import write_plots
from sept.sweeps.records import RunRecord
from sept.sweeps.spec import MethodId, row_label

if TYPE_CHECKING:
    from sept.sweeps.plan import Plan


# method: the MethodId token (coop, dept:coop, coop+aspl, kgcoop@reference); label: its table row
RUN_COLUMNS = ("run", "dataset", "fold", "method", "arm", "label", "recipe", "seed", "config_hash", "status",
               "base", "new", "H", "accuracy", "transfer", "seconds", "started", "ended", "worker", "clap_loads",
               "error", "run_dir",
               "fewshot_sha256")


def runs_csv(records: list[RunRecord]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(RUN_COLUMNS)
    pct = lambda v: "" if v is None else f"{100 * v:.4f}"   # noqa: E731
    for r in records:
        identity = _identity(r.method)
        w.writerow([r.name, r.dataset, "" if r.fold is None else r.fold, r.method, r.arm, row_label(r.method, r.arm),
                    identity.recipe if identity else "", r.seed, r.config_hash,
                    r.status, pct(r.base), pct(r.new), pct(r.H), pct(r.accuracy),
                    json.dumps({k: round(100 * v, 4) for k, v in r.transfer.items()}) if r.transfer else "",
                    "" if r.seconds is None else f"{r.seconds:.2f}",
                    "" if r.started is None else f"{r.started:.3f}", "" if r.ended is None else f"{r.ended:.3f}",
                    r.worker, "" if r.clap_loads is None else r.clap_loads, r.error, r.run_dir, r.fewshot_sha256])
    return buf.getvalue()


def _identity(token: str) -> MethodId | None:
    try:
        return MethodId.parse(token)
    except ValueError:
        return None


def _f(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def table_csv(table: Table) -> str:
    """One row per table row; numbers in percent, full precision."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if table.protocol == "base2new":
        head = ["row", "method", "arm"]
        for d in table.columns:
            head += [f"{d}/base", f"{d}/base_std", f"{d}/new", f"{d}/new_std", f"{d}/H", f"{d}/n"]
        head += ["avg/base", "avg/new", "avg/H", "avg/H_of_means", "avg/datasets",
                 "paper/base", "paper/new", "paper/H"]
        w.writerow(head)
        for row in table.rows:
            line: list[Any] = [row.label, row.method, row.arm]
            for d in table.columns:
                c = row.cells.get(d)
                line += ([c.base, c.base_std, c.new, c.new_std, c.H, c.n] if c else [""] * 6)
            a = row.average
            line += [a.get("base", ""), a.get("new", ""), a.get("H", ""), a.get("H_of_means", ""), row.n_datasets]
            line += list(row.published) if row.published else ["", "", ""]
            w.writerow(line)
    else:
        head = ["row", "method", "arm"]
        for d in table.columns:
            head += [f"{d}/accuracy", f"{d}/std", f"{d}/n"]
        head += ["avg/accuracy", "avg/targets"]
        w.writerow(head)
        for row in table.rows:
            line = [row.label, row.method, row.arm]
            for d in table.columns:
                c = row.cells.get(d)
                line += [c.accuracy, c.std, c.n] if c else ["", "", ""]
            line += [row.average.get("accuracy", ""), row.n_datasets]
            w.writerow(line)
    return buf.getvalue()


def table_md(table: Table, failures: int = 0) -> str:
    """The paper's layout in Markdown, with the SEPT paper's published averages beside ours."""
    lines: list[str] = []
    if table.protocol == "base2new":
        head = ["Method"]
        for d in table.columns:
            head += [f"{d} Base", f"{d} New", f"{d} H"]
        head += ["Avg Base", "Avg New", "Avg H", "H of avg ¹", "SEPT paper Base / New / H ²"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 2) + ["---"]) + "|")
        for row in table.rows:
            line = [row.label]
            for d in table.columns:
                c = row.cells.get(d)
                line += ([f"{c.base:.2f} ± {c.base_std:.2f}", f"{c.new:.2f} ± {c.new_std:.2f}", f"{c.H:.2f}"]
                         if c else ["–"] * 3)
            a = row.average
            short = row.n_datasets < len(table.columns)
            mark = " *" if short and a else ""
            line += [_f(a.get("base")) + mark, _f(a.get("new")) + mark, _f(a.get("H")) + mark,
                     _f(a.get("H_of_means")) + mark]
            p = row.published
            line.append(f"{p[0]:.2f} / {p[1]:.2f} / {p[2]:.2f}" if p else "")
            lines.append("| " + " | ".join(line) + " |")
        lines += [
            "",
            "Base and New: mean ± sample std over folds x seeds, in percent; H per dataset from those means.",
            "Avg: mean over datasets of the per-dataset Base, New and H (the SEPT paper's convention).",
            "¹ H of the average Base and New (the CoOp paper's convention).",
            f"² the SEPT paper's published average over its 11 datasets; ours covers {len(table.columns)}. "
            "Only beside the rows that are exactly its methods: no DePT, no audio prompt, PALM's recipe.",
        ]
        if any(r.average and r.n_datasets < len(table.columns) for r in table.rows):
            lines.append("* average over fewer datasets than the table's columns (some runs failed or are missing).")
    else:
        source, targets = table.columns[0], table.columns[1:]
        head = ["Method", f"{source} (source)"] + targets + ["Avg (targets)"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
        for row in table.rows:
            line = [row.label]
            for d in table.columns:
                c = row.cells.get(d)
                line.append(f"{c.accuracy:.2f} ± {c.std:.2f}" if c else "–")
            line.append(_f(row.average.get("accuracy")))
            lines.append("| " + " | ".join(line) + " |")
        lines += ["", "Accuracy in percent, mean ± sample std over folds x seeds; trained on the source's "
                      "classes, evaluated on each target without training."]
    if failures:
        lines.append(f"\n{failures} run(s) failed; see summary.json and runs.csv.")
    return "\n".join(lines) + "\n"


def write_outputs(plan: Plan, records: list[RunRecord]) -> dict[str, Any]:
    """runs.csv, table.md, table.csv and plots/ in the bench folder; returns the table and the files."""
    out = plan.out
    table = build_table(plan, records)
    failures = sum(r.status == "failed" for r in records)
    atomic_write(out / "runs.csv", runs_csv(records))
    atomic_write(out / "table.csv", table_csv(table))
    atomic_write(out / "table.md", table_md(table, failures))
    plots = write_plots(table, out / "plots")
    return {"table": table, "files": [str(out / n) for n in ("runs.csv", "table.md", "table.csv")]
            + [str(p) for p in plots]}
