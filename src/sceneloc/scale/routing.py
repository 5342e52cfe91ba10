"""Routing a query to the maps that can see it: a partitioned map, or a folder of maps (one per room).

Every map of a set keeps a global descriptor of each of its mapping frames (``routing.npz``): a VLAD
(Jegou et al., CVPR 2010) of the frozen XFeat encoder's per-pixel features -- each feature, unit length,
goes to its nearest of ``CODEBOOK_WORDS`` visual words, the residuals to each word are summed, signed
square root and L2 normalisation per word. The words are fitted once per map set on its mapping frames
(``fit_codebook``, spherical k-means) and stored in every ``routing.npz``, so that every map's
descriptors are comparable. A query's descriptor is compared to all of them (cosine similarity, after
removing the set's mean descriptor, which every image shares); each map scores its best-matching frame,
the ``top_k`` best maps localize the query in that order: the first confident pose wins (else the
highest calibrated probability, then the most inliers). A map without a ``routing.npz`` (made by a plain
``sceneloc map``) is always among those that localize. A query that none of the maps shows comes back
with a low probability or no pose, never as a confident pose (docs/scale.md measures both).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from sceneloc.data.dataset import Frame, evenly_spaced
from sceneloc.errors import SceneLocError
from sceneloc.geometry import PoseRecord
from sceneloc.mapping.queries import frame_queries
from sceneloc.mapping.scene_map import DEFAULT_POSE_POINTS, Localization, Map, Prediction
from sceneloc.nets.encoders import load_encoder
from sceneloc.pose.config import PoseConfig
from sceneloc.scale.partition import LAYOUT_FILE, read_layout

ROUTING_FILE = "routing.npz"
#: rows x columns of the query image the encoder sees for its descriptor (multiples of 32)
DESCRIPTOR_HW = (192, 256)
#: maps that localize each query by default
DEFAULT_TOP_K = 2
#: A routed map's pose with at least this probability of being within 5 cm / 5 deg ends the search.
CONFIDENT_PROBABILITY = 0.5
#: visual words of the VLAD descriptor (descriptor length: words x 256 encoder channels)
CODEBOOK_WORDS = 32
#: the words are fitted on the per-pixel features of this many evenly spaced mapping frames ...
CODEBOOK_FRAMES = 200
#: ... of which this many features, drawn at random (seeded)
CODEBOOK_SAMPLES = 50_000
CODEBOOK_ITERATIONS = 25
#: a partitioned map's codebook, fitted before its partitions are mapped (kept for --resume)
CODEBOOK_FILE = "routing_codebook.npy"


class DescriptorEncoder:
    """The frozen XFeat encoder turned into a global image descriptor (one encoder, loaded once): the
    VLAD of its per-pixel features over ``codebook`` ``(K, C)`` (``local_features`` needs none)."""

    def __init__(self, codebook: np.ndarray | None = None, device: str = "cpu"):
        self.device = device
        self.codebook = None if codebook is None else np.asarray(codebook, dtype=np.float32)
        self.encoder = load_encoder("xfeat").to(device)

    @torch.no_grad()
    def local_features(self, image: np.ndarray) -> np.ndarray:
        """``(M, C)`` float32 unit-length encoder features of an ``(H, W, 3)`` uint8 RGB image seen at
        ``DESCRIPTOR_HW`` (M = 24 x 32 cells, C = 256)."""
        h, w = DESCRIPTOR_HW
        x = torch.from_numpy(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA))
        f = self.encoder(x.permute(2, 0, 1)[None].float().div_(255.0).to(self.device))[0].float()   # (C, h, w)
        f = f.flatten(1).T
        return (f / f.norm(dim=1, keepdim=True).clamp_min(1e-6)).cpu().numpy()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """``(K * C,)`` float32 VLAD descriptor of an ``(H, W, 3)`` uint8 RGB image, unit length."""
        if self.codebook is None:
            raise SceneLocError("routing descriptors need a codebook (fit_codebook)")
        return vlad(self.local_features(image), self.codebook)


def vlad(features: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """``(K * C,)`` VLAD of unit ``features (M, C)`` over ``codebook (K, C)``: residuals to the nearest
    word summed per word, signed square root (so that no repeated pattern dominates), each word's block
    and then the whole L2-normalised."""
    word = np.argmax(features @ codebook.T, axis=1)
    v = np.zeros_like(codebook)
    np.add.at(v, word, features - codebook[word])
    v = np.sign(v) * np.sqrt(np.abs(v))
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    d = v.reshape(-1)
    return (d / max(float(np.linalg.norm(d)), 1e-12)).astype(np.float32)


def fit_codebook(frames: list, encoder: DescriptorEncoder, words: int = CODEBOOK_WORDS,
                 max_frames: int = CODEBOOK_FRAMES, samples: int = CODEBOOK_SAMPLES, seed: int = 0) -> np.ndarray:
    """``(words, C)`` unit visual words of the per-pixel features of ``max_frames`` evenly spaced
    ``frames`` (``data.dataset.Frame``): spherical k-means (cosine assignments) from a seeded k-means++ start,
    on ``samples`` features drawn from them. (partition.kmeans clusters a few thousand camera views;
    it holds an N x k x D array, too large for 50 000 features of 256 channels.)"""
    feats = np.concatenate([encoder.local_features(frames[i].load_image())
                            for i in evenly_spaced(len(frames), max_frames)])
    rng = np.random.default_rng(seed)
    x = feats[rng.choice(len(feats), min(samples, len(feats)), replace=False)]
    if len(x) < words:
        raise SceneLocError(f"{len(x)} features: too few to fit {words} routing words")
    centres = [x[rng.integers(len(x))]]
    dist = np.maximum(1.0 - x @ centres[0], 0.0)
    for _ in range(1, words):   # k-means++: each next word drawn in proportion to its distance to the nearest
        total = float(dist.sum())
        centres.append(x[rng.choice(len(x), p=dist / total)] if total > 0 else x[rng.integers(len(x))])
        dist = np.minimum(dist, np.maximum(1.0 - x @ centres[-1], 0.0))
    c = np.stack(centres)
    for _ in range(CODEBOOK_ITERATIONS):
        label = np.argmax(x @ c.T, axis=1)
        new = np.stack([x[label == j].sum(0) if np.any(label == j) else c[j] for j in range(words)])
        new /= np.maximum(np.linalg.norm(new, axis=1, keepdims=True), 1e-12)
        if np.allclose(new, c, atol=1e-6):
            break
        c = new
    return c.astype(np.float32)


def write_routing(map_dir: Path, names: list[str], descriptors: np.ndarray, codebook: np.ndarray) -> None:
    """``map_dir/routing.npz``: the descriptors ``(N, D)`` of the map's mapping frames ``names`` and the
    ``codebook`` ``(K, C)`` they were made with."""
    np.savez_compressed(map_dir / ROUTING_FILE, names=np.array(names), descriptors=descriptors.astype(np.float16),
                        codebook=codebook.astype(np.float32))


def read_routing(map_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The descriptors ``(N, D)`` float32 and the codebook ``(K, C)`` of ``map_dir/routing.npz``."""
    path = map_dir / ROUTING_FILE
    try:
        with np.load(path) as z:
            if "codebook" not in z.files:
                raise SceneLocError(f"{path}: routing descriptors of an earlier sceneloc (no VLAD codebook); "
                                    f"refresh them with the map's 'sceneloc map ... --resume'")
            descriptors, codebook = z["descriptors"].astype(np.float32), z["codebook"]
    except (OSError, ValueError, KeyError) as e:
        raise SceneLocError(f"{path}: unreadable routing descriptors ({e})") from None
    if descriptors.ndim != 2 or descriptors.shape[1] != codebook.size:
        raise SceneLocError(f"{path}: descriptors {descriptors.shape} do not match the codebook {codebook.shape}")
    return descriptors, codebook


