"""The worker in the driver's own process: the stream scenarios' shortest way.

SingleStream keeps one query in flight, so every hop between LoadGen and the model is added
latency. On a 2-vCPU VM a plain Ray actor call adds 1.5-5 ms to each query and the worker's
process competes with the model's threads (ResNet-50 on the CPU: p50 +5 ms over the
reference harness); the same InferenceWorker called in the driver's own process, as the
reference harness calls its backend, adds about 0.05 ms (README, "Transports"). Everything
around the call stays the serving path's (ledger, Completer, retries, the report's counts);
the loaded samples still go through Ray's object store, which the driver maps read-only.

In the stream scenarios the call runs on the thread that makes it, LoadGen's issue thread, as
the reference harness runs its model: no serving thread has to wake up (ResNet-50 on the CPU:
p50 0.4-0.6 ms lower in three of three alternating rounds, README "Transports"). A model
that never returns then holds that thread, but not the run: the completion loop's stall bound
aborts it and the runner cuts the test off 5 s later, as for any test LoadGen does not end.
Warm-up batches go to the serving thread, so their wait keeps its timeout.

A failing batch is retried as anywhere else; a worker that dies here takes the driver with
it, so runs that must survive a killed worker use workers of their own (--transport channel).
"""

from __future__ import annotations

from actors.backends import BackendOptions
from actors.worker import InferenceWorker
from sut.config import STREAM_SCENARIOS, RunConfig
from sut.serving import LocalWorkers

WORKER_ID = "worker-0"


class InProcessPool(LocalWorkers):
    transport = "in-process"

    def __init__(self, config: RunConfig, options: BackendOptions) -> None:
        self._config, self._options = config, options
        self.descriptions: list[dict] = []

    def __enter__(self) -> "InProcessPool":
        # Built here, before LoadGen: a bad model fails now, with the backend's own message.
        worker = InferenceWorker(WORKER_ID, self._config.backend, self._options,
                                 self._config.dataset)
        super().__init__({WORKER_ID: worker},
                         calls_inline=self._config.scenario in STREAM_SCENARIOS)
        self._worker = worker
        self.descriptions = [{**worker.describe(), "transport": self.transport}]
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def broadcast(self, method: str, *args) -> None:
        """As WorkerPool.broadcast: the object-store array is mapped here, not copied."""
        import ray

        values = [ray.get(arg) if isinstance(arg, ray.ObjectRef) else arg for arg in args]
        getattr(self._worker, method)(*values)
