"""Ray placement: connect to (or start) Ray, and own the queue, aggregator and worker actors.

`WorkerPool` is a context manager: entering creates the actors and waits until every worker has
loaded its model (a bad model fails here, before LoadGen starts); leaving closes the queue, lets
the serving loops end, and kills what is left. Nothing relies on garbage collection.
"""

from __future__ import annotations

import logging
import os
import time

from actors.aggregator import AggregatorActor
from actors.backends import BackendOptions
from actors.batch_queue import BatchQueueActor
from actors.worker import WorkerActor
from datasets.registry import get_dataset
from sut.config import RunConfig
from sut.errors import ConfigError, RunFailed, first_line
from sut.interrupts import stop_if_received

log = logging.getLogger(__name__)

_READY_TIMEOUT_S = 600.0  # loading a big model (or compiling one) can take minutes


def connect(config: RunConfig) -> None:
    """Join the cluster at --address, or start a local single-node Ray instance."""
    import ray

    if ray.is_initialized():
        return
    common = dict(logging_level=logging.WARNING, log_to_driver=True,
                  runtime_env={"env_vars": {"PYTHONWARNINGS": "ignore::DeprecationWarning",
                                           "RAY_worker_niceness": "0"}})
    if config.address:
        _check_reachable(config.address)
        try:
            ray.init(address=config.address, **common)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise ConfigError(f"--address {config.address}: cannot join a Ray cluster there "
                              f"({first_line(error)}). Start one (ray start "
                              "--head, or ray up cluster.yaml) or drop --address to run on a "
                              "local Ray instance.") from None
    else:
        # The dashboard stays off (and so off the network) unless the user starts Ray himself.
        ray.init(include_dashboard=False, **common)


