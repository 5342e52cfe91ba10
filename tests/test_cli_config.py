"""The CLI cannot drift from the config dataclasses (issue 16): every option that sets a field has the
field's default and reaches that field, and every field is an option or listed below as deliberately not."""

import argparse
import inspect
from dataclasses import MISSING, fields

import pytest

from sceneloc.capture.colmap import import_colmap
from sceneloc.capture.sfm import run_sfm
from sceneloc.cli import main as cli
from sceneloc.cli import options
from sceneloc.demo import run_demo
from sceneloc.pose.config import PoseConfig
from sceneloc.pose.dsac import DSACConfig
from sceneloc.report.evaluation import evaluate
from sceneloc.report.export import export_point_cloud
from sceneloc.synth.dataset import generate
from sceneloc.synth.render import SensorOptions
from sceneloc.training.trainers import MappingConfig

# Fields without an option, each with the reason. A new field fails these tests until it gets an
# option or a line here.
MAPPING_NOT_EXPOSED = {
    "encoder": "xfeat is the only encoder (nets.encoders.ENCODERS)",
    "confidence_scale": "the paper's s in delta = exp(-s e) (III-B): delta is 0.75 at the 10 cm inlier threshold",
}
POSE_NOT_EXPOSED = {
    "solver": "follows the data: Kabsch with depth (--mode rgbd, --depth), PnP without",
    "subset_size": "None means N_best, which --n-k and --best-fraction set",
    "polish_iterations": "a bound: the re-fit stops as soon as its inlier set is stable",
    "ransac_iterations": "a bound: RANSAC stops at ransac_confidence long before it",
    "ransac_confidence": "RANSAC's stopping rule (DSAC*/ACE's value), a library option",
    "ransac_points": "a speed bound of RANSAC's hypothesis scoring (the re-fit uses every point), a library option",
    "joint_batch": "hypotheses per round of --method joint (ACE/DSAC*'s 64)",
    "joint_max_hypotheses": "bounds --method joint's time at low inlier ratios, a library option",
}
DSAC_NOT_EXPOSED = {
    **dict.fromkeys(("threshold_px", "threshold_m", "alpha", "beta", "refine_beta", "loss", "loss_clamp"),
                    "DSAC*'s values for the inlier thresholds, score softmax/sigmoid and pose loss"),
    **dict.fromkeys(("refine_rounds", "refine_steps", "hypothesis_steps", "error_clamp", "score_width"),
                    "the differentiable solver's and the Score CNN's shape: library options"),
    **dict.fromkeys(("samples", "lr_coordinates", "lr_score", "grad_clip", "aug_brightness", "aug_contrast",
                     "eval_frames"),
                    "fine-tuning's optimiser and sampling (DSAC*'s learning rate): library options"),
}

# (command, its positional words, config class, dest of a field, fields not exposed, builder from the
# parsed options, whether an option left at None means the dataclass default)
CASES = [
    ("map", ["DATA", "MAP"], MappingConfig, lambda name: name, MAPPING_NOT_EXPOSED, options.mapping_config, False),
    ("map", ["DATA", "MAP"], DSACConfig,
     lambda name: name if name in options.DSAC_SHARED_OPTIONS else "dsac_" + name, DSAC_NOT_EXPOSED,
     options.dsac_config, True),
    ("localize", ["MAP"], PoseConfig, lambda name: name, POSE_NOT_EXPOSED, options.pose_config, False),
    ("evaluate", ["MAP", "DATA", "--out", "REPORT"], PoseConfig, lambda name: name, POSE_NOT_EXPOSED,
     options.pose_config, False),
]
CASE_IDS = ["map-MappingConfig", "map-DSACConfig", "localize-PoseConfig", "evaluate-PoseConfig"]


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[command]


def _options(command: str) -> dict[str, argparse.Action]:
    """The options of ``sceneloc COMMAND`` by dest."""
    return {a.dest: a for a in _subparser(command)._actions if a.option_strings and a.dest != "help"}


def _default(field) -> object:
    return field.default_factory() if field.default is MISSING else field.default


