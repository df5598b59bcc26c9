"""deploy/ray/serve.yaml, the config `serve deploy` takes: valid for Ray Serve, its one
application built by api.cluster:build_app, at route prefix / (where the API's paths are)."""

from __future__ import annotations

from pathlib import Path

import yaml

from api.cluster import INGRESS_DEPLOYMENT, plan
from ml.registry import Registry
from tests.cluster.conftest import RAY_WARNINGS

pytestmark = [RAY_WARNINGS]
CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "ray" / "serve.yaml"


def test_the_serve_config_is_valid_and_builds_the_application(registry: Registry) -> None:
    from ray._common.utils import import_attr
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))
    [app] = config.applications
    assert (app.import_path, app.route_prefix) == ("api.cluster:build_app", "/")
    built = import_attr(app.import_path)(app.args or {})
    assert type(built).__name__ == "Application"
    deployments = plan(app.args or {})
    assert set(deployments) == {*registry.names(), INGRESS_DEPLOYMENT}
    for override in app.deployments:  # Serve's per-deployment overrides name real ones
        assert override.name in deployments, override.name
