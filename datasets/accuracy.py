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

from harness_base import ConfigError


PAYLOAD_DTYPES = {"float32": np.float32, "int32": np.int32, "int64": np.int64}


def read_accuracy_log(path: str | Path, flag: str | None = None) -> list[dict]:
    """The log's entries, checked: a list of {"qsl_idx": int >= 0, "data": hex}. Bad input is a
    ConfigError naming the file (as `flag`, the option that gave it, where there is one)."""
    name = f"{flag} {path}" if flag else f"accuracy log {path}"
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        if not text.strip():
            raise ConfigError(f"{name} is empty: did the accuracy run finish? Give the "
                              "mlperf_log_accuracy.json of a run that did.")
        entries = json.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such file. Give the mlperf_log_accuracy.json that LoadGen "
                          "writes in the output folder of an accuracy run.") from None
    except OSError as error:
        raise ConfigError(f"{name}: cannot read it ({error.strerror or error}).") from None
    except ValueError as error:
        raise ConfigError(f"{name} is not JSON ({error}): give LoadGen's mlperf_log_accuracy.json "
                          "from an accuracy run that finished.") from None
    if not isinstance(entries, list):
        raise ConfigError(f"{name} is not a JSON array of {{seq_id, qsl_idx, data}} entries: is it "
                          "LoadGen's mlperf_log_accuracy.json?")
    for number, entry in enumerate(entries):
        index = entry.get("qsl_idx") if isinstance(entry, dict) else None
        if (not isinstance(index, int) or isinstance(index, bool) or index < 0
                or not isinstance(entry.get("data"), str)):
            raise ConfigError(f"{name}: entry {number} is not a {{qsl_idx, data}} object with a "
                              "non-negative integer qsl_idx and a hex string as data: is it "
                              "LoadGen's mlperf_log_accuracy.json?")
        try:
            bytes.fromhex(entry["data"])
        except ValueError as error:
            raise ConfigError(f"{name}: entry {number} (qsl_idx {index}) has a \"data\" field that "
                              f"is not hex ({error}): the file is damaged.") from None
    return entries


def check_complete(entries: list[dict], expected_count: int, log_path: str | Path,
                   flag: str, listing: str) -> None:
    """Refuse a log that cannot be the whole of a finished run: an aborted run closes its
    outstanding samples out with empty payloads (and leaves ABORTED.txt beside its logs), and
    a shorter log than the listing scores a part as if it were the whole. `listing` names
    what gave expected_count (the val_map flag)."""
    name = f"{flag} {log_path}"
    marker = Path(log_path).parent / "ABORTED.txt"
    if marker.is_file():
        raise ConfigError(f"{name}: the run that wrote it was aborted ({marker} says why), so "
                          "it scores a part of the set. Score a complete run, or pass "
                          "--allow-partial to score it anyway.")
    empty = sum(1 for entry in entries if not entry["data"])
    if empty:
        raise ConfigError(f"{name}: {empty} of {len(entries)} entries have no payload, as an "
                          "interrupted or failed run leaves them. Score a complete run, or pass "
                          "--allow-partial to score it anyway.")
    answered = len({entry["qsl_idx"] for entry in entries})
    if answered < expected_count:
        raise ConfigError(f"{name} answers {answered} of the {expected_count} images {listing} "
                          "lists. Score a complete run, or pass --allow-partial for a run of "
                          "part of the set (--count).")


def read_val_map_labels(path: str | Path, flag: str | None = None) -> list[tuple[str, int]]:
    """(file, label) per line of an ImageNet val_map.txt, in QSL order. Bad input is a
    ConfigError naming the file (as `flag`, the option that gave it, where there is one)."""
    name = f"{flag} {path}" if flag else f"val map {path}"
    entries = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                columns = line.strip().split()
                if not columns:
                    continue
                try:
                    entries.append((columns[0], int(columns[1])))
                except (IndexError, ValueError):
                    raise ConfigError(f"{name} line {number}: {line.strip()[:80]!r} is not "
                                      "'<file> <integer label>': give ImageNet's val_map.txt.") \
                        from None
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such file. Give ImageNet's val_map.txt (one "
                          "'<file> <label>' line per image, in the order the run listed them).") \
            from None
    except OSError as error:
        raise ConfigError(f"{name}: cannot read it ({error.strerror or error}).") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{name} is not text ({error}): give ImageNet's val_map.txt.") from None
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
        raw = bytes.fromhex(entry["data"])
        if len(raw) % np.dtype(numpy_type).itemsize:
            raise ConfigError(f"qsl_idx {index}: a payload of {len(raw)} bytes is no whole number "
                              f"of {dtype} values: wrong --dtype?")
        payload = np.frombuffer(raw, numpy_type)
        if len(payload) > 1:
            raise ConfigError(f"qsl_idx {index}: a payload of {len(payload)} {dtype} values, "
                              "where a classification run answers one label: a detection log "
                              "(score it with accuracy_coco.py or accuracy_openimages.py)?")
        if len(payload) and not np.isfinite(payload[0]):
            raise ConfigError(f"qsl_idx {index}: the label read as {dtype} is {payload[0]}: wrong "
                              "--dtype?")
        found = int(payload[0]) if len(payload) else -1
        if found == expected:
            good += 1
        else:
            mistakes.append((name, expected, found))
    return Top1(good, len(seen), len(entries) - len(seen), tuple(mistakes))
