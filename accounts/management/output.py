"""What the operator commands share: progress on the terminal, private output files, who runs them."""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TextIO


def os_user() -> str:
    """The operator's OS user name, for the audit trail."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"uid {os.getuid()}"


def open_private(path: str) -> TextIO:
    """A new UTF-8 CSV file only its owner can read: these files hold personal data. The BOM makes
    spreadsheets read it as UTF-8 (what they save as "CSV UTF-8"); the import accepts it."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # also when the file was already there
    return open(descriptor, "w", encoding="utf-8-sig", newline="")


class Progress:
    """A bar with rows/s and ETA on a terminal; a plain line every `interval` seconds otherwise."""

    BAR_WIDTH = 30

    def __init__(self, write: Callable[[str], None], *, interactive: bool, total_bytes: int | None,
                 interval: float = 10.0) -> None:
        self._write = write
        self._interactive = interactive
        self._total_bytes = total_bytes or None
        self._interval = 0.1 if interactive else interval
        self._started = time.monotonic()
        self._last_shown = self._started
        self._bar_shown = False
        self._latest = (0, 0)

    def advance(self, rows: int, bytes_read: int) -> None:
        self._latest = (rows, bytes_read)
        now = time.monotonic()
        if now - self._last_shown >= self._interval:
            self._last_shown = now
            self._show(rows, bytes_read, now - self._started)

    def _show(self, rows: int, bytes_read: int, elapsed: float) -> None:
        rate = rows / elapsed if elapsed else 0.0
        fraction = min(bytes_read / self._total_bytes, 1.0) if self._total_bytes else None
        eta = str(timedelta(seconds=round(elapsed / fraction - elapsed))) if fraction else ""
        if self._interactive:
            bar = ""
            if fraction is not None:
                filled = round(fraction * self.BAR_WIDTH)
                bar = f"{fraction:4.0%} [{'#' * filled}{' ' * (self.BAR_WIDTH - filled)}] "
            self._write(f"\r{bar}{rows:,} rows  {rate:,.0f} rows/s" + (f"  ETA {eta}" if eta else "") + "\x1b[K")
            self._bar_shown = True
        else:
            share = f" ({fraction:.0%})" if fraction is not None else ""
            left = f", about {eta} left" if eta else ""
            self._write(f"Read {rows:,} rows{share}, {rate:,.0f} rows/s{left}\n")

    def phase(self, message: str) -> None:
        self._end_bar()
        self._write(f"{message}...\n")

    def finish(self) -> None:
        self._end_bar()

    def _end_bar(self) -> None:
        if self._bar_shown:
            self._show(*self._latest, time.monotonic() - self._started)  # where it ended, not where it last drew
            self._write("\n")
            self._bar_shown = False
