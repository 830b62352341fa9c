"""The driver's record of what was sent to the workers and not yet answered.

LoadGen hangs forever on a sample that is never completed and miscounts one completed twice, so
the ledger is the last guard: a batch is completed at most once (a second answer finds nothing),
and when a run must stop, everything still outstanding can be listed and closed out.
Thread-safe: LoadGen's issue thread records, the completion thread completes.
"""

from __future__ import annotations

import threading

from actors.messages import Batch


class CompletionLedger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outstanding: dict[int, Batch] = {}
        self._attempts: dict[int, int] = {}
        self._idle = threading.Condition(self._lock)
        self._closed = False
        self.completed_samples = 0
        self.completed_batches = 0

    def record(self, batches: list[Batch]) -> list[Batch]:
        """Record batches as sent. Once the ledger is closed (the run is stopping) nothing is
        recorded: the batches come back, for the caller to answer at once."""
        with self._lock:
            if self._closed:
                return list(batches)
            for batch in batches:
                if batch.batch_id in self._outstanding:
                    raise ValueError(f"batch {batch.batch_id} recorded twice")
                self._outstanding[batch.batch_id] = batch
            return []

    def complete(self, batch_id: int) -> Batch | None:
        """Close a batch; None if it is not outstanding (already answered, or unknown)."""
        with self._lock:
            batch = self._outstanding.pop(batch_id, None)
            if batch is None:
                return None
            self._attempts.pop(batch_id, None)
            self.completed_samples += len(batch)
            self.completed_batches += 1
            if not self._outstanding:
                self._idle.notify_all()
            return batch

    def failed(self, batch_id: int) -> tuple[Batch | None, int]:
        """Count a failed attempt; returns the batch (None if already answered) and the count."""
        with self._lock:
            batch = self._outstanding.get(batch_id)
            if batch is None:
                return None, 0
            self._attempts[batch_id] = self._attempts.get(batch_id, 0) + 1
            return batch, self._attempts[batch_id]

    def close_all(self) -> list[Batch]:
        """Take every outstanding batch out of the ledger and record nothing more (the run is
        stopping)."""
        with self._lock:
            self._closed = True
            batches = list(self._outstanding.values())
            self._outstanding.clear()
            self._attempts.clear()
            self._idle.notify_all()
            return batches

    def outstanding_batches(self) -> int:
        with self._lock:
            return len(self._outstanding)

    def outstanding_samples(self) -> int:
        with self._lock:
            return sum(len(b) for b in self._outstanding.values())

    def wait_until_empty(self, timeout_s: float) -> bool:
        with self._lock:
            return self._idle.wait_for(lambda: not self._outstanding, timeout_s)
