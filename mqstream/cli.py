"""`mqstream`: the command line. Each subcommand's --help says what it does."""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from mqstream.bootstrap import BrokerUnreachable, check_bootstrap
from mqstream.config import ConfigError, Settings, load_settings
from mqstream.local_broker import BrokerError, LocalBroker


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser(argv)
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        settings = load_settings(args.config, **_overrides(args))
        return args.run(args, settings) or 0
    except (ConfigError, BrokerError) as exc:
        print(f"mqstream: {exc}", file=sys.stderr)
        return 2
    except BrokerUnreachable as exc:
        print(f"mqstream: kafka at {exc.bootstrap}: {exc}. {_what_to_check(settings)}", file=sys.stderr)
        return 2


def _what_to_check(settings: Settings) -> str:
    if settings.uses_local_broker:
        return ("Is the local broker running (`mqstream kafka start`; its port is --kafka-port or "
                "MQSTREAM_KAFKA_PORT)? An external broker is named by --bootstrap or MQSTREAM_KAFKA_BOOTSTRAP.")
    return ("Is --bootstrap / MQSTREAM_KAFKA_BOOTSTRAP right, is the broker up, and can this machine reach it "
            "(network, firewall)?")


def _require_broker(settings: Settings) -> None:
    """Before a command's Kafka clients are made: kafka-python and faust take 30 s or more to
    say that no broker answers."""
    from mqstream.kafka_auth import kafka_options

    check_bootstrap(**kafka_options(settings))


def _parser(argv: list[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mqstream", description="Streaming multi-horizon quantile demand forecasts over Kafka.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="TOML settings file (also MQSTREAM_CONFIG); see README")
    p.add_argument("--bootstrap", help="external Kafka bootstrap servers (also MQSTREAM_KAFKA_BOOTSTRAP); "
                                       "unset: the local broker")
    p.add_argument("--kafka-port", type=int, help="port of the local broker")
    sub = p.add_subparsers(title="commands", metavar="COMMAND")

    kafka = sub.add_parser("kafka", help="start, stop or inspect the local Kafka broker (KRaft, 127.0.0.1)")
    kafka.add_argument("action", choices=("start", "stop", "status"))
    kafka.set_defaults(run=_kafka)

    topics = sub.add_parser("topics", help="create the topics (sales, page-views, forecasts, ...)")
    topics.add_argument("action", choices=("create",))
    topics.set_defaults(run=_topics)

    worker = sub.add_parser("worker", help="run a stream worker (joins the consumer group)")
    _model_args(worker)
    worker.set_defaults(run=_worker)

    _models_parser(sub)

    replay = sub.add_parser("replay", help="stream transactions (the shipped ones, or --data) into the sales topic")
    replay.add_argument("--start", help="first day replayed (YYYY-MM-DD; default 2011-06-01, with --data its first day)")
    replay.add_argument("--end", help="last day replayed (default 2011-07-31, with --data its last day)")
    replay.add_argument("--speedup", type=float, default=0.0,
                        help="event-time seconds per wall second; 0 sends as fast as possible")
    replay.add_argument("--no-views", action="store_true", help="send no page views (simulated, or --views)")
    from mqstream.models.history import add_history_arguments

    add_history_arguments(replay)  # --data, --views, --items, ... as train and evaluate take them
    replay.set_defaults(run=_replay)

    demo = sub.add_parser("demo", help="broker, topics, worker and a replay, with a live summary")
    demo.add_argument("--start", default="2011-06-01", help="first day replayed")
    demo.add_argument("--end", default="2011-06-28", help="last day replayed")
    _model_args(demo)
    demo.set_defaults(run=_demo)

    up = sub.add_parser("up", help="the demo's loop left running: broker, worker, replay and Prometheus, "
                                   "with their addresses; `mqstream down` stops them")
    up.add_argument("--start", default="2011-06-01", help="first day replayed (only if sales is empty)")
    up.add_argument("--end", default="2011-06-28", help="last day replayed")
    up.add_argument("--prometheus-port", type=int, default=9090, help="where the local Prometheus answers")
    up.add_argument("--no-wait", action="store_true", help="return once the replay is sent, not once the "
                                                           "worker has caught up")
    _model_args(up)
    up.set_defaults(run=_up)

    down = sub.add_parser("down", help="stop what `mqstream up` started (state stays on disk)")
    down.add_argument("--data-dir", help="the data_dir `up` ran with")
    down.set_defaults(run=_down)

    tail = sub.add_parser("tail", help="print forecasts as they arrive, a line each (or JSON lines)")
    tail.add_argument("--item", help="only this item's forecasts")
    tail.add_argument("--format", choices=("table", "json"), default="table",
                      help="table: item, origin, model, next-7-day P10/P50/P90 totals, day-1 P50; json: the messages")
    tail.add_argument("--from-beginning", action="store_true", help="start at the oldest forecast kept, not the next")
    tail.add_argument("--group", help="consumer group: resume where it stopped and commit progress")
    tail.add_argument("--max", type=int, help="exit after this many forecasts")
    tail.set_defaults(run=_tail)

    show = sub.add_parser("show", help="one item's current forecast as a table; --plot draws a fan chart")
    show.add_argument("item", help="item id")
    show.add_argument("--plot", type=Path, metavar="FILE.png", help="write past actuals and the quantile fan here")
    show.add_argument("--history-days", type=int, default=28, help="days of actuals before the origin in the plot")
    show.add_argument("--worker", metavar="URL", help="worker HTTP address asked first (default: "
                                                      "http://metrics_host:metrics_port, none if that port is 0); "
                                                      "Kafka is read when no worker answers")
    show.set_defaults(run=_show)

    for name, module in (("train", "mqstream.models.training"), ("evaluate", "mqstream.models.evaluate")):
        _module_command(sub, name, module, load=name in argv)
    return p


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="seasonal-naive, mqcnn or mqtransformer")
    p.add_argument("--checkpoint", help="checkpoint directory of a neural model")
    p.add_argument("--data-dir", help="where worker state and logs go")


