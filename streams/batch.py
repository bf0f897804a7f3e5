"""``calibstream calibrate``: the whole chain for each exposure file, in one process.

Each file becomes the characterized-exposure event ``submit`` would send, and runs
through every stage of the topology right here (:func:`streams.runner.run_chain`,
as replay does): the same steps, the same failure policy, the same bytes as the
service. Every exposure ends as a complete folder or as a failure summary with its
reason; one bad exposure, whatever it raises, never stops the others. A fault of the
machine (a read-only or full output root) is retried as the service retries it and, if
it outlasts the retries, leaves the exposure "not calibrated" (no folder, exit 1): it
is never recorded as the exposure's failure. The files are the user's own choice, so each
one's event may name its own folder whatever ``[stream] input_roots`` says, and only it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from astropy.io import fits

from calibstream.failures import TransientFailure, failure_of
from calibstream.io.exposure import read_metadata
from calibstream.io.outputs import exposure_dir, read_summary, write_failure
from streams import events
from streams.codec import encode
from streams.runner import Context, Message, run_chain

log = logging.getLogger("calibstream.batch")


def characterized_exposure(path: Path) -> tuple[int, bytes, bytes]:
    """(EXPID, key, encoded value) of a file's characterized-exposure event: the metadata of
    its primary header (a file without a readable one raises), its absolute path as URI.
    (Here, not in ``streams.worker``: the batch command never loads faust or aiokafka.)"""
    path = Path(path).resolve()
    metadata = read_metadata(path)
    record = events.characterized_exposure_event(metadata, str(path))
    return (
        metadata.expid,
        events.exposure_key(metadata.expid),
        encode("characterized_exposure", record),
    )


@dataclass(frozen=True)
class Outcome:
    path: Path
    expid: int | str
    status: (
        str  # "ok", "failed", or "not calibrated" (a fault of the machine outlasted the retries)
    )
    folder: Path
    reason: str = ""


def calibrate_file(path: Path, ctx: Context, offset: int = 0) -> Outcome:
    """Calibrate one file and persist the result (or the failure)."""
    ctx = confined_to(path, ctx)
    try:
        expid, key, value = characterized_exposure(path)
    except Exception as exc:  # no readable primary header: nothing to make an event of
        failure = failure_of(exc, "read")
        expid = expid_of_unreadable(path)
        folder = write_failure(
            ctx.root, expid, failure.stage, failure.kind, failure.reason, None,
            {"input": str(path)},
        )  # fmt: skip
        return Outcome(path, expid, "failed", folder, failure.reason)
    role = ctx.topology.stages[0].consumes
    message = Message(role, 0, offset, key, value, events.now_ms())
    folder = exposure_dir(ctx.root, expid)
    policy = ctx.settings.retry
    for attempt in range(policy.attempts + 1):
        try:
            run_chain(ctx, ctx.topology.stages[0].agent, message)
            break
        except TransientFailure as exc:  # the machine's fault: never the exposure's failure
            if attempt == policy.attempts:
                return Outcome(path, expid, "not calibrated", folder, f"machine fault: {exc}")
            log.warning("%s: waiting for the machine (%s)", path, exc)
            time.sleep(policy.delay(attempt + 1))
    summary = read_summary(folder) or {}
    status = summary.get("status", "failed")
    return Outcome(path, expid, status, folder, "" if status == "ok" else summary.get("reason", ""))


def confined_to(path: Path, ctx: Context) -> Context:
    """``ctx`` with the inputs confined to the folder of the file the user named."""
    folder = str(Path(path).resolve().parent)
    settings = dataclasses.replace(ctx.settings, input_roots=(folder,))
    return dataclasses.replace(ctx, settings=settings)


def expid_of_unreadable(path: Path) -> int | str:
    """The EXPID of a file that failed to read, if its primary header survives; else its name
    (made a safe folder name by :func:`calibstream.io.outputs.folder_name`)."""
    try:
        with fits.open(path) as hdul:
            return int(hdul[0].header["EXPID"])
    except Exception:
        return Path(path).stem
