"""A backend that computes nothing: it measures the harness itself."""

from __future__ import annotations

import numpy as np

from actors.backends.base import BackendOptions
from harness_base import ConfigError


class NullBackend:
    """Returns well-formed outputs of the right batch size with no inference at all."""

    name = "null"
    preferred_layout = "NCHW"
    reads_input_values = False  # so the worker hands it uint8 rows on any device

    def __init__(self, options: BackendOptions) -> None:
        if options.null_outputs is None:
            raise ConfigError("the null backend needs the dataset's output shape")
        self._make_outputs = options.null_outputs
        self._cache: dict[int, list[np.ndarray]] = {}

    def predict(self, batch: np.ndarray) -> list[np.ndarray]:
        size = len(batch)
        if size not in self._cache:
            self._cache[size] = self._make_outputs(size)
        return self._cache[size]

    def normalize_on_device(self, table: np.ndarray, layout: str) -> bool:
        """Take the gathered uint8 rows as they are: no model reads their values. The gather
        stays the harness's cost (as the reference's null backend copies its batch); the
        float normalisation belongs to the model, as it does on a GPU."""
        return True

    def describe(self) -> dict:
        return {"backend": self.name, "device": "none"}
