"""Workers' HTTP lookups without Kafka: the worker's own HTTP server (streams.metrics.serve)
answering from a dict, one worker owning the items and another redirecting to it (307), as a
worker does for an item whose partition it does not own."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import orjson

from mqstream.streams.metrics import WorkerMetrics, serve

Answer = tuple[int, bytes, dict[str, str]]  # status, body, headers, as streams.lookup answers
NOT_FOUND = (404, orjson.dumps({"error": "no forecast of this item yet"}), {})


@contextmanager
def worker_answering(answer: Callable[[str], Answer]) -> Iterator[str]:
    """The URL of a worker's HTTP server whose /forecasts/... requests ``answer`` answers."""
    server = serve(WorkerMetrics(), "127.0.0.1", 0, lambda: True, answer)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def lookups(bodies: dict[str, bytes]) -> Iterator[tuple[str, str]]:
    """(URL of the worker that redirects, URL of the owner); ``bodies``: path -> the owner's
    answer, every other path 404."""
    with worker_answering(lambda path: (200, bodies[path], {}) if path in bodies else NOT_FOUND) as owner:
        with worker_answering(lambda path: (307, b"{}", {"Location": owner + path})) as redirecting:
            yield redirecting, owner


def errors_answer(item_id: str, error_messages: list[bytes]) -> bytes:
    """The body of GET /forecasts/{item}/errors (streams.lookup): the item's forecast-errors messages."""
    return orjson.dumps({"item_id": item_id, "errors": [orjson.loads(m) for m in error_messages]})
