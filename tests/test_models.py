"""UNet and ResNet34-UNet: shapes, structure point by point against the report's description
(docs/report.md), parameter counts worked out from it, weights, numerics."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.models import resnet34

from lab2.models import DEFAULT_DROPOUT, MODELS, ResNet34UNet, UNet, build_model
from lab2.models.resnet34_unet import ResidualBlock
from lab2.ops.checkpoint import read_resnet34_weights

pytestmark = pytest.mark.core

def count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.fixture(scope="module")
def full():
    """Each network at the report's width; LeViT-UNet built for the 64×64 inputs of these tests
    (its attention biases are learned for one grid)."""
    torch.manual_seed(0)
    return {name: build_model(name, **({"image_size": 64} if name == "levit_unet" else {}))
            for name in MODELS}


#: Input sizes each network takes (LeViT-UNet: the one it was built for).
SIZES = [(name, size) for name in MODELS
         for size in ([(64, 64)] if name == "levit_unet" else [(64, 64), (96, 128)])]


@pytest.mark.parametrize("name,size", SIZES)
def test_output_has_n_classes_and_the_input_size(full, name, size):
    x = torch.randn(2, 3, *size)
    assert full[name](x).shape == (2, 2, *size)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_output_shape_at_the_reports_512(full, name):
    model = build_model(name, image_size=512) if name == "levit_unet" else full[name]
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 512, 512)).shape == (1, 2, 512, 512)


def test_n_classes_sets_the_output_channels():
    model = build_model("unet", n_classes=5, base_channels=4)
    assert model(torch.randn(1, 3, 32, 32)).shape[1] == 5


@pytest.mark.parametrize("name,bad,nearest", [("unet", (100, 130), "96x128"),
                                              ("resnet34_unet", (100, 130), "96x128"),
                                              ("resnet34_unet", (48, 64), "64x64")])
def test_invalid_input_size_names_the_nearest_valid_size(full, name, bad, nearest):
    with pytest.raises(ValueError, match=nearest):
        full[name](torch.randn(1, 3, *bad))


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unet, resnet34_unet, levit_unet"):
        build_model("segformer")


# ---- LeViT-UNet (the report's future work) ----------------------------------------------------

def test_the_levit_encoder_has_the_authors_parameter_count_at_their_settings():
    """The authors' LeViT-UNet-128s (github.com/apple1986/LeViT-UNet), built with timm 0.6.13 at
    224 px, 1 input channel and 2 classes, has 15,895,636 parameters, 7,005,234 of them in its
    encoder (cnn_b1 to cnn_b4, block_1 to block_3): counted once outside lab2 (the docstring of
    lab2/models/levit_unet.py). lab2's encoder is theirs; its decoder is lab2's own."""
    from lab2.models.levit_unet import LeViTEncoder
    encoder = LeViTEncoder(in_channels=1, image_size=224)
    assert sum(p.numel() for p in encoder.parameters()) == 7_005_234


def test_levit_unet_at_the_profiles_sizes_and_widths():
    for size, width in ((512, 64), (128, 16), (64, 8)):
        with torch.device("meta"):
            model = build_model("levit_unet", image_size=size, base_channels=width).eval()
            assert model(torch.empty(1, 3, size, size)).shape == (1, 2, size, size)
        assert model.encoder.out_channels[3:] == [2 * width, 4 * width, 6 * width]


def test_levit_unet_refuses_a_size_its_attention_grid_cannot_take_naming_the_nearest():
    with pytest.raises(ValueError, match="multiple of 64.*the nearest is 128"):
        build_model("levit_unet", image_size=120)
    model = build_model("levit_unet", image_size=64, base_channels=8)
    with pytest.raises(ValueError, match="built for 64x64 inputs"):
        model(torch.randn(1, 3, 128, 128))


def test_the_attention_bias_is_shared_by_pairs_at_the_same_offset():
    from lab2.models.levit_unet import grid, offset_index
    index, offsets = offset_index(grid(3), grid(3))
    assert offsets == 9 and index.shape == (9, 9)       # |dy|, |dx| in 0..2 each
    assert index[0, 4] == index[4, 8] == index[8, 4]    # (1, 1) apart, both ways
    assert index[0, 0] == index[5, 5] != index[0, 1]


def double_conv(c_in: int, c_out: int) -> int:
    """Parameters of the report's double convolution: two bias-free 3×3 convs, two BatchNorms."""
    return 9 * c_in * c_out + 9 * c_out * c_out + 2 * 2 * c_out


