"""The cluster manifests in infra/ load and carry what their tools require.

- Ray's cluster launcher files pass the launcher's own checks (`prepare_config` fills the
  provider defaults, `validate_config` applies Ray's JSON schema and the node-type rules); the
  AWS one has a head that does no work, a CPU node type and a GPU node type.
- The KubeRay RayCluster and the RayJob's cluster: a head group and worker groups with the keys
  KubeRay reads, a CPU group without GPUs and a GPU group asking for `nvidia.com/gpu`, token
  authentication on, the shared volume of storage.yaml on every pod.
- The RayJob's entrypoint is a `signmae run` the project's own command line parses, on a config
  that loads with its `--set` overrides.
- The image has no ENTRYPOINT (Prefect's Kubernetes template passes its command as `args`) and
  has wget (KubeRay's probes).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

INFRA = Path(__file__).resolve().parents[1] / "infra"
CLAIM = "signmae-data"


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((INFRA / name).read_text())


# ---- Ray's cluster launcher ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ray-cluster.yaml", "ray-cluster-ssh.yaml"])
def test_launcher_files_pass_the_launchers_own_checks(name: str) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load(name)
    assert config["cluster_name"] and config["provider"]["type"]
    prepared = prepare_config(config)
    validate_config(prepared)  # raises on a schema or node-type error
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_launcher_has_a_head_cpu_workers_and_gpu_workers() -> None:
    config = load("ray-cluster.yaml")
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type"):
        assert key in config, key
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0  # the head schedules; no stage work lands there
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    gpu = [n for n, t in workers.items() if t["resources"].get("GPU", 0) >= 1]
    cpu = [n for n, t in workers.items() if not t["resources"].get("GPU")]
    assert gpu and cpu, workers
    for node_type in workers.values():
        assert node_type["max_workers"] >= node_type.get("min_workers", 0) >= 0
        assert node_type["node_config"]["InstanceType"]
    starts = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in starts
    assert "RAY_AUTH_MODE=token" in " ".join(config["docker"]["run_options"])


# ---- KubeRay -------------------------------------------------------------------------------------
def containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    return group["template"]["spec"]["containers"]


def check_cluster_spec(spec: dict[str, Any]) -> None:
    """What KubeRay reads of a RayCluster spec, for the head and every worker group."""
    assert spec["rayVersion"]
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert "rayStartParams" in head and head["rayStartParams"]["num-cpus"] == "0"
    groups = spec["workerGroupSpecs"]
    for group in [head, *groups]:
        pod = group["template"]["spec"]
        assert containers(group), group
        for container in containers(group):
            assert container["name"] and container["image"]
            assert container["resources"]["limits"]["cpu"]
            assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
        claims = [
            v["persistentVolumeClaim"]["claimName"]
            for v in pod["volumes"]
            if "persistentVolumeClaim" in v
        ]
        assert claims == [CLAIM]
    for group in groups:
        assert group["groupName"] and "rayStartParams" in group
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    gpus = {
        g["groupName"]: containers(g)[0]["resources"]["limits"].get("nvidia.com/gpu")
        for g in groups
    }
    assert any(gpus[name] is None for name in gpus), "no CPU worker group"
    gpu_groups = [name for name, count in gpus.items() if count is not None]
    assert gpu_groups, "no GPU worker group"
    for group in groups:
        if group["groupName"] in gpu_groups:
            resources = containers(group)[0]["resources"]
            assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
            assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]


def test_raycluster_has_cpu_and_gpu_worker_groups() -> None:
    manifest = load("kuberay/raycluster.yaml")
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayCluster")
    assert manifest["metadata"]["name"]
    check_cluster_spec(manifest["spec"])


def test_rayjob_runs_one_pipeline_run_on_its_own_cluster() -> None:
    from pipelines.cli import build_parser
    from signmae_core.config import load_config

    manifest = load("kuberay/rayjob.yaml")
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayJob")
    spec = manifest["spec"]
    check_cluster_spec(spec["rayClusterSpec"])
    assert spec["shutdownAfterJobFinishes"] is True
    words = shlex.split(spec["entrypoint"])
    assert words[0] == "signmae"
    args = build_parser().parse_args(words[1:])
    assert args.command == "run"
    cfg = load_config(args.config, args.overrides)  # a config that loads, overrides that exist
    assert cfg.store.root.startswith("/data/")  # on the shared volume
    assert all(d.root.startswith("/data/") for d in cfg.datasets)


def test_the_shared_volume_is_read_write_many() -> None:
    claim = load("kuberay/storage.yaml")
    assert (claim["apiVersion"], claim["kind"]) == ("v1", "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == CLAIM
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_image_takes_its_command_from_outside() -> None:
    lines = [line.split() for line in (INFRA / "Dockerfile").read_text().splitlines()]
    instructions = [words[0] for words in lines if words and not words[0].startswith("#")]
    assert "ENTRYPOINT" not in instructions
    installs = [words for words in lines if words[:1] == ["RUN"] and "apt-get" in words]
    assert any("wget" in words for words in installs)


@pytest.mark.parametrize("name", ["k8s-work-pool.json", "k8s-gpu-work-pool.json"])
def test_flow_run_pods_mount_the_shared_volume(name: str) -> None:
    """A flow run's driver writes stage records and reads outputs: the store's volume too."""
    import json

    template = json.loads((INFRA / "prefect" / name).read_text())
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    (container,) = pod["containers"]
    mounts = {m["mountPath"]: claims[m["name"]] for m in container["volumeMounts"]}
    assert mounts == {"/data": CLAIM}
