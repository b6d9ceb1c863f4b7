"""A retailer's history as files: sales lines, optional page views and item attributes.

The format is documented for users in docs/DATA.md. In short, one row per event, with the
fields of the stream's events (streams/events.py):

- sales: ``item_id``, ``ts`` (a date or a date and time), ``quantity`` (negative: a
  return); optional ``price`` (unit price, never negative), ``event_id``, ``invoice``,
  ``description``;
- page views: ``item_id``, ``ts``, ``views``; optional ``event_id``;
- items: ``item_id``; optional ``description``; any other column is an attribute.

CSV (``.csv``, ``.tsv``) or Parquet (``.parquet``), CSV optionally compressed (``.gz``,
``.xz``, ``.bz2``, ``.zip``, ``.zst``). ``HistoryFormat.columns`` maps fields to other column
names (``--columns item_id=StockCode,ts=InvoiceDate``); dates are ISO 8601 or
``HistoryFormat.date_format``. Every value is checked row by row: a bad one stops the load
with the file, the line (CSV, header = line 1) or row (Parquet) and the column, or with
``skip_bad_rows`` the row is left out and counted by reason in the ``LoadSummary``.

The loader's output is events with timestamps (epoch seconds of the local wall-clock
time, as the shipped data); grouping them into periods (days) is ``models.dataset``'s.
The shipped Online Retail II file is read by the same loader, with ``SHIPPED``.

Public API: ``HistoryFormat``, ``SHIPPED``, ``parse_columns(spec)``, ``read_sales``,
``read_views``, ``read_items``, ``load_history(...) -> History``, ``HistoryError``, and for
the commands ``add_history_arguments(parser)`` / ``history_from_args(args)``.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from mqstream.periods import PERIODS, WEEKDAYS, Cadence, day_of_ts, iso_of_day


REPO = Path(__file__).resolve().parent.parent
DATA_PATH = REPO / "data" / "online-retail-ii" / "transactions-2009-12-01-to-2011-08-31.csv.xz"
PRODUCT_CODE = re.compile(r"^\d{5}[A-Za-z]*$")  # the shipped data's products (docs/EVALUATION.md)
SHIPPED_DATA_ID = "online-retail-ii"  # what a checkpoint trained on the shipped file records

FIELDS = {  # file kind -> field -> required
    "sales": {"item_id": True, "ts": True, "quantity": True, "price": False, "event_id": False,
              "invoice": False, "description": False},
    "views": {"item_id": True, "ts": True, "views": True, "event_id": False},
    "items": {"item_id": True, "description": False},
}
TEXT_FIELDS = ("item_id", "event_id", "invoice", "description")
UNPRICED = 1.0  # the price of every line of a file without prices: the demand rule counts priced lines
COMPRESSIONS = (".gz", ".xz", ".bz2", ".zip", ".zst")
ISO_EXAMPLE = "ISO 8601, e.g. 2011-06-01 or 2011-06-01T09:30:00"


class HistoryError(ValueError):
    """A history file cannot be used; the message names the file, and the row and column."""


@dataclass(frozen=True)
class HistoryFormat:
    """How to read a retailer's files."""

    columns: dict[str, str] = field(default_factory=dict)  # "field" or "kind.field" -> the file's column;
    # a field not named here is read from the column of its own name
    date_format: str | None = None  # strptime format of ``ts``; None: ISO 8601
    id_prefix: str | None = None  # event ids "<prefix>-<row>" where a file has none; None: the file's name
    products: re.Pattern | None = None  # item ids trained and scored; None: every id
    allow_negative_price: bool = False  # only the shipped file: five bad-debt adjustments (invoices "A...")
    # that the stream dead-letters; kept so that the shipped file loads as it is

    def column(self, kind: str, name: str) -> str:
        return self.columns.get(f"{kind}.{name}", self.columns.get(name, name))


