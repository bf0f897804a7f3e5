"""Where the visit agent keeps each visit's state between events.

Live, in a faust table keyed by visit, backed by its changelog topic: a worker that dies
loses nothing, its successor recovers the table and resumes (:class:`TableVisitStore`).
The batch command and replay keep it in the visits' folders, which hold the same state
(:class:`FolderVisitStore`), so a replay folds into what is already there and a second
run changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from calibstream.io.visits import read_visit, visit_dir
from calibstream.visit import VisitState


@dataclass(frozen=True)
class VisitRecord:
    """What is kept of a visit: its state, whether its timeout has passed with detectors
    missing, when its first detector arrived (ms, wall clock: only the timeout reads it),
    and the SHA-256 of the last summary sent (a redelivered outcome sends nothing again)."""

    state: VisitState
    timed_out: bool = False
    first_ms: int = 0
    sent: str | None = None

    def to_json(self) -> bytes:
        data = {"state": self.state.to_dict(), "timed_out": self.timed_out,
                "first_ms": self.first_ms, "sent": self.sent}  # fmt: skip
        return json.dumps(data, sort_keys=True, allow_nan=False).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> VisitRecord:
        d = json.loads(data)
        state = VisitState.from_dict(d["state"])
        return cls(state, bool(d["timed_out"]), int(d["first_ms"]), d.get("sent"))


class VisitStore(Protocol):
    def get(self, visit: int) -> VisitRecord | None: ...

    def put(self, visit: int, record: VisitRecord) -> None: ...

    def flush(self) -> None:
        """Make the puts durable (called once what the step made is delivered)."""
        ...

    def visits(self) -> list[int]:
        """The visits kept here (the timeout looks through them)."""
        ...


class FolderVisitStore:
    """The visits' folders as the store: the step writes them, so ``put`` only remembers
    which visits this run touched (the batch command times those out at its end)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.touched: dict[int, VisitRecord] = {}

    def get(self, visit: int) -> VisitRecord | None:
        if visit in self.touched:
            return self.touched[visit]
        state, summary = read_visit(self.root, visit)
        if state is None:
            return None
        sent = None
        if summary is not None:  # the digest of the bytes sent: summary.json's own
            data = (visit_dir(self.root, visit) / "summary.json").read_bytes()
            sent = hashlib.sha256(data).hexdigest()
        return VisitRecord(state, bool(summary and summary.get("timed_out")), sent=sent)

    def put(self, visit: int, record: VisitRecord) -> None:
        self.touched[visit] = record

    def flush(self) -> None:
        """Nothing to do: the folders are the state, written by the step."""

    def visits(self) -> list[int]:
        return sorted(self.touched)


class TableVisitStore:
    """A faust table (the visit as decimal ASCII, as its messages' key -> the record's
    JSON) as the store; every ``put`` goes to the table's changelog."""

    def __init__(self, table: MutableMapping[bytes, bytes]) -> None:
        self.table = table
        self._pending: dict[bytes, bytes] = {}

    def get(self, visit: int) -> VisitRecord | None:
        key = str(int(visit)).encode()
        data = self._pending.get(key, self.table.get(key))
        return None if data is None else VisitRecord.from_json(data)

    def put(self, visit: int, record: VisitRecord) -> None:
        """Kept here until :meth:`flush`: the agent writes the table once what the step
        made is delivered, so a worker killed between the two sends it again (at least
        once) rather than never."""
        self._pending[str(int(visit)).encode()] = record.to_json()

    def flush(self) -> None:
        for key, value in self._pending.items():
            self.table[key] = value
        self._pending.clear()

    def visits(self) -> list[int]:
        return sorted(int(k) for k in list(self.table.keys()))
