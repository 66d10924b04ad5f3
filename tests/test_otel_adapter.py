"""The OpenTelemetry SDK fields tracing's fast path reads privately are all still there and still mean
what runtap assumes (proxy/addons/otel_private.py). pyproject declares an SDK range, not a pin: this is
the test that fails loudly on the release that changes them."""

from __future__ import annotations

import ast
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


def test_a_changed_exporter_field_is_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    names = [*otel_private.EXPORTER_FIELDS[:3], "_http_client"]  # as if the SDK renamed OTLPSpanExporter._client
    monkeypatch.setattr(otel_private, "exporter_fields", operator.attrgetter(*names))
    (problem,) = otel_private.incompatibilities()
    assert "_http_client" in problem


# An SDK object's private attribute (span._attributes, tracer._span_limits, sampler._root, ...), a private
# SDK module (...common._internal, ...http._common) or a private name imported from the SDK.
PRIVATE_SDK_READ = re.compile(r"\b(span|tracer|sampler|provider|processor)\._[a-z]|opentelemetry[\w.]*\._[a-z]"
                              r"|from opentelemetry[\w.]* import \(?\s*_[A-Za-z]")


def inherited_private_reads(source: str) -> list[str]:
    """`self._x` read in a subclass of an SDK class without the subclass setting or defining `_x`: a
    private field of the SDK's, read where PRIVATE_SDK_READ cannot see whose field it is."""
    tree = ast.parse(source)
    sdk = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
           and (n.module or "").startswith("opentelemetry") for a in n.names}
    found = []
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        if not any(isinstance(b, ast.Name) and b.id in sdk for b in cls.bases):
            continue
        reads = [n for n in ast.walk(cls) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                 and n.value.id == "self" and n.attr.startswith("_") and not n.attr.startswith("__")]
        own = {n.attr for n in reads if isinstance(n.ctx, ast.Store)} | {
            f.name for f in cls.body if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)}
        found += [f"{cls.name}: self.{n.attr}" for n in reads if isinstance(n.ctx, ast.Load) and n.attr not in own]
    return found


def test_no_other_module_reads_private_sdk_fields() -> None:
    offenders = [f"{p.relative_to(ROOT).as_posix()}: {m}" for p in (ROOT / "proxy").rglob("*.py")
                 if p.name != "otel_private.py"
                 for m in [m.group(0) for m in PRIVATE_SDK_READ.finditer(p.read_text())]
                 + inherited_private_reads(p.read_text())]
    assert offenders == []


def test_the_private_read_check_sees_one() -> None:
    assert PRIVATE_SDK_READ.search("limit = tracer._span_limits.max_span_attribute_length")
    assert PRIVATE_SDK_READ.search("from opentelemetry.exporter.otlp.proto.common._internal import x")
    assert PRIVATE_SDK_READ.search("from opentelemetry.exporter.otlp.proto.http._common import too_large")
    assert PRIVATE_SDK_READ.search("from opentelemetry.sdk.trace import _Span")
    assert not PRIVATE_SDK_READ.search("self._runs._emit(span_context)")
    subclass = (
        "from opentelemetry.sdk.trace.export import SpanExporter\n"
        "class E(SpanExporter):\n"
        "    def __init__(self):\n"
        "        self._mine = 1\n"
        "    def _helper(self):\n"
        "        return self._mine\n"
        "    def export(self, spans):\n"
        "        return self._helper() if self._shutdown else self._client.export(spans)\n")
    assert inherited_private_reads(subclass) == ["E: self._shutdown", "E: self._client"]