def routing_is_current(map_dir: Path, codebook: np.ndarray) -> bool:
    """Whether ``map_dir`` has routing descriptors made with ``codebook``."""
    try:
        return bool(np.array_equal(read_routing(map_dir)[1], codebook))
    except SceneLocError:
        return False


def frame_descriptors(frames: list, encoder: DescriptorEncoder) -> np.ndarray:
    """``(N, D)`` descriptors of dataset ``frames`` (``data.dataset.Frame``)."""
    return np.stack([encoder(f.load_image()) for f in frames])


def check_top_k(top_k: int) -> None:
    """``--top-k`` of a map set: at least one map localizes each query."""
    if top_k < 1:
        raise SceneLocError(f"--top-k {top_k}: need at least 1")


def is_map_set(path: Path) -> bool:
    """Whether ``path`` is a partitioned map or a folder of maps (not one map directory)."""
    if (path / LAYOUT_FILE).exists():
        return True
    return path.is_dir() and not (path / "config.json").exists() and any(
        (p / "config.json").exists() for p in path.iterdir() if p.is_dir())


@dataclass
class RoutedLocalization:
    """A query localized by a map set: the winning ``result`` (a ``Localization``; its pose None when
    no routed map found one), the ``source`` map of ``result`` (also when it is a failure), the routed
    maps with their routing scores ``[(name, similarity)]`` best first, and ``timings`` in ms
    (descriptor, retrieval, each routed map's localization as ``localize_<name>_ms``, total)."""
    result: Localization
    source: str
    routed: list[tuple[str, float]]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str | None:
        """The winning map's name; None when no routed map found a pose."""
        return self.source if self.result.pose is not None else None


