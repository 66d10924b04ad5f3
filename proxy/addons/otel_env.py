"""What the standard OTEL_* variables ask of tracing, read without the OpenTelemetry SDK.

`provider_from_env` (tracing.py) builds its exporters from `exporter_names`; the relay of
`--capture-mode process` (relay_tracing.py) reads the same two answers, whether spans are wanted and
which sampler decides, without importing the SDK at all: the capture process builds and exports the
spans. `sampler_from_env` reads OTEL_TRACES_SAMPLER exactly as the SDK's TracerProvider does
(`sampling._get_from_env_or_default`: six known names, anything else is the default);
tests/test_relay_tracing.py checks every name against the SDK's own sampler.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ...settings.config import ConfigError

log = logging.getLogger("runtap.tracing")

_DEFAULT: Final = "parentbased_always_on"
KNOWN_SAMPLERS: Final = ("always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
                 "parentbased_traceidratio")
# sampling.TraceIdRatioBased.TRACE_ID_LIMIT: the low 64 bits of a trace id are compared with the bound.
TRACE_ID_LIMIT: Final = (1 << 64) - 1
# The span queue of runtap's batch processor when OTEL_BSP_MAX_QUEUE_SIZE leaves it to runtap (tracing.py).
QUEUE_SIZE: Final = 8192


def exporter_names(env: Mapping[str, str] | None = None) -> list[str]:
    """The span exporters the variables ask for and can have ("otlp", "console"); [] when tracing is off.

    Off when OTEL_SDK_DISABLED=true, OTEL_TRACES_EXPORTER=none, or (for the default `otlp` exporter)
    neither OTEL_EXPORTER_OTLP_ENDPOINT nor OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set. A name or an
    OTLP protocol runtap does not support is a ConfigError.
    """
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    if not names or "none" in names:
        return []
    out: list[str] = []
    for name in names:
        if name == "otlp":
            if not (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
                continue
            var = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" if env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                   else "OTEL_EXPORTER_OTLP_PROTOCOL")
            protocol = env.get(var, "http/protobuf").strip()
            if protocol != "http/protobuf":
                raise ConfigError(f"invalid {var}={protocol!r}: runtap exports OTLP over HTTP only "
                                  "(set http/protobuf)")
            out.append(name)
        elif name == "console":
            out.append(name)
        else:
            raise ConfigError(f"invalid OTEL_TRACES_EXPORTER={name!r}: runtap supports otlp, console, none")
    return out


@dataclass(frozen=True, slots=True)
class SamplerSpec:
    """One of the SDK's built-in samplers, as values: `root` decides a trace that starts here
    ("on", "off" or "ratio" with `bound`); `parent_based` defers to an incoming parent's sampled flag."""

    parent_based: bool
    root: str
    bound: int = 0

    def sampled(self, trace_id: int, parent_sampled: bool | None) -> bool:
        """The decision, sampled and recording alike (the built-in samplers never record unsampled)."""
        if self.parent_based and parent_sampled is not None:
            return parent_sampled  # ParentBased: a remote parent's flag, ALWAYS_ON / ALWAYS_OFF
        if self.root == "ratio":
            return trace_id & TRACE_ID_LIMIT < self.bound
        return self.root == "on"


def sampler_from_env(env: Mapping[str, str] | None = None, *, warn: bool = True) -> SamplerSpec:
    """warn=False: beside the SDK's own reading of the same variables, which warns itself."""
    env = os.environ if env is None else env
    name = env.get("OTEL_TRACES_SAMPLER", _DEFAULT).lower()
    if name not in KNOWN_SAMPLERS:
        if warn:
            log.warning("Couldn't recognize sampler %s.", name)  # the SDK's own warning, and its fallback
        name = _DEFAULT
    parent_based = name.startswith("parentbased_")
    root = name.removeprefix("parentbased_")
    if root != "traceidratio":
        return SamplerSpec(parent_based, "on" if root == "always_on" else "off")
    try:
        rate = float(env.get("OTEL_TRACES_SAMPLER_ARG", ""))
    except ValueError:
        if warn:
            log.warning("Could not convert TRACES_SAMPLER_ARG to float. Using default rate 1.0.")
        rate = 1.0
    if not 0.0 <= rate <= 1.0:  # the SDK warns and uses 1.0: tracing every request is no safe fallback
        raise ConfigError(f"invalid OTEL_TRACES_SAMPLER_ARG={rate!r}: a probability in [0.0, 1.0]")
    return SamplerSpec(parent_based, "ratio", round(rate * (TRACE_ID_LIMIT + 1)))
