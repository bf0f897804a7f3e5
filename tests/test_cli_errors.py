"""Every mistake a user can make at the command line is answered in one line, never a
traceback: an unreachable broker or Redis (exit 1, naming the URL and the setting), a bad
configuration value (exit 2, naming the key and the type), bad arguments (exit 2). Also:
``dashboard --port 0`` prints the port it got, outputs are readable by others (0755/0644),
and the image runs as a user with every dependency pinned."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
import time
import tomllib

import pytest
from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from calibstream.cli import MIN_CHIP_SIDE, main
from calibstream.config import config_from_dict
from calibstream.errors import ConfigError
from calibstream.io.fitsio import atomic_write_bytes
from calibstream.io.outputs import publish_folder
from harness.processes import free_port
from streams.settings import load_deployment


def run_cli(*argv: str, cwd=None, timeout: float = 60) -> tuple[int, list[str]]:
    """Exit code and the non-empty lines of stderr of ``python -m streams.cli ARGV``."""
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    return result.returncode, [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture
def dead() -> str:
    """A broker URL nothing listens on."""
    return f"kafka://127.0.0.1:{free_port()}"


# ---------------------------------------------------------------- services


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "exp.fits"],
        ["worker"],  # checked before faust starts: it would retry forever
        ["replay", "--from-offset", "0"],
        ["redrive"],
    ],
    ids=lambda argv: argv[0],
)
def test_an_unreachable_broker_is_one_line_naming_its_url_and_setting(tmp_path, dead, argv):
    started = time.monotonic()
    code, lines = run_cli(*argv, "--broker", dead, "--out", str(tmp_path), cwd=tmp_path)
    assert (code, len(lines)) == (1, 1), lines
    assert lines[0].startswith(f"calibstream: cannot reach the broker at {dead}"), lines
    assert "--broker" in lines[0]
    assert time.monotonic() - started < 30


def test_a_stopped_demos_configuration_names_the_file(tmp_path, dead):
    """``submit --config demo-output/stream.toml`` after the demo stopped."""
    config = tmp_path / "stream.toml"
    config.write_text(f'[stream]\nbroker = "{dead}"\n')
    code, lines = run_cli("submit", "exp.fits", "--config", str(config), cwd=tmp_path)
    assert (code, len(lines)) == (1, 1), lines
    assert dead in lines[0] and f"[stream] broker in {config}" in lines[0], lines


def test_an_unreachable_redis_is_one_line_without_its_password(tmp_path):
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    code, lines = run_cli("rebuild-read-model", "--redis", url, "--out", str(tmp_path))
    assert (code, len(lines)) == (1, 1), lines
    assert "cannot reach Redis at redis://127.0.0.1:" in lines[0] and "--redis" in lines[0]
    assert "secret" not in lines[0]


# ---------------------------------------------------------------- configuration


def test_a_bad_configuration_value_is_one_line_exit_2_before_any_broker(tmp_path, dead):
    science = tmp_path / "science.toml"
    science.write_text('[detection]\nthreshold = "five"\n')
    code, lines = run_cli("measure", "exp.fits", "--out", "o", "--config", str(science))
    assert (code, lines) == (
        2,
        ["calibstream: config: [detection] threshold: expected a number, got 'five'"],
    )
    stream = tmp_path / "stream.toml"
    stream.write_text(f'[stream]\nbroker = "{dead}"\npartitions = "four"\n')
    code, lines = run_cli("worker", "--config", str(stream))
    assert (code, lines) == (
        2,
        ["calibstream: config: [stream] partitions: expected an integer, got 'four'"],
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"detection": {"threshold": "five"}}, "[detection] threshold: expected a number"),
        ({"detection": {"threshold": True}}, "[detection] threshold: expected a number"),
        ({"detection": {"min_area": 1.5}}, "[detection] min_area: expected an integer"),
        ({"detection": {"clean": 1}}, "[detection] clean: expected true or false, got 1"),
        ({"detection": {"filter": "box"}}, "[detection] filter: expected one of 'psf', 'kernel'"),
        (
            {"detection": {"mask_planes": "BAD"}},
            "[detection] mask_planes: expected a list of strings",
        ),
        (
            {"detection": {"mask_planes": ["BAD", 3]}},
            "[detection] mask_planes: expected a list of strings",
        ),
        (
            {"detection": {"kernel": [[1, "x"]]}},
            "[detection] kernel: expected a list of lists of numbers",
        ),
        ({"measurement": {"saturation": "high"}}, "[measurement] saturation: expected a number"),
        (
            {"photometry": {"extendedness_flux": 12}},
            "[photometry] extendedness_flux: expected a string",
        ),
    ],
)
def test_each_kind_of_science_type_mistake_names_the_key_and_the_type(table, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict(table)
    assert str(info.value).startswith(f"config: {message}"), str(info.value)


def test_right_types_load_ints_as_numbers_lists_as_tuples_and_unknown_keys_still_fail():
    config = config_from_dict(
        {
            "detection": {"threshold": 4, "kernel": [[1, 2], [2, 1]], "clean": False},
            "measurement": {"saturation": 6.0e4, "aperture_radii": [3, 6.5]},
        }
    )
    assert config.detection.threshold == 4 and config.detection.kernel == ((1, 2), (2, 1))
    assert config.measurement.aperture_radii == (3, 6.5) and not config.detection.clean
    with pytest.raises(ConfigError, match="unknown keys"):
        config_from_dict({"detection": {"thresold": 4.0}})


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        ({"partitions": "4"}, "[stream] partitions: expected an integer, got '4'"),
        ({"partitions": 0}, "[stream] partitions: expected at least 1, got 0"),
        ({"chain": "yes"}, "[stream] chain: expected true or false, got 'yes'"),
        ({"redis": 6379}, "[stream] redis: expected a string, got 6379"),
        ({"session_timeout_s": "10s"}, "[stream] session_timeout_s: expected a number"),
        ({"web_port": 80.5}, "[stream] web_port: expected an integer, got 80.5"),
    ],
)
def test_each_kind_of_stream_type_mistake_names_the_key_and_the_type(tmp_path, stream, message):
    path = tmp_path / "stream.toml"
    path.write_text(
        "[stream]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in stream.items()), "utf-8"
    )
    with pytest.raises(ConfigError) as info:
        load_deployment(path)
    assert str(info.value).startswith(f"config: {message}"), str(info.value)


def test_stream_values_of_the_right_type_load_and_unknown_keys_still_fail():
    stream = load_deployment(session_timeout_s=5, redis=None, chain=False).stream
    assert stream.session_timeout_s == 5 and stream.redis is None and stream.chain is False
    with pytest.raises(ConfigError, match="unknown keys"):
        load_deployment(brokers="kafka://x:9092")


def _toml(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f'"{value}"' if isinstance(value, str) else str(value)


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["simulate", "out", "--n", "0"], "--n: must be at least 1"),
        (["simulate", "out", "--size", "10", "10"], f"at least {MIN_CHIP_SIDE} pixels a side"),
        (["simulate", "out", "--seed", "-1"], "--seed: must be at least 0"),
        (["simulate", "out", "--n", "two"], "--n: expected a whole number"),
        (["ingest-refcat", "cat.fits", "--out", "s", "--nside", "3"], "a power of 2"),
        (["worker", "--processes", "0"], "--processes: must be at least 1"),
        (["replay", "--from-time", "yesterday"], "not an ISO time"),
        (["replay", "--from-offset", "-5"], "--from-offset: must be at least 0"),
        (["dashboard", "--port", "70000"], "a port is 0 to 65535"),
        (["demo", "--n", "0"], "--n: must be at least 1"),
        (["simulate"], "required"),
        ([], "required: command"),
    ],
)
def test_bad_arguments_are_one_usage_line_exit_2(tmp_path, argv, words):
    code, lines = run_cli(*argv, cwd=tmp_path)
    assert (code, len(lines)) == (2, 1), lines
    assert words in lines[0] and "Traceback" not in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_the_smallest_chip_the_cli_accepts_simulates(tmp_path):
    side = str(MIN_CHIP_SIDE)
    assert main(["simulate", str(tmp_path), "--size", side, side, "--seed", "2"]) == 0
    assert (tmp_path / "refcat.fits").is_file()


# ---------------------------------------------------------------- dashboard port


def test_dashboard_on_port_0_prints_the_port_it_listens_on(tmp_path):
    argv = ["dashboard", "--port", "0", "--out", str(tmp_path), "--broker", "kafka://127.0.0.1:1"]
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()
        found = re.fullmatch(r"dashboard at http://127\.0\.0\.1:(\d+)/\n", line)
        assert found, line
        port = int(found[1])
        assert port != 0
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass
    finally:
        process.terminate()
        process.wait(timeout=30)


# ---------------------------------------------------------------- permissions


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_published_folders_are_0755_and_their_files_0644(tmp_path, umask_022):
    folder = publish_folder(tmp_path / "exposures" / "7", {"summary.json": b"{}\n", "a": b"x"})
    assert _mode(folder) == 0o755
    assert {p.name: _mode(p) for p in folder.iterdir()} == {"summary.json": 0o644, "a": 0o644}
    again = publish_folder(folder, {"summary.json": b"{}\n"})  # replaced, same modes
    assert _mode(again) == 0o755 and _mode(again / "summary.json") == 0o644
    atomic_write_bytes(b"SIMPLE", tmp_path / "src.fits")
    assert _mode(tmp_path / "src.fits") == 0o644


def test_the_umask_is_respected(tmp_path):
    previous = os.umask(0o027)
    try:
        folder = publish_folder(tmp_path / "x", {"summary.json": b"{}\n"})
        atomic_write_bytes(b"SIMPLE", tmp_path / "src.fits")
    finally:
        os.umask(previous)
    assert (_mode(folder), _mode(folder / "summary.json")) == (0o750, 0o640)
    assert _mode(tmp_path / "src.fits") == 0o640


# ---------------------------------------------------------------- deployment


def test_the_image_runs_as_a_user_that_is_not_root():
    users = re.findall(r"^USER\s+(\S+)", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert users, "the Dockerfile has no USER line: the image runs as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_the_lock_pins_every_dependency_and_the_installs_use_it():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        found = re.match(r"([A-Za-z0-9._-]+)==(\S+)", line)
        if found:
            pins[canonicalize_name(found[1])] = found[2]
    assert len(pins) > len(wanted)  # the transitive ones too
    for requirement in wanted:
        version = pins.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} is not pinned in requirements.lock"
        assert requirement.specifier.contains(version), (requirement, version)
    for installer in ("Dockerfile", ".ci/run"):
        assert "-c requirements.lock" in (REPO / installer).read_text(), installer
