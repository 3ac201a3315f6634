"""Where data lives: URIs, S3 settings, and the filesystems and clients that reach them.

A URI is `s3://bucket/key` or a local path. This is the one module that builds S3 clients and
pyarrow filesystems; everything else asks it. Settings come from the standard AWS variables
(`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...) unless a config overrides them, and
credentials never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

S3_SCHEME = "s3://"


class StorageError(RuntimeError):
    """An object store or path could not be used; the message names where and why."""


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None = None  # None: AWS itself
    region: str = "us-east-1"
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 60.0
    max_attempts: int = 4  # transient errors are retried with back-off by the SDKs

    @classmethod
    def from_env(cls, environ: dict | None = None, **overrides) -> "S3Settings":
        """Settings from the standard AWS variables; keyword arguments that are not None win."""
        env = os.environ if environ is None else environ
        settings = cls(
            endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
        )
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def where(self) -> str:
        """The endpoint, for messages: never includes credentials."""
        return f"S3 endpoint {self.endpoint_url or 'AWS (default)'} (region {self.region})"

    def _endpoint_parts(self) -> tuple[str | None, str | None]:
        if not self.endpoint_url:
            return None, None
        scheme, _, rest = self.endpoint_url.partition("://")
        if not rest:
            raise StorageError(f"AWS_ENDPOINT_URL must look like http://host:port, got {self.endpoint_url!r}")
        return scheme, rest.rstrip("/")


def is_s3(uri: str) -> bool:
    return str(uri).startswith(S3_SCHEME)


def split_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b` -> ('bucket', 'a/b')."""
    if not is_s3(uri):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len(S3_SCHEME):].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, key.strip("/")


def join(uri: str, *parts: str) -> str:
    """Append path parts to a URI or local path."""
    base = str(uri).rstrip("/")
    tail = "/".join(p.strip("/") for p in parts if p)
    return f"{base}/{tail}" if tail else base


def relative_key(root: str, uri: str) -> str:
    """The part of `uri` below `root`, as a '/'-separated key."""
    root, uri = str(root).rstrip("/") + "/", str(uri)
    if not uri.startswith(root):
        raise ValueError(f"{uri!r} is not under {root!r}")
    return uri[len(root):]


def filesystem(uri: str, settings: S3Settings | None = None) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it, as Ray Data and Ray Train take them."""
    if not is_s3(uri):
        return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    settings = settings or S3Settings.from_env()
    scheme, host = settings._endpoint_parts()
    fs = pafs.S3FileSystem(
        access_key=settings.access_key_id,
        secret_key=settings.secret_access_key,
        session_token=settings.session_token,
        region=settings.region,
        endpoint_override=host,
        scheme=scheme or "https",
        connect_timeout=settings.connect_timeout_s,
        request_timeout=settings.read_timeout_s,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=settings.max_attempts),
    )
    bucket, key = split_s3(uri)
    return fs, f"{bucket}/{key}".rstrip("/")


def s3_client(settings: S3Settings | None = None):
    """A boto3 S3 client with bounded timeouts and standard retries."""
    import boto3
    from botocore.config import Config

    settings = settings or S3Settings.from_env()
    settings._endpoint_parts()  # validates the endpoint's form
    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        aws_session_token=settings.session_token,
        config=Config(
            connect_timeout=settings.connect_timeout_s,
            read_timeout=settings.read_timeout_s,
            retries={"max_attempts": settings.max_attempts, "mode": "standard"},
        ),
    )


@functools.lru_cache(maxsize=8)
def _cached_client(settings: S3Settings):
    """One client per settings and process: boto3 clients are thread-safe and slow to make."""
    return s3_client(settings)


@contextmanager
def _explained(action: str, uri: str, settings: S3Settings | None):
    """Turn S3 SDK errors into StorageError naming the URI and the endpoint (no credentials)."""
    try:
        yield
    except Exception as error:
        # pyarrow raises OSError; botocore's errors are its own, not OSErrors.
        from_sdk = isinstance(error, OSError) or type(error).__module__.split(".")[0] in ("botocore", "boto3")
        if isinstance(error, (FileNotFoundError, StorageError)) or not is_s3(uri) or not from_sdk:
            raise
        reason = " ".join(str(error).split())[:300]
        where = (settings or S3Settings.from_env()).where
        raise StorageError(f"could not {action} {uri} at {where}: {type(error).__name__}: {reason}") from None


def read_bytes(uri: str, settings: S3Settings | None = None) -> bytes:
    """A whole file. From S3 through boto3: pyarrow's reader fails, instead of retrying, when a GET
    first meets a 503 SlowDown with its XML body (S3's "back off"; tests/test_storage.py)."""
    if not is_s3(uri):
        fs, path = filesystem(uri, settings)
        with fs.open_input_stream(path) as stream:
            return stream.read()
    bucket, key = split_s3(uri)
    client = _cached_client(settings or S3Settings.from_env())
    with _explained("read", uri, settings):
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"no such file: {uri}") from None


def write_bytes(uri: str, data: bytes, settings: S3Settings | None = None) -> None:
    fs, path = filesystem(uri, settings)
    with _explained("write", uri, settings):
        if not is_s3(uri):
            fs.create_dir(str(Path(path).parent), recursive=True)
        with fs.open_output_stream(path) as stream:
            stream.write(data)


