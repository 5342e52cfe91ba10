"""Routing a query to the maps that can see it: a partitioned map, or a folder of maps (one per room).

Every map of a set keeps a global descriptor of each of its mapping frames (``routing.npz``): the frozen
XFeat encoder's features of the whole image, pooled over the image and over a 2 x 2 grid of it
(``global_descriptor``). A query's descriptor is compared to all of them (cosine similarity, after
removing the set's mean descriptor, which every image shares); each map scores its best-matching frame,
the ``top_k`` best maps localize the query in that order: the first confident pose wins (else the
highest calibrated probability, then the most inliers). A map without a ``routing.npz`` (made by a plain
``sceneloc map``) is always among those that localize. A query that none of the maps shows comes back
with a low probability or no pose, never as a confident pose (docs/scale.md measures both).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from sceneloc.errors import SceneLocError
from sceneloc.mapping.scene_map import Localization, Map
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


class DescriptorEncoder:
    """The frozen XFeat encoder turned into a global image descriptor (one encoder, loaded once)."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.encoder = load_encoder("xfeat").to(device)

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        """``(D,)`` float32 descriptor of an ``(H, W, 3)`` uint8 RGB image: each channel's mean and
        standard deviation over the image, and its mean over each quarter (D = 6 x 256), L2-normalised."""
        h, w = DESCRIPTOR_HW
        x = torch.from_numpy(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA))
        f = self.encoder(x.permute(2, 0, 1)[None].float().div_(255.0).to(self.device))[0].float()   # (C, h, w)
        c, fh, fw = f.shape
        quarters = f.reshape(c, 2, fh // 2, 2, fw // 2).mean(dim=(2, 4)).reshape(c, 4)
        d = torch.cat([f.mean(dim=(1, 2)), f.std(dim=(1, 2)), quarters.T.reshape(-1)])
        return (d / d.norm().clamp_min(1e-12)).cpu().numpy().astype(np.float32)


def write_routing(map_dir: Path, names: list[str], descriptors: np.ndarray) -> None:
    """``map_dir/routing.npz``: the descriptors ``(N, D)`` of the map's mapping frames ``names``."""
    np.savez_compressed(map_dir / ROUTING_FILE, names=np.array(names), descriptors=descriptors.astype(np.float16))


def frame_descriptors(frames: list, encoder: DescriptorEncoder) -> np.ndarray:
    """``(N, D)`` descriptors of dataset ``frames`` (``data.dataset.Frame``)."""
    return np.stack([encoder(f.load_image()) for f in frames])


def is_map_set(path: Path) -> bool:
    """Whether ``path`` is a partitioned map or a folder of maps (not one map directory)."""
    if (path / LAYOUT_FILE).exists():
        return True
    return path.is_dir() and not (path / "config.json").exists() and any(
        (p / "config.json").exists() for p in path.iterdir() if p.is_dir())


@dataclass
class RoutedLocalization:
    """A query localized by a map set: the winning ``result`` (a ``Localization``; its pose None when
    no routed map found one), the winning map's ``name`` (None then), the routed maps with their
    routing scores ``[(name, similarity)]`` best first, and ``timings`` in ms (descriptor, retrieval,
    each routed map's localization as ``localize_<name>_ms``, total)."""
    result: Localization
    name: str | None
    routed: list[tuple[str, float]]
    timings: dict[str, float] = field(default_factory=dict)


class MapSet:
    """Maps of one place, each with its own head, surface and view: the partitions of a partitioned map
    (``partitions.json``) or the map directories of a folder."""

    def __init__(self, maps: dict[str, Map], references: dict[str, np.ndarray], device: str = "cpu"):
        if not maps:
            raise SceneLocError("a map set needs at least one map")
        self.maps = maps
        self.references = references                  # name -> (N, D) descriptors of its mapping frames
        self.encoder = DescriptorEncoder(device) if references else None
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
        references = {}
        for p in dirs:
            if (p / ROUTING_FILE).exists():
                with np.load(p / ROUTING_FILE) as z:
                    references[p.name] = z["descriptors"].astype(np.float32)
        device = next(iter(maps.values())).device
        return cls(maps, references, device)

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
        return RoutedLocalization(res, name if res.pose is not None else None, routed, timings)
