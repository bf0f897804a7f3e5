"""Server subprocesses: the base class every harness service derives from.

A :class:`ServiceProcess` runs one server with its output in a log file, waits until it answers,
and stops (SIGTERM), kills (``kill -9``) or restarts it. On Linux the child gets SIGKILL when
the thread that started it dies, and whatever is still running at interpreter exit is killed,
so a killed test run leaves no orphan broker.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from streams.kafka_admin import ServiceError

HOST = "127.0.0.1"


class ServiceUnavailable(RuntimeError):
    """The service cannot run on this machine; the message says why (a test skips with it)."""


def free_port(host: str = HOST) -> int:
    """A TCP port that nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


_RUNNING: set[ServiceProcess] = set()
_RUNNING_LOCK = threading.Lock()


def _kill_leftovers() -> None:
    with _RUNNING_LOCK:
        left = list(_RUNNING)
    for service in left:
        with contextlib.suppress(Exception):
            service.kill()


atexit.register(_kill_leftovers)


def _die_with_parent_hook() -> Callable[[], None] | None:
    """Linux: a ``preexec_fn`` making the child get SIGKILL when the thread that started it dies,
    so a killed test run leaves no orphan broker. Resolved in the parent (nothing is imported
    between fork and exec); used only from the main thread, which lives as long as the run."""
    if (
        not sys.platform.startswith("linux")
        or threading.current_thread() is not threading.main_thread()
    ):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:  # pragma: no cover - runs in the child
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    return hook


class ServiceProcess:
    """A server subprocess with its output in a log file; context manager (start … close)."""

    name = "service"

    def __init__(self, workdir: str | os.PathLike[str] | None, start_timeout: float) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(
            tempfile.mkdtemp(prefix=f"calibstream-{self.name}-") if workdir is None else workdir
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_in: float | None = None  # seconds the last start took, until ready

    # -- to be provided by subclasses
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _wait_ready(self, timeout: float) -> None:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Before each start (write configuration, format storage…)."""

    def _poll_ready(
        self, ready: Callable[[], bool], what: str, timeout: float, interval: float
    ) -> None:
        """Poll ``ready`` until it holds; :class:`ServiceError` when the process exits first
        or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise ServiceError(f"{what} exited while starting")
            if ready():
                return
            time.sleep(interval)
        raise ServiceError(f"{what} was not ready after {timeout:.0f} s")

    # -- common
    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self) -> ServiceProcess:
        """Start the server and return once it answers; raises :class:`ServiceError` else."""
        if self.running:
            return self
        self._prepare()
        t0 = time.monotonic()
        preexec = _die_with_parent_hook()
        with open(self.log_path, "ab") as log:
            log.write(f"--- {self.name} start {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self._command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=self._env(),
                start_new_session=True,
                preexec_fn=preexec,
            )
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        try:
            self._wait_ready(self.start_timeout)
        except BaseException as exc:
            self.kill()
            if isinstance(exc, ServiceError):
                raise ServiceError(
                    f"{exc}\n--- last lines of {self.log_path}:\n{self.log_tail()}"
                ) from None
            raise
        self.started_in = time.monotonic() - t0
        return self

    def _reap(self) -> None:
        with _RUNNING_LOCK:
            _RUNNING.discard(self)

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM), then SIGKILL after ``timeout`` seconds."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reap()

    def kill(self) -> None:
        """``kill -9``: no shutdown at all, as a crash."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reap()

    def restart(self, *, hard: bool = True) -> ServiceProcess:
        """Kill (``hard``, ``kill -9``) or stop the server, then start it again on the same
        ports with the same working directory."""
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start()

    def close(self) -> None:
        """Stop, and remove the working directory if this object made it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {getattr(self, 'bootstrap', '')} {state}>"


class LoopbackServer(ServiceProcess):
    """A server binary listening on one loopback port (``port``: a free one by default)."""

    find_binary: Callable[[], str]

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        binary: str | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self.binary = binary or self.find_binary()
        super().__init__(workdir, start_timeout)
        self.port = port or free_port()

    @property
    def bootstrap(self) -> str:
        """``host:port`` (for aiokafka's ``bootstrap_servers``)."""
        return f"{HOST}:{self.port}"
