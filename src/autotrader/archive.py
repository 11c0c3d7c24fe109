"""Long-term archive of raw bars: gzip CSV day partitions in a local folder or an S3 bucket.

Layout under ``archive.url``: ``broker=…/symbol=…/date=YYYY-MM-DD/bars.csv.gz``, the same partitioning
as the raw Parquet store, in a format any tool can read in twenty years. The bytes are deterministic
(fixed columns, shortest round-trip floats, gzip with ``mtime=0`` and no file name), so re-archiving a
day that has not changed produces the same bytes and the object is skipped, not rewritten: the stage
is idempotent and cheap to run every day.

The archive is write-once. An archived object whose content would change is an error naming every
such object, and nothing is written; only ``replace=True`` (``archive.replace`` or the stage's
``--replace``) replaces it, and then the old bytes are kept: as a dated sibling
(``bars.replaced-<UTC time>.csv.gz``) in a folder or an unversioned bucket, or as the previous object
version when the bucket has versioning on. The stage archives only bars whose validation verdict
(``metrics/validation.json``) says success for exactly these bars and this window
(``require_verdict``).

S3 calls have deadlines: connect and read timeouts and a bounded number of attempts
(``archive.connect_timeout_s``, ``archive.read_timeout_s``, ``archive.max_attempts``), so a stopped
endpoint fails the stage in seconds with an error that names the S3 error code, never hangs it.

Remote URLs go through fsspec (``s3://bucket/prefix`` through s3fs). Credentials come only from the
environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN`` or any botocore
source); a custom endpoint (MinIO, moto, Ceph) from ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, which
botocore honours itself, or ``AUTOTRADER_S3_ENDPOINT_URL``, which wins and is passed explicitly.

Why one module of ~510 lines: the byte format (``encode_bars``), the write-once comparison with what
is archived and the reading back share that format and the key layout; kept together, a reader can
never drift from the writer. The sections below (encoding, targets, archiving, reading back) are its parts.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from autotrader import rawstore
from autotrader.atomic import write_bytes
from autotrader.console import progress
from autotrader.errors import AutoTraderError
from autotrader.jsonfiles import read_json
from autotrader.params import DataParams
from autotrader.schema import BAR_COLUMNS, NUMERIC_COLUMNS

ARCHIVE_FILE = "bars.csv.gz"
ENDPOINT_ENV = "AUTOTRADER_S3_ENDPOINT_URL"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UPLOAD_BATCH = 64  # objects sent concurrently per batch to a remote store


class ArchiveError(AutoTraderError):
    """The archive cannot be read or written: missing raw bars, bad URL, credentials, bucket."""


# --------------------------------------------------------------------------- encoding (pure)


def encode_bars(frame: pd.DataFrame) -> bytes:
    """Bars → deterministic gzip CSV bytes.

    Rows stay in the order the raw store holds them (the archive is a faithful copy, not a cleaned
    one). Timestamps are written as ISO 8601 UTC, floats with Python's shortest repr (which reads
    back to the identical float), a missing spread as an empty field. ``mtime=0`` and no file name
    in the gzip header make the bytes depend on the content only.
    """
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        raise ArchiveError(f"bars lack column(s) {', '.join(missing)}; expected {', '.join(BAR_COLUMNS)}")
    out = frame.loc[:, list(BAR_COLUMNS)].copy()
    ts = pd.to_datetime(out["timestamp"], utc=True).dt.tz_convert(None).to_numpy("datetime64[us]")
    out["timestamp"] = np.char.add(np.datetime_as_string(ts, unit="us"), "Z")  # 2026-11-18T00:00:00.000000Z
    text = out.to_csv(index=False, lineterminator="\n")
    return gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)


def decode_bars(data: bytes) -> pd.DataFrame:
    """Gzip CSV bytes → bars in the bar schema (UTC timestamps, float64 numbers, nullable spread)."""
    frame = pd.read_csv(
        io.BytesIO(gzip.decompress(data)),
        dtype={"broker": str, "symbol": str, **dict.fromkeys(NUMERIC_COLUMNS, "float64")},
        float_precision="round_trip",
        keep_default_na=False,
        na_values={c: [""] for c in NUMERIC_COLUMNS},
    )
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    frame["broker"] = frame["broker"].astype(object)
    frame["symbol"] = frame["symbol"].astype(object)
    return frame.loc[:, list(BAR_COLUMNS)]


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def partition_key(broker: str, symbol: str, date: str) -> str:
    """Relative object key of one day: ``broker=…/symbol=…/date=…/bars.csv.gz``."""
    return f"broker={broker}/symbol={symbol}/date={date}/{ARCHIVE_FILE}"


def redact_url(url: str) -> str:
    """The URL without user info or query string, safe to print and to put in metrics."""
    parts = urlsplit(url)
    if not parts.scheme or len(parts.scheme) == 1:  # a local path (or a Windows drive letter)
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class ArchiveTarget:
    """Where the archive lives: a local directory, or an fsspec filesystem and a root inside it."""

    url: str  # redacted, for messages and metrics
    root: str  # local directory, or bucket/prefix for fsspec
    fs: Any = None  # None for a local directory
    deadlines: Deadlines | None = None  # of a remote store, for error messages

    @property
    def is_local(self) -> bool:
        return self.fs is None

    def path_of(self, key: str) -> str:
        return str(Path(self.root) / key) if self.is_local else f"{self.root.rstrip('/')}/{key}"


@dataclass(frozen=True)
class Deadlines:
    """How long one S3 call may take: botocore's connect and read timeouts and its attempts (retries + 1)."""

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0
    max_attempts: int = 3

    def describe(self) -> str:
        return (
            f"connect timeout {self.connect_timeout_s:g}s, read timeout {self.read_timeout_s:g}s, "
            f"{self.max_attempts} attempt(s)"
        )


