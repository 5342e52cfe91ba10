"""ACE's training buffer: frozen-encoder features of augmented mapping images, with exact targets.

Every mapping image is seen as ``copies`` versions (the first as it is, the others zoomed, rolled
and photometrically jittered); each version goes through the frozen encoder once, and a random
share of its valid output cells is kept: the cell's feature (fp16), the *source pixel* it looks at
in the original image, and that pixel's ground-truth scene coordinate from depth and pose. The
per-pixel head then trains on shuffled batches of buffer entries from many images at once
(decorrelated gradients, no encoder backward pass).

Targets are exact under augmentation: a cell's source pixel is the inverse augmentation of the
cell centre, and its target lies on the ray through that pixel, so it projects back onto it.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from sceneloc.data.dataset import Frame, sample_nearest, scene_coordinates_at
from sceneloc.errors import SceneLocError
from sceneloc.geometry import backproject, invert_pose, make_pose, project
from sceneloc.nets.models import EncoderHeadNet, input_size
from sceneloc.progress import progress

#: Bytes per buffer entry besides the features: target (3 x f32), source pixel (2 x f32), frame (i32).
_ENTRY_OVERHEAD_BYTES = 24


@dataclass
class PixelBuffer:
    """``features (N, C)`` fp16, ``targets (N, 3)`` metres (NaN: a frame without depth), ``pixels (N, 2)``
    source pixel (u, v) in the original image, ``frames (N,)`` index into the mapping frames; ``T_cw (F, 3, 4)`` and
    ``K (F, 3, 3)`` of those frames (for reprojection losses)."""
    features: torch.Tensor
    targets: torch.Tensor
    pixels: torch.Tensor
    frames: torch.Tensor
    T_cw: torch.Tensor
    K: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.features, self.targets, self.pixels, self.frames))


def entries_for_memory(megabytes: float, channels: int) -> int:
    """How many buffer entries fit in ``megabytes`` (features fp16 plus per-entry bookkeeping)."""
    return int(megabytes * 2 ** 20 // (2 * channels + _ENTRY_OVERHEAD_BYTES))


def resize_matrix(image_hw: tuple[int, int], input_hw: tuple[int, int]) -> np.ndarray:
    """``(3, 3)`` map of full-resolution pixel centres to network-input pixel centres (a resize)."""
    fy, fx = input_hw[0] / image_hw[0], input_hw[1] / image_hw[1]
    return np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1]])


def augmentation_matrix(input_hw: tuple[int, int], scale: float, angle_deg: float) -> np.ndarray:
    """``(3, 3)`` zoom by ``scale`` and roll by ``angle_deg`` about the centre of an ``input_hw`` image."""
    h, w = input_hw
    M = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle_deg, scale)
    return np.vstack([M, [0, 0, 1]])


def cell_source_pixels(full_to_input: np.ndarray, out_hw: tuple[int, ...], stride: int) -> np.ndarray:
    """Original-image pixel ``(h, w, 2)`` (u, v) that each output cell's centre looks at, given the
    ``(3, 3)`` map from original pixels to (augmented) input pixels. Cell ``j`` is centred on input
    pixel ``stride j + (stride - 1) / 2``."""
    h, w = out_hw
    v, u = np.meshgrid(np.arange(h) * stride + (stride - 1) / 2, np.arange(w) * stride + (stride - 1) / 2,
                       indexing="ij")
    p = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(full_to_input).T
    return p[..., :2]


def augmented_views(image: np.ndarray, input_hw: tuple[int, int], copies: int, rng: np.random.Generator,
                    aug_scale: float, aug_rotation_deg: float, aug_brightness: float, aug_contrast: float,
                    depth: np.ndarray | None = None, K: np.ndarray | None = None, novel_views: int = 0,
                    orbit_deg: float = 5.0) -> tuple[torch.Tensor, list[np.ndarray], list[np.ndarray | None]]:
    """``copies`` network inputs ``(copies, 3, H_in, W_in)`` in [0, 1] of one ``(H, W, 3)`` uint8 image
    (the first unaugmented), per copy the ``(3, 3)`` map from original (or, for a novel view, rendered)
    to input pixels, and per copy None or, for the last ``novel_views`` copies when ``depth`` and ``K``
    are given, the rendered view's ``source (H, W, 2)`` (``novel_view``)."""
    h_in, w_in = input_hw

    def resized(img: np.ndarray) -> np.ndarray:
        return img if img.shape[:2] == input_hw else cv2.resize(img, (w_in, h_in), interpolation=cv2.INTER_AREA)
    base = resized(image)
    R = resize_matrix(image.shape[:2], input_hw)
    views, maps = [], []
    sources: list[np.ndarray | None] = []
    for k in range(copies):
        if k == 0:
            views.append(base)
            maps.append(R)
            sources.append(None)
            continue
        if depth is not None and K is not None and k >= copies - novel_views:
            rendered, source, _ = novel_view(image, depth, K, rng, orbit_deg)
            views.append(resized(rendered))
            maps.append(R)
            sources.append(source)
            continue
        s = math.exp(rng.uniform(-math.log(aug_scale), math.log(aug_scale))) if aug_scale > 1 else 1.0
        A = augmentation_matrix(input_hw, s, rng.uniform(-aug_rotation_deg, aug_rotation_deg))
        views.append(cv2.warpAffine(base, A[:2], (w_in, h_in), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0)))
        maps.append(A @ R)
        sources.append(None)
    x = torch.from_numpy(np.stack(views)).permute(0, 3, 1, 2).float().div_(255.0)
    if copies > 1:  # photometric jitter on the augmented copies only
        n = copies - 1
        b = torch.from_numpy(rng.uniform(-aug_brightness, aug_brightness, (n, 1, 1, 1))).float()
        c = torch.from_numpy(rng.uniform(1 - aug_contrast, 1 + aug_contrast, (n, 1, 1, 1))).float()
        mean = x[1:].mean(dim=(1, 2, 3), keepdim=True)
        x[1:] = ((x[1:] - mean) * c + mean + b).clamp_(0, 1)
    return x, maps, sources


