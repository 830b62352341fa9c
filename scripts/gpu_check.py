"""The worker's inference path against the raw framework loop, on one device, side by side.

    python scripts/gpu_check.py                      # cuda if torch sees one, else cpu
    python scripts/gpu_check.py --device cpu --seconds 3 --batch 8

Needs torch and numpy only (no Ray, no LoadGen), so it runs where those are absent, such as a
lent GPU machine. Model: ResNet-50 v1.5 with random weights
(actors/models/resnet50_torch.py), saved as a
state dict and loaded by the pytorch backend the way a user's resnet50-19c8e357.pth is.

raw    : the framework alone: a normalised float32 host batch -> device -> model -> argmax -> host
worker : InferenceWorker.infer on uint8 samples: gather rows, normalise (imagenet_pytorch),
         pinned copy to the device, model, post-processing, as a Ray worker runs each batch
ratio  : worker / raw, per configuration (precision, channels_last, CUDA graphs), same process
Also checks the answers: the worker's class ids equal the raw loop's (same precision), and CUDA
graphs give the eager model's.

Then, where mlperf_loadgen is installed, one LoadGen Offline test with the fastest
configuration: the driver's own serving path (sut/serving.py: scheduler, Dispatcher, ledger,
Completer, completion loop) and LoadGen's settings for resnet50, with the Ray actor calls
replaced by one in-process serving thread (LocalWorkers) calling what each GPU's worker actor
runs. Its samples/s over the raw loop's is the harness's share.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.backends import BackendOptions  # noqa: E402
from actors.messages import Batch  # noqa: E402
from actors.worker import InferenceWorker  # noqa: E402
from datasets.registry import get_dataset  # noqa: E402

DATASET = "imagenet_pytorch"


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--samples", type=int, default=512, help="distinct images in memory")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed span per measurement")
    parser.add_argument("--configs", default="fp32,fp16,fp16+cl,bf16+cl,fp16+cl+graphs",
                        help="precision[+cl][+graphs], comma separated")
    parser.add_argument("--offline-seconds", type=int, default=10,
                        help="length of the LoadGen Offline test (0: none)")
    parser.add_argument("--output", default=None,
                        help="folder for LoadGen's logs (default: a temporary folder)")
    parser.add_argument("--offline-min-samples", type=int, default=None,
                        help="fewer samples than the rules' 24576 in the Offline query (CPU tries)")
    return parser.parse_args(argv)


def timed(step, batches: int, seconds: float) -> float:
    """Samples/s of step(i) over at least `seconds`, after a warm-up."""
    for i in range(3):
        step(i)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step(done)
        done += 1
    return done * batches / (time.perf_counter() - started)


def raw_loop(torch, model, normalized: np.ndarray, batch: int, device, dtype, channels_last):
    memory = torch.channels_last if channels_last else torch.contiguous_format
    count = len(normalized) // batch

    def step(i):
        start = (i % count) * batch
        x = torch.from_numpy(normalized[start:start + batch]).to(device)
        x = x.to(dtype=dtype, memory_format=memory)
        with torch.inference_mode():
            return model(x).argmax(1).cpu().numpy()

    return step


def loadgen_offline(worker: InferenceWorker, sample_count: int, batch: int,
                    expected_qps: float, seconds: int, output: str,
                    min_samples: int | None = None) -> dict:
    """One LoadGen Offline performance test through the driver's serving path and `worker`."""
    from sut import loadgen_bridge
    from sut.config import RunConfig
    from sut.dispatch import batch_id_counter
    from sut.report import summarize_test
    from sut.serving import LocalWorkers, ServingPath

    config = RunConfig(model="", dataset_path="", backend="pytorch", dataset=DATASET,
                       data_format="NCHW", model_name="resnet50", scenario="Offline",
                       max_batchsize=batch, qps=expected_qps, time_s=seconds,
                       performance_sample_count=sample_count)
    settings = loadgen_bridge.build_settings(config)
    if min_samples is not None:
        settings.min_query_count = min_samples  # Offline: the query's least sample count
    worker.set_payloads(False)
    pool = LocalWorkers({worker.worker_id: worker})
    path = ServingPath(pool, "Offline", batch, loadgen_bridge.complete_samples,
                       batch_id_counter(), settings.server_target_latency_ns)
    try:
        with path:
            loadgen_bridge.run_test(settings, "performance", sample_count, sample_count,
                                    path.dispatcher.issue, path.dispatcher.flush,
                                    load=lambda indices: None, unload=lambda indices: None,
                                    output_dir=output)
    finally:
        pool.close()
    summary = summarize_test("Offline", "performance", output)
    if path.completer.aborted:
        summary["result"] = f"FAILED: {path.completer.abort_reason}"
    return summary


