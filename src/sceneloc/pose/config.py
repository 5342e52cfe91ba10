"""The pose stage's options and result: ``PoseConfig`` (every number, with what each means) and
``PoseResult``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from sceneloc.errors import SceneLocError
from sceneloc.geometry import PNP_METHODS
from sceneloc.pose.ransac import DEPTH_GATE
from sceneloc.surface.cloud import ICP_DISTANCES_M, ICP_OFFSET_SIGMA_M, SCALE_MIN_SIGMAS
from sceneloc.surface.view import ROUNDS as VIEW_ROUNDS

# Points needed to determine a pose: EPnP (OpenCV) needs 4 2D-3D matches, Kabsch 3 3D-3D matches.
#: Query modes: ``rgb`` (2D-3D, PnP) or ``rgbd`` (3D-3D with the query depth, Kabsch).
MODES = ("rgb", "rgbd")
MIN_POINTS = {"pnp": 4, "kabsch": 3}

#: Estimators of ``pose.estimate.estimate_pose``, which needs only correspondences.
CORRESPONDENCE_METHODS = ("confidence", "random", "ransac", "joint")
#: Estimators that need the map's DSAC stage (``pose/dsac.py``), and the hypothesis selection each uses.
DSAC_METHODS = {"dsac": "argmax", "softam": "softam"}
METHODS = CORRESPONDENCE_METHODS + tuple(DSAC_METHODS)
#: Hypothesis scores of the DSAC methods: the learned Score CNN or DSAC*'s soft inlier count.
DSAC_SCORES = ("cnn", "soft-inliers")
#: PnP threshold at which ``min_inliers`` holds (DSAC*/ACE's); PoseConfig.required_inliers scales it.
REFERENCE_THRESHOLD_PX = 10.0
#: PnP inlier threshold per method when ``PoseConfig.inlier_threshold_px`` is None (others: 10 px),
#: at a focal length of REFERENCE_FOCAL_PX (7-Scenes' 640 x 480 Kinect colour camera).
DEFAULT_THRESHOLD_PX = {"ransac": 20.0}
REFERENCE_FOCAL_PX = 525.0
#: ``ransac``'s defaults on a map learned from reprojection alone (RGB-only mapping): a tighter
#: threshold (at REFERENCE_FOCAL_PX) and more re-fits, as the inlier set keeps growing
#: (docs/decisions/pnp-threshold.md).
REPROJECTION_MAP_THRESHOLD_PX = 15.0
REPROJECTION_MAP_POLISH_ITERATIONS = 10
#: Matches per pixel at which ``PoseConfig.min_inliers`` holds: 4800 over a 640 x 480 image.
REFERENCE_DENSITY = 4800 / (640 * 480)
SOLVERS = ("auto", "pnp", "kabsch")
SCORES = ("confidence", "inliers", "confident_inliers")


def at_focal_length(threshold_px: float, K: np.ndarray) -> float:
    """A pixel threshold given at ``REFERENCE_FOCAL_PX``, for a camera ``K (3, 3)``: it is an angle,
    so it scales with the focal length."""
    return threshold_px * float(K[0, 0]) / REFERENCE_FOCAL_PX


@dataclass(frozen=True)
class PoseConfig:
    """Every number of the pose stage. The defaults are what measured best on real data
    (docs/defaults.md); ``method="confidence"`` is the paper's estimator (III-C) with the paper's values.
    Each decision page under docs/decisions/ holds the measurements behind a default.

    Attributes:
        method: ``ransac`` (standard RANSAC), ``confidence`` (the paper), ``random`` (the paper's
            baselines), ``joint`` (2D-3D and 3D-3D hypotheses on one score; ``pose_ransac``), ``dsac`` /
            ``softam`` (DSAC's argmax / SoftAM with the map's DSAC stage, reading only ``hypotheses``,
            ``min_inliers`` and ``dsac_score`` here) (docs/decisions/estimator.md).
        solver: ``pnp`` (2D-3D), ``kabsch`` (3D-3D, needs ``camera_points``) or ``auto`` (Kabsch when
            ``camera_points`` are given); ``joint`` uses both.
        hypotheses: h_p, pose hypotheses sampled; ``ransac`` with Kabsch: hypotheses per batch
            (docs/decisions/confidence-stage.md).
        n_k: N_k, correspondences sampled per hypothesis and per refinement round.
        best_fraction: share of the N_k points kept, the most confident (0.1: N_best = 50).
        subset_size: points per hypothesis; None = N_best. For ``random``, the minimal size (4 PnP,
            3 Kabsch) gives classic RANSAC.
        score: how ``confidence`` scores its hypotheses: ``confidence`` (the paper: mean confidence of
            the points used), ``inliers`` (DSAC*: inlier count) or ``confident_inliers`` (sum of the
            inliers' confidences). ``random`` always scores by inlier count.
        spread_cells: G > 0 keeps the most confident points of each cell of a G x G image grid; 0 = the
            globally most confident N_best (the paper) (docs/decisions/confidence-stage.md).
        refine_rounds: rounds of the paper's refinement of the best hypothesis; 0 = none.
        pnp_method: PnP solver of hypotheses and refinement, one of ``geometry.PNP_METHODS`` that takes
            many points (``epnp``: the paper's).
        inlier_threshold_px: PnP inlier threshold, pixels of the query image; None = the method's
            default (``threshold_px_for``: ``ransac`` 20 px at ``REFERENCE_FOCAL_PX``, scaled with the
            focal length; the others 10 px) (docs/decisions/pnp-threshold.md).
        inlier_threshold_m: Kabsch inlier threshold, metres (the paper's t_inlier, IV).
        polish: end with a re-fit on all inliers (DSAC*/ACE's); False = the pure paper pipeline.
        polish_thresholds_m: Kabsch: after that re-fit, re-fit on the inliers at each of these tighter
            thresholds in turn, metres; empty = none (docs/decisions/polish.md).
        depth_offset_sigma_m: Kabsch, after the polish (not ``joint``): re-fit with an offset of the
            query depth along its rays under a Gaussian prior of this width, metres; 0 = off
            (``pose.fit.refit_depth_offset``; docs/decisions/depth-offset.md).
        depth_offset_min_m: keep that re-fit only where the fitted offset is at least this long,
            metres; 0 = always (docs/decisions/depth-offset.md).
        icp_distances_m: RGB-D on a map with a scene surface: point-to-plane ICP of the query depth to
            the surface, one step per entry, matching within that distance, metres; empty = off
            (``surface/cloud.py``; docs/decisions/scene-surface.md).
        icp_offset_sigma_m: the ICP also fits an offset of the query depth along its rays under a
            Gaussian prior of this width, metres; 0 = rigid (docs/decisions/scene-surface.md).
        icp_scale_sigma: the ICP also fits a relative scale error of the query depth under a Gaussian
            prior of this relative width; 0 = none (``surface.cloud.align_depth``; docs/decisions/icp-scale.md).
        icp_scale_min_sigmas: the fitted scale is kept only this many of its standard deviations away from 0,
            else the ICP is made again without it (a scale the scene does not constrain trades for
            translation); 0 = always kept (docs/decisions/icp-scale.md).
        view_rounds: RGB on a map with a scene view: rounds of rendering the view at the pose, optical
            flow to the query and a re-fit; 0 = off (``surface/view.py``; docs/decisions/view-alignment.md).
        depth_image_offset_max_px: RGB-D: query depth is evidence, not truth. Where the RGB-D pose puts the
            network's 2D-3D matches further than this from where it saw them (median, pixels of the query
            image; ``pose.fit.image_offset_px``), the depth disagrees with the image: it is re-registered by
            that offset, else the image's pose is taken (``pose.fit.depth_agreeing_pose``); 0 = off
            (docs/decisions/depth-evidence.md).
        depth_reregister_rounds: re-registrations of disagreeing depth before the image's pose is taken;
            0 = the image's pose at once (docs/decisions/depth-evidence.md).
        refine_min_inlier_share: the final refinements (RGB scene-view alignment, RGB-D ICP) are kept only
            where the refined pose keeps this share of the network's 2D inliers; 0 = always kept
            (``pose.fit.keeps_inliers``; docs/decisions/depth-evidence.md).
        polish_thresholds_px: PnP's counterpart of ``polish_thresholds_m``, pixels of the query image;
            empty = none (docs/decisions/polish.md).
        polish_iterations: at most this many re-fits per polish threshold, fewer once the inlier set is
            stable (not ``joint``, whose refinement runs to 10) (docs/decisions/polish.md).
        min_inliers: fewer inliers than this report a failure (pose None). For PnP it holds at
            ``REFERENCE_THRESHOLD_PX`` over 4800 matches on 640 x 480 and grows with the threshold's area
            and the matches' density (``required_inliers``). Not measured: set above the inliers that
            unrelated matches reach by chance.
        ransac_iterations: most hypotheses of ``ransac`` (it stops earlier at ``ransac_confidence``).
        ransac_points: ``ransac`` scores its hypotheses on a random subset of this many correspondences
            (the re-fits use all); None = all (docs/decisions/ransac-scoring.md).
        ransac_confidence: probability of having drawn one all-inlier minimal set, at which ``ransac``
            with Kabsch and ``joint`` stop.
        ransac_local_optimisation: ``ransac`` with PnP: also run MAGSAC++'s local optimisation of its best
            models (OpenCV's USAC_MAGSAC); False = only score the minimal-set models, the re-fits and the
            view alignment refine the pose (docs/decisions/ransac-scoring.md).
        joint_batch: hypotheses per round of ``joint`` (half P3P, half Kabsch); it stops after the round
            in which either kind reaches ``ransac_confidence`` (ACE/DSAC* draw 64).
        joint_max_hypotheses: most hypotheses of ``joint`` (bounds its time at low inlier ratios).
        dsac_score: ``dsac`` / ``softam`` hypothesis score, ``cnn`` or ``soft-inliers``; None = the score
            the map's DSAC stage was trained with (soft inliers need no DSAC stage).
        query_scales: ``Map.localize`` runs the network on the query resized by each factor and keeps the
            pose with the highest inlier ratio; ``(1.0,)`` = one pass; not ``dsac`` / ``softam``
            (docs/decisions/query-scales.md).
        depth_gate: ``joint`` ignores the query depth where the pose refined with it fits the image worse
            than the PnP solution by more than this fraction (truncated reprojection cost); 0 = never uses
            depth in the refinement (``pose.ransac.refine_joint``).
    """
    # RANSAC, not the paper's confidence-guided estimator: docs/decisions/estimator.md.
    method: str = "ransac"
    solver: str = "auto"
    hypotheses: int = 256
    n_k: int = 500
    best_fraction: float = 0.1
    subset_size: int | None = None
    score: str = "confidence"
    spread_cells: int = 0
    refine_rounds: int = 8
    pnp_method: str = "epnp"
    inlier_threshold_px: float | None = None
    inlier_threshold_m: float = 0.1
    polish: bool = True
    polish_thresholds_m: tuple[float, ...] = (0.05, 0.03)
    depth_offset_sigma_m: float = 0.0015
    depth_offset_min_m: float = 0.005
    icp_distances_m: tuple[float, ...] = ICP_DISTANCES_M
    icp_offset_sigma_m: float = ICP_OFFSET_SIGMA_M
    icp_scale_sigma: float = 0.0
    icp_scale_min_sigmas: float = SCALE_MIN_SIGMAS
    view_rounds: int = VIEW_ROUNDS
    depth_image_offset_max_px: float = 4.0
    depth_reregister_rounds: int = 2
    refine_min_inlier_share: float = 0.5
    polish_thresholds_px: tuple[float, ...] = ()
    polish_iterations: int = 3
    min_inliers: int = 30
    ransac_iterations: int = 10000
    ransac_points: int | None = 1200
    ransac_confidence: float = 0.9999
    ransac_local_optimisation: bool = False
    joint_batch: int = 64
    joint_max_hypotheses: int = 1024
    depth_gate: float = DEPTH_GATE
    dsac_score: str | None = None
    query_scales: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if not self.query_scales or any(not 0.1 <= s <= 4.0 for s in self.query_scales):
            raise ValueError(f"PoseConfig.query_scales={self.query_scales}: give one or more factors in [0.1, 4]")
        for name, value, allowed in (("method", self.method, METHODS), ("solver", self.solver, SOLVERS),
                                     ("score", self.score, SCORES),
                                     ("pnp_method", self.pnp_method, tuple(PNP_METHODS)),
                                     ("dsac_score", self.dsac_score or DSAC_SCORES[0], DSAC_SCORES)):
            if value not in allowed:
                raise ValueError(f"PoseConfig.{name}={value!r}; choose from {', '.join(allowed)}")
        if self.pnp_method == "p3p":
            raise ValueError("PoseConfig.pnp_method='p3p' takes exactly 4 points; use epnp or sqpnp")
        if not 0.0 < self.best_fraction <= 1.0:
            raise ValueError(f"PoseConfig.best_fraction={self.best_fraction} must be in (0, 1]")
        positive = {"hypotheses": self.hypotheses, "n_k": self.n_k,
                    "inlier_threshold_px": 1.0 if self.inlier_threshold_px is None else self.inlier_threshold_px,
                    "inlier_threshold_m": self.inlier_threshold_m, "ransac_iterations": self.ransac_iterations,
                    "joint_batch": self.joint_batch, "joint_max_hypotheses": self.joint_max_hypotheses,
                    "depth_gate": self.depth_gate}
        if not self.depth_offset_sigma_m >= 0:
            raise ValueError(f"PoseConfig.depth_offset_sigma_m={self.depth_offset_sigma_m} must be >= 0 (0: off)")
        if not self.depth_offset_min_m >= 0:
            raise ValueError(f"PoseConfig.depth_offset_min_m={self.depth_offset_min_m} must be >= 0 (0: always)")
        for name, number in positive.items():
            if not number > 0:
                raise ValueError(f"PoseConfig.{name}={number} must be positive")
        if self.subset_size is not None and self.subset_size < 3:
            raise ValueError(f"PoseConfig.subset_size={self.subset_size}: a pose needs at least 3 points")
        if self.ransac_points is not None and self.ransac_points < 4:
            raise ValueError(f"PoseConfig.ransac_points={self.ransac_points}: PnP needs at least 4 points")
        if any(not t > 0 for t in (*self.polish_thresholds_m, *self.polish_thresholds_px, *self.icp_distances_m)):
            raise ValueError(f"PoseConfig.polish_thresholds_m={self.polish_thresholds_m}, polish_thresholds_px="
                             f"{self.polish_thresholds_px} and icp_distances_m={self.icp_distances_m} must be positive")
        if not self.icp_scale_sigma >= 0:
            raise ValueError(f"PoseConfig.icp_scale_sigma={self.icp_scale_sigma} must be >= 0 (0: no scale)")
        if not self.icp_scale_min_sigmas >= 0:
            raise ValueError(f"PoseConfig.icp_scale_min_sigmas={self.icp_scale_min_sigmas} must be >= 0 (0: always)")
        if not self.depth_image_offset_max_px >= 0:
            raise ValueError(f"PoseConfig.depth_image_offset_max_px={self.depth_image_offset_max_px} "
                             "must be >= 0 (0: off)")
        if not 0 <= self.refine_min_inlier_share <= 1:
            raise ValueError(f"PoseConfig.refine_min_inlier_share={self.refine_min_inlier_share} "
                             "must be in [0, 1] (0: off)")
        if not self.icp_offset_sigma_m >= 0:
            raise ValueError(f"PoseConfig.icp_offset_sigma_m={self.icp_offset_sigma_m} must be >= 0 (0: no offset)")
        if min(self.refine_rounds, self.polish_iterations, self.min_inliers, self.spread_cells, self.view_rounds,
               self.depth_reregister_rounds) < 0:
            raise ValueError("PoseConfig.refine_rounds, polish_iterations, min_inliers, spread_cells, view_rounds "
                             "and depth_reregister_rounds must be >= 0")
        if not 0.0 < self.ransac_confidence < 1.0:
            raise ValueError(f"PoseConfig.ransac_confidence={self.ransac_confidence} must be in (0, 1)")

    def threshold_px_for(self, K: np.ndarray) -> float:
        """The PnP inlier threshold in pixels for a camera ``K (3, 3)``: ``inlier_threshold_px``, or the
        method's default. ``ransac``'s holds at ``REFERENCE_FOCAL_PX`` and scales with the focal length
        (it is an angle: coordinates a few cm off are as many pixels off at any resolution)."""
        if self.inlier_threshold_px is not None:
            return self.inlier_threshold_px
        if self.method in DEFAULT_THRESHOLD_PX:
            return at_focal_length(DEFAULT_THRESHOLD_PX[self.method], K)
        return REFERENCE_THRESHOLD_PX

    def required_inliers(self, solver: str, threshold_px: float, pixels: np.ndarray | None = None) -> int:
        """Fewest inliers that count as a localisation. ``min_inliers`` holds for PnP at 10 px on
        4800 matches over a 640 x 480 image; unrelated 2D-3D matches gather chance inliers in
        proportion to the threshold's area and to the density of matches, so a wider threshold over
        as dense matches (``pixels (N, 2)``, default that density) asks for proportionally more,
        never fewer. ``threshold_px``: the PnP threshold in use (``threshold_px_for``)."""
        if solver != "pnp":
            return self.min_inliers
        density = REFERENCE_DENSITY
        if pixels is not None and len(pixels) > 1:
            extent = np.ptp(pixels, axis=0)
            density = len(pixels) / max(float(extent[0] * extent[1]), 1.0)
        chance = (threshold_px / REFERENCE_THRESHOLD_PX) ** 2 * density / REFERENCE_DENSITY
        return math.ceil(self.min_inliers * max(1.0, chance))

    @property
    def n_best(self) -> int:
        """Points per hypothesis and per refinement round (N_best = 50 with the paper's values)."""
        if self.subset_size is not None:
            return self.subset_size
        return max(1, round(self.best_fraction * self.n_k))


@dataclass
class PoseResult:
    """Outcome of one image's pose estimation; every estimator (``pose.estimate.estimate_pose``,
    ``pose.dsac.estimate_pose_dsac``) fills it with the same meaning.

    Attributes:
        pose: camera-to-world ``(4, 4)``, or None when no trustworthy pose was found.
        n_inliers: correspondences within the inlier threshold of ``pose`` (px for PnP, m for Kabsch).
        used: ``(M,)`` indices (into the input arrays) of the correspondences the final pose was
            fitted to (the inliers of its last re-fit).
        score: the selected hypothesis' score (mean confidence, inlier count or DSAC's score; SoftAM:
            the probability-weighted mean score).
        timings_ms: ``sampling`` (hypothesis generation + scoring) and ``refinement`` (refinement + polish).
        failure: why ``pose`` is None (None on success).
        depth_offset_m: how much further than the fitted pose the query depth reads along its rays
            (``PoseConfig.depth_offset_sigma_m``; 0 where not fitted).
    """
    pose: np.ndarray | None
    n_inliers: int = 0
    used: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    score: float = float("nan")
    timings_ms: dict[str, float] = field(default_factory=lambda: {"sampling": 0.0, "refinement": 0.0})
    failure: str | None = None
    depth_offset_m: float = 0.0

    @property
    def success(self) -> bool:
        return self.pose is not None


#: The ``inlier_settings`` that shape each mode's poses and inlier counts: a calibration fitted under
#: other settings of the *other* mode still holds.
MODE_SETTINGS = {"rgb": ("method", "threshold_rad", "polish_thresholds_px", "view_rounds"),
                 "rgbd": ("method", "threshold_m", "polish_thresholds_m", "depth_offset_sigma_m", "depth_offset_min_m",
                          "icp_distances_m", "icp_offset_sigma_m")}


def inlier_settings(config: PoseConfig, K: np.ndarray) -> dict:
    """What an inlier count means under ``config`` with a camera ``K (3, 3)``: the method, the PnP
    threshold as an angle (pixels over the focal length) and the Kabsch thresholds. Inlier counts under
    settings that differ here are not comparable (a pose calibration holds for its own only)."""
    return {"method": config.method, "threshold_rad": round(config.threshold_px_for(K) / float(K[0, 0]), 6),
            "threshold_m": config.inlier_threshold_m, "polish_thresholds_m": list(config.polish_thresholds_m),
            "polish_thresholds_px": list(config.polish_thresholds_px), "view_rounds": config.view_rounds,
            "depth_offset_sigma_m": config.depth_offset_sigma_m, "depth_offset_min_m": config.depth_offset_min_m,
            "icp_distances_m": list(config.icp_distances_m), "icp_offset_sigma_m": config.icp_offset_sigma_m}


def for_reprojection_map(config: PoseConfig, K: np.ndarray) -> PoseConfig:
    """``config`` for a map learned from reprojection alone and a camera ``K (3, 3)``: ``ransac``'s
    default threshold and re-fit count become ``REPROJECTION_MAP_THRESHOLD_PX`` and
    ``REPROJECTION_MAP_POLISH_ITERATIONS``. A threshold the caller set stays; a ``polish_iterations``
    equal to the default cannot be told from it and is replaced too."""
    if config.method not in DEFAULT_THRESHOLD_PX:
        return config
    threshold = config.inlier_threshold_px
    if threshold is None:
        threshold = at_focal_length(REPROJECTION_MAP_THRESHOLD_PX, K)
    polish = config.polish_iterations
    if polish == PoseConfig.polish_iterations:
        polish = REPROJECTION_MAP_POLISH_ITERATIONS
    return replace(config, inlier_threshold_px=threshold, polish_iterations=polish)


def estimator_config(estimator: PoseConfig | str | None) -> PoseConfig:
    """The pose estimator to run: ``estimator`` itself, a method name (that method with its
    defaults, e.g. ``"dsac"``), or None (the default, ``PoseConfig()``)."""
    if estimator is None:
        return PoseConfig()
    if isinstance(estimator, str):
        if estimator not in METHODS:
            raise SceneLocError(f"unknown pose estimator {estimator!r} (choose {', '.join(METHODS)})")
        return PoseConfig(method=estimator)
    if not isinstance(estimator, PoseConfig):
        raise SceneLocError(f"estimator must be a PoseConfig, a method name or None, not {type(estimator).__name__}")
    return estimator
