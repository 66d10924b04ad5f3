"""The client `runtap report` uses when the capture file is locked by a running sidecar: it asks the
sidecar's admin listener (proxy/admin_reports.py) for the named report instead."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Final

from ..reports import ReportError, ReportParams, ReportResult

# The column order and the totalled columns, so an empty result still has its columns.
COLUMNS_HEADER: Final = "X-Runtap-Columns"
TOTALS_HEADER: Final = "X-Runtap-Totals"


class AdminUnavailable(RuntimeError):
    """The admin listener could not be reached or answered with an error."""


def fetch_report(base_url: str, name: str, params: ReportParams, *, timeout: float = 60.0) -> ReportResult:
    """Ask a live sidecar's admin listener for a named report (blocking; for the CLI)."""
    query = urllib.parse.urlencode({**params.query(), "format": "json"})
    url = f"{base_url.rstrip('/')}/reports/{urllib.parse.quote(name)}?{query}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - the CLI user's own --url / RUNTAP_ADMIN (the admin listener)
            body = resp.read()
            columns_raw = resp.headers.get(COLUMNS_HEADER, "")
            totals_raw = resp.headers.get(TOTALS_HEADER, "")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        try:
            detail = json.loads(detail)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            pass
        if exc.code in (400, 404):
            raise ReportError(detail) from None
        raise AdminUnavailable(f"{url}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminUnavailable(f"cannot reach the admin listener at {base_url}: {reason}") from None
    records = json.loads(body)
    columns = [urllib.parse.unquote(c) for c in columns_raw.split(",") if c]
    if not columns and records:
        columns = list(records[0])
    rows = [tuple(r.get(c) for c in columns) for r in records]
    return ReportResult(name, columns, rows, frozenset(t for t in totals_raw.split(",") if t))