def basic_block(c_in: int, c_out: int) -> int:
    """A ResNet basic block, with a 1×1 projection (and its BatchNorm) when the width changes."""
    projection = c_in * c_out + 2 * c_out if c_in != c_out else 0
    return 9 * c_in * c_out + 9 * c_out * c_out + 2 * 2 * c_out + projection


def unet_decoder(channels: list[int]) -> int:
    """Per stage, deepest first: a 2×2 transposed conv with bias, then a double conv of the
    concatenation (skip + upsampled)."""
    return sum(4 * channels[i + 1] * channels[i] + channels[i] + double_conv(2 * channels[i],
                                                                              channels[i])
               for i in range(len(channels) - 1))


def test_parameter_counts_follow_from_the_reports_specification(full):
    """Counted from the report's description (docs/report.md), not from lab2's code."""
    widths = [64, 128, 256, 512, 1024]
    encoder = sum(double_conv(c_in, c_out)
                  for c_in, c_out in zip([3, *widths[:-1]], widths, strict=True))
    unet = encoder + unet_decoder(widths) + 9 * 64 * 2 + 2            # head: 3×3 conv, bias
    stem_to_layer4 = sum(p.numel() for n, p in resnet34(weights=None).named_parameters()
                         if not n.startswith("fc."))                   # torchvision's own
    layer5 = basic_block(512, 1024) + 2 * basic_block(1024, 1024)
    resnet34_unet = stem_to_layer4 + layer5 + unet_decoder(widths) + 64 * 2 + 2   # head: 1×1
    assert sum(p.numel() for p in full["unet"].parameters()) == unet == 31_038_722
    assert sum(p.numel() for p in full["resnet34_unet"].parameters()) == resnet34_unet


# ---- UNet structure -----------------------------------------------------------------------------

def test_unet_has_four_pools_four_up_convs_and_a_dropout_in_every_block(full):
    unet = full["unet"]
    assert count(unet, nn.MaxPool2d) == 4
    ups = [m for m in unet.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(ups) == 4 and all(m.kernel_size == (2, 2) and m.stride == (2, 2) for m in ups)
    assert [(m.in_channels, m.out_channels) for m in ups] == [(1024, 512), (512, 256),
                                                               (256, 128), (128, 64)]
    # 9 double-conv blocks + 4 up-convs each end with dropout
    assert count(unet, nn.Dropout) == 13
    assert all(m.p == DEFAULT_DROPOUT for m in unet.modules() if isinstance(m, nn.Dropout))


def test_unet_stage_widths_and_block_layout(full):
    unet = full["unet"]
    assert unet.encoder.out_channels == (64, 128, 256, 512, 1024)
    block = unet.encoder.stages[0]
    kinds = [type(m) for m in block]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d, nn.ReLU,
                     nn.Dropout]
    convs = [m for m in unet.modules() if isinstance(m, nn.Conv2d) and m is not unet.head]
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) and c.padding == (1, 1)
               for c in convs)
    assert unet.head.kernel_size == (3, 3) and unet.head.padding == (1, 1)
    features = unet.encoder(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in features] == [64, 32, 16, 8, 4]


def test_unet_base_channels_scales_every_width():
    small = UNet(base_channels=8)
    assert small.encoder.out_channels == (8, 16, 32, 64, 128)
    assert small(torch.randn(1, 3, 32, 32)).shape == (1, 2, 32, 32)


# ---- ResNet34-UNet structure --------------------------------------------------------------------

