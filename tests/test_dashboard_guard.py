"""The dashboard's guard (streams/dashboard_guard.py): it will not listen beyond loopback
without a token, it answers only for its own Host names, and with a token every route asks
for it (a bearer header, or the cookie a browser gets from ``/?token=...`` once)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from calibstream.config import Config
from harness.processes import free_port
from streams.cli import main as cli_main
from streams.dashboard import build_app
from streams.dashboard_guard import (
    COOKIE,
    TOKEN_ENV,
    GuardError,
    is_loopback,
    make_guard,
    read_token,
)
from streams.monitor import Monitor
from streams.readmodel import RedisReadModel
from streams.settings import StreamSettings, write_stream_config

TOKEN = "correct-horse-battery-staple-0123456789"
ROUTES = (
    "/",
    "/exposure/1",
    "/static/common.js",
    "/api/summary",
    "/api/exposures",
    "/api/exposures/1",
    "/api/exposures/1/quality",
    "/api/lag",
    "/api/events",
    "/metrics",
)


@pytest.fixture(autouse=True)
def no_token_in_the_environment(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv("CALIBSTREAM_DASHBOARD_HOSTS", raising=False)


def run(app, calls):
    async def go():
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            return await calls(client)

    return asyncio.run(go())


def app_with(tmp_path, stream: StreamSettings, host: str = "127.0.0.1", token: str | None = None):
    monitor = Monitor(RedisReadModel(None), tmp_path, Config().colorterms)
    return build_app(monitor, guard=make_guard(stream, host, token))


async def status_of(client, path: str, **headers: str) -> int:
    response = await client.get(path, headers=headers, allow_redirects=False)
    status = response.status
    response.close()  # /api/events would stream on
    return status


# ---------------------------------------------------------------- starting


def test_it_will_not_listen_beyond_loopback_without_a_token(capsys, tmp_path):
    config = write_stream_config(tmp_path / "s.toml", output_root=str(tmp_path))
    for host in ("0.0.0.0", "::", "192.0.2.7", "dashboard"):
        assert cli_main(["dashboard", "--config", str(config), "--host", host]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "without a token" in err, err
    assert cli_main(["dashboard", "--config", str(config), "--token", "short"]) == 2
    assert "too short" in capsys.readouterr().err
    required = write_stream_config(
        tmp_path / "r.toml", output_root=str(tmp_path), dashboard_require_token=True
    )
    assert cli_main(["dashboard", "--config", str(required)]) == 2  # asked for on loopback
    assert "on loopback without a token" in capsys.readouterr().err
    missing = ["--token-file", str(tmp_path / "nonesuch")]
    assert cli_main(["dashboard", "--config", str(config), "--host", "0.0.0.0", *missing]) == 2
    assert "cannot read the dashboard token file" in capsys.readouterr().err


def test_the_token_comes_from_a_file_the_command_line_the_environment_or_the_config(
    tmp_path, monkeypatch
):
    stream = StreamSettings(dashboard_token="from-the-config-file-0001")
    assert read_token(stream) == "from-the-config-file-0001"
    monkeypatch.setenv(TOKEN_ENV, "from-the-environment-0001")
    assert read_token(stream) == "from-the-environment-0001"
    assert read_token(stream, token="from-the-command-line-01") == "from-the-command-line-01"
    (tmp_path / "secret").write_text("from-a-docker-secret-0001\n")
    assert read_token(stream, "x", str(tmp_path / "secret")) == "from-a-docker-secret-0001"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("127.0.0.2") and not is_loopback("0.0.0.0") and not is_loopback("")
    with pytest.raises(GuardError):
        make_guard(StreamSettings(), "10.0.0.1", None)
    assert make_guard(StreamSettings(), "10.0.0.1", TOKEN).token == TOKEN
    assert make_guard(StreamSettings(), "127.0.0.1", None).token is None


def test_a_dashboard_process_that_asks_for_the_token_on_loopback(tmp_path):
    config = write_stream_config(
        tmp_path / "s.toml",
        broker=f"kafka://127.0.0.1:{free_port()}",
        output_root=str(tmp_path),
        dashboard_require_token=True,
    )
    port = free_port()
    argv = [sys.executable, "-m", "streams.cli", "dashboard", "--config", str(config)]
    env = {**os.environ, TOKEN_ENV: TOKEN}
    process = subprocess.Popen([*argv, "--port", str(port)], env=env, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert process.poll() is None, process.stderr.read()
                time.sleep(0.1)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 401
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
        text = urllib.request.urlopen(request, timeout=10).read().decode()
        assert any(f.name == "calibstream_redis_up" for f in text_string_to_metric_families(text))
    finally:
        process.terminate()
        process.wait(30)


# ---------------------------------------------------------------- the Host check


def test_only_its_own_host_names_are_answered(tmp_path, monkeypatch):
    monkeypatch.setenv("CALIBSTREAM_DASHBOARD_HOSTS", "calib.example.org, other.example")
    stream = StreamSettings(dashboard_hosts=("Dashboard",))
    app = app_with(tmp_path, stream, host="192.0.2.7", token=TOKEN)
    bearer = {"Authorization": f"Bearer {TOKEN}"}

    async def calls(client):
        answers = {}
        for host in (
            "localhost:8080", "127.0.0.1", "[::1]:80", "192.0.2.7:8765", "dashboard:8080",
            "calib.example.org.", "OTHER.example", "evil.example", "127.0.0.1.nip.io",
            "localhost.evil.example", "[::2]",
        ):  # fmt: skip
            answers[host] = await status_of(client, "/api/lag", Host=host, **bearer)
        return answers

    answers = run(app, calls)
    refused = {"evil.example", "127.0.0.1.nip.io", "localhost.evil.example", "[::2]"}
    assert {h for h, status in answers.items() if status == 421} == refused, answers
    assert all(status == 200 for h, status in answers.items() if h not in refused), answers


def test_a_request_without_a_host_header_is_refused(tmp_path):
    app = app_with(tmp_path, StreamSettings())

    async def calls(client):
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        writer.write(b"GET /api/lag HTTP/1.0\r\n\r\n")
        await writer.drain()
        status = (await reader.readline()).decode()
        writer.close()
        return status

    assert " 421 " in run(app, calls)


# ---------------------------------------------------------------- the token


def test_every_route_asks_for_the_token(tmp_path):
    app = app_with(tmp_path, StreamSettings(dashboard_require_token=True), token=TOKEN)

    async def calls(client):
        found = {}
        for path in ROUTES:
            found[path] = (
                await status_of(client, path),
                await status_of(client, path, Authorization=f"Bearer {TOKEN}x"),
                await status_of(client, path, Authorization=f"Basic {TOKEN}"),
                await status_of(client, path, Cookie=f"{COOKIE}={TOKEN}"),
                await status_of(client, path, Authorization=f"Bearer {TOKEN}"),
            )
        return found

    for path, (bare, wrong, basic, raw_cookie, right) in run(app, calls).items():
        assert (bare, wrong, basic, raw_cookie) == (401, 401, 401, 401), path
        assert right in (200, 404), path  # exposure 1 does not exist


def test_a_browser_gets_a_cookie_from_the_token_in_the_url_once(tmp_path):
    app = app_with(tmp_path, StreamSettings(dashboard_require_token=True), token=TOKEN)

    async def calls(client):
        wrong = await status_of(client, "/?token=guess")
        first = await client.get(f"/?band=r&token={TOKEN}", allow_redirects=False)
        cookie = first.cookies[COOKIE]
        first.close()
        statuses = {path: await status_of(client, path) for path in ROUTES}  # the cookie jar
        events = await client.get("/api/events")
        line = (await events.content.readline()).decode()
        events.close()
        client.session.cookie_jar.clear()
        after = await status_of(client, "/api/summary")
        return wrong, first, cookie, statuses, line, after

    wrong, first, cookie, statuses, line, after = run(app, calls)
    assert wrong == 401
    assert first.status == 303 and first.headers["Location"] == "/?band=r"  # token gone
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert TOKEN not in cookie.value  # derived from the token, not the token
    assert all(status in (200, 404) for status in statuses.values()), statuses
    assert line.startswith("event: ") and after == 401
