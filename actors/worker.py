"""The inference worker: one per GPU (or one per slice of the CPUs).

`InferenceWorker` is the plain core: it holds one backend session and a read-only view of the
loaded samples, and turns a Batch into a BatchResult (gather rows -> normalise to float32 ->
infer -> post-process). `WorkerActor` is that as a Ray actor: the driver calls its
`run_batches` and gets the results as the call's value (sut/scheduler.py says why).
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import replace

import numpy as np

from actors.backends import BackendOptions, create_backend
from actors.messages import Batch, BatchFailure, BatchResult
from datasets.registry import get_dataset
from harness_base import ConfigError, first_line


class InferenceWorker:
    def __init__(self, worker_id: str, backend_name: str, options: BackendOptions,
                 dataset_name: str) -> None:
        self.worker_id = worker_id
        self._spec = get_dataset(dataset_name)
        self._layout = options.layout
        if backend_name == "null":
            options = replace(options, null_outputs=self._spec.postprocess.null_outputs)
        self._backend = create_backend(backend_name, options)
        self._postprocess = self._spec.postprocess
        # A GPU backend that can normalise by table lookup gets uint8 batches: a quarter of
        # the bytes to copy, and no float work on the worker's few CPU cores.
        self._device_normalizes = False
        table = self._spec.normalization_table(options.layout)
        hook = getattr(self._backend, "normalize_on_device", None)
        # A backend that never reads the values (null) takes them so on any device.
        on_device = (options.device == "gpu"
                     or not getattr(self._backend, "reads_input_values", True))
        if on_device and table is not None and hook is not None:
            self._device_normalizes = bool(hook(table, options.layout))
        self._check_outputs(options)
        if options.device == "gpu":
            self._run_every_batch_shape(options)
        # (samples, row_of_index, already_normalized); replaced whole, so readers never see
        # a half-updated view.
        self._loaded: tuple[np.ndarray, np.ndarray, bool] | None = None
        self._want_payloads = False
        # One batch on the device at a time; gathering and post-processing run beside it.
        self._device_lock = threading.Lock()

    def _check_outputs(self, options: BackendOptions) -> None:
        """One inference on a zero batch of 2 at startup: outputs whose shape does not fit the
        dataset's post-processing (scores where class ids are expected, say) fail here, before
        LoadGen, not as wrong labels later."""
        batch = np.zeros((2, *options.sample_shape), dtype=self._spec.stored_dtype)
        try:
            outputs = self._predict(self._model_input(batch, normalized=False))
        except ConfigError:
            raise
        except Exception as error:  # noqa: BLE001 - the model cannot run what the run feeds it
            raise ConfigError(f"model {options.model_path}: a test inference on a zero batch of "
                              f"2, shape {list(batch.shape)}, failed: {type(error).__name__}: "
                              f"{first_line(error)}. Check --inputs, --outputs, --data-format "
                              "and the profile against the model.") from None
        problem = None
        if any(np.ndim(output) == 0 or len(output) != 2 for output in outputs):
            problem = ("output batch sizes "
                       f"{[len(o) if np.ndim(o) else 'scalar' for o in outputs]} for a batch of 2")
        else:
            try:
                payloads = self._postprocess(outputs, np.arange(2))
                if len(payloads) != 2:
                    problem = f"{len(payloads)} answers for 2 samples"
            except ValueError as error:
                problem = str(error)
        if problem:
            shapes = [list(np.shape(output)) for output in outputs]
            raise ConfigError(f"model {options.model_path}: outputs of shapes {shapes} do not "
                              f"fit dataset {self._spec.name!r} ({problem}). Check --outputs "
                              "and the profile (class ids [N] or scores [N, classes]; for "
                              "detection the outputs the dataset's post-processing names).")

    def _run_every_batch_shape(self, options: BackendOptions) -> None:
        """Once per batch-size bucket, here in the constructor (before LoadGen, on this
        worker, single-threaded): CUDA graphs are captured and TensorRT shapes built now, not
        inside the timed test."""
        from actors.backends.buckets import batch_size_buckets

        for size in batch_size_buckets(options.max_batchsize):
            zeros = np.zeros((size, *options.sample_shape), dtype=self._spec.stored_dtype)
            self._predict(self._model_input(zeros, normalized=False))

    def _predict(self, inputs: np.ndarray) -> list[np.ndarray]:
        """The backend's outputs for a batch; outputs[k][i] is sample i's."""
        if not self._spec.unbatched_outputs:
            return self._backend.predict(inputs)
        # One image per call; each output becomes an object array of per-sample arrays.
        per_sample = [self._backend.predict(inputs[i:i + 1]) for i in range(len(inputs))]
        gathered = []
        for k in range(len(per_sample[0])):
            column = np.empty(len(inputs), dtype=object)
            for i, outputs in enumerate(per_sample):
                column[i] = np.asarray(outputs[k])
            gathered.append(column)
        return gathered

    def describe(self) -> dict:
        import os
        import socket

        info = dict(self._backend.describe())
        info.update(worker_id=self.worker_id, host=socket.gethostname(), pid=os.getpid())
        return info

    def set_samples(self, samples: np.ndarray, row_of_index: np.ndarray,
                    normalized: bool = False) -> int:
        """Use these loaded samples. `samples` is the object-store array (read-only, shared by
        every worker on the node); row_of_index maps a QSL index to its row (-1: not loaded)."""
        self._loaded = (samples, row_of_index, normalized)
        return len(samples)

    def clear_samples(self) -> None:
        self._loaded = None

    def set_payloads(self, enabled: bool) -> None:
        """Accuracy mode sends payload bytes back; performance mode sends none."""
        self._want_payloads = enabled

    def inputs_for(self, batch: Batch) -> np.ndarray:
        """The model input for a batch, rows in the batch's sample order: float32, or the
        stored uint8 where the backend normalises on its device."""
        if self._loaded is None:
            raise RuntimeError(f"worker {self.worker_id}: batch {batch.batch_id} arrived but no "
                               "samples are loaded")
        samples, row_of_index, normalized = self._loaded
        rows = row_of_index[batch.sample_indices]
        if (rows < 0).any():
            missing = batch.sample_indices[rows < 0][:5].tolist()
            raise RuntimeError(f"worker {self.worker_id}: samples {missing} are not loaded")
        return self._model_input(samples[rows], normalized)

    def _model_input(self, gathered: np.ndarray, normalized: bool) -> np.ndarray:
        if normalized or self._device_normalizes:
            return gathered
        return self._spec.normalize(gathered, self._layout, reuse=True)  # gathered is a copy

    def run_batches(self, batches: list[Batch]) -> list[BatchResult | BatchFailure]:
        """One call from the driver: each batch answered, or failed on its own (the driver
        retries a failed batch or ends the run)."""
        answers: list[BatchResult | BatchFailure] = []
        for batch in batches:
            try:
                answers.append(self.infer(batch))
            except Exception as error:  # noqa: BLE001 - reported to the driver
                detail = f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=3)}"
                answers.append(BatchFailure(batch.batch_id, self.worker_id, detail))
        return answers

    def infer(self, batch: Batch) -> BatchResult:
        """infer_seconds is the time on the device (inside the lock): a worker's busy share."""
        inputs = self.inputs_for(batch)  # outside the lock: overlaps another call's inference
        with self._device_lock:
            started = time.perf_counter()
            outputs = self._predict(inputs)
            elapsed = time.perf_counter() - started
        for output in outputs:
            if len(output) != len(batch):
                raise RuntimeError(f"backend returned {len(output)} results for a batch of "
                                   f"{len(batch)}")
        if not self._want_payloads:
            return BatchResult(batch.batch_id, self.worker_id, infer_seconds=elapsed)
        payloads = self._postprocess(outputs, batch.sample_indices)
        return BatchResult(batch.batch_id, self.worker_id, payloads.data, payloads.offsets,
                           infer_seconds=elapsed)


