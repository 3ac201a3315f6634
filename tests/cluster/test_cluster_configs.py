"""The deployment files in cluster/, checked without a cluster or a network:

- aws.yaml (Ray cluster launcher) validates against the schema the installed Ray ships, and broken
  copies do not; after `ray up`'s own preparation the head takes no work, GPU and CPU workers scale
  from zero, every node has an instance profile, and nothing is pip-installed at start-up.
- The KubeRay manifests: kind and apiVersion, rayVersion == the installed ray, the project image and
  CPU/memory limits on every container, nvidia.com/gpu on GPU groups, the IRSA service account.
- RayJob entrypoints run an existing jobs/*.py with flags its own argparse parser accepts.
- The RayService's serveConfigV2 is a valid Serve config equal to cluster/serve.yaml, and its
  application builds; its replicas fit the GPU pods.
- No credential anywhere; secrets reach pods only as read-only files from Kubernetes Secrets.
- The Dockerfile pins pyproject.toml's torch (as a CUDA build) and Python, on the installed ray.
"""

import argparse
import copy
import importlib.util
import json
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath
from unittest import mock

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve.deployment import Application
from ray.serve.schema import ServeDeploySchema

from medeid.serve import AppArgs, app

ROOT = Path(__file__).resolve().parents[2]
CLUSTER, KUBERAY = ROOT / "cluster", ROOT / "cluster" / "kuberay"
IMAGE = "YOUR-REGISTRY/medeid:0.1.0"
SERVICE_ACCOUNT = "medeid"
# Each Ray manifest: its kind and its worker groups.
RAY_MANIFESTS = {
    "raycluster.yaml": ("RayCluster", {"gpu", "cpu"}),
    "rayjob-build-mema.yaml": ("RayJob", {"gpu", "cpu"}),
    "rayjob-anonymize-archive.yaml": ("RayJob", {"cpu"}),  # the archive's actors ask for CPUs only
    "rayservice.yaml": ("RayService", {"gpu"}),
}
CREDENTIAL_NAME = re.compile(r"AWS_(SECRET_ACCESS_KEY|ACCESS_KEY_ID|SESSION_TOKEN)|MEDEID_\w*(SECRET|TOKEN)", re.I)
CREDENTIAL_TEXT = [re.compile(rf"\b({CREDENTIAL_NAME.pattern})\b\s*[:=]", re.I),  # NAME: value, NAME=value
                   re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b")]  # an AWS access key id


def manifest(name: str) -> dict:
    (doc,) = yaml.safe_load_all((KUBERAY / name).read_text())
    return doc


def cluster_spec(doc: dict) -> dict:
    spec = doc["spec"]
    return {"RayCluster": spec, "RayJob": spec.get("rayClusterSpec"),
            "RayService": spec.get("rayClusterConfig")}[doc["kind"]]


def groups(spec: dict) -> dict[str, dict]:
    return {"head": spec["headGroupSpec"], **{g["groupName"]: g for g in spec["workerGroupSpecs"]}}


def containers(group: dict) -> list[dict]:
    pod = group["template"]["spec"]
    return pod["containers"] + pod.get("initContainers", [])


def launcher_config() -> dict:
    return yaml.safe_load((CLUSTER / "aws.yaml").read_text())


def ray_schema() -> dict:
    """The launcher's config schema, as the installed Ray ships it."""
    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


# The Ray cluster launcher (AWS).

def test_the_launcher_config_validates_against_rays_schema():
    jsonschema.validate(launcher_config(), ray_schema())


def _without_node_config(config: dict) -> dict:
    del config["available_node_types"]["ray.worker.gpu"]["node_config"]
    return config


@pytest.mark.parametrize("break_it", [_without_node_config, lambda config: {**config, "worker_image": IMAGE},
                                      lambda config: {**config, "docker": {**config["docker"], "gpus": "all"}}],
                         ids=["node type without node_config", "unknown top-level key", "unknown docker key"])
def test_a_broken_launcher_config_fails_the_schema(break_it):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(break_it(copy.deepcopy(launcher_config())), ray_schema())


def test_the_launcher_config_as_ray_up_prepares_it():
    config = prepare_config(launcher_config())  # merged with Ray's AWS defaults, as `ray up` does
    validate_config(config)
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}  # no work scheduled on the head
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    gpu = [t for t in workers.values() if t["resources"].get("GPU", 0) >= 1]
    cpu = [t for t in workers.values() if not t["resources"].get("GPU") and t["resources"].get("CPU", 0) >= 1]
    assert gpu and cpu and all(t["min_workers"] == 0 < t["max_workers"] for t in gpu + cpu)
    assert all(t["node_config"]["InstanceType"].startswith(("g5.", "g6.", "p4", "p5")) for t in gpu)
    assert all(t["node_config"]["IamInstanceProfile"]["Name"] for t in types.values())  # the role gives S3 access
    assert config["docker"]["image"] == IMAGE
    assert "--volume=/etc/medeid:/etc/medeid:ro" in config["docker"]["run_options"]  # secret files, read-only
    setup = (config["setup_commands"] + config["head_setup_commands"] + config["worker_setup_commands"]
             + [c for t in types.values() for c in t.get("worker_setup_commands", [])])
    assert not [c for c in setup if "pip install" in c]  # Ray's defaults would install another ray over the image's


