"""``sceneloc demo``: render the demo scene (or take a dataset), map it, localize its test split in
RGB and RGB-D, print a short table and write a one-page report (``OUT/index.html``).

The page shows the results table, how many test frames have a training frame within 30 cm /
30 deg (so that anyone can see whether the test is an interpolation), the estimated against the
ground-truth trajectory from above, the error CDFs, a few query images with their coordinate error
and confidence maps and pose errors, and the peer comparison when one was run into ``OUT/peers``.

A run refuses to write into a folder holding an earlier run unless ``force``; with ``force`` it
replaces exactly the files a run writes and reuses a complete rendered scene.
"""

from __future__ import annotations

import html
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from sceneloc.data.dataset import INTRINSICS_FILES, evenly_spaced, load_scene
from sceneloc.errors import SceneLocError
from sceneloc.geometry import read_pose_file
from sceneloc.mapping.build import map_scene
from sceneloc.pose.config import MODES
from sceneloc.report.diagnostics import EXAMPLE_FRAMES
from sceneloc.report.evaluation import PLOT_FILES, evaluate, match_pose_records, pose_error_arrays
from sceneloc.report.tables import DEMO_COLUMNS, results_table
from sceneloc.synth.dataset import generate
from sceneloc.synth.render import SensorOptions
from sceneloc.synth.scenes import DEMO_PRESET, make_scene
from sceneloc.training.trainers import MappingConfig
from sceneloc.validation import check_budget, check_output_path

DEMO_MINUTES = 4.0   # head training of `sceneloc demo` (150 mapping frames): RGB 64-66 % in 2 runs, 3 min 50-64 %
DEMO_CONFIDENCE_MINUTES = 0.25
DEMO_CONFIDENCE_MODE = "regression"        # one PointNet: a second (the classifier) would cost another stage
#: rendering of the demo scene: 3 training walks and 1 test walk of 50 frames (a few seconds each
#: walk on 2 cores); frames are what the mapping pays for, so there are few of them
DEMO_SYNTH = {"seed": 0, "frames": 50, "train_sequences": 3, "test_sequences": 1, "width": 640, "height": 480,
              "test_walk": "inside"}
#: what a run writes into OUT (``data`` aside); --force replaces exactly these
RUN_FILES = ("map", "report_rgb", "report_rgbd", "index.html", "demo.json", "results.md")
PEERS_FILE = Path("peers") / "bench_peers.json"   # benchmarks/bench_peers.py --out OUT/peers


# ============================================================================================ folder


def _is_demo_data(data: Path, preset: str, synth: dict) -> bool:
    """True if ``data`` is a complete rendering of ``preset`` with the ``synth`` settings (synth.json
    is written last, so its presence means the rendering finished)."""
    if not (data / INTRINSICS_FILES[1]).is_file():  # rendered before the layout named the colour camera
        return False
    try:
        meta = json.loads((data / "synth.json").read_text())
    except (OSError, ValueError):
        return False
    want = {"preset": preset, "seed": synth["seed"], "frames_per_sequence": synth["frames"],
            "width": synth["width"], "height": synth["height"], "test_walk": synth["test_walk"],
            "sensor": asdict(synth.get("sensor", SensorOptions())),
            "scene_fingerprint": make_scene(preset).fingerprint()}   # an older version of the preset: re-render
    return (all(meta.get(k) == v for k, v in want.items())
            and len(meta.get("train_sequences", [])) == synth["train_sequences"]
            and len(meta.get("test_sequences", [])) == synth["test_sequences"])


def prepare_out_dir(out: Path, force: bool) -> None:
    """Refuse an earlier run's folder unless ``force``; with ``force`` remove what a run writes
    (the rendered scene in ``out/data`` and a peer comparison in ``out/peers`` stay)."""
    if out.exists() and not out.is_dir():
        raise SceneLocError(f"{out}: exists and is not a directory")
    entries = sorted(p.name for p in out.iterdir()) if out.exists() else []
    if entries and not force:
        what = "holds a previous demo run" if set(entries) & {*RUN_FILES, "data"} else "is not empty"
        raise SceneLocError(f"{out}: {what}; pass --force to replace it (a rendered scene is reused) "
                            "or choose another --out")
    for name in RUN_FILES:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


# ============================================================================================ run


class _Stages:
    """Wall time per stage, logged as ``[k/n] stage`` lines."""

    def __init__(self, n: int, log: Callable[[str], None]):
        self.n, self.log, self.k = n, log, 0
        self.seconds: dict[str, float] = {}
        self._name: str | None = None
        self._t0 = 0.0

    def start(self, name: str, detail: str = "") -> None:
        self.stop()
        self.k += 1
        self._name, self._t0 = name, time.perf_counter()
        self.log(f"[{self.k}/{self.n}] {name}{': ' + detail if detail else ''}")

    def stop(self) -> None:
        if self._name is not None:
            self.seconds[self._name] = time.perf_counter() - self._t0
            self._name = None


