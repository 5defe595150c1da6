"""The learned shift / scale tables of AdaLN-style modulation (paper 2.2's AdaLN-single in
the transformer, the timestep-conditioned VAE decoder's), built the same way everywhere."""

from __future__ import annotations

import torch
from torch import nn


def modulation_table(rows: int, dim: int) -> nn.Parameter:
    """(rows, dim), drawn N(0, 1 / dim) as Lightricks initializes it. On the meta device,
    where every checkpoint load builds its models, the table is left empty: drawing and
    dividing there run torch's Python references, whose first call imports sympy (about a
    second of every start)."""
    table = torch.empty(rows, dim)
    return nn.Parameter(table if table.is_meta else torch.randn(rows, dim) / dim**0.5)
