"""The failure policy, decided once: what any exception at any stage becomes.

Batch, stream, chain and replay all ask :func:`failure_of`, so the same error ends
in the same way (stage, kind, readable reason) whichever path ran it. Two kinds:

* the data's fault (permanent): a calibstream error says so in its own words; any
  other exception (a bug, a singular matrix) is an ``internal`` failure named by its
  type and message. It becomes the exposure's failure event and failure summary.
* the machine's fault (transient): an OSError (a read-only or full output root, an
  unreachable input store), a MemoryError, a timeout, a dead science process. It is
  never recorded as the exposure's failure: the step is retried with back-off
  (:class:`RetryPolicy`) and, past its last try, the record is parked.
"""

from __future__ import annotations

from dataclasses import dataclass

from calibstream.errors import CalibstreamError


@dataclass(frozen=True)
class Failure:
    """Why an exposure failed, as its failure event and summary.json say it."""

    stage: str  # where it stopped: read, detect, astrometry, photometry, sink, ...
    kind: str  # the error's kind (``exposure``, ``astrometry``, ..., ``internal``)
    reason: str  # readable
    where: str | None = None  # the part of the input at fault, when known
    transient: bool = False  # the machine's fault: retry, never the exposure's failure


#: Exceptions that are the machine's fault, not the data's.
TRANSIENT = (OSError, MemoryError, TimeoutError)


class TransientFailure(Exception):
    """A step stopped on a fault of the machine; ``reason`` says what it waits for.

    Carries only strings, so it crosses from a science process to the worker."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(stage, reason)
        self.stage = stage
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.stage}: {self.reason}"


def failure_of(error: BaseException, stage: str) -> Failure:
    """The failure ``error`` means when raised while running ``stage``."""
    if isinstance(error, TransientFailure):
        return Failure(error.stage, "transient", error.reason, transient=True)
    if isinstance(error, CalibstreamError):
        reason = str(error) or error.kind
        return Failure(error.stage or stage, error.kind, reason, error.where)
    reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    if isinstance(error, TRANSIENT):
        return Failure(stage, "transient", reason, transient=True)
    return Failure(stage, "internal", reason)


@dataclass(frozen=True)
class RetryPolicy:
    """How long a step waits out the machine's faults: ``attempts`` tries after the
    first, ``first_s`` apart, doubling up to ``max_s``; then the record is parked."""

    attempts: int = 8
    first_s: float = 1.0
    max_s: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try ``attempt`` (1 = the first retry)."""
        return min(self.max_s, self.first_s * 2 ** (attempt - 1))
