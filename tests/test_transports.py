"""Which transport `--transport auto` takes (sut/cluster.transport_for), without Ray."""

from __future__ import annotations

import pytest

from sut.cluster import transport_for
from sut.config import RunConfig


def _config(**fields) -> RunConfig:
    return RunConfig(model="m.onnx", dataset_path="d", backend=fields.pop("backend", "onnxruntime"),
                     dataset="imagenet", data_format="NCHW", model_name="resnet50", **fields)


@pytest.mark.parametrize("fields, nodes, expected", [
    ({"scenario": "SingleStream"}, 1, "in-process"),
    ({"scenario": "MultiStream"}, 1, "in-process"),
    ({"scenario": "SingleStream", "gpus": 1, "device": "gpu"}, 1, "in-process"),
    ({"scenario": "SingleStream"}, 3, "channel"),  # a cluster: the worker may go elsewhere
    ({"scenario": "MultiStream", "gpus": 4, "device": "gpu"}, 1, "channel"),
    ({"scenario": "MultiStream", "workers": 2, "backend": "null"}, 1, "channel"),
    ({"scenario": "Offline"}, 1, "channel"),
    ({"scenario": "Server"}, 1, "channel"),
    ({"scenario": "Server", "gpus": 4, "device": "gpu"}, 3, "channel"),
    ({"scenario": "Offline", "transport": "in-process"}, 1, "in-process"),  # asked for
    ({"scenario": "SingleStream", "transport": "calls"}, 1, "calls"),
    ({"scenario": "Server", "transport": "calls"}, 1, "calls"),
])
def test_auto_takes_the_transport_the_measurements_chose(fields, nodes, expected):
    assert transport_for(_config(**fields), nodes) == expected
