"""deploy/kubernetes/: the base and every overlay build with kustomize, validate (strictly) against
the Kubernetes JSON schemas of a pinned version, pass the kube-score linter, and keep what the
gateway needs from an orchestrator: probes on /healthz and /readyz, a grace period covering the
drain, a locked-down security context, real settings, a placeholder admin key, and the image that
deploy/Dockerfile builds. Offline: kubernetes-validate bundles the schemas; kustomize and kube-score
come from deploy/dev/setup-kube-tools (deploy/dev/test runs it; so does this module, at pinned
versions, building them the first time). Each check is also shown failing on a broken manifest."""

from __future__ import annotations

import base64
import copy
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway import __version__
from gateway.config import MiB, Settings, env_name, from_sources

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
# The oldest Kubernetes the manifests are for (PodDisruptionBudget.unhealthyPodEvictionPolicy and
# StatefulSet.persistentVolumeClaimRetentionPolicy are GA from 1.31 and 1.32 on), and the newest
# that kubernetes-validate 1.37.0 bundles (nothing used was removed since).
KUBERNETES_VERSIONS = ("1.32.0", "1.37.0")
# kube-score checks left out, with why:
KUBE_SCORE_IGNORED = (
    # The image is pinned to a version tag; IfNotPresent lets pods restart during a registry outage.
    "container-image-pull-policy",
)
PLACEHOLDER = "REPLACE_ME"
PRESTOP_MIN_S = 5  # endpoint removal takes seconds to reach kube-proxy and ingress controllers
GRACE_MARGIN_S = 10
PROCESS_MIB = 50  # README "Workers and sizing": RSS of an idle worker process (and the parent)

pytestmark = pytest.mark.timeout(900)  # the first run builds kustomize and kube-score with Go


def targets() -> list[str]:
    """The base and every overlay (each directory under overlays/ with a kustomization)."""
    overlays = sorted(
        p.parent.relative_to(KUBERNETES).as_posix() for p in KUBERNETES.glob("overlays/*/kustomization.yaml")
    )
    return ["base", *overlays]


@pytest.fixture(scope="module")
def tools() -> Path:
    done = subprocess.run(
        [str(ROOT / "deploy" / "dev" / "setup-kube-tools")], capture_output=True, text=True, timeout=850
    )
    assert done.returncode == 0, f"deploy/dev/setup-kube-tools failed:\n{done.stderr[-3000:]}"
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def built(tools: Path) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """`kustomize build` of every target, once for the module (tests take deep copies)."""
    return {target: build(tools, KUBERNETES / target) for target in targets()}


def docs_of(built: dict[str, tuple[str, list[dict[str, Any]]]], target: str) -> list[dict[str, Any]]:
    return copy.deepcopy(built[target][1])


