"""Settings: one frozen object parsed once from flags and `RUNTAP_*` environment variables.

Every setting is declared once in SETTINGS (name, default, help); the CLI, docs/configuration.md and the
docs test are all generated from or checked against that list. A bad value fails start-up with one
line naming the flag and the variable.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting has a bad value; the message is the one line shown to the user."""


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_hostport(value: str) -> HostPort:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or "127.0.0.1"
    if re.fullmatch(r"[0-9.]+", host):  # meant as an IPv4 address: a resolver would take 300.1.1.1 as a name
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"expected HOST:PORT, {host!r} is no IPv4 address") from None
    return HostPort(host, int(port))


def parse_upstream(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s) URL such as https://api.openai.com, got {value!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"the upstream URL may not carry a query or fragment: {value!r}")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked, and every request would ask
    except ValueError:
        raise ValueError(f"the upstream URL's port is no port number (0-65535): {value!r}") from None
    return value.rstrip("/")


def parse_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true/false, got {value!r}")


def parse_size(value: str) -> int:
    """Bytes, with an optional K/M/G suffix (binary multiples)."""
    v = value.strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    if v and v[-1] in "KMG":
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[v[-1]]
        v = v[:-1]
    f = float(v) * mult
    if not math.isfinite(f):
        raise ValueError(f"expected a finite size, got {value!r}")
    n = int(f)
    if n <= 0:
        raise ValueError(f"expected a positive size, got {value!r}")
    return n


def parse_event_loop(value: str) -> str:
    v = value.strip().lower()
    if v not in ("auto", "uvloop", "asyncio"):
        raise ValueError(f"expected auto, uvloop or asyncio, got {value!r}")
    return v


_DB_UNITS: Final = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
                    "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def parse_db_size(value: str) -> str:
    """A DuckDB memory size (512MB, 2GiB): checked here so a typo fails start-up, not every DB open.
    Below 1MB DuckDB cannot open the file at all; beyond 2^62 bytes it refuses the value."""
    v = value.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", v)
    if not m:
        raise ValueError(f"expected a size such as 512MB or 2GiB, got {value!r}")
    if not 10**6 <= float(m[1]) * _DB_UNITS[m[2]] <= 1 << 62:
        raise ValueError(f"expected a size from 1MB to 4096PiB, got {value!r}")
    return v


# Beyond a year a timer means "never" and overflows some (uvloop's, threading's) long before float does.
MAX_SECONDS: Final = 365 * 86400


def parse_seconds(value: str) -> float:
    n = float(value)
    if not math.isfinite(n) or n <= 0 or n > MAX_SECONDS:
        raise ValueError(f"expected a positive number of seconds, at most {MAX_SECONDS} (a year), got {value!r}")
    return n


def parse_seconds_or_off(value: str) -> float:
    """0 turns the feature off; otherwise as parse_seconds."""
    return 0.0 if value.strip() in ("0", "0.0") else parse_seconds(value)


MAX_INT: Final = (1 << 31) - 1
MAX_WORKERS: Final = 1024


def parse_positive_int(value: str, maximum: int = MAX_INT) -> int:
    n = int(value)
    if not 0 < n <= maximum:
        raise ValueError(f"expected a positive integer, at most {maximum}, got {value!r}")
    return n


def parse_workers(value: str) -> int:
    return parse_positive_int(value, MAX_WORKERS)


DEFAULT_DB: Final = "./runtap.duckdb"


def parse_db(value: str) -> str:
    """Empty (RUNTAP_DB="" from a template) is the default file, as every command reads it
    (analytics/commands/common.py); never DuckDB's in-memory database, which an empty path opens."""
    return value if value.strip() else DEFAULT_DB


INPROCESS: Final = "inprocess"
PROCESS: Final = "process"


def parse_capture_mode(value: str) -> str:
    v = value.lower()
    if v not in (INPROCESS, PROCESS):
        raise ValueError(f"expected inprocess or process, got {value!r}")
    return v