def run_demo(out: str | Path = "demo_out", data: str | Path | None = None, minutes: float = DEMO_MINUTES,
             force: bool = False, device: str | None = None, log: Callable[[str], None] = print,
             preset: str | None = None, confidence_minutes: float = DEMO_CONFIDENCE_MINUTES,
             synth: dict | None = None) -> Path:
    """``sceneloc demo``: (render,) map, evaluate in RGB and RGB-D, print a table; returns ``out/index.html``.

    Without ``data`` the ``preset`` scene (default :data:`~sceneloc.synth.scenes.DEMO_PRESET`) is
    rendered into ``out/data`` -- or reused if an earlier run left it complete there. ``synth``
    overrides :data:`DEMO_SYNTH` (arguments of :func:`sceneloc.synth.dataset.generate`; tests render tiny scenes).
    """
    out = Path(out)
    t0 = time.perf_counter()
    check_budget("--minutes", minutes)
    check_budget("confidence minutes", confidence_minutes, zero_skips=True)
    check_output_path(out, "dir", [data])
    if data is not None and preset is not None:
        raise SceneLocError("--preset and --data: give one (a preset is rendered, a dataset is taken as it is)")
    preset = preset or DEMO_PRESET
    synth = {**DEMO_SYNTH, **(synth or {})}
    if data is None:
        make_scene(preset)                     # an unknown preset fails before anything is touched
    elif not Path(data).is_dir():
        raise SceneLocError(f"{data}: --data is not a dataset folder")
    prepare_out_dir(out, force)
    stages = _Stages(2 + len(MODES), log)
    if data is None:
        data = out / "data"
        if _is_demo_data(data, preset, synth):
            stages.start("scene", f"reusing the rendered {preset!r} scene in {data}")
        else:
            stages.start("rendering", f"the {preset!r} scene into {data}")
            generate(data, preset=preset, force=True, **synth)   # out/data is ours to replace
    else:
        stages.start("scene", f"dataset {data}")
    stages.start("mapping", f"{minutes:g} + {confidence_minutes:g} min into {out / 'map'}")
    cfg = MappingConfig(minutes=minutes, confidence_minutes=confidence_minutes, confidence_mode=DEMO_CONFIDENCE_MODE)
    map_scene(data, out / "map", cfg, force=True, device=device, log=log)
    results = []
    for mode in MODES:
        stages.start(f"localizing ({mode})", f"test split, report in {out / ('report_' + mode)}")
        results.append(evaluate(out / "map", data, out / f"report_{mode}", mode=mode, force=True, device=device))
    stages.stop()
    summary = {"data": str(data), "preset": None if Path(data) != out / "data" else preset,
               "minutes": minutes, "confidence_minutes": confidence_minutes,
               "stage_seconds": stages.seconds, "total_seconds": time.perf_counter() - t0,
               "results": {m["mode"]: _summary_row(m) for m in results}}
    (out / "demo.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    write_demo_page(out, results, summary)
    for line in demo_lines(out, results, summary):
        log(line)
    return out / "index.html"


def _summary_row(m: dict) -> dict:
    return {"frames": m["frames"], "failures": m["failures"], "5cm_5deg": m["accuracy"]["5cm_5deg"],
            "median_rotation_deg": m["median_rotation_deg"], "median_translation_m": m["median_translation_m"],
            "near_training": (m.get("near_training") or {}).get("share")}


def demo_lines(out: Path, results: list[dict], summary: dict) -> list[str]:
    """What the demo prints at the end: the table, the test set's closeness to training, paths."""
    lines = [results_table(results, DEMO_COLUMNS, average=False).rstrip()]
    near = results[0].get("near_training")
    if near:
        lines.append(f"{near['share']:.0%} of the {results[0]['frames']} test frames have a training frame within "
                     f"{round(near['max_m'] * 100)} cm / {near['max_deg']:g} deg (the rest are new viewpoints)")
    lines.append(f"total {summary['total_seconds'] / 60:.1f} min (" +
                 ", ".join(f"{k} {v:.0f} s" for k, v in summary["stage_seconds"].items()) + ")")
    lines.append(f"report: {out / 'index.html'}")
    return lines


# ============================================================================================ page


def _example_pose_errors(out: Path, data: Path, mode: str) -> dict[str, tuple[float, float]]:
    """Per test frame name, (rotation deg, translation m) error of the ``mode`` report's poses."""
    path = out / f"report_{mode}" / "poses.txt"
    frames = load_scene(data).frames("test")
    records, _ = match_pose_records(read_pose_file(path), frames, path)
    rot, trans = pose_error_arrays([r.pose for r in records], [f.pose for f in frames])
    return {f.name: (float(r), float(t)) for f, r, t in zip(frames, rot, trans, strict=True)}


def _fmt_error(rt: tuple[float, float]) -> str:
    r, t = rt
    return "failed" if not np.isfinite(r) else f"{r:.1f} deg, {100 * t:.1f} cm"


def _peers_html(out: Path) -> str:
    """The peer comparison table of ``out/peers/bench_peers.json``, or a line saying how to run it."""
    e = html.escape
    path = out / PEERS_FILE
    if not path.exists():
        return (f"<p>Not run. <code>python benchmarks/bench_peers.py --data {e(str(out / 'data'))} "
                f"--out {e(str(out / 'peers'))}</code> compares sceneloc with feature localization, PoseNet "
                "and other RANSACs on this scene; the next <code>sceneloc demo --force</code> shows it here.</p>")
    try:
        rows = json.loads(path.read_text())["rows"]
    except (OSError, ValueError, KeyError):
        return f"<p>{e(str(path))}: unreadable peer comparison</p>"
    head = ("dataset", "method", "mode", "5cm/5deg", "median rot. (deg)", "median trans. (cm)", "ms/frame")
    body = []
    for r in rows:
        if not r.get("applicable", True):
            continue
        cells = (r["dataset"], r["method"], r["mode"], f"{100 * r['within_5cm_5deg']:.1f} %",
                 "inf" if r["median_rot_deg"] is None else f"{r['median_rot_deg']:.2f}",
                 "inf" if r["median_trans_m"] is None else f"{100 * r['median_trans_m']:.1f}",
                 "" if r.get("loc_ms_median") is None else f"{r['loc_ms_median']:.0f}")
        body.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in cells) + "</tr>")
    return (f"<p>From <code>{e(str(path))}</code>.</p><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head)
            + "</tr>" + "".join(body) + "</table>")


