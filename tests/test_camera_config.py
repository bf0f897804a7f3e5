"""The camera in the science configuration: a ``[camera]`` TOML table, checked at load.

The visit agent reads the expected detectors from the configuration the worker loaded,
so a typo there must fail at load, in one line naming the key, never mid-night.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from calibstream.camera import DEFAULT_CAMERA, Camera
from calibstream.config import Config, config_from_dict, load_config
from calibstream.errors import ConfigError

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
