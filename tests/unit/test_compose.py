"""deploy/docker-compose.yml and deploy/Dockerfile: valid for Docker Compose, and consistent with the
nginx, Prometheus, Grafana and gateway configuration files that the end-to-end tests run for real.
(No Docker engine runs here: `docker compose config` validates without one.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import Settings, from_sources, load_file

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV = {**os.environ, "GATEWAY_ADMIN_KEY": "compose-check"}


def compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) if it works here, else the standalone `docker-compose`."""
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """{container path: host path} of a service's bind mounts (relative to the compose file)."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            found[target] = (COMPOSE.parent / source).resolve()
    return found


def gateway_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if name.startswith("gateway-")}


SERVICE_KEYS = {
    "build",
    "image",
    "command",
    "entrypoint",
    "environment",
    "volumes",
    "ports",
    "expose",
    "depends_on",
    "healthcheck",
    "restart",
    "stop_grace_period",
    "networks",
    "user",
    "working_dir",
    "labels",
    "logging",
    "ulimits",
    "deploy",
}


def test_compose_structure(compose: dict[str, Any]) -> None:
    """What `docker compose config` checks that matters here, without Docker."""
    top = {k for k in compose if not k.startswith("x-")}
    assert top <= {"services", "volumes", "networks", "configs", "secrets"}, top
    named = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        assert set(service) <= SERVICE_KEYS, (name, set(service) - SERVICE_KEYS)
        assert "image" in service or "build" in service, name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith(".") or source in named, (name, source)
        for dep in service.get("depends_on", []):
            assert dep in compose["services"], (name, dep)


def test_docker_compose_config_validates(compose: dict[str, Any]) -> None:
    command = compose_command()
    if command is None:
        # deploy/dev/setup-system installs a compose CLI where Debian packages one; where none
        # exists the structural check stands in for it (and runs on its own above anyway).
        test_compose_structure(compose)
        return
    done = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=120, env=ENV
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The admin key must come from the environment, never from the file.
    unset = {k: v for k, v in ENV.items() if k != "GATEWAY_ADMIN_KEY"}
    missing = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=120, env=unset
    )
    assert missing.returncode != 0 and "GATEWAY_ADMIN_KEY" in missing.stdout + missing.stderr


def test_every_mounted_file_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for target, source in mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
    for name, service in gateway_services(compose).items():
        build = service["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile", (
            name
        )


def gateway_settings(compose: dict[str, Any]) -> tuple[Settings, set[str]]:
    """The settings each replica runs with (its GATEWAY_CONFIG file), and the replicas' names."""
    services = gateway_services(compose)
    assert len(services) >= 2, "the stack runs at least two gateway replicas"
    configs = set()
    for service in services.values():
        config_path = service["environment"]["GATEWAY_CONFIG"]
        configs.add(mounts(service)[config_path])
    assert configs == {DEPLOY / "gateway" / "gateway.toml"}
    load_file(DEPLOY / "gateway" / "gateway.toml")  # unknown keys or wrong types fail here
    settings = from_sources(None, {"GATEWAY_CONFIG": str(DEPLOY / "gateway" / "gateway.toml")})
    return settings, set(services)


def test_nginx_upstreams_and_listener_match_the_stack(compose: dict[str, Any]) -> None:
    settings, replicas = gateway_settings(compose)
    nginx = compose["services"]["nginx"]
    files = mounts(nginx)
    assert files["/etc/nginx/nginx.conf"] == DEPLOY / "nginx" / "nginx.conf"
    upstream = files["/etc/nginx/upstream.conf"].read_text()
    servers = set(re.findall(r"^\s*server\s+([^\s;]+)", upstream, re.M))
    assert servers == {f"{name}:{settings.port}" for name in replicas}
    listen = re.search(r"listen\s+(?:[\d.]+:)?(\d+)", files["/etc/nginx/listen.conf"].read_text())
    assert listen is not None
    published = {p.split(":")[-1] for p in nginx["ports"]}
    assert published == {listen.group(1)}
    # And nginx's limits agree with the gateway's.
    conf = (DEPLOY / "nginx" / "nginx.conf").read_text()
    size = re.search(r"client_max_body_size\s+(\d+)([kmg]?);", conf)
    assert size is not None
    factor = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[size.group(2)]
    assert int(size.group(1)) * factor == settings.max_body_bytes == Settings().max_body_bytes
    read_timeout = re.search(r"proxy_read_timeout\s+(\d+)s;", conf)
    assert read_timeout is not None and int(read_timeout.group(1)) > settings.wait_timeout_s


def test_prometheus_scrapes_every_replica(compose: dict[str, Any]) -> None:
    settings, replicas = gateway_settings(compose)
    prom = compose["services"]["prometheus"]
    files = mounts(prom)
    config = yaml.safe_load(files["/etc/prometheus/prometheus.yml"].read_text())
    for rule_file in config["rule_files"]:
        assert f"/etc/prometheus/{rule_file}" in files, f"{rule_file} is not mounted"
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    targets = {t for sc in jobs["ingest-gateway"]["static_configs"] for t in sc["targets"]}
    assert targets == {f"{name}:{settings.port}" for name in replicas}
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]


def test_gateways_reach_kafka_and_grafana_reaches_prometheus(compose: dict[str, Any]) -> None:
    settings, _ = gateway_settings(compose)
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    advertised = kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert advertised == f"PLAINTEXT://{settings.kafka_bootstrap}"
    assert "broker,controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert settings.host == "0.0.0.0" and settings.log_format == "json"

    grafana = compose["services"]["grafana"]
    files = mounts(grafana)
    provisioning = files["/etc/grafana/provisioning"]
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    url = datasource["datasources"][0]["url"]
    prom_port = compose["services"]["prometheus"]["ports"][0].split(":")[-1]
    assert url == f"http://prometheus:{prom_port}"
    provider = yaml.safe_load((provisioning / "dashboards" / "ingest-gateway.yml").read_text())
    folder = provider["providers"][0]["options"]["path"]
    dashboards = [t for t, s in files.items() if s == DEPLOY / "grafana" / "dashboard.json"]
    assert dashboards and all(Path(t).parent == Path(folder) for t in dashboards)


def test_dockerfile_is_small_non_root_and_health_checked() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms and all(f == "python:3.11-slim" for f in froms)
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    health = re.search(r"^HEALTHCHECK .*?CMD (.*)$", text, re.M | re.S)
    assert health is not None and "/readyz" in health.group(1)
    for source in re.findall(r"^COPY\s+(?!--)(.+)\s+\S+$", text, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert "*" in ignore and "!gateway/" in ignore  # a small build context
