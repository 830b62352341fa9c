"""Scale-out on one machine: several simulated Ray nodes with logical GPUs
(`ray.cluster_utils.Cluster`), joined by `scripts/run.py --address`; and cluster.yaml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from conftest import assert_each_sample_once

MB = 1024 * 1024


@pytest.fixture
def three_nodes():
    """A head without GPUs (the driver's node) and two GPU nodes: 2 GPUs and 1 GPU."""
    from ray.cluster_utils import Cluster

    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), str(REPO)])
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 1, "num_gpus": 0, "object_store_memory": 150 * MB})
    two = cluster.add_node(num_cpus=2, num_gpus=2, object_store_memory=150 * MB)
    one = cluster.add_node(num_cpus=1, num_gpus=1, object_store_memory=150 * MB)
    cluster.wait_for_nodes()
    yield cluster, two, one
    cluster.shutdown()


def run_script(address: str, tmp_path: Path, *args: str, wait: bool = True):
    command = [sys.executable, str(REPO / "scripts" / "run.py"), "--address", address,
               "--output", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"),
               *args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=tmp_path, env=env)
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=600)


def known_args(known_set, model, short_user_conf, *extra):
    return ["--profile", "resnet50-onnxruntime", "--model", str(model), "--dataset-path",
            str(known_set.dataset_path), "--scenario", "Offline", "--accuracy",
            "--user_conf", str(short_user_conf), *extra]


def test_one_worker_per_gpu_across_nodes_and_samples_once_per_node(
        three_nodes, tmp_path, known_set, model_dir, short_user_conf):
    cluster, two, one = three_nodes
    model = known_set.model(model_dir, "vgg", "NCHW")
    done = run_script(cluster.address, tmp_path, *known_args(
        known_set, model, short_user_conf, "--gpus", "3", "--device", "cpu",
        "--max-batchsize", "2"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "accuracy=100.000%, good=16, total=16" in done.stdout
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    gpus_by_node = defaultdict(list)
    for worker in results["setup"]["worker_details"]:
        gpus_by_node[worker["node_id"]] += worker["gpu_ids"]
    assert {node: sorted(gpus) for node, gpus in gpus_by_node.items()} == {
        two.node_id: ["0", "1"], one.node_id: ["0"]}, "every GPU exactly one worker"
    stored = results["tests"][0]["samples_stored_on_nodes"]
    assert len(stored) == len(set(stored)), "one copy per node, not per worker"
    assert set(gpus_by_node) <= set(stored) <= {cluster.head_node.node_id, two.node_id,
                                                one.node_id}


def test_losing_a_node_mid_run_loses_no_sample(three_nodes, tmp_path, known_set, model_dir,
                                               short_user_conf):
    cluster, two, one = three_nodes
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"model": str(known_set.model(model_dir, "vgg", "NCHW")),
                                "sleep_s": 1.0}))
    process = run_script(cluster.address, tmp_path, *known_args(
        known_set, plan, short_user_conf, "--gpus", "3", "--device", "cpu",
        "--max-batchsize", "1", "--backend", "fault_backends:FaultyBackend"), wait=False)
    detail = tmp_path / "out" / "mlperf_log_detail.txt"
    deadline = time.monotonic() + 180
    while not detail.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)
    cluster.remove_node(one)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    assert "accuracy=100.000%, good=16, total=16" in stdout
    entries = json.loads((tmp_path / "out" / "mlperf_log_accuracy.json").read_text())
    assert_each_sample_once(entries, 16)
    faults = json.loads((tmp_path / "out" / "results.json").read_text())["tests"][0]["faults"]
    assert any("lost" in fault for fault in faults), faults


def test_cluster_yaml_is_a_ray_up_config_that_installs_this_project():
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type",
                "setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in config, key
    assert config["head_node_type"] in config["available_node_types"]
    assert any("pip install" in command and ".[gpu]" in command
               for command in config["setup_commands"])
    assert any(target.endswith("ray-mlperf-vision") and source == "."
               for target, source in config["file_mounts"].items())
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start, "dashboard stays on localhost"
    # Token authentication on every node: the token is mounted, both starts demand it.
    assert config["file_mounts"].get("/home/ubuntu/.ray/auth_token") == "~/.ray/auth_token"
    worker_start = " ".join(config["worker_start_ray_commands"])
    for start in (head_start, worker_start):
        assert "RAY_AUTH_MODE=token ray start" in start
    # onnxruntime-gpu alone: the CPU build beside it hides the CUDA provider.
    assert any("uninstall -y onnxruntime" in command for command in config["setup_commands"])
    workers = [t for name, t in config["available_node_types"].items()
               if name != config["head_node_type"]]
    assert workers and all("InstanceType" in t["node_config"] for t in workers)
