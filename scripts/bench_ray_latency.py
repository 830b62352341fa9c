"""What one Ray actor call costs on this machine: the floor of the SUT's per-sample latency.

    python scripts/bench_ray_latency.py

Prints, side by side in one run on one local Ray instance:
  1. round trip driver -> actor -> driver for a plain, a threaded (max_concurrency) and an
     asyncio actor;
  2. one way driver -> actor (a fire-and-forget call, timed at the receiver);
  3. the SUT's hot path: a call with two slots in a concurrency group, reply read through a
     future callback (as sut/cluster.py does): round trip, and calls/s with 1, 2 and 4 out;
  4. the same call over the channel transport's socket to that actor (actors/channel.py):
     round trip, and calls/s with 1 and 2 out;
  5. the same through a Ray Compiled Graph (shared-memory channels), for comparison.
A sample crosses one such call in the SUT (driver -> worker -> driver, the reply carrying the
result); sut/scheduler.py keeps the calls per second bounded.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import numpy as np

CALLS = 300


def percentiles_ms(seconds: list[float]) -> str:
    values = np.array(seconds[20:]) * 1e3  # the first calls warm up
    return "p50 {:.3f} ms  p99 {:.3f} ms".format(*np.percentile(values, [50, 99]))


def main() -> int:
    import ray

    from actors.messages import Batch

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")

    class Echo:
        def ping(self, value=None):
            return value

    class Serving:
        def run_batches(self, batches):
            return [batch.batch_id for batch in batches]

        def ping(self):
            return None

        def open_channel(self, key):
            from actors.channel import ChannelServer

            self.server = ChannelServer(self.run_batches, lambda batches, error: [], key,
                                        host=ray.util.get_node_ip_address())
            return self.server.start().address

    class AsyncEcho:
        async def ping(self, value=None):
            return value

    class Receiver:
        def __init__(self) -> None:
            self.times: list[float] = []

        def note(self, _value) -> None:
            self.times.append(time.time())

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

    serving = ray.remote(concurrency_groups={"serve": 2})(Serving).options(num_cpus=0).remote()
    ray.get(serving.ping.remote())
    batch = [Batch(0, np.zeros(4, np.uint64), np.zeros(4, np.int64))]
    call = serving.run_batches.options(concurrency_group="serve")
    seconds = []
    for _ in range(CALLS):
        started = time.perf_counter()
        answered = threading.Event()
        call.remote(batch).future().add_done_callback(lambda _f: answered.set())
        answered.wait()
        seconds.append(time.perf_counter() - started)
    print(f"3. round trip, run_batches call   {percentiles_ms(seconds)}")
    for out in (1, 2, 4):
        slots, count, finished = threading.Semaphore(out), 2000, threading.Event()
        left = [count]

        def done(_future) -> None:
            slots.release()
            left[0] -= 1
            if not left[0]:
                finished.set()

        started = time.perf_counter()
        for _ in range(count):
            slots.acquire()
            call.remote(batch).future().add_done_callback(done)
        finished.wait()
        print(f"   {out} call(s) out: {count / (time.perf_counter() - started):7.0f} calls/s")

    from actors.channel import connect, new_key, recv_frame, send_frame

    key = new_key()
    channel = connect(tuple(ray.get(serving.open_channel.remote(key))), key)
    seconds = []
    for call_id in range(CALLS):
        started = time.perf_counter()
        send_frame(channel, (call_id, batch))
        recv_frame(channel)
        seconds.append(time.perf_counter() - started)
    print(f"4. round trip, the channel        {percentiles_ms(seconds)}")
    for out in (1, 2):
        count = 4000
        started = time.perf_counter()
        for call_id in range(out):
            send_frame(channel, (call_id, batch))
        for call_id in range(out, count):
            recv_frame(channel)
            send_frame(channel, (call_id, batch))
        for _ in range(out):
            recv_frame(channel)
        print(f"   {out} call(s) out: {count / (time.perf_counter() - started):7.0f} calls/s")
    channel.close()

    from ray.dag import InputNode

    echo = ray.remote(Echo).options(num_cpus=0).remote()
    with InputNode() as given:
        graph = echo.ping.bind(given).experimental_compile()
    seconds = []
    for _ in range(CALLS):
        started = time.perf_counter()
        ray.get(graph.execute(batch))
        seconds.append(time.perf_counter() - started)
    print(f"5. round trip, compiled graph     {percentiles_ms(seconds)}")
    graph.teardown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    sys.exit(main())
