"""docker-compose.yml (the production shape) agrees with the configuration its workers read."""

from __future__ import annotations

import re

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
