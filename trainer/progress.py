"""The Rich progress display of one training run: a bar per epoch and per audio-encoding pass.

`RunProgress(display)` is made per run and holds no state beyond it:
  display False/None  silent (every call is a no-op)
  display True        the run's own rich Progress, started and stopped with the `with` block
  display a running rich.progress.Progress (a sweep's, whose bar over runs sits above): the run's
                      bars are added to it and removed when the run ends; the caller owns it
"""
from __future__ import annotations

from typing import Any


def new_bar():
    """A rich Progress with the trainer's columns: description, bar, n/total, elapsed, info."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[info]}"))


class RunProgress:
    """One run's bars on its own display or on a caller's running one (see the module docstring)."""

    def __init__(self, display: Any = False):
        self.bar = None
        self.shared = not isinstance(display, bool) and display is not None
        self._own_tasks: list = []
        if self.shared:
            self.bar = display
        elif display:
            self.bar = new_bar()

    def __enter__(self) -> "RunProgress":
        if self.bar is not None and not self.shared:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.shared:
            for task in self._own_tasks:
                self.bar.remove_task(task)
        elif self.bar is not None:
            self.bar.__exit__(*exc)

    def task(self, description: str, total: int):
        if self.bar is None:
            return None
        task = self.bar.add_task(description, total=total, info="")
        if self.shared:
            self._own_tasks.append(task)
        return task

    def advance(self, task, n: int = 1) -> None:
        if self.bar is not None and task is not None:
            self.bar.advance(task, n)

    def complete(self, task, total: int) -> None:
        if self.bar is not None and task is not None:
            self.bar.update(task, completed=total)

    def info(self, task, text: str) -> None:
        if self.bar is not None and task is not None:
            self.bar.update(task, info=text)

    def log(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text)
