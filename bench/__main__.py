"""`make bench` (`python -m bench [--only NAME ...]`): every benchmark against the bundled simulator,
then bench/results.json and docs/benchmarks.md. With --only, the named benchmarks are measured
again and the others' last figures kept."""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import tempfile
import time
import traceback
from pathlib import Path

from bench import crash, makespan, report, scale, startup, sweep, throughput
from bench.env import RESULTS, machine

BENCHMARKS = {
    "startup": startup.measure,
    "makespan": makespan.measure,
    "throughput": throughput.measure,
    "sweep": sweep.measure,
    "crash": crash.measure,
    "scale": scale.measure,
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="measure only these")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (ledgers, outputs, logs)")
    args = parser.parse_args()
    previous = json.loads(RESULTS.read_text()) if args.only and RESULTS.exists() else {}
    results = {"machine": machine(), "measured_at": datetime.datetime.now().isoformat(timespec="seconds"),
               "benchmarks": dict(previous.get("benchmarks", {}))}
    work = Path(tempfile.mkdtemp(prefix="runner-bench-"))
    try:
        for name in args.only or BENCHMARKS:
            started = time.monotonic()
            print(f"bench: {name} ...", flush=True)
            try:
                figures = BENCHMARKS[name](work / name)
            except Exception as exc:  # one broken benchmark must not lose the others' figures
                traceback.print_exc()
                figures = {"error": f"{type(exc).__name__}: {exc}"}
            figures["bench_s"] = round(time.monotonic() - started, 1)
            results["benchmarks"][name] = figures
            print(f"bench: {name} done in {figures['bench_s']} s", flush=True)
    finally:
        if args.keep:
            print(f"bench: work folder kept at {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    # With --only, the others' figures are kept: the whole benchmark is the sum of every part's time.
    results["bench_s"] = round(sum(b.get("bench_s", 0) for b in results["benchmarks"].values()), 1)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    report.write(results)
    print(report.table(results))


if __name__ == "__main__":
    main()
