"""Responses runtap itself produces: OpenAI-shaped error bodies, and the request-target checks that
keep it from being an open proxy."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Final
from urllib.parse import unquote

import aiohttp
import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from multidict import CIMultiDictProxy

# Every error body says it came from runtap, so an app's logs tell a sidecar problem from an
# upstream one; the shape is the one the OpenAI SDKs parse into APIError.message/type/code.
ERROR_TYPE: Final = "runtap_error"


def error_response(status: int, message: str, code: str, *,
                   headers: dict[str, str] | None = None) -> web.Response:
    body = orjson.dumps({"error": {"message": message, "type": ERROR_TYPE, "param": None, "code": code}})
    resp = web.Response(status=status, body=body, content_type="application/json", headers=headers)
    resp.headers["x-runtap-error"] = code
    return resp


def classify_client_error(exc: BaseException) -> str:
    """A bounded `reason` label for runtap_upstream_errors_total."""
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns"
    if isinstance(exc, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError, ssl.SSLError)):
        return "tls"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "refused"
        return "connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "disconnected"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "reset"
    if isinstance(exc, (aiohttp.ClientOSError, ConnectionResetError)):
        return "reset"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "bad_gateway"
    return "other"


_MESSAGES: Final = {
    "refused": "connection refused by upstream {base}",
    "dns": "could not resolve the upstream host of {base}",
    "tls": "TLS handshake with upstream {base} failed",
    "connect": "could not connect to upstream {base}",
    "timeout": "upstream {base} did not answer in time",
    "connect_timeout": "timed out connecting to upstream {base}",
    "disconnected": "upstream {base} closed the connection before answering",
    "reset": "upstream {base} reset the connection",
    "bad_gateway": "upstream {base} sent an invalid response",
    "other": "upstream {base} request failed",
}


def upstream_error(status: int, reason: str, base: str, exc: BaseException) -> web.Response:
    detail = str(exc) or type(exc).__name__
    message = _MESSAGES.get(reason, _MESSAGES["other"]).format(base=base) + f" ({detail})"
    return error_response(status, message, "upstream_" + reason)


def too_large(limit: int) -> web.Response:
    return error_response(413, f"request body exceeds runtap's limit of {limit} bytes "
                          "(--max-body-bytes / RUNTAP_MAX_BODY_BYTES)", "request_too_large")


def client_timeout(seconds: float) -> web.Response:
    resp = error_response(408, f"the request body did not arrive within {seconds:g}s "
                          "(--client-timeout / RUNTAP_CLIENT_TIMEOUT)", "client_timeout")
    resp.force_close()
    return resp


def connection_limit(limit: int, waited: float) -> web.Response:
    return error_response(503, f"all {limit} upstream connections runtap may open stayed busy for "
                          f"{waited:g}s (--max-connections / RUNTAP_MAX_CONNECTIONS, --connect-timeout)",
                          "connection_limit")


def check_target(method: str, raw_path: str, headers: CIMultiDictProxy[str]) -> web.Response | None:
    """None when the request may be forwarded; else the error to answer with.

    The upstream is fixed by configuration and the path is appended to it, so the only ways to steer
    runtap elsewhere are a non-origin-form target (absolute-form, authority-form for CONNECT) or dot
    segments that a server would resolve above the configured base path.
    """
    if method == "CONNECT":
        return error_response(405, "runtap is not a forward proxy: CONNECT is not supported",
                              "method_not_allowed")
    if not raw_path.startswith("/") or raw_path.startswith("//"):
        return error_response(400, "only origin-form request targets (/path?query) are forwarded",
                              "bad_request_target")
    path = raw_path.partition("?")[0]
    decoded = unquote(unquote(path))
    if "\\" in decoded or "\x00" in decoded:
        return error_response(400, "request path contains forbidden characters", "bad_request_target")
    if "/." not in decoded:  # the path starts with "/", so every dot segment follows one
        return None
    for segment in decoded.split("/"):
        if segment in (".", ".."):
            return error_response(400, "dot segments are not allowed in request paths",
                                  "bad_request_target")
    return None


class RedactParserErrors(logging.Filter):
    """For the `aiohttp.server` logger: a request aiohttp cannot parse is logged at ERROR with up to 100
    bytes of the offending line, which for an oversized Authorization or api-key header is the key.
    Keep the fact and the status, drop the bytes and the traceback (it is the client's error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BadHttpMessage):
            record.msg = "rejected a request that could not be parsed (%s, %d)"
            record.args = (type(exc).__name__, exc.code)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True
