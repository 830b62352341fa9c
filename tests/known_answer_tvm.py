"""Known-answer models shaped for what TVM's frontends can take (apache-tvm 0.27).

The ONNX known-answer model of known_answer.py compiles with TVM as it is. Its torch.export
twin does not: TVM's torch frontend has no `min.dim`, and it computes every matmul in float32
(`out_dtype="float32"`), which blurs the float64 features by ~0.5 - as much as the
recognition threshold. This twin computes the same function with `max` of the negated
distances and the projection as a float64 multiply-and-sum.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from known_answer import REJECT_CLASS, THRESHOLD, _recogniser


def build_torch_model_for_tvm(path: Path, tensors: list[np.ndarray], labels: list[int],
                              seed: int = 1) -> Path:
    """known_answer.build_torch_model's answers as a torch.export program (dynamic batch)."""
    import torch

    projection, templates, classes = _recogniser(tensors, labels, seed)

    class Recogniser(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("projection", torch.from_numpy(projection))
            self.register_buffer("templates", torch.from_numpy(templates))
            self.register_buffer("classes", torch.from_numpy(classes))

        def forward(self, x):
            flat = x.double().flatten(1)
            features = (flat[:, :, None] * self.projection[None]).sum(1)
            distances = ((features[:, None, :] - self.templates[None]) ** 2).sum(-1)
            negated_best, slot = (-distances).max(dim=1)
            reject = torch.full_like(slot, REJECT_CLASS)
            return torch.where(-negated_best < THRESHOLD, self.classes[slot], reject)

    example = torch.from_numpy(np.stack(tensors[:2]))
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(Recogniser().eval(), (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path
