"""sept.sweeps without training: aggregation against hand computations, the run grid,
config hashes, neighbor checks, and the bench folder's files. (End to end: test_bench_flow.py.)

Hand-computed figures stay clear of the 2-decimal rounding boundaries they are printed at.
"""
from __future__ import annotations

import csv
import io
import json
import shlex

import pytest

from fixtures_audio import write_benchmark_root
from sept.neighbor_store import NeighborRecord, Store
from sept.sweeps import (
    BenchError, RunRecord, aggregate_base2new, aggregate_cross, plan_bench, spec_from, table_csv, table_md,
    write_outputs,
)
from sept.trainer.config import config_hash, make_config


def rec(dataset, method, arm, base=None, new=None, fold=1, seed=1, accuracy=None, transfer=None):
    return RunRecord(f"{dataset}-{method}-{arm}-{fold}-{seed}", dataset, fold, method, arm, seed, "h", "trained", "",
                     base=base, new=new, accuracy=accuracy, transfer=transfer or {})


RECORDS = [
    # D1: two runs (folds x seeds) -> Base 65 ± 7.07, New 35 ± 7.07, H 45.5
    rec("D1", "coop", "off", 0.60, 0.30, fold=1), rec("D1", "coop", "off", 0.70, 0.40, fold=2),
    # D2: one run -> Base 84, New 18, H = 2*84*18/102 = 29.647
    rec("D2", "coop", "off", 0.84, 0.18),
    # the SEPT arm: D1 only (D2's run failed) -> Base 62, New 46, H = 2*62*46/108 = 52.815
    rec("D1", "coop", "on", 0.62, 0.46, fold=1),
]


