"""The modulation tables: Lightricks' initialization off the meta device, nothing drawn on it."""

from __future__ import annotations

import torch

from ltx_core.models.modulation import modulation_table


def test_a_table_is_drawn_as_lightricks_draws_it():
    torch.manual_seed(3)
    table = modulation_table(6, 64)
    torch.manual_seed(3)
    assert table.shape == (6, 64) and table.requires_grad
    assert torch.equal(table.detach(), torch.randn(6, 64) / 64**0.5)


def test_a_table_follows_the_device_the_model_is_built_on():
    with torch.device("meta"):
        assert modulation_table(2, 8).is_meta