def _module_command(sub, name: str, module: str, load: bool) -> None:
    """Training and evaluation live in models/ and import torch, seconds that every other
    command would wait: unless the command line names the command (``load``), it is listed
    with its module's docstring, read without importing the module."""
    import ast
    import importlib
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return
    if not load:
        doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text())) or name
        sub.add_parser(name, help=doc.strip().split("\n")[0])
        return
    try:
        mod = importlib.import_module(module)
    except ImportError:  # installed without what training needs: the command is not offered
        return
    p = sub.add_parser(name, help=(mod.__doc__ or name).strip().split("\n")[0])
    mod.configure_parser(p)
    p.set_defaults(run=lambda args, settings: _run_module(mod, args, settings))


def _run_module(mod, args, settings: Settings) -> int:
    if getattr(args, "unless_served", False):
        if not args.publish:
            raise ConfigError("--unless-served needs --publish")
        served = _served(settings, args.model)
        if served is not None:
            print(f"{args.model} {served} is served on {settings.topic('models')}: nothing to train")
            return 0
    code = mod.run(args)
    if code == 0 and getattr(args, "publish", None):  # train --publish ROLE, in the period it trained on
        settings = replace(settings, period=args.period, week_start=args.week_start)
        return _models_publish(argparse.Namespace(path=args.out, role=args.publish), settings)
    return code


def _models_parser(sub) -> None:
    models = sub.add_parser("models", help="publish, list, promote or roll back models on the models topic")
    actions = models.add_subparsers(title="actions", metavar="ACTION", dest="action", required=True)
    publish = actions.add_parser("publish", help="publish a checkpoint directory (loaded first, as a worker would)")
    publish.add_argument("path", type=Path, metavar="CHECKPOINT", help="a directory written by mqstream train")
    publish.add_argument("--role", choices=("served", "candidate"), default="candidate",
                         help="served: workers started with model_source = topic load it")
    publish.set_defaults(run=_models_publish)
    actions.add_parser("list", help="the models on the topic, by role").set_defaults(run=_models_list)
    for action, what in (("promote", "the candidate becomes served, the served one previous"),
                         ("rollback", "the previous model is served again, the served one becomes previous")):
        move = actions.add_parser(action, help=what)
        move.add_argument("name", choices=("mqcnn", "mqtransformer"))
        move.set_defaults(run=_models_move)
    promote = actions.choices["promote"]
    promote.add_argument("--require-better", type=int, default=0, metavar="N",
                         help="promote only if the candidate, run in shadow, has a lower wQL than the served model "
                              "on the forecasts both made for the last N closed periods")


