"""The map: everything ``localize`` needs, in one directory, and the user-facing ``Map`` API.

A map directory holds ``config.json`` (format version, networks, input size, scene normalisation,
the camera of the mapping images), ``coordinates.pt`` (coordinate network weights) and, when
stage 2 ran, ``confidence.pt``; the optional DSAC stage (pose/dsac.py) adds its own files beside them.
Nothing from the dataset is stored.

>>> m = Map.load("maps/kitchen")                                   # doctest: +SKIP
>>> result = m.localize(image, depth=None, intrinsics=K)           # doctest: +SKIP
>>> result.pose                                                    # 4x4 camera-to-world or None
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from sceneloc.data.dataset import camera_points, is_kinect_depth_camera
from sceneloc.errors import SceneLocError
from sceneloc.mapping.dsac_stage import DSACStage, resolve_stage
from sceneloc.mapping.map_checks import check_map_config, first_line, load_map_file
from sceneloc.nets.models import (
    ConfidencePointNet,
    CoordinateNetwork,
    SceneNormalisation,
    build_coordinate_network,
    confidence_inputs,
    image_to_tensor,
    input_size,
    load_weights,
    output_pixel_centres,
)
from sceneloc.pose.calibration import CALIBRATION_FILE, PoseCalibration
from sceneloc.pose.config import DSAC_METHODS, estimator_config, for_reprojection_map, inlier_settings
from sceneloc.pose.dsac import STAGE_FILES, estimate_pose_dsac
from sceneloc.pose.estimate import PoseConfig, PoseResult, estimate_pose
from sceneloc.pose.fit import REREGISTERED_SCALE_SIGMA, depth_agreeing_pose, keeps_inliers
from sceneloc.surface.cloud import SCENE_CLOUD_FILE, SceneCloud, align_depth, depth_points
from sceneloc.surface.view import SCENE_VIEW_FILE, SceneView, align_image
from sceneloc.validation import check_intrinsics, depth_in_metres

#: 2: the network may be a frozen pretrained encoder + head (the file holds the head; the config the
#: encoder's name and weights hash). Version-1 maps (fcn, unet) are read unchanged.
#: 3: 7-Scenes images read with their colour camera (depth registered to it); 1-2 read them with the depth camera's
MAP_FORMAT_VERSION = 3
READABLE_FORMAT_VERSIONS = (1, 2, 3)
#: Pose estimators that use the confidence network's output.
CONFIDENCE_METHODS = ("confidence", "joint")
#: The random seed of ``Map.localize`` when no generator is given: the same call gives the same pose.
DEFAULT_SEED = 0
#: Correspondences handed to pose estimation per image: the ~4800 of a stride-8 net at 480x640.
DEFAULT_POSE_POINTS = 4800


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@cache
def _blas_threads() -> ThreadpoolController:
    """numpy's BLAS thread pools, found once (a search of the loaded libraries, ~1 ms)."""
    return ThreadpoolController()


def _one_blas_thread():
    """Context in which numpy's BLAS runs on one thread. Pose estimation's BLAS calls are tiny (3x3
    SVDs, batches of 4x4 products, small least squares): one thread is as fast, and a multi-threaded
    BLAS leaves threads spinning that slowed the *next* network call on 2 cores
    (docs/decisions/ransac-scoring.md)."""
    return _blas_threads().limit(limits=1, user_api="blas")


def grid_step(out_hw: tuple[int, ...], max_points: int) -> int:
    """Stride of the regular sub-grid of an ``out_hw`` output grid that keeps at most ~``max_points`` cells."""
    return max(1, int(np.ceil(np.sqrt(out_hw[0] * out_hw[1] / max_points))))


@dataclass
class Prediction:
    """Dense network output for one image: full-resolution pixel centres ``(h, w, 2)``, scene
    coordinates ``(h, w, 3)`` metres, confidence ``(h, w)`` in [0, 1] (None without stage 2)."""
    pixels: np.ndarray
    coords: np.ndarray
    confidence: np.ndarray | None
    network_ms: float