def main(argv=None) -> int:
    args = parse(argv)
    import torch

    from actors.models.resnet50_torch import resnet50

    device = args.device
    if device == "auto":
        device = "gpu" if torch.cuda.is_available() else "cpu"
    torch_device = torch.device("cuda" if device == "gpu" else "cpu")
    print(f"torch {torch.__version__}, device "
          f"{torch.cuda.get_device_name() if device == 'gpu' else 'cpu'}")
    torch.manual_seed(0)
    model = resnet50().eval()
    folder = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    torch.save(model.state_dict(), folder / "resnet50.pth")

    rng = np.random.default_rng(0)
    samples = rng.integers(0, 256, size=(args.samples, 3, 224, 224), dtype=np.uint8)
    normalized = get_dataset(DATASET).normalize(samples, "NCHW")
    batches = [np.arange(s, s + args.batch) for s in range(0, args.samples - args.batch + 1,
                                                          args.batch)]
    print(f"{'config':<18}{'raw samples/s':>15}{'worker samples/s':>18}{'ratio':>8}  answers")
    best = None  # (worker samples/s, config, worker, raw samples/s)
    for config in args.configs.split(","):
        parts = config.split("+")
        precision, channels_last, graphs = parts[0], "cl" in parts, "graphs" in parts
        if graphs and device != "gpu":
            print(f"{config:<18}  skipped: CUDA graphs need a GPU")
            continue
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        options = BackendOptions(model_path=str(folder / "resnet50.pth"), layout="NCHW",
                                 sample_shape=(3, 224, 224), device=device,
                                 model_name="resnet50", precision=precision,
                                 channels_last=channels_last, cuda_graphs=graphs,
                                 max_batchsize=args.batch)
        worker = InferenceWorker("check", "pytorch", options, DATASET)
        worker.set_samples(samples, np.arange(args.samples))
        worker.set_payloads(False)
        raw_model = model.to(torch_device).to(dtype)
        if channels_last:
            raw_model = raw_model.to(memory_format=torch.channels_last)
        raw = raw_loop(torch, raw_model, normalized, args.batch, torch_device, dtype,
                       channels_last)

        def through_worker(i):
            indices = batches[i % len(batches)]
            worker.infer(Batch(i, indices.astype(np.uint64), indices))

        raw_rate = timed(raw, args.batch, args.seconds)
        worker_rate = timed(through_worker, args.batch, args.seconds)
        # answers: the worker's post-processed labels against the raw loop's arg-max
        worker.set_payloads(True)
        first = batches[0]
        result = worker.infer(Batch(10**6, first.astype(np.uint64), first))
        labels = np.frombuffer(result.payload_data.tobytes(), np.float32).astype(np.int64)
        agree = float(np.mean(labels == raw(0)))
        print(f"{config:<18}{raw_rate:>15.1f}{worker_rate:>18.1f}{worker_rate / raw_rate:>8.3f}"
              f"  {100 * agree:.1f}% equal")
        model = model.float().to(memory_format=torch.contiguous_format).cpu()
        if best is None or worker_rate > best[0]:
            best = (worker_rate, config, worker, raw_rate)
        else:
            del worker
    if best is None or args.offline_seconds <= 0:
        return 0
    if importlib.util.find_spec("mlperf_loadgen") is None:
        print("LoadGen Offline: skipped (mlperf_loadgen is not installed)")
        return 0
    worker_rate, config, worker, raw_rate = best
    output = args.output or tempfile.mkdtemp(prefix="gpu-check-loadgen-")
    summary = loadgen_offline(worker, args.samples, args.batch, worker_rate,
                              args.offline_seconds, output, args.offline_min_samples)
    rate = summary.get("value") or 0.0
    print(f"LoadGen Offline, resnet50, {config}, batch {args.batch}: {rate:.1f} samples/s "
          f"({summary.get('result')}), {rate / raw_rate:.3f} of the raw loop; logs in {output}")
    # A short try may be INVALID (too few samples for its duration); only a failed run is an error.
    return 0 if summary.get("result") in ("VALID", "INVALID") else 1


if __name__ == "__main__":
    sys.exit(main())
