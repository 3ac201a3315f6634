"""Session-wide infrastructure: one local S3 server and one local Ray instance for the whole run."""

import os
import uuid

import pytest

from medeid import storage
from medeid.devstack import LocalS3
from medeid.raycluster import forget_dead_record
from tests import budgets

# Set before Ray starts, so its workers inherit them.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def pytest_configure(config):
    # A plugin, not hooks of this conftest: a conftest's hooks do not see session-scoped fixtures set up.
    if not config.pluginmanager.is_registered(budgets):
        config.pluginmanager.register(budgets, "medeid-time-budgets")


def pytest_sessionstart(session):
    # A cluster killed with an earlier run (its test timed out) may have left its record behind; every
    # `ray.init()` with no address would then hang on it. Multi-node clusters keep their record in a
    # temp folder of their own (devstack.LocalCluster), so this is for what older runs left.
    forget_dead_record()


def pytest_sessionfinish(session, exitstatus):
    forget_dead_record()


@pytest.fixture(scope="session")
def s3():
    """A real S3 server on 127.0.0.1; the AWS_* variables point at it for the whole session."""
    saved = dict(os.environ)
    with LocalS3() as server:
        os.environ.update(server.env)
        try:
            yield server
        finally:
            os.environ.clear()
            os.environ.update(saved)


@pytest.fixture
def bucket(s3, request) -> str:
    """A fresh bucket per test, as an s3:// URI."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    storage.make_bucket(f"s3://{name}", s3.settings)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_session(s3):
    """A local Ray instance (2 CPUs) that sees the S3 server through the environment."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024**2,
             log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def trained_detector(tmp_path_factory):
    """A briefly trained face detector (~40 s) and its pack folder: shared by the detector's own
    tests and the archive job's."""
    from medeid.models.detector import export_detector_pack
    from medeid.train.detector import train_briefly

    net = train_briefly()
    pack = tmp_path_factory.mktemp("detector")
    export_detector_pack(net, pack, {"det_thresh": 0.5, "note": "test"})
    return net, pack


@pytest.fixture(scope="session")
def small_models(tmp_path_factory, trained_detector) -> tuple[str, str]:
    """(MedSem-DeID folder, detector pack folder): an untrained 64 px MedSem-DeID (replacement and
    recovery do not depend on its training) and the session's detector; for the archive job and the
    serving endpoint."""
    from dataclasses import asdict

    import torch

    from medeid.models.deid.donors import synthetic_donors
    from medeid.models.deid.model import DeidNetConfig, MedSemDeIDNet, donor_bank
    from medeid.models.medical import MedicalNet, MedicalNetConfig

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    medical = MedicalNet(MedicalNetConfig(image_size=64, widths=(8, 16, 24, 32))).eval()
    donors = donor_bank(synthetic_donors(6, 64), 64)
    deid = MedSemDeIDNet(DeidNetConfig(image_size=64, widths=(8, 16, 16), medical=asdict(medical.config),
                                       donors=len(donors)), donors)
    deid.save(root / "deid")
    return str(root / "deid"), str(trained_detector[1])


# The small MeMa world (archive and untrained models on the S3 server): for tests/mema and the
# multi-node tests in tests/cluster.
# The eye-band attackers' small world (an archive on local disk and drawn faces): for the attack audit's
# and the identity filter's tests.
from tests.mema.eye_world import world  # noqa: E402, F401
from tests.mema.world import mema_world, write_mema_config  # noqa: E402, F401
