"""Shared fixtures: real data lives in ../shared/data (never copied into the repo)."""

from pathlib import Path

import pytest

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
