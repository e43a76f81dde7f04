"""`Reporter`: the runner's hooks as progress and waiting lines on stderr (none under --json)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from market.cli.kit import err_console
from trainer.training import TrainProgress

__all__ = ["Reporter"]


class Reporter:
    """Progress and waiting lines on stderr (none when `quiet`); a spinner on a terminal."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.tty = err_console.is_terminal
        self._status: Any = None
        self._last: tuple[str, float] = ("", 0.0)

    def line(self, message: str) -> None:
        self._stop()
        if not self.quiet:
            err_console.print(message, highlight=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        """What must show even under --json (stderr only): an outage being retried, a chain without a clock."""
        self._stop()
        err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)

    def wait(self, what: str, now: int, target: int) -> None:
        if self.quiet:
            return
        message = f"waiting for the {what}: block {now}, need {target} ({target - now} to go)"
        if self.tty:
            if self._status is None:
                self._status = err_console.status(message)
                self._status.start()
            else:
                self._status.update(message)
            return
        last_what, last_time = self._last
        if what != last_what or time.monotonic() - last_time > 15:
            self._last = (what, time.monotonic())
            err_console.print(message, highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def training(self) -> Iterator[Callable[[TrainProgress], None]]:
        self._stop()
        with Progress(
            SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), console=err_console, disable=self.quiet, transient=False,
        ) as progress:
            task = progress.add_task("training", total=None, loss="")

            def on_step(p: TrainProgress) -> None:
                loss = f"epoch {p.epoch}/{p.epochs} loss {p.epoch_loss:.4f}" if p.epoch_loss is not None else f"epoch {p.epoch}/{p.epochs}"
                progress.update(task, total=p.total_steps, completed=p.step, loss=loss)

            yield on_step

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def close(self) -> None:
        self._stop()