SHIPPED = HistoryFormat(
    columns={"item_id": "StockCode", "ts": "InvoiceDate", "quantity": "Quantity", "price": "Price",
             "invoice": "Invoice", "description": "Description"},
    date_format="%m/%d/%Y %H:%M", id_prefix="orii", products=PRODUCT_CODE, allow_negative_price=True)


def parse_columns(spec: str) -> dict[str, str]:
    """``item_id=StockCode,ts=InvoiceDate,views.ts=Day`` -> {field: column}; a field may be
    scoped to one file kind (``sales.``, ``views.``, ``items.``)."""
    known = {name for kind in FIELDS.values() for name in kind}
    out = {}
    for pair in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, column = (s.strip() for s in pair.partition("="))
        kind, _, name = key.rpartition(".")
        if not sep or not column or not key:
            raise HistoryError(f"--columns: expected FIELD=COLUMN, got {pair!r}")
        if (kind and (kind not in FIELDS or name not in FIELDS[kind])) or name not in known:
            raise HistoryError(f"--columns: unknown field {key!r}; fields are {', '.join(sorted(known))} "
                               f"(optionally scoped: {', '.join(k + '.' for k in FIELDS)})")
        out[key] = column
    return out


@dataclass(frozen=True)
class LoadSummary:
    """What one file gave: rows read and used, rows skipped by reason, items and days."""

    kind: str
    path: Path
    rows_read: int
    rows_used: int
    skipped: dict[str, int]
    items: int
    first_day: int | None = None  # None: a file without times (items)
    last_day: int | None = None
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        skipped = "" if not self.skipped else \
            " (skipped: " + ", ".join(f"{n:,} {reason}" for reason, n in self.skipped.items()) + ")"
        days = "" if self.first_day is None else \
            f", {self.last_day - self.first_day + 1:,} days {iso_of_day(self.first_day)}..{iso_of_day(self.last_day)}"
        notes = "".join(f"; {n}" for n in self.notes)
        return (f"{self.kind} {self.path}: {self.rows_read:,} rows read, {self.rows_used:,} used{skipped}, "
                f"{self.items:,} items{days}{notes}")


class Loaded(NamedTuple):
    frame: pd.DataFrame
    summary: LoadSummary


class _Problem(NamedTuple):
    reason: str  # counted under this name with skip_bad_rows
    column: str  # the file's column
    bad: np.ndarray  # (n,) bool
    says: str  # what is wrong with a value, after "{value!r} "


def read_sales(path: Path, fmt: HistoryFormat = HistoryFormat(), skip_bad_rows: bool = False) -> Loaded:
    """Sales lines in file order: ``row`` (0-based data row of the file), ``event_id``,
    ``invoice``, ``item_id``, ``description``, ``quantity``, ``ts`` (epoch seconds), ``price``."""
    table = _Table.read(path, "sales", fmt)
    ts = table.times("ts", fmt.date_format)
    quantity = table.numbers("quantity", negative_ok=True)  # a return
    price = table.numbers("price", negative_ok=fmt.allow_negative_price) if table.has("price") else None
    frame = pd.DataFrame({
        "row": np.arange(table.n, dtype=np.int64),
        "event_id": table.event_ids(fmt),
        "invoice": table.texts("invoice"),
        "item_id": table.texts("item_id", required=True),
        "description": table.texts("description").str.strip(),
        "quantity": quantity,
        "ts": ts,
        "price": np.full(table.n, UNPRICED) if price is None else price,
    })
    notes = () if price is not None else (f"no price column: every line priced {UNPRICED}",)
    return table.finish(frame, skip_bad_rows, notes)


def read_views(path: Path, fmt: HistoryFormat = HistoryFormat(), skip_bad_rows: bool = False) -> Loaded:
    """Real page views in file order: ``row``, ``event_id``, ``item_id``, ``ts``, ``views``."""
    table = _Table.read(path, "views", fmt)
    ts = table.times("ts", fmt.date_format)
    views = table.numbers("views")
    frame = pd.DataFrame({"row": np.arange(table.n, dtype=np.int64), "event_id": table.event_ids(fmt),
                          "item_id": table.texts("item_id", required=True), "ts": ts, "views": views})
    return table.finish(frame, skip_bad_rows)


