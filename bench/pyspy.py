"""A py-spy profile of a running worker: where its CPU goes, by function (own time) and by package.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;...;leaf count``, root
first); a sample's own time belongs to its leaf frame. Idle samples (a thread waiting in
``epoll``) are mostly left out by py-spy; those it keeps (a leaf in ``selectors``) are counted
apart as waiting, so the shares are of the time the worker was busy.
The raw file loads into speedscope.app or ``flamegraph.pl`` for a flame graph.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str:
    found = Path(sys.executable).parent / "py-spy"
    if found.exists():
        return str(found)
    if shutil.which("py-spy"):
        return shutil.which("py-spy")
    raise RuntimeError("py-spy is not installed: .venv/bin/pip install -e '.[bench]' (make bench does)")


def record(pid: int, seconds: int, out: Path, rate: int = 100) -> subprocess.Popen:
    """Start sampling ``pid`` for ``seconds`` in the background (``--function``: one entry per
    function, not per line)."""
    return subprocess.Popen([py_spy(), "record", "--pid", str(pid), "--duration", str(seconds),
                             "--rate", str(rate), "--format", "raw", "--function", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


class Recording:
    """py-spy on one process for ``seconds`` from ``start``, its collapsed stacks in ``raw``."""

    def __init__(self, seconds: int, raw: Path):
        self.seconds, self.raw = seconds, raw
        self.proc: subprocess.Popen | None = None
        self.began = 0.0

    def start(self, pid: int) -> None:
        self.proc = record(pid, self.seconds, self.raw)
        self.began = time.monotonic()

    def finish(self) -> tuple[dict, float]:
        """The summary, once py-spy is done (the process must stay up until then), and how
        many of the seconds had passed when this was called."""
        if self.proc is None:
            raise RuntimeError("the profile never started")
        covered = min(time.monotonic() - self.began, self.seconds)
        out, _ = self.proc.communicate(timeout=self.seconds + 120)
        if self.proc.returncode != 0:
            raise RuntimeError(f"py-spy failed: {out[-2000:]}")
        return summarise(read_stacks(self.raw)), covered


def read_stacks(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        head, _, count = line.rpartition(" ")
        if head and count.isdigit():
            stacks.append((head.split(";"), int(count)))
    return stacks


def package_of(frame: str) -> str:
    """faust, aiokafka, streams, asyncio, ...: the first part of the frame's file path."""
    match = FRAME.match(frame)
    path = match.group("file") if match else frame
    first = path.split("/", 1)[0]
    return first[:-3] if first.endswith(".py") else first


def is_waiting(frame: str) -> bool:
    """A thread blocked in select/poll: the event loop with nothing to do, or the metrics
    server between scrapes. py-spy does not always see these as idle."""
    return ".select (selectors.py" in frame


def summarise(stacks: list[tuple[list[str], int]], top: int = 15) -> dict:
    samples = sum(n for _, n in stacks)
    waiting = sum(n for frames, n in stacks if is_waiting(frames[-1]))
    busy = samples - waiting
    own, inclusive, packages, callers = Counter(), Counter(), Counter(), {}
    for frames, n in stacks:
        if is_waiting(frames[-1]):
            continue
        own[frames[-1]] += n
        packages[package_of(frames[-1])] += n
        callers.setdefault(frames[-1], Counter())[frames[-2] if len(frames) > 1 else "-"] += n
        for frame in set(frames):
            inclusive[frame] += n
    trunk = {f for f, n in inclusive.items() if n >= 0.6 * busy}  # run_forever and the like
    return {"samples": samples, "waiting_share": waiting / samples, "busy_samples": busy,
            "top_own": [{"function": f, "own_samples": n, "own_share": n / busy,
                         "inclusive_share": inclusive[f] / busy,
                         "called_from": callers[f].most_common(1)[0][0]} for f, n in own.most_common(top)],
            "packages": [{"package": p, "own_share": n / busy} for p, n in packages.most_common()],
            "top_inclusive": [{"function": f, "inclusive_share": n / busy}
                              for f, n in inclusive.most_common() if f not in trunk][:top + 10]}


def markdown(summary: dict, title: str, context: str) -> str:
    lines = [f"# {title}", "", context, "",
             f"{summary['samples']:,} samples, of which {summary['waiting_share']:.1%} waiting in select/poll "
             f"(the event loop idle, the metrics server between scrapes); the shares below are of the other "
             f"{summary['busy_samples']:,}. Own time: samples whose innermost frame is the function. Inclusive: "
             "samples with the function anywhere on the stack.", "",
             "## Top 15 functions by own time", "",
             "| # | function (file:first line) | own | inclusive | mostly called from |",
             "| ---: | --- | ---: | ---: | --- |"]
    for rank, row in enumerate(summary["top_own"], 1):
        lines.append(f"| {rank} | `{row['function']}` | {row['own_share']:.1%} | {row['inclusive_share']:.1%} "
                     f"| `{row['called_from']}` |")
    lines += ["", "## Own time by package (file path's first part)", "", "| package | own |", "| --- | ---: |"]
    lines += [f"| {row['package']} | {row['own_share']:.1%} |" for row in summary["packages"] if row["own_share"] >= 0.002]
    lines += ["", "## Largest inclusive shares below the event loop's trunk (call paths to read first)", "",
              "| function | inclusive |", "| --- | ---: |"]
    lines += [f"| `{row['function']}` | {row['inclusive_share']:.1%} |" for row in summary["top_inclusive"]]
    return "\n".join(lines) + "\n"
