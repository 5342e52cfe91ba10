"""``sceneloc map``: the whole mapping pipeline -- training frames, stage 1 (head on a pixel buffer, or the
FCN/U-Net), stage 2 (confidence), the held-out pose calibration, the map directory and its report --
and ``--stage confidence`` on an existing map."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Collection
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from sceneloc import __version__
from sceneloc.data.dataset import POSE_CAMERAS, Scene, check_frames, evenly_spaced, load_scene
from sceneloc.errors import SceneLocError, refuse_to_overwrite
from sceneloc.geometry import pose_errors
from sceneloc.mapping.queries import localize_frames
from sceneloc.mapping.scene_map import MAP_FORMAT_VERSION, Map, default_device
from sceneloc.nets.models import EncoderHeadNet, SceneNormalisation, build_coordinate_network
from sceneloc.pose.calibration import PoseCalibration, error_ratio, view_novelty
from sceneloc.pose.config import MODES, PoseConfig, inlier_settings
from sceneloc.progress import progress as progress_bar
from sceneloc.surface.cloud import SceneCloud, depth_surfels
from sceneloc.surface.view import SceneView, grey_samples
from sceneloc.training.buffer import entries_for_memory, fill_buffer
from sceneloc.training.frame_cache import FrameCache
from sceneloc.training.head import buffer_accuracy, train_head
from sceneloc.training.loop import Budget
from sceneloc.training.trainers import (
    MappingConfig,
    confidence_config,
    coordinate_accuracy,
    predict_cache,
    seed_everything,
    train_confidence_stage,
    train_coordinates,
)
from sceneloc.validation import check_config_budgets, check_output_path

MIN_CALIBRATION_FRAMES = 20   # fewer held-out frames: no calibration
CALIBRATION_FRAMES = 60       # held-out frames localized (evenly spaced) to fit the calibration


def map_config(cfg: MappingConfig, stats, train_frames: list, with_depth: bool = True
               ) -> tuple[dict, SceneNormalisation]:
    """The map's ``config.json`` (without the stage-2 part) for a resolved ``cfg`` and the training
    scene's ``stats`` (``Scene.statistics``), and the scene normalisation it records."""
    cx, cy, cz = (float(v) for v in stats.center)
    norm = SceneNormalisation((cx, cy, cz), float(stats.diameter / 2))
    config = {
        "format_version": MAP_FORMAT_VERSION, "sceneloc_version": __version__,
        "network": cfg.network_config(), "input_height": cfg.input_height, "image_size": list(stats.image_size),
        "intrinsics": train_frames[0].K.tolist(), "normalisation": {"center": list(norm.center), "scale": norm.scale},
        "tukey_c": cfg.tukey_c if cfg.tukey_c else stats.tukey_c,
        # how the coordinates were learned: Map.localize picks its default PnP threshold by it
        "supervision": "depth" if with_depth else "reprojection",
        # pose units per metre of depth: Map.localize multiplies every query's depth by it
        "depth_to_pose_scale": cfg.depth_to_pose_scale,
        # whose camera the poses are: Map.localize takes an RGB-D pose from the depth or from the image
        "pose_camera": cfg.pose_camera,
    }
    return config, norm


def scaled_depth(scene: Scene, depth_to_pose_scale: float) -> Scene:
    """``scene`` with every frame's depth read in pose units (``MappingConfig.depth_to_pose_scale``)."""
    if depth_to_pose_scale != 1.0:   # the depth meets the poses in their unit: train and test alike
        scene.splits = {k: [replace(f, depth_to_pose_scale=depth_to_pose_scale) for f in v]
                        for k, v in scene.splits.items()}
    return scene


