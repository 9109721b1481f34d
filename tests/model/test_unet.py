"""UNet2D: any input size, feature levels and their shapes, config round trip, head replacement."""

from __future__ import annotations

import pytest
import torch

from salign_cli.model.unet import UNet2D, UNetConfig, feature_levels


def small_unet(**overrides) -> UNet2D:
    torch.manual_seed(0)
    return UNet2D(UNetConfig(**{"width": 4, "depth": 4, **overrides}))


@pytest.mark.parametrize(("height", "width"), [(37, 45), (16, 16), (5, 3), (64, 33)])
@pytest.mark.parametrize("depth", [2, 4])
def test_logits_keep_any_input_size(height: int, width: int, depth: int) -> None:
    net = small_unet(depth=depth, num_classes=3)
    logits = net(torch.randn(2, 1, height, width))
    assert logits.shape == (2, 3, height, width)
    assert torch.isfinite(logits).all()


def test_feature_maps_have_the_scale_and_channels_of_their_level() -> None:
    # width 4, depth 4: stage channels 4, 8, 16, 32, 64; maps are ceil(size / 2**s).
    net = small_unet()
    features = net.features(torch.randn(2, 1, 37, 45))
    expected = {
        "bottleneck": (64, 3, 3),
        "1/8": (32, 5, 6),
        "1/4": (16, 10, 12),
        "1/2": (8, 19, 23),
        "full": (4, 37, 45),
    }
    assert net.feature_levels == tuple(expected)
    for level, (channels, h, w) in expected.items():
        assert net.feature_map(features, level).shape == (2, channels, h, w), level
        assert net.feature_channels(level) == channels
    assert [m.shape[-1] for m in features.decoder] == [6, 12, 23, 45]  # coarsest → finest
    assert features.logits is not None and features.logits.shape == (2, 2, 37, 45)


def test_channels_are_capped_at_max_channels() -> None:
    config = UNetConfig(width=32, depth=5)
    assert [config.stage_channels(level) for level in range(6)] == [32, 64, 128, 256, 320, 320]


def test_feature_levels_follow_depth() -> None:
    assert feature_levels(4) == ("bottleneck", "1/8", "1/4", "1/2", "full")
    assert feature_levels(2) == ("bottleneck", "1/2", "full")


def test_unknown_level_names_the_valid_ones() -> None:
    net = small_unet(depth=2)
    features = net.features(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"'1/8'.*depth 2.*\['bottleneck', '1/2', 'full'\]"):
        net.feature_map(features, "1/8")
    with pytest.raises(ValueError, match="valid"):
        net.feature_channels("quarter")


def test_stopping_early_gives_the_same_maps_without_the_head() -> None:
    net = small_unet().eval()
    x = torch.randn(2, 1, 40, 24)
    with torch.no_grad():
        full = net.features(x)
        partial = net.features(x, up_to="1/4")
    assert partial.logits is None
    assert len(partial.decoder) == 2
    torch.testing.assert_close(partial.decoder[-1], net.feature_map(full, "1/4"))
    torch.testing.assert_close(partial.bottleneck, full.bottleneck)
    with pytest.raises(ValueError, match="not computed"):
        net.feature_map(partial, "1/2")


def test_instance_norm_trains_with_batch_one_on_a_tiny_input() -> None:
    net = small_unet(norm="instance").train()
    logits = net(torch.randn(1, 1, 9, 11))
    logits.mean().backward()
    assert logits.shape == (1, 2, 9, 11)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_batch_norm_trains_with_batch_one() -> None:
    # The bottleneck is padded to >= 2×2, so batch-norm statistics never see a single value.
    net = small_unet(norm="batch").train()
    assert net(torch.randn(1, 1, 16, 16)).shape == (1, 2, 16, 16)


def test_channels_last_gives_the_same_logits() -> None:
    net = small_unet().eval()
    x = torch.randn(2, 1, 37, 45)
    with torch.no_grad():
        reference = net(x)
        net_cl = net.to(memory_format=torch.channels_last)
        result = net_cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(result, reference, rtol=1e-4, atol=1e-5)


def test_replace_head_reinitialises_only_the_head() -> None:
    net = small_unet()
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    net.replace_head(5)
    assert net.config.num_classes == 5
    assert net(torch.randn(1, 1, 20, 20)).shape == (1, 5, 20, 20)
    for name, parameter in net.named_parameters():
        if name.startswith("head."):
            assert parameter.shape[0] == 5
        else:
            assert torch.equal(parameter, before[name]), name


def test_config_round_trips_and_rejects_bad_values() -> None:
    config = UNetConfig(in_channels=2, num_classes=4, width=16, depth=3, norm="instance")
    assert UNetConfig.from_dict(config.to_dict()) == config
    assert UNetConfig.from_dict({}) == UNetConfig()
    with pytest.raises(ValueError, match="norm"):
        UNetConfig(norm="group")
    with pytest.raises(ValueError, match="depth"):
        UNetConfig(depth=0)
    with pytest.raises(ValueError, match="num_classes"):
        UNetConfig(num_classes=1)
    with pytest.raises(ValueError, match="width"):
        UNetConfig.from_dict({"width": 8.0})
    with pytest.raises(ValueError, match="unknown UNetConfig key"):
        UNetConfig.from_dict({"widht": 8})


def test_width_and_depth_change_the_parameter_count_as_expected() -> None:
    # The first conv (1 → width, 3×3, no bias) holds 9·width weights, whatever the depth.
    for width in (4, 8):
        net = UNet2D(UNetConfig(width=width, depth=3))
        assert net.encoder[0][0][0].weight.numel() == 9 * width
        assert len(net.encoder) == 4 and len(net.decoder) == 3
    # One down-sampling halves the resolution: 20 → 10.
    shallow = UNet2D(UNetConfig(width=4, depth=1))
    assert shallow.features(torch.randn(2, 1, 20, 20)).bottleneck.shape == (2, 8, 10, 10)


def test_wrong_input_channels_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        small_unet()(torch.randn(1, 3, 16, 16))


def test_inference_padding_is_the_training_canvas_value() -> None:
    # A 37 x 45 input is padded to 48 x 48 inside the U-Net; padding it ourselves with the value
    # training canvases hold outside a scan must give the same logits, so inference shows the
    # network nothing it did not see in training.
    import torch.nn.functional as F

    from salign_cli.data.preprocess import OUTSIDE_SCAN

    net = small_unet(depth=4).eval()
    x = torch.randn(2, 1, 37, 45) + 3.0  # far from OUTSIDE_SCAN, so a wrong pad would show
    padded = F.pad(x, (0, 48 - 45, 0, 48 - 37), value=OUTSIDE_SCAN)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(padded)[..., :37, :45])


def test_expanding_input_channels_keeps_the_function_of_the_middle_slice() -> None:
    net = small_unet().eval()
    x = torch.randn(3, 1, 20, 24)
    with torch.no_grad():
        before = net(x)
        net.expand_input_channels(5)
        neighbours = torch.randn(3, 5, 20, 24)
        neighbours[:, 2:3] = x  # channel 2 is the slice itself
        torch.testing.assert_close(net(neighbours), before)
    assert net.config.in_channels == 5
    with pytest.raises(ValueError, match="odd"):
        net.expand_input_channels(4)