def write_demo_page(out: Path, results: list[dict], summary: dict) -> None:
    """``out/index.html`` and ``out/results.md``: table, trajectory, CDFs, examples, peers."""
    e = html.escape
    table = results_table(results, DEMO_COLUMNS, average=False)
    (out / "results.md").write_text(table)
    lines = demo_lines(out, results, summary)[1:-1]
    data = Path(summary["data"])
    errors = {m["mode"]: _example_pose_errors(out, data, m["mode"]) for m in results}
    names = list(errors[results[0]["mode"]])
    picks = evenly_spaced(len(names), EXAMPLE_FRAMES)
    example_rows = "".join(f"<tr><td>{e(names[i])}</td>" + "".join(
        f"<td>{e(_fmt_error(errors[m['mode']][names[i]]))}</td>" for m in results) + "</tr>" for i in picks)

    def figure(mode: str, key: str, alt: str) -> str:
        src = f"report_{mode}/{PLOT_FILES[key]}"
        return f'<a href="{e(src)}"><img src="{e(src)}" alt="{e(alt)} ({e(mode)})"></a>'

    def pair(key: str, alt: str) -> str:
        return "<div class=row>" + "".join(figure(m["mode"], key, alt) for m in results) + "</div>"

    links = " | ".join(f'<a href="report_{e(m["mode"])}/index.html">full {e(m["mode"])} report</a>' for m in results)
    (out / "index.html").write_text(f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>sceneloc demo: {e(results[0]['scene'])}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto;padding:0 1em}}
table{{border-collapse:collapse;margin:0.5em 0}}td,th{{border:1px solid #ccc;padding:3px 8px}}
pre{{background:#f4f4f4;padding:0.6em}}img{{max-width:100%}}.row{{display:flex;gap:1em}}
.row a{{flex:1}}h2{{margin-top:1.4em;border-bottom:1px solid #ddd}}</style></head><body>
<h1>sceneloc demo: {e(results[0]['scene'])}</h1>
<p>Map <code>map/</code> of <code>{e(summary['data'])}</code>,
{summary['minutes']:g} + {summary['confidence_minutes']:g} minutes of mapping;
every test frame localized in RGB (PnP) and RGB-D (Kabsch). {links}</p>
<pre>{e(table)}</pre>
<p>{'<br>'.join(e(x) for x in lines)}</p>
<h2>Trajectory: estimated against ground truth, from above</h2>{pair('topdown', 'top-down trajectory')}
<h2>Pose error CDFs</h2>{''.join(figure(m['mode'], 'cdf', 'cumulative pose errors') for m in results)}
<h2>Query images, coordinate error and confidence maps</h2>
<table><tr><th>query</th>{''.join(f'<th>pose error ({e(m["mode"])})</th>' for m in results)}</tr>{example_rows}</table>
{figure(results[-1]['mode'], 'examples', 'query images with error and confidence maps')}
<h2>Peer comparison</h2>{_peers_html(out)}
</body></html>
""")
