"""Frames per second of ``sceneloc synth`` per preset at 640x480 on one CPU core.

For each preset it times, over one trajectory with every sensor effect on:

* render: ray casting, shading and the sensor model (``synth.dataset.render_frame``), no file I/O;
* end to end: ``synth.dataset.generate`` for one sequence, i.e. also the trajectory and the PNG/pose files.

and, unless ``--skip-default``, the whole default dataset (``sceneloc synth OUT --seed 0``: room,
3 + 1 sequences x 60 frames). Threads are pinned to one (OMP/MKL/OpenBLAS env, cv2.setNumThreads(1))
before numpy and OpenCV load. Figures are printed as a Markdown table and written as JSON.

Usage::

    .venv/bin/python benchmarks/bench_synth.py [--frames 40] [--out benchmarks/results/bench_synth.json]
"""

from __future__ import annotations

import os

# One thread everywhere, set before numpy and OpenCV load.
os.environ.update(dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"),
                                "1"))

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from sceneloc.geometry import intrinsics_matrix
from sceneloc.synth import dataset as synth

cv2.setNumThreads(1)


def time_render(preset: str, frames: int) -> tuple[list[float], float]:
    """Wall seconds per frame of synth.render_frame (640x480, all sensor effects) along one trajectory,
    and the mean CPU seconds per frame (on a shared machine CPU time is the steadier figure)."""
    scene = synth.make_scene(preset)
    K = intrinsics_matrix(*synth.DEFAULT_INTRINSICS)
    renderer = synth.Renderer(scene, K, 640, 480)
    poses = list(synth.sample_trajectory(scene, frames, np.random.default_rng(0)))
    light, sensor = synth.Lighting(), synth.SensorOptions()
    synth.render_frame(renderer, poses, 0, light, 0.005, sensor, np.random.default_rng(0))  # warm-up
    times = []
    cpu = time.process_time()
    for i in range(frames):
        t = time.perf_counter()
        synth.render_frame(renderer, poses, i, light, 0.005, sensor, np.random.default_rng(i))
        times.append(time.perf_counter() - t)
    return times, (time.process_time() - cpu) / frames


def time_generate(out: Path, **kw) -> tuple[float, float]:
    """Wall and CPU seconds of one synth.generate call."""
    t, cpu = time.perf_counter(), time.process_time()
    synth.generate(out, progress=False, force=True, **kw)
    return time.perf_counter() - t, time.process_time() - cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=40, help="frames per preset (default 40)")
    ap.add_argument("--presets", default=",".join(synth.PRESETS), help="comma-separated (default: all)")
    ap.add_argument("--skip-default", action="store_true", help="do not time the whole default dataset")
    ap.add_argument("--out", default="benchmarks/results/bench_synth.json", help="JSON results file")
    args = ap.parse_args()

    results = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": platform.machine(),
               "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
               "numpy": np.__version__, "opencv": cv2.__version__, "size": "640x480", "threads": 1,
               "frames_per_preset": args.frames, "presets": {}}
    print("| preset | quads | render ms/frame (median wall / mean CPU) | render fps | "
          "end-to-end ms/frame (wall / CPU) | end-to-end fps |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            times, cpu = time_render(preset, args.frames)
            med = float(np.median(times))
            wall, wall_cpu = time_generate(Path(tmp) / preset, preset=preset, frames=args.frames,
                                           train_sequences=1, test_sequences=0)
            e2e, e2e_cpu = wall / args.frames, wall_cpu / args.frames
            n_quads = len(synth.make_scene(preset).quads)
            results["presets"][preset] = {
                "quads": n_quads, "render_ms_median": med * 1000, "render_ms_max": max(times) * 1000,
                "render_cpu_ms": cpu * 1000, "render_fps": 1 / med,
                "end_to_end_ms": e2e * 1000, "end_to_end_cpu_ms": e2e_cpu * 1000, "end_to_end_fps": 1 / e2e}
            print(f"| {preset} | {n_quads} | {med * 1000:.1f} / {cpu * 1000:.1f} | {1 / med:.1f} | "
                  f"{e2e * 1000:.1f} / {e2e_cpu * 1000:.1f} | {1 / e2e:.1f} |", flush=True)
        if not args.skip_default:
            wall, cpu = time_generate(Path(tmp) / "default", seed=0)
            results["default_dataset_s"] = {"wall": wall, "cpu": cpu}
            print(f"\nwhole default dataset (room, 4 x 60 frames at 640x480): {wall:.1f} s wall, {cpu:.1f} s CPU "
                  f"({wall / 240 * 1000:.1f} ms/frame wall)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
