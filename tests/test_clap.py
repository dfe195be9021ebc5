"""sept.clap: parity with laion-clap's own API on the same random-weight checkpoint,
checkpoint formats, pickled checkpoints only on trust, `sept clap convert`, tokenizer lookup,
fingerprints, audio input handling."""
import argparse
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

from sept.clap import (
    CLIP_SAMPLES, SAMPLE_RATE, TOKENIZER_ENV, BackboneError, BackboneFileError, UntrustedCheckpointError,
    convert_checkpoint, file_sha256, find_tokenizer_dir, fingerprint, get_backbone, load_backbone,
    load_checkpoint_into, mel_spectrogram, offline_hub, read_checkpoint,
)
from sept.errors import SeptError
from sept.clap.model import length_buckets

TEXTS = [
    "a sound of a dog.",
    "rain",
    "this is the sound of a loud siren in the street",
    "Cafe/Restaurant",
    "city_center at night, with distant traffic and people talking",
    "rain",                                             # duplicate: encoded once, returned twice
    "résumé of a café — 犬",                            # unicode
    " ".join(["very long prompt about a distant thunder storm"] * 20),   # > 77 tokens: truncated
]


def tone(seconds: float, rate: int = SAMPLE_RATE, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    """A decaying tone plus noise, [T] float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.4 * np.sin(2 * np.pi * freq * t) * np.exp(-t % 1.0) + 0.05 * rng.standard_normal(t.shape)
    return wave.astype(np.float32)


@pytest.fixture(scope="class")
def reference(clap_checkpoint, clap_tokenizer_dir):
    """laion-clap's CLAP_Module on the same checkpoint, loaded by its own load_ckpt.

    Class-scoped so it is freed before the fusion test builds its model (each CLAP is ~1.7 GB)."""
    import laion_clap

    with offline_hub(clap_tokenizer_dir):
        module = laion_clap.CLAP_Module(enable_fusion=False, device="cpu", amodel="HTSAT-tiny")
    module.load_ckpt(str(clap_checkpoint), verbose=False)
    yield module
    del module


# ----------------------------------------------------------------------------- parity

class TestParityWithLaionClap:
    """Same checkpoint, same inputs: laion-clap's CLAP_Module API vs ours."""

    def test_encode_text_matches_laion_clap(self, backbone, reference):
        ours = backbone.encode_text(TEXTS, batch_size=3)
        theirs = reference.get_text_embedding(TEXTS, use_tensor=True).detach()
        assert ours.shape == (len(TEXTS), 512)
        assert torch.allclose(ours.norm(dim=-1), torch.ones(len(TEXTS)), atol=1e-5)
        assert (ours - theirs).abs().max().item() <= 1e-5
        assert torch.equal(ours[1], ours[5])

    def test_tokens_are_padded_to_the_longest_prompt(self, backbone):
        short = backbone.tokenize(["rain", "a sound of a dog."])
        lengths = short["attention_mask"].sum(dim=1)
        assert short["input_ids"].shape[1] == lengths.max().item() < 77
        assert (short["input_ids"][:, 0] == 0).all()                       # <s> first: the pooled token
        assert short["input_ids"][0, lengths[0]:].eq(backbone.tokenizer.pad_token_id).all()
        assert backbone.tokenize(TEXTS)["input_ids"].shape[1] == 77        # truncation at 77 kept

    def test_token_path_matches_encode_text_and_passes_gradients(self, backbone):
        tokens = backbone.tokenize(TEXTS)
        embeds = backbone.token_embedding(tokens["input_ids"]).detach().requires_grad_(True)
        assert embeds.shape[-1] == backbone.text_dim == 768
        pooled = backbone.encode_token_embeddings(embeds, tokens["attention_mask"])
        assert (pooled.detach() - backbone.encode_text(TEXTS)).abs().max().item() <= 1e-5
        pooled[:, 0].sum().backward()
        assert embeds.grad is not None and embeds.grad.abs().sum().item() > 0
        assert all(p.grad is None and not p.requires_grad for p in backbone.model.parameters())

    def test_encode_audio_matches_laion_clap_on_48k_clips(self, backbone, reference):
        clips = [tone(1.0, freq=220), tone(3.7, freq=880, seed=1), tone(10.0, freq=330, seed=2)]
        ours = backbone.encode_audio(clips, sample_rate=SAMPLE_RATE, batch_size=2)
        theirs = torch.from_numpy(reference.get_audio_embedding_from_data(clips))
        assert ours.shape == (3, 512)
        assert torch.allclose(ours.norm(dim=-1), torch.ones(3), atol=1e-5)
        assert (ours - theirs).abs().max().item() <= 1e-4

    def test_16k_stereo_file_is_resampled_like_laion_clap(self, backbone, reference, tmp_path):
        left, right = tone(4.0, rate=16000, freq=300), tone(4.0, rate=16000, freq=500, seed=3)
        stereo = np.stack([left, right], axis=1)                           # [T, C]
        path = tmp_path / "stereo16k.wav"
        soundfile.write(path, stereo, 16000, subtype="FLOAT")
        ours = backbone.encode_audio([path])
        theirs = torch.from_numpy(reference.get_audio_embedding_from_filelist([str(path)]))
        assert (ours - theirs).abs().max().item() <= 1e-4
        # The same clip given as arrays, channels last or first.
        as_arrays = backbone.encode_audio([stereo, stereo.T], sample_rate=16000)
        assert (as_arrays - ours).abs().max().item() <= 1e-6

    def test_long_clip_random_crop_follows_laion_clap(self, backbone, reference):
        clip = tone(13.0, freq=600, seed=4)
        np.random.seed(7)
        theirs = torch.from_numpy(reference.get_audio_embedding_from_data([clip]))
        np.random.seed(7)
        ours = backbone.encode_audio([clip], sample_rate=SAMPLE_RATE, crop="random")
        assert (ours - theirs).abs().max().item() <= 1e-4


def test_length_buckets_hold_one_token_length_each():
    lengths = [5, 3, 5, 7, 3, 5] + [9] * 300
    batches = length_buckets(lengths, 256)
    assert sorted(row for batch in batches for row in batch) == list(range(len(lengths)))
    assert all(len({lengths[row] for row in batch}) == 1 for batch in batches)
    assert [lengths[batch[0]] for batch in batches] == [3, 5, 7, 9, 9]
    assert [len(batch) for batch in batches] == [2, 3, 1, 150, 150]      # 300 rows: two even halves
    assert batches[0] == [1, 4] and batches[1] == [0, 2, 5]               # input order kept within a length
    assert length_buckets([], 8) == []
    with pytest.raises(ValueError, match="batch_size"):
        length_buckets([1], 0)


def test_encode_text_buckets_give_the_batch_free_embeddings(backbone):
    texts = ["rain", "a dog", "a sound of a dog.", "rain on a tin roof", "thunder", "a sound of a cat."]
    alone = torch.cat([backbone.encode_text([t]) for t in texts])
    for batch_size in (1, 2, 256):
        assert (backbone.encode_text(texts, batch_size=batch_size) - alone).abs().max().item() <= 1e-5


def test_long_clip_deterministic_crop_is_the_centered_window(backbone):
    clip = tone(13.0, freq=600, seed=4)
    first = backbone.encode_audio([clip], sample_rate=SAMPLE_RATE)
    second = backbone.encode_audio([clip], sample_rate=SAMPLE_RATE)
    assert torch.equal(first, second)
    start = (len(clip) - CLIP_SAMPLES) // 2
    centered = backbone.encode_audio([clip[start:start + CLIP_SAMPLES]], sample_rate=SAMPLE_RATE)
    assert (first - centered).abs().max().item() <= 1e-6
    head = backbone.encode_audio([clip[:CLIP_SAMPLES]], sample_rate=SAMPLE_RATE)
    assert (first - head).abs().max().item() > 1e-4                   # the window matters


def test_encode_audio_rejects_unusable_input(backbone, tmp_path):
    with pytest.raises(ValueError, match="sample_rate"):
        backbone.encode_audio([tone(1.0)])
    with pytest.raises(FileNotFoundError, match="nowhere.wav"):
        backbone.encode_audio([tmp_path / "nowhere.wav"])
    with pytest.raises(ValueError, match="crop"):
        backbone.encode_audio([tone(1.0)], sample_rate=SAMPLE_RATE, crop="middle")
    with pytest.raises(ValueError, match="empty"):
        backbone.encode_audio([np.zeros(0, dtype=np.float32)], sample_rate=SAMPLE_RATE)


def test_fusion_mel_matches_librosa():
    import librosa

    cfg = {"sample_rate": 48000, "window_size": 1024, "hop_size": 480, "mel_bins": 64, "fmin": 50, "fmax": 14000}
    wave = tone(2.0, freq=1000, seed=5)
    ours = mel_spectrogram(torch.from_numpy(wave), cfg).numpy()
    power = librosa.feature.melspectrogram(
        y=wave, sr=48000, n_fft=1024, hop_length=480, win_length=1024, center=True, pad_mode="reflect",
        power=2.0, n_mels=64, fmin=50, fmax=14000, htk=True, norm=None)
    theirs = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None).T
    assert ours.shape == theirs.shape == (201, 64)
    assert np.abs(ours - theirs).max() < 1e-2                          # dB


