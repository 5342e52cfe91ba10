"""The DSAC stage of a map directory (``coordinates_dsac.pt``, ``score.pt``, ``dsac_config.json``): loaded on
first use by ``--method dsac|softam``; soft-inlier scoring needs no stage (the base network is used)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from sceneloc.errors import SceneLocError
from sceneloc.nets.models import CoordinateNetwork, Net, build_coordinate_network, load_weights
from sceneloc.pose.config import DSAC_SCORES
from sceneloc.pose.dsac import DSACConfig, ScoreCNN

# ------------------------------------------------------------------------------- the map stage


@dataclass
class DSACStage:
    """What ``Map.localize(estimator='dsac'|'softam')`` uses: options, coordinate network, Score CNN."""
    config: DSACConfig
    coord_net: CoordinateNetwork
    score_net: ScoreCNN | None


def load_stage(map_dir: str | Path, map_config: dict, device: str = "cpu") -> DSACStage | None:
    """The DSAC stage stored in ``map_dir``, or None when it has none (no ``dsac_config.json``)."""
    d = Path(map_dir)
    cfg_path = d / "dsac_config.json"
    if not cfg_path.exists():
        return None
    rerun = "re-run 'sceneloc map DATASET MAP_DIR --stage dsac --force'"
    try:
        config = DSACConfig(**json.loads(cfg_path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise SceneLocError(f"{cfg_path}: corrupt DSAC configuration ({str(e).splitlines()[0]}); {rerun}") from None

    def weights(net: Net, name: str) -> Net:
        return load_weights(net, d / name, device, "DSAC", f"; {rerun}").to(device).eval()

    coord_net = weights(build_coordinate_network(map_config["network"]), "coordinates_dsac.pt")
    score_net = weights(ScoreCNN(config.score_width, config.beta), "score.pt") if config.score == "cnn" else None
    return DSACStage(config, coord_net, score_net)


def resolve_stage(the_map, score: str | None = None) -> DSACStage:
    """The stage ``Map.localize`` runs for ``dsac``/``softam`` with hypothesis ``score`` (None: the stage's).

    Loads the map's stage on first use. Without one, ``soft-inliers`` needs no weights and runs on
    the base coordinate network; ``cnn`` is an error that says how to train the stage.
    """
    if score is not None and score not in DSAC_SCORES:
        raise SceneLocError(f"unknown DSAC score {score!r} (choose {' or '.join(DSAC_SCORES)})")
    if the_map.dsac is None and the_map.map_dir is not None:
        the_map.dsac = load_stage(the_map.map_dir, the_map.config, the_map.device)
    stage = the_map.dsac
    if stage is None:
        if score != "soft-inliers":
            raise SceneLocError(f"{the_map.map_dir or 'this map'}: no DSAC stage (no dsac_config.json): run "
                                f"'sceneloc map DATASET MAP_DIR --stage dsac', or use --dsac-score soft-inliers")
        return DSACStage(DSACConfig(score="soft-inliers"), the_map.coord_net, None)
    if score == "cnn" and stage.score_net is None:
        raise SceneLocError(f"{the_map.map_dir}: the DSAC stage was trained with --score soft-inliers and has no "
                            f"Score CNN (score.pt); re-run 'sceneloc map ... --stage dsac --score cnn --force'")
    return stage if score is None else replace(stage, config=replace(stage.config, score=score))