def parse_log_level(value: str) -> str:
    v = value.upper()
    if v not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"expected debug, info, warning or error, got {value!r}")
    return v


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    default: str
    help: str
    parse: Callable[[str], Any] = str
    flag_only_bool: bool = False  # a switch: `--store-prompts` sets it

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "RUNTAP_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("upstream", "https://api.openai.com", "Upstream base URL; the request path is appended to it "
            "(an app base_url of http://sidecar/v1 reaches UPSTREAM/v1/...).", parse_upstream),
    Setting("listen", "127.0.0.1:8080", "HOST:PORT the proxy listens on.", parse_hostport),
    Setting("admin", "127.0.0.1:9464", "HOST:PORT of the admin listener (/healthz, /readyz, /metrics, "
            "/reports). Keep it on loopback unless you mean to expose it.", parse_hostport),
    Setting("db", DEFAULT_DB, "DuckDB file that captured runs, steps, events and requests go to.", parse_db),
    Setting("spool", "", "Spool file for snapshots the DB could not take (default: DB path + .spool.jsonl).",),
    Setting("spool_max_bytes", "256M", "Bound on the spool file; snapshots beyond it are dropped and "
            "counted.", parse_size),
    Setting("spool_memory_bytes", "64M", "Bound on captured items kept in memory while neither the DB nor "
            "the spool file can take them (a full disk under both): written when space returns; beyond it, "
            "dropped and counted.", parse_size),
    Setting("connect_timeout", "10", "Seconds to connect to the upstream before answering 504 "
            "(a refused connection is a 502 at once).", parse_seconds),
    Setting("read_timeout", "600", "Idle seconds waiting for upstream bytes (headers or body) before "
            "giving up (504 before headers; stream closed after). No total timeout: runs can stream for "
            "minutes.", parse_seconds),
    Setting("client_timeout", "60", "Seconds a client connection may take to send a complete request's "
            "headers (and may stay idle between requests), and to send each part of its body; beyond it the "
            "connection is closed (the body: 408) and counted.", parse_seconds),
    Setting("grace_period", "30", "Seconds SIGTERM waits for in-flight requests and streams.", parse_seconds),
    Setting("max_body_bytes", "32M", "Largest request body accepted (413 beyond it).", parse_size),
    Setting("max_header_bytes", "16K", "Largest request header line or field accepted (431/400 beyond it).",
            parse_size),
    Setting("max_connections", "512", "Concurrent connections to the upstream (requests beyond wait).",
            parse_positive_int),
    Setting("capture_max_body", "8M", "Largest JSON response body copied for capture (bigger ones are "
            "relayed whole, not captured, and counted).", parse_size),
    Setting("db_memory_limit", "512MB", "Bound on DuckDB's buffer pool inside the sidecar (it spills to DB.tmp "
            "beside the file beyond); DuckDB's own default is 80% of RAM. The primary-key indexes of the stored run, "
            "step and response ids must fit in it, ~90 bytes an id: size it 1.25 x (100MB + 90 B x ids), so 512MB "
            "for ~3.4M ids; beyond, raise it or export and purge (alert RuntapCaptureDbMemoryHigh).",
            parse_db_size),
    Setting("idle_trim", "5", "Seconds without a new request after which runtap hands the heap memory a burst "
            "freed back to the OS (glibc malloc_trim, once per quiet spell, never while a request is in flight; "
            "with --capture-mode process the capture process too, once its writer has written everything); "
            "0 = never.", parse_seconds_or_off),
    Setting("queue_size", "100000", "Capture queue bound; snapshots beyond it are dropped and counted.",
            parse_positive_int),
    Setting("queue_max_bytes", "64M", "Bound on the memory the capture queue holds (stream chunks and bodies "
            "waiting for the writer, ~200 bytes an item besides its payload, ~80 a further chunk of a stream in a "
            "proxy process's channel; with --capture-mode process the "
            "capture process's queue and each proxy process's channel to it): beyond it chunks and bodies are "
            "dropped and counted, so capture that falls behind a sustained overload costs bounded memory.",
            parse_size),
    Setting("store_prompts", "false", "Also store run instructions and additional_messages (prompt "
            "content). Off by default.", parse_bool, flag_only_bool=True),
    Setting("metrics_label_assistant", "false", "Add assistant_id as a metric label (raises series "
            "cardinality with the number of assistants).", parse_bool, flag_only_bool=True),
    Setting("admin_reports", "true", "Serve the named SQL reports at /reports/NAME on the admin listener "
            "(aggregates by model, assistant, thread and key fingerprint; each request is a query on the "
            "sidecar's CPU). false: only /healthz, /readyz and /metrics.", parse_bool),
    Setting("key_salt", "runtap", "Salt for key fingerprints (sha256(salt+key), first 12 hex; a JWT bearer "
            "token by its principal, docs/azure.md). Set one secret value per fleet so fingerprints group "
            "spend across sidecars."),
    Setting("instance", "", "Instance id written with exports (default: the host name)."),
    Setting("prices", "", "CSV file of model prices that overrides or extends the built-in price book."),
    Setting("export_dir", "", "Directory (or s3:// URL) to export new rows to as hive-partitioned Parquet "
            "while serving; empty = no periodic export."),
    Setting("export_interval", "300", "Seconds between periodic exports (with --export-dir).", parse_seconds),
    Setting("log_level", "info", "debug, info, warning or error.", parse_log_level),
    Setting("event_loop", "auto", "auto (uvloop when installed, else asyncio), uvloop or asyncio. uvloop "
            "cuts runtap's CPU per request; asyncio is the fallback if it misbehaves.", parse_event_loop),
    Setting("workers", "1", "Proxy processes sharing the --listen port (SO_REUSEPORT, Linux): one per core "
            "to use every core. Worker i > 0 serves admin on the admin port + i; with --capture-mode inprocess it "
            "captures into DB-i (runtap-1.duckdb...) and exports as instance INSTANCE-i, with process all "
            "workers capture into one DB.", parse_workers),
    Setting("capture_mode", "inprocess", "inprocess: the capture writer is a thread of the proxy process. "
            "process: one capture process owns the DuckDB file, spool and run metrics, fed by the proxy "
            "process(es) over a Unix socket; with --workers N, N proxies share one database. inprocess costs "
            "less CPU on one core; process serves more once runtap has two cores or more.",
            parse_capture_mode),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True, slots=True)
