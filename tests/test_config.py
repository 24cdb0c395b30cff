"""TrainConfig: the report's defaults, clear errors, JSON round trip, profiles, schedule."""

from __future__ import annotations

import json

import pytest
import torch

from lab2.config import PROFILES, TrainConfig, profile_config
from lab2.models import MODELS
from lab2.ops.machine import resolve_profile
from lab2.train import build_optimizer, build_scheduler, lr_at_epoch

pytestmark = pytest.mark.core


def test_defaults_are_the_reports_settings():
    c = TrainConfig()
    assert (c.image_size, c.batch_size, c.epochs, c.optimizer, c.lr) == (512, 8, 50, "adam", 1e-3)
    assert c.weight_decay == 1e-4 and c.momentum == 0.9
    assert c.milestones == (30, 50, 100, 150, 200) and c.gamma == 0.1
    assert (c.num_workers, c.prefetch_factor, c.loss) == (4, 2, "cross_entropy")
    assert c.base_channels == 64 and c.max_train_samples is None


@pytest.mark.parametrize("field,value,message", [
    ("optimizer", "rmsprop", "choose one of adam, sgd, adamw"),
    ("lr", -0.1, "must be positive"),
    ("image_size", 500, r"multiple of 16 \(nearest: 496\)"),
    ("model", "vit", "unknown model"),
    ("milestones", (50, 30), "increasing"),
    ("batch_size", 0, "at least 1"),
    ("dropout", 1.0, r"\[0, 1\)"),
    ("border", "edge", "choose one of"),
    ("seed", -5, "at least 0"),          # NumPy's own "Seed must be between 0 and 2**32 - 1"
    ("seed", 2**32, "below 2"),          # named no flag, and came after the data were loaded
])
def test_invalid_values_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}=.*{message}"):
        TrainConfig(**{field: value})


def test_resnet34_unet_image_size_must_be_a_multiple_of_32():
    with pytest.raises(ValueError, match="multiple of 32"):
        TrainConfig(model="resnet34_unet", image_size=496)


def test_json_round_trip(tmp_path):
    c = TrainConfig(model="resnet34_unet", preprocess=True, milestones=(3, 7), profile="quick")
    (tmp_path / "config.json").write_text(json.dumps(c.to_dict()), encoding="utf-8")
    assert TrainConfig.load(tmp_path / "config.json") == c


def test_a_config_saved_before_the_subset_setting_keeps_the_first_images():
    """Runs saved before ``subset`` existed trained on the first images of each split: resumed
    or tested again, they go on with those, and Table 1 says so beside spread runs."""
    saved = TrainConfig(max_train_samples=300).to_dict()
    del saved["subset"]
    assert TrainConfig.from_dict(saved).subset == "first"
    assert TrainConfig().subset == "spread"


def test_unknown_field_in_json_is_refused():
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"model": "unet", "learning_rate": 1})


def test_auto_profile_is_quick_without_cuda_and_says_so(monkeypatch):
    from lab2.ops.notices import ProfileWarning
    monkeypatch.delenv("LAB2_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(ProfileWarning, match="NO GPU"):
        assert resolve_profile() == "quick"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_profile("auto") == "full"


def test_profile_env_and_overrides(monkeypatch):
    monkeypatch.setenv("LAB2_PROFILE", "smoke")
    c = profile_config(resolve_profile(), model="resnet34_unet", epochs=3, lr=None)
    assert c.profile == "smoke" and c.epochs == 3 and c.image_size == 64 and c.lr == 1e-3
    assert profile_config("full") == TrainConfig()
    monkeypatch.setenv("LAB2_PROFILE", "huge")
    with pytest.raises(ValueError, match="LAB2_PROFILE"):
        resolve_profile()
    with pytest.raises(ValueError, match="resolve it with lab2.ops.machine.resolve_profile"):
        profile_config("auto")


def test_every_profile_gives_every_network_a_size_it_takes():
    from lab2.models import model_for
    for profile in ("full", "quick", "smoke"):
        for model in MODELS:
            config = profile_config(profile, model=model)
            assert (config.profile, config.model) == (profile, model)
            with torch.device("meta"):      # shapes only: no memory, no arithmetic
                network = model_for(config)
                logits = network(torch.empty(1, 3, config.image_size, config.image_size))
            assert tuple(logits.shape) == (1, 2, config.image_size, config.image_size)


def test_config_choices_match_the_registries():
    # TrainConfig's Literal annotations are the CLI's choices; they must name what exists
    from lab2.config import field_choices
    from lab2.data.masks import BORDER_MODES
    assert field_choices("model") == tuple(MODELS)
    assert field_choices("border") == BORDER_MODES
    from lab2.models.blocks import DROPOUT_KINDS
    assert set(field_choices("dropout_kind")) == set(DROPOUT_KINDS)
    assert set(field_choices("profile")) == set(PROFILES)


def test_lr_schedule_is_multistep_stepped_per_epoch():
    config = TrainConfig(lr=1e-2, milestones=(2, 4), gamma=0.5)
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    seen = []
    for _ in range(6):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([lr_at_epoch(config, e) for e in range(6)])
    assert seen == pytest.approx([1e-2, 1e-2, 5e-3, 5e-3, 2.5e-3, 2.5e-3])


@pytest.mark.parametrize("name,kind", [("adam", torch.optim.Adam), ("sgd", torch.optim.SGD),
                                       ("adamw", torch.optim.AdamW)])
def test_optimisers_get_the_configured_hyperparameters(name, kind):
    optimizer = build_optimizer(torch.nn.Linear(2, 2), TrainConfig(optimizer=name))
    assert isinstance(optimizer, kind)
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4
    if name == "sgd":
        assert optimizer.param_groups[0]["momentum"] == 0.9