def build(tools: Path, directory: Path) -> tuple[str, list[dict[str, Any]]]:
    """`kustomize build` of a directory: the YAML text and its documents."""
    done = subprocess.run(
        [str(tools / "kustomize"), "build", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"kustomize build {directory} failed:\n{done.stderr}"
    return done.stdout, [d for d in yaml.safe_load_all(done.stdout) if d]


def schema_errors(docs: list[dict[str, Any]]) -> list[str]:
    """Every document against the pinned versions' schemas, strict (unknown fields are errors);
    a kind without a schema is an error too (the CLI would only warn)."""
    errors = []
    for version in KUBERNETES_VERSIONS:
        for doc in docs:
            name = f"{version} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{name}: {'.'.join(map(str, exc.path))}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                errors.append(f"{name}: {exc.message}")
    return errors


def lint(tools: Path, text: str) -> tuple[bool, str]:
    """kube-score over the built manifests: passes only without a warning or a critical."""
    ignored = [arg for test in KUBE_SCORE_IGNORED for arg in ("--ignore-test", test)]
    done = subprocess.run(
        [str(tools / "kube-score"), "score", "--output-format", "ci", "--exit-one-on-warning", *ignored, "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
    )
    problems = [line for line in done.stdout.splitlines() if line.startswith(("[WARNING]", "[CRITICAL]"))]
    return done.returncode == 0 and not problems, "\n".join(problems) or done.stderr


# ---- the properties the gateway needs, on the built documents ---------------------------------


def dockerfile() -> dict[str, Any]:
    """What the image is: user, exposed port, entrypoint and command, data directory."""
    text = DOCKERFILE.read_text()
    user = re.findall(r"^USER\s+(\d+):(\d+)\s*$", text, re.M)[-1]
    data_dir = re.search(r"GATEWAY_DATA_DIR=(\S+)", text)
    assert data_dir is not None
    return {
        "uid": int(user[0]),
        "gid": int(user[1]),
        "port": int(re.findall(r"^EXPOSE\s+(\d+)", text, re.M)[-1]),
        "entrypoint": yaml.safe_load(re.findall(r"^ENTRYPOINT\s+(.+)$", text, re.M)[-1]),
        "cmd": yaml.safe_load(re.findall(r"^CMD\s+(.+)$", text, re.M)[-1]),
        "data_dir": data_dir.group(1),
    }


def of_kind(docs: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in kinds]


def by_name(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    return next((d for d in of_kind(docs, kind) if d["metadata"]["name"] == name), None)


def gateway_container(pod: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod["containers"]
    return next(c for c in containers if c["name"] == "gateway")


def environment(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The container's environment from its ConfigMaps and Secrets (envFrom and env)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            cm = by_name(docs, "ConfigMap", source["configMapRef"]["name"])
            env.update(cm["data"] if cm else {})
        if "secretRef" in source:
            secret = by_name(docs, "Secret", source["secretRef"]["name"])
            env.update({k: base64.b64decode(v).decode() for k, v in (secret or {}).get("data", {}).items()})
            env.update((secret or {}).get("stringData", {}))
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def settings_of(docs: list[dict[str, Any]], container: dict[str, Any]) -> Settings:
    """The gateway's settings in that environment (ValueError if the gateway would refuse them)."""
    env = environment(docs, container)
    return from_sources(None, {k: v for k, v in env.items() if k.startswith("GATEWAY_")})


def seconds_of_sleep(command: list[str]) -> int:
    assert command[0] == "sleep" and len(command) == 2, command
    return int(command[1])


def check_workload(docs: list[dict[str, Any]], workload: dict[str, Any]) -> Iterator[str]:
    """The problems of one Deployment or StatefulSet running the gateway."""
    name = f"{workload['kind']}/{workload['metadata']['name']}"
    pod = workload["spec"]["template"]["spec"]
    gw = gateway_container(pod)
    image = dockerfile()
    env = environment(docs, gw)
    unknown = {k for k in env if k.startswith("GATEWAY_")} - {
        env_name(f) for f in Settings.__dataclass_fields__
    }
    if unknown:
        yield f"{name}: not gateway settings: {sorted(unknown)}"
    try:
        settings = settings_of(docs, gw)
    except ValueError as exc:
        yield f"{name}: the gateway refuses its settings: {exc}"
        return
    for source in gw.get("envFrom", []):
        kind, ref = (
            ("ConfigMap", source["configMapRef"])
            if "configMapRef" in source
            else ("Secret", source["secretRef"])
        )
        if by_name(docs, kind, ref["name"]) is None:
            yield f"{name}: envFrom names {kind} {ref['name']}, which is not in the output"
    if not env.get("GATEWAY_ADMIN_KEY", "").startswith(PLACEHOLDER):
        yield f"{name}: the committed admin key must be the {PLACEHOLDER}… placeholder"

    # The image: deploy/Dockerfile's user, port, entrypoint and version.
    repo, _, tag = gw["image"].rpartition(":")
    if not repo.endswith("ingest-gateway") or tag != __version__:
        yield f"{name}: image {gw['image']!r} is not ingest-gateway:{__version__}"
    if "command" in gw or gw.get("args") != image["cmd"] or image["entrypoint"] != ["ingest-gateway"]:
        yield f"{name}: must run the image's ENTRYPOINT with args {image['cmd']}"
    ports = {p["name"]: p["containerPort"] for p in gw.get("ports", [])}
    if ports.get("http") != image["port"] or settings.port != image["port"]:
        yield (
            f"{name}: port http {ports.get('http')} / GATEWAY_PORT {settings.port} is not "
            f"the image's EXPOSE {image['port']}"
        )
    scrape = workload["spec"]["template"]["metadata"].get("annotations", {})
    if scrape.get("prometheus.io/port", str(image["port"])) != str(image["port"]):
        yield f"{name}: prometheus.io/port is not the gateway's port {image['port']}"
    if settings.host != "0.0.0.0":
        yield f"{name}: the gateway must listen on 0.0.0.0, not {settings.host}"

    # Probes: alive = /healthz, ready = /readyz (README "Operations").
    for probe, path in (
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ):
        get = gw.get(probe, {}).get("httpGet", {})
        if probe == "startupProbe" and probe not in gw:
            continue
        if get.get("path") != path or ports.get(get.get("port"), get.get("port")) != image["port"]:
            yield f"{name}: {probe} must GET {path} on port {image['port']}, got {get}"

    # The drain: preStop, then SIGTERM: requests finish within wait_timeout_s + 5 s, the queues
    # drain within drain_timeout_s (gateway/server.py, app.py); the --workers supervisor allows
    # wait + drain + 15 s (gateway/workers.py). The grace period must cover all of it.
    prestop = gw.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    sleep = seconds_of_sleep(prestop) if prestop else 0
    if sleep < PRESTOP_MIN_S:
        yield f"{name}: preStop must sleep ≥ {PRESTOP_MIN_S} s while endpoints drop the pod"
    needed = sleep + settings.wait_timeout_s + settings.drain_timeout_s + 15 + GRACE_MARGIN_S
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace < needed:
        yield (
            f"{name}: terminationGracePeriodSeconds {grace} < {needed:.0f} (preStop {sleep} + "
            f"wait {settings.wait_timeout_s} + drain {settings.drain_timeout_s} + 15 + margin)"
        )

    # Security: non-root as the image's user, nothing to escalate, read-only root, RuntimeDefault.
    context = pod.get("securityContext", {})
    if not (
        context.get("runAsNonRoot") is True
        and context.get("runAsUser") == image["uid"]
        and context.get("runAsGroup") == image["gid"]
    ):
        yield f"{name}: pod must run as non-root {image['uid']}:{image['gid']}, got {context}"
    if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        yield f"{name}: seccompProfile must be RuntimeDefault"
    if pod.get("automountServiceAccountToken") is not False:
        yield f"{name}: the gateway needs no service account token"
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container.get("securityContext", {})
        if not (
            sc.get("allowPrivilegeEscalation") is False
            and sc.get("readOnlyRootFilesystem") is True
            and sc.get("capabilities", {}).get("drop") == ["ALL"]
            and not sc.get("privileged")
            and not sc.get("capabilities", {}).get("add")
        ):
            yield f"{name}: container {container['name']}: securityContext too open: {sc}"
        for kind in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(container.get("resources", {}).get(kind, {}))
            if missing:
                yield f"{name}: container {container['name']}: no {kind} for {sorted(missing)}"

    # Writable directories on a read-only root: /tmp (the --workers metrics directory), the data
    # directory, and the spool on a PersistentVolume of its own.
    mounts = {m["mountPath"]: m["name"] for m in gw.get("volumeMounts", []) if not m.get("readOnly")}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
    for path in ("/tmp", str(settings.data_dir)):
        if "emptyDir" not in volumes.get(mounts.get(path, ""), {}):
            yield f"{name}: {path} must be a writable emptyDir (read-only root filesystem)"
    if str(settings.data_dir) != image["data_dir"]:
        yield f"{name}: GATEWAY_DATA_DIR {settings.data_dir} is not the image's {image['data_dir']}"
    if settings.spool_dir and (
        workload["kind"] != "StatefulSet" or mounts.get(settings.spool_dir) not in claims
    ):
        yield f"{name}: --spool-dir {settings.spool_dir} must be a StatefulSet's volume claim"
    if settings.spool_dir and settings.worker_count > 1:
        # gateway/workers.py gives every worker the same --spool-dir: they would append to and
        # delete each other's segment files.
        yield f"{name}: --spool-dir needs --workers 1 (the workers would share one spool)"

    # Resources (README "Workers and sizing"): a core per worker; memory above the row buffers.
    resources = gw.get("resources", {})
    workers = settings.worker_count
    need_mib = workers * (settings.memory_cap_bytes / MiB + PROCESS_MIB) + (PROCESS_MIB if workers > 1 else 0)
    limit = quantity(resources.get("limits", {}).get("memory", "0"))
    if limit < need_mib * MiB:
        yield (
            f"{name}: memory limit {limit / MiB:.0f} MiB < {need_mib:.0f} MiB for {workers} "
            f"worker(s) of --memory-cap-bytes {settings.memory_cap_bytes}"
        )
    if quantity(resources.get("requests", {}).get("cpu", "0")) < workers:
        yield f"{name}: CPU request below one core per worker ({workers})"
    if "replicas" in workload["spec"]:
        yield f"{name}: sets replicas, which its HorizontalPodAutoscaler owns"


def quantity(text: str | int) -> float:
    """A Kubernetes quantity (`1Gi`, `500m`, `2`) as a number."""
    units = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "m": 1e-3,
        "": 1,
    }
    match = re.fullmatch(r"([\d.]+)([A-Za-z]*)", str(text))
    assert match is not None and match.group(2) in units, text
    return float(match.group(1)) * units[match.group(2)]


def check(docs: list[dict[str, Any]]) -> list[str]:
    """Every problem of one built target (empty: fine)."""
    problems: list[str] = []
    workloads = of_kind(docs, "Deployment", "StatefulSet")
    if len(workloads) != 1:
        return [f"expected one gateway Deployment or StatefulSet, got {len(workloads)}"]
    workload = workloads[0]
    problems += check_workload(docs, workload)
    labels = workload["spec"]["template"]["metadata"]["labels"]
    gw = gateway_container(workload["spec"]["template"]["spec"])
    ports = {p["name"] for p in gw.get("ports", [])}
    for kind in ("Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"):
        if not of_kind(docs, kind):
            problems.append(f"no {kind}")
    for doc in of_kind(docs, "Service"):
        selector = doc["spec"].get("selector", {})
        if not selector or selector.items() - labels.items():
            problems.append(f"Service/{doc['metadata']['name']} does not select the gateway pods")
        problems += [
            f"Service/{doc['metadata']['name']}: targetPort {p['targetPort']} is not a container port"
            for p in doc["spec"]["ports"]
            if p["targetPort"] not in ports
        ]
    for doc in of_kind(docs, "PodDisruptionBudget", "NetworkPolicy"):
        key = "podSelector" if doc["kind"] == "NetworkPolicy" else "selector"
        if doc["spec"][key]["matchLabels"].items() - labels.items():
            problems.append(f"{doc['kind']}/{doc['metadata']['name']} does not select the pods")
    for doc in of_kind(docs, "HorizontalPodAutoscaler"):
        ref = doc["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) != (workload["kind"], workload["metadata"]["name"]):
            problems.append(
                f"HorizontalPodAutoscaler scales {ref['kind']}/{ref['name']}, not the "
                f"gateway's {workload['kind']}"
            )
        if doc["spec"].get("minReplicas", 1) < 2:
            problems.append("HorizontalPodAutoscaler: minReplicas < 2 leaves no replica in a drain")
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    if len(namespaces) != 1:
        problems.append(f"objects spread over namespaces {namespaces}")
    for ns in of_kind(docs, "Namespace"):
        labels_ns = ns["metadata"].get("labels", {})
        if labels_ns.get("pod-security.kubernetes.io/enforce") != "restricted":
            problems.append(
                f"Namespace/{ns['metadata']['name']} must enforce the restricted Pod Security Standard"
            )
        if ns["metadata"]["name"] not in namespaces:
            problems.append(f"Namespace/{ns['metadata']['name']} holds none of the objects")
    return problems


# ---- the tests --------------------------------------------------------------------------------


def test_every_overlay_is_checked() -> None:
    assert {"base", "overlays/production", "overlays/spool"} <= set(targets())


@pytest.mark.parametrize("target", targets())
def test_builds_validates_lints_and_keeps_the_invariants(
    tools: Path, built: dict[str, Any], target: str
) -> None:
    text, docs = built[target]
    assert schema_errors(docs) == []
    ok, report = lint(tools, text)
    assert ok, report
    assert check(docs) == []
    kinds = {d["kind"] for d in docs}
    if target == "overlays/spool":
        assert "StatefulSet" in kinds and "Deployment" not in kinds
        (workload,) = of_kind(docs, "StatefulSet")
        assert settings_of(docs, gateway_container(workload["spec"]["template"]["spec"])).spool_dir
    elif target != "base":
        assert "Namespace" in kinds


def test_the_spool_variant_runs_the_same_pod_as_the_deployment(built: dict[str, Any]) -> None:
    """The StatefulSet's pod template is the Deployment's, plus the spool's volume mount."""
    production = docs_of(built, "overlays/production")
    spool = docs_of(built, "overlays/spool")
    pod = copy.deepcopy(of_kind(production, "Deployment")[0]["spec"]["template"])
    spool_pod = copy.deepcopy(of_kind(spool, "StatefulSet")[0]["spec"]["template"])
    mounts = gateway_container(spool_pod["spec"])["volumeMounts"]
    added = [m for m in mounts if m["name"] == "spool"]
    assert len(added) == 1
    mounts.remove(added[0])
    # The settings' names differ by their hashes (the spool's ConfigMap has one more key).
    for template in (pod, spool_pod):
        for container in template["spec"]["containers"] + template["spec"]["initContainers"]:
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source["secretRef"]
                ref["name"] = ref["name"].rsplit("-", 1)[0]
    assert spool_pod == pod


def test_the_admin_key_guard_refuses_the_placeholder(built: dict[str, Any]) -> None:
    """The init container's check, run as is: the placeholder and short keys stop the pod."""
    docs = docs_of(built, "overlays/production")
    pod = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    (guard,) = pod["initContainers"]
    assert guard["image"] == gateway_container(pod)["image"]
    assert guard["command"][:2] == ["python", "-c"]
    placeholder = environment(docs, guard)["GATEWAY_ADMIN_KEY"]

    def run(key: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", guard["command"][2]],
            capture_output=True,
            text=True,
            env={"GATEWAY_ADMIN_KEY": key},
            timeout=60,
        )

    for bad in (placeholder, "", "short-key"):
        refused = run(bad)
        assert refused.returncode != 0 and "GATEWAY_ADMIN_KEY" in refused.stderr, bad
        assert bad == "" or bad not in refused.stderr  # the key itself is never printed
    assert run("0123456789abcdef" * 3).returncode == 0


README = ROOT / "README.md"


def readme_kubernetes() -> str:
    text = README.read_text()
    return text[text.index("### Kubernetes") :]


def test_the_readme_site_overlay_replaces_the_placeholder_key(tools: Path, tmp_path: Path) -> None:
    """The README's way to supply the admin key, as written there: an overlay of one's own."""
    section = readme_kubernetes()
    kustomization = re.search(r"cat > kustomization.yaml <<'EOT'\n(.*?)\nEOT\n", section, re.S)
    assert kustomization is not None
    key = "0123456789abcdef" * 3
    site = tmp_path / "my-gateway"
    site.mkdir()
    (site / "admin.env").write_text(f"GATEWAY_ADMIN_KEY={key}\n")
    (site / "kustomization.yaml").write_text(
        kustomization.group(1).replace("../deploy/kubernetes/", os.path.relpath(KUBERNETES, site) + "/")
    )
    _, docs = build(tools, site)
    (secret,) = of_kind(docs, "Secret")
    assert base64.b64decode(secret["data"]["GATEWAY_ADMIN_KEY"]).decode() == key
    pod = workload_of(docs)["spec"]["template"]["spec"]
    assert environment(docs, gateway_container(pod))["GATEWAY_ADMIN_KEY"] == key
    assert environment(docs, pod["initContainers"][0])["GATEWAY_ADMIN_KEY"] == key
    assert gateway_container(pod)["image"] == f"registry.example.com/ingest-gateway:{__version__}"
    # Everything else holds; only the committed-placeholder rule (meant for this repository) not.
    problems = check(docs)
    assert problems and all("placeholder" in p for p in problems), problems


def test_the_readme_strimzi_kafka_is_what_the_manifests_point_at(built: dict[str, Any]) -> None:
    """The README's Kafka resource, the bootstrap address, and the NetworkPolicies of both sides."""
    block = re.search(r"```yaml\n(apiVersion: kafka\.strimzi\.io/.*?)```", readme_kubernetes(), re.S)
    assert block is not None
    kafka = yaml.safe_load(block.group(1))
    assert kafka["kind"] == "Kafka"
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    # What the gateway supports: plaintext, no authentication (gateway/config.py has no Kafka TLS
    # or SASL setting).
    assert listener["tls"] is False and "authentication" not in listener
    assert not [f for f in Settings.__dataclass_fields__ if re.search(r"sasl|tls|ssl", f)]
    docs = docs_of(built, "overlays/production")
    gw = gateway_container(workload_of(docs)["spec"]["template"]["spec"])
    settings = settings_of(docs, gw)
    name, namespace = kafka["metadata"]["name"], kafka["metadata"]["namespace"]
    assert settings.kafka_bootstrap == f"{name}-kafka-bootstrap.{namespace}.svc:{listener['port']}"
    config = kafka["spec"]["kafka"]["config"]
    assert settings.replication_factor == config["default.replication.factor"] > config["min.insync.replicas"]
    assert config["auto.create.topics.enable"] is False
    # The gateway's egress reaches exactly those brokers...
    (policy,) = of_kind(docs, "NetworkPolicy")
    (to_kafka,) = [rule for rule in policy["spec"]["egress"] if "to" in rule]
    (peer,) = to_kafka["to"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": namespace}
    assert peer["podSelector"]["matchLabels"] == {"strimzi.io/cluster": name}
    assert [p["port"] for p in to_kafka["ports"]] == [listener["port"]]
    # ...and the listener lets the gateway's pods in.
    (allowed,) = listener["networkPolicyPeers"]
    (ns,) = of_kind(docs, "Namespace")
    assert allowed["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": ns["metadata"]["name"]
    }
    labels = workload_of(docs)["spec"]["template"]["metadata"]["labels"]
    assert allowed["podSelector"]["matchLabels"].items() <= labels.items()


def test_dockerfile_makes_what_the_manifests_expect() -> None:
    """The facts check_workload compares against, read from deploy/Dockerfile."""
    image = dockerfile()
    assert image["uid"] == image["gid"] == 10001
    assert image["port"] == Settings().port == 8000
    assert image["entrypoint"] == ["ingest-gateway"] and image["cmd"] == ["serve"]
    assert image["data_dir"] == "/var/lib/ingest-gateway"
    assert "GATEWAY_HOST=0.0.0.0" in DOCKERFILE.read_text()


# ---- and each check fails on a broken manifest ------------------------------------------------


def workload_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return of_kind(docs, "Deployment", "StatefulSet")[0]


def gateway_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return gateway_container(workload_of(docs)["spec"]["template"]["spec"])


def settings_map(docs: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = of_kind(docs, "ConfigMap")[0]["data"]
    return data


# name: (how the production overlay is broken, a word of the problem check() must report)
BREAKAGES: dict[str, tuple[Callable[[list[dict[str, Any]]], object], str]] = {
    "readiness on /healthz": (
        lambda d: gateway_of(d)["readinessProbe"]["httpGet"].update(path="/healthz"),
        "readinessProbe must GET /readyz",
    ),
    "no liveness probe": (lambda d: gateway_of(d).pop("livenessProbe"), "livenessProbe must GET /healthz"),
    "grace below the drain": (
        lambda d: workload_of(d)["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=60),
        "terminationGracePeriodSeconds 60 <",
    ),
    "a longer drain, same grace": (
        lambda d: settings_map(d).update(GATEWAY_DRAIN_TIMEOUT_S="120"),
        "terminationGracePeriodSeconds 130 <",
    ),
    "no preStop": (lambda d: gateway_of(d).pop("lifecycle"), "preStop must sleep"),
    "runs as root": (
        lambda d: workload_of(d)["spec"]["template"]["spec"]["securityContext"].update(
            runAsNonRoot=False, runAsUser=0
        ),
        "must run as non-root",
    ),
    "writable root": (
        lambda d: gateway_of(d)["securityContext"].update(readOnlyRootFilesystem=False),
        "securityContext too open",
    ),
    "init container may escalate": (
        lambda d: workload_of(d)["spec"]["template"]["spec"]["initContainers"][0]["securityContext"].pop(
            "allowPrivilegeEscalation"
        ),
        "check-admin-key: securityContext too open",
    ),
    "no seccomp": (
        lambda d: workload_of(d)["spec"]["template"]["spec"]["securityContext"].pop("seccompProfile"),
        "seccompProfile must be RuntimeDefault",
    ),
    "no /tmp": (lambda d: gateway_of(d)["volumeMounts"].pop(0), "/tmp must be a writable emptyDir"),
    "image latest": (lambda d: gateway_of(d).update(image="ingest-gateway:latest"), "is not ingest-gateway:"),
    "another port": (lambda d: settings_map(d).update(GATEWAY_PORT="9000"), "is not the image's EXPOSE"),
    "scrape another port": (
        lambda d: workload_of(d)["spec"]["template"]["metadata"]["annotations"].update(
            {"prometheus.io/port": "9000"}
        ),
        "prometheus.io/port",
    ),
    "a real key": (
        lambda d: of_kind(d, "Secret")[0]["data"].update(
            GATEWAY_ADMIN_KEY=base64.b64encode(b"k" * 48).decode()
        ),
        "placeholder",
    ),
    "a misspelt setting": (
        lambda d: settings_map(d).update(GATEWAY_DRAIN_TIMEOUT="60"),
        "not gateway settings",
    ),
    "an invalid setting": (
        lambda d: settings_map(d).update(GATEWAY_WORKERS="0"),
        "the gateway refuses its settings",
    ),
    "memory limit below the cap": (
        lambda d: gateway_of(d)["resources"]["limits"].update(memory="512Mi"),
        "memory limit 512 MiB <",
    ),
    "a spool on an emptyDir": (
        lambda d: settings_map(d).update(GATEWAY_SPOOL_DIR="/tmp/spool"),
        "must be a StatefulSet's volume claim",
    ),
    "a shared spool": (
        lambda d: settings_map(d).update(GATEWAY_SPOOL_DIR="/tmp/spool", GATEWAY_WORKERS="2"),
        "--spool-dir needs --workers 1",
    ),
    "service selects nothing": (
        lambda d: of_kind(d, "Service")[0]["spec"]["selector"].update(app="other"),
        "does not select the gateway pods",
    ),
    "secret not in the output": (
        lambda d: of_kind(d, "Secret")[0]["metadata"].update(name="other"),
        "which is not in the output",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_invariants_fail_on_a_broken_manifest(built: dict[str, Any], breakage: str) -> None:
    docs = docs_of(built, "overlays/production")
    assert check(docs) == []
    breaks, expected = BREAKAGES[breakage]
    breaks(docs)
    problems = check(docs)
    assert any(expected in p for p in problems), problems


def test_kustomize_schemas_and_linter_fail_on_a_broken_overlay(tools: Path, tmp_path: Path) -> None:
    """An overlay of production with mistakes each tool catches, through the same checks."""
    production = KUBERNETES / "overlays" / "production"
    broken = tmp_path / "broken"
    broken.mkdir()
    # A mistyped field name and a wrong type: the schemas (the first error of each object);
    # no resource limits: kube-score.
    (broken / "kustomization.yaml").write_text(f"""\
resources: ["{os.path.relpath(production, broken)}"]
patches:
  - target: {{kind: Deployment, name: ingest-gateway}}
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/readinesProbe
        value: {{httpGet: {{path: /readyz, port: http}}}}
      - op: remove
        path: /spec/template/spec/containers/0/resources/limits
  - target: {{kind: HorizontalPodAutoscaler, name: ingest-gateway}}
    patch: |-
      - op: replace
        path: /spec/minReplicas
        value: "two"
""")
    text, docs = build(tools, broken)
    errors = schema_errors(docs)
    assert any("readinesProbe" in e for e in errors), errors
    assert any("HorizontalPodAutoscaler" in e and "minReplicas" in e for e in errors), errors
    # (kube-score refuses the HorizontalPodAutoscaler outright: lint the Deployment alone.)
    ok, report = lint(tools, yaml.safe_dump(workload_of(docs)))
    assert not ok and "limit is not set" in report, report
    assert not lint(tools, text)[0]
    # A kind the pinned version has no schema for is an error, not a warning.
    assert schema_errors([{"apiVersion": "apps/v1", "kind": "StatefullSet", "metadata": {"name": "x"}}]) != []
    # And kustomize refuses a kustomization naming a file that is not there.
    (broken / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    done = subprocess.run(
        [str(tools / "kustomize"), "build", str(broken)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
