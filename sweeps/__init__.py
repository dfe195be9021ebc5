"""Benchmark sweeps: many training runs as one bench, without an orchestrator.

    spec = spec_from(dict(datasets_root="Audio-Datasets", checkpoint="clap.pt", methods="coop",
                          sept="off,on", neighbors="base-v1", seeds="1,2,3"))
    plan = plan_bench(spec)            # every (dataset, fold, method, arm, seed) -> resolved config + hash
    ...                                # something trains the runs that are not done (sept.flows.sweep)
    records = [load_record(run) for run in plan.runs]
    write_outputs(plan, records)       # runs.csv, table.md, table.csv, plots/*.png in spec.out

The contract: a run is identified by `sept.trainer.config.config_hash` of its resolved config,
and a run whose results.json holds a config of that hash is done and never redone. This package
plans, reads run folders and writes the bench folder; it trains nothing itself and knows no
orchestrator (sept.flows adapts it to Prefect), so every step runs and tests in plain Python.

    spec       BenchSpec, spec_from, MethodId (a row's method identity), options, row labels, BenchError
    plan       plan_bench, PlannedRun, Plan, the neighbor versions each arm needs
    records    RunRecord, load_record, sweep.json
    aggregate  Table, aggregate_base2new, aggregate_cross (the averaging conventions)
    tables     runs.csv, table.csv, table.md, write_outputs
    plots      plots/*.png
"""
from sept.sweeps.aggregate import PUBLISHED, AccuracyCell, Cell, Row, Table, aggregate_base2new, aggregate_cross, build_table
from sept.sweeps.plan import MissingNeighbors, Plan, PlannedRun, plan_bench, resolve_neighbors
from sept.sweeps.plots import write_plots
from sept.sweeps.records import RESULTS, SWEEP_INFO, RunRecord, load_record, write_json, write_sweep_info
from sept.sweeps.spec import ARMS, PROTOCOLS, BenchError, BenchSpec, MethodId, parse_options, row_label, spec_from
from sept.sweeps.tables import runs_csv, table_csv, table_md, write_outputs

__all__ = [
    "ARMS", "PROTOCOLS", "PUBLISHED", "RESULTS", "SWEEP_INFO",
    "AccuracyCell", "BenchError", "BenchSpec", "Cell", "MethodId", "MissingNeighbors", "Plan", "PlannedRun", "Row", "RunRecord",
    "Table",
    "aggregate_base2new", "aggregate_cross", "build_table", "load_record", "parse_options", "plan_bench",
    "resolve_neighbors", "row_label", "runs_csv", "spec_from", "table_csv", "table_md", "write_json",
    "write_outputs", "write_plots", "write_sweep_info",
]
