"""``data.source: files``: historical bars from CSV or Parquet files (``data.files``).

Files come from everywhere (broker exports, Binance's public kline dumps, pandas ``to_csv``), so the
reader is tolerant about *names*: headers in any case (``Open``/``open``/``OPEN``, ``<OPEN>``), the
timestamp under ``timestamp``/``Date``/``Datetime``/``time``/``open_time``/``unix`` or an unnamed first
column, separate ``Date`` + ``Time`` columns, a headerless 12-column Binance kline dump, epochs in
s/ms/µs/ns, any bar interval. It is strict about *values*: rows stay as the file has them (no sorting,
no dedup, no coercion of a text ``close`` into a number, missing columns stay missing), because
judging them is ``validate``'s job and a reader that "fixes" data hides the problem.

Timestamps become UTC only when the file says so without doubt: epochs are UTC; strings carrying an
explicit UTC offset (``Z``, ``+00:00``) are UTC; other offsets and naive times are kept as given unless
``data.files[].timezone`` is set, in which case they are localised (naive) and converted to UTC.
Rows are cut to the window [start, end) only when every timestamp parsed.

Numbers parse to the nearest float64 (correct rounding), so a file written from bars with pandas'
``to_csv`` reads back bit for bit. The common CSV layout (a header, times written with a UTC offset,
plain numbers) is read by Arrow's multithreaded CSV reader, only the columns the bars use;
anything else — or anything Arrow refuses — goes through pandas, which gives the same frame.

Why one module of ~500 lines: header aliases, timestamp parsing and the fast Arrow path decide
together what a file's columns and times mean; their helpers are private to that decision and tested
through ``FileSource`` as one reader.
"""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import io
import lzma
import re
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytz

from autotrader.errors import ConfigError, SourceError
from autotrader.params import FileSpec, Instrument
from autotrader.schema import empty_bars

CSV_SUFFIXES = (".csv", ".txt", ".tsv", ".csv.gz", ".csv.bz2", ".csv.xz", ".zip")
PARQUET_SUFFIXES = (".parquet", ".pq")

# Binance public data (data.binance.vision) spot kline dumps: no header, these 12 columns.
BINANCE_KLINE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
HEADERLESS_OHLC = ("timestamp", "open", "high", "low", "close", "volume")

# Normalised header names, best first. The unnamed first column (pandas' index) is tried last.
TIME_ALIASES = (
    "timestamp",
    "open_time",
    "opentime",
    "unix",
    "datetime",
    "date_time",
    "time",
    "date",
    "gmt_time",
    "utc_time",
    "local_time",
)
VALUE_ALIASES: dict[str, tuple[str, ...]] = {
    "open": ("open", "o", "open_price", "openprice", "bid_open"),
    "high": ("high", "h", "high_price", "highprice"),
    "low": ("low", "l", "low_price", "lowprice"),
    "close": ("close", "c", "close_price", "closeprice", "last"),
    "volume": ("volume", "vol", "v", "tick_volume", "tickvol", "base_volume"),
    "spread": ("spread",),
}
_EPOCH = re.compile(r"^\s*\d{9,19}(\.0*)?\s*$")
_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


def _norm(name: object) -> str:
    text = str(name).strip().strip("<>").strip().lower()
    return re.sub(r"[\s\-.]+", "_", text)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (*CSV_SUFFIXES, *PARQUET_SUFFIXES):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _open_text(path: Path) -> IO[str]:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rt", errors="replace")
    if name.endswith(".bz2"):
        return bz2.open(path, "rt", errors="replace")
    if name.endswith(".xz"):
        return lzma.open(path, "rt", errors="replace")
    if name.endswith(".zip"):
        archive = zipfile.ZipFile(path)
        members = [m for m in archive.namelist() if not m.endswith("/")]
        if len(members) != 1:
            raise SourceError(f"{path}: a .zip must hold exactly one CSV file, it holds {len(members)}")
        return io.TextIOWrapper(archive.open(members[0]), errors="replace")
    return open(path, errors="replace")


