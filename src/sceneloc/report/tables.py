"""Result tables of ``sceneloc evaluate`` reports: the Table II style comparison of ``sceneloc table``
and the demo's table, read back from each report's ``metrics.json``."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from sceneloc.errors import SceneLocError
from sceneloc.validation import check_output_path


def metric_number(x) -> float:
    """Read back a median written to ``metrics.json`` (JSON has no infinity: null -> inf)."""
    return math.inf if x is None else float(x)


#: Result table columns: header, value of a metrics dict (float, or str for labels), number format.
COLUMNS: dict[str, tuple[str, Callable[[dict], float | str], str]] = {
    "scene": ("scene", lambda m: m["scene"], ""),
    "mode": ("mode", lambda m: f"{m['mode']} ({m['solver']})", ""),
    "rotation": ("median rot. (deg)", lambda m: metric_number(m["median_rotation_deg"]), ".2f"),
    "translation": ("median trans. (cm)", lambda m: 100 * metric_number(m["median_translation_m"]), ".1f"),
    "5cm_5deg": ("5cm/5deg (%)", lambda m: 100 * m["accuracy"]["5cm_5deg"], ".1f"),
    "10cm_10deg": ("10cm/10deg (%)", lambda m: 100 * m["accuracy"]["10cm_10deg"], ".1f"),
    "failures": ("failures", lambda m: float(m["failures"]), ".0f"),
    "ms": ("ms/frame", lambda m: m["timing_ms"]["total"]["median"] if m["timing_ms"].get("total") else math.nan, ".0f"),
}
TABLE_COLUMNS = ("scene", "mode", "rotation", "translation", "5cm_5deg")      # paper Table II
DEMO_COLUMNS = ("mode", "rotation", "translation", "5cm_5deg", "10cm_10deg", "failures", "ms")


def results_table(metrics: list[dict], columns: Sequence[str] = TABLE_COLUMNS, average: bool = True) -> str:
    """Markdown table, one row per metrics dict, plus the mean of every numeric column (as the
    paper's Table II averages medians and percentages)."""
    rows = [[COLUMNS[c][1](m) for c in columns] for m in metrics]
    if average and len(rows) > 1:
        avg: list[float | str] = []
        for j in range(len(columns)):
            vals = [r[j] for r in rows]
            numbers = [v for v in vals if isinstance(v, float)]
            avg.append(float(np.mean(numbers)) if isinstance(vals[0], float) else ("average" if j == 0 else ""))
        rows.append(avg)

    def cell(v, fmt: str) -> str:
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else ("inf" if math.isinf(v) else format(v, fmt))
        return str(v)

    header = [COLUMNS[c][0] for c in columns]
    text = [header] + [[cell(v, COLUMNS[c][2]) for v, c in zip(r, columns, strict=True)] for r in rows]
    widths = [max(len(r[j]) for r in text) for j in range(len(columns))]
    lines = ["| " + " | ".join(s.ljust(w) for s, w in zip(r, widths, strict=True)) + " |" for r in text]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines) + "\n"


def load_metrics(report_dir: str | Path) -> dict:
    """The ``metrics.json`` of a report folder written by ``sceneloc evaluate``."""
    path = Path(report_dir) / "metrics.json"
    try:
        m = json.loads(path.read_text())
    except FileNotFoundError:
        raise SceneLocError(f"{path}: missing (not a report folder of 'sceneloc evaluate')") from None
    except (OSError, ValueError) as e:
        raise SceneLocError(f"{path}: unreadable metrics ({e})") from None
    if not isinstance(m, dict) or not {"scene", "mode", "accuracy", "median_rotation_deg"} <= set(m):
        raise SceneLocError(f"{path}: not a metrics file of 'sceneloc evaluate'")
    return m


def table(report_dirs: Sequence[str | Path], out: str | Path | None = None, force: bool = False) -> str:
    """``sceneloc table``: the Table II style comparison of several reports; written to ``out`` if given."""
    if out is not None:
        check_output_path(out, "file", option="--out", force=force)
    seen: dict[Path, str | Path] = {}
    for d in report_dirs:   # the same report twice would weigh twice in the average
        key = Path(d).resolve()
        if key in seen:
            raise SceneLocError(f"{d}: report given twice (also as {seen[key]})")
        seen[key] = d
    text = results_table([load_metrics(d) for d in report_dirs])
    if out is not None:
        Path(out).write_text(text)
    return text


