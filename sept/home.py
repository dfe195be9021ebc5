"""Where sept keeps its local state: `$SEPT_HOME`, else `./.sept` in the working directory.

The local Prefect stack (`<home>/stack`), the shared LLM response cache of the default stack
and the tiny stand-in LLM (`<home>/tiny-llm`) live there, never beside the installed package
(which, from a wheel, is site-packages).
"""
from __future__ import annotations

import os
from pathlib import Path


def sept_home() -> Path:
    """The state folder, absolute, read from the environment at each call."""
    return Path(os.environ.get("SEPT_HOME") or ".sept").expanduser().resolve()
