"""The OTEL_* values the tracing runtap builds reads, checked at start-up, without the OpenTelemetry SDK.

The SDK reads most of them leniently: a value it cannot parse is logged (some with a traceback) and
replaced by its default, or is silently dropped (a header, a resource attribute), or means something
else than it says (OTEL_SDK_DISABLED=1 leaves tracing on). A sidecar that starts on such a value
exports spans nobody asked for, or none, or without its auth header. `check_env` turns each into one
ConfigError naming the variable, read by both capture modes before anything starts (the relay of
`--capture-mode process` imports no SDK; its capture process would only find out after start-up).

It checks only what matters while tracing is on (otel_env.exporter_names), except OTEL_SDK_DISABLED,
which decides that. Header values are never echoed: they carry credentials.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import unquote, urlsplit

from ...settings.config import MAX_INT, ConfigError
from . import otel_env

# The SDK's int() reads; a bound keeps a huge value from overflowing a timer or meaning "never".
_BSP_INTS: Final = ("OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_BSP_SCHEDULE_DELAY",
                    "OTEL_BSP_EXPORT_TIMEOUT")
# SpanLimits: a non-negative integer or "unset" (the SDK raises ValueError for anything else).
_LIMITS: Final = ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
                  "OTEL_ATTRIBUTE_COUNT_LIMIT", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_SPAN_EVENT_COUNT_LIMIT",
                  "OTEL_SPAN_LINK_COUNT_LIMIT", "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT")
# The Python OTLP exporter reads its timeout in seconds (the spec says milliseconds): a value beyond
# this is almost surely milliseconds meant, and would hold an export thread for hours.
MAX_EXPORT_TIMEOUT_S: Final = 600.0
_COMPRESSIONS: Final = ("none", "gzip", "deflate")
_FILES: Final = ("CERTIFICATE", "CLIENT_KEY", "CLIENT_CERTIFICATE")
# opentelemetry.util.re's liberal header entry (W3C baggage key, then any printable value).
_HEADER: Final = re.compile(r"[ \t]*[\x21\x23-\x27\x2a\x2b\x2d\x2e\x30-\x39\x41-\x5a\x5e-\x7a\x7c\x7e]+[ \t]*="
                            r"[ \t]*[\x20\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*[ \t]*")


def check_env(env: Mapping[str, str] | None = None) -> None:
    """Raise ConfigError for the first OTEL_* value tracing would misread; nothing when tracing is off."""
    env = os.environ if env is None else env
    disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower()
    if disabled not in ("", "true", "false"):
        raise ConfigError(f"invalid OTEL_SDK_DISABLED={env['OTEL_SDK_DISABLED']!r}: true or false")
    if not otel_env.exporter_names(env):
        return
    _check_bsp(env)
    for var in _LIMITS:
        raw = env.get(var)
        if raw is not None and raw.strip().lower() != "unset":
            _int(var, raw, low=0)
    _check_sampler(env)
    _check_resource(env)
    _check_exporter(env)


def _int(var: str, raw: str, *, low: int) -> int:
    try:
        n = int(raw.strip())
    except ValueError:
        n = low - 1
    if not low <= n <= MAX_INT:
        raise ConfigError(f"invalid {var}={raw!r}: an integer from {low} to {MAX_INT}")
    return n


def _check_bsp(env: Mapping[str, str]) -> None:
    values = {var: _int(var, env[var], low=1 if var != "OTEL_BSP_EXPORT_TIMEOUT" else 0)
              for var in _BSP_INTS if var in env}
    queue = values.get("OTEL_BSP_MAX_QUEUE_SIZE")
    batch = values.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
    limit = otel_env.QUEUE_SIZE if queue is None else queue
    if batch is not None and batch > limit:
        raise ConfigError(f"invalid OTEL_BSP_MAX_EXPORT_BATCH_SIZE={batch}: at most OTEL_BSP_MAX_QUEUE_SIZE "
                          f"({limit})")


def _check_sampler(env: Mapping[str, str]) -> None:
    name = env.get("OTEL_TRACES_SAMPLER")
    if name is None:
        return
    if name.lower() not in otel_env.KNOWN_SAMPLERS:  # as the SDK reads it: " traceidratio" would be its default sampler
        raise ConfigError(f"invalid OTEL_TRACES_SAMPLER={name!r}: one of {', '.join(otel_env.KNOWN_SAMPLERS)}")
    if name.lower().endswith("traceidratio") and env.get("OTEL_TRACES_SAMPLER_ARG", "").strip():
        raw = env["OTEL_TRACES_SAMPLER_ARG"]
        try:
            rate = float(raw)
        except ValueError:
            rate = math.nan
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"invalid OTEL_TRACES_SAMPLER_ARG={raw!r}: a probability in [0.0, 1.0]")


def _check_resource(env: Mapping[str, str]) -> None:
    name = env.get("OTEL_SERVICE_NAME")
    if name is not None and name and not name.strip():
        raise ConfigError(f"invalid OTEL_SERVICE_NAME={name!r}: a name, or unset")
    for item in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        if not item.strip():
            continue
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"invalid OTEL_RESOURCE_ATTRIBUTES entry {item.strip()!r}: key=value pairs "
                              "separated by commas")


def resource_attributes(env: Mapping[str, str]) -> dict[str, str]:
    """OTEL_RESOURCE_ATTRIBUTES as the SDK's OTELResourceDetector reads it (keys stripped, values
    stripped and URL-decoded), for the keys runtap itself decides on (service.name, service.instance.id)."""
    out: dict[str, str] = {}
    for item in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = item.partition("=")
        if sep:
            out[key.strip()] = unquote(value.strip())
    return out


def _traces_or_general(env: Mapping[str, str], suffix: str) -> tuple[str, str] | None:
    """(variable, value) of OTEL_EXPORTER_OTLP_TRACES_<suffix>, else OTEL_EXPORTER_OTLP_<suffix>, as the
    exporter picks (an empty value counts as unset); None when neither is set."""
    for var in (f"OTEL_EXPORTER_OTLP_TRACES_{suffix}", f"OTEL_EXPORTER_OTLP_{suffix}"):
        if env.get(var):
            return var, env[var]
    return None


def _check_exporter(env: Mapping[str, str]) -> None:
    if "otlp" not in otel_env.exporter_names(env):
        return
    for var in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        raw = env.get(var)
        if raw:
            parts = urlsplit(raw.strip())
            try:
                ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
            except ValueError:  # a port that is no number or out of range
                ok = False
            if not ok:
                raise ConfigError(f"invalid {var}={raw!r}: an http(s) URL such as http://127.0.0.1:4318")
    timeout = _traces_or_general(env, "TIMEOUT")
    if timeout is not None:
        var, raw = timeout
        try:
            seconds = float(raw)
        except ValueError:
            seconds = math.nan
        if not 0.0 < seconds <= MAX_EXPORT_TIMEOUT_S:
            raise ConfigError(f"invalid {var}={raw!r}: seconds (the Python exporter's unit), more than 0 and "
                              f"at most {MAX_EXPORT_TIMEOUT_S:.0f}")
    compression = _traces_or_general(env, "COMPRESSION")
    if compression is not None and compression[1].strip().lower() not in _COMPRESSIONS:
        raise ConfigError(f"invalid {compression[0]}={compression[1]!r}: one of {', '.join(_COMPRESSIONS)}")
    headers = _traces_or_general(env, "HEADERS")
    if headers is not None:
        for n, item in enumerate(re.split(r"[ \t]*,[ \t]*", headers[1]), 1):
            if item and not _HEADER.fullmatch(item.strip()):
                raise ConfigError(f"invalid {headers[0]}: entry {n} is not name=value (a header name, '=', "
                                  "printable characters; values not shown)")
    for suffix in _FILES:
        path = _traces_or_general(env, suffix)
        if path is not None and not os.path.isfile(path[1]):
            raise ConfigError(f"invalid {path[0]}={path[1]!r}: no such file")
