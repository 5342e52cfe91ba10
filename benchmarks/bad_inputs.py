"""Malformed inputs tried against every command and the Python API, and what each did.

Renders a tiny synthetic scene and fits a tiny map to it (seconds), then runs each case through
``sceneloc.cli.main.main`` in this process (or the API call) and classifies the outcome: ``exit 2, one
line`` (the promised SceneLocError), ``exit 0`` (accepted: the value is valid), ``usage`` (argparse
refused the value's type), ``TRACEBACK <type>`` (a bug) or ``HANG`` (still running after
``--case-timeout-s``, then interrupted). Prints a Markdown table (the one in docs/robustness.md) and
writes JSON. Run with an older ``src`` on PYTHONPATH, it shows what that version did.

Usage::

    .venv/bin/python benchmarks/bad_inputs.py [--work DIR] [--out benchmarks/results/bad_inputs.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from sceneloc.cli.main import main
from sceneloc.data.dataset import load_scene
from sceneloc.errors import SceneLocError
from sceneloc.mapping.build import map_scene
from sceneloc.mapping.scene_map import Map
from sceneloc.synth.dataset import SensorOptions, generate
from sceneloc.training.trainers import MappingConfig


def tiny_setup(work: Path) -> tuple[Path, Path]:
    """A 2+2-frame 160x120 scene and an FCN map over-fitted to it (as tests/conftest.py's tiny_map)."""
    scene = generate(work / "scene", frames=2, train_sequences=1, test_sequences=1, width=160, height=120,
                     sensor=SensorOptions.clean(), force=True, progress=False)
    cfg = MappingConfig(arch="fcn", width=16, input_height=96, iterations=300, batch_size=2, optimizer="adamw",
                        lr=3e-3, loss="tukey", aug_scale=1.0, aug_rotation_deg=0.0, aug_brightness=0.0,
                        aug_contrast=0.0, confidence_minutes=0.1)
    map_scene(scene, work / "map", cfg, force=True, log=lambda *a: None)
    return scene, work / "map"


class Hang(BaseException):
    """Raised by the alarm in a case that runs past its time (BaseException: no except clause eats it)."""


@contextlib.contextmanager
def time_limit(seconds: int):
    def hang(*_):
        raise Hang()
    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_cli(argv: list[str]) -> tuple[str, str]:
    """(outcome, first stderr line) of ``sceneloc argv``."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except SystemExit as e:
        return ("usage" if e.code == 2 else f"exit {e.code}"), err.getvalue().strip().splitlines()[-1]
    except Exception as e:  # a bug: the table says so
        return f"TRACEBACK {type(e).__name__}", str(e).splitlines()[0] if str(e) else ""
    lines = [ln for ln in err.getvalue().strip().splitlines() if ln.startswith("sceneloc:")]
    if code == 2:
        return ("exit 2, one line" if len(lines) == 1 else "exit 2, several lines"), lines[-1] if lines else ""
    return f"exit {code}", ""


def run_api(call: Callable[[], object]) -> tuple[str, str]:
    try:
        call()
    except SceneLocError as e:
        return ("SceneLocError, one line" if "\n" not in str(e) else "SceneLocError, several lines"), str(e)
    except Exception as e:
        return f"TRACEBACK {type(e).__name__}", str(e).splitlines()[0] if str(e) else ""
    return "accepted", ""


def broken_map(the_map: Path, work: Path, name: str, edit: Callable[[Path], None]) -> Path:
    d = work / f"map_{name}"
    shutil.copytree(the_map, d, dirs_exist_ok=True)
    edit(d)
    return d


def edit_config(key: str, value) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        cfg = json.loads((d / "config.json").read_text())
        if value is None:
            cfg.pop(key)
        else:
            cfg[key] = value
        (d / "config.json").write_text(json.dumps(cfg))
    return edit


def truncate(name: str) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[: len(data) // 2])
    return edit


#: map options that make a valid run quick (the bad input is what is tried)
QUICK = ("--iterations", "1", "--no-confidence", "--no-test-eval")


def cases(scene: Path, the_map: Path, work: Path) -> list[tuple[str, str, Callable[[], tuple[str, str]]]]:
    """(command, bad input, run) for every case."""
    s, m = str(scene), str(the_map)
    frame = load_scene(scene).frames("train")[0]
    img = str(frame.image_path)
    a_file = work / "a_file.txt"
    a_file.write_text("x")
    bad = work / "bad"
    bad.mkdir(exist_ok=True)
    (bad / "empty.txt").write_bytes(b"")
    (bad / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x01\x02")
    (bad / "quat.txt").write_text(f"{frame.name} 2 0.5 0.3 0.2 0 0 0\n")
    (bad / "partial.txt").write_text(f"{load_scene(scene).frames('test')[0].name} 1 0 0 0 0 0 0\n")
    (bad / "list.txt").write_text("missing.png\n")
    depth8 = work / "scene8"
    shutil.copytree(scene, depth8, dirs_exist_ok=True)
    d = sorted((depth8 / "seq-01").glob("*.depth.png"))[0]
    cv2.imwrite(str(d), (cv2.imread(str(d), cv2.IMREAD_ANYDEPTH) // 256).astype(np.uint8))
    maps = {name: str(broken_map(the_map, work, name, edit)) for name, edit in (
        ("no_norm", edit_config("normalisation", None)), ("list", lambda d: (d / "config.json").write_text("[1]")),
        ("arch", lambda d: edit_config("network", {"arch": "resnet"})(d)),
        ("view", truncate("scene_view.npz")), ("coords", truncate("coordinates.pt")))}
    loaded = Map.load(the_map, device="cpu")
    image = frame.load_image()
    K = frame.K
    fresh = itertools.count()

    def new_out() -> str:
        """A path of its own for each case: one case's leftovers must not decide the next one's outcome."""
        return str(work / f"out{next(fresh)}")

    def cli(*argv: str) -> Callable[[], tuple[str, str]]:
        return lambda: run_cli(list(argv))

    def nan_K() -> np.ndarray:
        bad_K = K.copy()
        bad_K[0, 0] = np.nan
        return bad_K

    return [
        ("map", "--minutes -1", cli("map", s, new_out(), "--arch", "fcn", "--minutes", "-1")),
        ("map", "--minutes 0", cli("map", s, new_out(), "--arch", "fcn", "--minutes", "0")),
        ("map", "--iterations -5", cli("map", s, new_out(), "--arch", "fcn", "--iterations", "-5")),
        ("map", "--iterations 0", cli("map", s, new_out(), "--arch", "fcn", "--iterations", "0")),
        ("map", "--confidence-minutes -1", cli("map", s, new_out(), "--arch", "fcn", "--confidence-minutes", "-1")),
        ("map", "--buffer-mb 0", cli("map", s, new_out(), "--buffer-mb", "0")),
        ("map", "--minutes nan", cli("map", s, new_out(), "--minutes", "nan")),
        ("map", "--seed -1", cli("map", s, new_out(), "--seed", "-1")),
        ("map", "MAP_DIR under a file", cli("map", s, str(a_file / "m"), "--arch", "fcn", *QUICK)),
        ("map", "MAP_DIR inside DATASET", cli("map", s, str(scene / "m"), "--arch", "fcn", *QUICK)),
        ("map", "8-bit depth map", cli("map", str(depth8), new_out(), "--arch", "fcn", *QUICK)),
        ("check", "8-bit depth map", cli("check", str(depth8))),
        ("demo", "--minutes -1", cli("demo", "--out", new_out(), "--minutes", "-1")),
        ("localize", "--intrinsics f,cx,cy (3 numbers)", cli("localize", m, "--image", img, "--intrinsics",
                                                                "120,80,60")),
        ("localize", "principal point outside the image", cli("localize", m, "--image", img, "--intrinsics",
                                                               "120,120,800,600")),
        ("localize", "--intrinsics nan,120,80,60", cli("localize", m, "--image", img, "--intrinsics", "nan,120,80,60")),
        ("localize", "DATASET and --image", cli("localize", m, s, "--image", img)),
        ("localize", "--out is a directory", cli("localize", m, s, "--out", str(work))),
        ("localize", "--out with a missing parent", cli("localize", m, s, "--out", str(work / "no" / "p.txt"))),
        ("localize", "--images list naming a missing file", cli("localize", m, "--images", str(bad / "list.txt"),
                                                                 "--out", str(work / "p.txt"))),
        ("localize", "--seed -1", cli("localize", m, "--image", img, "--seed", "-1")),
        ("localize", "--hypotheses 0", cli("localize", m, "--image", img, "--hypotheses", "0")),
        ("localize", "--query-scales 0", cli("localize", m, "--image", img, "--query-scales", "0")),
        ("localize", "map: config.json lacks 'normalisation'", cli("localize", maps["no_norm"], "--image", img)),
        ("localize", "map: config.json is a list", cli("localize", maps["list"], "--image", img)),
        ("localize", "map: unknown arch", cli("localize", maps["arch"], "--image", img)),
        ("localize", "map: truncated scene_view.npz", cli("localize", maps["view"], "--image", img)),
        ("localize", "map: truncated coordinates.pt", cli("localize", maps["coords"], "--image", img)),
        ("evaluate", "--poses: empty file", cli("evaluate", m, s, "--out", new_out(), "--poses",
                                                str(bad / "empty.txt"))),
        ("evaluate", "--poses: binary file", cli("evaluate", m, s, "--out", new_out(), "--poses",
                                                 str(bad / "binary.txt"))),
        ("evaluate", "--poses: quaternion of norm 2.1", cli("evaluate", m, s, "--out", new_out(), "--split", "train",
                                                            "--poses", str(bad / "quat.txt"))),
        ("evaluate", "--poses: covers 1 of 2 frames", cli("evaluate", m, s, "--out", new_out(), "--poses",
                                                          str(bad / "partial.txt"), "--quiet")),
        ("evaluate", "--out under a file", cli("evaluate", m, s, "--out", str(a_file / "r"))),
        ("export", "--min-confidence 5 (keeps 0 points)", cli("export", m, s, "--out", str(work / "x.ply"),
                                                              "--min-confidence", "5", "--quiet")),
        ("export", "--out is a directory", cli("export", m, s, "--out", str(work))),
        ("table", "the same report twice", cli("table", str(work), str(work / "."))),
        ("synth", "OUT under a file", cli("synth", str(a_file / "s"))),
        ("sfm", "--known-distance naming no image", cli("sfm", str(scene / "seq-01"), new_out(), "--known-distance",
                                                         "a.png", "b.png", "1")),
        ("info", "--intrinsics 1,1,1 (3 numbers)", cli("info", s, "--intrinsics", "1,1,1")),
        ("API Map.localize", "NaN intrinsics", lambda: run_api(lambda: loaded.localize(image, intrinsics=nan_K()))),
        ("API Map.localize", "all-zero depth", lambda: run_api(lambda: loaded.localize(
            image, depth=np.zeros(image.shape[:2], np.float32)))),
        ("API Map.localize", "float depth in millimetres", lambda: run_api(lambda: loaded.localize(
            image, depth=np.full(image.shape[:2], 1500.0, np.float32)))),
        ("API Map.localize", "uint16 depth in millimetres (valid)", lambda: run_api(lambda: loaded.localize(
            image, depth=cv2.imread(str(frame.depth_path), cv2.IMREAD_ANYDEPTH)))),
        ("API Map.localize", "estimator 'magic'", lambda: run_api(lambda: loaded.localize(image, estimator="magic"))),
        ("API Map.load", "a folder that is no map", lambda: run_api(lambda: Map.load(work))),
    ]


def main_(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", help="scratch folder (default: a temporary one)")
    p.add_argument("--out", default="benchmarks/results/bad_inputs.json")
    p.add_argument("--case-timeout-s", type=int, default=20, help="a case still running after this is a HANG")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        scene, the_map = tiny_setup(work)
        rows = []
        for command, what, run in cases(scene, the_map, work):
            t0 = time.perf_counter()
            try:
                with time_limit(a.case_timeout_s):
                    outcome, message = run()
            except Hang:
                outcome, message = "HANG", f"still running after {a.case_timeout_s} s"
            message = message.replace(str(work), "WORK")   # no path of this machine in the results
            rows.append({"command": command, "input": what, "outcome": outcome, "message": message,
                         "seconds": round(time.perf_counter() - t0, 2)})
    print("| command | bad input | outcome | message (shortened) |")
    print("|---|---|---|---|")
    for r in rows:
        msg = r["message"].replace("|", "/")
        msg = msg if len(msg) < 110 else msg[:107] + "..."
        print(f"| {r['command']} | {r['input']} | {r['outcome']} | {msg} |")
    bugs = [r for r in rows if r["outcome"].startswith(("TRACEBACK", "HANG")) or "several" in r["outcome"]]
    print(f"\n{len(rows)} cases, {len(bugs)} tracebacks, hangs or multi-line errors")
    Path(a.out).write_text(json.dumps({"rows": rows, "python": sys.version.split()[0]}, indent=2) + "\n")
    return 1 if bugs else 0


if __name__ == "__main__":
    sys.exit(main_())
