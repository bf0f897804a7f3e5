"""Scaling on paper: exposures per second against workers, science processes and partitions.

    python benchmarks/scaling.py [--science-cpu 1.43] [--overhead 0.064] [--peak-mb 620]
                                 [--broker-ms 0] [--detectors 189] [--cadence 30]
                                 [--check 1:0.80 2:1.09 --check-science-cpu 0.76]

The model (one exposure = one event through the chain, a science process takes an
exposure from detection to the sink in one call):

* each science process serves exposures at ``1 / (science_cpu * (1 + overhead))`` per
  second, ``overhead`` being the stream's own CPU per exposure as a fraction of the
  science (``benchmarks/stream.py``'s "every process of the stream": the events, the
  event loops, the broker and Redis, +6.4% measured);
* the parallel servers are ``min(workers * processes, partitions, cores_for_science)``: a
  partition is consumed by one worker at a time, a process by one exposure at a time, and
  ``broker_ms``: CPU per exposure of a broker on the same cores, if not in ``overhead``;
* throughput = servers / service time, as long as the exposures arrive no faster;
* memory = science processes * the peak of one exposure (+ the broker's own).

The defaults are this project's figures on a 4000x4072 exposure (``benchmarks/calibrate.py``
steady state; a worker's science process keeps freed planes for reuse: 621 MB resident after
4k exposures, ``benchmarks/worker_memory.py --size 4000 4072``, its event loop 140 MB). ``--check``
compares the model with measured throughputs (``benchmarks/stream.py``: processes:rate),
with ``--check-science-cpu`` the batch science CPU of those exposures.
"""

from __future__ import annotations

import argparse
import math


def service_seconds(science_cpu: float, overhead: float) -> float:
    """CPU seconds one science process spends per exposure."""
    return science_cpu * (1 + overhead)


def throughput(
    processes: int,
    partitions: int,
    cores: float,
    science_cpu: float,
    overhead: float,
    broker_ms: float,
) -> float:
    """Exposures per second of ``processes`` science processes (over all workers) reading
    ``partitions`` partitions on ``cores`` cores."""
    servers = min(processes, partitions)
    service = service_seconds(science_cpu, overhead)
    # CPU-bound: every exposure costs its service time plus the broker's share.
    cpu_bound = cores / (service + broker_ms / 1000)
    return min(servers / service, cpu_bound)


def camera(args: argparse.Namespace) -> list[str]:
    """What a camera of ``detectors`` detectors every ``cadence`` seconds needs."""
    rate = args.detectors / args.cadence
    service = service_seconds(args.science_cpu, args.overhead)
    busy = rate * (service + args.broker_ms / 1000)
    processes = math.ceil(rate * service / args.utilisation)
    cores = math.ceil(busy / args.utilisation)
    partitions = 1 << math.ceil(math.log2(processes))
    memory_gb = processes * args.peak_mb / 1024
    return [
        f"{args.detectors} detectors every {args.cadence:g} s: {rate:.2f} exposures/s",
        f"  CPU busy: {busy:.1f} cores ({service:.2f} s science+stream, "
        f"{args.broker_ms:g} ms broker per exposure)",
        f"  at {args.utilisation:.0%} utilisation: {processes} science processes on {cores} "
        f"cores, >= {partitions} partitions (a power of two >= the processes, so a "
        "rebalance never leaves one idle)",
        f"  memory: {processes} x {args.peak_mb:g} MB = {memory_gb:.1f} GB (+ the broker)",
        f"  one exposure's latency: ~{service:.1f} s of its {args.cadence:g} s cadence",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--science-cpu", type=float, default=1.43, help="CPU s per exposure")
    parser.add_argument("--overhead", type=float, default=0.064, help="stream CPU / science")
    parser.add_argument("--peak-mb", type=float, default=620, help="peak RSS per process")
    parser.add_argument("--broker-ms", type=float, default=0.0, help="broker CPU ms per exposure")
    parser.add_argument("--detectors", type=int, default=189)
    parser.add_argument("--cadence", type=float, default=30.0, help="seconds per visit")
    parser.add_argument("--utilisation", type=float, default=0.7)
    parser.add_argument("--check", nargs="*", default=[], metavar="PROCESSES:RATE")
    parser.add_argument("--check-science-cpu", type=float, default=None)
    args = parser.parse_args()

    print("exposures per second (model), partitions = 4, cores = processes:")
    print(f"  {'processes':>9s} {'rate':>7s} {'memory (GB)':>12s}")
    for n in (1, 2, 4, 8, 16, 32):
        rate = throughput(n, max(4, n), n, args.science_cpu, args.overhead, args.broker_ms)
        print(f"  {n:9d} {rate:7.2f} {n * args.peak_mb / 1024:12.1f}")
    print("\n" + "\n".join(camera(args)))
    if args.check:
        cpu = args.check_science_cpu or args.science_cpu
        print(f"\ncheck on this machine (2 cores, science {cpu:.2f} CPU s per exposure):")
        for item in args.check:
            n, measured = item.split(":")
            model = throughput(int(n), 4, 2.0, cpu, args.overhead, args.broker_ms)
            print(
                f"  {n} process(es): model {model:.2f}/s, measured {float(measured):.2f}/s "
                f"({float(measured) / model:.0%} of the model)"
            )


if __name__ == "__main__":
    main()