def write_table(table: pa.Table, uri: str, settings: S3Settings | None = None) -> None:
    """One whole Parquet file or none: S3 puts are atomic; a local file is written aside and renamed."""
    fs, path = filesystem(uri, settings)
    with _explained("write", uri, settings):
        if is_s3(uri):
            pq.write_table(table, path, filesystem=fs)
            return
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        pq.write_table(table, path + ".tmp", filesystem=fs)
        fs.move(path + ".tmp", path)


def read_tables(uri: str, schema: pa.Schema, settings: S3Settings | None = None,
                columns: list[str] | None = None) -> pa.Table:
    """`columns` (default all) of every Parquet file under `uri` as one table of `schema`; an empty
    table when there is none."""
    files = [f for f in list_files(uri, settings) if f.endswith(".parquet")] if exists(uri, settings) else []
    if not files:
        empty = schema.empty_table()
        return empty.select(columns) if columns else empty
    fs, _ = filesystem(uri, settings)
    with _explained("read", uri, settings):
        dataset = pq.ParquetDataset([filesystem(f, settings)[1] for f in files], filesystem=fs, schema=schema)
        return dataset.read(columns=columns)


def exists(uri: str, settings: S3Settings | None = None) -> bool:
    fs, path = filesystem(uri, settings)
    with _explained("look up", uri, settings):
        return fs.get_file_info(path).type != pafs.FileType.NotFound


def list_files(uri: str, settings: S3Settings | None = None) -> list[str]:
    """Every file under `uri`, recursively, as sorted URIs."""
    base = str(uri).rstrip("/")
    return [join(base, relative) for relative, _, _ in _listing(uri, settings)]


def list_sized(uri: str, settings: S3Settings | None = None) -> list[tuple[str, int]]:
    """(key relative to `uri`, size in bytes) of every file under it, recursively, sorted by key."""
    return [(relative.lstrip("/"), size) for relative, size, _ in _listing(uri, settings)]


def _listing(uri: str, settings: S3Settings | None) -> list[tuple[str, int, int]]:
    """(path relative to `uri`, size, modification time in ns) of every file under it, sorted."""
    fs, path = filesystem(uri, settings)
    with _explained("list", uri, settings):
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return sorted((i.path[len(path):], i.size, i.mtime_ns or 0) for i in infos if i.type == pafs.FileType.File)


def copy_tree(source: str, destination: str, settings: S3Settings | None = None) -> int:
    """Copy every file under `source` to the same relative keys under `destination`."""
    count = len(list_files(source, settings))
    (src_fs, src_path), (dst_fs, dst_path) = filesystem(source, settings), filesystem(destination, settings)
    with _explained("copy", source, settings), _explained("copy to", destination, settings):
        if not is_s3(destination):
            dst_fs.create_dir(dst_path, recursive=True)
        pafs.copy_files(src_path, dst_path, source_filesystem=src_fs, destination_filesystem=dst_fs)
    return count


def check_reachable(uri: str, settings: S3Settings | None = None) -> None:
    """Fail fast, with the endpoint named, if the bucket behind `uri` cannot be reached."""
    if not is_s3(uri):
        return
    settings = settings or S3Settings.from_env()
    bucket, _ = split_s3(uri)
    with _explained("reach the bucket of", uri, settings):
        s3_client(replace(settings, max_attempts=2)).head_bucket(Bucket=bucket)


def make_bucket(uri: str, settings: S3Settings | None = None) -> None:
    """Create the bucket of `uri` if it does not exist (for local servers and tests)."""
    bucket, _ = split_s3(uri)
    client = s3_client(settings)
    with _explained("create the bucket of", uri, settings):
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)


def node_cache_dir() -> Path:
    """Where models fetched from S3 are kept on this node (MEDEID_CACHE, else ~/.cache/medeid)."""
    return Path(os.environ.get("MEDEID_CACHE", Path.home() / ".cache" / "medeid"))


def local_copy(uri: str, settings: S3Settings | None = None) -> Path:
    """A local folder holding the files under `uri`: the folder itself, or a node-local copy.

    The copy is named by the URI, its endpoint and what is there (each file's path, size and time),
    so a model written again under the same URI is copied again, not served stale from the cache. It
    is made once per node: processes on the node wait on a file lock, and a marker written last tells
    a finished copy from an interrupted one.
    """
    if not is_s3(uri):
        path = Path(uri).expanduser().resolve()
        if not path.is_dir():
            raise FileNotFoundError(f"no such folder: {path}")
        return path
    where = (settings or S3Settings.from_env()).where
    listing = _listing(uri, settings)
    if not listing:
        raise FileNotFoundError(f"nothing under {uri} at {where}")
    name = hashlib.sha256(f"{uri.rstrip('/')}\n{where}".encode()).hexdigest()[:16]
    content = hashlib.sha256(repr(listing).encode()).hexdigest()[:16]
    target = node_cache_dir() / f"{name}-{content}"
    done = target / ".medeid-complete"
    target.mkdir(parents=True, exist_ok=True)
    with open(target.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            copy_tree(uri, str(target), settings)
            done.write_text(uri)
    return target