@dataclass(kw_only=True)
class Localization:
    """Result of ``Map.localize``: camera-to-world pose (None when no pose could be found), inlier
    count, hypothesis score, timings in ms (network, sampling, refinement, total) and the
    correspondences used for the final pose (indices into ``pixels``/``coords``; the dense arrays are
    None when ``localize_frames`` drops them to save memory) and ``probability``: the calibrated
    chance that the pose is within 5 cm / 5 deg (pose/calibration.py; 0 for a failure, NaN for a map
    without calibration or another ``method`` than the one calibrated); ``depth_offset_m``: how much
    further the query depth reads along its rays than the pose fits (RGB-D; ``PoseConfig.depth_offset_sigma_m``)."""
    pose: np.ndarray | None
    inliers: int
    score: float
    timings: dict[str, float]
    pixels: np.ndarray | None = field(default=None, repr=False)
    coords: np.ndarray | None = field(default=None, repr=False)
    confidence: np.ndarray | None = field(default=None, repr=False)
    used: np.ndarray | None = field(default=None, repr=False)
    failure: str | None = None
    probability: float = float("nan")
    depth_offset_m: float = 0.0

    def without_points(self) -> Localization:
        """This result without its dense arrays (pixels, coords, confidence, used): they serve diagnostics
        only, and a long run keeps thousands of results."""
        self.pixels = self.coords = self.confidence = self.used = None
        return self

    @property
    def success(self) -> bool:
        return self.pose is not None

    def pose_file_columns(self) -> dict[str, float]:
        """The extra columns of a pose-file line for this result (time per frame and its parts, inliers,
        calibrated probability, the query depth's fitted offset)."""
        t = self.timings
        return {"time_ms": t["total_ms"], "inliers": self.inliers, "probability": self.probability,
                "depth_offset_m": self.depth_offset_m,
                "network_ms": t["network_ms"],
                "sampling_ms": t["sampling_ms"], "refinement_ms": t["refinement_ms"]}


