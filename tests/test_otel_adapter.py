"""The OpenTelemetry SDK fields tracing's fast path reads privately are all still there and still mean
what runtap assumes (proxy/addons/otel_private.py). pyproject declares an SDK range, not a pin: this is
the test that fails loudly on the release that changes them."""

from __future__ import annotations

import operator
import re
from pathlib import Path

import pytest
from runtap.proxy.addons import otel_private

ROOT = Path(__file__).resolve().parents[1]


def test_the_installed_sdk_still_has_every_private_field_runtap_reads() -> None:
    assert otel_private.incompatibilities() == [], (
        "the installed opentelemetry-sdk changed fields runtap reads; update proxy/addons/otel_private.py "
        "(or narrow the SDK range in pyproject.toml)")


def test_a_changed_field_is_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    names = [private for private, _ in otel_private.SPAN_FIELDS]
    names[6] = "_attributes_v2"  # as if the SDK renamed ReadableSpan._attributes
    monkeypatch.setattr(otel_private, "span_fields", operator.attrgetter(*names))
    (problem,) = otel_private.incompatibilities()
    assert "_attributes_v2" in problem


# An SDK object's private attribute: span._attributes, tracer._span_limits, sampler._root, ...
PRIVATE_SDK_READ = re.compile(r"\b(span|tracer|sampler|provider|processor)\._[a-z]|opentelemetry[\w.]*\._internal")


def test_no_other_module_reads_private_sdk_fields() -> None:
    offenders = [f"{p.relative_to(ROOT).as_posix()}: {m.group(0)}" for p in (ROOT / "proxy").rglob("*.py")
                 if p.name != "otel_private.py" for m in PRIVATE_SDK_READ.finditer(p.read_text())]
    assert offenders == []


def test_the_private_read_check_sees_one() -> None:
    assert PRIVATE_SDK_READ.search("limit = tracer._span_limits.max_span_attribute_length")
    assert PRIVATE_SDK_READ.search("from opentelemetry.exporter.otlp.proto.common._internal import x")
    assert not PRIVATE_SDK_READ.search("self._runs._emit(span_context)")