def _other_value(action: argparse.Action) -> tuple[list[str], object]:
    """Command-line words that set ``action`` to a valid value other than its default, and that value."""
    flag = action.option_strings[0]
    if isinstance(action, argparse._StoreFalseAction):
        return [flag], False
    if isinstance(action, argparse._StoreTrueAction):
        return [flag], True
    if action.choices:
        value = next(c for c in action.choices if c != action.default)
        return [flag, str(value)], value
    if action.nargs in ("+", "*"):
        return [flag, "1", "2.5"], [1.0, 2.5]
    if action.type is int:
        value = 3 if action.default is None else action.default + 1
    else:  # a float: halved stays valid for fractions, thresholds and budgets alike
        value = 0.5 if not action.default else action.default / 2
    return [flag, str(value)], value


@pytest.mark.parametrize("command, positionals, config, dest, not_exposed, build, none_is_default", CASES,
                         ids=CASE_IDS)
def test_every_field_is_an_option_with_its_default_or_deliberately_not(command, positionals, config, dest,
                                                                         not_exposed, build, none_is_default):
    options = _options(command)
    assert set(not_exposed) <= {f.name for f in fields(config)}, "the list names a field that is gone"
    for f in fields(config):
        if f.name in not_exposed:
            assert dest(f.name) not in options, f"{f.name} has an option now: drop it from the list"
            continue
        assert dest(f.name) in options, f"{config.__name__}.{f.name}: no option of 'sceneloc {command}'"
        action = options[dest(f.name)]
        if not (none_is_default and action.default is None):
            assert action.default == _default(f), f"{action.option_strings[0]}: default differs from {f.name}'s"
        if isinstance(action.default, int | float | str) and not isinstance(action.default, bool):
            assert "%(default)" in action.help, f"{action.option_strings[0]}: help does not state the default"


@pytest.mark.parametrize("command, positionals, config, dest, not_exposed, build, none_is_default", CASES,
                         ids=CASE_IDS)
def test_every_option_reaches_its_field(command, positionals, config, dest, not_exposed, build, none_is_default):
    options = _options(command)
    words, expected = [], {}
    for f in fields(config):
        if f.name not in not_exposed:
            more, expected[f.name] = _other_value(options[dest(f.name)])
            words += more
    built = build(cli.build_parser().parse_args([command, *positionals, *words]))
    assert isinstance(built, config)
    assert {name: getattr(built, name) for name in expected} == expected


def test_option_defaults_are_among_their_choices():
    """argparse does not check a default against ``choices``: a renamed default would pass silently."""
    for command in ("map", "localize", "evaluate", "synth", "sfm", "demo"):
        for action in _options(command).values():
            if action.choices and action.default is not None:
                assert action.default in action.choices, (command, action.option_strings)


@pytest.mark.parametrize("command, function, differs", [
    ("synth", generate, {}),
    ("sfm", run_sfm, {}),
    ("export", export_point_cloud, {}),
    ("demo", run_demo, {}),
    ("evaluate", evaluate, {"method": "--method defaults to PoseConfig.method (checked above); None means the same"}),
], ids=["synth", "sfm", "export", "demo", "evaluate"])
def test_options_have_the_library_functions_defaults(command, function, differs):
    options = _options(command)
    params = {name: p.default for name, p in inspect.signature(function).parameters.items()
              if p.default is not inspect.Parameter.empty}
    shared = set(options) & set(params) - set(differs)
    assert len(shared) >= 2, "nothing to compare: the option names no longer match the parameters"
    for name in shared:
        assert options[name].default == params[name], f"sceneloc {command} {options[name].option_strings[0]}"


def test_import_colmap_options_have_the_importers_defaults():
    parser = _subparser("import")
    colmap = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["colmap"]
    options = {a.dest: a.default for a in colmap._actions if a.option_strings and a.dest != "help"}
    params = {name: p.default for name, p in inspect.signature(import_colmap).parameters.items()
              if p.default is not inspect.Parameter.empty}
    shared = set(options) & set(params)
    assert {"test_every", "scale", "link", "force"} <= shared
    assert {name: options[name] for name in shared} == {name: params[name] for name in shared}


def test_every_sensor_effect_can_be_turned_off():
    options = _options("synth")
    for f in fields(SensorOptions):
        assert f.default is True and f"no_{f.name}" in options, f"SensorOptions.{f.name}: no --no-{f.name} option"