# ----------------------------------------------------------------------------- model state

def test_backbone_is_frozen_and_not_a_module(backbone):
    assert not isinstance(backbone, torch.nn.Module)
    assert not backbone.model.training
    assert not any(p.requires_grad for p in backbone.model.parameters())
    assert backbone.embed_dim == 512
    assert backbone.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)   # fresh CLAP init


def test_random_checkpoint_is_in_the_official_format(clap_checkpoint, backbone):
    content = torch.load(clap_checkpoint, map_location="cpu", weights_only=True, mmap=True)
    assert set(content) == {"state_dict"}
    keys = list(content["state_dict"])
    assert all(k.startswith("module.") for k in keys)
    assert "module.text_branch.embeddings.position_ids" in keys
    assert {k[len("module."):] for k in keys} - {"text_branch.embeddings.position_ids"} == set(backbone.model.state_dict())


def test_checkpoint_variants_load_identically(backbone, clap_checkpoint, tmp_path):
    wrapped = torch.load(clap_checkpoint, map_location="cpu", weights_only=True, mmap=True)["state_dict"]
    bare = {k[len("module."):]: v for k, v in wrapped.items()}
    no_position_ids = {k: v for k, v in bare.items() if k != "text_branch.embeddings.position_ids"}
    # Between them the two files cover: no wrapper, no prefix, no position_ids.
    variants = {"prefixed-no-wrapper.pt": wrapped, "wrapper-no-prefix-no-position-ids.pt": {"state_dict": no_position_ids}}
    expected = backbone.encode_text(TEXTS[:4])
    reference_state = read_checkpoint(clap_checkpoint)
    for name, content in variants.items():
        path = tmp_path / name
        torch.save(content, path)
        state = read_checkpoint(path)
        assert set(state) - {"text_branch.embeddings.position_ids"} == set(no_position_ids), name
        assert all(torch.equal(state[k], reference_state[k]) for k in no_position_ids), name
        load_checkpoint_into(backbone.model, path, "HTSAT-tiny", False)    # same weights: idempotent
        assert torch.equal(backbone.encode_text(TEXTS[:4]), expected), name
        path.unlink()


