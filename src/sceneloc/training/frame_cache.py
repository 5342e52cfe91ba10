"""Training frames decoded once at network resolution (``FrameCache``), and the augmentation that keeps
their ground truth exact (zoom and roll applied to image and target grid alike, photometric jitter):
what the from-scratch networks (fcn, unet), stage 2 and the DSAC stage train on."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from sceneloc.data.dataset import Frame, sample_nearest, scene_coordinates_at
from sceneloc.errors import SceneLocError
from sceneloc.nets.models import input_size, output_pixel_centres
from sceneloc.progress import progress as progress_bar

# ------------------------------------------------------------------------------------ frame cache


@dataclass
class FrameCache:
    """Decoded frames at network resolution: images ``(N, H_in, W_in, 3)`` uint8, targets
    ``(N, h, w, 3)`` metres, masks ``(N, h, w)``, depth ``(N, h, w)`` at the output grid."""
    names: list[str]
    images: np.ndarray
    coords: np.ndarray
    masks: np.ndarray
    depths: np.ndarray
    stride: int

    @classmethod
    def build(cls, frames: list[Frame], input_height: int, stride: int, multiple: int,
              desc: str = "caching frames") -> FrameCache:
        first = frames[0].load_image()
        image_hw = first.shape[:2]
        h_in, w_in, _ = input_size(image_hw, input_height, multiple)
        out_hw = (h_in // stride, w_in // stride)
        uv = output_pixel_centres(out_hw, stride, image_hw, (h_in, w_in)).numpy()
        n = len(frames)
        images = np.empty((n, h_in, w_in, 3), np.uint8)
        coords = np.empty((n, *out_hw, 3), np.float32)
        masks = np.empty((n, *out_hw), bool)
        depths = np.empty((n, *out_hw), np.float32)
        for i, frame in enumerate(progress_bar(frames, desc=desc, unit="frame", leave=False)):
            fd = frame.load(need_depth=False)
            if fd.image.shape[:2] != image_hw:
                raise SceneLocError(f"{frame.image_path}: image is {fd.image.shape[1]}x{fd.image.shape[0]}, "
                                    f"other frames are {image_hw[1]}x{image_hw[0]}")
            images[i] = cv2.resize(fd.image, (w_in, h_in), interpolation=cv2.INTER_AREA)
            if fd.depth is None:  # a frame without depth has no ground truth: every cell masked out
                coords[i], masks[i], depths[i] = 0.0, False, 0.0
                continue
            coords[i], masks[i] = scene_coordinates_at(fd.depth, fd.pose, fd.K, uv)
            depths[i] = sample_nearest(fd.depth, uv)
        return cls([f.name for f in frames], images, coords, masks, depths, stride)

    def __len__(self) -> int:
        return len(self.names)


def augment(image: np.ndarray, coords: np.ndarray, mask: np.ndarray, depth: np.ndarray, stride: int,
            scale: float, angle_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Zoom by ``scale`` and rotate by ``angle_deg`` about the image centre, keeping ground truth exact.

    The image is resampled bilinearly; target coordinates, mask and depth nearest-neighbour with the
    same transform expressed on the output grid, so every target stays a true scene point of the
    pixel it is attached to (to within half an output cell). Zooming is what a change of focal
    length does; rolling is what an in-plane camera rotation does: both are views the network may
    meet at query time. Uncovered pixels are black and masked out.
    """
    h_in, w_in = image.shape[:2]
    M = cv2.getRotationMatrix2D(((w_in - 1) / 2.0, (h_in - 1) / 2.0), angle_deg, scale)
    img = cv2.warpAffine(image, M, (w_in, h_in), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    # Same map on the output grid: input p = stride * q + o, o = (stride - 1) / 2.
    o = (stride - 1) / 2.0
    M_out = M.copy()
    M_out[:, 2] = (M[:, :2] @ np.array([o, o]) + M[:, 2] - o) / stride
    h, w = mask.shape

    def warp(a: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(a, M_out, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
    return img, warp(coords), warp(mask.astype(np.uint8)).astype(bool), warp(depth)


@dataclass(frozen=True)
class Augmentation:
    """Random augmentation of a training batch: zoom in ``[1/zoom, zoom]`` and in-plane roll in
    ``[-rotation_deg, rotation_deg]`` (image and targets alike), then per-image brightness offset in
    ``[-brightness, brightness]`` and contrast factor in ``[1 - contrast, 1 + contrast]``."""
    zoom: float = 1.0
    rotation_deg: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0


def make_batch(cache: FrameCache, idx: np.ndarray, aug: Augmentation, rng: np.random.Generator
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frames ``idx`` of ``cache`` under random ``aug``: images ``(B, 3, H_in, W_in)`` in [0, 1]
    (channels-last), targets ``(B, 3, h, w)`` metres, masks ``(B, h, w)``, depth ``(B, h, w)``."""
    imgs, crds, msks, dpts = [], [], [], []
    for i in idx:
        img, c, m, d = cache.images[i], cache.coords[i], cache.masks[i], cache.depths[i]
        if aug.zoom > 1.0 or aug.rotation_deg > 0:
            s = math.exp(rng.uniform(-math.log(aug.zoom), math.log(aug.zoom))) if aug.zoom > 1 else 1.0
            a = rng.uniform(-aug.rotation_deg, aug.rotation_deg)
            img, c, m, d = augment(img, c, m, d, cache.stride, s, a)
        imgs.append(img)
        crds.append(c)
        msks.append(m)
        dpts.append(d)
    image = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().div_(255.0)
    if aug.brightness > 0 or aug.contrast > 0:  # photometric jitter: per-image brightness and contrast
        b = torch.from_numpy(rng.uniform(-aug.brightness, aug.brightness, (len(idx), 1, 1, 1))).float()
        k = torch.from_numpy(rng.uniform(1 - aug.contrast, 1 + aug.contrast, (len(idx), 1, 1, 1))).float()
        mean = image.mean(dim=(1, 2, 3), keepdim=True)
        image = ((image - mean) * k + mean + b).clamp_(0, 1)
    coords = torch.from_numpy(np.stack(crds)).permute(0, 3, 1, 2)
    return (image.contiguous(memory_format=torch.channels_last), coords,
            torch.from_numpy(np.stack(msks)), torch.from_numpy(np.stack(dpts)))
