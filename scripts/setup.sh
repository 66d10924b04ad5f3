#!/usr/bin/env bash
# Set up runtap on a fresh machine: a virtualenv in .venv with runtap and its dependencies at the exact
# versions in constraints.txt (pyproject.toml declares ranges).
#   bash scripts/setup.sh          # runtime + the offline demo (runtap[demo,fast,s3])
#   bash scripts/setup.sh --test   # + test tools, and the system packages the suite uses
#                                  #   (prometheus/promtool, chromium) when apt-get can install them
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PY --version)"
    $PY -m venv .venv
fi
extras="demo,fast,s3"
[ "${1:-}" = "--test" ] && extras="demo,fast,s3,test"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[${extras}]"

if [ "${1:-}" = "--test" ]; then
    need=()
    command -v promtool >/dev/null 2>&1 || need+=(prometheus)
    command -v chromium >/dev/null 2>&1 || need+=(chromium)
    if [ ${#need[@]} -gt 0 ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "setup: installing ${need[*]} (Debian packages) for the test suite"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq >/dev/null
            apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
        else
            echo "setup: ${need[*]} missing and apt-get is not usable here; tests needing them are skipped" >&2
        fi
    fi
fi
echo "setup: ok ($(.venv/bin/runtap --help >/dev/null && echo runtap installed))"
