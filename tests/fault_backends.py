"""Backends that misbehave on purpose, plugged in with --backend fault_backends:FaultyBackend.

--model names a JSON plan instead of a model file:
    {"model": "<a real .onnx>",       answers come from it, so results stay checkable
     "kill_on_call": 3,               SIGKILL this worker process on its 3rd predict
     "raise_on_call": 2,              raise on the 2nd predict
     "raise_always": true,            raise on every predict after the startup check
     "sleep_s": 0.05,                 sleep before each predict (a slow device)
     "startup_s": 30, "started": "<path>"  create <path>, then take 30 s to start (a slow load)
     "once": "<path>"}                with "once", only the first worker to get there misbehaves

predict call 1 is the worker's startup check, so batches start at call 2.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import replace

from actors.backends.onnxruntime_backend import OnnxRuntimeBackend


def _first_to_claim(marker: str | None) -> bool:
    if marker is None:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


class FaultyBackend:
    name = "faulty"
    preferred_layout = "NCHW"

    def __init__(self, options) -> None:
        with open(options.model_path) as handle:
            self.plan = json.load(handle)
        self.inner = OnnxRuntimeBackend(replace(options, model_path=self.plan["model"]))
        self.calls = 0
        if self.plan.get("started"):
            open(self.plan["started"], "w").close()
        time.sleep(self.plan.get("startup_s", 0))

    def predict(self, batch):
        self.calls += 1
        plan = self.plan
        if plan.get("sleep_s"):
            time.sleep(plan["sleep_s"])
        if self.calls == plan.get("kill_on_call") and _first_to_claim(plan.get("once")):
            os.kill(os.getpid(), signal.SIGKILL)
        if plan.get("raise_always") and self.calls > 1:
            raise RuntimeError("injected fault: this backend always fails")
        if self.calls == plan.get("raise_on_call") and _first_to_claim(plan.get("once")):
            raise RuntimeError("injected fault: this batch fails once")
        return self.inner.predict(batch)

    def describe(self) -> dict:
        return {"backend": self.name, **self.inner.describe()}