class Map:
    """A learned scene map: coordinate network, optional confidence PointNet, scene normalisation."""

    def __init__(self, config: dict, coord_net: CoordinateNetwork, confidence_net: ConfidencePointNet | None = None,
                 device: str | None = None, classifier: ConfidencePointNet | None = None):
        self.config = config
        self.device = device or default_device()
        self.coord_net = coord_net.to(self.device).eval()
        self.confidence_net = confidence_net.to(self.device).eval() if confidence_net is not None else None
        # Optional inlier classifier trained beside the regressor (paper Fig. 3); never used for poses.
        self.classifier = classifier.to(self.device).eval() if classifier is not None else None
        self.norm = SceneNormalisation(tuple(config["normalisation"]["center"]), config["normalisation"]["scale"])
        self.map_dir: Path | None = None  # set by load: where the DSAC stage is looked up
        self.dsac = None                  # the DSAC stage (dsac_stage.DSACStage), loaded on first use by dsac/softam
        self.calibration: PoseCalibration | None = None   # per-pose probabilities (pose/calibration.py)
        self.cloud: SceneCloud | None = None   # the mapping depth's surface: RGB-D poses end with ICP to it
        self.view: SceneView | None = None     # the surface in grey: RGB poses end aligned to its rendering

    # ------------------------------------------------------------------------------------ files

    def save(self, map_dir: str | Path, keep_dsac_stage: bool = False) -> None:
        """Write the map directory; a DSAC stage in it is deleted unless ``keep_dsac_stage`` (it was
        fine-tuned from the previous coordinate network, so a new one makes it stale)."""
        d = Path(map_dir)
        d.mkdir(parents=True, exist_ok=True)
        torch.save(self.coord_net.state_dict(), d / "coordinates.pt")
        for net, name in ((self.confidence_net, "confidence.pt"), (self.classifier, "confidence_classifier.pt")):
            if net is not None:
                torch.save(net.state_dict(), d / name)
            else:
                (d / name).unlink(missing_ok=True)
        for name in STAGE_FILES if not keep_dsac_stage else ():
            (d / name).unlink(missing_ok=True)
        cfg = dict(self.config, has_confidence=self.confidence_net is not None)
        (d / "config.json").write_text(json.dumps(cfg, indent=2))
        if self.calibration is not None:
            self.calibration.save(d)
        else:  # a calibration fitted to an earlier network would be wrong for this one
            (d / CALIBRATION_FILE).unlink(missing_ok=True)
        for part, name in ((self.cloud, SCENE_CLOUD_FILE), (self.view, SCENE_VIEW_FILE)):
            if part is not None:
                part.save(d)
            else:  # a surface of an earlier mapping must not outlive it
                (d / name).unlink(missing_ok=True)

    @classmethod
    def load(cls, map_dir: str | Path, device: str | None = None) -> Map:
        """Read a map directory; any file that cannot be read is one SceneLocError naming it, what is
        wrong and the command that rebuilds the map."""
        d = Path(map_dir)
        cfg_path = d / "config.json"
        rebuild = f"rebuild the map with 'sceneloc map DATASET {d} --force'"
        if not d.is_dir():
            raise SceneLocError(f"{d}: map directory {'is not a directory' if d.exists() else 'does not exist'}")
        if not cfg_path.is_file():
            raise SceneLocError(f"{d}: not a sceneloc map directory (no config.json)")
        try:
            config = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SceneLocError(f"{cfg_path}: corrupt map configuration ({first_line(e)}); {rebuild}") from None
        check_map_config(config, cfg_path, rebuild)
        version = config.get("format_version")
        if version not in READABLE_FORMAT_VERSIONS:
            raise SceneLocError(f"{cfg_path}: map format version {version} is not supported by this sceneloc "
                                f"(reads {', '.join(map(str, READABLE_FORMAT_VERSIONS))}); re-map with "
                                f"'sceneloc map DATASET {d} --force'")
        # before format 3, sceneloc learned 7-Scenes colour images with the Kinect's depth camera
        if version < 3 and is_kinect_depth_camera(config.get("intrinsics", np.eye(3)), config.get("image_size")):
            raise SceneLocError(f"{cfg_path}: this map learned 7-Scenes images with the depth camera's 585 px "
                                f"intrinsics, before sceneloc registered 7-Scenes depth to the colour camera; its "
                                f"poses would be wrong: re-map with 'sceneloc map DATASET {d} --force'")
        device = device or default_device()
        try:
            net = build_coordinate_network(config["network"])
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise SceneLocError(f"{cfg_path}: bad 'network' entry ({first_line(e)}); {rebuild}") from None
        net = load_map_file(d / "coordinates.pt", rebuild, lambda: load_weights(net, d / "coordinates.pt", device,
                                                                             "coordinate network"))
        arch = config.get("confidence_network", {})
        if not isinstance(arch, dict):
            raise SceneLocError(f"{cfg_path}: 'confidence_network' must be an object; {rebuild}")
        conf = classifier = None
        if config.get("has_confidence") and (d / "confidence.pt").exists():
            conf = load_map_file(d / "confidence.pt", rebuild, lambda: load_weights(
                ConfidencePointNet(**arch), d / "confidence.pt", device, "confidence network"))
        if (d / "confidence_classifier.pt").exists():
            classifier = load_map_file(d / "confidence_classifier.pt", rebuild, lambda: load_weights(
                ConfidencePointNet(**{**arch, "mode": "classification"}), d / "confidence_classifier.pt", device,
                "confidence network"))
        the_map = cls(config, net, conf, device, classifier)
        the_map.map_dir = d
        the_map.calibration = load_map_file(d / CALIBRATION_FILE, rebuild, lambda: PoseCalibration.load(d))
        the_map.cloud = load_map_file(d / SCENE_CLOUD_FILE, rebuild, lambda: SceneCloud.load(d))
        the_map.view = load_map_file(d / SCENE_VIEW_FILE, rebuild, lambda: SceneView.load(d))
        return the_map

    # ------------------------------------------------------------------------------- inference

    @property
    def mapping_image_size(self) -> tuple[int, int]:
        return tuple(self.config["image_size"])

    @property
    def pose_camera(self) -> str:
        """The camera the mapping poses belong to (``MappingConfig.pose_camera``; "depth" for maps before it)."""
        return str(self.config.get("pose_camera", "depth"))

    @property
    def depth_to_pose_scale(self) -> float:
        """Pose units per metre of depth (``MappingConfig.depth_to_pose_scale``; 1 for maps before it)."""
        return float(self.config.get("depth_to_pose_scale", 1.0))

    def _check_intrinsics(self, image: np.ndarray, intrinsics: np.ndarray | None) -> np.ndarray:
        if intrinsics is not None:
            return check_intrinsics(intrinsics, image.shape[:2], "query intrinsics")
        if tuple(image.shape[:2]) != self.mapping_image_size:
            h, w = self.mapping_image_size
            raise SceneLocError(f"image is {image.shape[1]}x{image.shape[0]} but the map was built from {w}x{h} "
                                f"images: pass the query camera's intrinsics")
        return np.asarray(self.config["intrinsics"], dtype=np.float64)

    def estimator_for(self, estimator: PoseConfig | str | None, K: np.ndarray) -> PoseConfig:
        """The pose settings a query with camera ``K (3, 3)`` runs under: ``estimator`` (see
        ``estimator_config``), adapted to a map learned from reprojection alone, without ICP on a
        map that has no scene surface and without the image alignment on a map that has no scene view."""
        config = estimator_config(estimator)
        if self.config.get("supervision") == "reprojection":
            # the threshold that suits depth-supervised maps costs an RGB-only map accuracy
            config = for_reprojection_map(config, K)
        if self.cloud is None and config.icp_distances_m:
            config = replace(config, icp_distances_m=())
        if self.view is None and config.view_rounds:
            config = replace(config, view_rounds=0)
        return config

    @torch.no_grad()
    def predict(self, image: np.ndarray, max_points: int = DEFAULT_POSE_POINTS,
                net: CoordinateNetwork | None = None, confidence: bool = True, scale: float = 1.0) -> Prediction:
        """Scene coordinates (and confidences) for an ``(H, W, 3)`` uint8 RGB image of any size.

        A dense output grid (the U-Net predicts every input pixel) is thinned to a regular sub-grid
        of at most ~``max_points`` cells: far more than pose estimation needs, and the confidence
        network's cost grows with the number of points. ``net`` replaces the coordinate network
        (the DSAC stage's fine-tuned one); its predictions get no confidences. ``scale`` resizes the
        network's input (each side rounded to the encoder's multiple); pixels stay full-resolution.
        """
        net = self.coord_net if net is None else net
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise SceneLocError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} with shape {image.shape}")
        t0 = time.perf_counter()
        h_in, w_in, _ = input_size(image.shape[:2], self.config["input_height"], net.multiple)
        if scale != 1.0:
            h_in, w_in = (max(net.multiple, round(v * scale / net.multiple) * net.multiple) for v in (h_in, w_in))
        x = image_to_tensor(image, (h_in, w_in)).to(self.device)
        y = self.norm.to_metres(net(x))[0].permute(1, 2, 0).float()
        pixels = output_pixel_centres(y.shape[:2], net.stride, image.shape[:2], (h_in, w_in))
        step = grid_step(y.shape[:2], max_points)
        y, pixels = y[::step, ::step], pixels[::step, ::step]
        conf = None
        if confidence and self.confidence_net is not None and net is self.coord_net:
            conf = self._confidences(pixels.float().to(self.device), y, image.shape[:2])
        if self.device != "cpu":
            torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) * 1000
        return Prediction(pixels.numpy(), y.cpu().numpy(), None if conf is None else conf.cpu().numpy(), ms)

    def _confidences(self, pixels: torch.Tensor, coords: torch.Tensor, image_hw,
                     net: ConfidencePointNet | None = None) -> torch.Tensor:
        """Confidence of every prediction: points are split into random groups of N_k (the set size
        the PointNet was trained on, so its global feature sees the same kind of set) and run at once."""
        h, w = coords.shape[:2]
        n = h * w
        n_k = self.config["confidence"]["n_k"]
        g = torch.Generator().manual_seed(0)
        perm = torch.randperm(n, generator=g)
        groups = -(-n // n_k)
        idx = perm[torch.arange(groups * n_k) % n].view(groups, n_k).to(coords.device)  # last group wraps around
        x = confidence_inputs(pixels.reshape(-1, 2)[idx], coords.reshape(-1, 3)[idx], image_hw, self.norm)
        scorer = net if net is not None else self.confidence_net
        if scorer is None:
            raise SceneLocError("the map has no confidence network")
        c = scorer.confidence(x).reshape(-1)
        out = torch.empty(n, device=coords.device)
        out[idx.reshape(-1)] = c
        return out.view(h, w)

    def _localize_at(self, image: np.ndarray, depth: np.ndarray | None, K: np.ndarray, config: PoseConfig,
                     stage: DSACStage | None, rng: np.random.Generator | None, max_points: int,
                     prediction: Prediction | None, scale: float) -> tuple[PoseResult, Prediction]:
        """One network pass at ``scale`` (or ``prediction``) and the pose from it."""
        # only the confidence-guided and joint estimators read confidences: skip the PointNet otherwise
        pred = prediction if prediction is not None else self.predict(image, max_points,
                                                                      None if stage is None else stage.coord_net,
                                                                      confidence=config.method in CONFIDENCE_METHODS,
                                                                      scale=scale)
        pixels, coords = pred.pixels.reshape(-1, 2), pred.coords.reshape(-1, 3)
        conf = None if pred.confidence is None else pred.confidence.reshape(-1)
        cam = None if depth is None else camera_points(depth, pixels, K)
        if config.method == "confidence" and conf is None:
            raise SceneLocError("this map has no confidence network (mapped with --no-confidence): "
                                "use --method random or ransac")
        with _one_blas_thread():
            if stage is not None:
                res = estimate_pose_dsac(pixels, coords, K, pred.coords.shape[:2], cam, stage.config,
                                         stage.score_net, DSAC_METHODS[config.method], config.hypotheses,
                                         config.min_inliers, rng)
            else:
                res = estimate_pose(pixels, coords, K, confidence=conf, camera_points=cam, config=config, rng=rng)
        return res, pred

    def _refined(self, image: np.ndarray, depth: np.ndarray | None, K: np.ndarray, config: PoseConfig,
                 pose: np.ndarray, offset_m: float, pixels: np.ndarray, coords: np.ndarray,
                 scale_sigma: float | None = None) -> tuple[np.ndarray, float]:
        """The final refinement of a camera-to-world ``pose (4, 4)`` (and its depth offset): RGB-D ICP to the
        scene surface, RGB alignment to the scene view; kept only where it keeps the network's inliers
        among ``pixels (N, 2)``, ``coords (N, 3)`` (``PoseConfig.refine_min_inlier_share``)."""
        refined = None
        if depth is not None and config.icp_distances_m and self.cloud is not None:
            fit = align_depth(depth_points(depth, K), pose, self.cloud, config.icp_distances_m,
                              config.icp_offset_sigma_m,
                              scale_sigma=config.icp_scale_sigma if scale_sigma is None else scale_sigma,
                              scale_min_sigmas=config.icp_scale_min_sigmas)
            refined = None if fit is None else (fit.pose, fit.offset_m)
        elif depth is None and config.view_rounds and self.view is not None:
            aligned = align_image(image, K, pose, self.view, config.view_rounds)
            refined = None if aligned is None else (aligned.pose, offset_m)
        if refined is None or not keeps_inliers(pixels, coords, K, pose, refined[0], config.threshold_px_for(K),
                                                config.refine_min_inlier_share):
            return pose, offset_m   # the scene-coordinate pose stands
        return refined

    def localize(self, image: np.ndarray, depth: np.ndarray | None = None, intrinsics: np.ndarray | None = None,
                 estimator: PoseConfig | str | None = None, rng: np.random.Generator | None = None,
                 max_points: int = DEFAULT_POSE_POINTS, prediction: Prediction | None = None) -> Localization:
        """Camera-to-world pose of one RGB image (PnP), or of an RGB-D frame (Kabsch) when ``depth``
        ``(H, W)`` in metres (0 = none) is given; on a map of the colour camera's poses (``pose_camera``)
        the Kabsch pose starts the image's PnP re-fits and scene-view alignment.

        Args:
            image: ``(H, W, 3)`` uint8 RGB; any size if ``intrinsics`` are given.
            depth: optional ``(H, W)`` metres aligned with ``image``.
            intrinsics: ``(3, 3)`` K of the query image; default the mapping camera's.
            estimator: a :class:`sceneloc.pose.estimate.PoseConfig`, or a method name with its defaults, or
                None (``ransac``: OpenCV MAGSAC++ PnP, or Kabsch-RANSAC with depth). Its ``method`` is
                ``ransac``, ``confidence`` (the paper's; needs the confidence network), ``random``,
                ``joint`` (P3P and Kabsch hypotheses on one 2D + 3D score; depth used only where it
                agrees with the image, see ``pose_ransac``), or ``dsac`` / ``softam``: DSAC's argmax /
                SoftAM selection (pose/dsac.py) with the map's DSAC stage and ``dsac_score``. Its
                ``query_scales`` run the network once per scale and keep the pose with the highest
                inlier ratio.
            prediction: reuse this image's ``predict`` output (to compare pose settings cheaply; for
                dsac/softam it must come from the DSAC stage's network).
        """
        check_image(image)
        K, depth = self._checked_query(image, depth, intrinsics)
        return self._localize(image, depth, K, estimator, rng, max_points, prediction)

    def _checked_query(self, image: np.ndarray, depth: np.ndarray | None,
                       intrinsics: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """The query's camera ``K (3, 3)`` (``_check_intrinsics``) and ``depth`` in the map's pose units:
        uint16 is millimetres (cv2.imread's depth PNG), floats metres, both times the map's
        ``depth_to_pose_scale``; all-zero, implausible or not the image's size is an error."""
        K = self._check_intrinsics(image, intrinsics)
        if depth is not None:
            depth = depth_in_metres(depth, "query depth")
            if depth.shape != image.shape[:2]:
                raise SceneLocError(f"depth map is {depth.shape[1]}x{depth.shape[0]} but the image is "
                                    f"{image.shape[1]}x{image.shape[0]}")
            if self.depth_to_pose_scale != 1.0:
                depth = depth * np.float32(self.depth_to_pose_scale)
        return K, depth

    def _localize(self, image: np.ndarray, depth: np.ndarray | None, K: np.ndarray,
                  estimator: PoseConfig | str | None, rng: np.random.Generator | None, max_points: int,
                  prediction: Prediction | None) -> Localization:
        """``localize`` of a query that ``check_image`` and ``_checked_query`` have passed (``depth`` in metres)."""
        if rng is None:  # repeatable by default: the same call gives the same pose
            rng = np.random.default_rng(DEFAULT_SEED)
        # OpenCV's RANSAC draws from its own global generator: seed it from ours, so the pose depends on rng alone
        cv2.setRNGSeed(int(rng.integers(2 ** 31)))
        config = self.estimator_for(estimator, K)
        stage = resolve_stage(self, config.dsac_score) if config.method in DSAC_METHODS else None
        if len(config.query_scales) > 1 and (stage is not None or prediction is not None):
            raise SceneLocError("several query scales work with the correspondence estimators and without "
                                "a given prediction")
        # every scale is a full pass; the pose with the highest inlier ratio wins (a failure never does)
        passes = [self._localize_at(image, depth, K, config, stage, rng, max_points, prediction, scale)
                  for scale in config.query_scales]
        res, pred = max(passes, key=lambda p: (p[0].pose is not None,
                                               p[0].n_inliers / max(p[1].pixels[..., 0].size, 1)))
        pixels, coords = pred.pixels.reshape(-1, 2), pred.coords.reshape(-1, 3)
        conf = None if pred.confidence is None else pred.confidence.reshape(-1)
        timings = {"network_ms": sum(p.network_ms for _, p in passes),
                   "sampling_ms": sum(r.timings_ms.get("sampling", 0.0) for r, _ in passes),
                   "refinement_ms": sum(r.timings_ms.get("refinement", 0.0) for r, _ in passes)}
        pose, offset = res.pose, res.depth_offset_m
        t0 = time.perf_counter()
        with _one_blas_thread():
            from_image = False   # whether the image gave the pose (a colour camera's map), not the depth
            if depth is not None and pose is not None and self.pose_camera == "colour":
                # the map's poses are the colour camera's, centimetres from the depth camera: the depth's pose
                # only starts the image's re-fits and its alignment to the scene view
                started = estimate_pose(pixels, coords, K, config=config, rng=rng, start_T_wc=pose)
                if started.pose is not None:   # else the depth's pose stands, as on a depth camera's map
                    res, offset, from_image = started, 0.0, True
                    pose = self._refined(image, None, K, config, started.pose, offset, pixels, coords)[0]
            if not from_image and pose is not None:
                pose, offset = self._refined(image, depth, K, config, pose, offset, pixels, coords)
            if not from_image and depth is not None and pose is not None and config.depth_image_offset_max_px > 0:
                def fit_with_depth(moved: np.ndarray) -> tuple[np.ndarray, float] | None:
                    refit = self._localize_at(image, moved, K, config, stage, rng, max_points, pred, 1.0)[0]
                    return None if refit.pose is None else self._refined(
                        image, moved, K, config, refit.pose, refit.depth_offset_m, pixels, coords,
                        max(config.icp_scale_sigma, REREGISTERED_SCALE_SIGMA))

                def image_pose() -> tuple[np.ndarray, float] | None:
                    alone = self._localize(image, None, K, replace(config, query_scales=(1.0,)), rng, max_points, pred)
                    return None if alone.pose is None else (alone.pose, 0.0)
                pose, offset, _ = depth_agreeing_pose(depth, (pose, offset), fit_with_depth, image_pose, pixels,
                                                      coords, K, config.depth_image_offset_max_px,
                                                      config.depth_reregister_rounds)
        timings["refinement_ms"] += (time.perf_counter() - t0) * 1e3
        timings["total_ms"] = sum(timings.values())
        probability = float("nan")
        if self.calibration is not None:
            probability = self.calibration.probability("rgb" if depth is None else "rgbd", inlier_settings(config, K),
                                                       res.n_inliers, len(pixels), pose is not None, pose)
        return Localization(pose=pose, inliers=res.n_inliers, score=res.score, timings=timings, pixels=pixels,
                            coords=coords, confidence=conf, used=res.used, failure=res.failure,
                            probability=probability, depth_offset_m=offset)


def check_image(image: np.ndarray) -> None:
    """A query image is an ``(H, W, 3)`` uint8 RGB array; anything else is one SceneLocError."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise SceneLocError(f"expected an (H, W, 3) uint8 RGB image, got {getattr(image, 'dtype', type(image))} "
                            f"with shape {getattr(image, 'shape', None)}")