def storage_options(protocol: str, deadlines: Deadlines | None = None) -> dict[str, Any]:
    """Options for the fsspec filesystem: deadlines from params, endpoint from the environment, no secret."""
    if protocol not in ("s3", "s3a"):
        return {}
    deadlines = deadlines or Deadlines()
    options: dict[str, Any] = {
        "use_listings_cache": False,
        "skip_instance_cache": True,
        "config_kwargs": {
            "connect_timeout": deadlines.connect_timeout_s,
            "read_timeout": deadlines.read_timeout_s,
            "retries": {"max_attempts": deadlines.max_attempts, "mode": "standard"},
        },
    }
    endpoint = os.environ.get(ENDPOINT_ENV)
    if endpoint:
        options["endpoint_url"] = endpoint
    return options


def open_target(url: str, deadlines: Deadlines | None = None) -> ArchiveTarget:
    """Resolve ``archive.url``: ``s3://bucket/prefix`` (or any fsspec URL), ``file://…`` or a plain path."""
    if not url.strip():
        raise ArchiveError("archive.url is empty; set a folder or s3://bucket/prefix in params.yaml")
    parts = urlsplit(url)
    if not parts.scheme or len(parts.scheme) == 1 or parts.scheme == "file":
        local = parts.path if parts.scheme == "file" else url
        return ArchiveTarget(url=url, root=str(Path(local)))
    if parts.username or parts.password:
        raise ArchiveError(
            f"archive.url {redact_url(url)!r} carries credentials; put them in the environment instead"
        )
    if not parts.netloc:
        raise ArchiveError(f"archive.url {redact_url(url)!r} names no bucket")
    import fsspec

    try:
        fs = fsspec.filesystem(parts.scheme, **storage_options(parts.scheme, deadlines))
    except (ImportError, ValueError) as exc:
        raise ArchiveError(
            f"archive.url {redact_url(url)!r}: no filesystem for {parts.scheme}://: {exc}"
        ) from exc
    if parts.scheme in ("s3", "s3a"):
        fs.retries = 1  # botocore retries (max_attempts); s3fs's own loop would multiply the deadline
    root = f"{parts.netloc}{parts.path}".rstrip("/")
    return ArchiveTarget(url=redact_url(url), root=root, fs=fs, deadlines=deadlines or Deadlines())


def _client_errors() -> tuple[type[BaseException], ...]:
    """botocore's own failures (no credentials, endpoint unreachable) that s3fs lets through."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return ()
    return (BotoCoreError, ClientError)


def s3_error_code(exc: BaseException) -> str:
    """The S3 error code behind an exception (``NoSuchBucket``, ``AccessDenied``, …), following the chain
    s3fs builds; for a failure with no S3 answer, botocore's exception name (``ReadTimeoutError``)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    names = []
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        if isinstance(response, dict) and response.get("Error", {}).get("Code"):
            return str(response["Error"]["Code"])
        if type(current).__module__.startswith(("botocore", "aiobotocore")):
            names.append(type(current).__name__)
        current = current.__cause__ or current.__context__
    return names[0] if names else type(exc).__name__