# KubeRay.

@pytest.mark.parametrize("name", RAY_MANIFESTS)
def test_a_kuberay_manifest_runs_the_project_image_on_the_pinned_ray(name):
    kind, worker_groups = RAY_MANIFESTS[name]
    doc = manifest(name)
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", kind)
    spec = cluster_spec(doc)
    assert spec["rayVersion"] == ray.__version__
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]["rayStartParams"]
    assert (head["num-cpus"], head["dashboard-host"]) == ("0", "0.0.0.0")
    assert set(groups(spec)) == {"head"} | worker_groups
    for group_name, group in groups(spec).items():
        assert group["template"]["spec"]["serviceAccountName"] == SERVICE_ACCOUNT  # S3 through IRSA
        for container in containers(group):
            assert container["image"] == IMAGE
            limits = container["resources"]["limits"]
            assert {"cpu", "memory"} <= set(limits), f"{name}: {group_name} has no CPU or memory limit"
            assert (int(limits.get("nvidia.com/gpu", 0)) >= 1) == (group_name == "gpu")
        if group_name != "head":
            assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    if kind == "RayJob":
        assert doc["spec"]["shutdownAfterJobFinishes"] is True
        assert doc["spec"]["ttlSecondsAfterFinished"] >= 0


def test_the_service_account_gets_its_aws_role_through_irsa():
    doc = manifest("serviceaccount.yaml")
    assert (doc["apiVersion"], doc["kind"], doc["metadata"]["name"]) == ("v1", "ServiceAccount", SERVICE_ACCOUNT)
    role = doc["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::[\w-]+:role/[\w+=,.@-]+", role)


class _Parsed(Exception):
    """Carries a job's parser out of its main(), before anything runs."""


def job_parser(script: Path) -> argparse.ArgumentParser:
    """The parser a job script builds: its main() is run up to the parse_args call."""
    spec = importlib.util.spec_from_file_location(f"medeid_job_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def capture(parser, *args, **kwargs):
        raise _Parsed(parser)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture), pytest.raises(_Parsed) as parsed:
        module.main()
    return parsed.value.args[0]


@pytest.mark.parametrize("name", ["rayjob-build-mema.yaml", "rayjob-anonymize-archive.yaml"])
def test_a_rayjob_entrypoint_runs_a_job_with_flags_it_accepts(name):
    python, script, *argv = shlex.split(manifest(name)["spec"]["entrypoint"])
    assert python == "python" and PurePosixPath(script).parent == PurePosixPath("jobs") and (ROOT / script).is_file()
    parser = job_parser(ROOT / script)
    flags = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    assert flags <= set(parser._option_string_actions), "the exact flags, not abbreviations argparse would let by"
    try:
        args = parser.parse_args(argv)  # required flags given, values of the right types and choices
    except SystemExit:
        pytest.fail(f"{script} rejects {argv}")
    assert args.config == "paper"
    assert all(uri.startswith("s3://YOUR-BUCKET/") for uri in argv if uri.startswith("s3://"))


