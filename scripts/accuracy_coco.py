"""COCO mAP of a detection run from LoadGen's accuracy log (the reference tool's flags).

    python scripts/accuracy_coco.py --mlperf-accuracy-file output/mlperf_log_accuracy.json \
        --coco-dir /data/coco [--use-inv-map] [--remove-48-empty-images]

--use-inv-map: the model emits contiguous class ids 1..80 (SSD-ResNet34 pytorch and tf).
--remove-48-empty-images: qsl indices count only the images with annotations, in file order, the
way the SUT lists coco-1200-pt (the PyTorch SSD-ResNet34), as the reference does.
"""

from __future__ import annotations

import sys

from datasets.coco_eval import accuracy_cli

if __name__ == "__main__":
    sys.exit(accuracy_cli(sys.argv[1:], dataset_flag="--coco-dir",
                          annotations="annotations/instances_val2017.json",
                          default_output="coco-results.json", with_remove_empty=True,
                          doc=__doc__))
