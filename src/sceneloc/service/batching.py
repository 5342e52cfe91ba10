"""One network pass over several query images: the server's micro-batches.

``Map.predict`` runs one image; concurrent requests to a server can share a pass when their images
have the same size. The output of each image is ``Map.predict``'s for it alone (eval mode: no batch
statistics), so ``Map.localize(..., prediction=...)`` gives the same pose either way. Confidences are
not computed: the default estimators (``ransac``, ``random``, ``joint``) do not read them; requests
for the confidence-guided ones are run one by one (``needs_single_pass``).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from sceneloc.mapping.scene_map import CONFIDENCE_METHODS, DEFAULT_POSE_POINTS, Map, Prediction, grid_step
from sceneloc.nets.models import image_to_tensor, input_size, output_pixel_centres
from sceneloc.pose.config import DSAC_METHODS, PoseConfig


def needs_single_pass(config: PoseConfig) -> bool:
    """Whether a request under ``config`` cannot share a batched pass: confidences, several query
    scales, or a DSAC stage's own network."""
    return config.method in CONFIDENCE_METHODS or len(config.query_scales) > 1 or config.method in DSAC_METHODS


@torch.no_grad()
def predict_batch(the_map: Map, images: list[np.ndarray], max_points: int = DEFAULT_POSE_POINTS) -> list[Prediction]:
    """``Map.predict`` (without confidences) for ``images``, each ``(H, W, 3)`` uint8 of one size, in one
    network pass; each prediction's ``network_ms`` is the pass's time shared equally."""
    if not images:
        return []
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"a batch needs images of one size, got {sorted(shapes)}")
    net = the_map.coord_net
    t0 = time.perf_counter()
    hw = images[0].shape[:2]
    h_in, w_in, _ = input_size(hw, the_map.config["input_height"], net.multiple)
    x = torch.cat([image_to_tensor(im, (h_in, w_in)) for im in images]).to(the_map.device)
    y = the_map.norm.to_metres(net(x)).permute(0, 2, 3, 1).float()
    pixels = output_pixel_centres(y.shape[1:3], net.stride, hw, (h_in, w_in))
    step = grid_step(y.shape[1:3], max_points)
    coords, centres = y[:, ::step, ::step].cpu().numpy(), pixels[::step, ::step].numpy()
    ms = (time.perf_counter() - t0) * 1000 / len(images)
    return [Prediction(centres, c, None, ms) for c in coords]
