"""The cluster configs in ``cluster_configs/`` are valid and keep the project's promises.

Validity: each ``ray up`` config passes the JSON schema that ships inside the installed
ray package (the schema ``ray up`` itself validates against) and Ray's own config
preparation; the KubeRay manifest passes the RayCluster CRD's structure, vendored in
``tests/data`` with its source named. A deliberately broken copy of each file (a
misspelled key, a wrong type, a missing required field) must fail.

Promises (cluster_configs/README.md): the Ray version pmmc-ray pins, pmmc-ray installed
on every node, token authentication on, the dashboard and every other Ray port off
public addresses, at least 3 nodes (one per acceptor), and a persistent disk per node
holding the data directory. The tests only read files: no network, no cluster.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema  # a dependency of ray[default], like yaml: `ray up` validates with it
import pytest
import yaml

from pmmc_ray.runtime.config import DeploymentConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "cluster_configs"
RAY_UP = ("local.yaml", "aws.yaml", "gcp.yaml")
KUBERAY = "kuberay.yaml"
KUBERAY_VOLUMES = "kuberay-volumes.yaml"
KUBERAY_SCHEMA = Path(__file__).parent / "data" / "kuberay-raycluster-v1.7.0.schema.json"
DATA_DIR = "/mnt/pmmc-data"  # each node's persistent disk
DEFAULT_DATA_DIR = "~/.pmmc-ray/data"  # DeploymentConfig's default, linked to DATA_DIR
KUBERAY_HOME = "/home/ray"  # the home of the user that rayproject/ray images run as

# Kubernetes core v1 PersistentVolumeClaim: the fields kuberay-volumes.yaml relies on.
PVC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "v1"},
        "kind": {"const": "PersistentVolumeClaim"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["accessModes", "resources"],
            "properties": {
                "accessModes": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"enum": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"]},
                },
                "resources": {
                    "type": "object",
                    "required": ["requests"],
                    "properties": {
                        "requests": {
                            "type": "object",
                            "required": ["storage"],
                            "properties": {"storage": {"type": "string"}},
                        }
                    },
                },
            },
        },
    },
}


# --- loading and validating ------------------------------------------------------------------


def ray_pin() -> str:
    """The Ray minor version pyproject.toml pins, e.g. ``"2.60"`` from ``ray[default]==2.60.*``."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = (m.group(1) for d in deps if (m := re.fullmatch(r"ray\[default\]==(\d+\.\d+)\.\*", d)))
    return pin


def ray_schema() -> dict[str, Any]:
    """The schema inside the installed ray package, found without importing ray."""
    spec = importlib.util.find_spec("ray")
    assert spec is not None and spec.origin is not None
    path = Path(spec.origin).parent / "autoscaler" / "ray-schema.json"
    return json.loads(path.read_text())


def kuberay_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(KUBERAY_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((CONFIGS / name).read_text())


def validate_ray_up(config: dict[str, Any]) -> None:
    """What `ray up` checks before it launches anything: the packaged schema (raises
    jsonschema.ValidationError), then Ray's own preparation and checks of the config
    (defaults merged in, node types filled out; raises ValueError)."""
    jsonschema.validate(config, ray_schema())
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def validate_kuberay(manifest: dict[str, Any]) -> None:
    kuberay_validator().validate(manifest)


def validate_volumes(text: str) -> None:
    for doc in yaml.safe_load_all(text):
        jsonschema.validate(doc, PVC_SCHEMA)


def broken_copy(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """A copy of cluster_configs/NAME with one edit, as a person might make it."""
    text = (CONFIGS / name).read_text()
    assert old in text, f"{name} no longer contains {old!r}: update the broken copy"
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1))
    return path


# --- every file is valid, and a broken copy is not -------------------------------------------


def test_every_cluster_config_is_checked_here():
    assert {p.name for p in CONFIGS.glob("*.y*ml")} == {*RAY_UP, KUBERAY, KUBERAY_VOLUMES}


@pytest.mark.parametrize("name", RAY_UP)
def test_ray_up_config_passes_the_schema_shipped_with_ray(name):
    validate_ray_up(load(name))


