"""One budgeted training loop: a wall-clock (minutes) or step (iterations) budget, progress display,
a running average of the logged values, and a history that survives ``--resume``.

>>> budget = Budget("mapping", minutes=5)                      # doctest: +SKIP
>>> while not budget.done:                                      # doctest: +SKIP
...     lr = base_lr * schedule(budget.fraction)
...     loss = step(lr)
...     budget.tick(loss=loss)
...     with budget.paused():                                   # I/O that is not training time
...         maybe_checkpoint()
>>> budget.close()                                              # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from sceneloc.errors import SceneLocError
from sceneloc.progress import progress
from sceneloc.validation import check_budget

SCHEDULES = ("constant", "cosine")


def lr_factor(schedule: str, fraction: float, warmup: float = 0.03) -> float:
    """Learning-rate multiplier at ``fraction`` in [0, 1] of the budget: linear warm-up over the
    first ``warmup`` share, then ``constant`` or ``cosine`` decay (to 5 % of the peak)."""
    warm = min(1.0, 0.1 + 0.9 * fraction / warmup) if warmup > 0 else 1.0
    if schedule == "constant":
        return warm
    if schedule == "cosine":
        return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0))))
    raise ValueError(f"unknown schedule {schedule!r} (choose {', '.join(SCHEDULES)})")


class Budget:
    """Counts steps and training seconds against ``minutes`` or ``iterations`` (exactly one is used:
    ``iterations`` when given, for repeatable runs). ``step``/``elapsed``/``history`` resume a run."""

    def __init__(self, desc: str, minutes: float | None = None, iterations: int | None = None, step: int = 0,
                 elapsed: float = 0.0, history: list | None = None, history_every: int = 10, show: bool = True):
        self.iterations = iterations
        # a budget that is not > 0 would never end (negative) or divide by zero: refused, whoever built it
        if iterations is not None:
            check_budget(f"{desc}: iterations", iterations)
            self.seconds = math.inf  # counted in steps, not seconds
        elif minutes is not None:
            check_budget(f"{desc}: minutes", minutes)
            self.seconds = float(minutes) * 60.0
        else:
            raise ValueError("a budget needs minutes or iterations")
        self.step, self.elapsed = step, elapsed
        self.history = history if history is not None else []
        self.history_every = history_every
        self.running: dict[str, float] = {}
        total = iterations if iterations else int(self.seconds)
        self._bar = progress(total=total, desc=desc, unit="it" if iterations else "s", disable=not show,
                             initial=step if iterations else int(elapsed))
        self._t = time.perf_counter()

    @property
    def fraction(self) -> float:
        """Share of the budget used, in [0, 1+]."""
        return self.step / self.iterations if self.iterations else self.elapsed / self.seconds

    @property
    def done(self) -> bool:
        return self.fraction >= 1.0

    def tick(self, **values: float) -> None:
        """One step done; ``values`` (e.g. ``loss``) enter running averages shown on the bar."""
        now = time.perf_counter()
        self.elapsed += now - self._t
        self._t = now
        self.step += 1
        for k, v in values.items():
            self.running[k] = v if k not in self.running else 0.95 * self.running[k] + 0.05 * v
        if self.step % self.history_every == 0:
            self.history.append((round(self.elapsed, 1), self.step, *(round(v, 5) for v in self.running.values())))
        self._bar.set_postfix({k: f"{v:.4g}" for k, v in self.running.items()}, refresh=False)
        n = self.step if self.iterations else min(int(self.elapsed), int(self.seconds))
        self._bar.update(n - self._bar.n)

    @contextmanager
    def paused(self):
        """Time spent inside (checkpoint I/O, evaluation) is not training time."""
        try:
            yield
        finally:
            self._t = time.perf_counter()

    def close(self) -> None:
        self._bar.close()


def save_checkpoint(path: Path, state: dict) -> None:
    """Write a training checkpoint atomically: an interrupted save never leaves a broken file."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path | None, device: str = "cpu") -> dict:
    """The checkpoint ``--resume`` continues from; a one-line error when there is none."""
    if path is None or not path.exists():
        raise SceneLocError(f"{path}: no checkpoint to resume from")
    return torch.load(path, map_location=device, weights_only=False)


def resume_from(path: Path | None, device: str, desc: str, minutes: float | None, iterations: int | None,
                **restore: Any) -> tuple[Budget, dict]:
    """Continue a run from checkpoint ``path``: each keyword's object (a module, an optimiser) loads
    the checkpoint's state under that key; returns the budget at the checkpoint's step, time and
    history, and the checkpoint for the rest of the trainer's state (random generators, data order)."""
    ck = load_checkpoint(path, device)
    for key, obj in restore.items():
        obj.load_state_dict(ck[key])
    return Budget(desc, minutes, iterations, ck["step"], ck["elapsed"], ck["history"]), ck
