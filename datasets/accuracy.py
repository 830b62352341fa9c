"""Scoring LoadGen's accuracy log. Pure functions; the CLIs in scripts/ are thin wrappers.

`mlperf_log_accuracy.json` is a JSON array of {"seq_id", "qsl_idx", "data"}, data being the
sample's payload bytes in upper-case hex. LoadGen may log one sample more than once; as the
reference tools do, only the first entry of each qsl_idx counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PAYLOAD_DTYPES = {"float32": np.float32, "int32": np.int32, "int64": np.int64}


def read_accuracy_log(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_val_map_labels(path: str | Path) -> list[tuple[str, int]]:
    """(file, label) per line of an ImageNet val_map.txt, in QSL order."""
    entries = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            columns = line.strip().split()
            if columns:
                entries.append((columns[0], int(columns[1])))
    return entries


@dataclass(frozen=True)
class Top1:
    good: int
    total: int
    duplicates: int
    mistakes: tuple[tuple[str, int, int], ...]  # (file, expected, found)

    @property
    def percent(self) -> float:
        return 100.0 * self.good / self.total if self.total else 0.0

    def line(self) -> str:
        """The reference tool's output line."""
        return f"accuracy={self.percent:.3f}%, good={self.good}, total={self.total}"


def score_imagenet(entries: list[dict], labels: list[tuple[str, int]],
                   dtype: str = "float32") -> Top1:
    """Top-1 of a classification accuracy log against val_map labels."""
    numpy_type = PAYLOAD_DTYPES[dtype]
    seen: set[int] = set()
    good = 0
    mistakes = []
    for entry in entries:
        index = entry["qsl_idx"]
        if index in seen:
            continue
        seen.add(index)
        name, expected = labels[index]
        payload = np.frombuffer(bytes.fromhex(entry["data"]), numpy_type)
        found = int(payload[0]) if len(payload) else -1
        if found == expected:
            good += 1
        else:
            mistakes.append((name, expected, found))
    return Top1(good, len(seen), len(entries) - len(seen), tuple(mistakes))
