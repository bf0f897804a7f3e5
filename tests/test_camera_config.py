"""The camera in the science configuration: a ``[camera]`` TOML table, checked at load.

The visit agent reads the expected detectors from the configuration the worker loaded,
so a typo there must fail at load, in one line naming the key, never mid-night.
"""

from __future__ import annotations

import json
import pickle
import tomllib
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from calibstream.camera import DEFAULT_CAMERA, Camera, grid_camera
from calibstream.cli import main
from calibstream.config import Config, camera_toml, config_from_dict, load_config
from calibstream.errors import ConfigError
from calibstream.simulate.truth import read_truth

CAMERA_2X2 = """
[camera]
name = "sim2x2"

[[camera.detectors]]
id = 0
x = -1074.0
y = -1074.0

[[camera.detectors]]
id = 1
x = 1074.0
y = -1074.0
rotation = 0.5

[[camera.detectors]]
id = 2
x = -1074
y = 1074
nx = 1024
ny = 1024

[[camera.detectors]]
id = 3
x = 1074.0
y = 1074.0
"""


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "calibstream.toml"
    path.write_text(text)
    return load_config(path)


def test_default_config_holds_the_default_camera() -> None:
    config = Config()
    assert config.camera == DEFAULT_CAMERA
    assert len(config.camera.expected) == 9


def test_a_2x2_camera_loads_from_toml(tmp_path: Path) -> None:
    config = _load(tmp_path, CAMERA_2X2 + "\n[detection]\nthreshold = 6.0\n")
    assert isinstance(config.camera, Camera)
    assert config.camera.name == "sim2x2"
    assert config.camera.expected == frozenset({0, 1, 2, 3})
    assert config.camera.detector(1).rotation == 0.5
    assert config.camera.detector(2).x == -1074.0 and config.camera.detector(2).nx == 1024
    assert config.camera.detector(3).nx == 2048  # the default size
    assert config.detection.threshold == 6.0


def test_config_with_a_camera_crosses_to_processes(tmp_path: Path) -> None:
    """Sent to science processes: pickled, and equal on arrival."""
    config = _load(tmp_path, CAMERA_2X2)
    again = pickle.loads(pickle.dumps(config))
    assert again == config and again.camera == config.camera
    assert hash(again.camera) == hash(config.camera)
    assert config != Config()


def test_config_without_camera_table_is_unchanged(tmp_path: Path) -> None:
    assert _load(tmp_path, "[detection]\nthreshold = 5.0\n") == Config()


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ({"name": "c", "detectors": [{"id": "a", "x": 0, "y": 0}]}, "field 'id'"),
        ({"name": "c", "detectors": [{"id": 0, "x": "0", "y": 0}]}, "field 'x'"),
        ({"name": "c", "detectors": [{"id": 0, "x": 0, "y": 0, "nx": 1.5}]}, "field 'nx'"),
        ({"name": "c", "detectors": [{"id": 0, "x": 0, "y": 0, "rotation": True}]}, "'rotation'"),
        ({"name": "c", "detectors": [{"id": 0, "x": 0}]}, "missing field 'y'"),
        ({"name": "c", "detectors": [{"id": 0, "x": 0, "y": 0, "z": 1}]}, "['z']"),
        ({"name": 3, "detectors": [{"id": 0, "x": 0, "y": 0}]}, "field 'name'"),
        ({"name": "c"}, "field 'detectors'"),
        ({"name": "c", "detectors": [], "lens": 1}, "['lens']"),
        (
            {"name": "c", "detectors": [{"id": 4, "x": 0, "y": 0}, {"id": 4, "x": 9, "y": 0}]},
            "duplicate detector id(s) [4]",
        ),
        ("sim3x3", "expected a table"),
    ],
)
def test_a_bad_camera_is_a_one_line_error_naming_the_key(table: object, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"camera": table})
    message = str(info.value)
    assert message.startswith("config: [camera]"), message
    assert named in message, message
    assert "\n" not in message


