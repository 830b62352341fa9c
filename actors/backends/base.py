"""The one interface every inference backend implements.

A backend owns one inference session on one device. It is built inside a worker actor, is used
by that actor's single serving thread only, and never decides scheduling or batching: it is
handed a float32 batch in its layout and returns the named outputs for exactly that batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np


@dataclass(frozen=True)
class BackendOptions:
    """What a worker knows when it builds its backend."""

    model_path: str
    inputs: tuple[str, ...] = ()  # empty: take the model's own first input
    outputs: tuple[str, ...] = ()  # empty: take the model's own outputs
    layout: str = "NCHW"  # layout of the batches this backend will be given
    sample_shape: tuple[int, ...] = (3, 224, 224)  # one sample, in that layout
    device: str = "cpu"  # "cpu" or "gpu"
    threads: int = 0  # intra-op threads; 0 lets the runtime choose
    model_name: str = ""  # the architecture, for weights-only files (state dicts)
    precision: str = "fp32"  # fp32, fp16 or bf16, where the backend supports it
    compile: bool = False  # torch.compile (pytorch)
    channels_last: bool = False  # NHWC memory order inside the framework (pytorch)
    cuda_graphs: bool = False  # replay captured CUDA graphs per batch-size bucket (pytorch, GPU)
    max_batchsize: int = 0  # the largest batch the harness sends (0: not known)
    # Well-formed outputs for a batch of n, used only by the null backend.
    null_outputs: Callable[[int], list[np.ndarray]] | None = field(default=None, compare=False)


class Backend(Protocol):
    """Load once, then predict batch after batch.

    predict(batch) may take any batch size >= 1 (a backend whose model has a fixed batch size
    loops internally) and must return one array per output name, each with len == len(batch).
    """

    name: str
    preferred_layout: str  # the layout this framework's models usually take

    def __init__(self, options: BackendOptions) -> None: ...

    def predict(self, batch: np.ndarray) -> list[np.ndarray]: ...

    def describe(self) -> dict: ...