def _models_publish(args, settings: Settings) -> int:
    _require_broker(settings)
    from mqstream.streams.models_topic import ModelRefused, payload_of, publish
    from mqstream.streams.topics import create_topics

    try:
        name, version, payload = payload_of(args.path, settings)
    except (ModelRefused, ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"checkpoint {args.path}: {exc}") from exc
    create_topics(settings)
    publish(settings, name, args.role, payload)
    print(f"published {name} {version} as {args.role} on {settings.topic('models')} ({len(payload) / 1e6:.1f} MB)")
    return 0


def _served(settings: Settings, name: str) -> str | None:
    """The version the models topic serves for ``name``; None where it serves none it can."""
    _require_broker(settings)
    from mqstream.streams.models_topic import PublishedModel, published
    from mqstream.streams.topics import create_topics

    create_topics(settings)
    entry = published(settings).get((name, "served"))
    return entry.version if isinstance(entry, PublishedModel) else None


def _models_list(args, settings: Settings) -> int:
    _require_broker(settings)
    from mqstream.streams.models_topic import ModelRefused, published

    entries = sorted(published(settings).items())
    print(f"{'model':14} {'role':10} {'version':14} {'cutoff':11} {'val_wql':>8}  published")
    for (name, role), entry in entries:
        if isinstance(entry, ModelRefused):
            print(f"{name:14} {role:10} refused: {entry}")
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.published_ms / 1000))
        wql = entry.record.get("val_wql")
        print(f"{name:14} {role:10} {entry.version:14} {entry.record.get('cutoff', '?'):11} "
              f"{'?' if wql is None else f'{wql:.4f}':>8}  {when} UTC")
    if not entries:
        print(f"(nothing published on {settings.topic('models')})")
    return 0


def _models_move(args, settings: Settings) -> int:
    _require_broker(settings)
    from mqstream.streams.models_topic import ModelRefused, promote, rollback

    try:
        if getattr(args, "require_better", 0):
            _candidate_beats_served(settings, args.name, args.require_better)
        if args.action == "promote":
            version = promote(settings, args.name, Path(settings.data_dir) / "models")
        else:
            version = rollback(settings, args.name)
    except ModelRefused as exc:
        raise ConfigError(f"models {args.action} {args.name}: {exc}") from exc
    print(f"{args.name}: {version} is served (running workers take it at each partition's next close)")
    return 0


def _candidate_beats_served(settings: Settings, name: str, periods: int) -> None:
    from mqstream.streams.models_topic import ModelRefused, PublishedModel, compare, published

    latest = published(settings)
    served, candidate = latest.get((name, "served")), latest.get((name, "candidate"))
    if not (isinstance(served, PublishedModel) and isinstance(candidate, PublishedModel)):
        raise ModelRefused(f"no served and candidate {name} to compare")
    comparison = compare(settings, served.version, candidate.version, periods)
    print(f"{name} {candidate.version} (candidate) against {served.version} (served): {comparison}")
    if len(comparison.targets) < periods:
        raise ModelRefused(f"the candidate was scored on {len(comparison.targets)} periods in shadow, "
                           f"--require-better needs {periods}")
    if not comparison.candidate_wql < comparison.served_wql:
        raise ModelRefused("the candidate does not beat the served model: not promoted")


def _overrides(args: argparse.Namespace) -> dict:
    return {"bootstrap": args.bootstrap, "kafka_port": args.kafka_port,
            "model": getattr(args, "model", None), "checkpoint": getattr(args, "checkpoint", None),
            "data_dir": getattr(args, "data_dir", None)}


def local_broker(settings: Settings) -> LocalBroker:
    return LocalBroker(Path(settings.data_dir) / "kafka", settings.kafka_port)