class MapSet:
    """Maps of one place, each with its own head, surface and view: the partitions of a partitioned map
    (``partitions.json``) or the map directories of a folder."""

    def __init__(self, maps: dict[str, Map], references: dict[str, np.ndarray], codebook: np.ndarray | None = None,
                 device: str = "cpu"):
        if not maps:
            raise SceneLocError("a map set needs at least one map")
        if references and codebook is None:
            raise SceneLocError("routing descriptors need the codebook they were made with")
        self.maps = maps
        self.references = references                  # name -> (N, D) descriptors of its mapping frames
        self.encoder = DescriptorEncoder(codebook, device) if references else None
        stacked = [r.astype(np.float32) for r in references.values()]
        self.mean = np.concatenate(stacked).mean(0) if stacked else None
        # each map's descriptors less the set's mean, and their norms: fixed, so not recomputed per query
        self.centred = {name: (r - self.mean, np.maximum(np.linalg.norm(r - self.mean, axis=1), 1e-12))
                        for name, r in references.items()}

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> MapSet:
        d = Path(path)
        if (d / LAYOUT_FILE).exists():
            parts, _ = read_layout(d)
            dirs = [d / p.name for p in parts]
            missing = [p for p in dirs if not (p / "config.json").exists()]
            if missing:
                raise SceneLocError(f"{missing[0]}: partition not mapped yet (finish it with 'sceneloc map ... "
                                    f"--resume')")
        elif is_map_set(d):
            dirs = sorted(p for p in d.iterdir() if (p / "config.json").exists())
        else:
            raise SceneLocError(f"{d}: neither a partitioned map nor a folder of maps")
        maps = {p.name: Map.load(p, device=device) for p in dirs}
        references, codebook = {}, None
        for p in dirs:
            if (p / ROUTING_FILE).exists():
                references[p.name], words = read_routing(p)
                if codebook is None:
                    codebook, first = words, p
                elif not np.array_equal(words, codebook):   # descriptors over other words do not compare
                    raise SceneLocError(f"{p / ROUTING_FILE}: made with another routing codebook than "
                                        f"{first / ROUTING_FILE} (maps of different map sets)")
        device = next(iter(maps.values())).device
        return cls(maps, references, codebook, device)

    def route(self, image: np.ndarray, top_k: int) -> tuple[list[tuple[str, float]], dict[str, float]]:
        """The maps a query ``image`` goes to, ``[(name, similarity)]`` best first: the ``top_k`` maps
        whose best mapping frame is most like it, and every map without descriptors (similarity NaN)."""
        timings: dict[str, float] = {}
        scores: list[tuple[str, float]] = []
        if self.encoder is not None and self.mean is not None:
            t0 = time.perf_counter()
            q = self.encoder(image) - self.mean
            timings["descriptor_ms"] = (time.perf_counter() - t0) * 1e3
            t0 = time.perf_counter()
            qn = q / max(float(np.linalg.norm(q)), 1e-12)
            for name, (r, norms) in self.centred.items():
                scores.append((name, float(((r @ qn) / norms).max())))
            scores.sort(key=lambda s: -s[1])
            timings["retrieval_ms"] = (time.perf_counter() - t0) * 1e3
        routed = scores[:top_k] + [(name, math.nan) for name in self.maps if name not in self.references]
        return routed, timings

    def localize(self, image: np.ndarray, depth: np.ndarray | None = None, intrinsics: np.ndarray | None = None,
                 estimator: PoseConfig | str | None = None, rng: np.random.Generator | None = None,
                 top_k: int = DEFAULT_TOP_K) -> RoutedLocalization:
        """Route the query (``route``) and localize it in the routed maps in routing order (``Map.localize``'s
        arguments): the first pose with probability >= ``CONFIDENT_PROBABILITY`` wins and the maps after it
        are not tried; when none reaches it, the pose with the highest probability, then the most inliers
        (a failure never). Routing order first because one map's probability is not comparable with
        another's: a map whose calibration saturates would otherwise win every query (docs/scale.md)."""
        t0 = time.perf_counter()
        routed, timings = self.route(image, top_k)
        best: tuple[tuple, str, Localization] | None = None
        seed = None if rng is None else int(rng.integers(2 ** 31))
        for name, _ in routed:
            t1 = time.perf_counter()
            res = self.maps[name].localize(image, depth=depth, intrinsics=intrinsics, estimator=estimator,
                                           rng=None if seed is None else np.random.default_rng(seed))
            timings[f"localize_{name}_ms"] = (time.perf_counter() - t1) * 1e3
            probability = -1.0 if math.isnan(res.probability) else res.probability
            key = (res.pose is not None, probability, res.inliers)
            if best is None or key > best[0]:
                best = (key, name, res)
            if res.pose is not None and probability >= CONFIDENT_PROBABILITY:
                break   # a confident key beats every earlier one, so ``best`` holds it already
        assert best is not None   # routed holds at least one map
        timings["total_ms"] = (time.perf_counter() - t0) * 1e3
        _, name, res = best
        return RoutedLocalization(res, name, routed, timings)

    def top_map(self, image: np.ndarray) -> Map:
        """The map an ``(H, W, 3)`` query is routed to first (a map without descriptors when none has them)."""
        routed, _ = self.route(image, 1)
        return self.maps[routed[0][0]]

    def predict(self, image: np.ndarray, max_points: int = DEFAULT_POSE_POINTS) -> Prediction:
        """``Map.predict`` by the query's top-routed map (the report's example figures of a map set)."""
        return self.top_map(image).predict(image, max_points=max_points)

    @property
    def classifier(self) -> torch.nn.Module | None:
        """The inlier classifier of the first map when every map has one (the report's ROC caption), else None."""
        nets = [m.classifier for m in self.maps.values()]
        return nets[0] if all(n is not None for n in nets) else None


