"""deploy/kuberay/rayservice.yaml. KubeRay's CRD schema is not published in any package that
installs offline (PyPI, npm), so the RayService's own fields are checked against the
KubeRay v1 API's field names here, and every pod template in it against the Kubernetes
schema (kubernetes-validate, as a PodTemplate). Then what no schema sees: the same
application as deploy/ray/serve.yaml, the same image, ports, users and settings."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy import dockerfile
from tests.deploy.manifests import (
    KUBERAY,
    ROOT,
    SERVE_CONFIG,
    containers,
    documents,
    one,
)
from tests.deploy.test_manifests import KUBERNETES_VERSION, setting_named

# Field names of KubeRay's ray.io/v1 types (ray-operator/apis/ray/v1, KubeRay 1.1-1.5)
RAY_SERVICE_SPEC = {"serveConfigV2", "rayClusterConfig", "upgradeStrategy", "serveService",
                    "excludeHeadPodFromServeSvc", "rayClusterDeletionDelaySeconds",
                    "serviceUnhealthySecondThreshold", "deploymentUnhealthySecondThreshold"}
RAY_CLUSTER_SPEC = {"rayVersion", "enableInTreeAutoscaling", "autoscalerOptions",
                    "headGroupSpec", "workerGroupSpecs", "headServiceAnnotations", "suspend",
                    "managedBy", "gcsFaultToleranceOptions"}
AUTOSCALER_OPTIONS = {"resources", "image", "imagePullPolicy", "env", "envFrom",
                      "securityContext", "idleTimeoutSeconds", "upscalingMode",
                      "volumeMounts", "version"}
HEAD_GROUP_SPEC = {"rayStartParams", "template", "serviceType", "headService",
                   "enableIngress"}
WORKER_GROUP_SPEC = {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams",
                     "template", "numOfHosts", "suspend", "idleTimeoutSeconds",
                     "scaleStrategy"}
UPSCALING_MODES = {"Default", "Aggressive", "Conservative"}


def ray_service() -> dict[str, Any]:
    [doc] = documents(KUBERAY / "rayservice.yaml")
    return doc


def templates() -> list[dict[str, Any]]:
    cluster = ray_service()["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"],
            *(group["template"] for group in cluster["workerGroupSpecs"])]


def ray_containers() -> list[dict[str, Any]]:
    return [c for t in templates() for c in t["spec"]["containers"]]


def test_fields_are_kuberays() -> None:
    doc = ray_service()
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayService")
    spec = doc["spec"]
    assert set(spec) <= RAY_SERVICE_SPEC
    assert isinstance(spec["serveConfigV2"], str)  # a YAML document inside a string
    cluster = spec["rayClusterConfig"]
    assert set(cluster) <= RAY_CLUSTER_SPEC
    assert set(cluster.get("autoscalerOptions", {})) <= AUTOSCALER_OPTIONS
    assert cluster["autoscalerOptions"]["upscalingMode"] in UPSCALING_MODES
    head = cluster["headGroupSpec"]
    assert set(head) <= HEAD_GROUP_SPEC
    groups = [head, *cluster["workerGroupSpecs"]]
    for group in cluster["workerGroupSpecs"]:
        assert set(group) <= WORKER_GROUP_SPEC
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert len({g["groupName"] for g in cluster["workerGroupSpecs"]}) == len(groups) - 1
    for group in groups:  # map[string]string in the CRD: numbers must be quoted
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())


def test_pod_templates_validate_against_the_kubernetes_schema() -> None:
    for template in templates():
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate",
                                      "metadata": {"name": "check"}, "template": template},
                                     KUBERNETES_VERSION, strict=True)
    options = ray_service()["spec"]["rayClusterConfig"]["autoscalerOptions"]
    kubernetes_validate.validate({
        "apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"},
        "template": {"spec": {"containers": [{"name": "autoscaler", **{
            k: v for k, v in options.items() if k in ("resources", "securityContext")}}]}}},
        KUBERNETES_VERSION, strict=True)


def test_ray_version_is_the_pinned_one() -> None:
    pinned = re.search(r"^ray(\[[^\]]*\])?==(\S+)", (ROOT / "requirements-ray.txt").read_text(),
                       re.MULTILINE)
    assert pinned
    assert ray_service()["spec"]["rayClusterConfig"]["rayVersion"] == pinned[2]


def serve_config() -> dict[str, Any]:
    return yaml.safe_load(ray_service()["spec"]["serveConfigV2"])  # type: ignore[no-any-return]


def test_serves_the_same_application_as_the_serve_config() -> None:
    applications = serve_config()["applications"]
    for app in applications:  # the import path exists in the image's source
        module, _, attribute = app["import_path"].partition(":")
        source = ROOT / (module.replace(".", "/") + ".py")
        tree = ast.parse(source.read_text())
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
        defined |= {t.id for n in tree.body if isinstance(n, ast.Assign)
                    for t in n.targets if isinstance(t, ast.Name)}
        assert attribute in defined, app["import_path"]
    if not SERVE_CONFIG.exists():
        pytest.skip("deploy/ray/serve.yaml is not in the checkout yet: nothing to compare")
    committed = yaml.safe_load(SERVE_CONFIG.read_text())["applications"]
    for app in committed:  # code that a local config ships along is in the image already
        env = app.get("runtime_env", {})
        for key in ("working_dir", "py_modules"):
            env.pop(key, None)
        if "runtime_env" in app and not env:
            del app["runtime_env"]
    assert applications == committed


def test_serve_port_is_the_containers() -> None:
    port = serve_config().get("http_options", {}).get("port", 8000)
    for container in ray_containers():
        assert {"name": "serve", "containerPort": port} in container["ports"]


def test_same_image_as_the_deployment_built_from_the_ray_target() -> None:
    deployment_image = next(containers(one("Deployment")["spec"]["template"]["spec"]))["image"]
    images = {c["image"] for t in templates() for c in containers(t["spec"])}
    assert {i.split(":")[0] for i in images} == {deployment_image}
    parsed = dockerfile.read()
    assert [s.name for s in parsed.chain("ray")][-1] == "ray"
    assert any("requirements-ray.txt" in r.text for r in parsed.stage("ray").all("RUN"))
    assert parsed.chain("ray")[0] is parsed.chain()[0]  # built on the same runtime stage


def test_pods_run_as_the_image_user_without_privileges() -> None:
    uid, gid = (int(part) for part in dockerfile.read().image().user.split(":"))
    for template in templates():
        security = template["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True
        assert (security["runAsUser"], security["runAsGroup"]) == (uid, gid)
        for container in containers(template["spec"]):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]


def test_cache_is_seeded_from_the_image_and_env_names_are_settings() -> None:
    cache = dockerfile.read().image("ray").env["ML_CACHE_DIR"]
    for template in templates():
        spec = template["spec"]
        [seed] = spec["initContainers"]
        [seed_mount] = seed["volumeMounts"]
        assert seed["command"] == ["cp", "-R", f"{cache}/.", f"{seed_mount['mountPath']}/"]
        for container in spec["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts[cache] == seed_mount["name"]
            for env in container["env"]:
                if env["name"].startswith("RAY_"):
                    continue  # Ray's own
                assert setting_named(env["name"]) is not None, env["name"]
                if "valueFrom" in env:
                    assert env["valueFrom"]["secretKeyRef"]["key"] in one("Secret")[
                        "stringData"]


def test_ray_image_command_runs_the_application_on_the_serve_port() -> None:
    cmd = dockerfile.read().image("ray").cmd
    assert cmd[:3] == ["python", "-m", "api.cluster"]  # `make cluster`
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert int(cmd[cmd.index("--port") + 1]) == serve_config()["http_options"]["port"]
    usage = subprocess.run([sys.executable, "-m", "api.cluster", "--help"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert usage.returncode == 0, usage.stderr
    assert "--host" in usage.stdout and "--port" in usage.stdout
