"""sceneloc side by side with what a user would pick instead: one command, one docs/results.md section.

Rows, on every dataset, in RGB (2D-3D, PnP) and RGB-D (3D-3D, Kabsch) mode:

* ``sceneloc`` -- ``sceneloc map`` then ``Map.localize()``, the library's default estimator
  (``random`` if a map given with --sceneloc-map has no confidence network).
* ``sceneloc-ransac``, ``sceneloc+opencv``, ``sceneloc+poselib`` -- the same map and the same
  predicted correspondences handed to other robust estimators: the library's ``method='ransac'``
  (OpenCV MAGSAC++ PnP / Kabsch-RANSAC, then a re-fit on all inliers), plain
  ``cv2.solvePnPRansac(USAC_MAGSAC)`` and poselib's LO-RANSAC (both RGB only; ``peers/ransac_backends.py``).
* ``features-sift`` (``features-orb`` with ``--features sift orb``) -- structure-based feature
  localization: keypoints lifted to 3D with the training depth, VLAD retrieval, ratio-test matching,
  PnP / Kabsch RANSAC (``peers/feature_localizer.py``).
* ``posenet`` -- a small CNN regressing the pose, trained from scratch (``peers/posenet.py``; RGB only).

Measured per row: median rotation / translation error, share within 5 cm / 5 deg and 10 cm / 10 deg
(a failure has infinite error and stays in every denominator), failures, mapping wall and CPU time,
localization time per frame (median and p95: wall time of the localize call on an image already
decoded, network included), map size on disk (the files localization reads) and peak memory.
Peak memory is the peak resident set size (Linux VmHWM, else ru_maxrss) of the child process that
did the work -- each mapping and each localization pass runs in its own process -- so it includes
the Python interpreter and the libraries every method imports; the section reports that floor
(an idle process with numpy, OpenCV, torch and sceneloc imported) beside the table.

Budgets: sceneloc gets ``--minutes`` of stage 1 and ``--confidence-minutes`` of stage 2, PoseNet the
sum (the same training time); the feature map has no budget (one pass over the images).

Usage:
    python benchmarks/bench_peers.py --out benchmarks/results --write docs/results.md
    python benchmarks/bench_peers.py --data ../shared/data/7scenes-redkitchen --sceneloc-map runs/rk_default
    python benchmarks/bench_peers.py --quick --out runs/peers --work runs/peers/work   # seconds-scale smoke run

``--data`` takes dataset roots and the word ``synth`` (the default synthetic room, rendered into
``--work`` by ``sceneloc synth OUT --seed 0``). Maps, logs and per-job results go under ``--work``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

# As the sceneloc CLI: many small matrix products; BLAS threads would only fight the network's.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

# peers/ sits beside this script: importable also when this file is imported as a module
sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import map_size_bytes

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REDKITCHEN = REPO.parent / "shared" / "data" / "7scenes-redkitchen"
HEADING = "## Peers: sceneloc beside feature matching, PoseNet and other RANSAC backends"
MODES = ("rgb", "rgbd")
BACKEND_ROWS = ("sceneloc", "sceneloc-ransac", "sceneloc+opencv", "sceneloc+poselib")
RGB_ONLY = {"sceneloc+opencv": "2D-3D only (no rigid 3D-3D RANSAC in OpenCV)",
            "sceneloc+poselib": "2D-3D only (no rigid 3D-3D RANSAC in poselib)",
            "posenet": "RGB only (pose regression does not use depth)"}
LABELS = {
    "sceneloc": "sceneloc (default estimator)",
    "sceneloc-ransac": "sceneloc map + its RANSAC",
    "sceneloc+opencv": "sceneloc map + OpenCV MAGSAC++",
    "sceneloc+poselib": "sceneloc map + poselib",
    "features-sift": "SIFT features + VLAD",
    "features-orb": "ORB features + VLAD",
    "posenet": "PoseNet-style CNN",
}
#: Every row of the results JSON has these keys (numbers are None where not applicable or failed).
ROW_FIELDS = ("dataset", "method", "mode", "applicable", "note", "frames", "failures", "median_rot_deg",
              "median_trans_m", "within_5cm_5deg", "within_10cm_10deg", "mapping_s", "mapping_cpu_s",
              "loc_ms_median", "loc_ms_p95", "map_mb", "peak_rss_mapping_mb", "peak_rss_localize_mb")
QUICK = {"minutes": 0.02, "confidence_minutes": 0.01, "max_train": 24, "max_test": 6}
SYNTH_FULL = ["--seed", "0"]  # `sceneloc synth OUT --seed 0`: the default synthetic room
SYNTH_QUICK = ["--seed", "0", "--frames", "8", "--train-sequences", "2", "--test-sequences", "1",
               "--width", "160", "--height", "120"]


# =============================================================================== child processes
#
# Every mapping and localization pass runs as `python bench_peers.py --worker JOB.json` so that its
# peak memory is its own. The worker writes RESULT.json with its outputs, wall and CPU seconds of
# the work (imports excluded) and the process's peak resident set size.


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB: VmHWM (Linux), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def _load_frames(data: str, split: str):
    from sceneloc.data.dataset import load_scene
    return load_scene(data).frames(split)


def _errors(pose: np.ndarray | None, gt: np.ndarray) -> tuple[float | None, float | None]:
    from sceneloc.geometry import pose_errors
    if pose is None:
        return None, None
    rot, trans = pose_errors(pose, gt)
    return float(rot), float(trans)


def _record(name: str, pose, gt, ms: float, inliers: int | None = None) -> dict:
    """One localized frame: errors (None = failed), milliseconds, inliers; rounded far below what matters."""
    rot, trans = _errors(pose, gt)
    return {"name": name, "rot_deg": None if rot is None else round(rot, 4),
            "trans_m": None if trans is None else round(trans, 5), "ms": round(ms, 2), "inliers": inliers}


def job_prepare(job: dict) -> dict:
    """Dataset check (and, with max_train/max_test, a subset view of symbolic links): frame counts."""
    from sceneloc.data.dataset import load_scene
    root = Path(job["data"])
    if job.get("max_train") or job.get("max_test"):
        root = subset_view(load_scene(root), Path(job["subset_dir"]), job.get("max_train"), job.get("max_test"))
    scene = load_scene(root)
    train, test = scene.frames("train"), scene.frames("test")
    return {"path": str(root), "train": len(train), "test": len(test), "image_hw": list(scene.image_size),
            "test_has_depth": all(f.depth_path is not None for f in test)}


def _evenly(frames: list, n: int | None) -> list:
    from sceneloc.data.dataset import evenly_spaced
    return [frames[i] for i in evenly_spaced(len(frames), n or None)]


def subset_view(scene, out: Path, max_train: int | None, max_test: int | None) -> Path:
    """A 7-Scenes-layout dataset of evenly spaced frames of ``scene`` made of symbolic links to the
    original files (nothing is copied): seq-01 = train, seq-02 = test, the first frame's cameras (its
    depth maps are linked as they are on disk, so the depth camera is written beside the colour one)."""
    from sceneloc.data.dataset import INTRINSICS_FILES
    from sceneloc.synth.dataset import format_matrix
    out.mkdir(parents=True, exist_ok=True)
    for split, seq, n in (("train", 1, max_train), ("test", 2, max_test)):
        folder = out / f"seq-{seq:02d}"
        folder.mkdir(exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for i, f in enumerate(_evenly(scene.frames(split), n)):
            stem, image = folder / f"frame-{i:06d}", f.image_path.resolve()
            Path(f"{stem}.color{image.suffix.lower()}").symlink_to(image)
            if f.depth_path is not None:
                Path(f"{stem}.depth.png").symlink_to(f.depth_path.resolve())
            if scene.layout == "7scenes":
                Path(f"{stem}.pose.txt").symlink_to(image.with_name(image.name.split(".color")[0] + ".pose.txt"))
            else:  # DSAC*/ACE pose files: write the parsed camera-to-world matrix
                Path(f"{stem}.pose.txt").write_text(format_matrix(f.pose))
        (out / f"{split.capitalize()}Split.txt").write_text(f"sequence{seq}\n")
    first = scene.frames("train")[0]
    for name, K in zip(INTRINSICS_FILES, (first.K if first.depth_K is None else first.depth_K, first.K), strict=True):
        (out / name).write_text(format_matrix(K))
    return out


def job_baseline(job: dict) -> dict:
    """The memory floor every method pays (interpreter + numpy, OpenCV, torch, sceneloc) and versions."""
    import cv2
    import torch

    import sceneloc.mapping.scene_map  # noqa: F401  (imported only to count its memory in the floor)
    from peers.ransac_backends import poselib_available
    versions = {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__,
                "torch": torch.__version__}
    if poselib_available():
        import poselib
        versions["poselib"] = getattr(poselib, "__version__", "?")
    return {"versions": versions, "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}


def job_features_map(job: dict) -> dict:
    from peers.feature_localizer import FeatureConfig, build_map
    return build_map(_load_frames(job["data"], "train"), job["map_dir"], FeatureConfig(detector=job["detector"]))


def job_features_localize(job: dict) -> dict:
    from peers.feature_localizer import FeatureLocalizer
    loc = FeatureLocalizer(job["map_dir"])
    out = {mode: [] for mode in job["modes"]}
    for i, frame in enumerate(_load_frames(job["data"], "test")):
        image = frame.load_image()
        depth = frame.load_depth(image.shape[:2]) if "rgbd" in out else None
        for mode, records in out.items():
            t0 = time.perf_counter()
            res = loc.localize(image, frame.K, depth if mode == "rgbd" else None,
                               rng=np.random.default_rng([job["seed"], i]))
            ms = (time.perf_counter() - t0) * 1e3
            records.append(_record(frame.name, res.pose, frame.pose, ms, res.inliers))
    return {"records": out}


def job_posenet_train(job: dict) -> dict:
    from peers.posenet import MAP_FILES, PoseNetConfig, train_posenet
    report = train_posenet(_load_frames(job["data"], "train"), job["map_dir"], PoseNetConfig(minutes=job["minutes"]))
    return {**report, "map_bytes": map_size_bytes(job["map_dir"], MAP_FILES)}


def job_posenet_localize(job: dict) -> dict:
    from peers.posenet import PoseNetLocalizer
    loc = PoseNetLocalizer(job["map_dir"])
    records = []
    for frame in _load_frames(job["data"], "test"):
        image = frame.load_image()
        t0 = time.perf_counter()
        pose = loc.localize(image)
        records.append(_record(frame.name, pose, frame.pose, (time.perf_counter() - t0) * 1e3))
    return {"records": {"rgb": records}}


def job_sceneloc_map(job: dict) -> dict:
    """`sceneloc map` itself, run in this process (the console script's code path) so that its peak
    memory is measured like every other job's."""
    from sceneloc.cli.main import main as sceneloc_main
    argv = ["map", job["data"], job["map_dir"], "--minutes", str(job["minutes"]), "--confidence-minutes",
            str(job["confidence_minutes"]), "--force", "--no-test-eval"]
    code = sceneloc_main(argv)
    if code != 0:
        raise RuntimeError(f"sceneloc {' '.join(argv)} exited with {code}")
    report = json.loads((Path(job["map_dir"]) / "mapping_report.json").read_text())
    return {"command": "sceneloc " + " ".join(relative_to_repo(a) for a in argv), "report": report}


def job_sceneloc_localize(job: dict) -> dict:
    """sceneloc's network once per frame, then every estimator on the same correspondences. Each
    row's time is the network's (with the confidence PointNet) plus its estimator's."""
    from peers.ransac_backends import opencv_pnp, poselib_available, poselib_pnp
    from sceneloc.mapping.scene_map import Map
    from sceneloc.pose.config import PoseConfig
    the_map = Map.load(job["map_dir"])
    default = PoseConfig().method  # the library's default estimator
    method = default if default != "confidence" or the_map.confidence_net is not None else "random"
    has_poselib = poselib_available()
    rows = {"sceneloc": MODES, "sceneloc-ransac": MODES, "sceneloc+opencv": ("rgb",)}
    if has_poselib:
        rows["sceneloc+poselib"] = ("rgb",)
    out = {row: {mode: [] for mode in modes if mode in job["modes"]} for row, modes in rows.items()}
    for i, frame in enumerate(_load_frames(job["data"], "test")):
        image = frame.load_image()
        depth = frame.load_depth(image.shape[:2]) if "rgbd" in job["modes"] else None
        pred = the_map.predict(image)
        for row, per_mode in out.items():
            for mode, records in per_mode.items():
                rng = np.random.default_rng([job["seed"], i])
                t0 = time.perf_counter()
                if row in ("sceneloc", "sceneloc-ransac"):
                    res = the_map.localize(image, depth if mode == "rgbd" else None, frame.K, prediction=pred, rng=rng,
                                           estimator=method if row == "sceneloc" else "ransac")
                    pose, inliers = res.pose, res.inliers
                elif row == "sceneloc+opencv":
                    pose, inliers = opencv_pnp(pred.pixels, pred.coords, frame.K)
                else:
                    pose, inliers = poselib_pnp(pred.pixels, pred.coords, frame.K, image.shape[:2])
                ms = pred.network_ms + (time.perf_counter() - t0) * 1e3
                records.append(_record(frame.name, pose, frame.pose, ms, inliers))
    return {"records": out, "estimator": method, "poselib": has_poselib}


JOBS = {"prepare": job_prepare, "baseline": job_baseline, "features-map": job_features_map,
        "features-localize": job_features_localize, "posenet-train": job_posenet_train,
        "posenet-localize": job_posenet_localize, "sceneloc-map": job_sceneloc_map,
        "sceneloc-localize": job_sceneloc_localize}


def run_worker(job_path: str) -> None:
    """Child side: run one job, write its result with wall/CPU seconds and peak memory."""
    job = json.loads(Path(job_path).read_text())
    wall, cpu = time.perf_counter(), time.process_time()
    result = JOBS[job["kind"]](job)
    result.update(wall_s=time.perf_counter() - wall, cpu_s=time.process_time() - cpu, peak_rss_mb=peak_rss_mb())
    Path(job["result"]).write_text(json.dumps(result, indent=1, default=float))


def run_job(kind: str, work: Path, name: str, **job) -> dict:
    """Parent side: run ``kind`` in a child process; returns its result, or ``{'error': ...}``."""
    work.mkdir(parents=True, exist_ok=True)
    job_path, result, log = work / f"{name}.job.json", work / f"{name}.result.json", work / f"{name}.log"
    result.unlink(missing_ok=True)
    job_path.write_text(json.dumps({"kind": kind, "result": str(result), **job}, indent=1))
    print(f"  {name} ... ", end="", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, __file__, "--worker", str(job_path)], stdout=fh,
                              stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0 or not result.exists():
        tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
        print(f"FAILED (exit {proc.returncode}): {tail[0]} -- log: {log}", flush=True)
        return {"error": f"{tail[0]} (log: {log})"}
    print(f"{time.perf_counter() - t0:.1f} s", flush=True)
    return json.loads(result.read_text())


# ======================================================================================= metrics


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def summarise(records: list[dict]) -> dict:
    """Accuracy and time of per-frame records (``rot_deg``/``trans_m`` None = failed)."""
    from sceneloc.report.evaluation import pose_metrics
    rot = np.array([np.inf if r["rot_deg"] is None else r["rot_deg"] for r in records])
    trans = np.array([np.inf if r["trans_m"] is None else r["trans_m"] for r in records])
    m = pose_metrics(rot, trans)
    ms = np.array([r["ms"] for r in records])
    return {"frames": m["frames"], "failures": m["failures"],
            "median_rot_deg": _finite_or_none(m["median_rotation_deg"]),
            "median_trans_m": _finite_or_none(m["median_translation_m"]),
            "within_5cm_5deg": m["accuracy"]["5cm_5deg"], "within_10cm_10deg": m["accuracy"]["10cm_10deg"],
            "loc_ms_median": float(np.median(ms)), "loc_ms_p95": float(np.percentile(ms, 95))}


def make_row(dataset: str, method: str, mode: str, mapping: dict | None, localize: dict | None,
             records: list[dict] | None, note: str = "") -> dict:
    """One table row; numbers None where the method does not apply or a job failed."""
    row = {k: None for k in ROW_FIELDS}
    row.update(dataset=dataset, method=method, mode=mode, applicable=records is not None, note=note)
    if mapping and "error" not in mapping:
        row.update(mapping_s=mapping.get("wall_s"), mapping_cpu_s=mapping.get("cpu_s"),
                   peak_rss_mapping_mb=mapping.get("peak_rss_mb"), map_mb=mapping.get("map_mb"))
    if localize and "error" not in localize:
        row["peak_rss_localize_mb"] = localize.get("peak_rss_mb")
    if records:
        row.update(summarise(records))
        row["per_frame"] = records
    return row


# ===================================================================================== the runs


def prepare_datasets(args, work: Path) -> list[tuple[str, dict]]:
    """(label, prepare-job result) per --data entry; 'synth' is rendered into ``work`` first."""
    out = []
    for entry in args.data:
        if entry == "synth":
            label = "synth-tiny" if args.quick else "synth-room"
            root = work / label
            synth_args = SYNTH_QUICK if args.quick else SYNTH_FULL
            stamp = root / "bench_peers_synth.txt"
            if not (stamp.exists() and stamp.read_text() == " ".join(synth_args)):
                print(f"+ sceneloc synth {root} {' '.join(synth_args)}", flush=True)
                subprocess.run([str(Path(sys.executable).parent / "sceneloc"), "synth", str(root), *synth_args,
                                "--quiet", "--force"], check=True, stdout=subprocess.DEVNULL)
                stamp.write_text(" ".join(synth_args))
        else:
            root, label = Path(entry), Path(entry).name
        max_train = args.max_train if args.max_train is not None else (QUICK["max_train"] if args.quick else None)
        max_test = args.max_test if args.max_test is not None else (QUICK["max_test"] if args.quick else None)
        info = run_job("prepare", work / label, "prepare", data=str(root), max_train=max_train, max_test=max_test,
                       subset_dir=str(work / label / "subset"))
        if "error" in info:
            raise SystemExit(f"dataset {entry}: {info['error']}")
        out.append((label, info))
    return out


def run_sceneloc(label: str, data: str, work: Path, args, given_map: str | None) -> list[dict]:
    map_dir = Path(given_map) if given_map else work / "sceneloc_map"
    mapping: dict = {}
    if not given_map:
        mapping = run_job("sceneloc-map", work, "sceneloc-map", data=data, map_dir=str(map_dir),
                          minutes=args.minutes, confidence_minutes=args.confidence_minutes)
    if "error" not in mapping:
        mapping["map_mb"] = map_size_bytes(map_dir, ("config.json", "coordinates.pt", "confidence.pt",
                                                     "calibration.json", "scene_cloud.npz", "scene_view.npz")) / 2**20
    loc = run_job("sceneloc-localize", work, "sceneloc-localize", data=data, map_dir=str(map_dir),
                  modes=list(args.modes), seed=args.seed) if "error" not in mapping else mapping
    rows = []
    for method in BACKEND_ROWS:
        for mode in args.modes:
            note = "map given with --sceneloc-map: mapping not measured here" if given_map else ""
            if method in RGB_ONLY and mode == "rgbd":
                records, note = None, RGB_ONLY[method]
            elif "error" in loc:
                records, note = None, f"failed: {loc['error']}"
            elif method == "sceneloc+poselib" and not loc["poselib"]:
                records, note = None, "poselib not installed (pip install -e '.[bench]')"
            else:
                records = loc["records"][method][mode]
                if method == "sceneloc":
                    note = f"estimator '{loc['estimator']}' (the default)"
            rows.append(make_row(label, method, mode, mapping, loc, records, note))
    return rows


def run_features(label: str, data: str, work: Path, args, detector: str) -> list[dict]:
    method, map_dir = f"features-{detector}", work / f"features_{detector}"
    mapping = run_job("features-map", work, f"{method}-map", data=data, map_dir=str(map_dir), detector=detector)
    if "error" not in mapping:
        mapping["map_mb"] = mapping["map_bytes"] / 2**20
        loc = run_job("features-localize", work, f"{method}-localize", data=data, map_dir=str(map_dir),
                      modes=list(args.modes), seed=args.seed)
    else:
        loc = mapping
    return [make_row(label, method, mode, mapping, loc, None if "error" in loc else loc["records"][mode],
                     f"failed: {loc['error']}" if "error" in loc else "") for mode in args.modes]


def run_posenet(label: str, data: str, work: Path, args) -> list[dict]:
    map_dir = work / "posenet"
    mapping = run_job("posenet-train", work, "posenet-train", data=data, map_dir=str(map_dir),
                      minutes=args.posenet_minutes)
    if "error" not in mapping:
        mapping["map_mb"] = mapping["map_bytes"] / 2**20
        loc = run_job("posenet-localize", work, "posenet-localize", data=data, map_dir=str(map_dir))
    else:
        loc = mapping
    rows = []
    for mode in args.modes:
        if mode == "rgbd":
            rows.append(make_row(label, "posenet", mode, mapping, None, None, RGB_ONLY["posenet"]))
        else:
            failed = "error" in loc
            rows.append(make_row(label, "posenet", mode, mapping, loc, None if failed else loc["records"]["rgb"],
                                 f"failed: {loc['error']}" if failed else ""))
    return rows


def machine_info(baseline: dict) -> dict:
    """CPU model (lscpu), cores, memory, OS, library versions and thread settings."""
    cpu = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), cpu)
    except (OSError, subprocess.SubprocessError):
        pass
    mem_gb = None
    try:
        kb = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                  if ln.startswith("MemTotal"))
        mem_gb = round(kb / 2**20, 1)
    except (OSError, StopIteration):
        pass
    threads = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb, "platform": platform.platform(),
            "gpu": "CUDA" if baseline.get("cuda") else "none", "versions": baseline.get("versions", {}),
            "torch_threads": baseline.get("torch_threads"), "thread_env": threads,
            "baseline_peak_rss_mb": baseline.get("peak_rss_mb")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("Usage:")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=None,
                    help=f"dataset roots and/or 'synth' (default: {REDKITCHEN} synth; --quick: synth)")
    ap.add_argument("--sceneloc-map", nargs="+", default=[], metavar="[LABEL=]MAP_DIR",
                    help="evaluate existing sceneloc maps instead of running `sceneloc map` (LABEL: the dataset "
                         "folder name, or synth-room; a bare MAP_DIR goes with the first dataset)")
    ap.add_argument("--minutes", type=float, default=None,
                    help="sceneloc stage-1 budget (default: sceneloc map's; --quick 0.02)")
    ap.add_argument("--confidence-minutes", type=float, default=None,
                    help="sceneloc stage-2 budget (default: sceneloc map's; --quick 0.01); "
                         "PoseNet trains for both together")
    ap.add_argument("--posenet-minutes", type=float, default=None,
                    help="PoseNet's training budget (default: sceneloc's two stages together, the same time)")
    ap.add_argument("--synth-minutes", type=float, nargs=2, default=None, metavar=("STAGE1", "STAGE2"),
                    help="sceneloc budgets on the synthetic room (default: `sceneloc demo`'s, 7 + 1 min, the "
                         "budget a user meets on that scene; PoseNet gets their sum)")
    ap.add_argument("--features", nargs="+", default=["sift"], choices=["sift", "orb"], help="feature localizer rows")
    ap.add_argument("--methods", nargs="+", default=["sceneloc", "features", "posenet"],
                    choices=["sceneloc", "features", "posenet"], help="which method families to run")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--max-train", type=int, default=None, help="evenly spaced training frames (a symlink view)")
    ap.add_argument("--max-test", type=int, default=None, help="evenly spaced test frames (a symlink view)")
    ap.add_argument("--quick", action="store_true", help="tiny data, few frames, seconds-scale budgets (smoke test)")
    ap.add_argument("--work", default=None,
                    help="maps, logs and job results (default runs/peers; --quick runs/peers-quick)")
    ap.add_argument("--out", help="write bench_peers.json into this folder (e.g. benchmarks/results)")
    ap.add_argument("--write", help="replace this benchmark's section in this markdown file (e.g. docs/results.md)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.data is None:
        args.data = ["synth"] if args.quick else [str(REDKITCHEN), "synth"]
    from sceneloc.training.trainers import MappingConfig  # the library's own defaults, so the rows follow them
    defaults = MappingConfig().resolved()
    if args.minutes is None:
        args.minutes = QUICK["minutes"] if args.quick else defaults.minutes
    if args.confidence_minutes is None:
        args.confidence_minutes = QUICK["confidence_minutes"] if args.quick else defaults.confidence_minutes
    if args.synth_minutes is None:
        from sceneloc.demo import DEMO_CONFIDENCE_MINUTES, DEMO_MINUTES
        args.synth_minutes = ([args.minutes, args.confidence_minutes] if args.quick
                              else [DEMO_MINUTES, DEMO_CONFIDENCE_MINUTES])
    if args.work is None:
        args.work = str(REPO / "runs" / ("peers-quick" if args.quick else "peers"))
    return args


def budgets(args, label: str) -> dict:
    """Training minutes for one dataset: sceneloc's two stages and PoseNet's (by default their sum)."""
    minutes, confidence = args.synth_minutes if label.startswith("synth") else (args.minutes, args.confidence_minutes)
    posenet = args.posenet_minutes if args.posenet_minutes is not None else minutes + confidence
    return {"minutes": minutes, "confidence_minutes": confidence, "posenet_minutes": posenet}


def given_maps(args, labels: list[str]) -> dict[str, str]:
    maps = {}
    for entry in args.sceneloc_map:
        label, _, path = entry.rpartition("=")
        label = label or labels[0]
        if label not in labels:
            raise SystemExit(f"--sceneloc-map {entry}: no dataset labelled {label!r} (labels: {', '.join(labels)})")
        maps[label] = path
    return maps


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        run_worker(args.worker)
        return 0
    t_start = time.time()
    work = Path(args.work).resolve()
    print("baseline process (memory floor, versions)", flush=True)
    baseline = run_job("baseline", work, "baseline")
    datasets = prepare_datasets(args, work)
    maps = given_maps(args, [label for label, _ in datasets])
    rows: list[dict] = []
    for label, info in datasets:
        print(f"{label}: {info['path']} ({info['train']} train / {info['test']} test frames)", flush=True)
        d = work / label
        modes = [m for m in args.modes if m == "rgb" or info["test_has_depth"]]  # no RGB-D rows without test depth
        budget = budgets(args, label)
        info["budget"] = budget
        run_args = argparse.Namespace(**{**vars(args), "modes": modes, **budget})
        if "sceneloc" in args.methods:
            rows += run_sceneloc(label, info["path"], d, run_args, maps.get(label))
        if "features" in args.methods:
            for detector in args.features:
                rows += run_features(label, info["path"], d, run_args, detector)
        if "posenet" in args.methods:
            rows += run_posenet(label, info["path"], d, run_args)
    results = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": command_line(argv),
               "quick": args.quick, "seconds": round(time.time() - t_start, 1), "machine": machine_info(baseline),
               "datasets": {label: info for label, info in datasets}, "row_fields": list(ROW_FIELDS), "rows": rows}
    md = render(results)
    print(md)
    if args.out:
        write_results(Path(args.out), results)
    if args.write:
        from bench_pose_table import replace_section
        replace_section(Path(args.write), HEADING, md)
        print(f"section '{HEADING[3:]}' written to {args.write}")
    failed = [r for r in rows if r["note"].startswith("failed")]
    return 1 if failed else 0


