"""Scale-out: events per second with one worker, and with two in one group, on the same partitions.

One topic of sale events on one open day (no day closes, as in ``ingest``) is read three
times from the beginning, each by a group of its own: a bare aiokafka consumer (the
reference), one worker, then two workers started together. Two workers split the
partitions between them and each also keeps a standby copy of the other's tables (faust's
default, one standby replica), which is part of what a second worker costs: a third run
has two workers without standbys (``standby_replicas = 0``).

The rate is the sum of the workers' ``mqstream_events_consumed_total`` over the window where
all of them consume (from 10% of the events in, once every worker has some, to the moment
the first worker has 90% of its final count). Events handled twice after the rebalance are
counted in that sum and reported apart (``redelivered``).
"""
from __future__ import annotations

from bench import synthetic
from bench.live import bare_consumer_rate, follow, local_broker, running, steady_rate, total, wait_committed
from mqstream.streams.replay import send
from mqstream.streams.topics import create_topics


def run(options) -> dict[str, dict]:
    # a million: at ~20,000 events/s a shorter run ends for one worker before the second has joined
    events = options.events or 1_000_000
    items = options.items or 50_000
    model = options.model or "seasonal-naive"
    with local_broker(model, options.partitions) as rig:
        topics = rig.fresh()
        create_topics(topics)
        send(synthetic.sales_in_one_day(synthetic.catalogue(items), events), topics, close_last_period=False,
             progress=False)
        bare = bare_consumer_rate(topics, topics.topic("sales"))
        runs = {}
        for n, standbys in ((1, 1), (2, 1), (2, 0)):
            # the same topics, a new group
            settings = rig.fresh(topic_prefix=topics.topic_prefix, standby_replicas=standbys)
            with running(settings, *[f"w{k}" for k in range(1, n + 1)]) as workers:
                follow(workers, lambda ws: total(ws) >= events, timeout=events / 100 + 600, interval=0.25)
                committed = wait_committed(settings)
                for w in workers:
                    w.sample()
                steady = steady_rate(workers, events)
                runs[n, standbys] = {**steady, "all_offsets_committed": committed,
                           "consumed_per_worker": [w.consumed() for w in workers],
                           "redelivered": total(workers) - events,
                           "worker_start_hangs": sum(w.hangs for w in workers)}
    one, two = runs[1, 1]["events_per_second"], runs[2, 1]["events_per_second"]
    two_alone = runs[2, 0]["events_per_second"]
    result = {"model": model, "events": events, "items": items, "partitions": topics.partitions,
              "one_worker_events_per_second": one, "two_workers_events_per_second": two,
              "two_to_one": two / one, "bare_events_per_second": bare["events_per_second"],
              "one_worker_to_bare": one / bare["events_per_second"],
              "two_workers_to_bare": two / bare["events_per_second"],
              "two_workers_no_standby_events_per_second": two_alone, "two_no_standby_to_one": two_alone / one,
              "one_worker": runs[1, 1], "two_workers": runs[2, 1], "two_workers_no_standby": runs[2, 0]}
    return {f"scaleout:{model}:{events}": result}


def section(results: dict[str, dict]) -> list[str]:
    found = {k: r for k, r in sorted(results.items()) if k.startswith("scaleout:")}
    if not found:
        return []
    rows = ["## Scale-out: one worker and two in one group, same partitions", "",
            "| model | events | items | partitions | 1 worker events/s | 2 workers events/s | 2 ÷ 1 "
            "| bare consumer events/s | 1 ÷ bare | 2 ÷ bare | 2 without standbys events/s | that ÷ 1 |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in found.values():
        rows.append(f"| {r['model']} | {r['events']:,} | {r['items']:,} | {r['partitions']} "
                    f"| {r['one_worker_events_per_second']:,.0f} | {r['two_workers_events_per_second']:,.0f} "
                    f"| {r['two_to_one']:.2f} | {r['bare_events_per_second']:,.0f} "
                    f"| {r['one_worker_to_bare']:.2%} | {r['two_workers_to_bare']:.2%} "
                    f"| {_or_dash(r.get('two_workers_no_standby_events_per_second'), '{:,.0f}')} "
                    f"| {_or_dash(r.get('two_no_standby_to_one'), '{:.2f}')} |")
    return rows


def _or_dash(value: float | None, spec: str) -> str:
    return "—" if value is None else spec.format(value)