BROKEN_RAY_UP = [
    # (file, what breaks, old text, new text, a word the error names)
    ("local.yaml", "misspelled key", "\nsetup_commands:", "\nsetup_comands:", "setup_comands"),
    ("local.yaml", "wrong type", "max_workers: 2", "max_workers: two", "two"),
    (
        "local.yaml",
        "wrong type",
        "worker_ips: [WORKER_1_HOST, WORKER_2_HOST]",
        "worker_ips: W1, W2",
        "array",
    ),
    ("local.yaml", "missing required", "  type: local\n", "", "type"),
    ("aws.yaml", "misspelled key", "\nsetup_commands:", "\nsetup_comands:", "setup_comands"),
    (
        "aws.yaml",
        "misspelled node-type key",
        "    min_workers: 2",
        "    min_worker: 2",
        "min_worker",
    ),
    ("aws.yaml", "wrong type", "    max_workers: 2", "    max_workers: 2.5", "2.5"),
    ("aws.yaml", "missing required", "    resources: {}  #", "    #", "resources"),
    (
        "gcp.yaml",
        "misspelled key",
        "head_start_ray_commands:",
        "head_start_commands:",
        "head_start",
    ),
    ("gcp.yaml", "wrong type", 'resources: {"CPU": 2}', 'resources: {"CPU": "2"}', "'2'"),
    (
        "gcp.yaml",
        "wrong type",
        "cache_stopped_nodes: true",
        "cache_stopped_nodes: yes please",
        "yes",
    ),
    ("gcp.yaml", "missing required", "cluster_name: pmmc-ray\n", "", "cluster_name"),
]


@pytest.mark.parametrize(
    ("name", "what", "old", "new", "named"),
    BROKEN_RAY_UP,
    ids=[f"{b[0]}-{b[1]}-{i}" for i, b in enumerate(BROKEN_RAY_UP)],
)
def test_a_broken_ray_up_config_fails_the_schema(tmp_path, name, what, old, new, named):
    config = yaml.safe_load(broken_copy(tmp_path, name, old, new).read_text())
    with pytest.raises(jsonschema.ValidationError) as err:
        validate_ray_up(config)
    assert named in str(err.value)


def test_kuberay_manifest_passes_the_raycluster_crd_structure():
    (manifest,) = yaml.safe_load_all((CONFIGS / KUBERAY).read_text())
    validate_kuberay(manifest)


BROKEN_KUBERAY = [
    ("misspelled key", "  workerGroupSpecs:", "  workerGroupSpec:", "workerGroupSpec"),
    ("wrong type", "      minReplicas: 1", '      minReplicas: "1"', "'1'"),
    ("bad enum value", "    mode: token", "    mode: tokens", "tokens"),
    (
        "missing required",
        "    - groupName: worker-a\n      replicas: 1",
        "    - replicas: 1",
        "groupName",
    ),
    ("missing image", "            image: REGISTRY/", "            imag: REGISTRY/", "image"),
    ("wrong kind", "kind: RayCluster", "kind: RayClusters", "RayCluster"),
    ("wrong apiVersion", "apiVersion: ray.io/v1", "apiVersion: ray.io/v1alpha1", "ray.io/v1"),
]


@pytest.mark.parametrize(
    ("what", "old", "new", "named"), BROKEN_KUBERAY, ids=[b[0] for b in BROKEN_KUBERAY]
)
def test_a_broken_kuberay_manifest_fails(tmp_path, what, old, new, named):
    manifest = yaml.safe_load(broken_copy(tmp_path, KUBERAY, old, new).read_text())
    with pytest.raises(jsonschema.ValidationError) as err:
        validate_kuberay(manifest)
    assert named in str(err.value)


def test_kuberay_volumes_are_persistent_volume_claims():
    validate_volumes((CONFIGS / KUBERAY_VOLUMES).read_text())


@pytest.mark.parametrize(
    ("old", "new"),
    [("storage: 32Gi", "storage: [32Gi]"), ("kind: PersistentVolumeClaim", "kind: PVC")],
)
def test_a_broken_volumes_file_fails(tmp_path, old, new):
    with pytest.raises(jsonschema.ValidationError):
        validate_volumes(broken_copy(tmp_path, KUBERAY_VOLUMES, old, new).read_text())


# --- the project's promises ------------------------------------------------------------------


def ray_start_commands(config: dict[str, Any]) -> list[str]:
    cmds = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    return [c for c in cmds if "ray start" in c]


def node_count(config: dict[str, Any]) -> int:
    """Nodes the cluster keeps up: the head plus the minimum of every worker type."""
    if config["provider"]["type"] == "local":
        return 1 + len(config["provider"]["worker_ips"])  # Ray keeps every listed machine
    head = config["head_node_type"]
    types = config["available_node_types"]
    return 1 + sum(t.get("min_workers", 0) for k, t in types.items() if k != head)