def test_checkpoint_of_other_options_is_explained(backbone, tmp_path):
    fusion = tmp_path / "fusion-like.pt"
    torch.save({"state_dict": {"module.logit_scale_a": torch.zeros(()),
                               "module.audio_branch.fusion_model.local_att.0.weight": torch.zeros(1)}}, fusion)
    before = backbone.encode_text(TEXTS[:2])
    with pytest.raises(BackboneError, match="(?s)fusion-like.pt.*missing.*enable_fusion=True"):
        load_checkpoint_into(backbone.model, fusion, "HTSAT-tiny", False)
    assert torch.equal(backbone.encode_text(TEXTS[:2]), before)      # nothing loaded on a mismatch
    broken = tmp_path / "not-clap.pt"
    torch.save({"epoch": 3}, broken)
    with pytest.raises(BackboneError, match="not-clap.pt"):
        read_checkpoint(broken)


# ----------------------------------------------------------------------------- pickled checkpoints

class MarkerPayload:
    """Unpickling this object creates the folder `marker`: proof that the pickle's code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker, 0o777, True))


@pytest.fixture(scope="module")
def pickled_checkpoint(clap_checkpoint, tmp_path_factory):
    """The session's weights as a released checkpoint pickles them: {"state_dict": ...} beside a
    training object (argparse.Namespace) and a payload whose unpickling leaves a marker folder."""
    folder = tmp_path_factory.mktemp("pickled")
    marker = folder / "payload-ran"
    state = torch.load(clap_checkpoint, map_location="cpu", weights_only=True, mmap=True)["state_dict"]
    path = folder / "released.pt"
    torch.save({"state_dict": state, "args": argparse.Namespace(amodel="HTSAT-tiny"), "epoch": 45,
                "payload": MarkerPayload(marker)}, path)
    return path, marker


def test_pickled_checkpoint_is_refused_without_trust_and_nothing_runs(pickled_checkpoint, clap_tokenizer_dir):
    path, marker = pickled_checkpoint
    shutil.rmtree(marker, ignore_errors=True)
    refusals = {
        "read_checkpoint": lambda: read_checkpoint(path),
        "load_backbone": lambda: load_backbone(path, tokenizer=clap_tokenizer_dir),
        "get_backbone": lambda: get_backbone(path, tokenizer=clap_tokenizer_dir),
    }
    for name, call in refusals.items():
        with pytest.raises(UntrustedCheckpointError) as error:
            call()
        message = str(error.value)
        assert isinstance(error.value, SeptError), name
        assert str(path) in message, name
        assert "--trust-checkpoint" in message and "trust_checkpoint=true" in message, name
        assert f"sept clap convert {path} " in message and ".safetensors" in message, name
        assert not marker.exists(), f"{name} ran the pickle's code"


def test_pickled_checkpoint_loads_on_trust(pickled_checkpoint, backbone, clap_checkpoint):
    path, marker = pickled_checkpoint
    shutil.rmtree(marker, ignore_errors=True)
    reference = read_checkpoint(clap_checkpoint)
    state = read_checkpoint(path, trust_checkpoint=True)
    assert marker.is_dir()            # trust means a full unpickle, payload included
    assert set(state) == set(reference) and all(torch.equal(state[k], reference[k]) for k in reference)
    expected = backbone.encode_text(TEXTS[:4])
    load_checkpoint_into(backbone.model, path, "HTSAT-tiny", False, trust_checkpoint=True)   # same weights
    assert torch.equal(backbone.encode_text(TEXTS[:4]), expected)


def test_converted_checkpoint_loads_safely_with_the_same_weights(pickled_checkpoint, backbone, clap_checkpoint,
                                                                 clap_tokenizer_dir, tmp_path):
    path, marker = pickled_checkpoint
    out = tmp_path / "released.safetensors"
    assert convert_checkpoint(path, out) == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["released.safetensors"]   # no temp file left
    shutil.rmtree(marker, ignore_errors=True)
    state = read_checkpoint(out)           # no trust needed, nothing unpickled
    assert not marker.exists()
    reference = read_checkpoint(clap_checkpoint)
    assert set(state) == set(reference) and all(torch.equal(state[k], reference[k]) for k in reference)
    expected_text = backbone.encode_text(TEXTS[:4])
    expected_audio = backbone.encode_audio([tone(3.0)], sample_rate=SAMPLE_RATE)
    load_checkpoint_into(backbone.model, out, "HTSAT-tiny", False)
    assert torch.equal(backbone.encode_text(TEXTS[:4]), expected_text)
    assert torch.equal(backbone.encode_audio([tone(3.0)], sample_rate=SAMPLE_RATE), expected_audio)
    # The fingerprint names the file's bytes: a converted file is an encoder file of its own.
    assert fingerprint(out, tokenizer=clap_tokenizer_dir) != fingerprint(path, tokenizer=clap_tokenizer_dir)
    assert fingerprint(out, tokenizer=clap_tokenizer_dir) == fingerprint(out, tokenizer=clap_tokenizer_dir)
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        assert f.metadata()["sept.source_sha256"] == file_sha256(path)


def test_convert_output_must_be_safetensors(pickled_checkpoint, tmp_path):
    path, _ = pickled_checkpoint
    with pytest.raises(BackboneError, match="out.pt must end in .safetensors"):
        convert_checkpoint(path, tmp_path / "out.pt")
    with pytest.raises(BackboneFileError, match="missing.pt"):
        convert_checkpoint(tmp_path / "missing.pt", tmp_path / "out.safetensors")
    assert list(tmp_path.iterdir()) == []


def _sept(*args):
    """The `sept` console script, as a user runs it (SeptError -> one line, exit 1)."""
    return subprocess.run([sys.executable, "-m", "sept", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_sept_clap_convert_command(pickled_checkpoint, tmp_path):
    path, _ = pickled_checkpoint
    out = tmp_path / "converted.safetensors"
    done = _sept("clap", "convert", str(path), str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(out)
    reference = read_checkpoint(path, trust_checkpoint=True)
    state = read_checkpoint(out)
    assert set(state) == set(reference) and all(torch.equal(state[k], reference[k]) for k in reference)

    refused = _sept("clap", "convert", str(path), str(tmp_path / "converted.bin"))
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: ") and "converted.bin must end in .safetensors" in refused.stderr
    assert "Traceback" not in refused.stderr


# ----------------------------------------------------------------------------- missing files

def test_missing_checkpoint_names_the_path(clap_tokenizer_dir, tmp_path):
    missing = tmp_path / "630k-audioset-best.pt"
    with pytest.raises(BackboneFileError) as error:
        load_backbone(missing, tokenizer=clap_tokenizer_dir)
    assert str(missing) in str(error.value) and "checkpoint" in str(error.value)


def test_missing_tokenizer_says_what_to_put_where(clap_checkpoint, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BackboneFileError) as error:
        load_backbone(clap_checkpoint, tokenizer=empty)
    for part in (str(empty), "vocab.json", "merges.txt", TOKENIZER_ENV):
        assert part in str(error.value)

    half = tmp_path / "half"
    half.mkdir()
    (half / "vocab.json").write_text("{}")
    monkeypatch.setenv(TOKENIZER_ENV, str(half))
    with pytest.raises(BackboneFileError, match=f"(?s)\\${TOKENIZER_ENV}.*lacks merges.txt"):
        load_backbone(clap_checkpoint)

    import huggingface_hub.constants

    monkeypatch.delenv(TOKENIZER_ENV)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(BackboneFileError, match=f"(?s){TOKENIZER_ENV} is not set.*roberta-base"):
        find_tokenizer_dir()


def test_tokenizer_found_in_the_local_hf_cache(clap_tokenizer_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants

    snapshot = tmp_path / "hub" / "models--roberta-base" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (tmp_path / "hub" / "models--roberta-base" / "refs").mkdir()
    (tmp_path / "hub" / "models--roberta-base" / "refs" / "main").write_text("a" * 40)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(clap_tokenizer_dir / name, snapshot / name)
    monkeypatch.delenv(TOKENIZER_ENV, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert find_tokenizer_dir() == snapshot


def test_written_tokenizer_has_roberta_specials(clap_tokenizer_dir):
    from transformers import RobertaTokenizer

    tokenizer = RobertaTokenizer.from_pretrained(str(clap_tokenizer_dir), local_files_only=True)
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [0, 1, 2, 3, 4]
    assert len(tokenizer) <= 50265
    ids = tokenizer("a sound of a dog barking")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and 3 not in ids


# ----------------------------------------------------------------------------- fingerprint

def test_fingerprint_follows_content_and_options(backbone, clap_checkpoint, clap_tokenizer_dir, tmp_path):
    from sept.clap import factory as module

    first = backbone.fingerprint
    assert len(first) == 16 and int(first, 16) >= 0
    module._FILE_HASHES.clear()
    assert fingerprint(clap_checkpoint, "HTSAT-tiny", False, clap_tokenizer_dir) == first
    assert fingerprint(clap_checkpoint, "HTSAT-base", False, clap_tokenizer_dir) != first
    assert fingerprint(clap_checkpoint, "HTSAT-tiny", True, clap_tokenizer_dir) != first

    # Same bytes under another path: same fingerprint. One weight changed: another.
    link = tmp_path / "link.pt"
    link.hardlink_to(clap_checkpoint)
    assert fingerprint(link, tokenizer=clap_tokenizer_dir) == first
    content = torch.load(clap_checkpoint, map_location="cpu", weights_only=True, mmap=True)
    key = "module.text_projection.0.bias"
    content["state_dict"][key] = content["state_dict"][key].clone()
    content["state_dict"][key][0] += 1e-3
    changed = tmp_path / "changed.pt"
    torch.save(content, changed)
    assert file_sha256(changed) != file_sha256(clap_checkpoint)
    assert fingerprint(changed, tokenizer=clap_tokenizer_dir) != first
    changed.unlink()

    tokenizer_copy = tmp_path / "tokenizer"
    shutil.copytree(clap_tokenizer_dir, tokenizer_copy)
    assert fingerprint(clap_checkpoint, tokenizer=tokenizer_copy) == first
    with open(tokenizer_copy / "merges.txt", "a") as f:
        f.write("z z\n")
    assert fingerprint(clap_checkpoint, tokenizer=tokenizer_copy) != first


def test_unknown_amodel_is_named(clap_checkpoint, clap_tokenizer_dir):
    with pytest.raises(BackboneError, match="HTSAT-huge.*HTSAT-tiny"):
        load_backbone(clap_checkpoint, amodel="HTSAT-huge", tokenizer=clap_tokenizer_dir)


# ----------------------------------------------------------------------------- fusion

def test_fusion_backbone_end_to_end(backbone, clap_tokenizer_dir, tmp_path):
    """A fusion checkpoint through load_backbone: short, 10 s and long clips (runs after the
    parity class has freed laion-clap's model)."""
    from sept.clap.tiny import write_random_checkpoint

    checkpoint = write_random_checkpoint(tmp_path / "fusion.pt", enable_fusion=True, seed=1)
    with pytest.raises(BackboneError, match="enable_fusion=True"):
        load_checkpoint_into(backbone.model, checkpoint, "HTSAT-tiny", False)   # checked before loading
    fused = load_backbone(checkpoint, enable_fusion=True, tokenizer=clap_tokenizer_dir)
    checkpoint.unlink()
    assert fused.fingerprint != backbone.fingerprint

    short, full, long = tone(3.0, seed=6), tone(10.0, seed=7), tone(25.0, seed=8)
    together = fused.encode_audio([short, full, long], sample_rate=SAMPLE_RATE)
    assert together.shape == (3, 512)
    assert torch.allclose(together.norm(dim=-1), torch.ones(3), atol=1e-5)
    # A clip's embedding does not depend on its batch (laion-clap routes all-short batches apart).
    alone = torch.cat([fused.encode_audio([clip], sample_rate=SAMPLE_RATE) for clip in (short, full, long)])
    assert (together - alone).abs().max().item() <= 1e-4
    assert torch.equal(fused.encode_audio([long], sample_rate=SAMPLE_RATE), alone[2:])
    np.random.seed(0)
    drawn = fused.encode_audio([long], sample_rate=SAMPLE_RATE, crop="random")
    assert (drawn - alone[2:]).abs().max().item() > 1e-6            # other chunks, other embedding
    del fused
