"""The deployment kit, checked without a Docker engine or a cluster: the Dockerfile, compose file,
Kubernetes manifest and Grafana provisioning are parsed and cross-checked against the repository and
runtap's own settings, and the parts that can run here (the HEALTHCHECK command, the probe paths, the
simulated upstream's compose command) are run for real."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import re
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from runtap.settings.config import SETTINGS, resolve

from tests.promstack import DASHBOARDS, ROOT, free_port, load_yaml

SETTING_BY_ENV = {s.env: s for s in SETTINGS}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        instr, _, args = line.partition(" ")
        out.append((instr.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continuation line"
    return out


def final_stage() -> list[tuple[str, str]]:
    instrs = dockerfile()
    last_from = max(i for i, (k, _) in enumerate(instrs) if k == "FROM")
    return instrs[last_from:]


def one(instrs: list[tuple[str, str]], name: str) -> str:
    found = [a for k, a in instrs if k == name]
    assert len(found) == 1, f"expected one {name}, found {found}"
    return found[0]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for k, args in final_stage():
        if k == "ENV":
            for m in re.finditer(r"(\w+)=(\S+)", args):
                env[m.group(1)] = m.group(2)
    return env


def runtime_extras() -> set[str]:
    """The extras `scripts/setup.sh` installs without --test: what the README tells users to install."""
    m = re.search(r'^extras="([^"]+)"', (ROOT / "scripts" / "setup.sh").read_text(), re.M)
    assert m
    return set(m.group(1).split(","))


def hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host, int(port)


def assert_settings_resolve(env: dict[str, str]) -> None:
    runtap_env = {k: v for k, v in env.items() if k.startswith("RUNTAP_")}
    unknown = set(runtap_env) - set(SETTING_BY_ENV)
    assert unknown == set(), f"not runtap settings: {sorted(unknown)}"
    resolve({}, runtap_env)  # raises ConfigError naming the variable on a bad value


# --- Dockerfile -----------------------------------------------------------------------------------


def test_image_is_slim_non_root_and_runs_runtap_serve() -> None:
    stage = final_stage()
    base = one(stage, "FROM")
    assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim-\w+", base), base
    user = one(stage, "USER")
    assert user.split(":")[0] not in ("root", "0")
    assert json.loads(one(stage, "ENTRYPOINT")) == ["runtap"]
    assert json.loads(one(stage, "CMD")) == ["serve"]
    assert set(one(stage, "EXPOSE").split()) == {"8080", "9464"}


def test_image_listens_on_all_interfaces_on_the_exposed_ports_and_keeps_the_db_on_the_volume() -> None:
    env = image_env()
    assert_settings_resolve(env)
    ports = set(one(final_stage(), "EXPOSE").split())
    for name in ("RUNTAP_LISTEN", "RUNTAP_ADMIN"):
        host, port = hostport(env[name])
        # A loopback admin inside a container is unreachable for Prometheus and the health check's
        # siblings; a loopback proxy is unreachable for the app container.
        assert host == "0.0.0.0", name
        assert str(port) in ports
    volumes = json.loads(one(final_stage(), "VOLUME"))
    assert str(PurePosixPath(env["RUNTAP_DB"]).parent) in volumes


def test_image_installs_the_package_with_the_readme_extras_and_no_test_tools() -> None:
    extras = runtime_extras()
    assert "test" not in extras
    runs = " ".join(a for k, a in dockerfile() if k == "RUN")
    spec = ",".join(sorted(extras))
    wheel = "wheel --no-cache-dir --disable-pip-version-check -c constraints.txt --wheel-dir /wheels"
    assert f'{wheel} ".[{spec}]"' in runs
    assert f'--no-index --find-links=/wheels "runtap[{spec}]"' in runs
    assert "[test" not in runs and ",test" not in runs


def test_health_check_needs_no_curl_and_probes_healthz() -> None:
    args = one(final_stage(), "HEALTHCHECK")
    assert "curl" not in args and "wget" not in args
    cmd = json.loads(args[args.index("CMD") + 3 :].strip())
    assert cmd[:2] == ["python", "-c"] and "/healthz" in cmd[2]
    compile(cmd[2], "HEALTHCHECK", "exec")


def _dockerignore() -> list[tuple[bool, str]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), line.lstrip("!").rstrip("/")))
    return rules


def excluded(rel: str, rules: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent directory applies to
    everything below it (enough of the semantics for the patterns we use)."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for negate, pattern in rules:
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(p, pattern[3:]) for p in parts)
        else:
            hit = any(fnmatch.fnmatch(p, pattern) for p in prefixes)
        if hit:
            verdict = not negate
    return verdict


def build_context() -> set[str]:
    rules = _dockerignore()
    files = set()
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT).as_posix()
        if path.is_file() and not rel.startswith((".git/", ".venv/")) and not excluded(rel, rules):
            files.add(rel)
    return files


def test_build_context_holds_everything_the_package_build_needs() -> None:
    context = build_context()
    copied = []
    for k, args in dockerfile():
        if k == "COPY" and "--from" not in args:
            *sources, _dest = args.split()
            copied += sources
    for src in copied:
        assert any(f == src or f.startswith(src.rstrip("/") + "/") for f in context), f"{src} not in context"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["readme"] in copied
    for license_file in pyproject["project"]["license-files"]:  # the build fails without them
        assert license_file in copied, f"{license_file} is not copied into the image"
    assert "pyproject.toml" in copied
    declared = pyproject["tool"]["setuptools"]["packages"]
    folders = pyproject["tool"]["setuptools"]["package-dir"]
    for package in declared:
        top = folders[".".join(package.split(".")[:2])]
        assert top in copied, f"package {package} ({top}/) is not copied into the image"
    assert "constraints.txt" in copied, "the image must install the same exact pins as CI"
    for f in context:
        assert not f.startswith(("tests/", "bench/", "docs/", ".venv/")), f
        assert not f.endswith((".duckdb", ".pyc")), f


def test_every_python_package_and_data_file_is_in_the_wheel(tmp_path: Path) -> None:
    # The image installs a built wheel, not the source tree: a subpackage or SQL file missing from the
    # wheel would be missing from the container (an editable install hides it), so build the real wheel.
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
    subprocess.run([*pip_wheel, "-w", str(tmp_path), str(ROOT)], check=True, timeout=300, capture_output=True)
    (wheel,) = tmp_path.glob("runtap-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    wanted = [
        p.relative_to(ROOT).as_posix()
        for top in ("settings", "proxy", "analytics", "demo", "dashboards")
        for p in (ROOT / top).rglob("*")
        if p.suffix in (".py", ".sql", ".csv", ".html", ".json", ".yml") and "__pycache__" not in p.parts
    ]
    assert wanted
    missing = [w for w in wanted if "runtap/" + w not in names]
    assert missing == [], f"the wheel lacks {missing}"
    # one import root: nothing lands in site-packages as a top-level proxy/analytics (names other
    # PyPI projects also install)
    assert {n.split("/")[0] for n in names if not n.startswith("runtap-")} == {"runtap"}
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["runtap"]


@pytest.fixture
async def admin_url(tmp_path: Path) -> AsyncIterator[str]:
    from runtap.proxy.app import build_runtime
    from runtap.proxy.serve import start
    from runtap.settings.config import HostPort, settings_for

    settings = settings_for(
        upstream="http://127.0.0.1:9",
        listen=HostPort("127.0.0.1", 0),
        admin=HostPort("127.0.0.1", 0),
        db=str(tmp_path / "runtap.duckdb"),
        grace_period=1.0,
    )
    running = await start(settings, runtime=build_runtime(settings))
    try:
        yield running.admin_url
    finally:
        await running.stop()


async def _run(cmd: list[str], env: dict[str, str]) -> int:
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await asyncio.wait_for(proc.wait(), 30)


async def test_health_check_command_passes_against_a_live_runtap_and_fails_without_one(admin_url: str) -> None:
    args = one(final_stage(), "HEALTHCHECK")
    cmd = json.loads(args[args.index("CMD") + 3 :].strip())
    cmd[0] = sys.executable  # the image's `python`
    port = admin_url.rsplit(":", 1)[1]
    assert await _run(cmd, {"RUNTAP_ADMIN": f"0.0.0.0:{port}"}) == 0
    assert await _run(cmd, {"RUNTAP_ADMIN": f"0.0.0.0:{free_port()}"}) != 0


async def test_kubernetes_probe_paths_answer_200_on_a_live_runtap(admin_url: str) -> None:
    import aiohttp

    container = _runtap_container()
    async with aiohttp.ClientSession() as session:
        for probe in ("readinessProbe", "livenessProbe"):
            async with session.get(admin_url + container[probe]["httpGet"]["path"]) as r:
                assert r.status == 200, probe


# --- docker-compose.yml ---------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = load_yaml(ROOT / "docker-compose.yml")
    return doc


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> host path (relative to the repo) of a service's bind mounts."""
    out = {}
    for v in service.get("volumes", []):
        src, dst = v.split(":")[:2]
        if src.startswith("."):
            out[dst] = src
    return out


