"""Progress display for long work (placeholder until the terminal-aware version lands)."""

from __future__ import annotations

from tqdm import tqdm


def progress(iterable=None, total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False,
             **kwargs):
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True, mininterval=1.0,
                **kwargs)