def read_items(path: Path, fmt: HistoryFormat = HistoryFormat(), skip_bad_rows: bool = False) -> Loaded:
    """One row per item: ``item_id``, ``description`` and the file's other columns (attributes, as text)."""
    table = _Table.read(path, "items", fmt, every_column=True)
    item_id = table.texts("item_id", required=True)
    table.check(item_id.duplicated().to_numpy(), "duplicate item_id", table.column_of("item_id"),
                "is an item_id seen on an earlier row")
    named = {table.column_of(name) for name in FIELDS["items"]}
    attributes = {c: table.texts_of(c) for c in table.raw.columns if c not in named}
    frame = pd.DataFrame({"item_id": item_id, "description": table.texts("description").str.strip(), **attributes})
    notes = (f"attributes {', '.join(attributes)}: read and checked, no model reads them yet",) if attributes else ()
    return table.finish(frame, skip_bad_rows, notes)


@dataclass
class _Table:
    """One file's columns as read, and the problems found in its rows so far."""

    path: Path
    kind: str
    fmt: HistoryFormat
    raw: pd.DataFrame
    parquet: bool
    problems: list[_Problem] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path, kind: str, fmt: HistoryFormat, every_column: bool = False) -> "_Table":
        path = Path(path)
        parquet = _is_parquet(path)
        header = _header(path, parquet)
        missing = next((name for name, required in FIELDS[kind].items()
                        if required and fmt.column(kind, name) not in header), None)
        if missing is not None:
            name, column = missing, fmt.column(kind, missing)
            raise HistoryError(f"{kind} file {path}: no column {column!r} for {name} (columns: {', '.join(header)}); "
                               f"map it with --columns {name}=<column>")
        wanted = None if every_column else [c for c in header if c in {fmt.column(kind, n) for n in FIELDS[kind]}]
        text = {fmt.column(kind, n) for n in TEXT_FIELDS + ("ts",)} if not every_column else set(header)
        return cls(path, kind, fmt, _read(path, parquet, wanted, text), parquet)

    @property
    def n(self) -> int:
        return len(self.raw)

    def has(self, name: str) -> bool:
        return self.column_of(name) in self.raw.columns

    def column_of(self, name: str) -> str:
        return self.fmt.column(self.kind, name)

    def check(self, bad: np.ndarray, reason: str, column: str, says: str) -> None:
        if bad.any():
            self.problems.append(_Problem(reason, column, bad, says))

    def texts_of(self, column: str) -> pd.Series:
        values = self.raw[column]
        return values.where(values.notna(), "").astype(str)

    def texts(self, name: str, required: bool = False) -> pd.Series:
        if not self.has(name):
            return pd.Series(np.full(self.n, "", dtype=object))
        values = self.texts_of(self.column_of(name))
        if required:
            self.check((values.str.strip() == "").to_numpy(), f"missing {name}", self.column_of(name), "is empty")
        return values

    def numbers(self, name: str, negative_ok: bool = False) -> np.ndarray:
        """(n,) the column as numbers, as parsed (int64 or float64; NaN where a value is not a number)."""
        column = self.column_of(name)
        values = self.raw[column]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            values = pd.to_numeric(values.astype(str), errors="coerce")
        out = values.to_numpy(np.float64) if values.dtype.kind == "f" else values.to_numpy()
        non_numeric = ~np.isfinite(out.astype(np.float64))
        self.check(non_numeric, f"non-numeric {name}", column, "is not a number")
        if not negative_ok:
            self.check(~non_numeric & (out < 0), f"negative {name}", column, "is negative")
        return out

    def times(self, name: str, date_format: str | None) -> np.ndarray:
        """(n,) epoch seconds of the local wall-clock time (a UTC offset, if any, is dropped)."""
        column = self.column_of(name)
        values = self.raw[column]
        if not pd.api.types.is_datetime64_any_dtype(values):
            values = pd.to_datetime(values.where(values.notna(), "").astype(str),
                                    format=date_format or "ISO8601", errors="coerce")
        if values.dtype == object:
            raise HistoryError(f"{self.kind} file {self.path}, column {column}: times with different UTC offsets; "
                               "give local times (the offset is not used)")
        if getattr(values.dt, "tz", None) is not None:
            values = values.dt.tz_localize(None)  # the wall clock: local days, as the shipped data
        unparsed = values.isna().to_numpy()
        self.check(unparsed, "unparsable date", column,
                   f"is not a date ({'--date-format ' + date_format if date_format else ISO_EXAMPLE})")
        seconds = (values - pd.Timestamp(0)) // pd.Timedelta(seconds=1)  # any resolution pandas parsed at
        return seconds.fillna(0).to_numpy(np.int64)

    def event_ids(self, fmt: HistoryFormat) -> pd.Series:
        """The file's ids, else "<prefix>-<row>": stable for a file, and identical lines stay separate events."""
        if self.has("event_id"):
            ids = self.texts("event_id", required=True)
            # the stream applies an id once: a repeated one would drop a sale without a word
            self.check(ids.duplicated().to_numpy(), "duplicate event_id", self.column_of("event_id"),
                       "is an event_id seen on an earlier row")
            return ids
        prefix = fmt.id_prefix or self.path.name.split(".")[0]
        return pd.Series([f"{prefix}-{row}" for row in range(self.n)], dtype=object)

    def finish(self, frame: pd.DataFrame, skip_bad_rows: bool, notes: tuple[str, ...] = ()) -> Loaded:
        """The frame without its bad rows, or a ``HistoryError`` for the first bad row."""
        bad = np.zeros(self.n, bool)
        skipped: dict[str, int] = {}
        for p in self.problems:  # a row is counted once, under its first problem
            skipped[p.reason] = skipped.get(p.reason, 0) + int((p.bad & ~bad).sum())
            bad |= p.bad
        if bad.any() and not skip_bad_rows:
            raise HistoryError(self._first_error(int(bad.sum())))
        if bad.any():
            frame = frame[~bad].reset_index(drop=True)
        for name in ("quantity", "views"):
            if name in frame and frame[name].dtype.kind == "f" and (frame[name] % 1 == 0).all():
                frame[name] = frame[name].astype(np.int64)  # whole numbers, once the bad values are gone
        return Loaded(frame, self._summary(frame, skipped, notes))

    def _summary(self, frame: pd.DataFrame, skipped: dict[str, int], notes: tuple[str, ...]) -> LoadSummary:
        if not len(frame):
            raise HistoryError(f"{self.kind} file {self.path}: no usable rows")
        days = day_of_ts(frame["ts"].to_numpy()) if "ts" in frame else None
        return LoadSummary(self.kind, self.path, self.n, len(frame), {k: n for k, n in skipped.items() if n},
                           int(frame["item_id"].nunique()), None if days is None else int(days.min()),
                           None if days is None else int(days.max()), notes)

    def _first_error(self, bad_rows: int) -> str:
        row, p = min(((int(np.argmax(p.bad)), p) for p in self.problems), key=lambda rp: rp[0])
        where = f"row {row + 1}" if self.parquet else f"line {row + 2}"  # CSV: the header is line 1
        more = f"; {bad_rows - 1:,} more bad rows" if bad_rows > 1 else ""
        value = self.raw[p.column].iloc[row]
        shown = repr(value) if isinstance(value, str) else str(value)
        return (f"{self.kind} file {self.path} {where}, column {p.column}: {shown} {p.says}{more} "
                "(--skip-bad-rows leaves bad rows out and counts them)")


