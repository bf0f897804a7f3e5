"""Event sizes on the wire for one 4k×4k exposure, beside the broker's message limits.

    python benchmarks/event_sizes.py [--size 4000 4072] [--seed 3]

Simulates one exposure and its reference catalog (as benchmarks/calibrate.py does),
runs the stages in-process exactly as the science pool runs them
(``streams.runner.run``: decode, the agent's step, encode), and prints for each event
(characterized_exposure, detection, match, zeropoint), for the exposure outcome the sink
sends to the visit agent, and for failure events:

* the encoded size (Confluent framing + Avro), against ``StreamSettings.max_message_bytes``
  (the service's topics and producers, 8 MiB by default) and Kafka's defaults (producer
  ``max.request.size`` 1,048,576 bytes, broker ``message.max.bytes`` 1,048,588);
* the number of sources, the column bytes compressed (at ``streams.wire.ZLIB_LEVEL``, as
  sent) and raw;
* what the codec costs: Avro encode and decode, zlib compress and decompress of the columns
  (milliseconds, best of --repeat), and the step's whole time (the one run of the chain
  in this fresh process: the detect step pays the first-exposure costs).

The failures: a read failure (a truncated copy of the file) and, the worst case for the
failures topic, a failure on a zero-point event (a sink that cannot write: synthetic, built
with the same ``failure_output`` the sink would use); and beside them the partial match
event of an astrometry that cannot fit (the detection event with its first guess moved 10°
from every reference star: no reference stars, the catalogue handed on with its first-guess
positions). A failure event keeps its input's first 64 KiB.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from calibstream.astrometry.refcat import ingest_refcat  # noqa: E402
from calibstream.config import Config  # noqa: E402
from calibstream.io.exposure import write_exposure  # noqa: E402
from calibstream.runtime import reuse_freed_memory  # noqa: E402
from calibstream.simulate.config import SimConfig  # noqa: E402
from calibstream.simulate.survey import simulate_survey  # noqa: E402
from streams import events  # noqa: E402
from streams.codec import decode, encode  # noqa: E402
from streams.readmodel import RedisReadModel  # noqa: E402
from streams.runner import Context, Message, failure_output, run  # noqa: E402
from streams.settings import StreamSettings  # noqa: E402
from streams.topology import CALIBRATE, FAILURES  # noqa: E402
from streams.wire import ZLIB_LEVEL  # noqa: E402

KAFKA_PRODUCER_DEFAULT = 1_048_576  # max.request.size
KAFKA_BROKER_DEFAULT = 1_048_588  # message.max.bytes (and a topic's max.message.bytes)

#: (agent, the topic role it reads) down the chain, the failures' sink aside
CHAIN = tuple((s.agent, s.consumes) for s in CALIBRATE if s.consumes != FAILURES)


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def columns_of(record: object) -> Iterator[dict]:
    """Every column record ({name, dtype, data}) anywhere in an event."""
    if isinstance(record, dict):
        if {"name", "dtype", "data"} <= record.keys() and isinstance(record["data"], bytes):
            yield record
            return
        for value in record.values():
            yield from columns_of(value)
    elif isinstance(record, list):
        for value in record:
            yield from columns_of(value)


def blobs_of(record: dict) -> list[bytes]:
    """The zlib-compressed byte strings of an event: its columns and its background mesh."""
    blobs = [c["data"] for c in columns_of(record)]
    background = record.get("background")
    if isinstance(background, dict):
        blobs.append(background["values"])
    return blobs


class Row:
    def __init__(self, label: str, value: bytes, step_s: float | None, repeat: int) -> None:
        decoded = decode(value)
        record = decoded.record
        assert encode(decoded.subject, record) == value  # the bytes are the record's
        blobs = blobs_of(record)
        raw = [zlib.decompress(b) for b in blobs]
        self.label = label
        self.subject = decoded.subject
        self.size = len(value)
        self.sources = record.get("n_sources")
        self.compressed = sum(map(len, blobs))
        self.raw = sum(map(len, raw))
        self.encode_ms = best_ms(lambda: encode(decoded.subject, record), repeat)
        self.decode_ms = best_ms(lambda: decode(value), repeat)
        self.zip_ms = best_ms(lambda: [zlib.compress(r, ZLIB_LEVEL) for r in raw], repeat)
        self.unzip_ms = best_ms(lambda: [zlib.decompress(b) for b in blobs], repeat)
        self.step_s = step_s
        self.record = record


def run_step(ctx: Context, agent: str, topic: str, value: bytes, key: bytes):
    start = time.perf_counter()
    outputs = run(ctx, agent, Message(topic, 0, 0, key, value))
    return outputs, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(4000, 4072), metavar=("NX", "NY"))
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3, help="codec timings: best of")
    args = parser.parse_args()
    limit = StreamSettings().max_message_bytes
    reuse_freed_memory()  # as the science processes run
    with tempfile.TemporaryDirectory(prefix="calibstream-event-sizes-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        survey = simulate_survey(1, SimConfig(size=tuple(args.size)), seed=args.seed)
        exposure, truth = survey.exposures[0]
        path = work / "exposure.fits"
        write_exposure(exposure, path)
        survey.refcat.write(work / "refcat.fits")
        store = work / "store"
        ingest_refcat([work / "refcat.fits"], store)
        print(
            f"simulated {args.size[0]}x{args.size[1]} exposure ({path.stat().st_size / 1e6:.1f} "
            f"MB file, {len(truth.sources['x'])} true sources, {len(survey.refcat)} reference "
            f"stars) in {time.perf_counter() - start:.1f} s"
        )
        settings = StreamSettings(refcat=str(store), output_root=str(work / "out"))
        ctx = Context(settings, Config(), RedisReadModel(None), None, CALIBRATE)
        key = events.exposure_key(exposure.metadata.expid)

        # ---- the chain, as the agents run it
        value = encode(
            "characterized_exposure",
            events.characterized_exposure_event(exposure.metadata, str(path)),
        )
        rows = [Row("characterized_exposure", value, None, args.repeat)]
        inputs = {}
        for agent, topic in CHAIN:
            inputs[agent] = value
            outputs, seconds = run_step(ctx, agent, topic, value, key)
            if agent == "sink":  # its one event: the exposure's outcome, for its visit
                assert [o.role for o in outputs] in ([], ["outcomes"]), outputs
                rows[-1].sink_s = seconds
                outcome = [Row("exposure_outcome", o.value, None, args.repeat) for o in outputs]
                break
            [output] = outputs
            if output.role == FAILURES:
                raise RuntimeError(f"{agent} failed: {decode(output.value).record['reason']}")
            value = output.value
            rows.append(Row(decode(value).subject, value, seconds, args.repeat))

        # ---- failure events
        failures = outcome  # the other events, beside the chain's
        truncated = work / "truncated.fits"
        data = path.read_bytes()
        truncated.write_bytes(data[: len(data) // 2])
        bad = encode(
            "characterized_exposure",
            events.characterized_exposure_event(exposure.metadata, str(truncated)),
        )
        [output] = run_step(ctx, "detect", "exposures", bad, key)[0]
        failures.append(Row("failure: read (truncated file)", output.value, None, args.repeat))

        detection = dict(decode(inputs["astrometry"]).record)
        detection["first_guess_wcs"] = [
            {**card, "value": repr(float(card["value"]) + 10.0)}
            if card["key"] == "CRVAL2"
            else card
            for card in detection["first_guess_wcs"]
        ]
        far = encode("detection", detection)
        [output] = run_step(ctx, "astrometry", "detections", far, key)[0]
        assert output.role == "matches", output.role  # a partial calibration goes on
        failures.append(Row("match, partial (no refs)", output.value, None, args.repeat))

        message = Message("zeropoints", 0, 0, key, inputs["sink"])
        output = failure_output(
            "sink", OSError(28, "No space left on device"), message, decode(inputs["sink"]).record
        )
        failures.append(Row("failure: sink (synthetic)", output.value, None, args.repeat))

    print(
        f"\nlimits: the service's max_message_bytes {limit:,} B ({limit / 2**20:.0f} MiB); "
        f"Kafka's defaults {KAFKA_PRODUCER_DEFAULT:,} B (producer max.request.size) and "
        f"{KAFKA_BROKER_DEFAULT:,} B (broker message.max.bytes)"
    )
    head = (
        f"{'event':<31s} {'bytes':>10s} {'kB':>8s} {'% 8MiB':>7s} {'% 1MiB':>7s} "
        f"{'sources':>7s} {'cols zip':>9s} {'cols raw':>9s} {'ratio':>6s}"
    )
    print("\n" + head)
    for row in [*rows, *failures]:
        ratio = f"{row.raw / row.compressed:6.2f}" if row.compressed else f"{'-':>6s}"
        sources = "-" if row.sources is None else str(row.sources)
        print(
            f"{row.label:<31s} {row.size:10,d} {row.size / 1000:8.1f} "
            f"{row.size / limit:7.1%} {row.size / KAFKA_PRODUCER_DEFAULT:7.1%} "
            f"{sources:>7s} {row.compressed:9,d} {row.raw:9,d} {ratio}"
        )
    print("(cols: the zlib-compressed catalog, match, reference columns and background mesh;")
    print(" a failure event carries its input message as bytes, counted in its size, not here)")

    print(
        f"\n{'codec cost per event (ms)':<31s} {'encode':>8s} {'decode':>8s} {'zip':>8s} "
        f"{'unzip':>8s} {'step (s)':>9s}"
    )
    for row in rows:
        step = "-" if row.step_s is None else f"{row.step_s:.3f}"
        print(
            f"{row.label:<31s} {row.encode_ms:8.1f} {row.decode_ms:8.1f} {row.zip_ms:8.1f} "
            f"{row.unzip_ms:8.1f} {step:>9s}"
        )
    sink = getattr(rows[-1], "sink_s", None)
    if sink is not None:
        print(f"{'sink (decode zeropoint, write)':<31s} {'':>35s} {sink:9.3f}")
    made = sum(r.encode_ms + r.zip_ms for r in rows[1:])
    read = sum(r.decode_ms + r.unzip_ms for r in rows[1:])
    print(
        f"per exposure: {made:.0f} ms to build (zip + encode) the 3 downstream events, "
        f"{read:.0f} ms to read them back (decode + unzip), each once; Avro encode here "
        f"includes validating the record (the codec validates before it writes)"
    )

    zeropoint = rows[-1]
    print(f"\nlargest columns of the zeropoint event ({zeropoint.sources} sources):")
    print(f"  {'column':<24s} {'dtype':>6s} {'zip B':>9s} {'raw B':>9s} {'ratio':>6s}")
    columns = sorted(columns_of(zeropoint.record), key=lambda c: -len(c["data"]))
    for column in columns[:10]:
        raw = len(zlib.decompress(column["data"]))
        print(
            f"  {column['name']:<24s} {column['dtype']:>6s} {len(column['data']):9,d} "
            f"{raw:9,d} {raw / len(column['data']):6.2f}"
        )
    print(f"  ... {len(columns)} columns in all")
    per_source = zeropoint.size / zeropoint.sources
    print(
        f"\nzeropoint event: {per_source:.0f} B per source, so ~"
        f"{KAFKA_PRODUCER_DEFAULT / per_source:,.0f} sources reach Kafka's 1 MiB default and ~"
        f"{limit / per_source:,.0f} the service's {limit / 2**20:.0f} MiB (the simulation puts "
        f"{SimConfig().n_sources:.0f} sources per 4096² px; crowded fields hold many more)"
    )
    biggest = max(r.size for r in [*rows, *failures])
    print(
        f"\nlargest message {biggest:,} B: {biggest / limit:.1%} of max_message_bytes, "
        f"{biggest / KAFKA_PRODUCER_DEFAULT:.0%} of Kafka's 1 MiB default "
        f"({'fits' if biggest <= KAFKA_PRODUCER_DEFAULT else 'does NOT fit'} under the default)"
    )


if __name__ == "__main__":
    main()
