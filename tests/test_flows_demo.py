"""`sept demo`'s choice of models: hosted API when a key is set, else a small instruct model
from the local HF cache, else the stand-ins, and then the output says the neighbors are not
meaningful. (The demo run itself is the stack + deployment run covered by test_flows.py.)"""
from __future__ import annotations

from sept.flows.demo import DemoModels, choose_models, find_local_instruct_model


def _no_keys(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)


def test_a_small_instruct_model_in_the_local_hf_cache_is_found(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert find_local_instruct_model() is None
    snap = tmp_path / "models--Qwen--Qwen2.5-0.5B-Instruct" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    assert find_local_instruct_model() is None  # no weights: not usable
    (snap / "model.safetensors").write_bytes(b"")
    assert find_local_instruct_model() == ("Qwen/Qwen2.5-0.5B-Instruct", snap)


def test_hosted_key_wins_and_a_local_clap_checkpoint_is_used(tmp_path, monkeypatch, clap_checkpoint, clap_tokenizer_dir):
    _no_keys(monkeypatch)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-not-a-key")
    monkeypatch.setenv("SEPT_CLAP_CHECKPOINT", str(clap_checkpoint))
    models = choose_models(tmp_path, log=lambda m: None)
    assert models.deployment == "anthropic" and models.vllm_model is None
    assert models.clap_checkpoint == clap_checkpoint.resolve()
    assert models.stand_ins == () and models.note == ""
    assert "sk-test" not in repr(models)


def test_offline_without_models_uses_stand_ins_and_says_so(tmp_path, monkeypatch, tiny_llm_dir, clap_checkpoint,
                                                         clap_tokenizer_dir):
    _no_keys(monkeypatch)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("SEPT_CLAP_CHECKPOINT", str(tmp_path / "absent.pt"))
    # the stand-in CLAP folder is written once; here it is already there (the session's files)
    (tmp_path / "tiny-clap").mkdir()
    (tmp_path / "tiny-clap" / "clap-random.pt").symlink_to(clap_checkpoint)
    (tmp_path / "tiny-clap" / "tokenizer").symlink_to(clap_tokenizer_dir)
    models = choose_models(tmp_path, log=lambda m: None)
    assert models.deployment == "vllm-local"
    assert models.vllm_model.resolve() == tiny_llm_dir.resolve() and models.served_name == "sept-tiny-llm"
    assert models.clap_checkpoint == tmp_path / "tiny-clap" / "clap-random.pt"
    assert models.stand_ins == ("tiny LLM", "random-weight CLAP")
    assert "NOT meaningful" in models.note


def test_note_is_empty_with_real_models():
    assert DemoModels(deployment="openai", llm="OpenAI API").note == ""


def test_hub_probe_is_not_tried_offline_and_fails_fast_on_a_closed_port(monkeypatch):
    import socket
    import time

    from sept.flows.demo import hub_reachable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_reachable() is False
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    assert hub_reachable(timeout=2.0) is False
    assert time.monotonic() - start < 5.0
