"""Evaluation: pose metrics, the paper's diagnostic figures, reports, PLY export and tables.

``evaluate`` localizes a dataset split (or reads a pose file) and writes into a report folder:

* ``metrics.json`` -- median rotation/translation error, the share of frames within 5 cm/5 deg (the
  paper's measure), 10/10, 2/2 and 1/1, failures (a failed frame has infinite error and stays in
  every denominator), inlier shares of the correspondences (error < 10 cm against ground truth from
  the frame's depth, paper IV) and time per frame split as in the paper (network, hypothesis
  sampling, refinement). A median that is infinite (more than half the frames failed) is ``null``.
* ``poses.txt`` (the ``sceneloc localize --out`` format), ``report.md``, ``index.html`` and PNGs:
  error histograms (paper Fig. 2), ROC of the confidence networks (Fig. 3), example error and
  confidence maps (Fig. 4), error CDFs and a top-down view of estimated vs ground-truth cameras.

Only numpy is imported at module level so that ``sceneloc --help`` stays fast; torch, OpenCV and
matplotlib are imported where they are used.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from sceneloc.data.dataset import load_scene
from sceneloc.errors import SceneLocError, refuse_to_overwrite
from sceneloc.geometry import PoseRecord, pose_errors, read_pose_file, write_pose_file
from sceneloc.mapping.queries import localize_frames
from sceneloc.mapping.scene_map import Map
from sceneloc.pose.calibration import error_ratio, operating_point, reliability_bins
from sceneloc.pose.config import MODES, PoseConfig, estimator_config
from sceneloc.progress import progress as progress_bar
from sceneloc.report.diagnostics import (
    ERROR_MAP_MAX_M,
    FIG2_SAMPLES_PER_FRAME,
    INLIER_THRESHOLD_M,
    Diagnostics,
    add_frame,
    concat_finite,
    example_maps,
)
from sceneloc.report.plots import (
    plot_error_cdf,
    plot_error_histogram,
    plot_examples,
    plot_reliability,
    plot_roc,
    plot_topdown,
)
from sceneloc.report.tables import metric_number
from sceneloc.scale.routing import (
    DEFAULT_TOP_K,
    MapSet,
    check_top_k,
    is_map_set,
    localize_routed_frames,
    routed_pose_record,
)
from sceneloc.validation import check_output_path

#: (degrees, metres) pose accuracy thresholds; the first is the paper's (Table II).
ACCURACY_THRESHOLDS = ((5, 0.05), (10, 0.10), (2, 0.02), (1, 0.01))

# Report files; with --force exactly these are replaced in REPORT_DIR (nothing else is touched).
PLOT_FILES = {
    "histogram": "fig2_error_histogram.png",
    "roc": "fig3_confidence_roc.png",
    "examples": "fig4_error_confidence_maps.png",
    "cdf": "pose_error_cdf.png",
    "topdown": "camera_positions_topdown.png",
    "reliability": "pose_probability_reliability.png",
}
#: Poses whose calibrated probability is below this are counted as rejected in the report.
REJECT_BELOW = 0.5
REPORT_FILES = ("metrics.json", "report.md", "index.html", "poses.txt", *PLOT_FILES.values())
TIMING_KEYS = {"network": "network_ms", "sampling": "sampling_ms", "refinement": "refinement_ms", "total": "time_ms"}
#: a map set's frames also time their routing and all their routed maps' localizations (``total``: the winner's)
ROUTED_TIMING_KEYS = {**TIMING_KEYS, "routing": "routing_ms", "routed total": "routed_total_ms"}


# ============================================================================================ metrics


def pose_error_arrays(estimates: Sequence[np.ndarray | None],
                      ground_truth: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rotation (degrees) and translation (metres, camera-centre distance) errors ``(N,)`` of
    camera-to-world poses; a failed frame (``None``) gets ``inf`` in both."""
    rot = np.full(len(ground_truth), np.inf)
    trans = np.full(len(ground_truth), np.inf)
    for i, (est, gt) in enumerate(zip(estimates, ground_truth, strict=True)):
        if est is not None:
            r, t = pose_errors(est, gt)
            rot[i], trans[i] = float(r), float(t)
    return rot, trans