def test_resnet34_unet_has_no_max_pool_and_the_reports_stem(full):
    model = full["resnet34_unet"]
    assert count(model, nn.MaxPool2d) == 0
    stem = model.encoder.conv1
    assert (stem.in_channels, stem.out_channels) == (3, 64)
    assert stem.kernel_size == (7, 7) and stem.stride == (2, 2) and stem.padding == (3, 3)


def test_resnet34_unet_layers_blocks_widths_and_strides(full):
    encoder = full["resnet34_unet"].encoder
    assert [len(layer) for layer in encoder.layers] == [3, 4, 6, 3, 3]
    assert encoder.out_channels == (64, 128, 256, 512, 1024)
    for i, layer in enumerate(encoder.layers, start=1):
        assert all(isinstance(b, ResidualBlock) for b in layer)
        assert layer[0].conv1.stride == ((1, 1) if i == 1 else (2, 2))
        assert all(b.conv1.stride == (1, 1) for b in layer[1:])
        # 1x1 conv + BN shortcut only where the shape changes: first block of layers 2-5
        has_shortcut = [b.downsample is not None for b in layer]
        assert has_shortcut == [i > 1] + [False] * (len(layer) - 1)
        if i > 1:
            assert layer[0].downsample[0].kernel_size == (1, 1)
            assert isinstance(layer[0].downsample[1], nn.BatchNorm2d)
    features = encoder(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in features] == [32, 16, 8, 4, 2]


def test_resnet34_unet_dropout_in_every_block_and_decoder_stage(full):
    model = full["resnet34_unet"]
    assert count(model, ResidualBlock) == 19
    assert count(model, nn.Dropout) == 19 + 4 * 2  # residual blocks + (up-conv, double conv) × 4
    assert count(model, nn.ConvTranspose2d) == 4
    assert model.head.kernel_size == (1, 1)


def test_residual_block_adds_the_shortcut_before_the_last_relu():
    torch.manual_seed(0)
    block = ResidualBlock(4, 4, dropout=0.0).eval()
    with torch.no_grad():
        for m in (block.conv2,):
            m.weight.zero_()  # residual branch contributes bn2(0) = bn2.bias = 0
        x = torch.randn(1, 4, 8, 8)
        assert torch.allclose(block(x), torch.relu(x))


def test_encoder_stem_and_layers_1_to_4_load_into_torchvision_resnet34(full):
    ours = full["resnet34_unet"].encoder.state_dict()
    reference = resnet34(weights=None)
    subset = {k: v for k, v in ours.items() if not k.startswith("layer5.")}
    expected = {k for k in reference.state_dict() if not k.startswith("fc.")}
    assert set(subset) == expected
    missing, unexpected = reference.load_state_dict(subset, strict=False)
    assert unexpected == [] and sorted(missing) == ["fc.bias", "fc.weight"]


def test_encoder_weights_load_from_a_local_file(tmp_path):
    torch.manual_seed(1)
    reference = resnet34(weights=None)
    path = tmp_path / "resnet34.pth"
    torch.save(reference.state_dict(), path)
    model = ResNet34UNet(encoder_weights=read_resnet34_weights(path))
    assert torch.equal(model.encoder.layer3[2].conv2.weight, reference.layer3[2].conv2.weight)
    assert torch.equal(model.encoder.bn1.running_mean, reference.bn1.running_mean)


def test_a_damaged_encoder_weights_file_is_one_message_naming_it(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(resnet34(weights=None).state_dict(), path)
    path.write_bytes(path.read_bytes()[:100_000])          # a download that did not finish
    with pytest.raises(ValueError, match=r"resnet34.pth is not readable as ResNet-34 weights: "
                                         r"it is cut short or damaged") as caught:
        read_resnet34_weights(path)
    assert "\n" not in str(caught.value)


def test_missing_imagenet_weights_fail_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="lab2 does not download weights"):
        read_resnet34_weights("imagenet")
    with pytest.raises(ValueError, match="not a torchvision ResNet-34 state dict"):
        ResNet34UNet(encoder_weights={"conv1.weight": torch.zeros(1)})


