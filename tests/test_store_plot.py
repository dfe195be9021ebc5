"""`sept store plot REF --out DIR`: the PNGs for a version with scores and for one without."""
import json
import struct

from typer.testing import CliRunner

from sept.cli import app
from sept.neighbor_store import NeighborRecord, Store
from sept.neighbor_store.plot import reason_group

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG, path
    return struct.unpack(">II", data[16:24])


def plot(root, ref, out):
    return CliRunner().invoke(app, ["store", "--store", str(root), "plot", ref, "--out", str(out)])


def test_plots_for_a_version_with_scores(tmp_path):
    store = Store(tmp_path / "store")
    n = [NeighborRecord(class_=c, text=f"{c} sound {i}", kind=k, scores={"clap_self": 0.1 * i, "audio_self": 0.3})
         for c in ("dog", "rain") for i, k in enumerate(("acoustic", "synonym", "acoustic"))]
    r = [NeighborRecord(class_="dog", text="cat", status="rejected", reason="clap_confuser:rain", scores={"clap_self": 0.02}),
         NeighborRecord(class_="rain", text="drizzle", status="rejected", reason="clap_low_self", scores={"clap_self": 0.01}),
         NeighborRecord(class_="rain", text="shower", status="rejected", reason="duplicate_of:abc")]
    ref = store.write_version("scored", ["dog", "rain"], n, r)
    out = tmp_path / "plots"
    result = plot(store.root, ref, out)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["counts-per-class.png", "rejection-reasons.png", "scores-audio_self.png", "scores-clap_self.png"]
    assert result.stdout.split() == [str(out / n) for n in ["scores-audio_self.png", "scores-clap_self.png",
                                                              "counts-per-class.png", "rejection-reasons.png"]]
    for p in out.iterdir():
        w, h = png_size(p)
        assert w >= 400 and h >= 200
    # clap_self spans three kinds (acoustic, synonym, other): three histograms side by side
    assert png_size(out / "scores-clap_self.png")[0] > 1.5 * png_size(out / "rejection-reasons.png")[0]
    assert [reason_group(x.reason) for x in r] == ["clap_confuser", "clap_low_self", "duplicate_of"]


def test_plots_for_a_version_without_scores_and_a_bad_ref(tmp_path):
    src = tmp_path / "human.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in [{"class": "dog", "text": "woof"}, {"class": "cat", "text": "purr"}]))
    root = tmp_path / "store"
    r = CliRunner().invoke(app, ["store", "--store", str(root), "import", str(src), "--dataset", "human"])
    assert r.exit_code == 0, r.output
    ref = r.stdout.strip().splitlines()[-1]
    out = tmp_path / "plots"
    result = plot(root, ref, out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["counts-per-class.png", "rejection-reasons.png"]
    assert "has no scores" in result.stderr
    for p in out.iterdir():
        png_size(p)

    bad = plot(root, "human@nosuchtag", tmp_path / "never")
    assert bad.exit_code == 1 and "no version or tag 'nosuchtag'" in bad.stderr
    assert not (tmp_path / "never").exists()
