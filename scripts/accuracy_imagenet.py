"""Top-1 accuracy of an ImageNet run from LoadGen's accuracy log (the reference tool's flags).

    python scripts/accuracy_imagenet.py --mlperf-accuracy-file output/mlperf_log_accuracy.json \
        --imagenet-val-file /data/imagenet2012/val_map.txt
"""

from __future__ import annotations

import argparse
import sys

from datasets.accuracy import (PAYLOAD_DTYPES, check_complete, read_accuracy_log,
                               read_val_map_labels, score_imagenet)
from harness_base import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mlperf-accuracy-file", required=True,
                        help="path to mlperf_log_accuracy.json")
    parser.add_argument("--imagenet-val-file", required=True, help="path to val_map.txt")
    parser.add_argument("--verbose", action="store_true", help="print every mistake")
    parser.add_argument("--allow-partial", action="store_true",
                        help="score a log of part of the set (a --count run) or of an aborted "
                             "run (empty payloads) instead of refusing it")
    parser.add_argument("--dtype", default="float32", choices=sorted(PAYLOAD_DTYPES),
                        help="data type of the payload")
    args = parser.parse_args(argv)
    try:
        entries = read_accuracy_log(args.mlperf_accuracy_file, "--mlperf-accuracy-file")
        labels = read_val_map_labels(args.imagenet_val_file, "--imagenet-val-file")
        last = max((entry["qsl_idx"] for entry in entries), default=-1)
        if last >= len(labels):
            raise ConfigError(f"--mlperf-accuracy-file {args.mlperf_accuracy_file} has qsl_idx "
                              f"{last}, but --imagenet-val-file {args.imagenet_val_file} lists "
                              f"only {len(labels)} images: give the val_map.txt the run used.")
        if not args.allow_partial:
            check_complete(entries, len(labels), args.mlperf_accuracy_file,
                           "--mlperf-accuracy-file", f"--imagenet-val-file {args.imagenet_val_file}")
        result = score_imagenet(entries, labels, args.dtype)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.verbose:
        for name, expected, found in result.mistakes:
            print(f"{name}, expected: {expected}, found {found}")
    print(result.line())
    if args.verbose:
        print(f"found and ignored {result.duplicates} dupes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