# ---- numerics -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(MODELS))
def test_backward_reaches_every_parameter(full, name):
    # LeViT-UNet at 128 px: at 64 its last grid is one position, whose attention bias (a softmax
    # over one key) has no gradient; its residual branches start at 0 (the BatchNorms' weight)
    size = 128 if name == "levit_unet" else 64
    model = (build_model(name, image_size=size) if name == "levit_unet"
             else copy.deepcopy(full[name])).train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            nn.init.ones_(module.weight)
    model.zero_grad()
    model(torch.randn(2, 3, size, size)).logsumexp(1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert missing == []


@pytest.mark.parametrize("name", list(MODELS))
def test_dropout_and_batch_statistics_act_in_training_only(full, name):
    """Training draws new dropout masks and normalises by the batch; evaluation does neither:
    the same image gives the same logits, alone or in a batch."""
    model = full[name]
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x[:1]), model(x[:1]))
        model.eval()
        alone, batched = model(x[:1]), model(x)
    assert torch.equal(alone, model(x[:1]).detach())
    assert torch.allclose(alone, batched[:1], atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_channels_last_and_bf16_autocast_work_unchanged(full, name):
    model = full[name].eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        out_cl = model_cl(x.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf16 = model_cl(x.to(memory_format=torch.channels_last))
    model.to(memory_format=torch.contiguous_format)
    assert torch.allclose(out_cl, reference, atol=1e-4, rtol=1e-4)
    assert out_bf16.shape == reference.shape and torch.isfinite(out_bf16).all()
    agree = (out_bf16.argmax(1) == reference.argmax(1)).float().mean()
    assert agree > 0.9


def test_dropout_kind_element_is_the_reports_and_channel_the_cpu_profiles():
    from torch import nn

    from lab2.config import TrainConfig, profile_config
    from lab2.models import model_for

    def kinds(model):
        return {type(m) for m in model.modules() if isinstance(m, (nn.Dropout, nn.Dropout2d))}
    full = profile_config("full", model="unet")
    assert full.dropout_kind == "element"
    assert kinds(model_for(full.replace(base_channels=4))) == {nn.Dropout}
    for model in ("unet", "resnet34_unet"):
        quick = profile_config("quick", model=model).replace(base_channels=4)
        assert quick.dropout_kind == "channel" and kinds(model_for(quick)) == {nn.Dropout2d}
    # a checkpoint saved before the field existed was trained with Dropout2d
    old = {k: v for k, v in TrainConfig().to_dict().items() if k != "dropout_kind"}
    assert TrainConfig.from_dict(old).dropout_kind == "channel"


def test_the_architecture_figures_read_every_stage_from_the_modules():
    from lab2.models import build_model
    from lab2.report.architecture import architecture_stages
    unet = architecture_stages("unet")
    assert [(s["channels"], s["height"]) for s in unet if s["part"] == "encoder"] == \
        [(64, 512), (128, 256), (256, 128), (512, 64), (1024, 32)]
    assert unet[-1]["name"] == "head" and (unet[-1]["channels"], unet[-1]["height"]) == (2, 512)
    resnet = architecture_stages("resnet34_unet")
    assert resnet[0]["label"].startswith("stem") and resnet[0]["height"] == 256
    assert [s["channels"] for s in resnet if s["name"].startswith("encoder.layer")] == \
        [64, 128, 256, 512, 1024]
    assert resnet[-1]["name"] == "output" and resnet[-1]["height"] == 512   # bilinear back up
    for name, stages in (("unet", unet), ("resnet34_unet", resnet)):
        total = sum(p.numel() for p in build_model(name).parameters())
        assert sum(s["parameters"] for s in stages) == total
    # a narrower network gives another figure: the stages follow the module
    assert architecture_stages("unet", 256, base_channels=8)[4]["channels"] == 128