def _first_line(path: Path) -> str:
    with _open_text(path) as handle:
        for line in handle:
            if line.strip():
                return line.lstrip("\ufeff").rstrip("\r\n")
    return ""


def _delimiter(line: str) -> str:
    counts = {sep: line.count(sep) for sep in (",", ";", "\t", "|")}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] else ","


def _is_number(token: str) -> bool:
    return bool(_NUMBER.match(token))


def _is_timestamp_token(token: str) -> bool:
    if _is_number(token):
        return True
    if not re.search(r"\d", token):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pd.Timestamp(token)
        except (ValueError, TypeError, OverflowError):
            return False
    return True


def _read_csv(path: Path) -> pd.DataFrame:
    line = _first_line(path)
    if not line:
        raise SourceError(f"{path}: the file is empty")
    sep = _delimiter(line)
    tokens = [t.strip().strip('"').strip("'") for t in line.split(sep)]
    headerless = bool(tokens) and _is_timestamp_token(tokens[0]) and all(_is_number(t) for t in tokens[1:])
    if headerless:
        if len(tokens) == len(BINANCE_KLINE_COLUMNS):
            names: Iterable[str] = BINANCE_KLINE_COLUMNS
        elif len(tokens) in (5, 6):
            names = HEADERLESS_OHLC[: len(tokens)]
        else:
            raise SourceError(
                f"{path}: no header row and {len(tokens)} columns; a headerless file must be a 12-column "
                "Binance kline dump or timestamp,open,high,low,close[,volume]"
            )
        return pd.read_csv(
            path, sep=sep, header=None, names=list(names), low_memory=False, float_precision="round_trip"
        )
    # round_trip: the nearest float64, as Arrow's reader gives (pandas' default parser can be 1 ulp off).
    return pd.read_csv(path, sep=sep, header=0, low_memory=False, float_precision="round_trip")


def _read_parquet(path: Path) -> pd.DataFrame:
    frame = pq.read_table(path).to_pandas()
    if not isinstance(frame.index, pd.RangeIndex):  # a pandas index (often the timestamps) → a column
        frame = frame.reset_index()
    return frame


def read_table(path: Path) -> pd.DataFrame:
    """The file's rows and columns as stored; a ``SourceError`` naming the file when it cannot be read."""
    suffix = _suffix(path)
    if suffix not in (*CSV_SUFFIXES, *PARQUET_SUFFIXES):
        raise SourceError(
            f"{path}: unknown extension {suffix or '(none)'!r}; use one of "
            f"{', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}"
        )
    if not path.is_file():
        raise SourceError(f"{path}: no such file (data.files paths are relative to the repository root)")
    try:
        frame = _read_parquet(path) if suffix in PARQUET_SUFFIXES else _read_csv(path)
    except SourceError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise SourceError(f"{path}: the file is empty") from exc
    except (OSError, ValueError, UnicodeError, pa.ArrowException, zipfile.BadZipFile, EOFError) as exc:
        raise SourceError(f"{path}: cannot be read as {suffix}: {type(exc).__name__}: {exc}") from exc
    if frame.empty:
        raise SourceError(
            f"{path}: has no data rows (columns: {', '.join(map(str, frame.columns)) or 'none'})"
        )
    return frame


def _pick(columns: dict[str, object], aliases: Iterable[str]) -> object | None:
    for alias in aliases:
        if alias in columns:
            return columns[alias]
    return None


