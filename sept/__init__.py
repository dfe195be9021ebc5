"""sept: Semantically Expanded Prompt Tuning for audio-language models."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sept")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+source"
