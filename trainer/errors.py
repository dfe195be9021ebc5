"""The trainer's run error: a run that cannot start or continue as configured.

Its own module because the program (train.py) and the checkpoints both raise it. ConfigError
(config.py) and DataError (data.py) sit with what they check; all three are SeptErrors, which the
console script prints in one line.
"""
from __future__ import annotations

from sept.errors import SeptError


class TrainError(SeptError, RuntimeError):
    """The run cannot start or continue as configured; the message says why."""
