"""`runtap dashboards export DIR`: the Grafana dashboards, alert rules and provisioning a pip user gets.

The files ship inside the package (runtap.dashboards, read with importlib.resources), so a wheel or
the Docker image has them without a clone of the repository.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

HELP = "write the Grafana dashboards, alert rules and provisioning files to a directory"

DESCRIPTION = """\
Write runtap's Grafana dashboards (*.json), Prometheus alert rules (alerts.yml) and an example
Prometheus configuration (prometheus.yml) to DIR, with Grafana provisioning files whose dashboard
provider points at DIR:

  DIR/runs-overview.json  DIR/cost.json  DIR/alerts.yml  DIR/prometheus.yml
  DIR/provisioning/dashboards/runtap.yml     (options.path: DIR)
  DIR/provisioning/datasources/prometheus.yml (url: --prometheus-url)

then start Grafana with GF_PATHS_PROVISIONING=DIR/provisioning (or copy the two folders into its
provisioning directory) and Prometheus with --config.file=DIR/prometheus.yml.
"""

PACKAGE = "runtap.dashboards"
# The packaged provisioning files name the paths and URL of docker-compose.yml; export rewrites these.
COMPOSE_DASHBOARD_PATH = "/etc/grafana/dashboards/runtap"
COMPOSE_PROMETHEUS_URL = "http://prometheus:9090"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("dashboards", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    e = actions.add_parser("export", help="write the files to DIR", description=DESCRIPTION,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("dir", metavar="DIR", help="target directory (created if missing)")
    e.add_argument("--prometheus-url", default=COMPOSE_PROMETHEUS_URL, metavar="URL",
                   help=f"the Prometheus Grafana's data source points at [default {COMPOSE_PROMETHEUS_URL}]")
    e.add_argument("--force", action="store_true", help="overwrite files that exist with other content")
    e.set_defaults(run=run)


def exported_files(target: Path, prometheus_url: str) -> dict[Path, str]:
    """Every file export writes, by path under target, with its content."""
    root = resources.files(PACKAGE)
    files: dict[Path, str] = {}
    for entry in _data_files(root, Path()):
        files[target / entry[0]] = entry[1].read_text(encoding="utf-8")
    provider = target / "provisioning" / "dashboards" / "runtap.yml"
    files[provider] = files[provider].replace(COMPOSE_DASHBOARD_PATH, str(target.resolve()))
    datasource = target / "provisioning" / "datasources" / "prometheus.yml"
    files[datasource] = files[datasource].replace(COMPOSE_PROMETHEUS_URL, prometheus_url)
    return files


def _data_files(folder: Traversable, rel: Path) -> list[tuple[Path, Traversable]]:
    out: list[tuple[Path, Traversable]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            if entry.name != "__pycache__":
                out += _data_files(entry, rel / entry.name)
        elif entry.name.endswith((".json", ".yml")) and entry.name != "alerts_test.yml":
            out.append((rel / entry.name, entry))
    return out


def run(args: argparse.Namespace) -> int:
    target = Path(args.dir)
    files = exported_files(target, args.prometheus_url)
    clash = [str(p) for p, text in files.items() if p.exists() and p.read_text(encoding="utf-8") != text]
    if clash and not args.force:
        print(f"runtap: error: would overwrite {', '.join(clash)} (edited?); pass --force", file=sys.stderr)
        return 1
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(path)
    print(f"runtap: Grafana: GF_PATHS_PROVISIONING={target.resolve() / 'provisioning'}; "
          f"Prometheus: --config.file={target.resolve() / 'prometheus.yml'}", file=sys.stderr)
    return 0
