"""The table of MLPerf rules per model: accuracy targets, dataset sizes, compliance settings.

One frozen row per LoadGen model key. resnet50 is a v6.1 model and retinanet a v6.0 one (rules as
the submission checker applies them); the SSD models and MobileNet are retired, and their rows
keep the rules of the last releases that had them (MLPerf Inference v2.0 for the SSDs, v0.5 for
MobileNet). A model without a row (the embedded EfficientNet-Lite0) has no target.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelRules:
    model: str
    metric: str  # "top1" (accuracy %) or "mAP" (%)
    reference: float  # the FP32 reference's score, in %
    fraction: float  # of the reference the closed division must reach
    dataset_size: int  # samples an accuracy run must cover to count
    release: str  # the rules' release
    test01_sampling_target: int | None = None  # None: no TEST01 in that release's rules
    test04: bool = False
    server_latency_ms: float | None = None
    min_performance_sample_count: int | None = None

    @property
    def target(self) -> float:
        return round(self.reference * self.fraction, 6)


RULES: dict[str, ModelRules] = {row.model: row for row in (
    ModelRules("resnet50", "top1", 76.46, 0.99, 50000, "v6.1", test01_sampling_target=4096,
               test04=True, server_latency_ms=15, min_performance_sample_count=1024),
    ModelRules("retinanet", "mAP", 37.55, 0.99, 24781, "v6.0", test01_sampling_target=256,
               server_latency_ms=100, min_performance_sample_count=64),
    ModelRules("ssd-resnet34", "mAP", 20.0, 0.99, 5000, "v2.0", server_latency_ms=100,
               min_performance_sample_count=64),
    ModelRules("ssd-mobilenet", "mAP", 22.0, 0.99, 5000, "v2.0",
               min_performance_sample_count=256),
    ModelRules("mobilenet", "top1", 71.676, 0.98, 50000, "v0.5",
               min_performance_sample_count=1024),
)}

TEST01_RNG_SEED = 720381539243781796  # LoadGen's accuracy-log seed in TEST01's audit.config

CHECKER_RELEASE = "v6.1"  # the release whose submission checker judges a tree
# The scenarios a closed-division result needs, per model and system category, in that
# release: ResNet-50 is an edge benchmark there (no datacenter-only category takes it), and
# RetinaNet is gone (v6.0 was its last release, whose seeds this LoadGen no longer uses).
CLOSED_SCENARIOS: dict[str, dict[str, tuple[str, ...]]] = {
    "resnet50": {"edge": ("SingleStream", "MultiStream", "Offline"),
                 "datacenter,edge": ("SingleStream", "MultiStream", "Offline", "Server")},
}


def closed_category_problem(model: str, category: str | None) -> str | None:
    """Why the closed division cannot take `model` in `category`; None if it can."""
    categories = CLOSED_SCENARIOS.get(model)
    if categories is None:
        return (f"{model} is no model of MLPerf Inference {CHECKER_RELEASE}'s closed division "
                f"(of this harness's models it takes {', '.join(CLOSED_SCENARIOS)}); submit "
                "it with --division open")
    if category not in categories:
        return (f"{model} is no {category} benchmark in {CHECKER_RELEASE}'s closed division; "
                f"give --category {' or '.join(repr(name) for name in categories)}")
    return None


def accuracy_verdict(model: str, score_percent: float, samples: int) -> dict:
    """PASS or FAIL against the closed division's target, and whether it counts."""
    rules = RULES.get(model)
    if rules is None:
        return {"verdict": "no target",
                "note": f"{model} is not an MLPerf model: there is no accuracy target"}
    passed = score_percent >= rules.target
    verdict = {"verdict": "PASS" if passed else "FAIL", "target_percent": rules.target,
               "rule": f"{rules.fraction:.0%} of {rules.reference:g}% {rules.metric} "
                       f"(MLPerf {rules.release})",
               "counts": samples == rules.dataset_size}
    if samples != rules.dataset_size:
        verdict["note"] = (f"over {samples:,} of the {rules.dataset_size:,} samples: the verdict "
                           "does not count (an accuracy run for a submission covers them all)")
    return verdict


def verdict_line(model: str, score_percent: float, verdict: dict) -> str:
    if verdict["verdict"] == "no target":
        return f"accuracy verdict: none ({verdict['note']})"
    line = (f"accuracy verdict: {verdict['verdict']} ({score_percent:.3f}% against the "
            f"target {verdict['target_percent']:g}%, {verdict['rule']})")
    return line + (f"; {verdict['note']}" if "note" in verdict else "")
