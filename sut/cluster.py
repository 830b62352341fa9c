"""Ray placement: connect to (or start) Ray, and own the worker actors.

`WorkerPool` is a context manager: entering creates the actors and waits until every worker has
loaded its model (a bad model fails here, before LoadGen starts); leaving kills them. Nothing
relies on garbage collection. The calls to the workers go through the driver's scheduler
(sut/scheduler.py, sut/serving.py).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time

from actors.backends import BackendOptions
from actors.messages import BatchFailure
from actors.worker import WorkerActor
from datasets.registry import get_dataset
from harness_base import ConfigError, RunFailed, first_line, stop_if_requested
from sut.config import STREAM_SCENARIOS, RunConfig
from sut.serving import CallReturned, ServingPool, WorkerLost

log = logging.getLogger(__name__)

_READY_TIMEOUT_S = 600.0  # loading a big model (or compiling one) can take minutes
_SERVE_GROUP = "serve"


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


def backend_options(config: RunConfig, threads: int) -> BackendOptions:
    spec = get_dataset(config.dataset)
    return BackendOptions(
        model_path=os.path.abspath(config.model) if config.backend != "null" else config.model,
        inputs=config.inputs, outputs=config.outputs, layout=config.data_format,
        sample_shape=spec.sample_shape(config.data_format), device=config.device,
        threads=threads, model_name=config.model_name, precision=config.precision,
        compile=config.compile, channels_last=config.channels_last,
        cuda_graphs=config.cuda_graphs, max_batchsize=config.max_batchsize)


def transport_for(config: RunConfig, nodes: int | None = None) -> str:
    """How the driver reaches its workers (--transport; auto chooses by measurement, README
    "Transports"):
    - in-process: one worker, in the driver's own process, called on a thread
      (sut/in_process.py). auto takes it for a stream scenario with one worker on a one-node
      Ray (`nodes`, default: Ray's live nodes): one query is in flight, so any hop is added
      latency, and there is no other machine to place the worker on.
    - channel: worker actors, each call over a socket of its own (sut/channels.py), two in
      flight per worker (one gathers while the other infers): everything else.
    - calls: the same with Ray actor calls, several times the channel's round trip; kept for
      networks that let Ray's ports through and no others. Ray Compiled Graphs were measured
      as a fourth way and left out (README).
    """
    if config.transport != "auto":
        return config.transport
    if nodes is None:
        nodes = len(node_cpus())
    if config.scenario in STREAM_SCENARIOS and config.num_workers == 1 and nodes == 1:
        return "in-process"
    return "channel"


def open_pool(config: RunConfig):
    """The pool of the run's workers, as a context manager, by transport_for(config)."""
    transport = transport_for(config)
    if transport == "in-process":
        from sut.in_process import InProcessPool

        return InProcessPool(config, backend_options(config, threads_per_worker(config)))
    if transport == "channel":
        from sut.channels import ChannelPool

        return ChannelPool(config)
    return WorkerPool(config)


class WorkerPool(ServingPool):
    """The worker actors of one session, behind the driver's scheduler (sut/serving.py)."""

    transport = "calls"

    def __init__(self, config: RunConfig, ready_timeout_s: float = _READY_TIMEOUT_S) -> None:
        super().__init__()
        self.config = config
        self.ready_timeout_s = ready_timeout_s
        self.workers: dict[str, object] = {}
        self.descriptions: list[dict] = []
        self._replies: dict[int, object] = {}  # call id -> ObjectRef, held until its reply
        self._replies_lock = threading.Lock()

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
        threads = threads_per_worker(config)
        options = backend_options(config, threads)
        resources = {"num_cpus": threads}
        if config.gpus:
            resources["num_gpus"] = 1
        # "serve": run_batches, one thread per call slot (one call gathers while the other
        # infers); the default group takes the control calls one at a time.
        actor_class = ray.remote(concurrency_groups={_SERVE_GROUP: self.slots_per_worker})(
            WorkerActor)
        for rank in range(config.num_workers):
            worker_id = f"worker-{rank}"
            self.workers[worker_id] = actor_class.options(max_concurrency=1, **resources).remote(
                worker_id, config.backend, options, config.dataset)
        self._wait_ready()
        self._start_scheduler(list(self.workers))

    def _wait_ready(self) -> None:
        """Every worker builds its backend in its constructor: a bad model surfaces here."""
        import ray

        refs = {handle.describe.remote(): worker_id for worker_id, handle in self.workers.items()}
        started = time.monotonic()
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            stop_if_requested()  # Ctrl-C while a model loads or compiles
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

    # -- the transport: one actor call per scheduler call, its reply is the result ------------
    def _send(self, worker_id: str, call_id: int, batches) -> None:
        handle = self.workers.get(worker_id)
        if handle is None:  # given up between the scheduler's choice and now
            self.events.put(WorkerLost(worker_id, "gone"))
            return
        ref = handle.run_batches.options(concurrency_group=_SERVE_GROUP).remote(batches)
        with self._replies_lock:
            self._replies[call_id] = ref
        ref.future().add_done_callback(functools.partial(self._reply, worker_id, call_id,
                                                         batches))

    def _reply(self, worker_id: str, call_id: int, batches, future) -> None:
        """On Ray's callback thread: turn the reply into an event, nothing more."""
        import ray

        with self._replies_lock:
            self._replies.pop(call_id, None)
        try:
            items = future.result()
        except ray.exceptions.RayActorError as error:  # process killed, OOM, node lost
            self.events.put(WorkerLost(worker_id, f"{type(error).__name__}: "
                                                  f"{first_line(error)}"))
            return
        except BaseException as error:  # noqa: BLE001 - the call itself failed: retry its batches
            detail = f"{type(error).__name__}: {first_line(error)}"
            items = [BatchFailure(batch.batch_id, worker_id, detail) for batch in batches]
        self.events.put(CallReturned(worker_id, call_id, items))

    def _forget_worker(self, worker_id: str) -> None:
        import ray

        handle = self.workers.pop(worker_id, None)
        if handle is not None:
            try:
                ray.kill(handle)
            except Exception:  # noqa: BLE001 - it is gone already
                pass

    # -- used by the run -------------------------------------------------------------------
    def broadcast(self, method: str, *args) -> None:
        """Call a method on every live worker and wait for all of them. A worker that died is
        skipped (its calls' replies tell the completion thread, which returns its batches);
        only when no worker answers does this raise."""
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
                self.events.put(WorkerLost(worker_id, f"{type(error).__name__}: "
                                                      f"{first_line(error)}"))
        if not answered:
            raise RunFailed(f"no worker answered {method}: all {len(refs)} are gone")

    def close(self) -> None:
        import ray

        for handle in self.workers.values():
            try:
                ray.kill(handle)
            except Exception:  # noqa: BLE001 - closing down whatever state the actors are in
                pass
        self.workers.clear()
