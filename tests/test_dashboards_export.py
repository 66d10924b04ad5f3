"""`runtap dashboards export DIR`: what a pip user gets instead of the repo's dashboards/ folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from runtap.proxy.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


def test_export_writes_dashboards_rules_and_provisioning_pointing_at_the_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "grafana"
    assert main(["dashboards", "export", str(out), "--prometheus-url", "http://127.0.0.1:9090"]) == 0
    for name in ("runs-overview.json", "cost.json", "alerts.yml", "prometheus.yml"):
        assert (out / name).read_bytes() == (ROOT / "dashboards" / name).read_bytes(), name
    (provider,) = yaml.safe_load((out / "provisioning/dashboards/runtap.yml").read_text())["providers"]
    assert provider["options"]["path"] == str(out.resolve())
    (source,) = yaml.safe_load((out / "provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert source["url"] == "http://127.0.0.1:9090" and source["type"] == "prometheus"
    assert not (out / "alerts_test.yml").exists() and not list(out.rglob("*.py"))
    assert "GF_PATHS_PROVISIONING=" in capsys.readouterr().err


def test_export_keeps_edited_files_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboards", "export", str(tmp_path)]) == 0
    assert main(["dashboards", "export", str(tmp_path)]) == 0  # same content: nothing to protect
    (tmp_path / "cost.json").write_text("{}")
    assert main(["dashboards", "export", str(tmp_path)]) == 1
    assert "cost.json" in capsys.readouterr().err
    assert (tmp_path / "cost.json").read_text() == "{}"
    assert main(["dashboards", "export", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "cost.json").read_bytes() == (ROOT / "dashboards" / "cost.json").read_bytes()