def write_results(out: Path, results: dict) -> None:
    """``out/bench_peers.json`` (the summary rows, readable) and ``out/bench_peers_frames.json``
    (every frame's errors and time per row, compact)."""
    out.mkdir(parents=True, exist_ok=True)
    frames = {f"{r['dataset']}/{r['method']}/{r['mode']}": r["per_frame"] for r in results["rows"] if "per_frame" in r}
    summary = {**results, "rows": [{k: v for k, v in r.items() if k != "per_frame"} for r in results["rows"]]}
    (out / "bench_peers.json").write_text(json.dumps(summary, indent=1, default=float))
    (out / "bench_peers_frames.json").write_text(json.dumps(frames, separators=(",", ":"), default=float))
    print(f"results: {out / 'bench_peers.json'}, per frame: {out / 'bench_peers_frames.json'}")


def relative_to_repo(arg: str) -> str:
    """An absolute path as the repository root sees it (``../shared/data/...``, ``runs/...``): recorded
    commands must run from any checkout, not only the one they ran in."""
    return os.path.relpath(arg, REPO) if os.path.isabs(arg) else arg


def command_line(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return "python benchmarks/bench_peers.py" + "".join(" " + shlex.quote(relative_to_repo(a)) for a in args)


# ====================================================================================== report


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _err(r: dict) -> str:
    if not r["applicable"]:
        return "n/a"
    if r["median_rot_deg"] is None:
        return "failed (> half)"
    return f"{r['median_rot_deg']:.2f} deg, {100 * r['median_trans_m']:.1f} cm"


def _num(x: float | None, fmt: str = "{:.0f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _mapping(r: dict) -> str:
    return "n/a" if r["mapping_s"] is None else f"{_duration(r['mapping_s'])} / {_duration(r['mapping_cpu_s'])}"


def table(rows: list[dict]) -> list[str]:
    lines = ["| method | mode | median error | 5cm/5deg | 10cm/10deg | failures | mapping wall / CPU | "
             "ms/frame median / p95 | map MB | peak MB map / localize | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        applicable = r["applicable"]
        lines.append(" | ".join([
            f"| {LABELS.get(r['method'], r['method'])}", r["mode"], _err(r),
            _pct(r["within_5cm_5deg"]) if applicable else "n/a", _pct(r["within_10cm_10deg"]) if applicable else "n/a",
            f"{r['failures']}/{r['frames']}" if applicable else "n/a", _mapping(r),
            f"{r['loc_ms_median']:.0f} / {r['loc_ms_p95']:.0f}" if applicable else "n/a",
            _num(r["map_mb"], "{:.1f}"),
            f"{_num(r['peak_rss_mapping_mb'])} / {_num(r['peak_rss_localize_mb'])}", r["note"]]) + " |")
    return lines


def compare_accuracy(a: dict, b: dict) -> int:
    """1 if row ``a`` is more accurate than row ``b``, -1 if less, 0 if tied: by the share within
    5 cm / 5 deg, then 10 cm / 10 deg, then (when either localizes anything) median translation error."""
    ka, kb = (a["within_5cm_5deg"], a["within_10cm_10deg"]), (b["within_5cm_5deg"], b["within_10cm_10deg"])
    if ka != kb:
        return 1 if ka > kb else -1
    if ka[1] == 0:  # neither is within 10 cm / 10 deg anywhere: how wrong a wrong pose is does not matter
        return 0
    ta, tb = (math.inf if r["median_trans_m"] is None else r["median_trans_m"] for r in (a, b))
    return (ta < tb) - (ta > tb)


def _acc_text(r: dict) -> str:
    med = ("no median (over half failed)" if r["median_trans_m"] is None
           else f"median {100 * r['median_trans_m']:.1f} cm")
    return f"{_pct(r['within_5cm_5deg'])} within 5 cm / 5 deg, {med}"


def verdict(rows: list[dict]) -> list[str]:
    """Plain sentences, generated from the numbers: where sceneloc loses to a peer, and whether its
    default estimator beats the other estimators on its own correspondences."""
    out = []
    usable = [r for r in rows if r["applicable"] and r["frames"]]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for mode in MODES:
            ref = next((r for r in usable if r["dataset"] == dataset and r["mode"] == mode
                        and r["method"] == "sceneloc"), None)
            if ref is None:
                continue
            peers = [r for r in usable if r["dataset"] == dataset and r["mode"] == mode and r["method"] != "sceneloc"]
            where = f"{dataset}, {mode.upper().replace('RGBD', 'RGB-D')}"
            for p in peers:
                name = LABELS.get(p["method"], p["method"])
                numbers = f"{_acc_text(ref)} against {_acc_text(p)}"
                order = compare_accuracy(ref, p)
                if p["method"] in BACKEND_ROWS:
                    if order < 0:
                        out.append(f"* {where}: on sceneloc's own correspondences the default estimator "
                                   f"loses to {name}: {numbers}.")
                    continue
                if order < 0:
                    out.append(f"* {where}: **sceneloc is less accurate than {name}**: {numbers}.")
                elif order > 0:
                    out.append(f"* {where}: sceneloc is more accurate than {name}: {numbers}.")
                elif ref["within_10cm_10deg"] == 0:
                    out.append(f"* {where}: neither sceneloc nor {name} localizes any frame within 10 cm / 10 deg.")
                else:
                    out.append(f"* {where}: sceneloc and {name} are equally accurate: {numbers}.")
                if p["loc_ms_median"] < ref["loc_ms_median"]:
                    out.append(f"* {where}: sceneloc is slower per frame than {name}: "
                               f"{ref['loc_ms_median']:.0f} against {p['loc_ms_median']:.0f} ms median.")
        ref = next((r for r in rows if r["dataset"] == dataset and r["method"] == "sceneloc"), None)
        if ref is None:
            continue
        for method in dict.fromkeys(r["method"] for r in rows
                                    if r["dataset"] == dataset and r["method"] not in BACKEND_ROWS):
            p = next(r for r in rows if r["dataset"] == dataset and r["method"] == method)
            name = LABELS.get(method, method)
            for key, what, fmt in (("mapping_s", "takes longer to map", _duration),
                                   ("map_mb", "has a larger map", lambda v: f"{v:.1f} MB"),
                                   ("peak_rss_localize_mb", "needs more memory to localize", lambda v: f"{v:.0f} MB")):
                if ref[key] is not None and p[key] is not None and p[key] < ref[key]:
                    out.append(f"* {dataset}: sceneloc {what} than {name}: {fmt(ref[key])} against {fmt(p[key])}.")
    return out


def render(results: dict) -> str:
    m = results["machine"]
    v = m["versions"]
    env = ", ".join(f"{k}={val}" for k, val in m["thread_env"].items() if val) or "no thread variables set"
    lines = [HEADING, "",
             f"Command: `{results['command']}`  ",
             f"Date: {results['date']}; {results['seconds'] / 60:.1f} min in all.  ",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, GPU: {m['gpu']}; {m['platform']}; "
             f"Python {v.get('python')}, torch {v.get('torch')} ({m['torch_threads']} threads), "
             f"OpenCV {v.get('opencv')}, numpy {v.get('numpy')}, poselib {v.get('poselib', 'not installed')}; "
             f"{env}.", ""]
    if results["quick"]:
        lines += ["**--quick smoke run**: tiny data and seconds-scale budgets; "
                  "the numbers say nothing about the methods.", ""]
    lines += ["Budgets (training minutes): " + "; ".join(
              f"{label}: sceneloc {b['minutes']:g} stage 1 + {b['confidence_minutes']:g} stage 2, "
              f"PoseNet {b['posenet_minutes']:g}"
              for label, b in ((label, info["budget"]) for label, info in results["datasets"].items())) +
              f"; the feature map is one pass over the training images. Times per frame are the localize call on "
              f"a decoded image (the sceneloc rows include the network and its confidence PointNet). Map MB: the "
              f"files localization reads. Peak MB: peak resident memory of the process that mapped / localized, "
              f"including the interpreter and libraries: an idle process with numpy, OpenCV, torch and sceneloc "
              f"loaded takes {_num(m['baseline_peak_rss_mb'])} MB. Failures count as infinite errors.", ""]
    for label, info in results["datasets"].items():
        rows = [r for r in results["rows"] if r["dataset"] == label]
        lines += [f"**{label}** ({info['train']} training / {info['test']} test frames, `{info['path']}`):", "",
                  *table(rows), ""]
    sentences = verdict(results["rows"])
    if sentences:
        lines += ["Reading (generated from the numbers above):", "", *sentences, ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
