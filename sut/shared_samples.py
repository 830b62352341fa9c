"""LoadGen's QSL load/unload: the loaded samples live once in Ray's object store.

load_query_samples reads the requested samples from the pre-processed cache into one contiguous
array and `ray.put`s it once; every worker receives the same object, which Ray maps read-only
from shared memory on each node, so memory does not grow with the number of workers.
LoadGen calls these on its own thread, before issuing queries and after the last completion.
Its list may name a sample many times (a MultiStream query larger than the set repeats it), so
each distinct sample is read and stored once.
"""

from __future__ import annotations

import numpy as np

from datasets.cache import SampleSource


class SharedSamples:
    def __init__(self, pool, source: SampleSource, total_count: int) -> None:
        self._pool = pool
        self._source = source
        self._total = total_count
        self._ref = None
        self.loaded_count = 0
        self.loaded_bytes = 0
        self.stored_on_nodes: list[str] = []  # where copies of the last load live

    def load(self, indices: list[int]) -> None:
        import ray

        distinct = np.unique(np.asarray(indices, dtype=np.int64))
        array = self._source.read(distinct.tolist())
        row_of_index = np.full(self._total, -1, dtype=np.int64)
        row_of_index[distinct] = np.arange(len(distinct))
        self._ref = ray.put(array)
        self.loaded_count, self.loaded_bytes = len(distinct), array.nbytes
        del array  # the object store holds the only copy now
        self._pool.broadcast("set_samples", self._ref, row_of_index, self._source.normalized)
        # One copy per node that needed it (the driver's, and each node with workers).
        locations = ray.experimental.get_object_locations([self._ref])[self._ref]
        self.stored_on_nodes = list(locations.get("node_ids") or [])

    def unload(self, indices: list[int] | None = None) -> None:
        if self._ref is None:
            return
        try:
            self._pool.broadcast("clear_samples")
        finally:
            self._ref = None
            self.loaded_count = self.loaded_bytes = 0
