"""The one base of the errors sept reports to a user.

Anything a user can fix (a bad parameter, a missing file, a reference that names no version)
raises a subclass of `SeptError` whose message is one line naming the file, line, class or
parameter at fault. The `sept` command prints such an error as `error: <message>` and exits 1;
any other exception is a bug and shows its traceback.
"""
from __future__ import annotations


class SeptError(Exception):
    """A refusal the user can act on; `str(e)` is the whole message, one line."""