def _is_parquet(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in (".parquet", ".pq"):
        if path.suffix.lower() in COMPRESSIONS:
            raise HistoryError(f"{path}: Parquet compresses itself; give the .parquet file uncompressed")
        return True
    if suffixes and suffixes[-1] in (".csv", ".tsv", ".txt"):
        return False
    raise HistoryError(f"{path}: expected .csv, .tsv or .parquet (CSV optionally {'/'.join(COMPRESSIONS)})")


def _header(path: Path, parquet: bool) -> list[str]:
    if not path.is_file():
        raise HistoryError(f"{path}: no such file")
    try:
        if parquet:
            import pyarrow.parquet

            return list(pyarrow.parquet.read_schema(path).names)
        return list(pd.read_csv(path, nrows=0, sep=_separator(path)).columns)
    except ImportError as exc:  # e.g. .zst without the zstandard package
        raise HistoryError(f"{path}: {exc}") from exc
    except (ValueError, OSError) as exc:
        raise HistoryError(f"{path}: not readable as {'Parquet' if parquet else 'CSV'}: {exc}") from exc


def _read(path: Path, parquet: bool, columns: list[str] | None, text: set[str]) -> pd.DataFrame:
    if parquet:
        return pd.read_parquet(path, columns=columns)
    # text fields as written ("00123" stays an id, "NA" a description); empty cells are "", not NaN
    return pd.read_csv(path, usecols=columns, sep=_separator(path), keep_default_na=False,
                       dtype={c: str for c in text})


def _separator(path: Path) -> str:
    return "\t" if ".tsv" in [s.lower() for s in path.suffixes] else ","


def _shown(path: Path) -> str:
    """A path as outputs record it: inside the repository relative to it, else absolute."""
    path = path.absolute()
    return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)