def retrain_confidence(dataset: str | Path, map_dir: str | Path, cfg: MappingConfig, force: bool = False,
                       device: str | None = None, intrinsics: np.ndarray | None = None, log=print) -> dict:
    """``sceneloc map --stage confidence``: (re)train stage 2 on an existing map's coordinate network.

    The coordinate network is untouched; an existing confidence network is replaced only with ``force``.
    """
    check_config_budgets(cfg)
    the_map = Map.load(map_dir, device=device)
    cfg = replace(cfg, arch=the_map.config["network"]["arch"]).resolved()
    if not cfg.confidence_minutes:
        raise SceneLocError("--stage confidence needs --confidence-minutes greater than 0")
    if the_map.confidence_net is not None and not force:
        raise SceneLocError(f"{map_dir}: the map already has a confidence network (use --force to retrain it)")
    seed_everything(cfg.seed)
    scene = scaled_depth(load_scene(dataset, intrinsics), the_map.depth_to_pose_scale)
    net = the_map.coord_net
    cache = FrameCache.build(scene.frames("train"), the_map.config["input_height"], net.stride, net.multiple,
                             "caching train frames")
    conf_net, classifier, info = train_confidence_stage(net, the_map.norm, cache, tuple(the_map.config["image_size"]),
                                                        cfg, the_map.device)
    the_map.confidence_net, the_map.classifier = conf_net.eval(), classifier.eval() if classifier else None
    the_map.config.update(confidence_config(conf_net, cfg))
    the_map.save(map_dir, keep_dsac_stage=True)
    report_path = Path(map_dir) / "mapping_report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    report["confidence_training"] = info
    report_path.write_text(json.dumps(report, indent=2))
    log(f"confidence network written to {map_dir}")
    return info


def _check_map_dir(map_dir: Path, force: bool, resume: bool) -> None:
    refuse_to_overwrite(map_dir, force or resume, "use --force to overwrite or --resume to continue")


