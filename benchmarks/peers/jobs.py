"""The jobs of ``bench_peers.py``, each run in a child process of its own (``--worker JOB.json``) so that
its peak memory is its own: preparing a dataset view, the idle baseline, mapping and localizing with
sceneloc, the feature localizer and PoseNet."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from peers import MODES, map_size_bytes, relative_to_repo

# # Every mapping and localization pass runs as `python bench_peers.py --worker JOB.json` so that its
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
