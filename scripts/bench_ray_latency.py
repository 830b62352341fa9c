"""What one Ray actor call costs on this machine: the floor of the SUT's per-sample latency.

    python scripts/bench_ray_latency.py

Prints, side by side in one run on one local Ray instance:
  1. round trip driver -> actor -> driver for a plain, a threaded (max_concurrency) and an
     asyncio actor (the queue and aggregator are threaded actors because of this line);
  2. one way driver -> actor (a fire-and-forget call, timed at the receiver);
  3. one way through the BatchQueueActor: driver put -> a waiting worker's take returns.
A sample crosses four such one-way hops in the SUT (driver -> queue -> worker -> aggregator ->
driver).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

CALLS = 300


def percentiles_ms(seconds: list[float]) -> str:
    values = np.array(seconds[20:]) * 1e3  # the first calls warm up
    return "p50 {:.3f} ms  p99 {:.3f} ms".format(*np.percentile(values, [50, 99]))


def main() -> int:
    import ray

    from actors.batch_queue import BatchQueueActor
    from actors.messages import Batch

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")

    class Echo:
        def ping(self, value=None):
            return value

    class AsyncEcho:
        async def ping(self, value=None):
            return value

    class Receiver:
        def __init__(self) -> None:
            self.times: list[float] = []

        def note(self, _value) -> None:
            self.times.append(time.time())

        def pull(self, queue, count: int) -> list[float]:
            while len(self.times) < count:
                if ray.get(queue.take.remote("r", [], 1.0)) is not None:
                    self.times.append(time.time())
            return self.times

        def received(self) -> list[float]:
            return self.times

    actors = {"plain actor": ray.remote(Echo).options(num_cpus=0).remote(),
              "threaded actor": ray.remote(Echo).options(num_cpus=0, max_concurrency=16).remote(),
              "asyncio actor": ray.remote(AsyncEcho).options(num_cpus=0,
                                                             max_concurrency=16).remote()}
    for name, actor in actors.items():
        ray.get(actor.ping.remote())
        seconds = []
        for i in range(CALLS):
            started = time.perf_counter()
            ray.get(actor.ping.remote(i))
            seconds.append(time.perf_counter() - started)
        print(f"1. round trip, {name:15s} {percentiles_ms(seconds)}")

    receiver = ray.remote(Receiver).options(num_cpus=1, max_concurrency=2).remote()
    ray.get(receiver.received.remote())
    sent = []
    for i in range(CALLS):
        sent.append(time.time())
        receiver.note.remote(i)
        time.sleep(0.005)
    time.sleep(0.5)
    got = ray.get(receiver.received.remote())
    print(f"2. one way, driver -> actor        {percentiles_ms(list(np.subtract(got, sent)))}")

    queue = ray.remote(BatchQueueActor).options(num_cpus=0, max_concurrency=16).remote()
    puller = ray.remote(Receiver).options(num_cpus=1, max_concurrency=2).remote()
    done = puller.pull.remote(queue, CALLS)
    time.sleep(1.0)
    sent = []
    for i in range(CALLS):
        sent.append(time.time())
        queue.put.remote([Batch(i, np.zeros(1, np.uint64), np.zeros(1, np.int64))])
        time.sleep(0.005)
    got = ray.get(done)
    print(f"3. one way, put -> waiting take    {percentiles_ms(list(np.subtract(got, sent)))}")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    sys.exit(main())
