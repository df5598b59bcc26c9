"""deploy/kubernetes: valid against the Kubernetes schemas (offline, kubernetes-validate), and
what a schema cannot see: probes on paths the app serves, ports that agree, env names that
are settings, a grace period that fits the drain, the image's user and volumes."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml
from starlette.testclient import TestClient

from api.app import create_app
from api.middleware import is_api
from ml.config import EnvSettings, Settings
from ml.registry import Registry
from tests.deploy import dockerfile
from tests.deploy.manifests import KUBERNETES, containers, documents, one, probes, resources

KUBERNETES_VERSION = "1.37"  # the newest schemas kubernetes-validate ships
CUSTOM_KINDS = {"ServiceMonitor"}  # no schema offline; checked by hand below
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def pod_spec() -> dict[str, Any]:
    return one("Deployment")["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def server() -> dict[str, Any]:
    [found] = pod_spec()["containers"]
    return found  # type: ignore[no-any-return]


def test_every_manifest_validates_against_the_kubernetes_schemas() -> None:
    kinds = set()
    for (kind, _name), doc in resources().items():
        kinds.add(kind)
        if kind in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert {"Deployment", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler",
            "PodDisruptionBudget", "ServiceMonitor"} <= kinds


def test_a_typo_fails_the_strict_validation() -> None:
    deployment = one("Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_the_manifests_and_builds() -> None:
    [kustomization] = documents(KUBERNETES / "kustomization.yaml")
    listed = set(kustomization["resources"])
    assert all((KUBERNETES / name).is_file() for name in listed)
    # the Secret is the user's to create (keys never in the repo); the ServiceMonitor needs
    # the Prometheus Operator's CRDs; everything else is applied together
    assert listed == {p.name for p in KUBERNETES.glob("*.yaml")} - {
        "kustomization.yaml", "secret.example.yaml", "servicemonitor.yaml"}
    [image] = kustomization["images"]
    assert {c["image"] for c in containers(pod_spec())} == {image["name"]}
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: kustomize build not run")
    built = subprocess.run([kubectl, "kustomize", str(KUBERNETES)], capture_output=True,
                           text=True, timeout=60, check=True).stdout
    docs = [d for d in yaml.safe_load_all(built) if d]
    assert len(docs) == len(listed)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    assert {c["image"] for c in containers(deployment["spec"]["template"]["spec"])} == {
        f"{image['name']}:{image['newTag']}"}


def served_paths() -> list[str]:
    """GET paths of the API app (the one the one-process server fronts), by its routes."""
    app = create_app(registry=Registry(Settings(), entries={}))
    return [r.path for r in app.routes if "GET" in (getattr(r, "methods", None) or ())]


def checked_paths() -> list[str]:
    paths = [p["httpGet"]["path"] for p in probes(server()).values()]
    paths.append(one("Deployment")["spec"]["template"]["metadata"]["annotations"][
        "prometheus.io/path"])
    paths += [e["path"] for e in one("ServiceMonitor")["spec"]["endpoints"]]
    return paths


def test_probes_and_scrapes_ask_paths_the_app_serves() -> None:
    paths = checked_paths()
    assert {"/health/live", "/health/ready", "/metrics"} <= set(paths)
    served = served_paths()
    app = create_app(registry=Registry(Settings(), entries={}))
    with TestClient(app) as client:
        for path in paths:
            assert path in served, path
            # server.py hands these to the API app before the UI sees them
            assert is_api({"type": "http", "path": path}), path
            answer = client.get(path, headers={"accept": PROMETHEUS_ACCEPT})
            assert answer.status_code in (200, 503), (path, answer.status_code)
    # readiness is the route that says "not ready" during warm-up and drain; liveness the
    # one that does not
    kinds = {kind: p["httpGet"]["path"] for kind, p in probes(server()).items()}
    assert kinds == {"startupProbe": "/health/live", "livenessProbe": "/health/live",
                     "readinessProbe": "/health/ready"}


def test_metrics_scrape_gets_prometheus_text() -> None:
    app = create_app(registry=Registry(Settings(), entries={}))
    with TestClient(app) as client:
        answer = client.get("/metrics", headers={"accept": PROMETHEUS_ACCEPT})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in answer.text


def test_ports_agree() -> None:
    image = dockerfile.read().image()
    port = int(image.cmd[image.cmd.index("--port") + 1])
    [container_port] = server()["ports"]
    assert container_port["containerPort"] == port
    name = container_port["name"]
    for probe in probes(server()).values():
        assert probe["httpGet"]["port"] in (name, port)
    annotations = one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    [service_port] = one("Service")["spec"]["ports"]
    assert service_port["targetPort"] in (name, port)
    assert [e["port"] for e in one("ServiceMonitor")["spec"]["endpoints"]] == [
        service_port["name"]]


def settings_classes() -> list[type[EnvSettings]]:
    import api.config  # noqa: F401 - registers ApiSettings as an EnvSettings subclass

    found, todo = [], [EnvSettings]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        found.append(cls)
    return [c for c in found if c is not EnvSettings and dataclasses.is_dataclass(c)]


def setting_named(env: str) -> tuple[type[EnvSettings], dict[str, Any]] | None:
    """The settings class and field metadata of environment variable `env`, if any."""
    import re

    for cls in settings_classes():
        for f in dataclasses.fields(cls):
            if f.metadata.get("env") == env:
                return cls, dict(f.metadata, secret=not f.repr)
        for row in cls.describe():  # patterned ones: ML_<MODEL>_MAX_BATCH and the like
            if "<" in row["env"]:
                pattern = re.sub(r"<[A-Z]+>", "[A-Z0-9_]+", row["env"])
                if re.fullmatch(pattern, env):
                    return cls, {"env": row["env"], "secret": False}
    return None


def test_config_map_sets_only_settings_with_values_they_accept() -> None:
    data = one("ConfigMap")["data"]
    assert data
    for env in data:
        found = setting_named(env)
        assert found is not None, f"{env} is not a setting (python -m ml info lists them)"
        assert not found[1]["secret"], f"{env} is a secret: it belongs in the Secret"
    for cls in settings_classes():
        cls.from_env(data)  # raises ConfigError for a value the server would refuse
    assert Settings.from_env(data).torch_threads == int(float(
        server()["resources"]["limits"]["cpu"]))


def test_container_env_names_are_settings_and_secrets_come_from_the_secret() -> None:
    image_env = dockerfile.read().image().env
    secret = one("Secret")
    for container in containers(pod_spec()):
        for env in container.get("env", []):
            found = setting_named(env["name"])
            assert found is not None, env["name"]
            ref = env["valueFrom"]["secretKeyRef"]
            assert found[1]["secret"] and "value" not in env, env["name"]
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret["stringData"]
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] == one("ConfigMap")["metadata"]["name"]
    for env in image_env:  # the image's own ML_* defaults are settings too
        if env.startswith("ML_"):
            assert setting_named(env) is not None, env


def test_grace_period_fits_prestop_and_drain() -> None:
    image = dockerfile.read().image()
    drain = float(image.cmd[image.cmd.index("--timeout-graceful-shutdown") + 1])
    pre_stop = server()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert grace >= float(pre_stop[1]) + drain + 5, grace


def test_runs_as_the_image_user_with_a_read_only_root() -> None:
    image = dockerfile.read().image()
    uid, gid = (int(part) for part in image.user.split(":"))
    security = pod_spec()["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == (uid, gid)
    for container in containers(pod_spec()):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert "privileged" not in context and "add" not in context["capabilities"]


def test_writable_volumes_are_the_image_volumes_and_the_cache_is_seeded() -> None:
    image = dockerfile.read().image()
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in server()["volumeMounts"]}
    assert sorted(mounts) == sorted(image.volumes)
    assert all("emptyDir" in volumes[name] for name in mounts.values())
    cache = image.env["ML_CACHE_DIR"]
    [seed] = pod_spec()["initContainers"]
    [seed_mount] = seed["volumeMounts"]
    assert seed_mount["name"] == mounts[cache]
    # the image's artifacts, copied into the (otherwise empty) cache volume
    assert seed["command"] == ["cp", "-R", f"{cache}/.", f"{seed_mount['mountPath']}/"]


def test_selectors_and_targets_point_at_the_deployment() -> None:
    deployment = one("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    assert one("Service")["spec"]["selector"].items() <= labels.items()
    assert one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= \
        labels.items()
    target = one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert one("HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2  # a PDB can hold
    service_labels = one("Service")["metadata"]["labels"]
    assert one("ServiceMonitor")["spec"]["selector"]["matchLabels"].items() <= \
        service_labels.items()
    credentials = one("ServiceMonitor")["spec"]["endpoints"][0]["authorization"]["credentials"]
    assert credentials["name"] == one("Secret")["metadata"]["name"]
    assert credentials["key"] in one("Secret")["stringData"]


def test_every_container_has_requests_within_limits() -> None:
    from decimal import Decimal

    units = {"m": Decimal("0.001"), "Mi": Decimal(2**20), "Gi": Decimal(2**30)}

    def quantity(text: str) -> Decimal:
        for suffix, scale in units.items():
            if str(text).endswith(suffix):
                return Decimal(str(text)[:-len(suffix)]) * scale
        return Decimal(str(text))

    for container in containers(pod_spec()):
        resources_ = container["resources"]
        for kind in ("cpu", "memory"):
            assert quantity(resources_["requests"][kind]) <= quantity(
                resources_["limits"][kind]), (container["name"], kind)
