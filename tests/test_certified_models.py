"""Gowal et al.'s small / medium / large CNNs (dm_small, dm_medium, dm_large): sizes and that the bounds walk them."""
from __future__ import annotations

import pytest
import torch

from lightning_adv.certify import BoundNetwork, Certify
from lightning_adv.models import create_model


@pytest.mark.parametrize(("name", "params"), [("dm_small", 550_406), ("dm_medium", 1_974_762), ("dm_large", 13_257_290)])
def test_sizes_on_mnist(name, params):
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_bounds_walk_dm_small_and_wrong_sizes_are_named():
    torch.manual_seed(0)
    model = create_model("dm_small", input_size=16, mean=[0.5], std=[0.25]).eval()
    x, y = torch.rand(3, 1, 16, 16), torch.tensor([0, 1, 2])
    assert torch.allclose(BoundNetwork(model).forward(x), model(x), atol=1e-5)
    margins = Certify(method="ibp", eps=0.0).margins(model, x, y)
    assert torch.allclose(margins, model(x).gather(1, y[:, None]) - model(x), atol=1e-4)  # eps 0: the exact margin
    with pytest.raises(ValueError, match="input_size"):
        model(torch.rand(1, 1, 28, 28))
    with pytest.raises(ValueError, match="size='huge'"):
        create_model("dm_small", input_size=28).__class__(size="huge")