class Settings:
    upstream: str = "https://api.openai.com"
    listen: HostPort = HostPort("127.0.0.1", 8080)
    admin: HostPort = HostPort("127.0.0.1", 9464)
    db: str = DEFAULT_DB
    spool: str = ""
    spool_max_bytes: int = 256 << 20
    spool_memory_bytes: int = 64 << 20
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    client_timeout: float = 60.0
    grace_period: float = 30.0
    max_body_bytes: int = 32 << 20
    max_header_bytes: int = 16 << 10
    max_connections: int = 512
    capture_max_body: int = 8 << 20
    db_memory_limit: str = "512MB"
    idle_trim: float = 5.0
    queue_size: int = 100_000
    queue_max_bytes: int = 64 << 20
    store_prompts: bool = False
    metrics_label_assistant: bool = False
    admin_reports: bool = True
    key_salt: str = "runtap"
    instance: str = ""
    prices: str = ""
    export_dir: str = ""
    export_interval: float = 300.0
    log_level: str = "INFO"
    event_loop: str = "auto"
    workers: int = 1
    capture_mode: str = INPROCESS

    @property
    def spool_path(self) -> str:
        return spool_path_for(self.db, self.spool)

    @property
    def instance_id(self) -> str:
        return self.instance or socket.gethostname()


def spool_path_for(db: str, spool: str = "") -> str:
    """The spool file: --spool, else beside the DB (the one place this default is written)."""
    return spool or db + ".spool.jsonl"


def add_arguments(parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup,
                  names: Sequence[str] | None = None) -> None:
    """Add the flags; defaults are left as None so env and built-in defaults apply in `resolve`.

    Every command (serve, demo, report, sql, export, purge) declares its settings through here, so a
    flag has one name, one RUNTAP_* twin, one default and one help text everywhere.
    """
    for s in SETTINGS:
        if names is not None and s.name not in names:
            continue
        help_text = f"{s.help} [env {s.env}; default {s.default or 'see text'}]".replace("%", "%%")
        if s.flag_only_bool:
            parser.add_argument(s.flag, dest=s.name, action="store_const", const="true", default=None,
                                help=help_text)
        else:
            parser.add_argument(s.flag, dest=s.name, default=None, metavar=s.name.upper(), help=help_text)


def resolve(values: Mapping[str, str | None], environ: Mapping[str, str] | None = None) -> Settings:
    """Flag value, else environment variable, else default; every value parsed and validated."""
    env = os.environ if environ is None else environ
    kwargs: dict[str, Any] = {s.name: _value(s, values.get(s.name), env) for s in SETTINGS}
    known = {f.name for f in fields(Settings)}
    assert set(kwargs) <= known  # noqa: S101 - invariant for the type checker, not an input check
    return Settings(**kwargs)


def resolve_one(name: str, value: str | None, environ: Mapping[str, str] | None = None) -> Any:
    """One setting, for a command that takes only a few: flag value, else its variable, else default."""
    return _value(_BY_NAME[name], value, os.environ if environ is None else environ)


def default_of(name: str) -> Any:
    s = _BY_NAME[name]
    return s.parse(s.default)


def _value(s: Setting, raw: str | None, env: Mapping[str, str]) -> Any:
    origin = s.flag
    if raw is None:
        raw = env.get(s.env)
        origin = s.env
    if raw is None:
        raw = s.default
        origin = "default"
    try:
        return s.parse(raw)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"invalid {s.flag} / {s.env} ({origin}): {exc}") from None


def settings_for(**overrides: Any) -> Settings:
    """Settings with built-in defaults and typed overrides; for tests and embedding."""
    unknown = set(overrides) - set(_BY_NAME)
    if unknown:
        raise ConfigError(f"unknown settings: {sorted(unknown)}")
    return Settings(**overrides)