def localize_routed_frames(maps: MapSet, frames: list[Frame], mode: str = "rgb",
                           estimator: PoseConfig | str | None = None, seed: int = 0, top_k: int = DEFAULT_TOP_K,
                           keep_points: bool = False, progress: bool = False
                           ) -> Iterator[tuple[Frame, RoutedLocalization]]:
    """Dataset ``frames`` (``data.dataset.Frame``) localized one by one by the map set; yields ``(frame,
    RoutedLocalization)``. ``mode`` rgb or rgbd (the frame's depth); frame ``i`` draws from
    ``default_rng([seed, i])``, as ``mapping.queries.localize_frames``, so that it does not depend on the others."""
    for i, frame, image, depth in frame_queries(frames, mode, progress, f"localizing ({mode}, routed)"):
        routed = maps.localize(image, depth, frame.K, estimator, np.random.default_rng([seed, i]), top_k)
        if not keep_points:
            routed.result.without_points()
        yield frame, routed


def routed_pose_record(image: str, routed: RoutedLocalization, names: list[str]) -> PoseRecord:
    """The pose-file record of ``image`` localized by a map set: the winner's pose, failure and columns
    (``Localization.pose_file_columns``), the index of its map in ``names`` (NaN when none placed the query),
    the routing time (descriptor and retrieval) and the total time in ms."""
    res, t = routed.result, routed.timings
    columns = {**res.pose_file_columns(),
               "map_index": float(names.index(routed.name)) if routed.name else float("nan"),
               "routing_ms": t.get("descriptor_ms", 0.0) + t.get("retrieval_ms", 0.0), "routed_total_ms": t["total_ms"]}
    return PoseRecord(image, res.pose, columns, res.failure)
