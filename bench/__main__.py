"""`python -m bench [refresh ...]`: run benchmarks, merge into bench/results.json, write the table."""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from bench import refresh

HERE = Path(__file__).resolve().parent
BENCHES = {"refresh": refresh.run}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", default=list(BENCHES), choices=list(BENCHES))
    parser.add_argument("--model", default="mqtransformer", choices=("mqtransformer", "mqcnn"))
    parser.add_argument("--items", type=int, default=1000, help="items per refresh batch")
    args = parser.parse_args()
    path = HERE / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for name in args.names:
        print(f"bench {name} ...", flush=True)
        measured = BENCHES[name](args.model, args.items)
        measured["machine"] = f"{platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}"
        measured["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        results[f"{name}:{args.model}"] = measured
        print(json.dumps(measured, indent=2))
    path.write_text(json.dumps(results, indent=2) + "\n")
    (HERE / "results.md").write_text(table(results))


def table(results: dict) -> str:
    rows = ["| benchmark | model | items | items/s per core (incremental) | s/item at 100 days "
            "| s/item at 1,000 days | 1,000 ÷ 100 | full recompute s/item at 100 / 1,000 days "
            "| incremental speed-up at 100 / 1,000 | state bytes/item |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, r in sorted(results.items()):
        if key.startswith("refresh:"):
            rows.append(f"| refresh | {r['model']} | {r['items']:,} | {r['items_per_second_per_core']:,.0f} "
                        f"| {r['refresh_seconds_per_item_at_100']:.2e} | {r['refresh_seconds_per_item_at_1000']:.2e} "
                        f"| {r['cost_ratio_1000_vs_100']:.2f} | {r['full_recompute_seconds_per_item_at_100']:.2e} / "
                        f"{r['full_recompute_seconds_per_item_at_1000']:.2e} | {r['incremental_speedup_at_100']:.0f}× / "
                        f"{r['incremental_speedup_at_1000']:.0f}× | {r['state_bytes_per_item_at_100']:,.0f} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()
