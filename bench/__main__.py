"""`python -m bench [NAME ...]`: run benchmarks, merge into bench/results.json, write bench/results.md.

Every benchmark but ``refresh`` and ``close`` runs against a real local broker of its own (started in a
temporary directory, removed afterwards) and real worker processes. Run them one at a time
under ``nice -n 10`` on a shared machine; sizes are flags (see --help), defaults take a few
minutes each on a 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path

from bench import close, ingest, latency, memory, readers, recovery, refresh, scaleout
from bench.live import describe_run

HERE = Path(__file__).resolve().parent
BENCHES = {"ingest": ingest, "refresh": refresh, "close": close, "latency": latency, "memory": memory,
           "recovery": recovery, "scaleout": scaleout, "readers": readers}
MODELS = ("seasonal-naive", "mqcnn", "mqtransformer")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=list(BENCHES), choices=list(BENCHES))
    parser.add_argument("--model", choices=MODELS,
                        help="default: mqtransformer for refresh, latency, memory and recovery (seasonal-naive "
                             "when checkpoints/ lacks it, said so in the results); seasonal-naive for ingest, "
                             "scaleout; mqcnn and mqtransformer for close")
    parser.add_argument("--items", type=int, help="items: refresh 1,000 per batch; close 4,000; ingest, scaleout "
                                                  "50,000 keys; latency 10,000; memory and recovery 20,000 (the "
                                                  "targets are at 100,000)")
    parser.add_argument("--events", type=int, help="ingest: events (default 300,000); scaleout: default 1,000,000")
    parser.add_argument("--table-items", default="100000,1000000",
                        help="memory: sizes at which table values are built in-process and measured")
    parser.add_argument("--reader-items", default="10000,1000000",
                        help="readers: sizes of forecasts-latest at which ForecastClient.latest() is timed")
    parser.add_argument("--lookup-items", type=int, default=2_000,
                        help="readers: items of the real worker whose HTTP lookup is timed")
    parser.add_argument("--partitions", type=int, default=4, help="of every topic")
    parser.add_argument("--closes", type=int, default=0,
                        help="memory: days the real worker closes (default 28: every ledger full)")
    parser.add_argument("--profile", type=int, default=0, metavar="SECONDS",
                        help="ingest: py-spy the worker this long from the start of the steady window and write "
                             "bench/profile-ingest.{txt,md}; latency: from the closing events of the measured close, "
                             "bench/profile-close.{txt,md} (their numbers are kept apart, marked profiled)")
    options = parser.parse_args()
    # stop like Ctrl-C on SIGTERM too, so that every worker and broker is stopped on the way out
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    path = HERE / "results.json"
    for name in options.names:
        print(f"bench {name} ...", flush=True)
        run = describe_run()
        measured = BENCHES[name].run(options)
        results = json.loads(path.read_text()) if path.exists() else {}  # re-read: merge, never overwrite
        for key, result in measured.items():
            results[key] = {**result, **run}
            print(key, json.dumps(results[key], indent=2), flush=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
        (HERE / "results.md").write_text(markdown(results))


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def markdown(results: dict) -> str:
    lines = ["# Benchmarks", "",
             "Written by `python -m bench` (see `bench/README.md`); each row's machine, commit and load "
             "are in `bench/results.json`. Throughput is given beside a reference measured in the same run "
             "on the same broker, because these machines are noisy.", ""]
    for module in BENCHES.values():
        rows = module.section(results)
        if rows:
            lines += rows + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