@dataclass(frozen=True)
class History:
    """What the commands read: sales, and the optional real page views and item attributes."""

    sales: pd.DataFrame  # ``read_sales``; descriptions from ``items`` where it has one
    views: pd.DataFrame | None  # ``read_views``: real page views, or None
    items: pd.DataFrame | None  # ``read_items``, or None
    products: re.Pattern | None  # item ids trained and scored; None: every id
    data_id: str  # SHIPPED_DATA_ID, or a digest of the files and how they were read
    summaries: tuple[LoadSummary, ...]
    views_path: Path | None = None

    @property
    def name(self) -> str:
        """A short name for outputs: the sales file's name up to its first dot."""
        return self.summaries[0].path.name.split(".")[0]

    @property
    def first_day(self) -> int:
        return int(self.summaries[0].first_day)

    @property
    def last_day(self) -> int:
        return int(self.summaries[0].last_day)

    def describe(self) -> dict:
        """What checkpoints and reports record of the data."""
        return {"id": self.data_id, **{s.kind: _shown(s.path) for s in self.summaries}}


def load_history(sales: Path | None = None, views: Path | None = None, items: Path | None = None,
                 fmt: HistoryFormat = HistoryFormat(), skip_bad_rows: bool = False) -> History:
    """The sales file (None: the shipped one, read with ``SHIPPED``), and the page views and item
    attributes files when given (read with ``fmt``)."""
    sales_fmt = SHIPPED if sales is None else fmt
    loaded = [read_sales(DATA_PATH if sales is None else sales, sales_fmt, skip_bad_rows)]
    if views is not None:
        loaded.append(read_views(views, fmt, skip_bad_rows))
    if items is not None:
        loaded.append(read_items(items, fmt, skip_bad_rows))
    by_kind = {load.summary.kind: load.frame for load in loaded}
    tx = by_kind["sales"]
    if items is not None:
        tx = _with_descriptions(tx, by_kind["items"])
    plain = sales is None and views is None and items is None
    data_id = SHIPPED_DATA_ID if plain else _digest([s for s in (sales, views, items) if s is not None],
                                                     (sales_fmt, fmt, skip_bad_rows))
    return History(tx, by_kind.get("views"), by_kind.get("items"), sales_fmt.products, data_id,
                   tuple(load.summary for load in loaded), None if views is None else Path(views))