def test_the_rayservice_serves_the_application_of_cluster_serve_yaml():
    doc = manifest("rayservice.yaml")
    config = yaml.safe_load(doc["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(config)
    assert config == yaml.safe_load((CLUSTER / "serve.yaml").read_text())  # one application, two ways to deploy it
    (application,) = config["applications"]
    assert application["import_path"] == "medeid.serve:app"
    assert isinstance(app(AppArgs.model_validate(application["args"])), Application)  # no I/O: replicas load
    (deployment,) = application["deployments"]
    wants, gpu = deployment["ray_actor_options"], groups(cluster_spec(doc))["gpu"]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    per_pod = min(int(limits["cpu"]) // wants["num_cpus"], int(limits["nvidia.com/gpu"]) // wants["num_gpus"])
    assert per_pod >= 1 and gpu["maxReplicas"] * per_pod >= deployment["autoscaling_config"]["max_replicas"]


# Secrets and credentials.

def assert_mounted_secret_file(group: dict, path: str) -> None:
    """`path` is a file of a Kubernetes Secret, mounted read-only in every container of the group."""
    pod, file = group["template"]["spec"], PurePosixPath(path)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for container in pod["containers"]:
        (mount,) = [m for m in container.get("volumeMounts", []) if PurePosixPath(m["mountPath"]) == file.parent]
        assert mount["readOnly"] is True
        secret = volumes[mount["name"]]["secret"]
        assert secret["secretName"] and file.name in {item["path"] for item in secret["items"]}


def test_the_archive_secret_is_a_read_only_file_from_a_kubernetes_secret():
    doc = manifest("rayjob-anonymize-archive.yaml")
    argv = shlex.split(doc["spec"]["entrypoint"])
    secret_file = argv[argv.index("--secret-file") + 1]
    assert_mounted_secret_file(groups(cluster_spec(doc))["head"], secret_file)  # the driver runs on the head


def test_the_serve_secrets_are_read_only_files_where_the_replicas_run():
    doc = manifest("rayservice.yaml")
    (application,) = yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"]
    files = [application["args"][key] for key in ("secret_file", "token_file")]
    for name, group in groups(cluster_spec(doc)).items():
        if name != "head":  # replicas ask for a GPU: they run on the worker groups
            for path in files:
                assert_mounted_secret_file(group, path)


def credentials(path: Path) -> list[str]:
    """What in the file looks like a credential: a key id, a credential variable given a value in
    any syntax, or a container environment variable named like one (secrets come as files)."""
    text = path.read_text()
    found = [m.group(0) for pattern in CREDENTIAL_TEXT for m in pattern.finditer(text)]
    if path.suffix == ".yaml":
        def walk(node):
            if isinstance(node, dict):
                if node.get("kind") == "Secret":
                    found.append("a Secret object")
                for env in node.get("env", []) if isinstance(node.get("env"), list) else []:
                    if CREDENTIAL_NAME.fullmatch(env.get("name", "")):
                        found.append(env["name"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)
        for doc in yaml.safe_load_all(text):
            walk(doc)
    return found


def test_no_config_or_manifest_holds_a_credential(tmp_path):
    files = sorted(p for p in CLUSTER.rglob("*") if p.is_file())
    assert {"aws.yaml", "Dockerfile", "rayservice.yaml", "runtime_env.yaml"} <= {p.name for p in files}
    assert {str(p.relative_to(ROOT)): found for p in files if (found := credentials(p))} == {}
    planted = tmp_path / "planted.yaml"  # the scan finds what it is for
    planted.write_text("env:\n  - name: MEDEID_ARCHIVE_SECRET\n    valueFrom: {secretKeyRef: {name: s, key: k}}\n"
                       "run_options: ['-e AWS_SECRET_ACCESS_KEY=abc', 'AKIAABCDEFGHIJKLMNOP']\n")
    assert len(credentials(planted)) == 3


# The image.

def dockerfile_instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (CLUSTER / "Dockerfile").read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_dockerfile_installs_the_project_with_pyprojects_torch_and_python():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (torch_pin,) = [d.split("==")[1] for d in project["dependencies"] if d.startswith("torch==")]
    python = re.search(r">=\s*3\.(\d+)", project["requires-python"]).group(1)
    steps = dockerfile_instructions()
    (base,) = [s for s in steps if s.startswith("FROM ")]
    image = re.fullmatch(r"FROM rayproject/ray:(?P<ray>[\d.]+)-py3(?P<python>\d+)-cu(?P<cuda>\d+)", base)
    assert image and image["ray"] == ray.__version__ and image["python"] == python

    def step(pattern: str) -> int:
        (index,) = [i for i, s in enumerate(steps) if re.search(pattern, s)]
        return index

    torch = step(r"^RUN pip install .*torch==")
    assert f"torch=={torch_pin} " in steps[torch] + " "
    assert f"--index-url https://download.pytorch.org/whl/cu{image['cuda']}" in steps[torch]
    workdir, copy_project = step(r"^WORKDIR "), step(r"^COPY .*\. \.$")
    install = step(r"^RUN pip install (--\S+ )*\.( |$)")
    assert torch < install and workdir < copy_project < install  # CUDA torch first; jobs/ in the working directory
    assert not [s for s in steps if "[test]" in s]
    ignored = {line.strip() for line in (CLUSTER / "Dockerfile.dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "tests"} <= ignored and not {"jobs", "medeid", "pyproject.toml", "README.md"} & ignored