class WorkerActor(InferenceWorker):
    """The worker as a Ray actor. The driver calls `run_batches` in the actor's "serve"
    concurrency group (two threads: while one call's batch runs on the device, the next
    call's batch is gathered and copied); `set_samples` and the other control calls run in
    the default group, one at a time.

    An error while building the backend (bad model, missing CUDA) does not kill the actor:
    `describe` reports it, so the driver can show the user the message without a traceback.
    """

    def __init__(self, *args, **kwargs) -> None:
        self.startup_error: tuple[str, str] | None = None  # (kind, message)
        try:
            super().__init__(*args, **kwargs)
        except ConfigError as error:
            self.startup_error = ("config", str(error))
        except Exception as error:  # noqa: BLE001 - reported to the driver, which stops
            self.startup_error = ("failed", f"{type(error).__name__}: {error}")

    def open_channel(self, key: bytes, slots: int) -> tuple[str, int]:
        """Listen for the driver's channel (actors/channel.py) on this node's address; its
        calls run `run_batches` on `slots` threads, as the "serve" group does for Ray calls."""
        import ray

        from actors.channel import ChannelServer

        self._channel = ChannelServer(self.run_batches, self._failed_call, key,
                                      host=ray.util.get_node_ip_address(), slots=slots)
        return self._channel.start().address

    def _failed_call(self, batches: list[Batch], error: BaseException) -> list[BatchFailure]:
        detail = f"{type(error).__name__}: {first_line(error)}"
        return [BatchFailure(batch.batch_id, self.worker_id, detail) for batch in batches]

    def describe(self) -> dict:
        if self.startup_error is not None:
            return {"startup_error": self.startup_error}
        import ray

        context = ray.get_runtime_context()
        return {**super().describe(), "node_id": context.get_node_id(),
                "gpu_ids": [str(gpu) for gpu in ray.get_gpu_ids()]}
