"""The stage vocabulary (sept.pipeline.verdicts): copies with the verdict, the input untouched,
and the stages that share it importing it from there rather than from one another."""
import ast
from pathlib import Path

from sept.neighbor_store.records import NeighborRecord
from sept.pipeline.verdicts import StageResult, keep, reject

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"


def test_keep_and_reject_copy_with_the_verdict():
    r = NeighborRecord(**{"class": "dog", "text": "dog barking", "source": {"backend": "test"}, "scores": {"a": 1.0}})
    kept = keep(r, b=2.0)
    assert (kept.status, kept.reason, kept.scores) == ("accepted", None, {"a": 1.0, "b": 2.0})
    dropped = reject(r, "clap_low_self", {"dedup_rule": "key"}, b=0.5)
    assert (dropped.status, dropped.reason) == ("rejected", "clap_low_self")
    assert dropped.source == {"backend": "test", "dedup_rule": "key"} and dropped.scores == {"a": 1.0, "b": 0.5}
    assert reject(r, "invalid:empty").source == {"backend": "test"}
    assert r.status != "rejected" and r.scores == {"a": 1.0} and r.source == {"backend": "test"}  # input unchanged
    dropped.source["x"] = "y"
    assert "x" not in r.source  # a deep copy
    assert StageResult(kept={"dog": [kept]}).rejected == [] and StageResult(kept={}).info == {}


def test_stages_take_the_vocabulary_from_verdicts():
    for path in [PIPELINE / "clap_filter.py", *sorted((PIPELINE / "dedup").glob("*.py"))]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {(node.module, a.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
                 for a in node.names}
        assert not {n for n in names if n[1] in ("StageResult", "keep", "reject") and n[0] != "sept.pipeline.verdicts"}, path
    clap = ast.parse((PIPELINE / "clap_filter.py").read_text(encoding="utf-8"))
    assert not [n for n in ast.walk(clap) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("sept.pipeline.dedup")]
