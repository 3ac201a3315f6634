"""The deployable serve configs in cluster/: valid for the pinned Ray's `serve deploy`, pointing at
the app's builder with arguments it accepts, and with batches that can fill."""

from pathlib import Path

import pytest
import yaml
from ray.serve.deployment import Application
from ray.serve.schema import ServeDeploySchema

from medeid.serve import AppArgs, app
from medeid.serve.service import DEPLOYMENT

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


@pytest.mark.parametrize("name", ["serve.yaml", "serve-cpu.yaml"])
def test_the_cluster_serve_config_deploys_the_app(name):
    config = ServeDeploySchema.model_validate(yaml.safe_load((CLUSTER / name).read_text()))
    (application,) = config.applications
    assert application.import_path == "medeid.serve:app"
    assert isinstance(app(AppArgs.model_validate(application.args)), Application)  # no I/O: replicas load
    (deployment,) = application.deployments
    assert deployment.name == DEPLOYMENT
    assert deployment.max_ongoing_requests >= deployment.user_config["max_batch_size"]
    assert deployment.autoscaling_config["min_replicas"] >= 1
    assert not {"secret", "token"} & set(map(str.lower, application.args))  # paths of secret files only
