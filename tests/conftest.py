"""Shared fixtures: real data lives in ../shared/data (never copied into the repo)."""

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REDKITCHEN = SHARED_DATA / "7scenes-redkitchen"
STAIRS = SHARED_DATA / "7scenes-stairs-sample"


@pytest.fixture(scope="session")
def redkitchen() -> Path:
    if not (REDKITCHEN / "TrainSplit.txt").exists():
        pytest.skip(f"real data absent: {REDKITCHEN} (put the shared data beside the repo)")
    return REDKITCHEN


@pytest.fixture(scope="session")
def stairs() -> Path:
    if not (STAIRS / "TrainSplit.txt").exists():
        pytest.skip(f"real data absent: {STAIRS} (put the shared data beside the repo)")
    return STAIRS


# Tests are tiny: one torch thread each avoids oversubscribing a small CPU (two processes with
# two OpenMP threads each on two cores run ~100x slower than one thread each).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory) -> Path:
    """A small exact synthetic RGB-D scene (160x120, 2 train + 1 test sequences of 6 frames)."""
    from sceneloc.synth.dataset import SensorOptions, generate
    root = tmp_path_factory.mktemp("tiny_scene")
    return generate(root, frames=6, train_sequences=2, test_sequences=1, width=160, height=120,
                    sensor=SensorOptions.clean(), force=True, progress=False)


@pytest.fixture(scope="session")
def overfit_scene(tmp_path_factory) -> Path:
    """Two training frames (and two test frames) of the synthetic room at 160x120, exact."""
    from sceneloc.synth.dataset import SensorOptions, generate
    root = tmp_path_factory.mktemp("overfit_scene")
    return generate(root, frames=2, train_sequences=1, test_sequences=1, width=160, height=120,
                    sensor=SensorOptions.clean(), force=True, progress=False)


@pytest.fixture(scope="session")
def tiny_map(overfit_scene, tmp_path_factory) -> Path:
    """An FCN map over-fitted to the two training frames of ``overfit_scene`` (seconds on one core)."""
    from sceneloc.mapping.build import map_scene
    from sceneloc.training.trainers import MappingConfig
    out = tmp_path_factory.mktemp("tiny_map") / "map"
    cfg = MappingConfig(arch="fcn", width=16, input_height=96, iterations=300, batch_size=2, optimizer="adamw",
                        lr=3e-3, loss="tukey", aug_scale=1.0, aug_rotation_deg=0.0, aug_brightness=0.0,
                        aug_contrast=0.0, confidence_minutes=0.1)
    map_scene(overfit_scene, out, cfg, log=lambda *a: None)
    return out


@pytest.fixture(scope="module")
def the_map(tiny_map):
    """``tiny_map`` loaded on the CPU, once per test module."""
    from sceneloc.mapping.scene_map import Map
    return Map.load(tiny_map, device="cpu")
