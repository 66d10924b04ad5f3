"""prometheus-client's classic text format, byte for byte, with each series' line prefix cached.

generate_latest escapes every label name and value of every sample on every scrape; for the relay's
request histograms (18 buckets per operation and stream) that is most of a scrape's CPU, taken from
the GIL the relay's event loop needs. A series' `name{labels}` never changes, so it is rendered once,
by prometheus-client itself (a one-sample family through generate_latest), and reused. Only the value
is formatted per scrape, with prometheus-client's own floatToGoString.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final, Protocol

from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

MAX_SERIES: Final = 100_000  # a safety bound; the relay's labels are capped far below it
_TYPES: Final = {"counter": ("_total", "counter"), "info": ("_info", "gauge"), "stateset": ("", "gauge"),
                 "gaugehistogram": ("", "histogram"), "unknown": ("", "untyped")}
_OM_SUFFIXES: Final = ("_created", "_gsum", "_gcount")


class _Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


def _line(sample: Sample) -> str:
    """prometheus-client's own line for one sample, without its newline (label values escape theirs;
    str.splitlines would also split at U+0085 and U+2028, which may appear in them)."""
    return generate_latest(_One(sample)).decode().removesuffix("\n").rsplit("\n", 1)[-1]


class _One:
    def __init__(self, sample: Sample) -> None:
        self._sample = sample

    def collect(self) -> Iterator[Metric]:
        fam = Metric(self._sample.name, "", "unknown")
        fam.samples = [self._sample]
        yield fam


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


class TextRenderer:
    """generate_latest(collector) with cached headers and series prefixes (one renderer per process)."""

    def __init__(self) -> None:
        self._prefixes: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self._headers: dict[tuple[str, str, str], str] = {}

    def _prefix(self, s: Sample) -> str:
        key = (s.name, tuple(s.labels.items()))
        prefix = self._prefixes.get(key)
        if prefix is None:
            line = _line(Sample(s.name, s.labels, 0.0))
            prefix = line[:line.rindex(" ") + 1]
            if len(self._prefixes) >= MAX_SERIES:
                self._prefixes.clear()
            self._prefixes[key] = prefix
        return prefix

    def _header(self, name: str, mtype: str, documentation: str) -> str:
        key = (name, mtype, documentation)
        header = self._headers.get(key)
        if header is None:
            header = self._headers[key] = f"# HELP {name} {_escape_help(documentation)}\n# TYPE {name} {mtype}\n"
        return header

    def render(self, collector: _Collector) -> bytes:
        out: list[str] = []
        for metric in collector.collect():
            suffix, mtype = _TYPES.get(metric.type, ("", metric.type))
            out.append(self._header(metric.name + suffix, mtype, metric.documentation))
            extra: dict[str, list[str]] = {}
            for s in metric.samples:
                if s.timestamp is not None:
                    line = _line(s) + "\n"  # no runtap family has timestamps
                else:
                    line = f"{self._prefix(s)}{floatToGoString(s.value)}\n"
                for om in _OM_SUFFIXES:  # as generate_latest: a gauge family of its own after this one
                    if s.name == metric.name + om:
                        extra.setdefault(om, []).append(line)
                        break
                else:
                    out.append(line)
            for om, lines in sorted(extra.items()):
                out.append(self._header(metric.name + om, "gauge", metric.documentation))
                out.extend(lines)
        return "".join(out).encode()


RENDERER: Final = TextRenderer()  # one per process: a series' prefix does not depend on its registry