def map_scene(dataset: str | Path, map_dir: str | Path, cfg: MappingConfig, force: bool = False,
              resume: bool = False, device: str | None = None, intrinsics: np.ndarray | None = None,
              evaluate_test: bool = True, log=print, frames: Collection[str] | None = None) -> dict:
    """``sceneloc map``: both stages on the train split, then coordinate accuracy on train and test.

    ``frames`` (names of training frames) maps only those: one partition of a larger capture (scale/ray_mapping.py).
    Returns the mapping report (also saved as ``mapping_report.json`` in the map directory).
    """

    map_dir = Path(map_dir)
    check_config_budgets(cfg)
    if cfg.pose_camera not in (None, *POSE_CAMERAS):
        raise SceneLocError(f"--pose-camera {cfg.pose_camera!r}: choose {' or '.join(POSE_CAMERAS)}")
    check_output_path(map_dir, "dir", [dataset])
    _check_map_dir(map_dir, force, resume)
    device = device or default_device()
    ck_path = map_dir / "checkpoint.pt"
    if resume:
        saved = map_dir / "mapping_config.json"
        if not saved.exists() or not ck_path.exists():
            raise SceneLocError(f"{map_dir}: nothing to resume (no checkpoint.pt / mapping_config.json)")
        budget = {"minutes": cfg.minutes, "iterations": cfg.iterations}
        # maps written before the options carried their unit in their name
        old = {"aug_rotation": "aug_rotation_deg", "aug_orbit": "aug_orbit_deg"}
        fields_ = {old.get(k, k): v for k, v in json.loads(saved.read_text()).items()}
        cfg = MappingConfig(**{**fields_, **budget})
    cfg = cfg.resolved()
    if cfg.confidence_minutes == 0:  # documented: 0 skips stage 2, as --no-confidence
        cfg = replace(cfg, confidence=False)
    seed_everything(cfg.seed)
    scene = scaled_depth(load_scene(dataset, intrinsics), cfg.depth_to_pose_scale)
    # unless told, the dataset says whose camera its poses are (an import of SfM poses: the colour camera's)
    cfg = replace(cfg, pose_camera=cfg.pose_camera or scene.pose_camera or "depth")
    if frames is not None:   # the partition's frames are its training split (its extent, normalisation, buffer)
        keep = set(frames)
        scene.splits["train"] = [f for f in scene.frames("train") if f.name in keep]
        if not scene.splits["train"]:
            raise SceneLocError(f"{dataset}: none of the partition's frames is in the train split")
    train_frames = scene.frames("train")
    check_frames(train_frames)   # the checks `sceneloc check` runs: every image and depth map decodes and fits
    missing = [f for f in train_frames if f.depth_path is None]
    if missing and cfg.arch != "xfeat":
        raise SceneLocError(f"{missing[0].image_path}: missing depth (--arch {cfg.arch} needs depth for every "
                            f"training frame; the default xfeat map learns from poses alone)")
    if missing:
        log(f"{len(missing)} of {len(train_frames)} training frames have no depth: they are learned from the "
            f"reprojection error alone (RGB-only mapping)")
        if len(missing) == len(train_frames) and cfg.confidence:
            # stage 2 learns the head's errors against depth ground truth: there is none
            log("no training frame has depth: the confidence network (stage 2) is skipped")
            cfg = replace(cfg, confidence=False)
    stats = scene.statistics()
    config, norm = map_config(cfg, stats, train_frames, with_depth=len(missing) < len(train_frames))
    tukey_c = config["tukey_c"]
    model = build_coordinate_network(config["network"])
    log(f"scene: {len(train_frames)} training frames, diameter {stats.diameter:.2f} m, Tukey c {tukey_c:.2f} m; "
        f"{cfg.arch} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters) on {device}")
    map_dir.mkdir(parents=True, exist_ok=True)
    (map_dir / "mapping_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    image_hw = stats.image_size
    calibration = None
    t0 = time.perf_counter()
    # every frame's surface samples once: the map's surface and view fuse all, the calibration head's its own frames
    with_depth = len(missing) < len(train_frames)
    surfels, view_samples = surface_samples(train_frames, bool(cfg.cloud_voxel_m) and with_depth,
                                            bool(cfg.view_voxel_m) and with_depth)
    cloud = SceneCloud.from_surfels(surfels, cfg.cloud_voxel_m) if surfels else None
    cloud_s = time.perf_counter() - t0   # with the pass over the frames that both share
    if cloud is not None:
        log(f"scene surface: {len(cloud.points) / 1e3:.0f} k points at {100 * cfg.cloud_voxel_m:g} cm, {cloud_s:.0f} s")
    t1 = time.perf_counter()
    view = SceneView.from_samples(view_samples, cfg.view_voxel_m) if view_samples else None
    view_s = time.perf_counter() - t1
    if view is not None:
        log(f"scene view: {len(view.points) / 1e3:.0f} k points at {100 * cfg.view_voxel_m:g} cm, {view_s:.0f} s")

    assert cfg.input_height is not None and cfg.aug_scale is not None and cfg.lr is not None  # resolved() filled them
    state: Budget
    if isinstance(model, EncoderHeadNet):  # cfg.arch == "xfeat"
        model.to(device)
        model.precision = cfg.precision
        entries = entries_for_memory(cfg.buffer_mb, model.encoder.channels)
        if entries < cfg.pixel_batch:
            raise SceneLocError(f"--buffer-mb {cfg.buffer_mb:g}: holds {entries} pixels, fewer than one head step "
                                f"(--pixel-batch {cfg.pixel_batch}); give at least a few hundred MB")
        t1 = time.perf_counter()
        buffer = fill_buffer(train_frames, model, cfg.input_height, entries, cfg.buffer_copies, cfg.seed,
                             cfg.aug_scale, cfg.aug_rotation_deg, cfg.aug_brightness, cfg.aug_contrast, device,
                             cfg.aug_novel_views, cfg.aug_orbit_deg)
        buffer_s = time.perf_counter() - t1
        log(f"training buffer: {len(buffer) / 1e6:.2f} M pixels, {buffer.nbytes / 2 ** 20:.0f} MB, {buffer_s:.0f} s")
        state = train_head(model, norm, buffer, cfg.minutes, cfg.iterations, cfg.pixel_batch, cfg.lr, cfg.schedule,
                           loss=cfg.head_loss, seed=cfg.seed, checkpoint=ck_path, resume=resume,
                           checkpoint_minutes=cfg.checkpoint_minutes, precision=cfg.precision, device=device)
        buffer_report = {"entries": len(buffer), "megabytes": round(buffer.nbytes / 2 ** 20, 1),
                         "seconds": round(buffer_s, 1), **buffer_accuracy(model, norm, buffer, device=device)}
        if cfg.calibration_minutes:
            calibration = calibrate_with_held_out_head(config, norm, buffer, train_frames, cfg, device, log,
                                                       surfels=surfels, view_samples=view_samples)
        del buffer  # the largest allocation of mapping: free it before stage 2
        t1 = time.perf_counter()
        cache = (FrameCache.build(train_frames, cfg.input_height, model.stride, model.multiple, "caching train frames")
                 if cfg.confidence else None)
        cache_s = time.perf_counter() - t1
    else:
        t1 = time.perf_counter()
        cache = FrameCache.build(train_frames, cfg.input_height, model.stride, model.multiple, "caching train frames")
        cache_s = time.perf_counter() - t1
        state = train_coordinates(model, norm, cache, cfg, tukey_c, ck_path, resume, device)
        buffer_report = None
    conf_net, classifier, conf_info = (train_confidence_stage(model, norm, cache, image_hw, cfg, device)
                                       if cfg.confidence and cache is not None else (None, None, {}))
    config.update(confidence_config(conf_net, cfg))
    the_map = Map(config, model, conf_net, device, classifier=classifier)
    the_map.calibration = calibration
    the_map.cloud = cloud
    the_map.view = view
    the_map.save(map_dir)

    per_step = cfg.pixel_batch if cfg.arch == "xfeat" else cfg.batch_size
    report = {"training": {"steps": state.step, "seconds": round(state.elapsed, 1), "cache_seconds": round(cache_s, 1),
                           f"{'pixels' if cfg.arch == 'xfeat' else 'images'}_per_second":
                               round(state.step * per_step / max(state.elapsed, 1e-9), 2),
                           "history": state.history},
              "confidence_training": conf_info,
              "scene_surface": None if cloud is None else {"points": len(cloud.points), "voxel_m": cloud.voxel_m,
                                                           "seconds": round(cloud_s, 1)},
              "scene_view": None if view is None else {"points": len(view.points), "voxel_m": view.voxel_m,
                                                       "seconds": round(view_s, 1)}}
    if buffer_report is not None:  # the head's fit on a sample of its buffer: no second pass over the images
        report["buffer"] = buffer_report
        if math.isfinite(buffer_report["median_error_m"]):  # NaN: no training frame has depth
            report["train"] = {k: buffer_report[k] for k in ("median_error_m", "within_10cm")}
    elif cache is not None:
        report["train"] = coordinate_accuracy(predict_cache(model, norm, cache, device), cache)
    del cache
    test_frames = scene.splits.get("test", [])
    if evaluate_test and test_frames and all(f.depth_path for f in test_frames):
        test_cache = FrameCache.build(scene.frames("test"), cfg.input_height, model.stride, model.multiple,
                                      "caching test frames")
        report["test"] = coordinate_accuracy(predict_cache(model, norm, test_cache, device), test_cache)
    report["wall_seconds"] = round(time.perf_counter() - t0, 1)  # buffer or cache, both stages, test check
    (map_dir / "mapping_report.json").write_text(json.dumps(report, indent=2))
    for split in ("train", "test"):
        if split in report:
            r = report[split]
            log(f"{split:5s} coordinates: median error {100 * r['median_error_m']:.1f} cm, "
                f"{r['within_10cm']:.1%} of pixels within 10 cm")
    log(f"map written to {map_dir}")
    return report


def surface_samples(frames: list, surface: bool, view: bool) -> tuple[list, list]:
    """Each frame's depth (and image) read once for both surfaces of the map: its ``depth_surfels`` for
    the scene surface when ``surface``, its ``grey_samples`` for the scene view when ``view`` (empty
    lists for those not asked for)."""
    surfels: list[tuple[np.ndarray, np.ndarray]] = []
    greys: list[tuple[np.ndarray, np.ndarray]] = []
    if not (surface or view):
        return surfels, greys
    for f in progress_bar(frames, desc="scene surface", unit="frame", mininterval=1.0, dynamic_ncols=True):
        image = f.load_image() if view and f.depth_path is not None else None
        depth = None if f.depth_path is None else f.load_depth(None if image is None else image.shape[:2])
        if surface:
            surfels.append(depth_surfels(depth, f.K, f.pose))
        if view:
            greys.append(grey_samples(image, depth, f.K, f.pose))
    return surfels, greys


def calibration_group(frames: list) -> np.ndarray:
    """Indices of the training ``frames`` that the calibration head does not learn from: the last
    recording when there are several (``seq-XX/...`` names: a trajectory of its own, as a query's
    is), else the middle third of the frames."""
    sequences = [Path(f.name).parts[0] if len(Path(f.name).parts) > 1 else "" for f in frames]
    names = sorted(set(sequences))
    if len(names) > 1:
        return np.flatnonzero(np.array(sequences) == names[-1])
    n = len(frames)
    return np.arange(n // 3, 2 * n // 3)


def calibrate_with_held_out_head(config: dict, norm: SceneNormalisation, buffer, frames: list, cfg: MappingConfig,
                                 device: str, log=print, group: np.ndarray | None = None,
                                 surfels: list | None = None, view_samples: list | None = None
                                 ) -> PoseCalibration | None:
    """Fit the per-pose calibration with a second, short-trained head that never saw one group of
    the training frames (``calibration_group``): its poses of those frames fail and succeed the way
    the map's poses of new queries do, which frames the map itself was trained on cannot show
    (they all localize). ``group`` overrides which frames (indices) are held out. With the frames'
    ``surfels`` (``surface_samples``), the second head's map has the surface of the frames it
    learned, so its RGB-D poses end with ICP as the map's will; with their ``view_samples``
    (``surface_samples``), its RGB poses end aligned to the view of the frames it learned.
    Returns None when too few frames can be held out."""
    group = calibration_group(frames) if group is None else group
    if len(group) < MIN_CALIBRATION_FRAMES or len(group) == len(frames):
        log(f"pose calibration skipped: {len(group)} of {len(frames)} frames to hold out (needs "
            f"{MIN_CALIBRATION_FRAMES} and some left to train on)")
        return None
    held = torch.zeros(len(frames), dtype=torch.bool)
    held[torch.from_numpy(group)] = True
    entries = torch.nonzero(~held[buffer.frames.long()]).squeeze(1)
    probe = build_coordinate_network(config["network"]).to(device)
    assert isinstance(probe, EncoderHeadNet) and cfg.lr is not None  # an xfeat map, resolved() config
    probe.precision = cfg.precision
    iterations = None if cfg.iterations is None else max(1, cfg.iterations // 4)
    train_head(probe, norm, buffer, cfg.calibration_minutes, iterations, cfg.pixel_batch, cfg.lr, cfg.schedule,
               loss=cfg.head_loss, seed=cfg.seed + 1, precision=cfg.precision, device=device, entries=entries,
               desc="calibration head")
    pick = group[evenly_spaced(len(group), CALIBRATION_FRAMES)]
    log(f"pose calibration: a head trained without {len(group)} of the {len(frames)} training frames localizes "
        f"{len(pick)} of them")
    learned = [f for i, f in enumerate(frames) if not held[i]]
    probe_map = Map(config, probe, None, device)
    if surfels:
        probe_map.cloud = SceneCloud.from_surfels([s for i, s in enumerate(surfels) if not held[i]], cfg.cloud_voxel_m)
    if view_samples:
        probe_map.view = SceneView.from_samples([s for i, s in enumerate(view_samples) if not held[i]],
                                                cfg.view_voxel_m)
    return fit_pose_calibration(probe_map, [frames[i] for i in pick], learned, frames, cfg.seed, log)


def mapping_views(frames: list) -> dict[str, np.ndarray]:
    """Camera ``centres (N, 3)`` and optical ``axes (N, 3)`` of ``frames`` (``pose.calibration.view_novelty``'s
    reference views)."""
    poses = np.stack([f.pose for f in frames])
    return {"centres": poses[:, :3, 3], "axes": poses[:, :3, 2]}


def fit_pose_calibration(the_map: Map, frames: list, learned: list, mapped: list, seed: int = 0,
                         log=print) -> PoseCalibration:
    """Localize held-out mapping ``frames`` with the default estimator, in RGB and (those with
    depth) RGB-D, and fit :class:`PoseCalibration` to which poses came within 5 cm / 5 deg, given
    their inliers and their view novelty against the frames ``learned`` by ``the_map``'s head; queries
    of the final map are measured against all ``mapped`` frames."""
    config = PoseConfig()
    reference = mapping_views(learned)
    # queries give their depth in the sensor's metres (the map scales it): so do these mapping frames
    frames = [replace(f, depth_to_pose_scale=1.0) for f in frames]
    samples: dict[str, tuple[np.ndarray, ...]] = {}
    for mode in MODES:
        use = frames if mode == "rgb" else [f for f in frames if f.depth_path is not None]
        if not use:
            continue
        inliers, points, errors, poses = [], [], [], []
        for frame, res in localize_frames(the_map, use, mode, config, seed, keep_points=True):
            inliers.append(res.inliers if res.pose is not None else 0)
            points.append(len(res.pixels))
            errors.append(math.inf if res.pose is None else float(error_ratio(*pose_errors(res.pose, frame.pose),
                                                                           PoseCalibration.max_deg,
                                                                           PoseCalibration.max_cm)))
            poses.append(np.full((4, 4), np.nan) if res.pose is None else res.pose)   # NaN: novelty's cap
        samples[mode] = (np.array(inliers), np.array(points), np.array(errors),
                         view_novelty(np.stack(poses), **reference))
        log(f"pose calibration ({mode}): {np.mean(np.array(errors) < 1):.0%} of {len(use)} held-out frames within "
            f"5 cm / 5 deg")
    K = frames[0].K   # the default threshold is an angle: the settings hold for every camera of the map
    return PoseCalibration.fit(samples, inlier_settings(the_map.estimator_for(config, K), K), mapping_views(mapped))
