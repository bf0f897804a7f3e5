"""The failure policy, decided once: what any exception at any stage becomes.

Batch, stream, chain and replay all ask :func:`failure_of`, so the same error ends
in the same failure summary (stage, kind, readable reason) whichever path ran it.
A calibstream error is the data's fault and says so in its own words; any other
exception is an ``internal`` failure named by its type and message.
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


def failure_of(error: BaseException, stage: str) -> Failure:
    """The failure ``error`` means when raised while running ``stage``."""
    if isinstance(error, CalibstreamError):
        reason = str(error) or error.kind
        return Failure(error.stage or stage, error.kind, reason, error.where)
    reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return Failure(stage, "internal", reason)