def kuberay_pods(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod spec of the head and of each worker group."""
    spec = manifest["spec"]
    return [spec["headGroupSpec"]["template"]["spec"]] + [
        g["template"]["spec"] for g in spec["workerGroupSpecs"]
    ]


def test_the_pinned_ray_is_the_installed_ray():
    assert importlib.metadata.version("ray").startswith(ray_pin() + ".")


@pytest.mark.parametrize("name", RAY_UP)
def test_ray_up_config_installs_the_pinned_ray_and_pmmc_ray(name):
    config = load(name)
    installs = [c for c in config["setup_commands"] if "pip install" in c]
    assert any(f'"ray[default]=={ray_pin()}.*"' in c and "-e ~/pmmc-ray" in c for c in installs)
    mounts = config["file_mounts"]
    for needed in ("pyproject.toml", "README.md", "pmmc_ray", "cluster_configs"):
        assert mounts[f"~/pmmc-ray/{needed}"] == needed
        assert (ROOT / needed).exists()  # `ray up` runs from the checkout's root


def test_kuberay_image_is_the_pinned_ray_with_pmmc_ray():
    (manifest,) = yaml.safe_load_all((CONFIGS / KUBERAY).read_text())
    assert manifest["spec"]["rayVersion"].startswith(ray_pin() + ".")
    images = {c["image"] for pod in kuberay_pods(manifest) for c in pod["containers"]}
    assert len(images) == 1 and not next(iter(images)).startswith("rayproject/")
    dockerfile = (CONFIGS / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)$", dockerfile, flags=re.M)
    assert base.startswith(f"rayproject/ray:{manifest['spec']['rayVersion']}-py3")
    assert re.search(
        r'^RUN pip install .*"ray\[default\]==' + re.escape(ray_pin()), dockerfile, re.M
    )
    assert re.search(r"^RUN pip install .* /home/ray/pmmc-ray$", dockerfile, re.M)
    assert "COPY --chown=ray:users pmmc_ray " in dockerfile


@pytest.mark.parametrize("name", RAY_UP)
def test_ray_up_config_turns_token_auth_on_everywhere(name):
    config = load(name)
    text = (CONFIGS / name).read_text()
    # the token made by `ray get-auth-token --generate`, on every node
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "chmod 600 ~/.ray/auth_token" in config["setup_commands"]
    # RAY_AUTH_MODE=token for every shell Ray runs commands in, and on every `ray start`
    assert any(
        "echo 'export RAY_AUTH_MODE=token' >> ~/.bashrc" in c
        for c in config["initialization_commands"]
    )
    starts = ray_start_commands(config)
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in starts)
    assert "RAY_AUTH_MODE=disabled" not in text


def test_kuberay_turns_token_auth_on():
    (manifest,) = yaml.safe_load_all((CONFIGS / KUBERAY).read_text())
    assert manifest["spec"]["authOptions"] == {"mode": "token", "secretName": "pmmc-ray-auth-token"}
    for pod in kuberay_pods(manifest):
        for c in pod["containers"]:
            assert not [e for e in c.get("env", []) if e["name"].startswith("RAY_AUTH")]


@pytest.mark.parametrize("name", RAY_UP)
def test_ray_up_config_keeps_the_dashboard_on_loopback(name):
    config = load(name)
    (head_start,) = [c for c in ray_start_commands(config) if "--head" in c]
    assert "--dashboard-host=127.0.0.1" in head_start
    text = (CONFIGS / name).read_text()
    assert "0.0.0.0" not in text and not re.search(r"dashboard-host\W+::", text)
    # AWS: no security group of our own, so Ray's (SSH from anywhere, the rest only
    # from the cluster's own nodes) guards the Ray ports
    assert "security_group" not in config["provider"]


def test_kuberay_keeps_the_dashboard_on_loopback_and_the_service_internal():
    (manifest,) = yaml.safe_load_all((CONFIGS / KUBERAY).read_text())
    head = manifest["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    assert head["serviceType"] == "ClusterIP" and not head.get("enableIngress")
    assert "0.0.0.0" not in (CONFIGS / KUBERAY).read_text()


def test_no_config_pins_ray_to_loopback():
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps an embedded Ray on 127.0.0.1: in a
    # cluster config it would keep the nodes from reaching each other. (The README
    # names it, for a single laptop.)
    for path in CONFIGS.iterdir():
        if path.name != "README.md":
            assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in path.read_text(), path.name


@pytest.mark.parametrize("name", RAY_UP)
def test_ray_up_config_keeps_at_least_three_nodes(name):
    config = load(name)
    assert node_count(config) >= 3  # one node per acceptor (f=1: 3 acceptors)
    if config["provider"]["type"] != "local":
        head = config["head_node_type"]
        workers = [t for k, t in config["available_node_types"].items() if k != head]
        assert all(t["min_workers"] == t["max_workers"] for t in workers)  # no scaling down
        assert config["max_workers"] == node_count(config) - 1


def test_kuberay_keeps_at_least_three_pods():
    (manifest,) = yaml.safe_load_all((CONFIGS / KUBERAY).read_text())
    groups = manifest["spec"]["workerGroupSpecs"]
    assert 1 + sum(g["minReplicas"] for g in groups) >= 3
    assert all(g["replicas"] == g["minReplicas"] == g["maxReplicas"] == 1 for g in groups)
    assert manifest["spec"]["enableInTreeAutoscaling"] is False


@pytest.mark.parametrize("name", RAY_UP)
def test_ray_up_config_puts_the_data_dir_on_each_nodes_persistent_disk(name):
    config = load(name)
    setup = config["setup_commands"]
    assert any(
        re.search(rf"mount-data-disk\.sh {re.escape(DATA_DIR)} \"\$\(id -un\)\"( none)?$", c)
        for c in setup
    )
    assert any(f"ln -sfn {DATA_DIR} {DEFAULT_DATA_DIR};" in c for c in setup)
    provider = config["provider"]
    if provider["type"] == "local":
        return  # the machines' own disks: `ray down` only stops Ray on them
    # `ray down` stops the nodes instead of deleting them (and their disks)
    assert provider["cache_stopped_nodes"] is True
    for node_type in config["available_node_types"].values():
        node = node_type["node_config"]
        if provider["type"] == "aws":
            assert "InstanceMarketOptions" not in node  # on-demand: spot cannot be stopped
            data = [d for d in node["BlockDeviceMappings"] if d["DeviceName"] != "/dev/sda1"]
            assert [d["Ebs"]["DeleteOnTermination"] for d in data] == [False]
        else:
            assert node["scheduling"]["provisioningModel"] == "STANDARD"
            assert "preemptible" not in json.dumps(node)
            data = [d for d in node["disks"] if not d.get("boot")]
            assert [(d["deviceName"], d["type"], d["autoDelete"]) for d in data] == [
                ("pmmc-data", "PERSISTENT", False)
            ]


def test_kuberay_gives_each_pod_its_own_persistent_volume_for_the_data_dir():
    (manifest,) = yaml.safe_load_all((CONFIGS / KUBERAY).read_text())
    claims = []
    for pod in kuberay_pods(manifest):
        (volume,) = pod["volumes"]
        claims.append(volume["persistentVolumeClaim"]["claimName"])
        ray_container = pod["containers"][0]
        mounts = {m["mountPath"]: m["name"] for m in ray_container["volumeMounts"]}
        home_data = DEFAULT_DATA_DIR.replace("~", KUBERAY_HOME)
        assert mounts == {DATA_DIR: volume["name"], home_data: volume["name"]}
    assert len(set(claims)) == len(claims) == 3
    defined = [
        d["metadata"]["name"] for d in yaml.safe_load_all((CONFIGS / KUBERAY_VOLUMES).read_text())
    ]
    assert sorted(defined) == sorted(claims)


def test_readme_describes_every_file():
    readme = (CONFIGS / "README.md").read_text()
    for path in CONFIGS.iterdir():
        if path.name != "README.md":
            assert f"| `{path.name}` |" in readme, path.name


def test_deployment_config_puts_the_data_dir_on_the_persistent_disk():
    cfg = DeploymentConfig.from_file(CONFIGS / "deployment.toml")
    assert cfg.data_dir == DATA_DIR
    assert cfg.storage_dir().is_relative_to(DATA_DIR)
    assert len(cfg.acceptor_ids()) == 3 and cfg.spread


def test_mount_script_parses_and_makes_a_plain_data_directory(tmp_path):
    script = CONFIGS / "mount-data-disk.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    if not shutil.which("mountpoint"):
        pytest.skip("util-linux's mountpoint is not installed")
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    target = tmp_path / "pmmc-data"
    subprocess.run(["bash", str(script), str(target), user, "none"], check=True)
    assert target.is_dir() and target.owner() == user
    bad = subprocess.run(["bash", str(script), str(target)], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr
