"""The pose stage's options and result: ``PoseConfig`` (every number, with what each means) and
``PoseResult``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from sceneloc.errors import SceneLocError
from sceneloc.geometry import PNP_METHODS
from sceneloc.pose.ransac import DEPTH_GATE
from sceneloc.surface.cloud import ICP_DISTANCES_M, ICP_OFFSET_SIGMA_M
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
#: threshold (at REFERENCE_FOCAL_PX) and more re-fits, as the inlier set keeps growing. Four
#: redkitchen RGB-only maps (three dev, one split 2): 58.0 / 56.5 / 55.0 / 36.5 % within 5 cm / 5 deg
#: against 57.5 / 55.5 / 53.0 / 35.5 % with the depth maps' 20 px and 3 re-fits, ~15 ms slower
#: (docs/history/2026-11-29-registered-depth.md).
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
    """Every number of the pose stage; defaults are the paper's (section III-C, after DSAC [12]).

    Attributes:
        method: ``confidence`` (paper), ``random`` (paper baselines), ``ransac`` (standard),
            ``joint`` (2D-3D and 3D-3D hypotheses on one joint score; ``pose_ransac``), or ``dsac`` /
            ``softam``: DSAC's argmax / SoftAM selection with the map's DSAC stage (``pose/dsac.py``), which
            reads only ``hypotheses``, ``min_inliers`` and ``dsac_score`` here (the rest is the stage's).
        solver: ``pnp`` (2D-3D), ``kabsch`` (3D-3D, needs ``camera_points``) or ``auto``:
            Kabsch when ``camera_points`` are given, PnP otherwise. ``joint`` ignores it (both).
        hypotheses: h_p, pose hypotheses sampled; for ``ransac`` with Kabsch, hypotheses per batch.
        n_k: N_k, correspondences randomly sampled per hypothesis and per refinement round.
        best_fraction: fraction of the N_k points kept (the most confident ones): N_best = 10 % = 50.
        subset_size: points per hypothesis; None means N_best. For ``random``, the minimal size
            (4 PnP, 3 Kabsch) gives classic RANSAC.
        score: how ``confidence`` hypotheses are scored: ``confidence`` (paper: mean confidence of
            the points used), ``inliers`` (DSAC*: inlier count over all points) or
            ``confident_inliers`` (sum of the confidences of the inliers: consistency weighted by
            confidence). ``random`` always scores by inlier count.
        spread_cells: 0 keeps the globally most confident N_best of the N_k points (paper); G > 0
            keeps the most confident within each cell of a G x G image grid, in proportion to the
            cell's share of the sample: confident points cluster in a few regions, and a pose fitted
            to one patch is badly conditioned (measured in BENCHMARKS.md, Table I).
        refine_rounds: rounds of the paper's refinement of the best hypothesis (8).
        pnp_method: solver for hypotheses and refinement: ``epnp`` (paper) or ``sqpnp`` (or any
            of ``geometry.PNP_METHODS`` that accepts many points).
        inlier_threshold_px: reprojection error below which a 2D-3D match is an inlier; None:
            ``DEFAULT_THRESHOLD_PX`` of the method (``threshold_px_for``). DSAC*/ACE use 10 px; with
            ``ransac`` on the xfeat map, whose coordinates are a few cm off on new views, a wider
            threshold averages more of them: 20 px (at 525 px) measured best on four redkitchen
            maps, two per split (RGB within 5 cm / 5 deg at 15 / 20 / 25 / 40 px: dev 67.0 / 68.0 /
            67.0 / 63.5 % and 73.5 / 76.5 / 74.5 / 66.0 %, split 2 42.0 / 39.0 / 36.5 / 33.0 % and
            36.0 / 35.0 / 33.5 / 30.5 %; docs/history/2026-11-29-registered-depth.md). (40 px had measured best before
            7-Scenes depth was registered to its colour images: the coordinates were less sharp.)
            ``joint`` and the paper's estimators keep 10 px: their refinement lets outliers in at
            wide thresholds.
        inlier_threshold_m: 3D distance below which a 3D-3D match is an inlier (paper IV: 0.1 m).
        polish: end with DSAC*/ACE's re-fit on all inliers (off: the pure paper pipeline).
        polish_thresholds_m: Kabsch only: after the re-fit at ``inlier_threshold_m``, re-fit again on
            the inliers at each of these tighter thresholds in turn. Query depth is precise where it
            is valid, so the closest matches give the best pose; RANSAC itself needs the wider
            threshold to find it. 5 cm then 3 cm: redkitchen RGB-D against 5 cm alone, four maps,
            two per split: dev +3.0 / +0.5, split 2 +1.0 / +2.5 points, ~6 ms slower (a 2 cm step
            after them: -1.5 to +2.5; docs/history/2026-11-29-registered-depth.md). 5 cm alone against none: split 2 +5
            to +10 points, dev +5. (Before 7-Scenes depth was registered, the 3 cm step lost on dev.)
        depth_offset_sigma_m: Kabsch only, after the polish (not ``joint``): re-fit the pose together
            with an offset of the query depth along its rays, under a Gaussian prior of this standard
            deviation (metres; 0: off; ``pose.fit.refit_depth_offset``). Kinect depth can read centimetres
            long or short against the image, and a rigid fit moves the camera by as much. 1.5 mm
            (hundreds of points still move the offset by centimetres) on six redkitchen maps, three
            per split, query depth moved 4 px and 3 cm along the rays: dev RGB-D 50.0-56.5 % ->
            73.0-80.5 %, above RGB; clean depth -1.5 to +2.5 points; split 2's shifted depth -2.5 to
            -3; ~5 ms (docs/history/2026-11-29-query-depth-offset.md). 3 mm gains more on shifted and loses up to 3.5
            points on clean depth.
        depth_offset_min_m: the offset re-fit is kept only where the fitted offset is at least this
            long (metres; 0: always): smaller offsets are noise on well-registered depth, and a pose
            moved by noise loses frames. 5 mm on the same six maps: clean depth equal to no re-fit
            on dev (0 / 0 / 0 points; -1.5 / 0 / +0.5 without the gate) and +1.5 / +1.5 / 0 on split 2;
            shifted depth 80.5 / 76.5 / 72.0 % on dev (80.5 / 77.5 / 73.0 without), 62.5 / 50.5 /
            53.0 % on split 2 (60.5 / 48.0 / 51.0) (docs/history/2026-11-29-demo-room-capture.md).
        icp_distances_m: RGB-D, maps with a scene surface (``surface/cloud.py``): finally align the query
            depth to the surface fused from the mapping frames' depth by point-to-plane ICP, one step
            per entry, matching points within that distance (metres; empty: off). The scene
            coordinates' shared bias is what leaves RGB-D poses 5-10 cm off; the mapping depth has
            none. Redkitchen, cached network output of a new map per split: dev 84.0 -> 99.0 %, split 2
            69.0 -> 82.0 % within 5 cm / 5 deg, ~8 ms (docs/history/2026-11-29-scene-surface.md).
        icp_offset_sigma_m: the ICP also fits an offset of the query depth along its rays under a
            Gaussian prior of this width (metres; 0: no offset). 3 mm: once RGB poses were aligned to
            the scene view (dev RGB 88.5 %), the earlier 1.5 mm left dev's misregistered depth
            (moved 4 px and 3 cm along the rays) below RGB, 84.5 %; 3 mm gives it 91.0 % and dev's clean
            depth stays 99.0 %, at 2 points of split 2's clean depth (85.5 -> 83.5 %; shifted 74.0 ->
            80.5 %) (docs/history/2026-11-30-scene-view.md). Earlier, three maps per split: 3 mm clean dev 99.0 %
            on all, split 2 86.0 / 76.5 / 81.5 % (1.5 mm: 88.0 / 78.5 / 85.0 %, 5 mm: 82.0 / 74.5 /
            81.0 %); shifted dev 91.0 / 89.5 / 90.0 % (1.5 mm: 82.5 / 81.5 / 84.5 %); the rigid ICP
            leaves dev's shifted depth at 65.5-67.5 %.
        icp_scale_sigma: the ICP also fits a relative scale error of the query depth under a Gaussian
            prior of this width (0: none; ``surface.cloud.align_depth``).
        view_rounds: RGB, maps with a scene view (``surface/view.py``): finally align the pose to the
            image, this many times rendering the mapping frames' grey surface at the pose, matching the
            rendering to the query by optical flow and re-fitting on those matches (0: off). Redkitchen,
            cached network output of two maps per split (docs/history/2026-11-30-scene-view.md): dev 67.5 / 71.0 % ->
            89.0 / 88.5 %, split 2 39.0 / 39.5 % -> 60.0 / 60.0 % within 5 cm / 5 deg, no frame lost,
            ~26-32 ms; two rounds 88.0 / 88.0 % and 61.0 / 55.5 %, one 85.5 % and 54.5 % (first maps).
        depth_image_offset_max_px: RGB-D: query depth is evidence, never a trap. After the RGB-D pose
            (and its ICP), the network's 2D-3D matches are projected with it: a pose fitted to depth that
            is registered to the image puts them where the network saw them (median offset ~1-2 px on
            redkitchen), a pose fitted to depth moved against the image shows the move. Where the median
            offset (``pose.fit.image_offset_px``) is longer than this (pixels of the query image; 0:
            off), the depth is re-registered: moved by the offset and the pose fitted again, the ICP
            also fitting the depth's scale (under ``pose.fit.REREGISTERED_SCALE_SIGMA``, 2 %), up to
            ``depth_reregister_rounds`` times; if the image still disagrees, the RGB pose (PnP and the
            scene-view alignment) is returned (``pose.fit.depth_agreeing_pose``). 4 px: see
            docs/decisions/depth-evidence.md.
        depth_reregister_rounds: how many times depth that disagrees with the image is re-registered
            before the image's pose is taken (0: at once). Each round moves the depth by the offset the
            last pose shows, which falls short of the true move (the ICP takes part of it up as a
            translation), so a second round takes what the first left. 2: misregistered depth places
            more frames under the D-SLAM ground truth, whose poses are the depth camera's; 0 (the
            image's pose) under the SfM one: docs/decisions/depth-evidence.md.
        refine_min_inlier_share: the final refinements (the scene-view alignment of RGB poses, the ICP of
            RGB-D poses) are kept only where the refined pose keeps at least this share of the network's
            2D-3D inliers (at the PnP threshold) of the pose it started from (0: off, always kept): a
            refinement that moves the pose away from what the correspondences say is rejected
            (``pose.fit.keeps_inliers``; docs/decisions/depth-evidence.md).
        polish_thresholds_px: PnP's counterpart (pixels at ``REFERENCE_FOCAL_PX``, scaled with the
            focal length): none by default, because re-fitting on the inliers at 20, 15, 12, 10 or 8 px
            after RANSAC's 25 px (the default then) gained nothing on redkitchen (-2 to +0.5 points on three maps;
            docs/history/2026-11-29-estimator-api.md): PnP's error comes from the coordinates' bias, not the fit.
        polish_iterations: at most this many re-fits (not ``joint``, whose refinement runs to 10);
            stops earlier when the inlier set is stable. 3:
            on redkitchen (both splits, RGB and RGB-D) within a frame of 10 re-fits' accuracy, and
            10-24 ms faster per frame (docs/history/2026-11-29-bf16-thresholds-probability.md).
        min_inliers: fewer inliers than this (over all correspondences) reports failure (pose None).
            Unrelated (random) 2D-3D matches reach ~15 inliers at 10 px out of 4800 by chance; for PnP
            the number holds at 10 px and 4800 matches over 640 x 480 and grows with the threshold's
            area and the matches' density (``required_inliers``: 495 at 40 px on a 60 x 80 grid).
        ransac_iterations: most hypotheses for ``ransac`` (stops earlier at ``ransac_confidence``).
        ransac_points: ``ransac`` (PnP and Kabsch) scores its hypotheses on a random subset of this
            many correspondences (None: all); the re-fit then uses all of them. 1200 of 4800: redkitchen
            dev RGB 57.0 % against 58.5 % (3 of 200 frames, RANSAC's own spread), split 2 level,
            ~10 ms faster per frame (docs/history/2026-11-29-bf16-thresholds-probability.md); Kabsch: RGB-D
            level on both splits,
            clean and shifted depth, 4 ms faster (docs/history/2026-11-29-localization-time.md).
        ransac_confidence: probability of having drawn one all-inlier minimal set, to stop early
            (``ransac`` with Kabsch, and ``joint``).
        ransac_local_optimisation: ``ransac`` with PnP: run MAGSAC++'s local optimisation of the best
            models (OpenCV's USAC_MAGSAC). Off, MAGSAC++ only scores the minimal-set models, and the
            re-fits on all inliers and the view alignment that follow refine the pose: 3 ms instead of
            20 ms per frame at the same accuracy (docs/history/2026-11-30-scene-view.md).
        joint_batch: hypotheses per round of ``joint`` (half P3P, half Kabsch with depth); it stops
            after the round in which either kind reaches ``ransac_confidence``. ACE/DSAC* draw 64.
        joint_max_hypotheses: most hypotheses of ``joint`` (bounds its time at low inlier ratios).
        dsac_score: ``dsac`` / ``softam`` hypothesis score, ``cnn`` or ``soft-inliers`` (None: the
            score the map's DSAC stage was trained with); soft inliers need no DSAC stage.
        query_scales: ``Map.localize`` runs the network on the query resized by each of these factors
            (each side rounded to the encoder's multiple) and keeps the pose with the highest inlier
            ratio: a view much closer to the scene than the mapping views is recognised at a smaller
            scale. (1.0,): one pass. ``0.9 0.75`` on redkitchen's test frames: split 2 RGB 33 % / RGB-D
            52 % against 13 / 43 % with one pass, dev 60 / 83 % against 59 / 82.5 %, at 1.6-2x the time
            (docs/history/2026-11-29-localization-time.md), over the time budget of a default. Not ``dsac``/``softam``.
        depth_gate: ``joint`` ignores the query depth when the pose refined with it fits the
            image worse than the PnP solution by more than this fraction (truncated reprojection
            cost): depth is trusted only where it is consistent with the image
            (``pose.ransac.refine_joint``); 0 never uses depth in the refinement.
    """
    # RANSAC, not the paper's confidence-guided estimator: measured best on redkitchen in RGB and
    # RGB-D on two splits (BENCHMARKS.md, estimators); --method confidence is the paper's.
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
