"""Progress output for every long loop: a tqdm bar with ETA on a terminal, a few plain lines otherwise.

A tqdm bar redraws itself with carriage returns; written to a log file or a CI console that is
hundreds of lines of noise. :func:`progress` therefore returns a real tqdm bar only when stderr is
a terminal, and otherwise a :class:`PlainProgress` with the same small API (iteration, ``update``,
``set_postfix``, ``close``, ``n``, context manager) that prints one line at the start, at 25, 50
and 75 % and at the end of the stage.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import TextIO

from tqdm import tqdm

#: fractions of the total at which a non-terminal run prints a line
MILESTONES = (0.25, 0.5, 0.75)


def _format_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 60}:{s % 60:02d}" if s >= 60 else f"{s}s"


class PlainProgress:
    """Plain-line progress for non-terminals: start, 25/50/75 %, end (at most 5 lines per stage).

    ``total`` may be None (unknown length): then only the start and end lines are printed.
    """

    def __init__(self, iterable: Iterable | None = None, total: float | None = None, desc: str = "",
                 unit: str = "it", disable: bool = False, initial: float = 0, file: TextIO | None = None):
        if total is None and isinstance(iterable, Sized):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.disable, self.n, self.file = disable, initial, file
        self.postfix: dict[str, object] = {}
        self.start = time.perf_counter()
        self.initial = initial
        self.closed = False
        # milestones already passed when resuming (initial > 0) are not announced again
        self._next = [m for m in MILESTONES if total and initial < m * total]
        size = f" ({self._amount(total)} {unit})" if total else ""
        resumed = f", resuming at {self._amount(initial)}" if initial else ""
        self._print(f"{desc}: start{size}{resumed}")

    # ---------------------------------------------------------------- output

    @staticmethod
    def _amount(x: float | None) -> str:
        return "?" if x is None else (f"{x:g}" if isinstance(x, float) else str(x))

    def _print(self, text: str) -> None:
        if not self.disable:
            print(text, file=self.file or sys.stderr, flush=True)

    def _postfix_text(self) -> str:
        return "".join(f", {k}={v}" for k, v in self.postfix.items())

    def _milestone_line(self, fraction: float, total: float) -> str:
        elapsed = time.perf_counter() - self.start
        done = self.n - self.initial
        eta = elapsed * (total - self.n) / done if done > 0 else float("nan")
        eta_text = f", about {_format_seconds(eta)} left" if eta == eta else ""
        return (f"{self.desc}: {fraction:.0%} ({self._amount(self.n)}/{self._amount(self.total)} {self.unit}, "
                f"{_format_seconds(elapsed)}{eta_text}{self._postfix_text()})")

    # ---------------------------------------------------------------- tqdm's API

    def update(self, n: float = 1) -> None:
        self.n += n
        total = self.total
        while total and self._next and self.n >= self._next[0] * total:
            self._print(self._milestone_line(self._next.pop(0), total))

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        """Nothing to redraw: lines are printed at milestones only."""

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        elapsed = _format_seconds(time.perf_counter() - self.start)
        if self.total and self.n < self.total:
            what = f"stopped at {self._amount(self.n)}/{self._amount(self.total)} {self.unit}"
        else:
            what = f"done, {self._amount(self.n)} {self.unit}"
        self._print(f"{self.desc}: {what} in {elapsed}{self._postfix_text()}")

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("a progress bar without an iterable is updated by hand, not iterated")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(iterable: Iterable | None = None, total: float | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, initial: float = 0, leave: bool = True, file: TextIO | None = None,
             **tqdm_options):
    """A progress bar over ``iterable`` (or updated by hand up to ``total``) on ``file`` (stderr).

    A tqdm bar with rate and ETA when the stream is a terminal; a :class:`PlainProgress` printing
    a handful of lines otherwise. ``leave=False`` removes a terminal bar when it closes (the plain
    lines of a non-terminal stay: a log keeps its history). ``tqdm_options`` (``mininterval``,
    ``dynamic_ncols``, ...) only shape the terminal bar.
    """
    stream = file or sys.stderr
    is_tty = bool(getattr(stream, "isatty", lambda: False)())
    if is_tty:
        options = {"dynamic_ncols": True, "mininterval": 0.5, **tqdm_options}
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, initial=initial, leave=leave,
                    file=stream, **options)
    return PlainProgress(iterable, total, desc, unit, disable, initial, file)
