"""The training loop of the core (lab2.train) on tensors alone: no files, no machinery. Part of
the core tier (``make test-fast``)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lab2.config import TrainConfig
from lab2.models import build_model
from lab2.train import (
    DevicePlan,
    NonFiniteLossError,
    build_optimizer,
    build_scheduler,
    evaluate,
    fit,
    train_one_epoch,
)

pytestmark = pytest.mark.core

PLAN = DevicePlan(torch.device("cpu"))


def squares(n: int = 8, size: int = 32, seed: int = 0) -> DataLoader:
    """Bright squares on dark images, with their masks: something a network learns at once."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=generator) * 0.2
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        top, left = torch.randint(0, size // 2, (2,), generator=generator).tolist()
        images[i, :, top:top + size // 2, left:left + size // 2] += 0.7
        masks[i, top:top + size // 2, left:left + size // 2] = 1
    names = [f"square_{i}" for i in range(n)]
    pairs = TensorDataset(images, masks)
    return DataLoader([(*pairs[i], names[i]) for i in range(n)], batch_size=4)


def test_fit_trains_a_tiny_network_and_returns_one_history_row_per_epoch():
    torch.manual_seed(0)
    config = TrainConfig(base_channels=4, epochs=3, lr=1e-2, dropout=0.0)
    model = build_model("unet", base_channels=4, dropout=0.0)
    optimizer = build_optimizer(model, config)
    loaders = {"train": squares(), "val": squares(seed=1)}
    saved = []
    history = fit(model, loaders, optimizer, build_scheduler(optimizer, config), PLAN,
                  epochs=3, progress=False, on_epoch=lambda h: saved.append(len(h)))
    assert [row["epoch"] for row in history] == [1, 2, 3] and saved == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert set(history[0]) == {"epoch", "train_loss", "val_loss", "val_dice", "val_dice_pooled",
                               "lr", "seconds"}


def test_one_training_step_is_forward_cross_entropy_backward_step():
    """train_one_epoch over one batch equals the step written out by hand."""
    loader = squares(n=4)
    torch.manual_seed(0)
    a = build_model("unet", base_channels=4, dropout=0.0)
    b = build_model("unet", base_channels=4, dropout=0.0)
    b.load_state_dict(a.state_dict())
    config = TrainConfig()
    opt_a, opt_b = build_optimizer(a, config), build_optimizer(b, config)
    loss = train_one_epoch(a, loader, opt_a, PLAN, epoch=0, progress=False)
    images, masks, _ = next(iter(loader))
    b.train()
    by_hand = torch.nn.functional.cross_entropy(b(images), masks)
    opt_b.zero_grad()
    by_hand.backward()
    opt_b.step()
    assert loss == pytest.approx(by_hand.item(), rel=1e-5)
    assert all(torch.allclose(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_evaluate_restores_training_mode_and_scores_a_perfect_model_one():
    class Oracle(torch.nn.Module):       # logits that say exactly where the bright pixels are
        def forward(self, x):
            pet = (x.mean(1, keepdim=True) > 0.5).float()
            return torch.cat([1 - pet, pet], 1) * 10

    model = Oracle().train()
    result = evaluate(model, squares(), PLAN, progress=False)
    assert model.training and result["dice"] == 1.0 and result["n_images"] == 8


def test_a_non_finite_loss_stops_the_epoch():
    model = build_model("unet", base_channels=4)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="epoch 1, batch 1"):
        train_one_epoch(model, squares(), build_optimizer(model, TrainConfig()), PLAN, epoch=0,
                        progress=False)


@pytest.mark.parametrize("model,input", [("levit_unet", "rgb"), ("resnet34_unet", "gray"),
                                         ("resnet34_unet", "edges")])
def test_the_future_work_options_train_a_step_and_repeat_it_exactly(model, input):
    """LeViT-UNet, a gray input and an edge channel (the report's future work) through the same
    loop: one epoch on tiny tensors, the same numbers twice from the same seed."""
    from lab2.augment import normalize_images
    from lab2.models import model_for
    from lab2.preprocess import network_input
    config = TrainConfig(model=model, input=input, image_size=64, base_channels=8)
    images, masks, names = next(iter(squares(n=4, size=64)))
    uint8 = (images * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()        # (B, H, W, 3)
    inputs = torch.stack([torch.from_numpy(network_input(i, input)).permute(2, 0, 1)
                          for i in uint8])                                     # (B, C, H, W)
    assert inputs.shape[1] == {"rgb": 3, "gray": 1, "edges": 4}[input]
    loader = [(inputs, masks, names)]
    losses, weights = [], []
    for _ in range(2):
        torch.manual_seed(0)
        network = model_for(config)
        loss = train_one_epoch(network, loader, build_optimizer(network, config), PLAN, epoch=0,
                               progress=False)
        losses.append(loss)
        weights.append(next(network.parameters()).detach().clone())
    assert losses[0] == losses[1] and torch.equal(*weights)
    assert normalize_images(inputs).shape == inputs.shape