def _timestamp_source(frame: pd.DataFrame, path: Path) -> pd.Series:
    """The column (or Date + Time pair) holding bar times, as stored."""
    columns: dict[str, object] = {}
    for col in frame.columns:
        columns.setdefault(_norm(col), col)
    date_col, time_col = columns.get("date"), columns.get("time")
    if date_col is not None and time_col is not None and not any(a in columns for a in TIME_ALIASES[:6]):
        dates, times = frame[date_col], frame[time_col]
        if dates.dtype == object and times.dtype == object and not dates.astype(str).str.contains(":").any():
            combined = dates.astype("string") + " " + times.astype("string")
            return combined.astype(object).where(dates.notna() & times.notna(), None)
    chosen = _pick(columns, TIME_ALIASES)
    if chosen is None:
        first = frame.columns[0]
        if _norm(first) in ("", "index", "level_0") or _norm(first).startswith("unnamed:"):
            chosen = first
    if chosen is None:
        raise SourceError(
            f"{path}: no timestamp column; looked for {', '.join(TIME_ALIASES)} or an unnamed first column, "
            f"found {', '.join(map(str, frame.columns))}"
        )
    return frame[chosen]


def _is_utc(tz: object) -> bool:
    if tz is None:
        return False
    if str(tz) in ("UTC", "Etc/UTC", "UTC+00:00", "+00:00", "Z", "utc"):
        return True
    return isinstance(tz, dt.timezone) and tz.utcoffset(None) == dt.timedelta(0)


def _from_epoch(values: pd.Series) -> pd.Series:
    """Epoch numbers → UTC, unit told per value by magnitude (s, ms, µs as in newer Binance dumps, ns).

    Whole numbers stay integers all the way to nanoseconds: a float64 would round ns epochs.
    """
    numbers = pd.to_numeric(values, errors="coerce")
    magnitude = numbers.abs().to_numpy(dtype="float64", na_value=np.nan)
    factor = np.select(
        [magnitude < 1e11, magnitude < 1e14, magnitude < 1e17], [10**9, 10**6, 10**3], default=1
    ).astype("int64")
    nonnull = numbers.dropna()
    if len(nonnull) == 0 or (nonnull == nonnull.round()).all():
        nanos = numbers.astype("Int64") * pd.array(factor, dtype="Int64")
    else:
        nanos = (numbers.astype("float64") * factor).round().astype("Int64")
    return pd.to_datetime(pd.Series(nanos, index=values.index), unit="ns", utc=True)


def _parse_strings(values: pd.Series) -> pd.Series | None:
    """Parsed times, or None when any non-null value does not parse (then the column is kept as given)."""
    text = values.astype("string").str.strip()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fmt in ("ISO8601", None):
            try:
                parsed = pd.to_datetime(text, format=fmt)
            except (ValueError, TypeError, OverflowError):
                continue
            if isinstance(parsed.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(parsed):
                return parsed
            # object: mixed offsets. Only if every offset is UTC does it become one UTC column.
            offsets = {ts.utcoffset() for ts in parsed.dropna()}
            if offsets == {dt.timedelta(0)}:
                return pd.to_datetime(text, format=fmt, utc=True)
            return None
    return None


def _localise(stamps: pd.Series, timezone: str, path: Path) -> pd.Series:
    try:
        return stamps.dt.tz_localize(timezone, ambiguous="infer", nonexistent="raise").dt.tz_convert("UTC")
    except pytz.exceptions.AmbiguousTimeError as exc:
        raise SourceError(
            f"{path}: time {exc} is ambiguous in {timezone} (DST fall-back) and the row order does not say "
            "which one; export the file in UTC"
        ) from exc
    except pytz.exceptions.NonExistentTimeError as exc:
        raise SourceError(
            f"{path}: time {exc} does not exist in {timezone} (DST spring-forward gap); is "
            f"data.files[].timezone right?"
        ) from exc


def parse_timestamps(raw: pd.Series, timezone: str | None, path: Path) -> pd.Series:
    """Bar times per the rules in the module docstring; unparseable columns come back unchanged."""
    if pd.api.types.is_bool_dtype(raw):
        return raw
    if isinstance(raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(raw):
        stamps = raw
    elif pd.api.types.is_numeric_dtype(raw):
        stamps = _from_epoch(raw)
    else:
        nonnull = raw.dropna()
        if len(nonnull) and nonnull.astype(str).str.match(_EPOCH).all():
            stamps = _from_epoch(raw.where(raw.notna(), None))
        else:
            parsed = _parse_strings(raw)
            if parsed is None:
                if timezone is not None:  # mixed offsets: unambiguous once everything is UTC
                    try:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            return pd.to_datetime(raw.astype("string").str.strip(), utc=True).dt.as_unit("ns")
                    except (ValueError, TypeError, OverflowError):
                        return raw
                return raw
            stamps = parsed
    tz = stamps.dt.tz
    if tz is None:
        if timezone is not None:
            stamps = _localise(stamps, timezone, path)
    elif timezone is not None or _is_utc(tz):
        stamps = stamps.dt.tz_convert("UTC")
    return stamps.dt.as_unit("ns")


def _check_timezone(spec: FileSpec, index: int) -> None:
    if spec.timezone is None:
        return
    try:
        pd.Timestamp("2020-01-01").tz_localize(spec.timezone)
    except (pytz.exceptions.UnknownTimeZoneError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"data.files[{index}].timezone {spec.timezone!r} ({spec.path}) is not a time zone name such as "
            "UTC or America/New_York"
        ) from exc


# pandas' read_csv null markers, so Arrow reads the same cells as missing.
_PANDAS_NULLS = [
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
]  # fmt: skip
# A time as pandas writes a UTC one (``2026-06-19 00:00:00+00:00``): its ISO8601 parse is one UTC column.
_UTC_STAMP = r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,9})?\+00:00$"