#: A novel view's cell learns only where this share or less of the pixels around it is empty: the
#: encoder's features near a hole describe the hole.
MAX_HOLE_SHARE = 0.1
HOLE_WINDOW_PX = 17


def rendered_source_pixels(source: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Original pixels ``(..., 2)`` that rendered pixels ``uv (..., 2)`` of a novel view show (its
    ``source (H, W, 2)``, nearest pixel); NaN outside it, in a hole or near one."""
    H, W = source.shape[:2]
    share = cv2.blur(np.isnan(source[..., 0]).astype(np.float32), (HOLE_WINDOW_PX, HOLE_WINDOW_PX),
                     borderType=cv2.BORDER_CONSTANT)
    ui, vi = np.rint(uv[..., 0]), np.rint(uv[..., 1])
    inside = (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H)
    ok = inside & (sample_nearest(share, uv) <= MAX_HOLE_SHARE)
    return np.where(ok[..., None], sample_nearest(source, uv), np.nan)


def novel_view(image: np.ndarray, depth: np.ndarray, K: np.ndarray, rng: np.random.Generator,
               orbit_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``image (H, W, 3)`` as a camera orbited about a point ahead of it would see it: rotated by up to
    ``orbit_deg`` about an axis across the optical axis through the point at the median ``depth (H, W)``
    (metres, 0 = none), so that it also moves (~17 cm for 5 deg at 2 m). Every second pixel with depth
    is forward-warped into a half-resolution view (the nearest surface wins, cracks are filled from
    their neighbours), whose map of source pixels is then interpolated to full resolution.

    Returns the rendered image ``(H, W, 3)`` uint8 (black where nothing lands), ``source (H, W, 2)``:
    the original pixel (u, v) each rendered pixel shows, NaN where none, and ``T_sv (4, 4)``: the
    orbited camera's pose in the original camera's frame. Unlike zoom and roll, this
    shows surfaces from other directions (parallax, foreshortening), as a query from elsewhere does."""
    H, W = depth.shape
    h, w = H // 2, W // 2
    v, u = np.nonzero(depth[: 2 * h: 2, : 2 * w: 2] > 0)
    if len(u) == 0:
        return np.zeros_like(image), np.full((H, W, 2), np.nan, np.float32), np.eye(4)
    u, v = 2 * u, 2 * v                          # full-resolution source pixels
    z = depth[v, u].astype(np.float64)
    P = backproject(np.stack([u, v], axis=-1).astype(np.float64), z, K)
    phi = rng.uniform(0.0, 2.0 * math.pi)
    turn = math.radians(rng.uniform(-orbit_deg, orbit_deg))
    R = cv2.Rodrigues(np.array([math.cos(phi), math.sin(phi), 0.0]) * turn)[0]
    pivot = np.array([0.0, 0.0, float(np.median(z))])
    Q = (P - pivot) @ R.T + pivot                 # the scene turned about the pivot: the camera orbits it
    front = np.flatnonzero(Q[:, 2] > 0.05)
    uvq = np.rint(project(Q[front], K) / 2)       # half-resolution pixel j is full-resolution pixel 2 j
    inside = (uvq[:, 0] >= 0) & (uvq[:, 0] < w) & (uvq[:, 1] >= 0) & (uvq[:, 1] < h)
    keep, uvq = front[inside], uvq[inside]
    target = (uvq[:, 1] * w + uvq[:, 0]).astype(np.int64)
    # z-buffer: sort by (target pixel, depth in mm) in one int64 key, keep each pixel's nearest
    key = target * (1 << 20) + np.minimum(np.rint(Q[keep, 2] * 1000), (1 << 20) - 1).astype(np.int64)
    order = np.argsort(key)
    target, keep = target[order], keep[order]
    first = np.r_[True, target[1:] != target[:-1]]
    winner = np.full(h * w, -1, np.int64)
    winner[target[first]] = keep[first]
    winner = winner.reshape(h, w)
    nearest = np.where(winner >= 0, Q[winner, 2], np.inf)
    # cracks (where the view magnifies) are empty pixels with most 8-neighbours filled; a hole's rim
    # has them on one side only. A crack takes its nearest neighbour's source.
    pad_w = np.pad(winner, 1, constant_values=-1)
    pad_z = np.pad(nearest, 1, constant_values=np.inf)
    filled = winner.copy()
    best = np.full((h, w), np.inf)
    count = np.zeros((h, w), np.int8)
    for dv in (-1, 0, 1):
        for du in (-1, 0, 1):
            if dv == du == 0:
                continue
            nw = pad_w[1 + dv: 1 + dv + h, 1 + du: 1 + du + w]
            nz = pad_z[1 + dv: 1 + dv + h, 1 + du: 1 + du + w]
            count += nw >= 0
            take = (winner < 0) & (nz < best)
            filled[take], best[take] = nw[take], nz[take]
    filled[(winner < 0) & (count < 6)] = -1
    half = np.full((h, w, 2), np.nan, np.float32)
    found = filled >= 0
    half[found, 0], half[found, 1] = u[filled[found]], v[filled[found]]
    # to full resolution (pixel x at half-resolution x / 2): linear inside surfaces, NaN spreads one
    # pixel into the holes
    mx, my = np.meshgrid(np.arange(W, dtype=np.float32) / 2, np.arange(H, dtype=np.float32) / 2)
    source = cv2.remap(half, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(np.nan,) * 4)
    rendered = cv2.remap(image, np.nan_to_num(source[..., 0], nan=-1.0), np.nan_to_num(source[..., 1], nan=-1.0),
                         cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    # the orbited camera's frame from the source camera's: x_v = R (x_s - c) + c
    return rendered, source, invert_pose(make_pose(R, pivot - R @ pivot))


def _prefetched(frames: list[Frame]):
    """Decoded frames (images and depth), the next one decoded in a thread while the encoder runs
    (OpenCV releases the GIL while decoding)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(frames[0].load, False)
        for nxt in frames[1:]:
            fd = pending.result()
            pending = pool.submit(nxt.load, False)
            yield fd
        yield pending.result()


@torch.no_grad()
def fill_buffer(frames: list[Frame], net: EncoderHeadNet, input_height: int, entries: int, copies: int,
                seed: int, aug_scale: float = 1.5, aug_rotation_deg: float = 15.0, aug_brightness: float = 0.2,
                aug_contrast: float = 0.2, device: str = "cpu", novel_views: int = 0,
                orbit_deg: float = 5.0) -> PixelBuffer:
    """Features and exact targets of ~``entries`` random valid cells of ``copies`` views of every frame;
    with depth, the last ``novel_views`` of them are rendered from an orbited camera (``novel_view``).

    A frame without depth contributes every cell that looks inside the image, with a NaN target:
    the head learns those from the reprojection error in that frame (RGB-only mapping)."""
    if not frames:
        raise SceneLocError("no mapping frames to fill the training buffer with")
    rng = np.random.default_rng(seed)
    h_in, w_in, _ = input_size(frames[0].load_image().shape[:2], input_height, net.multiple)
    cells = (h_in // net.stride) * (w_in // net.stride)
    per_view = min(cells, max(1, math.ceil(entries / (len(frames) * copies))))  # no more than a view has
    n_max = len(frames) * copies * per_view
    channels = net.encoder.channels
    features = torch.empty((n_max, channels), dtype=torch.float16)
    targets = torch.empty((n_max, 3), dtype=torch.float32)
    pixels = torch.empty((n_max, 2), dtype=torch.float32)
    frame_ids = torch.empty(n_max, dtype=torch.int32)
    T_cw, Ks = [], []
    n = 0
    for i, fd in enumerate(progress(_prefetched(frames), total=len(frames), desc="filling buffer", unit="frame")):
        h_in, w_in, _ = input_size(fd.image.shape[:2], input_height, net.multiple)
        x, maps, sources = augmented_views(fd.image, (h_in, w_in), copies, rng, aug_scale, aug_rotation_deg,
                                           aug_brightness, aug_contrast, fd.depth, fd.K, novel_views, orbit_deg)
        feats = net.features(x.to(device)).permute(0, 2, 3, 1).cpu()  # (copies, h, w, C)
        out_hw = feats.shape[1:3]
        for k, (M, source) in enumerate(zip(maps, sources, strict=True)):
            uv = cell_source_pixels(M, out_hw, net.stride)
            if source is not None:   # a novel view: its cells look at original pixels through the rendering
                uv = np.nan_to_num(rendered_source_pixels(source, uv), nan=-1.0)   # -1: outside, no target
            if fd.depth is not None:
                X, valid = scene_coordinates_at(fd.depth, fd.pose, fd.K, uv)
            else:  # RGB only: no target, the head learns this cell from its reprojection (head_training)
                H, W = fd.image.shape[:2]
                valid = (uv[..., 0] > -0.5) & (uv[..., 0] < W - 0.5) & (uv[..., 1] > -0.5) & (uv[..., 1] < H - 0.5)
                X = np.full(uv.shape[:-1] + (3,), np.nan, np.float32)
            valid_cells = np.flatnonzero(valid)
            if len(valid_cells) == 0:
                continue
            pick = rng.choice(valid_cells, size=min(per_view, len(valid_cells)), replace=False)
            m = len(pick)
            features[n:n + m] = feats[k].reshape(-1, channels)[torch.from_numpy(pick)].half()
            targets[n:n + m] = torch.from_numpy(X.reshape(-1, 3)[pick])
            pixels[n:n + m] = torch.from_numpy(uv.reshape(-1, 2)[pick].astype(np.float32))
            frame_ids[n:n + m] = i
            n += m
        T_cw.append(np.linalg.inv(fd.pose)[:3])
        Ks.append(fd.K)
    if n == 0:
        raise SceneLocError(f"{frames[0].image_path.parent}: no valid cell in any mapping frame, nothing to train on")
    # Views, not copies: a copy of the features would double the peak memory for a moment.
    return PixelBuffer(features[:n], targets[:n], pixels[:n], frame_ids[:n],
                       torch.from_numpy(np.stack(T_cw)).float(), torch.from_numpy(np.stack(Ks)).float())
