"""Test-session setup shared by every part: offline mode and the fixture modules."""
import os
import sys
from pathlib import Path

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
