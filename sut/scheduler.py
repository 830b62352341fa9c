"""The work queue, on the driver: batches wait here until a worker has room for them.

Each worker holds at most `slots` calls at a time (one running, one arriving behind it, so the
device never waits for the network). A call carries every batch waiting, up to
`batches_per_call`, so under load one Ray message moves many batches. Its reply carries their
results and frees the slot: a reply *is* the worker's next pull, so a fast worker takes more
work than a slow one, and no queue actor, take call or lease ack is needed (measured: each Ray
hop costs about a millisecond of round trip on 2 vCPUs, see scripts/bench_ray_latency.py).

A call stays with its worker until its reply is in. When a worker is lost, the batches of its
unanswered calls go back to the front of the queue, oldest first, for the others; the driver's
ledger answers each sample once whatever comes back twice.

Plain Python and thread-safe (LoadGen's issue thread puts, the completion thread returns);
`send(worker_id, call_id, batches)` is the transport, called outside the lock.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from typing import Callable, Iterable

from actors.messages import Batch

SendFn = Callable[[str, int, list[Batch]], None]


class BatchScheduler:
    def __init__(self, workers: Iterable[str], send: SendFn, slots: int = 2,
                 batches_per_call: int = 8) -> None:
        if slots < 1 or batches_per_call < 1:
            raise ValueError("slots and batches_per_call must be >= 1")
        self._send = send
        self._slots = slots
        self._batches_per_call = batches_per_call
        self._lock = threading.Lock()
        self._pending: deque[Batch] = deque()
        self._calls: dict[str, dict[int, list[Batch]]] = {worker: {} for worker in workers}
        self._call_ids = itertools.count()
        self.calls_sent = 0
        self.batches_sent = 0

    # -- the driver's side ------------------------------------------------------------------
    def put(self, batches: Iterable[Batch]) -> None:
        """Queue batches; they leave at once for any worker with a free slot."""
        with self._lock:
            self._pending.extend(batches)
            calls = self._assign()
        self._dispatch(calls)

    def put_front(self, batches: Iterable[Batch]) -> None:
        """Queue batches ahead of everything waiting (a retry goes before new work)."""
        with self._lock:
            self._pending.extendleft(reversed(list(batches)))
            calls = self._assign()
        self._dispatch(calls)

    def returned(self, worker_id: str, call_id: int) -> list[Batch]:
        """A call's reply is in: free its slot, send what waits. Returns the call's batches
        (empty for a call not known, e.g. of a worker already given up)."""
        with self._lock:
            batches = self._calls.get(worker_id, {}).pop(call_id, [])
            calls = self._assign()
        self._dispatch(calls)
        return batches

    def lost(self, worker_id: str) -> list[Batch]:
        """The worker is gone: never send it more; its unanswered batches go back to the front
        of the queue, oldest first, and out to the others. Returns them."""
        with self._lock:
            calls = self._calls.pop(worker_id, {})
        returned = sorted((batch for batches in calls.values() for batch in batches),
                          key=lambda batch: batch.batch_id)
        self.put_front(returned)
        return returned

    def clear(self) -> int:
        """Drop the batches still waiting (a trial or test is over); returns how many. Calls
        out on the workers keep their slots until they return."""
        with self._lock:
            dropped = len(self._pending)
            self._pending.clear()
            return dropped

    # -- what the dispatcher and the reports ask --------------------------------------------
    def live_workers(self) -> int:
        with self._lock:
            return len(self._calls)

    def workers(self) -> list[str]:
        with self._lock:
            return list(self._calls)

    def has_idle_worker(self) -> bool:
        """True while some worker has no call at all: a batch sent now starts at once."""
        with self._lock:
            return not self._pending and any(not calls for calls in self._calls.values())

    def pending_batches(self) -> int:
        with self._lock:
            return len(self._pending)

    # -- internals (under the lock) ---------------------------------------------------------
    def _assign(self) -> list[tuple[str, int, list[Batch]]]:
        """Hand waiting batches to free slots, the emptiest worker first, sharing the queue
        out evenly between the free slots."""
        calls = []
        while self._pending:
            free = [(len(held), worker) for worker, held in self._calls.items()
                    if len(held) < self._slots]
            if not free:
                break
            free.sort()
            worker = free[0][1]
            share = -(-len(self._pending) // sum(self._slots - used for used, _ in free))
            count = min(self._batches_per_call, max(1, share))
            batches = [self._pending.popleft() for _ in range(min(count, len(self._pending)))]
            call_id = next(self._call_ids)
            self._calls[worker][call_id] = batches
            calls.append((worker, call_id, batches))
        return calls

    def _dispatch(self, calls: list[tuple[str, int, list[Batch]]]) -> None:
        for worker, call_id, batches in calls:
            self.calls_sent += 1
            self.batches_sent += len(batches)
            self._send(worker, call_id, batches)