def _kafka(args, settings: Settings) -> int:
    if not settings.uses_local_broker:
        raise BrokerError(f"an external broker is configured ({settings.bootstrap}); nothing local to {args.action}")
    broker = local_broker(settings)
    if args.action == "start":
        broker.start()
        print(f"kafka running on {broker.bootstrap} (pid {broker.pid()}, log {broker.log_file})")
    elif args.action == "stop":
        print("kafka stopped" if broker.stop() else "kafka was not running")
    else:
        pid = broker.pid()
        print(f"kafka running on {broker.bootstrap} (pid {pid})" if pid else "kafka not running")
        return 0 if pid else 1
    return 0


def _topics(args, settings: Settings) -> int:
    _require_broker(settings)
    from mqstream.streams.topics import create_topics

    created = create_topics(settings)
    print("created: " + (", ".join(created) if created else "nothing (all exist)"))
    return 0


def _worker(args, settings: Settings) -> int:
    _require_broker(settings)  # before the worker's imports, a second or more of their own
    from mqstream.streams.runner import run_worker

    return run_worker(settings)


def _replay(args, settings: Settings) -> int:
    _require_broker(settings)
    from mqstream.models.history import HistoryError, history_from_args
    from mqstream.models.pageviews import views_label
    from mqstream.periods import day_of_iso, iso_of_day
    from mqstream.streams.replay import replay_events, send
    from mqstream.streams.topics import create_topics

    try:
        history = history_from_args(args)
    except HistoryError as exc:
        print(f"mqstream replay: {exc}", file=sys.stderr)
        return 2
    shipped = args.data is None
    first = day_of_iso(args.start) if args.start else (day_of_iso("2011-06-01") if shipped else history.first_day)
    last = day_of_iso(args.end) if args.end else (day_of_iso("2011-07-31") if shipped else history.last_day)
    cadence = settings.cadence  # whole periods only: a week closed on part of its days would publish a wrong actual
    first, last = int(cadence.first_day(cadence.of_day(first))), int(cadence.first_day(cadence.of_day(last) + 1)) - 1
    create_topics(settings)
    events = replay_events(first, last, history.sales, views=not args.no_views, real_views=history.views)
    views = "none" if args.no_views else views_label(history.views is None, history.views_path)
    print(f"replaying {len(events):,} events ({iso_of_day(first)}..{iso_of_day(last)}, whole {cadence.name(2)}; "
          f"page views: {views})")
    send(events, settings, speedup=args.speedup)
    return 0


def _tail(args, settings: Settings) -> int:
    from mqstream.forecast_views import run_tail

    return run_tail(settings, args.item, args.format, args.from_beginning, args.group, args.max)


def _show(args, settings: Settings) -> int:
    from mqstream.forecast_views import run_show, worker_url

    return run_show(settings, args.item, args.plot, args.history_days, args.worker or worker_url(settings))


def _daily_only(command: str, settings: Settings) -> bool:
    """The demo and `up` replay the shipped data day by day with the daily default model."""
    if settings.period != "day":
        print(f"mqstream {command}: the demo is daily (period = {settings.period!r} is set); for weeks, train, "
              "replay and serve your own run (README: Your own data)", file=sys.stderr)
        return False
    return True


def _demo(args, settings: Settings) -> int:
    if not _daily_only("demo", settings):
        return 2
    if not settings.uses_local_broker:  # else the demo starts the local broker itself
        _require_broker(settings)
    from mqstream.demo import run_demo

    return run_demo(settings, args.start, args.end)


def _up(args, settings: Settings) -> int:
    if not _daily_only("up", settings):
        return 2
    if not settings.uses_local_broker:  # else `up` starts the local broker itself
        _require_broker(settings)
    from mqstream.local_stack import StackError, run_up

    try:
        return run_up(settings, args.start, args.end, args.prometheus_port, wait=not args.no_wait)
    except StackError as exc:
        print(f"mqstream: {exc} (mqstream down stops what was started)", file=sys.stderr)
        return 2


def _down(args, settings: Settings) -> int:
    from mqstream.local_stack import run_down

    return run_down(settings)


if __name__ == "__main__":
    sys.exit(main())