def _with_descriptions(tx: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """The items file's description of an item, where it has one, replaces the sales lines'."""
    described = items[items["description"] != ""].set_index("item_id")["description"]
    given = tx["item_id"].map(described)
    return tx.assign(description=given.where(given.notna(), tx["description"]))


def _digest(paths: list[Path], how: tuple) -> str:
    h = hashlib.sha256(repr(how).encode())
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()[:16]


# --- the commands' arguments: train, evaluate and replay take history the same way -------------
def add_history_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("history input (the format: docs/DATA.md)")
    g.add_argument("--data", type=Path, help="sales history: CSV or Parquet, CSV optionally .gz/.xz/.bz2/.zip/.zst "
                                             "(default: the shipped Online Retail II)")
    g.add_argument("--views", type=Path, help="real page views (item_id, ts, views): the models read them, "
                                              "and scores say that they did")
    g.add_argument("--items", type=Path, help="item attributes (item_id, description, other columns): the "
                                              "description is what a new item's first forecast reads")
    g.add_argument("--columns", default="", help="FIELD=COLUMN,... where the files name a field otherwise, e.g. "
                                                 "item_id=StockCode,ts=InvoiceDate (views.ts=... for one file)")
    g.add_argument("--date-format", help=f"strptime format of the ts column, e.g. %%d/%%m/%%Y %%H:%%M "
                                         f"(default: {ISO_EXAMPLE})")
    g.add_argument("--skip-bad-rows", action="store_true",
                   help="leave out rows with a bad value and count them by reason (default: stop at the first)")


def history_from_args(args: argparse.Namespace) -> History:
    """The history the arguments name, its load summary printed."""
    if getattr(args, "simulated_views", False) and args.views is not None:
        raise HistoryError("--views gives real page views and --simulated-views would replace them: pass one")
    if args.data is None and (args.columns or args.date_format) and args.views is None and args.items is None:
        raise HistoryError("--columns and --date-format describe the files of --data, --views and --items; "
                           "the shipped data has its own")
    fmt = HistoryFormat(columns=parse_columns(args.columns), date_format=args.date_format)
    history = load_history(args.data, args.views, args.items, fmt, args.skip_bad_rows)
    for summary in history.summaries:
        print(summary, flush=True)
    return history


def add_period_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("periods (a worker serving the model needs the same period setting)")
    g.add_argument("--period", choices=PERIODS, default="day", help="what a step of the series is (default %(default)s)")
    g.add_argument("--week-start", choices=WEEKDAYS, default="monday", help="with weeks: their first day")
    g.add_argument("--horizons", type=int, default=None, help="periods forecast ahead (default 28 days or 13 weeks)")


def cadence_from_args(args: argparse.Namespace) -> Cadence:
    if args.horizons is not None and not 1 <= args.horizons <= 366:
        raise HistoryError(f"--horizons must be 1..366, got {args.horizons}")
    if args.period == "day" and args.horizons is not None and args.horizons < 7:
        raise HistoryError("--horizons must be at least 7 with days: forecasts always cover the next 7 days")
    return Cadence(args.period, WEEKDAYS.index(args.week_start))


def history_flags(args: argparse.Namespace) -> list[str]:
    """The history and period arguments as given, for a command line that regenerates an output."""
    flags = [f"--{name.replace('_', '-')} {shlex.quote(str(getattr(args, name)))}" for name in
             ("data", "views", "items", "columns", "date_format") if getattr(args, name)]
    if getattr(args, "period", "day") != "day":
        flags += [f"--period {args.period}", f"--week-start {args.week_start}"]
    if getattr(args, "horizons", None) is not None:
        flags.append(f"--horizons {args.horizons}")
    return flags + (["--skip-bad-rows"] if args.skip_bad_rows else [])
