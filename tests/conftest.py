"""Test-session setup shared by every part: offline mode and the fixture modules."""
import os
import sys
from pathlib import Path

import pytest

# Before anything imports transformers or huggingface_hub: tests never touch a hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["WANDB_MODE"] = "disabled"

sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = [
    "fixtures_clap",
    "fixtures_audio",
    "fixtures_llm",
    "fixtures_prefect",
]


class Ran:
    def __init__(self, code: int, out: str, err: str):
        self.exit_code, self.stdout, self.stderr, self.output = code, out, err, out + err


@pytest.fixture
def sept_main(capsys, monkeypatch):
    """`sept ARGS...` through the console script's `main` (where a SeptError becomes one line)."""
    def invoke(*args: str) -> Ran:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["sept", *map(str, args)])
        from sept.cli import main

        with pytest.raises(SystemExit) as stop:
            main()
        out, err = capsys.readouterr()
        return Ran(stop.value.code or 0, out, err)
    return invoke
