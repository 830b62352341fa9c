"""OpenImages (MLPerf subset) mAP of a RetinaNet run from LoadGen's accuracy log.

    python scripts/accuracy_openimages.py --mlperf-accuracy-file output/mlperf_log_accuracy.json \
        --openimages-dir /data/openimages

Reads annotations/openimages-mlperf.json under --openimages-dir; the reference tool's flags.
"""

from __future__ import annotations

import sys

from datasets.coco_eval import accuracy_cli

if __name__ == "__main__":
    sys.exit(accuracy_cli(sys.argv[1:], dataset_flag="--openimages-dir",
                          annotations="annotations/openimages-mlperf.json",
                          default_output="openimages-results.json", with_remove_empty=False,
                          doc=__doc__))