def _check_reachable(address: str) -> None:
    """Ray retries an unreachable host:port for minutes; a plain TCP connect answers in 3 s."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as error:
        raise ConfigError(f"--address {address}: nothing answers there ({error}). Start a "
                          "cluster (ray start --head, or ray up cluster.yaml), or drop "
                          "--address to run on a local Ray instance.") from None


def available_gpus() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def available_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))


def node_cpus() -> list[int]:
    """CPUs of each live node."""
    import ray

    return [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node["Alive"]]


def check_placement(config: RunConfig) -> None:
    """Refuse a request Ray cannot place, before anything starts (Ray would wait forever)."""
    if config.gpus:
        seen = available_gpus()
        if config.gpus > seen:
            fix = (f"Use --gpus {seen} or fewer" if seen else
                   "Drop --gpus (and --device gpu) to run on the CPU")
            raise ConfigError(f"--gpus {config.gpus}, but Ray sees {seen} GPU(s) in this "
                              f"cluster. {fix}, or use --workers K for CPU workers.")
    threads = threads_per_worker(config)
    per_node = node_cpus()
    if threads > max(per_node, default=0):
        raise ConfigError(f"--threads {threads}: no node has that many CPUs (the largest has "
                          f"{max(per_node, default=0)}). Use fewer threads per worker.")
    places = sum(cpus // threads for cpus in per_node)
    if config.num_workers > places:
        raise ConfigError(f"{config.num_workers} worker(s) x {threads} thread(s) do not fit "
                          f"the CPUs Ray has ({per_node} per node). Use fewer --workers or "
                          "--threads.")


def threads_per_worker(config: RunConfig) -> int:
    """Intra-op threads (and so Ray CPUs) per worker: the CPUs of a node shared out."""
    if config.threads:
        return config.threads
    if config.device == "gpu":
        return 1  # the device does the work; one host thread feeds it
    largest = max(node_cpus(), default=1)
    return max(1, min(largest, available_cpus() // config.num_workers))


class WorkerPool:
    """The actors of one session: a batch queue, an aggregator, and the workers."""

    def __init__(self, config: RunConfig, ready_timeout_s: float = _READY_TIMEOUT_S) -> None:
        self.config = config
        self.ready_timeout_s = ready_timeout_s
        self.queue = None
        self.aggregator = None
        self.workers: dict[str, object] = {}
        self.serving: dict[object, str] = {}  # serve() ObjectRef -> worker id
        self.descriptions: list[dict] = []
        self.control_actors: list[dict] = []  # where the queue and the aggregator run
        self.lost_workers: list[tuple[str, str]] = []  # (worker id, why)

    def __enter__(self) -> "WorkerPool":
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        import ray

        config = self.config
        # Queue and aggregator take no CPU slot: they must never wait behind the workers. Each
        # worker holds at most one waiting call on each; the completion loop one drain. They
        # live on the driver's node: losing a worker node must not take them along.
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        beside_driver = NodeAffinitySchedulingStrategy(
            node_id=ray.get_runtime_context().get_node_id(), soft=False)
        actor_threads = 4 * config.num_workers + 16
        self.queue = ray.remote(BatchQueueActor).options(
            num_cpus=0, max_concurrency=actor_threads,
            scheduling_strategy=beside_driver).remote()
        self.aggregator = ray.remote(AggregatorActor).options(
            num_cpus=0, max_concurrency=actor_threads,
            scheduling_strategy=beside_driver).remote()
        spec = get_dataset(config.dataset)
        threads = threads_per_worker(config)
        options = BackendOptions(
            model_path=os.path.abspath(config.model) if config.backend != "null" else config.model,
            inputs=config.inputs, outputs=config.outputs, layout=config.data_format,
            sample_shape=spec.sample_shape(config.data_format), device=config.device,
            threads=threads, model_name=config.model_name, precision=config.precision,
            compile=config.compile, channels_last=config.channels_last,
            cuda_graphs=config.cuda_graphs, max_batchsize=config.max_batchsize)
        resources = {"num_cpus": threads}
        if config.gpus:
            resources["num_gpus"] = 1
        actor_class = ray.remote(WorkerActor)
        for rank in range(config.num_workers):
            worker_id = f"worker-{rank}"
            self.workers[worker_id] = actor_class.options(
                max_concurrency=2, **resources).remote(
                worker_id, config.backend, options, config.dataset)
        self._wait_ready()
        self.control_actors = [
            {"actor": name, "node_id": node}
            for name, node in zip(("queue", "aggregator"), ray.get(
                [self.queue.node_id.remote(), self.aggregator.node_id.remote()]))]
        for worker_id, handle in self.workers.items():
            self.serving[handle.serve.remote(self.queue, self.aggregator)] = worker_id

    def _wait_ready(self) -> None:
        """Every worker builds its backend in its constructor: a bad model surfaces here."""
        import ray

        refs = {handle.describe.remote(): worker_id for worker_id, handle in self.workers.items()}
        started = time.monotonic()
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            stop_if_received()  # Ctrl-C while a model loads or compiles
            for ref in done:
                try:
                    description = ray.get(ref)
                except Exception as error:  # the actor died while starting
                    raise RunFailed(f"worker {refs[ref]} failed to start: "
                                    f"{str(error).strip().splitlines()[-1]}") from None
                if "startup_error" in description:
                    kind, message = description["startup_error"]
                    if kind == "config":
                        raise ConfigError(message)
                    raise RunFailed(f"worker {refs[ref]} failed to start: {message}")
                self.descriptions.append(description)
            if pending and time.monotonic() - started > self.ready_timeout_s:
                raise RunFailed(f"{len(pending)} worker(s) not ready after "
                                f"{self.ready_timeout_s:.0f} s: Ray cannot place them "
                                "(resources?) or the model takes too long to load")

    # -- used by the run -------------------------------------------------------------------
    def broadcast(self, method: str, *args) -> None:
        """Call a method on every live worker and wait for all of them. A worker that died is
        skipped (the completion thread notices it and returns its batches); only when no worker
        answers does this raise."""
        import ray

        handles = list(self.workers.items())  # the completion thread may drop dead ones
        refs = {getattr(handle, method).remote(*args): worker_id for worker_id, handle in handles}
        answered = 0
        for ref, worker_id in refs.items():
            try:
                ray.get(ref)
                answered += 1
            except ray.exceptions.RayActorError as error:
                log.error("%s unreachable during %s: %s", worker_id, method,
                          first_line(error))
        if not answered:
            raise RunFailed(f"no worker answered {method}: all {len(refs)} are gone")

    def send(self, batches) -> None:
        self.queue.put.remote(batches)

    def check_workers(self) -> list[tuple[str, str]]:
        """Notice serving loops that ended; release their batches. Returns newly lost workers."""
        import ray

        if not self.serving:
            return []
        done, _ = ray.wait(list(self.serving), num_returns=len(self.serving), timeout=0)
        lost = []
        for ref in done:
            worker_id = self.serving.pop(ref)
            try:
                ray.get(ref)
                why = "its serving loop ended"
            except Exception as error:  # actor died: process killed, OOM, node lost
                why = f"{type(error).__name__}: {first_line(error)}"
            self.workers.pop(worker_id, None)
            returned = ray.get(self.queue.release_worker.remote(worker_id))
            log.error("lost %s (%s); %d batch(es) returned to the queue", worker_id, why,
                      len(returned))
            lost.append((worker_id, why))
        self.lost_workers.extend(lost)
        return lost

    def failures(self) -> list[tuple[int, str, str]]:
        """Batches that raised in a worker so far: (batch id, worker id, error)."""
        import ray

        try:
            return ray.get(self.aggregator.stats.remote(), timeout=10)["failures"]
        except Exception:  # noqa: BLE001 - a report must not fail on a dead aggregator
            return []

    def live_workers(self) -> int:
        return len(self.serving)

    def close(self) -> None:
        import ray

        if self.queue is not None:
            try:
                ray.get(self.queue.close.remote(), timeout=10)
                ray.wait(list(self.serving), num_returns=len(self.serving), timeout=10)
            except Exception:  # noqa: BLE001 - closing down whatever state the actors are in
                pass
        for handle in [*self.workers.values(), self.queue, self.aggregator]:
            if handle is not None:
                try:
                    ray.kill(handle)
                except Exception:  # noqa: BLE001
                    pass
        self.workers.clear()
        self.serving.clear()
        self.queue = self.aggregator = None

