"""Makes docs/explorer.png: the explorer's page of a real item, served by a real worker.

A local broker on a free port, one worker (seasonal-naive: its P10–P90 band comes from its own
errors of earlier weeks, so six weeks are replayed, 2011-03-01..2011-04-11), the page of the
window's best seller in headless Chromium. A few minutes of CPU; everything in a temporary
directory.

    .venv/bin/python docs/explorer_screenshot.py [OUT.png]
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import orjson
from selenium import webdriver

from mqstream.periods import day_of_iso, day_of_ts
from mqstream.models.dataset import demand_series, load_transactions
from mqstream.config import Settings
from mqstream.local_broker import LocalBroker, free_port
from mqstream.streams.offsets import group_lag
from mqstream.streams.replay import replay_events, send
from mqstream.streams.runner import spawn_worker
from mqstream.streams.topics import create_topics

FIRST, LAST = day_of_iso("2011-03-01"), day_of_iso("2011-04-11")
WIDTH = 1100  # CSS pixels of the page


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        broker = LocalBroker(Path(tmp) / "kafka", free_port())
        broker.start()
        try:
            settings = Settings(kafka_port=broker.port, model="seasonal-naive", data_dir=f"{tmp}/state",
                                metrics_port=free_port()).validate()
            create_topics(settings)
            worker = spawn_worker(settings, "w1", Path(tmp) / "worker.log")
            try:
                tx = load_transactions()
                window = tx[day_of_ts(tx["ts"]).between(FIRST, LAST)]
                series = demand_series(window, start_day=FIRST, end_day=LAST)
                item = str(series.items[np.argmax(series.units.sum(axis=1))])
                send(replay_events(FIRST, LAST, tx), settings, progress=False)
                base = f"http://127.0.0.1:{settings.metrics_port}"
                wait_for_origin(f"{base}/forecasts/{item}", LAST)
                while group_lag(settings):  # every partition closed too: the quality table is the whole run's
                    time.sleep(2)
                screenshot(f"{base}/explorer/items/{item}", out)
            finally:
                worker.terminate()
                worker.wait(60)
        finally:
            broker.stop()


def wait_for_origin(url: str, origin: int, timeout: float = 900) -> None:
    """Until the worker has forecast from ``origin`` (the replay's last day, closed by its marker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=15) as reply:
                if day_of_iso(orjson.loads(reply.read())["origin"]) == origin:
                    return
        except urllib.error.HTTPError:  # no forecast yet (404) or partitions being assigned (503)
            pass
        time.sleep(2)
    raise TimeoutError(f"{url} did not reach origin {origin} within {timeout}s")


def screenshot(url: str, out: Path) -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options, webdriver.ChromeService(shutil.which("chromedriver")))
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": False})
        driver.get(url)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",  # the whole page in one image
                               {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False})
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("explorer.png")))
