#!/usr/bin/env bash
# Set up runtap on a fresh machine: a virtualenv in .venv with runtap and its dependencies at the exact
# versions in constraints.txt (pyproject.toml declares ranges).
#   bash scripts/setup.sh          # runtime + the offline demo (runtap[demo,fast,s3])
#   bash scripts/setup.sh --test   # + test tools, and the system packages the suite uses
#                                  #   (prometheus/promtool, chromium) when apt-get can install them
# One line per step with its time; pip's and apt's own output goes to .venv/setup.log (shown on failure).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
TEST=0
[ "${1:-}" = "--test" ] && TEST=1
extras="demo,fast,s3"
[ $TEST = 1 ] && extras="demo,fast,s3,test"
LOG=.venv/setup.log
steps=3
[ $TEST = 1 ] && steps=4
n=0
exec 3>&1  # the terminal, for lines that must be seen while a step's output goes to the log

us() { echo "${EPOCHREALTIME/[.,]/}"; }  # microseconds (bash 5); no bc or date arithmetic needed
secs() { local d=$(( $(us) - $1 )); printf '%d.%d' $((d / 1000000)) $((d % 1000000 / 100000)); }

# step LABEL COMMAND...: runs COMMAND with its output in $LOG, prints LABEL and how long it took.
step() {
    local label=$1 start
    start=$(us)
    shift
    n=$((n + 1))
    printf 'setup: [%d/%d] %-54s' "$n" "$steps" "$label"
    if "$@" >>"$LOG" 2>&1; then
        printf '%6s s\n' "$(secs "$start")"
    else
        local rc=$?
        printf ' FAILED (exit %d)\n' "$rc"
        echo "setup: last lines of $LOG:"
        tail -n 25 "$LOG"
        exit "$rc"
    fi
}

create_venv() { [ -x .venv/bin/python ] || "$PY" -m venv .venv; }
pip_install() { .venv/bin/python -m pip install --disable-pip-version-check --progress-bar off "$@"; }

system_packages() {
    local need=()
    command -v promtool >/dev/null 2>&1 || need+=(prometheus)
    command -v chromium >/dev/null 2>&1 || need+=(chromium)
    [ ${#need[@]} -eq 0 ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"
    else
        echo "setup: ${need[*]} missing and apt-get is not usable here; tests needing them are skipped" | tee /dev/fd/3
    fi
}

total=$(us)
mkdir -p .venv
: >"$LOG"
step "virtualenv .venv ($($PY --version 2>&1))" create_venv
step "pip up to date" pip_install --upgrade pip
step "runtap[$extras], editable, pinned dependencies" pip_install -c constraints.txt -e ".[${extras}]"
[ $TEST = 1 ] && step "system packages for tests (prometheus, chromium)" system_packages
.venv/bin/runtap --help >/dev/null
echo "setup: ok in $(secs "$total") s: .venv/bin/runtap is installed (pip and apt output: $LOG)"