def accuracy_key(deg: float, m: float) -> str:
    """``5cm_5deg`` style name of a pose accuracy threshold."""
    return f"{round(m * 100)}cm_{deg}deg"


def pose_metrics(rot: np.ndarray, trans: np.ndarray) -> dict:
    """Frames, failures, medians and threshold shares of per-frame errors ``(N,)`` (inf = failed).

    A frame is correct for a threshold when both errors are strictly below it (DSAC*'s test).
    """
    n = len(rot)
    if n == 0:
        raise SceneLocError("no frames to evaluate")
    return {
        "frames": n,
        "failures": int(np.sum(~np.isfinite(rot))),
        "median_rotation_deg": float(np.median(rot)),
        "median_translation_m": float(np.median(trans)),
        "accuracy": {accuracy_key(d, m): float(np.mean((rot < d) & (trans < m))) for d, m in ACCURACY_THRESHOLDS},
    }


#: A test frame counts as "near training" when one training frame is within both of these.
NEAR_TRAINING_M, NEAR_TRAINING_DEG = 0.30, 30.0


def nearest_training_distances(train_poses: np.ndarray, test_poses: np.ndarray,
                               max_deg: float = NEAR_TRAINING_DEG) -> np.ndarray:
    """Per test frame, the camera-centre distance (m) to the nearest training frame whose viewing
    rotation differs by less than ``max_deg`` degrees (inf when none does). Poses are
    camera-to-world ``(N, 4, 4)`` and ``(M, 4, 4)``; returns ``(M,)``.

    Rotation and position are tested on the same training frame: a training frame 10 cm away
    looking the other way does not make a test view an interpolation.
    """
    train_poses, test_poses = np.asarray(train_poses, float), np.asarray(test_poses, float)
    if len(train_poses) == 0:
        return np.full(len(test_poses), np.inf)
    # relative rotation angle of every pair from the trace of R_test^T R_train, (M, N)
    trace = np.einsum("mji,nji->mn", test_poses[:, :3, :3], train_poses[:, :3, :3])
    angle = np.degrees(np.arccos(np.clip((trace - 1) / 2, -1.0, 1.0)))
    dist = np.linalg.norm(test_poses[:, None, :3, 3] - train_poses[None, :, :3, 3], axis=-1)
    return np.where(angle < max_deg, dist, np.inf).min(axis=1)


def near_training_share(train_poses: np.ndarray, test_poses: np.ndarray, max_m: float = NEAR_TRAINING_M,
                        max_deg: float = NEAR_TRAINING_DEG) -> float:
    """Share of test frames with a training frame within ``max_m`` metres and ``max_deg`` degrees
    (both on the same training frame). Near 1 means the test set mostly re-visits training views."""
    if len(test_poses) == 0:
        raise SceneLocError("no test frames to compare with the training frames")
    return float(np.mean(nearest_training_distances(train_poses, test_poses, max_deg) < max_m))


def timing_summary(extras: Sequence[dict[str, float]], keys: dict[str, str] = TIMING_KEYS) -> dict:
    """Median and 95th percentile (ms) of each stage (``keys``: name -> column) over frames; None where no
    frame reports it."""
    out = {}
    for name, key in keys.items():
        vals = np.array([e.get(key, np.nan) for e in extras], dtype=float)
        vals = vals[np.isfinite(vals)]
        out[name] = ({"median": float(np.median(vals)), "p95": float(np.percentile(vals, 95))}
                     if vals.size else None)
    return out


# ============================================================================================ report


def _json_number(x):
    """JSON has no infinity: infinite medians (most frames failed) are written as null."""
    if isinstance(x, dict):
        return {k: _json_number(v) for k, v in x.items()}
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _fmt(x, unit: str = "", scale: float = 1.0, digits: int = 2) -> str:
    """A median as text: ``x`` scaled, with its unit; null (infinite) reads ``inf``."""
    v = metric_number(x) * scale
    return "inf" if math.isinf(v) else f"{v:.{digits}f}{unit}"