def _bar_columns(names: list[str]) -> tuple[str, list[str]] | None:
    """The header's time column and value columns as ``to_bars`` would pick them; None for the layouts
    only pandas reads (Date + Time pairs, an unnamed or duplicated column, no time column)."""
    if len(set(names)) != len(names) or any(not n.strip() for n in names):
        return None
    columns: dict[str, str] = {}
    for col in names:
        columns.setdefault(_norm(col), col)
    if "date" in columns and "time" in columns:
        return None
    time_col = _pick(columns, TIME_ALIASES)
    if time_col is None:
        return None
    values = []
    for name, aliases in VALUE_ALIASES.items():
        col = _pick(columns, aliases)
        if col is None and name == "volume":
            col = next((c for n, c in columns.items() if n.startswith("volume")), None)
        if col is not None:
            values.append(str(col))
    return str(time_col), values


def _read_csv_fast(path: Path) -> pd.DataFrame | None:
    """The columns the bars use, read by Arrow, when the file is the common layout (module docstring).

    Returns what pandas would give for those columns, except that the times are already parsed (as
    ``parse_timestamps`` would parse them); None sends the file down the pandas path.
    """
    if _suffix(path) not in (".csv", ".txt", ".tsv"):
        return None
    line = _first_line(path)
    sep = _delimiter(line)
    tokens = [t.strip().strip('"').strip("'") for t in line.split(sep)]
    if not tokens or _is_timestamp_token(tokens[0]):  # headerless: pandas names the columns
        return None
    try:
        with pcsv.open_csv(path, parse_options=pcsv.ParseOptions(delimiter=sep)) as reader:
            picked = _bar_columns(reader.schema.names)
    except (pa.ArrowException, OSError):
        return None
    if picked is None:
        return None
    time_col, value_cols = picked
    try:
        table = pcsv.read_csv(
            path,
            parse_options=pcsv.ParseOptions(delimiter=sep),
            convert_options=pcsv.ConvertOptions(
                include_columns=[time_col, *value_cols],
                column_types={time_col: pa.string(), **dict.fromkeys(value_cols, pa.float64())},
                null_values=_PANDAS_NULLS,
                strings_can_be_null=True,
            ),
        )
    except (pa.ArrowException, OSError):
        return None  # text in a number column, ragged rows, …: pandas reads it (or says why not)
    stamps = table.column(time_col)
    if (
        table.num_rows == 0
        or stamps.null_count
        or not pc.all(pc.match_substring_regex(stamps, _UTC_STAMP)).as_py()
    ):
        return None
    naive = pc.cast(pc.utf8_slice_codeunits(stamps, 0, -len("+00:00")), pa.timestamp("ns"))
    frame = table.drop_columns([time_col]).to_pandas()  # no Python string per row
    frame.insert(0, time_col, pd.Series(naive.to_numpy(), index=frame.index).dt.tz_localize("UTC"))
    return frame


