"""CUDA graphs for a PyTorch model: one captured graph per batch-size bucket.

Replaying a captured graph launches the whole forward pass as one unit, which removes the
per-kernel launch cost that dominates small batches on a fast GPU. A graph has fixed shapes,
so batches are padded up to the next power of two (capped at --max-batchsize) and the outputs
cut back: at most log2(max batch) + 2 graphs, each captured on first use (the run's warm-up
sends every size before LoadGen starts). The graphs share one memory pool: only one replays at
a time, and its outputs are copied off before the next.
"""

from __future__ import annotations

from actors.backends.buckets import bucket_for
from harness_base import ConfigError


class GraphedModel:
    """Callable like the model, on device tensors whose first axis is the batch."""

    WARM_UP_RUNS = 3  # eager runs on a side stream before capture (cuDNN picks its kernels)

    def __init__(self, torch, model, largest_batch: int = 0) -> None:
        self.torch = torch
        self.model = model
        self.largest_batch = largest_batch
        self.graphs: dict[tuple, tuple] = {}  # (bucket, sample shape, dtype) -> captured
        self.pool = None  # one memory pool for every graph

    def __call__(self, inputs):
        size = len(inputs)
        bucket = bucket_for(size, self.largest_batch)
        key = (bucket, tuple(inputs.shape[1:]), inputs.dtype)
        if key not in self.graphs:
            self.graphs[key] = self._capture(bucket, inputs)
        static_input, graph, static_outputs = self.graphs[key]
        static_input[:size].copy_(inputs)
        if size < bucket:
            static_input[size:].zero_()
        graph.replay()
        return [output[:size] for output in static_outputs] \
            if isinstance(static_outputs, list) else static_outputs[:size]

    def _capture(self, bucket: int, example):
        torch = self.torch
        static_input = torch.zeros((bucket, *example.shape[1:]), dtype=example.dtype,
                                   device=example.device)
        if example.dim() == 4 and example.is_contiguous(memory_format=torch.channels_last):
            static_input = static_input.contiguous(memory_format=torch.channels_last)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.WARM_UP_RUNS):
                self.model(static_input)
        torch.cuda.current_stream().wait_stream(side)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            outputs = self.model(static_input)
        if isinstance(outputs, (list, tuple)) and all(torch.is_tensor(o) for o in outputs):
            return static_input, graph, list(outputs)
        if torch.is_tensor(outputs):
            return static_input, graph, outputs
        raise ConfigError("--cuda-graphs needs a model whose outputs are tensors with the batch "
                          f"first; this one returns {type(outputs).__name__}. Drop "
                          "--cuda-graphs for it.")