def _scene_name(root: Path) -> str:
    meta = root / "synth.json"
    if meta.exists():
        try:
            return f"synthetic {json.loads(meta.read_text())['preset']}"
        except (ValueError, KeyError):
            pass
    return root.resolve().name


def _pct(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.0%}"


def _metric_rows(m: dict) -> list[tuple[str, str]]:
    """(name, value) lines of the report's summary table."""
    acc = m["accuracy"]
    rows = [("frames", str(m["frames"])), ("failures (infinite error)", str(m["failures"])),
            ("median rotation error", _fmt(m["median_rotation_deg"], " deg")),
            ("median translation error", _fmt(m["median_translation_m"], " cm", 100, 1))]
    rows += [(f"within {round(mm * 100)} cm / {d} deg", f"{acc[accuracy_key(d, mm)]:.1%}")
             for d, mm in ACCURACY_THRESHOLDS]
    near = m.get("near_training")
    if near:
        rows.append((f"frames with a training frame within {round(near['max_m'] * 100)} cm / {near['max_deg']:g} deg",
                     f"{near['share']:.1%}"))
    share = m["inlier_share"]
    rows += [("inliers (< 10 cm) of all predictions",
              "n/a" if share["all_predictions"] is None else f"{share['all_predictions']:.1%}"),
             ("inliers (< 10 cm) of the points used for the pose",
              "n/a" if share["used_for_pose"] is None else f"{share['used_for_pose']:.1%}")]
    cal = m.get("calibration")
    if cal:
        op = cal["operating_point"]
        rows.append((f"rejecting poses with probability < {op['min_probability']:g}",
                     f"{_pct(op['wrong_rejected'])} of wrong poses rejected, "
                     f"{_pct(op['right_kept'])} of right ones kept"))
    for name, t in m["timing_ms"].items():
        rows.append((f"time per frame: {name} (median / p95)",
                     "n/a" if t is None else f"{t['median']:.1f} / {t['p95']:.1f} ms"))
    return rows


def write_report(out: Path, m: dict) -> None:
    """``report.md`` and ``index.html`` from the metrics dictionary (with its ``plots`` list)."""
    head = (f"{m['scene']}: {m['split']} split, {m['mode']} mode ({m['solver']}), poses {m['pose_source']}")
    md = [f"# sceneloc evaluation: {m['scene']}", "", f"Map `{m['map']}`, dataset `{m['dataset']}`; {head}.", "",
          "| metric | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in _metric_rows(m)), ""]
    if m["notes"]:
        md += ["Notes:", "", *(f"- {n}" for n in m["notes"]), ""]
    for p in m["plots"]:
        md += [f"## {p['title']}", "", p["caption"], "", f"![{p['title']}]({p['file']})", ""]
    (out / "report.md").write_text("\n".join(md))

    e = html.escape
    rows = "\n".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in _metric_rows(m))
    notes = "".join(f"<li>{e(n)}</li>" for n in m["notes"])
    figs = "\n".join(f"<figure><h2>{e(p['title'])}</h2><img src=\"{e(p['file'])}\" alt=\"{e(p['title'])}\">"
                     f"<figcaption>{e(p['caption'])}</figcaption></figure>" for p in m["plots"])
    (out / "index.html").write_text(f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>sceneloc evaluation: {e(m['scene'])}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}}