def to_bars(frame: pd.DataFrame, spec: FileSpec, path: Path) -> pd.DataFrame:
    """Rename recognised columns to the bar schema, in file row order; unknown columns are dropped."""
    stamps = parse_timestamps(_timestamp_source(frame, path), spec.timezone, path)
    columns: dict[str, object] = {}
    for col in frame.columns:
        columns.setdefault(_norm(col), col)
    out = pd.DataFrame({"timestamp": stamps.reset_index(drop=True)})
    out["broker"] = spec.broker
    out["symbol"] = spec.symbol
    for name, aliases in VALUE_ALIASES.items():
        col = _pick(columns, aliases)
        if col is None and name == "volume":
            col = next((c for n, c in columns.items() if n.startswith("volume")), None)
        if col is None:
            if name == "spread":  # nullable by schema: a file without quotes has no spread
                out["spread"] = float("nan")
            continue  # a missing price or volume column stays missing for validate to report
        values = frame[col].reset_index(drop=True)
        if pd.api.types.is_integer_dtype(values) and not pd.api.types.is_bool_dtype(values):
            values = values.astype("float64")  # lossless; text stays text
        out[name] = values
    out["broker"] = out["broker"].astype(object)
    out["symbol"] = out["symbol"].astype(object)
    return out


def window(bars: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> tuple[pd.DataFrame, int]:
    """Rows in [start, end) plus rows with no time (validate reports those); the count in the window.

    Naive times are compared as if UTC: they only select rows, ``validate`` still fails them.
    """
    ts = bars["timestamp"]
    if not (isinstance(ts.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(ts)):
        return bars, len(bars)
    lo, hi = (start, end) if ts.dt.tz is not None else (start.tz_localize(None), end.tz_localize(None))
    inside = (ts >= lo) & (ts < hi)
    return bars.loc[inside | ts.isna()].reset_index(drop=True), int(inside.sum())


class FileSource:
    """Bars of each ``data.files`` entry; several entries for one instrument are joined in params order."""

    def __init__(self, files: Iterable[FileSpec], root: str | Path = ".") -> None:
        self.files = tuple(files)
        self.root = Path(root)
        for index, spec in enumerate(self.files):
            _check_timezone(spec, index)

    def path_of(self, spec: FileSpec) -> Path:
        path = Path(spec.path).expanduser()
        return path if path.is_absolute() else self.root / path

    def fetch(
        self, instrument: Instrument, start: pd.Timestamp, end: pd.Timestamp, interval: pd.Timedelta
    ) -> pd.DataFrame:
        """``interval`` is not used: a file's bars are whatever interval it holds (validate checks it)."""
        specs = [s for s in self.files if s.broker == instrument.broker and s.symbol == instrument.symbol]
        if not specs:
            raise SourceError(f"{instrument.key}: no data.files entry for this instrument")
        parts = []
        for spec in specs:
            path = self.path_of(spec)
            fast = _read_csv_fast(path) if path.is_file() else None
            bars = to_bars(fast if fast is not None else read_table(path), spec, path)
            kept, inside = window(bars, start, end)
            if inside == 0:
                ts = bars["timestamp"]
                raise SourceError(
                    f"{path} ({instrument.key}): none of its {len(bars)} rows fall in the window "
                    f"[{start}, {end}); the file spans {ts.min()} to {ts.max()}. Set data.end and "
                    "data.lookback_days to cover it"
                )
            parts.append(kept)
        if len(parts) == 1:
            return parts[0]
        joined = pd.concat(parts, ignore_index=True)
        return joined if len(joined) else empty_bars()
