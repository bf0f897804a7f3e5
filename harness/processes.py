"""Server subprocesses: the base class every harness service derives from.

A :class:`ServiceProcess` runs one server with its output in a log file, waits until it answers,
and stops (SIGTERM), kills (``kill -9``) or restarts it. Each runs in a session (process group)
of its own, and stopping or killing it ends the whole group: what the server started goes with
it. On Linux the child gets SIGKILL when the thread that started it dies, and whatever is still
running at interpreter exit is killed, so a killed test run leaves no orphan broker.
:func:`descendants` and :func:`alive` check that from ``/proc``; :func:`sigterm_exits` makes
SIGTERM unwind a program's ``with`` blocks (so they stop what they started), as ^C does.
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
from collections.abc import Callable, Iterator
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

Pid = tuple[int, int]
"""A process as (pid, start time in clock ticks since boot): a reused pid is another one."""


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, start time, state) of every process, from ``/proc`` (Linux)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                text = handle.read()
        except OSError:
            continue  # it exited meanwhile
        fields = text[text.rindex(")") + 2 :].split()  # from field 3 (state) on
        table[int(entry.name)] = (int(fields[1]), int(fields[19]), fields[0])
    return table


def descendants(pid: int, *, include_self: bool = False) -> set[Pid]:
    """Every living process below ``pid`` (children, theirs…), as :data:`Pid` pairs."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _, state) in table.items():
        if state != "Z":
            children.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.add((child, table[child][1]))
            todo.append(child)
    if include_self and pid in table and table[pid][2] != "Z":
        found.add((pid, table[pid][1]))
    return found


def alive(processes: set[Pid]) -> set[Pid]:
    """Those of ``processes`` still running (zombies count as gone: they only wait to be
    reaped)."""
    table = _proc_table()
    return {
        (pid, start)
        for pid, start in processes
        if pid in table and table[pid][1] == start and table[pid][2] != "Z"
    }


@contextlib.contextmanager
def sigterm_exits(status: int = 128 + signal.SIGTERM) -> Iterator[None]:
    """Inside (main thread): SIGTERM raises ``SystemExit(status)``, so the ``with`` blocks
    being run unwind and stop what they started, as on ^C; SIGTERMs after the first are
    ignored while they do (``kill -9`` still ends everything: see the die-with-parent hook)."""

    def exit_once(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(status)

    previous = signal.signal(signal.SIGTERM, exit_once)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
        self._group_left = False  # the process group of the last start may still hold some

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
        self._group_left = True
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

    def _kill_group(self) -> None:
        """SIGKILL to the server's process group (its session), the server included."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def _sweep_group(self, grace: float = 2.0) -> None:
        """After the server exited: what it left in its group gets ``grace`` seconds to
        exit (a pool's resource tracker cleaning up), then SIGKILL. Once per start: the
        group's number may be another's later."""
        assert self.proc is not None
        if not self._group_left:
            return
        self._group_left = False
        deadline = time.monotonic() + grace
        while True:
            try:
                os.killpg(self.proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                return  # the group is empty
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        self._kill_group()

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM), then SIGKILL after ``timeout`` seconds; whatever the
        server leaves running in its process group is killed too."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.proc.wait()
        self._sweep_group()
        self._reap()

    def kill(self) -> None:
        """``kill -9`` of the server and its process group: no shutdown at all, as a crash."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._kill_group()
            self.proc.wait()
        self._sweep_group(grace=0.0)
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
