"""Sweep of MQTransformer training recipes and configs on the development split.

Each variant: train the MQTransformer stage warm-started from checkpoints/mqcnn (MQ-CNN is
not retrained), save a checkpoint to a temp dir, load it back through
models.registry.load_model (what `mqstream evaluate --methods mqtransformer` does) and score
it on the dev split with models.backtest + models.scores.score. One process per variant, 1
torch thread each: made for a many-core machine (16 variants ran in ~6 minutes on 16 cores;
eval/mqtransformer-recipes.md holds that run).

  python eval/recipe_sweep.py --out DIR [--only a,b] [--deadline S]      # driver
  python eval/recipe_sweep.py --one NAME --out DIR ...                   # one variant (child)

Results: DIR/results.jsonl, one JSON line per stage ("trained", "eval", "error") as it finishes.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ROOT / "checkpoints"

# name -> (TrainSettings overrides, MQTransformerConfig overrides); "eval_only" evaluates a checkpoint
VARIANTS: dict[str, dict] = {
    "current-ckpt": {"eval_only": str(CHECKPOINTS / "mqtransformer")},  # the trained checkpoint, eval only
    "control": {},
    "control-seed1": {"settings": {"seed": 1}},
    "control-seed2": {"settings": {"seed": 2}},
    "smooth0.0": {"settings": {"smoothness": 0.0}},
    "smooth0.1": {"settings": {"smoothness": 0.1}},
    "smooth0.4": {"settings": {"smoothness": 0.4}},
    "epochs3": {"settings": {"epochs": 3}},
    "epochs4": {"settings": {"epochs": 4}},
    "lr5e-4": {"settings": {"lr": 5e-4}},
    "lr2e-3": {"settings": {"lr": 2e-3}},
    "opi48": {"settings": {"origins_per_item": 48}},
    "recent63": {"config": {"recent_days": 63}},
    "fbdays28": {"config": {"feedback_days": 28}},
    "heads4": {"config": {"heads": 4}},
    "fbhorizons-dense": {"config": {"feedback_horizons": [1, 2, 3, 5, 7, 10, 14, 21, 28]}},
}


def emit(out: Path, rec: dict) -> None:
    line = (json.dumps(rec) + "\n").encode()
    fd = os.open(out / "results.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one O_APPEND write per line: lines from parallel children don't interleave
    finally:
        os.close(fd)
    print("RESULT", json.dumps(rec), flush=True)


def run_one(args) -> int:
    import torch

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    sys.path.insert(0, str(ROOT))
    from dataclasses import asdict, replace

    import numpy as np

    from mqstream.models.backtest import BacktestSplit, StreamingReplay, prepare, run_method
    from mqstream.models.dataset import demand_series
    from mqstream.models.history import load_history
    from mqstream.models.scores import score
    from mqstream.models.registry import load_model
    from mqstream.models.training import TrainSettings, recipe_of, train

    name, v, out = args.one, VARIANTS[args.one], Path(args.out)
    base = {"variant": name, "settings_change": v.get("settings", {}), "config_change": v.get("config", {}),
            "threads": torch.get_num_threads(), "torch": torch.__version__}
    t0 = time.monotonic()
    history = load_history()
    tx = history.sales
    assert 1.2e9 < tx["ts"].min() < tx["ts"].max() < 1.4e9, (tx["ts"].min(), tx["ts"].max())
    load_s = time.monotonic() - t0
    if "eval_only" in v:
        ckpt = Path(v["eval_only"])
        rec = dict(base, recipe=json.loads((ckpt / "config.json").read_text())["train"].get("recipe"))
        train_s = 0.0
    else:
        kw = dict(v.get("settings", {}))
        if args.epochs is not None:
            kw["epochs"] = args.epochs
        if args.origins is not None:
            kw["origins_per_item"] = args.origins
        s = TrainSettings(warm_start=CHECKPOINTS / "mqcnn", max_items=args.max_items, **kw)
        ckpt = Path(args.ckpt_dir) / name
        t1 = time.monotonic()
        r = train("mqtransformer", args.cutoff, ckpt, s, model_config=v.get("config") or None, data=history,
                  progress=False)
        train_s = time.monotonic() - t1
        rec = dict(base, recipe=asdict(recipe_of("mqtransformer", s)), val_wql=r.val_loss,
                   history=r.history, train_s=round(train_s, 1), load_s=round(load_s, 1))
        emit(out, dict(rec, stage="trained"))
    t2 = time.monotonic()
    split = BacktestSplit.from_dates(args.cutoff, args.start, args.end)
    data = prepare(demand_series(tx), split)
    if args.eval_max_items:
        k = np.arange(min(args.eval_max_items, len(data.series.items)))
        ser = data.series
        data = replace(data, series=replace(ser, items=ser.items[k], descriptions=ser.descriptions[k],
                                            units=ser.units[k], price=ser.price[k]),
                       views=data.views[k], actuals=data.actuals[k])
    model = load_model("mqtransformer", ckpt)
    forecasts = run_method(StreamingReplay(model), data, split)
    sc = score(data.actuals, forecasts, split.quantiles)
    emit(out, dict(rec, stage="eval", train_s=round(train_s, 1), eval_s=round(time.monotonic() - t2, 1),
                   total_s=round(time.monotonic() - t0, 1), products=int(len(data.series.items)),
                   origins=int(len(data.origins)), **sc))
    return 0


def driver(args) -> int:
    import numpy, pandas, torch
    print("versions: torch", torch.__version__, "numpy", numpy.__version__, "pandas", pandas.__version__,
          "cpus", os.cpu_count(), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logs = Path(args.log_dir)
    logs.mkdir(parents=True, exist_ok=True)
    names = [n for n in (args.only.split(",") if args.only else VARIANTS) if n]
    for n in names:
        if n not in VARIANTS:
            raise SystemExit(f"unknown variant {n}")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS="1", TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    passthru = ["--out", str(out), "--cutoff", args.cutoff, "--start", args.start, "--end", args.end,
                "--threads", str(args.threads), "--ckpt-dir", args.ckpt_dir]
    for flag, val in (("--max-items", args.max_items), ("--eval-max-items", args.eval_max_items),
                      ("--epochs", args.epochs), ("--origins", args.origins)):
        if val is not None:
            passthru += [flag, str(val)]
    t0 = time.monotonic()
    procs: dict[str, subprocess.Popen] = {}
    pending = list(names)
    while pending or procs:
        while pending and len(procs) < args.jobs:
            n = pending.pop(0)
            f = open(logs / f"{n}.log", "w")
            procs[n] = subprocess.Popen([sys.executable, __file__, "--one", n, *passthru], stdout=f,
                                        stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            print(f"[{time.monotonic() - t0:6.1f}s] started {n} pid {procs[n].pid}", flush=True)
        for n, p in list(procs.items()):
            rc = p.poll()
            if rc is not None:
                print(f"[{time.monotonic() - t0:6.1f}s] {n} exited rc={rc}", flush=True)
                if rc != 0:
                    tail = (logs / f"{n}.log").read_text()[-3000:]
                    emit(out, {"variant": n, "stage": "error", "rc": rc, "log_tail": tail})
                del procs[n]
        if time.monotonic() - t0 > args.deadline:
            for n, p in procs.items():
                print(f"deadline: killing {n} pid {p.pid}", flush=True)
                p.send_signal(signal.SIGKILL)
                p.wait()
                emit(out, {"variant": n, "stage": "error", "rc": "deadline",
                           "log_tail": (logs / f"{n}.log").read_text()[-2000:]})
            procs.clear()
            break
        time.sleep(1)
    with open(out / "logs.txt", "w") as f:
        for n in names:
            p = logs / f"{n}.log"
            if p.exists():
                f.write(f"===== {n}\n{p.read_text()[-6000:]}\n")
    summarize(out)
    print(f"done in {time.monotonic() - t0:.0f}s", flush=True)
    return 0


def summarize(out: Path) -> None:
    rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines() if l.strip()] \
        if (out / "results.jsonl").exists() else []
    ev = {r["variant"]: r for r in rows if r["stage"] == "eval"}
    tr = {r["variant"]: r for r in rows if r["stage"] == "trained"}
    lines = ["| variant | wQL | 1-7 | 8-14 | 15-28 | cov80 | volatility | val wQL | train s | eval s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for n in sorted(set(ev) | set(tr), key=lambda n: ev[n]["wql"] if n in ev else 9):
        r = ev.get(n) or tr[n]
        b = r.get("wql_by_bucket", {})
        f = lambda x: f"{x:.6f}" if isinstance(x, float) else "-"
        lines.append(f"| {n} | {f(r.get('wql'))} | {f(b.get('1-7'))} | {f(b.get('8-14'))} | {f(b.get('15-28'))} | "
                     f"{f(r.get('coverage_80'))} | {f(r.get('volatility'))} | {f(r.get('val_wql'))} | "
                     f"{r.get('train_s', '-')} | {r.get('eval_s', '-')} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--one")
    p.add_argument("--out", required=True)
    p.add_argument("--only", default="")
    p.add_argument("--jobs", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--deadline", type=float, default=500)
    p.add_argument("--cutoff", default="2011-05-31")
    p.add_argument("--start", default="2011-06-01")
    p.add_argument("--end", default="2011-08-03")
    p.add_argument("--max-items", type=int, default=None)  # dry runs only
    p.add_argument("--eval-max-items", type=int, default=None)  # dry runs only
    p.add_argument("--epochs", type=int, default=None)  # dry runs only: overrides every variant
    p.add_argument("--origins", type=int, default=None)  # dry runs only
    p.add_argument("--ckpt-dir", default="/tmp/sweep-ckpt")
    p.add_argument("--log-dir", default="/tmp/sweep-logs")
    args = p.parse_args()
    return run_one(args) if args.one else driver(args)


if __name__ == "__main__":
    raise SystemExit(main())
