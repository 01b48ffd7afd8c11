"""The Kubernetes manifests: valid against a pinned Kubernetes schema, and true to the service."""

import re

import kubernetes_validate
import pytest
import yaml
from conftest import ROOT

import api
import service
import v2

K8S = ROOT / "k8s"
KUBERNETES = "1.32"  # the schema version the manifests are checked against
PROBES = ("readinessProbe", "livenessProbe", "startupProbe")
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
OVERLAYS = sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir())
# Whole resources of the overlays (their patches are checked merged into the base, below).
ADDED = sorted(
    p for o in OVERLAYS for p in o.glob("*.yaml") if p.name != "kustomization.yaml"
    and not p.name.startswith("patch-")
)  # fmt: skip


def load(name):
    return yaml.safe_load((K8S / name).read_text())


@pytest.fixture(scope="module")
def pod():
    return load("deployment.yaml")["spec"]["template"]


@pytest.mark.parametrize("path", MANIFESTS + ADDED, ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_is_valid_kubernetes(path):
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_the_validation_would_catch_a_mistake():
    deployment = load("deployment.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pth"] = (
        "/"
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_kustomization_lists_every_manifest():
    assert sorted(load("kustomization.yaml")["resources"]) == [p.name for p in MANIFESTS]


def test_probes_point_at_real_routes_on_the_served_port(pod, app):
    container = pod["spec"]["containers"][0]
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert str(ports["https"]) == env["PORT"]
    expected = dict(zip(PROBES, ("/ready", "/health", "/health"), strict=True))
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path and path in routes
        assert get["port"] in ports and get["scheme"] == "HTTPS"


def test_the_pod_runs_as_the_images_user_read_only(pod):
    uid = re.search(r"useradd .*--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1)
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == int(uid)
    container = pod["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert "setpriv" not in container["args"]  # it starts as the user; nothing to drop
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp"}


def test_secrets_give_what_the_service_reads(pod):
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert "API_TOKEN" in service.SHARED
    token = env["API_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert (token["name"], token["key"]) == ("sentiment-token", "api-token")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    tls = next(m for m in container["volumeMounts"] if m["name"] == "tls")
    assert volumes["tls"]["secret"]["secretName"] == "sentiment-tls"
    # A kubernetes.io/tls Secret holds tls.crt and tls.key; gunicorn.conf.py reads these names.
    conf = (ROOT / "gunicorn.conf.py").read_text()
    for variable, key in (("TLS_CERT", "tls.crt"), ("TLS_KEY", "tls.key")):
        assert f'"{variable}"' in conf
        assert env[variable]["value"] == f"{tls['mountPath']}/{key}"
    readme = (ROOT / "docs" / "deploy.md").read_text()
    assert "kubectl create secret tls sentiment-tls" in readme
    assert "kubectl create secret generic sentiment-token --from-file=api-token=" in readme


def test_replicas_autoscaling_disruption_budget_and_drain(pod):
    deployment, hpa, pdb, svc = (load(f"{n}.yaml") for n in ("deployment", "hpa", "pdb", "service"))
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["replicas"] >= 2 and hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] == "https"
    container = pod["spec"]["containers"][0]
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    graceful = int(
        re.search(r'"GRACEFUL_TIMEOUT", (\d+)', (ROOT / "gunicorn.conf.py").read_text())[1]
    )
    assert pause + graceful < pod["spec"]["terminationGracePeriodSeconds"]
    resources = container["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


def test_the_app_reads_the_settings_the_manifest_sets(pod):
    names = {e["name"] for e in pod["spec"]["containers"][0]["env"]}
    known = set(api.DEFAULTS) | set(v2.DEFAULTS) | {"TLS_CERT", "TLS_KEY", "WORKERS", "PORT"}
    assert names <= known


def test_the_grpc_port_is_the_containers_and_the_services(pod):
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert str(ports["grpc"]) == env["GRPC_PORT"] == str(v2.DEFAULTS["GRPC_PORT"])
    service_ports = {p["name"]: p for p in load("service.yaml")["spec"]["ports"]}
    assert service_ports["grpc"]["targetPort"] == "grpc"
    assert all(container[probe]["httpGet"]["port"] == "https" for probe in PROBES)


def test_several_replicas_require_the_shared_database(pod):
    """The base runs 2 replicas or more: without DATABASE_URL each would keep aliases and jobs
    of its own, so the Secret is required, never optional."""
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert "DATABASE_URL" in service.SHARED
    database = env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert (database["name"], database["key"]) == ("sentiment-database", "database-url")
    assert not database.get("optional", False)
    assert "ALIASES_FILE" not in env and "JOB_STORE_URL" not in env
    guide = (ROOT / "docs" / "deploy.md").read_text()
    assert "kubectl create secret generic sentiment-database --from-literal=database-url=" in guide


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_each_overlay_builds_on_the_base_and_lists_files_that_exist(overlay):
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    assert "../.." in kustomization["resources"]
    named = [
        *kustomization["resources"][1:],
        *(p["path"] for p in kustomization.get("patches", [])),
    ]
    assert named and all((overlay / name).is_file() for name in named)


def test_the_whole_overlays_servers_are_what_the_guides_urls_name():
    """docs/deploy.md's Secrets for the whole overlay name its Services, ports and users."""
    guide = (ROOT / "docs" / "deploy.md").read_text()
    for name in ("postgres", "rabbitmq"):
        documents = list(
            yaml.safe_load_all((K8S / "overlays" / "whole" / f"{name}.yaml").read_text())
        )
        service_ = next(d for d in documents if d["kind"] == "Service")
        port = service_["spec"]["ports"][0]["port"]
        assert f"@{service_['metadata']['name']}:{port}/" in guide, name
        assert f"kubectl create secret generic sentiment-{name} --from-literal=password=" in guide


def test_the_managed_overlays_patch_makes_a_valid_deployment():
    """The patch merged into the base as Kustomize merges it (lists of named items by name):
    valid, and libpq's CA file is inside the Secret's mount."""
    deployment = load("deployment.yaml")
    patch = yaml.safe_load((K8S / "overlays" / "managed" / "patch-database-tls.yaml").read_text())
    merged = merge(deployment, patch)
    kubernetes_validate.validate(merged, KUBERNETES, strict=True)
    container = merged["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "database-ca")
    assert env["PGSSLMODE"] == "verify-full"
    assert env["PGSSLROOTCERT"].startswith(mount["mountPath"] + "/")
    assert (
        len(container["env"])
        == len(deployment["spec"]["template"]["spec"]["containers"][0]["env"]) + 2
    )


def merge(base, patch):
    """A strategic merge patch, as far as these manifests use it: maps merged, lists of maps with
    a name merged by name, other values replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        return {**base, **{k: merge(base[k], v) if k in base else v for k, v in patch.items()}}
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all("name" in i for i in base + patch)
    ):
        merged = {item["name"]: item for item in base}
        for item in patch:
            merged[item["name"]] = (
                merge(merged[item["name"]], item) if item["name"] in merged else item
            )
        return list(merged.values())
    return patch