def test_duplicate_ids_in_toml_name_the_camera_and_ids(tmp_path: Path) -> None:
    text = CAMERA_2X2.replace("id = 3", "id = 1")
    with pytest.raises(ConfigError, match=r"\[camera\] camera 'sim2x2': duplicate .*\[1\]"):
        _load(tmp_path, text)


def test_camera_toml_gives_the_camera_back() -> None:
    """What ``simulate --visits`` and the demo write beside the visits loads as their camera."""
    camera = grid_camera(2, size=(300, 200), name='odd "name"')
    assert config_from_dict(tomllib.loads(camera_toml(camera))).camera == camera
    assert config_from_dict(tomllib.loads(camera_toml(DEFAULT_CAMERA))).camera == DEFAULT_CAMERA


def test_simulate_visits_writes_whole_visits_and_one_refcat(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sim"
    argv = ["simulate", str(out), "--visits", "2", "--camera-grid", "2", "--size", "160", "128"]
    code = main([*argv, "--bad-detectors", "1", "--missing-detectors", "3", "--seed", "4"])
    assert code == 0
    printed = capsys.readouterr().out.split()
    names = sorted(p.name for p in out.iterdir())
    assert sorted(Path(p).name for p in printed) == names
    expids = [1000, 1001, 1002, 2000, 2001, 2002]  # detector 3 missing from both visits
    assert [n for n in names if n.endswith(".fits") and ".truth" not in n] == [
        *(f"exp_{e}.fits" for e in expids),
        "refcat.fits",
    ]
    with fits.open(out / "exp_2002.fits") as hdul:
        header = hdul[0].header
        assert (header["EXPID"], header["VISIT"], header["DETECTOR"]) == (2002, 2, 2)
    assert (out / "exp_1001.fits").stat().st_size < (out / "exp_1000.fits").stat().st_size
    camera = load_config(out / "camera.toml").camera
    assert camera.name == "sim2x2" and camera.expected == {0, 1, 2, 3}
    assert camera.detector(0).nx == 160 and camera.detector(0).ny == 128
    truths = [json.loads((out / f"visit_{v}.truth.json").read_text()) for v in (1, 2)]
    assert truths[0]["boresight"] != truths[1]["boresight"]  # a field per visit
    assert truths[0]["transparency"] != truths[1]["transparency"]
    refcat = Table.read(out / "refcat.fits")
    assert len(np.unique(refcat["id"])) == len(refcat)  # ingest needs unique ids
    known = set(refcat["id"].tolist())
    for expid in expids:  # every truth star in the refcat is the refcat's, by id
        ref_id = read_truth(out / f"exp_{expid}.truth.fits").sources["ref_id"]
        assert set(ref_id[ref_id >= 0].tolist()) <= known


def test_simulate_without_visits_is_unchanged(tmp_path: Path) -> None:
    assert main(["simulate", str(tmp_path), "--size", "128", "128"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "exp_1000.fits",
        "exp_1000.truth.fits",
        "refcat.fits",
    ]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--bad-detectors", "1"], "--bad-detectors only with --visits"),
        (["--camera-grid", "2"], "--camera-grid only with --visits"),
        (["--visits", "1", "--n", "2"], "--n (exposures) or --visits"),
        (["--visits", "0"], "--visits: must be at least 1"),
        (["--visits", "1", "--bad-detectors", "9"], "[9] not in the 3x3 camera (0..8)"),
        (["--visits", "1", "--camera-grid", "2", "--missing-detectors", "4"], "[4] not in"),
        (["--visits", "1", "--bad-detectors", "2", "--missing-detectors", "2"], "both bad"),
        (["--visits", "1", "--camera-grid", "32"], "--camera-grid: at most 31"),
        (["--visits", "1", "--camera-grid", "0"], "--camera-grid: must be at least 1"),
        (["--visits", "1", "--bad-detectors", "x"], "expected a whole number"),
    ],
)
def test_simulate_visits_bad_arguments_are_one_line(
    tmp_path: Path, capsys, args: list[str], said: str
) -> None:
    try:
        code = main(["simulate", str(tmp_path / "never"), *args])
    except SystemExit as exc:  # argparse's own checks
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert said in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "never").exists()
