#!/usr/bin/env bash
# Install everything the suite needs, then lint, type-check and run every test.
#   bash scripts/test.sh                  # the whole suite (what CI runs)
#   bash scripts/test.sh -m 'not slow'    # skip the slow suites locally; any pytest args pass through
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
echo "== ruff"; .venv/bin/ruff check settings proxy analytics demo tests bench dashboards
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/pytest "$@"
