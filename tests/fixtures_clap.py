"""Fixtures: a RoBERTa-style tokenizer folder, a random-weight LAION-CLAP checkpoint on disk, and
one backbone loaded from them through `load_backbone` (one CLAP model per test session).

`clap_tokenizer_dir` also sets $SEPT_ROBERTA_TOKENIZER for the session, so code under test that
loads a backbone from a checkpoint path alone (CLI verbs) finds the tokenizer as a user's would.
"""
import os

import pytest


@pytest.fixture(scope="session")
def clap_tokenizer_dir(tmp_path_factory):
    from sept.clap import TOKENIZER_ENV
    from sept.clap.tiny import write_tokenizer

    directory = write_tokenizer(tmp_path_factory.mktemp("clap-tokenizer"))
    saved = os.environ.get(TOKENIZER_ENV)
    os.environ[TOKENIZER_ENV] = str(directory)
    yield directory
    if saved is None:
        os.environ.pop(TOKENIZER_ENV, None)
    else:
        os.environ[TOKENIZER_ENV] = saved


@pytest.fixture(scope="session")
def clap_checkpoint(tmp_path_factory):
    """Random-weight HTSAT-tiny CLAP, no fusion, official format (~630 MB)."""
    from sept.clap.tiny import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("clap-checkpoint") / "clap-random.pt", seed=0)


@pytest.fixture(scope="session")
def backbone(clap_checkpoint, clap_tokenizer_dir):
    """The session's ClapBackbone (HTSAT-tiny, no fusion, cpu). Frozen: tests must not modify it."""
    from sept.clap import load_backbone

    return load_backbone(clap_checkpoint, amodel="HTSAT-tiny", enable_fusion=False,
                         tokenizer=clap_tokenizer_dir, device="cpu")
