"""nginx as the reference reverse proxy: find (or install) the Debian package and write its config.

One worker process, so it is compared core for core with the single-process Python proxies.
`proxy_buffering off` relays each SSE event as it arrives (the default would hold events in a buffer);
upstream keepalive keeps it from opening a connection per request, as the Python proxies' pools do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SEARCH = ("/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin")

CONF = """\
# Written by bench/nginx.py for one benchmark run.
worker_processes {workers};
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream runs_api {{
        server {upstream_host}:{upstream_port};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen {listen_host}:{listen_port} backlog=1024;
        location / {{
            proxy_pass http://runs_api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""


def find_nginx() -> str | None:
    path = shutil.which("nginx")
    if path:
        return path
    for d in SEARCH:
        candidate = os.path.join(d, "nginx")
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_nginx(*, install: bool = True, timeout: float = 300.0) -> tuple[str | None, str]:
    """(path, note). Installs the Debian packages the bench uses (nginx, wrk) when missing and we are
    root; otherwise (None, why)."""
    path = find_nginx()
    if path and shutil.which("wrk"):
        return path, ""
    if not install:
        return path, "" if path else "nginx not found (install the Debian package: apt-get install -y nginx)"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return path, "" if path else ("nginx not found and not root (or no apt-get): skipping nginx; "
                                      "run `apt-get install -y nginx`")
    missing = [name for name, found in (("nginx", path), ("wrk", shutil.which("wrk"))) if not found]
    print(f"bench: {' and '.join(missing)} missing; running apt-get install -y {' '.join(missing)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install_cmd = ["apt-get", "install", "-y", "-q", *missing]
    try:
        if subprocess.run(install_cmd, env=env, timeout=timeout, capture_output=True).returncode != 0:
            # Package lists may be empty on a fresh image: refresh once, then retry.
            subprocess.run(["apt-get", "update", "-q"], env=env, timeout=timeout, capture_output=True)
            subprocess.run(install_cmd, check=True, env=env, timeout=timeout, capture_output=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        return path, "" if path else f"apt-get install nginx failed ({exc}); skipping nginx"
    if path:
        return path, ""
    path = find_nginx()
    return (path, "installed with apt-get") if path else (None, "nginx still missing after apt-get; skipping")


def write_config(directory: Path, *, listen_port: int, upstream_port: int, host: str = "127.0.0.1",
                 workers: int = 1) -> Path:
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        d = directory / "tmp" / sub
        d.mkdir(parents=True, exist_ok=True)
        # Workers drop to `nobody` when the master runs as root; they must still reach the temp dirs.
        d.chmod(0o777)
    conf = directory / "nginx.conf"
    conf.write_text(CONF.format(workers=workers, dir=directory, listen_host=host, listen_port=listen_port,
                                upstream_host=host, upstream_port=upstream_port))
    return conf


def command(binary: str, directory: Path) -> list[str]:
    """Foreground nginx with every path under `directory` (`-e` keeps it off /var/log at start-up)."""
    return [binary, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-e",
            str(directory / "error.log")]


def version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stderr or out.stdout).strip().rpartition("/")[2] or "unknown"