table{{border-collapse:collapse}}td{{border:1px solid #ccc;padding:3px 8px}}img{{max-width:100%}}
figure{{margin:2em 0}}</style></head><body>
<h1>sceneloc evaluation: {e(m['scene'])}</h1>
<p>{e(head)}<br>map <code>{e(m['map'])}</code>, dataset <code>{e(m['dataset'])}</code>,
poses <a href="poses.txt">poses.txt</a>, <a href="metrics.json">metrics.json</a></p>
<table>{rows}</table>
{f'<ul>{notes}</ul>' if notes else ''}
{figs}
</body></html>
""")


# ========================================================================================= evaluate


def _check_out_dir(out: Path, force: bool, ours: Sequence[str] = REPORT_FILES) -> None:
    """Refuse a non-empty ``out`` unless ``force``; with ``force`` remove only the files we write
    (a stale ROC of an earlier map must not survive into a report that has none)."""
    if refuse_to_overwrite(out, force):
        for name in ours:
            (out / name).unlink(missing_ok=True)


def match_pose_records(records: list, frames: list, path: Path) -> tuple[list, int]:
    """Pose-file records in split order: one ``PoseRecord`` per frame (``pose=None`` for a frame
    the file does not list), and the number of such unlisted frames.

    A record's name matches a frame's path relative to the dataset root or a trailing part of it
    that is unique within the split (``frame-000000.color.png`` for ``seq-03/frame-000000.color.png``),
    as DSAC*/ACE-style files name images differently.
    """
    by_name = {f.name: f for f in frames}
    tails: dict[str, list[str]] = {}
    for f in frames:
        parts = Path(f.name).parts
        for k in range(1, len(parts)):
            tails.setdefault(str(Path(*parts[k:])), []).append(f.name)

    def resolve(image: str) -> str | None:
        if image in by_name:
            return image
        candidates = tails.get(image, [])
        return candidates[0] if len(candidates) == 1 else None

    found = {}
    for rec in records:
        name = resolve(rec.image)
        if name is None:
            raise SceneLocError(f"{path}: image {rec.image!r} is not in the evaluated split")
        if name in found:
            raise SceneLocError(f"{path}: image {rec.image!r} is listed twice")
        found[name] = rec
    # Renamed to the split's names, so the report's pose file reads like one `localize` wrote.
    matched = [PoseRecord(f.name, found[f.name].pose, found[f.name].extras, found[f.name].failure) if f.name in found
               else PoseRecord(f.name, None, failure="not in the pose file") for f in frames]
    return matched, len(frames) - len(found)


def evaluate(map_dir, dataset: str | Path, out_dir: str | Path, split: str = "test",
             mode: str = "rgb", estimator: PoseConfig | str | None = None, poses: str | Path | None = None,
             force: bool = False, seed: int = 0, device: str | None = None, intrinsics: np.ndarray | None = None,
             progress: bool = True, allow_missing: bool = False, top_k: int = DEFAULT_TOP_K) -> dict:
    """``sceneloc evaluate``: localize ``split`` (or read ``poses``) and write the report folder.

    ``map_dir`` is a map directory, an already loaded :class:`sceneloc.mapping.scene_map.Map`, or a partitioned
    map or folder of maps (scale/routing.py: each frame localized by its ``top_k`` routed maps; the pose file
    gains the winner's ``map_index``); ``estimator`` is :meth:`Map.localize`'s (a ``PoseConfig``, a
    method name, or None: the default).
    Returns the metrics dictionary (also ``out_dir/metrics.json``, infinite medians as null there).
    A pose file that misses frames of the split is refused unless ``allow_missing`` (they then count
    as failures); ``pose_coverage`` in the metrics says how many it lists.
    """

    out = check_output_path(out_dir, "dir", [dataset], "--out")
    # read the pose file before --force clears the report folder: it may be that folder's poses.txt
    given = None if poses is None else read_pose_file(Path(poses))
    _check_out_dir(out, force)
    if mode not in MODES:
        raise SceneLocError(f"unknown mode {mode!r} (choose rgb or rgbd)")
    config = estimator_config(estimator)
    the_map: Map | MapSet
    if isinstance(map_dir, Map):
        the_map = map_dir
    elif is_map_set(Path(map_dir)):
        check_top_k(top_k)
        the_map = MapSet.load(map_dir, device=device)
    else:
        the_map = Map.load(map_dir, device=device)
    map_name = "(in-memory map)" if isinstance(map_dir, Map) else str(map_dir)
    scene = load_scene(dataset, intrinsics)
    frames = scene.frames(split)
    notes = []
    if mode == "rgbd" and poses is None:
        missing = [f for f in frames if f.depth_path is None]
        if missing:
            raise SceneLocError(f"{missing[0].image_path}: missing depth (rgbd mode needs a depth map per frame)")
    diag = Diagnostics(config.n_k, config.n_best, np.random.default_rng(seed))

    if poses is None and isinstance(the_map, MapSet):
        records = []
        names = list(the_map.maps)
        for frame, r in localize_routed_frames(the_map, frames, mode, config, seed, top_k, True, progress):
            res = r.result
            records.append(routed_pose_record(frame.name, r, names))
            if res.pixels is not None and res.coords is not None:   # None: the map failed before predicting
                add_frame(diag, the_map.maps[r.source], frame, res.pixels, res.coords, res.confidence,
                           res.used if res.pose is not None else None)
        source = f"localized ({config.method}, routed to the top {top_k} of {len(names)} maps)"
        notes.append(f"map set of {len(names)} maps; map_index in poses.txt: "
                     + ", ".join(f"{i} = {n}" for i, n in enumerate(names)))
    elif poses is None:
        assert isinstance(the_map, Map)
        records = []
        for frame, res in localize_frames(the_map, frames, mode, config, seed, progress, keep_points=True):
            records.append(PoseRecord(frame.name, res.pose, res.pose_file_columns(), res.failure))
            add_frame(diag, the_map, frame, res.pixels, res.coords, res.confidence,
                       res.used if res.pose is not None else None)
        source = f"localized ({config.method})"
    else:
        poses = Path(poses)
        records, absent = match_pose_records(given or [], frames, poses)
        coverage = {"listed": len(frames) - absent, "frames": len(frames), "share": 1 - absent / len(frames)}
        if absent and not allow_missing:
            raise SceneLocError(f"{poses}: lists {coverage['listed']} of the {len(frames)} frames of split "
                                f"{split!r} ({coverage['share']:.1%}); pass --allow-missing to count the others "
                                f"as failures")
        if absent:
            notes.append(f"{absent} frames of the split are not in {poses.name}: counted as failures")
        # The file has no correspondences: run the network alone for the correspondence figures.
        for frame in progress_bar(frames, desc="predicting", unit="frame", disable=not progress, dynamic_ncols=True):
            image = frame.load_image()
            net_map = the_map.top_map(image) if isinstance(the_map, MapSet) else the_map
            pred = net_map.predict(image)
            conf = None if pred.confidence is None else pred.confidence.reshape(-1)
            add_frame(diag, net_map, frame, pred.pixels.reshape(-1, 2), pred.coords.reshape(-1, 3), conf, None)
        notes.append(f"poses read from {poses}; correspondence statistics come from running the network alone, "
                     "so the inlier share of the points used for the pose is not available")
        source = f"from {poses.name}"

    rot, trans = pose_error_arrays([r.pose for r in records], [f.pose for f in frames])
    timing_keys = ROUTED_TIMING_KEYS if isinstance(the_map, MapSet) else TIMING_KEYS
    metrics = {"scene": _scene_name(scene.root), "dataset": str(scene.root), "map": map_name, "split": split,
               "mode": mode, "solver": "PnP" if mode == "rgb" else "Kabsch", "pose_source": source,
               **pose_metrics(rot, trans), "inlier_share": diag.inlier_shares(),
               "timing_ms": timing_summary([r.extras for r in records], timing_keys), "notes": notes, "plots": [],
               "near_training": _near_training(scene, split, frames)}
    probability = np.array([r.extras.get("probability", np.nan) for r in records], dtype=np.float64)
    if np.isfinite(probability).any():
        success = error_ratio(rot, trans) < 1.0   # within the calibration's 5 cm / 5 deg
        metrics["calibration"] = {"bins": reliability_bins(probability, success),
                                  "operating_point": operating_point(probability, success, REJECT_BELOW)}
    else:
        notes.append("no reliability diagram: no pose has a calibrated probability (an xfeat map "
                     "calibrates when it has enough mapping frames to hold some out, --calibration-minutes; poses "
                     "read from a file have none)")
    if poses is None:
        metrics["pose_config"] = asdict(config)
    else:
        metrics["pose_coverage"] = coverage
    if diag.frames < len(frames):
        notes.append(f"{len(frames) - diag.frames} frames have no depth map: no coordinate errors for them")

    out.mkdir(parents=True, exist_ok=True)
    write_pose_file(out / "poses.txt", records, comment=f"sceneloc evaluate {map_name} {dataset} --split {split} "
                                                         f"--mode {mode} ({source})")
    title = f"{metrics['scene']} ({split}, {mode})"
    _write_plots(out, metrics, diag, the_map, frames, rot, trans, records, title)
    (out / "metrics.json").write_text(json.dumps(_json_number(metrics), indent=2) + "\n")
    write_report(out, metrics)
    return metrics


def _near_training(scene, split: str, frames: list) -> dict | None:
    """``near_training`` of the metrics: how many evaluated frames have a training frame within
    30 cm / 30 deg (None for the training split itself or a dataset without one)."""
    if split == "train":
        return None
    try:
        train = scene.frames("train")
    except SceneLocError:
        return None
    share = near_training_share(np.stack([f.pose for f in train]), np.stack([f.pose for f in frames]))
    return {"max_m": NEAR_TRAINING_M, "max_deg": NEAR_TRAINING_DEG, "share": share}


def _write_plots(out: Path, metrics: dict, diag: Diagnostics, the_map, frames: list, rot: np.ndarray,
                 trans: np.ndarray, records: list, title: str) -> None:
    """Every figure that the data allows, listed in ``metrics['plots']`` (``file``, ``title``,
    ``caption``); ``metrics['notes']`` say what is missing, ``metrics['roc_auc']`` gets the AUCs."""
    plots, notes, split = metrics["plots"], metrics["notes"], metrics["split"]

    def add(key: str, heading: str, caption: str) -> None:
        plots.append({"file": PLOT_FILES[key], "title": heading, "caption": caption})

    if diag.frames:
        plot_error_histogram(diag, out / PLOT_FILES["histogram"], split)
        add("histogram", "Coordinate errors of the points used for pose estimation (paper Fig. 2)",
            f"Normalised histograms of the ground-truth errors of N_k = {diag.n_k} randomly sampled predictions "
            f"and of the {diag.n_best} most confident of them, {FIG2_SAMPLES_PER_FRAME} samples per frame.")
        labels = concat_finite(diag.roc_errors) < INLIER_THRESHOLD_M
        if not diag.roc_scores:
            notes.append("no ROC: the map has no confidence network")
        elif labels.all() or not labels.any():
            notes.append("no ROC: the predictions are all inliers or all outliers")
        else:
            aucs = metrics["roc_auc"] = plot_roc(diag, out / PLOT_FILES["roc"], split)
            add("roc", "Confidence regression vs classification: ROC (paper Fig. 3)",
                "Positives: predictions within 10 cm of the ground truth. " +
                ", ".join(f"{k}: AUC {v:.3f}" for k, v in aucs.items()) +
                ("" if the_map.classifier is not None else
                 ". The map has no inlier classifier (map with --confidence-mode both for the comparison)."))
    else:
        notes.append("no depth ground truth in this split: no coordinate error histogram or ROC")
    plot_examples(example_maps(the_map, frames), out / PLOT_FILES["examples"])
    add("examples", "Input, coordinate error and confidence maps (paper Fig. 4)",
        f"Evenly spaced frames of the {split} split; errors above {ERROR_MAP_MAX_M} m saturate, grey = no depth.")
    plot_error_cdf(rot, trans, out / PLOT_FILES["cdf"], title)
    add("cdf", "Cumulative pose errors", "Share of frames below each error; failed frames count as infinite.")
    if "calibration" in metrics:
        cal = metrics["calibration"]
        plot_reliability(cal["bins"], cal["operating_point"], out / PLOT_FILES["reliability"], title)
        add("reliability", "Per-pose probability: reliability diagram",
            "Frames binned by the calibrated probability that their pose is within 5 cm / 5 deg (fitted on "
            "held-out mapping frames); a calibrated map follows the diagonal. Numbers are frames per bin.")
    plot_topdown(np.stack([f.pose[:3, 3] for f in frames]),
                 [None if r.pose is None else r.pose[:3, 3] for r in records], out / PLOT_FILES["topdown"], title)
    add("topdown", "Estimated vs ground-truth camera positions (top-down)",
        "Each estimate is joined to its ground truth; red crosses mark failed frames at their true position.")