def test_compose_has_the_app_slot_sidecar_prometheus_and_grafana() -> None:
    services = compose()["services"]
    assert {"app", "runtap", "prometheus", "grafana"} <= set(services)
    for name in ("runtap", "app", "sim"):
        assert services[name]["build"] == {"context": ".", "dockerfile": "Dockerfile"}, name
    assert services["app"]["depends_on"]["runtap"]["condition"] == "service_healthy"


def test_compose_bind_mounts_are_real_files() -> None:
    for name, service in compose()["services"].items():
        for dst, src in bind_mounts(service).items():
            assert (ROOT / src).exists(), f"{name}: {src} -> {dst} does not exist"


def test_compose_wires_app_to_runtap_to_prometheus_to_grafana() -> None:
    services = compose()["services"]
    env = {k: str(v) for k, v in services["runtap"]["environment"].items()}
    env["RUNTAP_UPSTREAM"] = "http://sim:8000"  # the ${RUNTAP_UPSTREAM:-...} default
    assert_settings_resolve(env)
    listen_host, listen_port = hostport(env["RUNTAP_LISTEN"])
    admin_host, admin_port = hostport(env["RUNTAP_ADMIN"])
    assert listen_host == admin_host == "0.0.0.0"
    assert re.fullmatch(
        r"\$\{RUNTAP_UPSTREAM:-http://sim:(\d+)\}", services["runtap"]["environment"]["RUNTAP_UPSTREAM"]
    )
    assert "/data" in [v.split(":")[1] for v in services["runtap"]["volumes"]]
    assert str(PurePosixPath(env["RUNTAP_DB"]).parent) == "/data"
    # The app reaches the proxy by service name on the listen port.
    assert services["app"]["environment"]["OPENAI_BASE_URL"] == f"http://runtap:{listen_port}/v1"
    compile(services["app"]["entrypoint"][2], "app", "exec")
    # Prometheus: its config and the rules sit side by side, as rule_files expects.
    prom_mounts = bind_mounts(services["prometheus"])
    assert prom_mounts["/etc/prometheus/prometheus.yml"] == "./dashboards/prometheus.yml"
    assert prom_mounts["/etc/prometheus/alerts.yml"] == "./dashboards/alerts.yml"
    prom_cfg = load_yaml(DASHBOARDS / "prometheus.yml")
    assert prom_cfg["rule_files"] == ["alerts.yml"]
    (job,) = [j for j in prom_cfg["scrape_configs"] if j["job_name"] == "runtap"]
    assert job["static_configs"][0]["targets"] == [f"runtap:{admin_port}"]
    assert job["metrics_path"] == "/metrics"
    # Grafana: provisioning directories, and every dashboard where the provider looks.
    graf = bind_mounts(services["grafana"])
    assert graf["/etc/grafana/provisioning/datasources"] == "./dashboards/provisioning/datasources"
    assert graf["/etc/grafana/provisioning/dashboards"] == "./dashboards/provisioning/dashboards"
    (provider,) = load_yaml(DASHBOARDS / "provisioning" / "dashboards" / "runtap.yml")["providers"]
    folder = provider["options"]["path"]
    for path in DASHBOARDS.glob("*.json"):
        assert graf[f"{folder}/{path.name}"] == f"./dashboards/{path.name}"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home in graf
    (ds,) = load_yaml(DASHBOARDS / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090" and ds["isDefault"]
    # $__rate_interval is derived from the data source's scrape interval: they must agree.
    assert ds["jsonData"]["timeInterval"] == prom_cfg["global"]["scrape_interval"]


def test_compose_stop_grace_outlasts_runtaps_drain() -> None:
    grace = compose()["services"]["runtap"]["stop_grace_period"]
    default = float(next(s.default for s in SETTINGS if s.name == "grace_period"))
    assert float(grace.removesuffix("s")) > default


async def test_compose_sim_command_starts_the_simulated_upstream() -> None:
    sim = compose()["services"]["sim"]
    port = free_port()
    args = [a.replace("0.0.0.0", "127.0.0.1").replace("8000", str(port)) for a in sim["command"]]
    assert sim["entrypoint"][:3] == ["python", "-m", "runtap.demo.sim"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *sim["entrypoint"][1:],
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                break
            except OSError:
                assert proc.returncode is None, "the sim exited"
                assert asyncio.get_running_loop().time() < deadline, "the sim never listened"
                await asyncio.sleep(0.05)  # poll interval of a bounded wait, not synchronisation
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


# --- Kubernetes -----------------------------------------------------------------------------------


def _pod_spec() -> tuple[dict[str, Any], dict[str, Any]]:
    docs = [d for d in load_yaml_all(ROOT / "deploy" / "kubernetes" / "runtap-sidecar.yaml") if d]
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    assert deploy["apiVersion"] == "apps/v1"
    template = deploy["spec"]["template"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    return template["metadata"], template["spec"]


def load_yaml_all(path: Path) -> list[Any]:
    import yaml

    return list(yaml.safe_load_all(path.read_text()))


def _runtap_container() -> dict[str, Any]:
    _, spec = _pod_spec()
    containers: list[dict[str, Any]] = [c for c in spec["containers"] if c["name"] == "runtap"]
    assert len(containers) == 1
    return containers[0]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def test_kubernetes_pod_runs_app_and_runtap_side_by_side_over_localhost() -> None:
    meta, spec = _pod_spec()
    assert {c["name"] for c in spec["containers"]} == {"app", "runtap"}
    runtap = _runtap_container()
    (app,) = [c for c in spec["containers"] if c["name"] == "app"]
    env = _env(runtap)
    assert_settings_resolve(env)
    assert runtap["args"] == ["serve"]
    listen_host, listen_port = hostport(env["RUNTAP_LISTEN"])
    assert listen_host == "127.0.0.1"  # only the pod's own containers can use the proxy
    assert _env(app)["OPENAI_BASE_URL"] == f"http://127.0.0.1:{listen_port}/v1"
    admin_host, admin_port = hostport(env["RUNTAP_ADMIN"])
    assert admin_host == "0.0.0.0"  # kubelet probes and Prometheus come in on the pod IP
    ports = {p["name"]: p["containerPort"] for p in runtap["ports"]}
    assert ports["admin"] == admin_port
    for probe in ("readinessProbe", "livenessProbe"):
        assert runtap[probe]["httpGet"]["port"] in ("admin", admin_port)
        assert runtap[probe]["httpGet"]["path"] in ("/healthz", "/readyz")
    ann = meta["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert int(ann["prometheus.io/port"]) == admin_port
    assert ann["prometheus.io/path"] == "/metrics"
    mounts = {m["mountPath"] for m in runtap["volumeMounts"]}
    assert str(PurePosixPath(env["RUNTAP_DB"]).parent) in mounts


def test_kubernetes_runtap_runs_unprivileged_and_outlives_its_drain() -> None:
    _, spec = _pod_spec()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == int(one(final_stage(), "USER").split(":")[0])
    sc = _runtap_container()["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    default = float(next(s.default for s in SETTINGS if s.name == "grace_period"))
    assert spec["terminationGracePeriodSeconds"] > default
