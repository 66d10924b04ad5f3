"""The in-language baseline: the smallest honest aiohttp reverse proxy (streams both ways, no capture,
no metrics, no tracing). runtap's cost is judged against this: what aiohttp itself costs is not ours.

    python -m bench.bare_forwarder --upstream http://127.0.0.1:8001 --port 8002
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                 "upgrade", "host", "content-length"})
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


def _copy(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in HOP)


async def forward(request: web.Request) -> web.StreamResponse:
    headers = _copy(request.headers)
    if request.content_length is not None:
        headers["Content-Length"] = str(request.content_length)
    data = request.content.iter_any() if request.body_exists else None
    async with request.app[SESSION].request(
            request.method, request.app[UPSTREAM] + request.raw_path, headers=headers, data=data,
            allow_redirects=False, skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding")) as up:
        resp = web.StreamResponse(status=up.status, reason=up.reason, headers=_copy(up.headers))
        if up.content_length is not None:
            resp.content_length = up.content_length
        await resp.prepare(request)
        async for chunk in up.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp


async def _session(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=512, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                     timeout=aiohttp.ClientTimeout(total=None, sock_read=600)) as session:
        app[SESSION] = session
        yield


def make_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(_session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reuse-port", action="store_true",
                        help="bind with SO_REUSEPORT, so several processes share the port (as runtap's --workers)")
    parser.add_argument("--uvloop", action="store_true",
                        help="run on uvloop, as runtap does by default when the fast extra is installed")
    args = parser.parse_args()
    loop = None
    if args.uvloop:
        import uvloop
        loop = uvloop.new_event_loop()
    web.run_app(make_app(args.upstream), host=args.host, port=args.port, access_log=None, print=None,
                loop=loop, backlog=1024, reuse_port=args.reuse_port or None)


if __name__ == "__main__":
    main()