def _remote_call(target: ArchiveTarget, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one remote call; turn the usual failures into an ArchiveError naming the URL, S3 code and cause."""
    try:
        return func(*args, **kwargs)
    except FileNotFoundError as exc:
        raise ArchiveError(
            f"{target.url}: {what}: not found (S3 code {s3_error_code(exc)}; does the bucket exist?): {exc}"
        ) from exc
    except PermissionError as exc:
        raise ArchiveError(
            f"{target.url}: {what}: access denied (S3 code {s3_error_code(exc)}; check the AWS credentials): {exc}"
        ) from exc
    except (OSError, *_client_errors()) as exc:
        deadline = f"; {target.deadlines.describe()}" if target.deadlines else ""
        raise ArchiveError(
            f"{target.url}: {what}: S3 code {s3_error_code(exc)}: {type(exc).__name__}: {exc}{deadline}"
        ) from exc


# --------------------------------------------------------------------------- archiving


@dataclass
class ArchiveResult:
    """What one archive run did; ``as_metrics()`` is ``metrics/archive.json``."""

    url: str
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_written: int = 0
    bytes_total: int = 0
    instruments: list[str] = field(default_factory=list)
    first_date: str | None = None
    last_date: str | None = None
    replaced: list[str] = field(default_factory=list)  # keys whose content changed (only with replace)
    kept: list[str] = field(default_factory=list)  # where each replaced object's old content is

    def as_metrics(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "objects_total": len(self.written) + len(self.skipped),
            "objects_written": len(self.written),
            "objects_skipped": len(self.skipped),
            "bytes_written": self.bytes_written,
            "bytes_total": self.bytes_total,
            "instruments": self.instruments,
            "first_date": self.first_date,
            "last_date": self.last_date,
            "objects_replaced": len(self.replaced),
            "replaced": [{"key": k, "old_version": o} for k, o in zip(self.replaced, self.kept, strict=True)],
        }


def raw_partitions(raw_root: str | Path) -> Iterator[tuple[str, str, str, Path]]:
    """(broker, symbol, date, parquet file) of every dated raw partition, in a stable order."""
    for broker, symbol in rawstore.instruments(raw_root):
        for path in rawstore.partition_files(raw_root, broker, symbol):
            date = path.parent.name.split("=", 1)[1]
            if not _DATE.match(date):
                raise ArchiveError(
                    f"{path}: partition date {date!r} is not YYYY-MM-DD ({broker}/{symbol}); "
                    "the raw store holds bars with unreadable timestamps — run validate"
                )
            yield broker, symbol, date, path


def read_partition(path: Path) -> pd.DataFrame:
    """One raw day file, rows exactly as the raw store holds them."""
    try:
        return pq.read_table(path).to_pandas()
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"{path}: unreadable raw partition: {exc}") from exc


def _existing_local(target: ArchiveTarget, key: str) -> bytes | None:
    path = Path(target.path_of(key))
    return path.read_bytes() if path.is_file() else None


def _remote_listing(target: ArchiveTarget) -> dict[str, dict[str, Any]]:
    """Every object under the root with its size and ETag: one paged LIST instead of a HEAD per object."""
    fs = target.fs
    if not _remote_call(target, "list", fs.exists, target.root):
        return {}
    found = _remote_call(target, "list", fs.find, target.root, detail=True)
    prefix = target.root.rstrip("/") + "/"
    return {name[len(prefix) :]: info for name, info in found.items() if name.startswith(prefix)}


def _remote_matches(target: ArchiveTarget, key: str, info: dict[str, Any], data: bytes) -> bool:
    """Same content remotely? A single-part upload's ETag is its MD5; otherwise compare the bytes."""
    if int(info.get("size", -1)) != len(data):
        return False
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    if re.fullmatch(r"[0-9a-f]{32}", etag):
        return etag == md5_hex(data)
    return _remote_call(target, f"read {key}", target.fs.cat_file, target.path_of(key)) == data


def _upload(target: ArchiveTarget, batch: dict[str, bytes]) -> None:
    """Put a batch of objects concurrently; each S3 PUT is atomic (readers see old or new, never half)."""
    paths = {target.path_of(key): data for key, data in batch.items()}
    results = _remote_call(target, f"upload {len(batch)} object(s)", target.fs.pipe, paths)
    for (key, data), result in zip(batch.items(), results or [], strict=False):
        etag = str((result or {}).get("ETag", "")).strip('"') if isinstance(result, dict) else ""
        if re.fullmatch(r"[0-9a-f]{32}", etag) and etag != md5_hex(data):
            raise ArchiveError(f"{target.url}/{key}: upload corrupted (ETag {etag} ≠ MD5 {md5_hex(data)})")


def replaced_key(key: str, stamp: str) -> str:
    """The dated sibling that keeps a replaced object: ``…/bars.replaced-20261129T200102Z.csv.gz``."""
    stem = key.removesuffix(".csv.gz")
    return f"{stem}.replaced-{stamp}.csv.gz"


def _bucket_versioned(target: ArchiveTarget) -> bool:
    """Whether the bucket keeps every object version (then a replaced object stays as its previous version)."""
    bucket = target.root.split("/", 1)[0]
    try:
        return bool(_remote_call(target, "read bucket versioning", target.fs.is_bucket_versioned, bucket))
    except ArchiveError:  # not allowed to ask: keep a dated sibling, which is always safe
        return False


def _keep_old(target: ArchiveTarget, keys: list[str], stamp: str) -> list[str]:
    """Before replacing ``keys``, keep their current content; returns where each old version is."""
    if not target.is_local and _bucket_versioned(target):
        return ["bucket-versioning" for _ in keys]
    kept = []
    for key in keys:
        sibling = replaced_key(key, stamp)
        if target.is_local:
            write_bytes(target.path_of(sibling), Path(target.path_of(key)).read_bytes())
        else:
            _remote_call(target, f"copy {key}", target.fs.copy, target.path_of(key), target.path_of(sibling))
        kept.append(sibling)
    return kept


def archive_raw(
    raw_root: str | Path,
    url: str,
    show_progress: bool = True,
    *,
    replace: bool = False,
    deadlines: Deadlines | None = None,
    now: datetime | None = None,
) -> ArchiveResult:
    """Archive every raw day partition to ``url``: new objects written, unchanged ones skipped.

    An object that exists with other content is a conflict: an ``ArchiveError`` naming the objects and
    nothing written, unless ``replace``, which keeps the old content first (``_keep_old``).
    """
    raw_root = Path(raw_root)
    if not raw_root.is_dir():
        raise ArchiveError(f"{raw_root}: raw bars not found; run the extract stage first")
    parts = list(raw_partitions(raw_root))
    if not parts:
        raise ArchiveError(
            f"{raw_root}: no raw partitions (broker=…/symbol=…/date=…/bars.parquet) to archive"
        )
    target = open_target(url, deadlines)
    result = ArchiveResult(url=target.url)
    result.instruments = sorted({f"{b}/{s}" for b, s, _, _ in parts})
    dates = sorted(d for _, _, d, _ in parts)
    result.first_date, result.last_date = dates[0], dates[-1]
    listing = None if target.is_local else _remote_listing(target)
    to_write: dict[str, bytes] = {}
    conflicts: list[str] = []

    with progress() as bar:
        task = bar.add_task(f"archive → {target.url}", total=len(parts), visible=show_progress)
        for broker, symbol, date, path in parts:  # compare everything first: a conflict writes nothing
            key = partition_key(broker, symbol, date)
            data = encode_bars(read_partition(path))
            result.bytes_total += len(data)
            if target.is_local:
                old = _existing_local(target, key)
                exists, same = old is not None, old is not None and md5_hex(old) == md5_hex(data)
            else:
                info = (listing or {}).get(key)
                exists = info is not None
                same = exists and _remote_matches(target, key, info, data)
            if same:
                result.skipped.append(key)
            else:
                if exists:
                    conflicts.append(key)
                to_write[key] = data
            bar.advance(task)
    if conflicts and not replace:
        shown = ", ".join(f"{target.url}/{k}" for k in conflicts[:5])
        more = f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else ""
        raise ArchiveError(
            f"{len(conflicts)} archived object(s) would change: {shown}{more}. The archive is write-once: "
            "nothing was written; to replace them (the old versions are kept) run the archive stage "
            "with --replace or set archive.replace: true"
        )
    if conflicts:
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        result.replaced = list(conflicts)
        result.kept = _keep_old(target, conflicts, stamp)
    keys = list(to_write)
    for i in range(0, len(keys), _UPLOAD_BATCH):
        batch = {k: to_write[k] for k in keys[i : i + _UPLOAD_BATCH]}
        if target.is_local:
            for key, data in batch.items():
                write_bytes(target.path_of(key), data)
        else:
            _upload(target, batch)
        result.written.extend(batch)
        result.bytes_written += sum(len(d) for d in batch.values())
    return result


def require_verdict(verdict_path: str | Path, raw_root: str | Path, data: DataParams) -> dict[str, Any]:
    """The validate stage's verdict must say success about exactly these raw bars and this window.

    Refuses (``ArchiveError``) a missing or unreadable verdict, a failed one (naming the instruments),
    one without a seal, or a stale one: bars changed since, or another window (``rawstore.seal``).
    """
    path = Path(verdict_path)
    verdict = read_json(path, ArchiveError, "run the validate stage before archiving")
    if not isinstance(verdict, dict) or verdict.get("success") is not True:
        failed = []
        if isinstance(verdict, dict) and isinstance(verdict.get("instruments"), dict):
            failed = [k for k, v in verdict["instruments"].items() if not (v or {}).get("success")]
        which = f" ({', '.join(failed)})" if failed else ""
        raise ArchiveError(
            f"{path}: validation failed{which}; refusing to archive bars that broke a rule "
            "(the archive keeps only validated data)"
        )
    sealed = verdict.get(rawstore.SEAL_KEY)
    if not isinstance(sealed, dict):
        raise ArchiveError(f"{path}: the verdict names no raw bars (no seal); run the validate stage again")
    current = rawstore.seal(raw_root, data)
    if sealed.get("window") != current["window"]:
        raise ArchiveError(
            f"{path}: stale verdict: it is about window {sealed.get('window')}, the archive run is about "
            f"{current['window']}; run the validate stage for this window first"
        )
    if sealed.get("fingerprint") != current["fingerprint"]:
        raise ArchiveError(
            f"{path}: stale verdict: {raw_root} changed since it was validated (fingerprint "
            f"{str(sealed.get('fingerprint'))[:12]}… ≠ {current['fingerprint'][:12]}…); run the validate stage first"
        )
    return verdict


# --------------------------------------------------------------------------- reading back


def read_archived_bytes(url: str, broker: str, symbol: str, date: str) -> bytes:
    """The stored gzip bytes of one archived day, exactly as written."""
    target = open_target(url)
    key = partition_key(broker, symbol, date)
    if target.is_local:
        path = Path(target.path_of(key))
        if not path.is_file():
            raise ArchiveError(f"{path}: not in the archive ({broker}/{symbol} {date})")
        return path.read_bytes()
    try:
        return _remote_call(target, f"read {key}", target.fs.cat_file, target.path_of(key))
    except ArchiveError as exc:
        raise ArchiveError(f"{target.url}/{key}: not readable ({broker}/{symbol} {date}): {exc}") from exc


def read_archived(url: str, broker: str, symbol: str, date: str) -> pd.DataFrame:
    """One archived day as bars in the bar schema."""
    return decode_bars(read_archived_bytes(url, broker, symbol, date))


def archived_dates(url: str, broker: str, symbol: str) -> list[str]:
    """Dates archived for one instrument, sorted."""
    target = open_target(url)
    base = f"broker={broker}/symbol={symbol}"
    if target.is_local:
        names: Iterable[str] = (p.name for p in Path(target.path_of(base)).glob("date=*") if p.is_dir())
    else:
        prefix = target.path_of(base)
        if not _remote_call(target, "list", target.fs.exists, prefix):
            return []
        names = (p.rstrip("/").rsplit("/", 1)[-1] for p in _remote_call(target, "list", target.fs.ls, prefix))
    return sorted(n.split("=", 1)[1] for n in names if n.startswith("date="))
