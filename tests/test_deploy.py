"""docker-compose.yml (the production shape) agrees with the configuration its workers read."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import REPO

from streams.settings import load_deployment


def test_compose_creates_every_topic_the_workers_use_with_their_partitions():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    deployment = load_deployment(REPO / "deploy" / "stream.toml")
    stream = deployment.stream
    script = compose["services"]["topics"]["command"][0]
    roles = re.search(r"for role in ([a-z ]+); do", script).group(1).split()
    created = {f"calibstream.{role}" for role in roles}
    assert created == set(deployment.topics)
    assert f"--partitions {stream.partitions}" in script
    assert f"max.message.bytes={stream.max_message_bytes}" in script
    worker = compose["services"]["worker"]
    config = worker["command"][worker["command"].index("--config") + 1]
    assert any(
        v.endswith(f":{config}:ro") and v.startswith("./deploy/stream.toml")
        for v in worker["volumes"]
    )
    assert stream.broker == "kafka://kafka:9092" and stream.redis.startswith("redis://redis:")


def test_every_service_command_is_one_the_cli_accepts():
    from streams.cli import build_parser

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for name in ("worker", "dashboard"):
        args = build_parser().parse_args(compose["services"][name]["command"])
        assert args.func.__name__ == f"_{name}"
    dashboard = build_parser().parse_args(compose["services"]["dashboard"]["command"])
    published = compose["services"]["dashboard"]["ports"][0].split(":")[-1]
    assert (dashboard.host, str(dashboard.port)) == ("0.0.0.0", published)


def _redis_options(service: dict) -> dict[str, str]:
    """``--name value`` pairs of a redis-server command."""
    command = service["command"]
    assert command[0] == "redis-server"
    return {command[i][2:]: command[i + 1] for i in range(1, len(command), 2)}


def test_only_the_shard_cache_is_evictable_and_the_read_model_persists():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    stream = load_deployment(REPO / "deploy" / "stream.toml").stream
    model = _redis_options(services["redis"])
    assert model["maxmemory-policy"] == "noeviction" and model["appendonly"] == "yes"
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"]), "AOF on a volume"
    cache = _redis_options(services["redis-cache"])
    assert cache["maxmemory-policy"] == "allkeys-lru" and cache["maxmemory"]
    assert stream.redis.startswith("redis://redis:")
    assert stream.cache_redis.startswith("redis://redis-cache:")
    assert {"redis", "redis-cache"} <= set(services["worker"]["depends_on"])
    for name, service in services.items():  # Redis has no password: never on the host
        if service.get("image", "").startswith("redis"):
            assert "ports" not in service, f"{name} publishes a Redis port"


def test_the_dashboard_is_published_on_loopback_and_asks_for_a_token_from_a_secret(
    tmp_path, monkeypatch
):
    """The dashboard listens on the container's every address, so it needs its token: a
    Docker secret from a file outside the repository that compose refuses to start without;
    it is published on the host's loopback unless said otherwise; nothing else is published."""
    from streams.cli import build_parser
    from streams.dashboard_guard import GuardError, make_guard, read_token

    text = (REPO / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    service = compose["services"]["dashboard"]
    args = build_parser().parse_args(service["command"])
    assert args.host == "0.0.0.0" and args.token is None  # no token on a command line
    [secret] = service["secrets"]
    assert args.token_file == f"/run/secrets/{secret}"
    source = compose["secrets"][secret]["file"]
    assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", source), "a required variable, not a path"
    assert service["ports"] == ["${CALIBSTREAM_DASHBOARD_PUBLISH:-127.0.0.1}:8080:8080"]
    assert "dashboard" in service["environment"]["CALIBSTREAM_DASHBOARD_HOSTS"].split(",")
    published = {name for name, s in compose["services"].items() if "ports" in s}
    assert published == {"dashboard"}
    for name, s in compose["services"].items():  # no token written anywhere in compose
        assert not any("TOKEN" in key for key in s.get("environment", {})), name
    assert "token" not in (REPO / "deploy" / "stream.toml").read_text().lower()

    # As the container runs it: refused without the secret's file, served with it.
    monkeypatch.delenv("CALIBSTREAM_DASHBOARD_TOKEN", raising=False)
    monkeypatch.delenv("CALIBSTREAM_DASHBOARD_HOSTS", raising=False)
    stream = load_deployment(REPO / "deploy" / "stream.toml").stream
    missing = str(tmp_path / "nonesuch")
    with pytest.raises(GuardError, match="cannot read"):
        make_guard(stream, args.host, read_token(stream, args.token, missing))
    with pytest.raises(GuardError, match="without a token"):
        make_guard(stream, args.host, read_token(stream.__class__(), None, None))
    (tmp_path / "token").write_text("0123456789abcdef0123456789abcdef\n")
    guard = make_guard(stream, args.host, read_token(stream, None, str(tmp_path / "token")))
    assert guard.token == "0123456789abcdef0123456789abcdef"
    assert guard.host_allowed("localhost:8080") and not guard.host_allowed("evil.example")
