"""A few optimisation steps on rendered images of a box: both loss terms fall (the network, its
initialisation, the target assignment and the losses fit together). The full "learns to ADD < 0.1 d"
check is the trainer's test."""

from __future__ import annotations

import pytest
import torch

from bopkd.losses.task import PoseLoss
from bopkd.models.posenet import ModelConfig, build_model


@pytest.fixture
def one_thread():
    """One intra-op thread: on the shared 2-core machine, 2 threads under load run ~10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_losses_decrease_on_a_tiny_synthetic_set(box_batch, one_thread):
    torch.manual_seed(0)
    model = build_model(ModelConfig(obj_ids=[1], backbone="tiny-cpu"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = PoseLoss()
    gen = torch.Generator().manual_seed(0)
    history = []
    for _ in range(30):
        losses = loss_fn(model(box_batch["images"]), box_batch, generator=gen)
        total = losses["loss_cls"] + losses["loss_kpt"]
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    first, last = history[0], history[-1]
    assert last["loss_cls"] < 0.3 * first["loss_cls"], (first, last)
    assert last["loss_kpt"] < 0.5 * first["loss_kpt"], (first, last)