def test_base2new_aggregation_equals_hand_computation():
    table = aggregate_base2new(RECORDS, ["D1", "D2"], ["coop"], ["off", "on"])
    off, on = table.rows
    assert (off.label, on.label) == ("CoOp", "CoOp + SEPT")
    d1, d2 = off.cells["D1"], off.cells["D2"]
    assert d1.base == pytest.approx(65.0) and d1.new == pytest.approx(35.0) and d1.n == 2
    assert d1.base_std == pytest.approx(7.0710678) and d1.new_std == pytest.approx(7.0710678)
    assert d1.H == pytest.approx(45.5)
    assert d2.H == pytest.approx(3024 / 102) and d2.base_std == 0.0
    # SEPT paper: mean of per-dataset figures; CoOp paper: H of the mean Base / New
    assert off.average["base"] == pytest.approx(74.5) and off.average["new"] == pytest.approx(26.5)
    assert off.average["H"] == pytest.approx((45.5 + 3024 / 102) / 2)          # 37.5735
    assert off.average["H_of_means"] == pytest.approx(2 * 74.5 * 26.5 / 101)   # 39.0941
    assert on.n_datasets == 1 and on.average["H"] == pytest.approx(2 * 62 * 46 / 108)
    assert off.published == (65.00, 34.09, 42.83) and on.published == (64.36, 42.98, 49.70)

    md = table_md(table)
    line = next(l for l in md.splitlines() if l.startswith("| CoOp |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells == ["CoOp", "65.00 ± 7.07", "35.00 ± 7.07", "45.50", "84.00 ± 0.00", "18.00 ± 0.00", "29.65",
                     "74.50", "26.50", "37.57", "39.09", "65.00 / 34.09 / 42.83"]
    sept_line = next(l for l in md.splitlines() if l.startswith("| CoOp + SEPT |"))
    assert "52.81 *" in sept_line and "64.36 / 42.98 / 49.70" in sept_line and "–" in sept_line
    assert "fewer datasets" in md and "SEPT paper's convention" in md and "CoOp paper's convention" in md

    rows = list(csv.DictReader(io.StringIO(table_csv(table))))
    assert rows[0]["row"] == "CoOp" and float(rows[0]["avg/H_of_means"]) == pytest.approx(2 * 74.5 * 26.5 / 101)
    assert float(rows[0]["D1/base_std"]) == pytest.approx(7.0710678) and rows[0]["paper/H"] == "42.83"
    assert rows[1]["D2/base"] == "" and rows[1]["avg/datasets"] == "1"


def test_published_rows_for_every_paper_method():
    recs = [rec("D1", m, a, 0.5, 0.5) for m in ("cocoop", "kgcoop", "palm") for a in ("off", "on")]
    table = aggregate_base2new(recs, ["D1"], ["cocoop", "kgcoop", "palm"], ["off", "on"])
    published = {r.label: r.published for r in table.rows}
    assert published == {"CoCoOp": (69.13, 36.83, 46.26), "CoCoOp + SEPT": (68.63, 42.59, 50.65),
                         "KgCoOp": (37.99, 37.42, 36.39), "KgCoOp + SEPT": (58.92, 45.28, 49.79),
                         "PALM": None, "PALM + SEPT": None}


def test_cross_aggregation_averages_over_targets():
    recs = [rec("S", "coop", "off", accuracy=0.90, transfer={"T1": 0.40, "T2": 0.22}, seed=1),
            rec("S", "coop", "off", accuracy=0.80, transfer={"T1": 0.50, "T2": 0.26}, seed=2)]
    table = aggregate_cross(recs, "S", ["T1", "T2"], ["coop"], ["off"])
    (row,) = table.rows
    assert row.cells["S"].accuracy == pytest.approx(85.0) and row.cells["T1"].accuracy == pytest.approx(45.0)
    assert row.cells["T2"].std == pytest.approx(2.8284271)
    assert row.average["accuracy"] == pytest.approx((45.0 + 24.0) / 2)        # 34.5, the source not included
    md = table_md(table)
    assert "| CoOp | 85.00 ± 7.07 | 45.00 ± 7.07 | 24.00 ± 2.83 | 34.50 |" in md


def test_config_hash_ignores_output_places_only(tmp_path):
    cfg = make_config(overrides={"dataset_root": "/data/ESC50", "method": "coop", "seed": 1})
    h = config_hash(cfg)
    assert config_hash(cfg.replace(out_dir="/elsewhere", run_name="x", cache_dir="/c", device="cuda")) == h
    assert config_hash(cfg.replace(lr=0.1)) != h and config_hash(cfg.replace(seed=2)) != h
    # a saved config from before a field existed (its default) hashes the same
    saved = cfg.to_dict()
    del saved["kgcoop_weight"]
    assert config_hash(saved) == h


# ------------------------------------------------------------------------------- planning

@pytest.fixture(scope="module")
def bench_root(tmp_path_factory):
    """Beijing-Opera (4 classes, 5 folds) and CREMA-D (6 classes, 1 fold), and a store with a base-only
    version ("base-v1") and an all-class one ("all-v1") of each."""
    base = tmp_path_factory.mktemp("bench-plan")
    root = write_benchmark_root(base / "data", ["Beijing-Opera", "CREMA-D"], clips_per_class=1)
    store = Store(base / "store")
    from sept.splits import resolve_split

    for name in ("Beijing-Opera", "CREMA-D"):
        classes = _classes(root / name)
        split = resolve_split(classes)
        records = [NeighborRecord(**{"class": c, "text": f"loud {c}"}) for c in split.base]
        store.write_version(name, split.base, records, params={"backend": "human", "visible_classes": split.base},
                            tag="base-v1")
        records = [NeighborRecord(**{"class": c, "text": f"loud {c}"}) for c in classes]
        store.write_version(name, classes, records, params={"backend": "human"}, tag="all-v1")
    return root, base / "store"


def _classes(folder):
    with open(folder / "train.csv", newline="") as f:
        return sorted({row["classname"] for row in csv.DictReader(f)})


def _spec(bench_root, tmp_path, **over):
    root, store = bench_root
    values = dict(datasets_root=str(root), checkpoint="/nowhere/clap.pt", methods="coop,palm", sept="off,on",
                  neighbors="base-v1", seeds="1,2", datasets="Beijing-Opera,CREMA-D", folds="1",
                  store=str(store), out=str(tmp_path / "bench"), options=["epochs=1", "palm.lr=0.5"])
    values.update(over)
    return spec_from(values)


def test_plan_is_the_full_grid_with_resolved_configs(bench_root, tmp_path):
    plan = plan_bench(_spec(bench_root, tmp_path))
    assert plan.ok, plan.describe_problems()
    assert len(plan.runs) == 2 * 1 * 2 * 2 * 2            # datasets x folds x methods x arms x seeds
    assert len({r.config_hash for r in plan.runs}) == 16 and len({r.name for r in plan.runs}) == 16
    by = {(r.dataset, r.method, r.arm, r.seed): r for r in plan.runs}
    bo = by[("Beijing-Opera", "palm", "on", 2)]
    assert bo.fold == 1 and by[("CREMA-D", "coop", "off", 1)].fold is None    # CREMA-D has no fold files
    assert bo.config["base_to_new"] is True and bo.config["split"] == "sorted" and bo.config["epochs"] == 1
    assert bo.config["lr"] == 0.5 and by[("Beijing-Opera", "coop", "on", 2)].config["lr"] == 0.05
    slug, vid = Store(bench_root[1]).resolve("Beijing-Opera@base-v1")
    assert bo.config["neighbors"] == f"{slug}@{vid}" and by[("Beijing-Opera", "palm", "off", 2)].config["neighbors"] is None
    assert bo.run_dir == tmp_path / "bench" / "runs" / bo.name

    # done: results.json with a config of the same hash
    assert not bo.done()
    bo.run_dir.mkdir(parents=True)
    (bo.run_dir / "results.json").write_text(json.dumps({"config": bo.config}))
    assert bo.done()
    (bo.run_dir / "results.json").write_text(json.dumps({"config": {**bo.config, "lr": 0.6}}))
    assert not bo.done()
    # a different folds selection, same runs where they overlap: same hashes
    again = plan_bench(_spec(bench_root, tmp_path, folds="1,3"))
    assert {r.config_hash for r in plan.runs} < {r.config_hash for r in again.runs} and len(again.runs) == 24


def test_all_class_version_is_refused_for_base2new_with_the_generate_command(bench_root, tmp_path):
    plan = plan_bench(_spec(bench_root, tmp_path, neighbors="all-v1", sept="off,on,random"))
    assert not plan.ok and not plan.problems
    assert {(m.dataset, m.arm) for m in plan.missing} == {("Beijing-Opera", "on"), ("CREMA-D", "on"),
                                                          ("Beijing-Opera", "random"), ("CREMA-D", "random")}
    bo = next(m for m in plan.missing if (m.dataset, m.arm) == ("Beijing-Opera", "on"))
    # the check `sept train` makes (sept.neighbor_store.serving), its reason word for word
    assert "saw the new class(es) 'naobo', 'xiaoluo' while it was made" in bo.reason
    args = shlex.split(bo.command)
    assert args[:4] == ["sept", "generate", "--dataset", "Beijing-Opera"]
    assert args[args.index("--split") + 1] == "base" and args[args.index("--tag") + 1] == "all-v1"
    assert args[args.index("--dataset-root") + 1] == str(bench_root[0] / "Beijing-Opera")
    rnd = next(m for m in plan.missing if (m.dataset, m.arm) == ("CREMA-D", "random"))
    assert "no version tagged 'random'" in rnd.reason and "--backend random-words --like" in rnd.command
    text = plan.describe_problems()
    assert "missing neighbor versions" in text and bo.command in text
    # only the off arm's runs are planned while versions are missing
    assert {r.arm for r in plan.runs} == {"off"}


def test_data_check_problems_and_bad_parameters_stop_the_plan(bench_root, tmp_path):
    plan = plan_bench(_spec(bench_root, tmp_path, datasets="Beijing-Opera,ESC50"))
    assert plan.problems == [f"ESC50: absent from {bench_root[0]}"] and not plan.runs
    with pytest.raises(BenchError, match="parameter 'sept'.*'sometimes'"):
        _spec(bench_root, tmp_path, sept="off,sometimes")
    with pytest.raises(BenchError, match="'on' arm needs the neighbor tag"):
        _spec(bench_root, tmp_path, neighbors=None)
    with pytest.raises(BenchError, match="'kgcoop' is not one of the bench's methods"):
        _spec(bench_root, tmp_path, options=["kgcoop.lr=1"])
    with pytest.raises(BenchError, match="'seed' is set by the bench"):
        _spec(bench_root, tmp_path, options=["seed=3"])
    with pytest.raises(BenchError, match="Beijing-Opera has no fold.s. 6"):
        plan_bench(_spec(bench_root, tmp_path, folds="1,6"))
    with pytest.raises(BenchError, match="parameter 'folds'"):
        plan_bench(_spec(bench_root, tmp_path, folds="some"))
    # a count: each dataset's first min(K, folds) folds; CREMA-D's one split once
    seven = plan_bench(_spec(bench_root, tmp_path, folds="7", methods="palm", sept="off", seeds="1"))
    assert sorted((r.dataset, r.fold or 0) for r in seven.runs) == [("Beijing-Opera", k) for k in range(1, 6)] + [("CREMA-D", 0)]
    with pytest.raises(BenchError, match="parameter 'lr'"):
        plan_bench(_spec(bench_root, tmp_path, options=["lr=-1"]))


def test_outputs_are_written_with_plots(bench_root, tmp_path):
    plan = plan_bench(_spec(bench_root, tmp_path, seeds="1"))
    records = []
    for i, run in enumerate(plan.runs):
        r = RunRecord(run.name, run.dataset, run.fold, run.method, run.arm, run.seed, run.config_hash,
                      "trained", str(run.run_dir), base=0.5 + 0.05 * i, new=0.25 + 0.02 * i)
        records.append(r)
    records[-1].status, records[-1].base, records[-1].new, records[-1].error = "failed", None, None, "TrainError: boom"
    written = write_outputs(plan, records)
    out = tmp_path / "bench"
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == ["base_new_h.png", "sept_gain.png"]
    assert all((out / "plots" / n).read_bytes().startswith(b"\x89PNG") for n in ("base_new_h.png", "sept_gain.png"))
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert len(rows) == len(plan.runs) and rows[-1]["status"] == "failed" and rows[-1]["error"] == "TrainError: boom"
    assert float(rows[0]["base"]) == pytest.approx(50.0) and rows[0]["config_hash"] == plan.runs[0].config_hash
    assert "1 run(s) failed" in (out / "table.md").read_text()
    assert str(out / "table.csv") in written["files"]


def test_options_win_over_the_bench_flags_and_method_options_over_both(bench_root, tmp_path):
    plan = plan_bench(_spec(bench_root, tmp_path, seeds="1", sept="off",
                            options=["shots=2", "palm.checkpoint=/other/clap.pt", "palm.shots=4"]))
    by = {(r.dataset, r.method): r.config for r in plan.runs}
    assert by[("CREMA-D", "coop")]["checkpoint"] == "/nowhere/clap.pt" and by[("CREMA-D", "coop")]["shots"] == 2
    assert by[("CREMA-D", "palm")]["checkpoint"] == "/other/clap.pt" and by[("CREMA-D", "palm")]["shots"] == 4


def test_cross_plan_trains_the_source_on_all_classes_and_evaluates_the_targets(bench_root, tmp_path):
    root, store = bench_root
    spec = spec_from(dict(protocol="cross", datasets_root=str(root), source="CREMA-D", targets="Beijing-Opera",
                          checkpoint="/nowhere/clap.pt", methods="palm", sept="off,on", neighbors="all-v1",
                          seeds="1,2", store=str(store), out=str(tmp_path / "cross")))
    plan = plan_bench(spec)
    assert plan.ok, plan.describe_problems()
    assert plan.datasets == ["CREMA-D", "Beijing-Opera"] and len(plan.runs) == 4
    assert {r.dataset for r in plan.runs} == {"CREMA-D"}
    cfg = plan.runs[0].config
    assert cfg["base_to_new"] is False and cfg["targets"] == [str(root / "Beijing-Opera")]
    # a base-only version lacks neighbors for half the source's classes
    base_only = plan_bench(spec.model_copy(update={"neighbors": "base-v1"}))
    (m,) = base_only.missing
    assert "in the dataset but not the version: 'happy', 'neutral', 'sad'" in m.reason
    assert "--split" not in m.command and "--dataset CREMA-D" in m.command
    with pytest.raises(BenchError, match="the source 'CREMA-D' is also a target"):
        spec_from(dict(protocol="cross", datasets_root=str(root), source="CREMA-D", targets="CREMA-D", sept="off"))


def test_generate_makes_the_missing_random_versions_then_dry_run_lists_the_runs(bench_root, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from sept.cli import app

    root, store = bench_root
    shutil.copytree(store, tmp_path / "store")
    args = ["bench", "base2new", "--datasets-root", str(root), "--datasets", "Beijing-Opera,CREMA-D",
            "--checkpoint", "/nowhere/clap.pt", "--methods", "palm", "--sept", "off,on,random", "--neighbors",
            "base-v1", "--folds", "1", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "bench"),
            "--dry-run"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 1 and "or run the bench with --generate" in refused.output
    assert "--backend random-words --like beijing-opera@" in refused.output
    made = CliRunner().invoke(app, [*args, "--generate"])
    assert made.exit_code == 0, made.output
    assert "0 of 6 runs done, 6 to train" in made.output
    generated = Store(tmp_path / "store")
    for name in ("Beijing-Opera", "CREMA-D"):
        random_version = generated.read(f"{name}@random")
        base_version = generated.read(f"{name}@base-v1")
        assert random_version.classes == base_version.classes and random_version.id != base_version.id
    assert not (tmp_path / "bench" / "runs").exists()


# ------------------------------------------------------------------------- method identities

def test_method_entries_parse_into_identities_with_labels():
    from sept.sweeps import MethodId

    cases = {"coop": ("CoOp", True), "dept:coop": ("DePT (CoOp)", False), "coop+aspl": ("CoOp + ASPL", False),
             "dept:kgcoop+aspl+": ("DePT (KgCoOp) + ASPL+", False),
             "kgcoop@reference": ("KgCoOp (reference recipe)", False), "palm@palm": ("PALM", True)}
    for entry, (label, plain) in cases.items():
        identity = MethodId.parse(entry)
        assert (identity.label, identity.plain) == (label, plain), entry
        assert MethodId.parse(identity.token) == identity      # the token is the whole identity
    assert MethodId.parse("coop", recipe="reference").token == "coop@reference"
    assert MethodId.parse("dept:coop+aspl+").slug == "dept-coop-asplplus"
    with pytest.raises(BenchError, match="parameter 'methods'.*'dept:palm'.*DePT applies to"):
        spec_from(dict(datasets_root="/r", methods="coop,dept:palm", sept="off"))
    with pytest.raises(BenchError, match="unknown audio prompt 'film'"):
        spec_from(dict(datasets_root="/r", methods="coop+film", sept="off"))
    with pytest.raises(BenchError, match="unknown recipe 'clip'"):
        spec_from(dict(datasets_root="/r", methods="coop@clip", sept="off"))
    with pytest.raises(BenchError, match="'coop' and 'coop@palm' both run CoOp"):
        spec_from(dict(datasets_root="/r", methods="coop,coop@palm", sept="off"))


def _write_results(run, base, new):
    """The trainer's results.json of a finished run: its config and its metrics (fractions)."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    metrics = {"base": {"accuracy": base}, "new": {"accuracy": new}, "H": 2 * base * new / (base + new)}
    (run.run_dir / "results.json").write_text(json.dumps({"config": run.config, "metrics": metrics, "seconds": 1.0}))


def test_coop_dept_and_aspl_in_one_bench_are_three_labelled_rows(bench_root, tmp_path):
    from sept.sweeps import load_record

    plan = plan_bench(_spec(bench_root, tmp_path, methods="coop,dept:coop,coop+aspl", seeds="1",
                            datasets="Beijing-Opera", options=["epochs=1"]))
    assert plan.ok, plan.describe_problems()
    assert plan.methods == ["coop", "dept:coop", "coop+aspl"] and len(plan.runs) == 3 * 2
    by = {(r.method, r.arm): r for r in plan.runs}
    assert by[("dept:coop", "on")].config["dept"] is True and by[("coop", "on")].config["dept"] is False
    assert by[("coop+aspl", "off")].config["audio_prompt"] == "aspl"
    assert by[("coop", "off")].config["audio_prompt"] == "none"
    # DePT's own settings, except what the options set
    assert by[("dept:coop", "off")].config["batch_size"] == 4 and by[("dept:coop", "off")].config["epochs"] == 1
    assert len({r.name for r in plan.runs}) == 6 and by[("dept:coop", "on")].name.startswith("beijing-opera-dept-coop-on-")
    assert by[("coop", "off")].name.startswith("beijing-opera-coop-off-fold1-seed1-")   # as before identities

    figures = {"coop": (0.60, 0.30), "dept:coop": (0.70, 0.20), "coop+aspl": (0.50, 0.40)}
    for run in plan.runs:
        base, new = figures[run.method]
        _write_results(run, base + (0.02 if run.arm == "on" else 0.0), new)
    records = [load_record(run) for run in plan.runs]
    assert {r.status for r in records} == {"skipped"} and all(r.base is not None for r in records)
    written = write_outputs(plan, records)
    table = written["table"]
    assert [row.label for row in table.rows] == ["CoOp", "CoOp + SEPT", "DePT (CoOp)", "DePT (CoOp) + SEPT",
                                                 "CoOp + ASPL", "CoOp + ASPL + SEPT"]
    published = {row.label: row.published for row in table.rows}
    assert published["CoOp"] == (65.00, 34.09, 42.83) and published["CoOp + SEPT"] == (64.36, 42.98, 49.70)
    assert all(p is None for label, p in published.items() if label not in ("CoOp", "CoOp + SEPT"))
    dept_row = next(row for row in table.rows if row.label == "DePT (CoOp)")
    assert dept_row.cells["Beijing-Opera"].base == pytest.approx(70.0)

    md = (tmp_path / "bench" / "table.md").read_text()
    lines = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ") and "---" not in line}
    assert lines["CoOp"].rstrip(" |").endswith("65.00 / 34.09 / 42.83")
    for label in ("DePT (CoOp)", "DePT (CoOp) + SEPT", "CoOp + ASPL", "CoOp + ASPL + SEPT"):
        assert lines[label].rstrip().endswith("|  |"), lines[label]       # the paper column empty
    rows = list(csv.DictReader((tmp_path / "bench" / "runs.csv").open()))
    assert {(r["method"], r["label"], r["recipe"]) for r in rows if r["arm"] == "on"} == {
        ("coop", "CoOp + SEPT", "palm"), ("dept:coop", "DePT (CoOp) + SEPT", "palm"),
        ("coop+aspl", "CoOp + ASPL + SEPT", "palm")}
    paper = {r["row"]: r["paper/H"] for r in csv.DictReader((tmp_path / "bench" / "table.csv").open())}
    assert paper["CoOp"] == "42.83" and paper["DePT (CoOp)"] == "" and paper["CoOp + ASPL + SEPT"] == ""


def test_an_option_that_changes_the_identity_names_the_row(bench_root, tmp_path):
    # today's syntax: plain methods and `dept=true` for every run -- the rows say DePT
    plan = plan_bench(_spec(bench_root, tmp_path, methods="coop,kgcoop", sept="off", seeds="1",
                            datasets="CREMA-D", options=["dept=true", "kgcoop.audio_prompt=aspl+"]))
    assert plan.methods == ["dept:coop", "dept:kgcoop+aspl+"]
    assert {r.label for r in plan.runs} == {"DePT (CoOp)", "DePT (KgCoOp) + ASPL+"}
    # two entries that the options make one identity are refused, naming both
    with pytest.raises(BenchError, match="'coop' and 'dept:coop' both run DePT .CoOp."):
        plan_bench(_spec(bench_root, tmp_path, methods="coop,dept:coop", sept="off", seeds="1",
                         datasets="CREMA-D", options=["dept=true"]))
    # an entry's own options: `dept:coop.lr` reaches that entry only, `coop.lr` every CoOp entry
    scoped = plan_bench(_spec(bench_root, tmp_path, methods="coop,dept:coop", sept="off", seeds="1",
                              datasets="CREMA-D", options=["coop.epochs=3", "dept:coop.lr=0.5"]))
    cfg = {r.method: r.config for r in scoped.runs}
    assert (cfg["coop"]["epochs"], cfg["coop"]["lr"]) == (3, 0.05)
    assert (cfg["dept:coop"]["epochs"], cfg["dept:coop"]["lr"]) == (3, 0.5)


def test_reference_recipe_bench_records_the_recipe_and_labels_its_rows(bench_root, tmp_path):
    from sept.sweeps import load_record

    plan = plan_bench(_spec(bench_root, tmp_path, methods="kgcoop,coop@palm", recipe="reference", sept="off,on",
                            seeds="1", datasets="CREMA-D", options=[]))
    assert plan.methods == ["kgcoop@reference", "coop"]
    kg = next(r for r in plan.runs if r.method == "kgcoop@reference")
    # KgCoOp's own settings (htyao89/KgCoOp configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml)
    assert (kg.config["recipe"], kg.config["lr"], kg.config["batch_size"], kg.config["epochs"]) == (
        "reference", 0.002, 128, 100)
    assert kg.name.startswith("crema-d-kgcoop-reference-off-seed1-")
    coop = next(r for r in plan.runs if r.method == "coop")
    assert coop.config["recipe"] == "palm" and coop.config["lr"] == 0.05
    for run in plan.runs:
        _write_results(run, 0.5, 0.25)
    write_outputs(plan, [load_record(r) for r in plan.runs])
    rows = list(csv.DictReader((tmp_path / "bench" / "runs.csv").open()))
    assert {(r["method"], r["recipe"], r["label"]) for r in rows if r["arm"] == "off"} == {
        ("kgcoop@reference", "reference", "KgCoOp (reference recipe)"), ("coop", "palm", "CoOp")}
    table = {r["row"]: r for r in csv.DictReader((tmp_path / "bench" / "table.csv").open())}
    assert set(table) == {"KgCoOp (reference recipe)", "KgCoOp (reference recipe) + SEPT", "CoOp", "CoOp + SEPT"}
    assert table["KgCoOp (reference recipe)"]["paper/H"] == "" and table["CoOp"]["paper/H"] == "42.83"


def test_bench_cli_takes_the_recipe_and_identities(bench_root, tmp_path):
    import subprocess
    import sys

    root, store = bench_root
    args = [sys.executable, "-m", "sept", "bench", "base2new", "--datasets-root", str(root), "--datasets", "CREMA-D",
            "--checkpoint", "/nowhere/clap.pt", "--methods", "coop,dept:coop,coop+aspl", "--recipe", "reference",
            "--sept", "off", "--store", str(store), "--out", str(tmp_path / "bench"), "--dry-run"]
    listed = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr
    assert "0 of 3 runs done, 3 to train" in listed.stdout
    for name in ("crema-d-coop-reference-off", "crema-d-dept-coop-reference-off", "crema-d-coop-aspl-reference-off"):
        assert name in listed.stdout
    refused = subprocess.run([*args[:-1], "--recipe", "clip", "--dry-run"], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "parameter 'recipe'" in refused.stderr


def test_zebra_split_plans_on_zebras_base_classes_and_refuses_a_sorted_base_version(bench_root, tmp_path):
    """ZEBRA's Beijing-Opera base is bangu, xiaoluo; the sorted base (bangu, daluo) saw daluo, a new
    class under ZEBRA's split, so its version cannot serve; a version made on ZEBRA's base can."""
    from sept.splits import resolve_split

    root, store_dir = bench_root
    plan = plan_bench(_spec(bench_root, tmp_path, split="zebra", datasets="Beijing-Opera", methods="coop", options=["epochs=1"],
                            sept="on", seeds="1"))
    assert not plan.ok and [m.dataset for m in plan.missing] == ["Beijing-Opera"]
    assert "daluo" in plan.missing[0].reason
    zebra = resolve_split(_classes(root / "Beijing-Opera"), "zebra", dataset="Beijing-Opera")
    assert zebra.base == ["bangu", "xiaoluo"]
    records = [NeighborRecord(**{"class": c, "text": f"loud {c}"}) for c in zebra.base]
    Store(store_dir).write_version("Beijing-Opera", zebra.base, records,
                                   params={"backend": "human", "visible_classes": zebra.base}, tag="zebra-v1")
    plan = plan_bench(_spec(bench_root, tmp_path, split="zebra", datasets="Beijing-Opera", methods="coop", options=["epochs=1"],
                            sept="on", seeds="1", neighbors="zebra-v1"))
    assert plan.ok, plan.describe_problems()
    assert {r.config["split"] for r in plan.runs} == {"zebra"} and len(plan.runs) == 1
