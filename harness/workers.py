"""calibstream's own processes as subprocesses: a worker and the dashboard."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import uuid
from pathlib import Path

from harness.processes import HOST, ServiceProcess, free_port
from streams.kafka_admin import port_open
from streams.settings import write_stream_config


class WorkerProcess(ServiceProcess):
    """``calibstream worker --config FILE`` as a subprocess: ready once its science pool is
    up and the group has given it partitions (the first exposure then meets no start-up)."""

    name = "worker"
    READY = ("science pool ready", "Setting newly assigned partitions")

    def __init__(
        self,
        config: str | os.PathLike[str],
        workdir: str | os.PathLike[str] | None = None,
        *,
        start_timeout: float = 90.0,
    ) -> None:
        super().__init__(workdir, start_timeout)
        self.config = Path(config).resolve()

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "streams.cli", "worker", "--config", str(self.config)]

    def _wait_ready(self, timeout: float) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0

        def ready() -> bool:
            with open(self.log_path, "rb") as log:
                log.seek(max(0, offset - 200))
                text = log.read().decode(errors="replace")
            return all(mark in text for mark in self.READY)

        self._poll_ready(ready, "the worker", timeout, 0.1)

    def kill(self) -> None:
        """``kill -9`` the worker and its science processes (its whole session)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        super().kill()


class DashboardProcess(ServiceProcess):
    """``calibstream dashboard --config FILE --port P`` as a subprocess: ready when it
    answers HTTP on its port."""

    name = "dashboard"

    def __init__(
        self,
        config: str | os.PathLike[str],
        workdir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        super().__init__(workdir, start_timeout)
        self.config = Path(config).resolve()
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def _command(self) -> list[str]:
        return [
            *(sys.executable, "-m", "streams.cli", "dashboard"),
            *("--config", str(self.config), "--host", HOST, "--port", str(self.port)),
        ]

    def _wait_ready(self, timeout: float) -> None:
        self._poll_ready(lambda: port_open(HOST, self.port), "the dashboard", timeout, 0.1)


def own_config(work: Path, broker_url: str, store: Path, letter: str = "t", **stream) -> Path:
    """``work/stream.toml``: topics and a consumer group of its own on ``broker_url``, the
    output root ``work/out``, one science process, a 6 s session; ``stream`` on top."""
    prefix = f"{letter}{uuid.uuid4().hex[:8]}."
    settings = dict(
        broker=broker_url, refcat=str(store), output_root=str(work / "out"),
        app_id=prefix + "app", topic_prefix=prefix, session_timeout_s=6.0,
        science_processes=1,
    )  # fmt: skip
    return write_stream_config(work / "stream.toml", **{**settings, **stream})
