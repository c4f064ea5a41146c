"""bbc1k.nets: the networks are module-level classes with their own names,
and the two mirror averages do different things."""
from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from bbc1k import nets

CLASSES = ["ResNet9", "UNet", "Residual", "Scale", "FlipAverage", "MaskFlipAverage", "BoxFromMask",
           "NamedByClassifier", "OneObject"]


@pytest.mark.parametrize("name", CLASSES)
def test_each_network_is_a_module_level_class(name: str) -> None:
    cls = getattr(nets, name)
    assert inspect.isclass(cls) and issubclass(cls, nn.Module)
    assert cls.__module__ == "bbc1k.nets" and cls.__qualname__ == name  # not defined inside a function


def test_resnet9_gives_class_logits_and_unet_mask_logits() -> None:
    torch.manual_seed(0)
    assert nets.ResNet9(3, width=4)(torch.rand(2, 3, 24, 32)).shape == (2, 3)
    assert nets.UNet(4, width=4)(torch.rand(2, 3, 16, 24)).shape == (2, 4, 16, 24)


def test_resnet9_class_map_is_the_logits_on_a_one_cell_map_and_locates_a_class() -> None:
    torch.manual_seed(0)
    net = nets.ResNet9(3, width=8).eval()
    with torch.no_grad():
        one_cell = torch.randn(2, 3, 16, 16)  # four 2x poolings: a 1 x 1 map
        assert torch.allclose(net.class_map(one_cell)[:, :, 0, 0], net(one_cell), atol=1e-5)
        x = torch.randn(2, 3, 64, 96)
        cells = net.class_map(x)
        assert cells.shape == (2, 3, 4, 6)
        # each cell's scores are the network's logits for the features of that cell alone
        body, ending = nn.Sequential(*list(net)[:-4]), nn.Sequential(*list(net)[-4:])
        assert torch.allclose(cells[:, :, 1, 2], ending(body(x)[:, :, 1:2, 2:3]), atol=1e-5)


def test_unet_with_an_image_head_gives_every_object_pixel_the_picture_s_class() -> None:
    torch.manual_seed(0)
    net = nets.UNet(4, width=4, image_head=True)
    logits = net(torch.rand(2, 3, 16, 24))
    assert logits.shape == (2, 4, 16, 24)
    # The object classes' logits differ by the same amounts at every pixel: the head's.
    named = logits[:, 1:].log_softmax(1)
    assert torch.allclose(named, named[..., :1, :1].expand_as(named), atol=1e-5)
    assert (logits[:, 1:].argmax(1) == logits[:, 1:, :1, :1].argmax(1)).all()  # one object class per picture
    # Training: photos with a class label only are encoded, not decoded.
    net.eval()
    x = torch.rand(3, 3, 16, 24)
    masks, named_all = net(x, masked=1)
    assert masks.shape == (1, 4, 16, 24) and named_all.shape == (3, 3)
    assert torch.allclose(masks, net(x[:1]), atol=1e-5)
    # A class label reaches the head: its loss moves the head's weights.
    torch.nn.functional.cross_entropy(named[:, :, 0, 0], torch.tensor([0, 2]), reduction="sum").backward()
    assert net.head[-2].weight.grad.abs().sum() > 0


def test_unet_with_a_half_resolution_decoder_still_gives_full_size_masks() -> None:
    torch.manual_seed(0)
    full, half = nets.UNet(4, width=4), nets.UNet(4, width=4, half_res=True)
    x = torch.rand(2, 3, 16, 24)
    assert half(x).shape == full(x).shape == (2, 4, 16, 24)
    assert len(half.up) == len(full.up) - 1
    assert sum(p.numel() for p in half.parameters()) < sum(p.numel() for p in full.parameters())
    # With the image head, photos are still only encoded, and the masks are full size.
    headed = nets.UNet(4, width=4, image_head=True, half_res=True).eval()
    masks, named = headed(torch.rand(3, 3, 16, 24), masked=2)
    assert masks.shape == (2, 4, 16, 24) and named.shape == (3, 3)


class Columns(nn.Module):
    """Mask 'logits' that are the input's first channel: what a pixel sees, where it is."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]


def test_mask_flip_average_mirrors_back_and_flip_average_does_not() -> None:
    x = torch.zeros(1, 3, 2, 4)
    x[..., 0] = 1.0  # the left column is lit
    # the mask average lines the mirror's pixels up again: an unchanged map
    assert torch.equal(nets.MaskFlipAverage(Columns())(x), x[:, :1])
    # the class-logit average does not: it mixes the picture with its mirror
    assert torch.equal(nets.FlipAverage(Columns())(x)[0, 0, 0], torch.tensor([0.5, 0.0, 0.0, 0.5]))


class Says(nn.Module):
    """A 'classifier' that gives every picture the same logits, and notes the input size it saw."""

    def __init__(self, logits: list[float]):
        super().__init__()
        self.logits, self.seen = torch.tensor(logits), []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape[-2:]))
        return self.logits.expand(len(x), -1)


def test_pool_first_resnet9_pools_before_batchnorm() -> None:
    # Pooling straight after the convolution: BatchNorm and ReLU see a quarter of the pixels.
    stem = nets.ResNet9(3, width=4)[0]
    assert [type(m) for m in stem] == [nn.Conv2d, nn.MaxPool2d, nn.BatchNorm2d, nn.ReLU]
    assert [type(m) for m in nets.conv_bn(4, 4)] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]


def test_a_classifier_names_the_object_pixels_and_the_segmenter_says_where() -> None:
    torch.manual_seed(0)
    unet = nets.UNet(4, width=4, image_head=True).eval()
    masks = nets.MaskFlipAverage(unet)
    x = torch.rand(2, 3, 16, 24)
    # The classifier's classes in its own order (ball, brick, cylinder), the mask's are (brick, ball, cylinder):
    # it says cylinder, every object pixel is cylinder (3); background stays where the segmenter put it.
    says = Says([0.0, -2.0, 5.0])
    named = nets.NamedByClassifier(masks, says, order=[1, 0, 2], size=(12, 16)).eval()
    with torch.no_grad():
        out, own = named(x), masks(x)
    assert out.shape == own.shape == (2, 4, 16, 24)
    assert says.seen == [(12, 16)]  # the picture resized to the classifier's input, once
    assert set(out.argmax(1).unique().tolist()) <= {0, 3}
    assert torch.allclose(out[:, 0], own[:, 0])  # the background logit is the segmenter's own
    # brick (classifier's -2), ball (0), cylinder (5): the object logits differ by the classifier's
    assert torch.allclose(out[:, 2] - out[:, 1], torch.full_like(out[:, 1], 2.0), atol=1e-5)
    assert torch.allclose(out[:, 3] - out[:, 1], torch.full_like(out[:, 1], 7.0), atol=1e-5)
    # Its top class carries the segmenter's own object logit: the mask reaches as far, however sure it is.
    with torch.no_grad():
        alone = masks(x, picture=torch.zeros(2, 3))[:, 1]
        unsure = nets.NamedByClassifier(masks, Says([0.0, 0.0, 0.1]), order=[1, 0, 2], size=(12, 16)).eval()(x)
    assert torch.allclose(out[:, 3], alone, atol=1e-5)
    assert torch.equal(unsure.argmax(1) > 0, out.argmax(1) > 0) and (out.argmax(1) > 0).any()
    # It says ball: the same pixels are now ball (2).
    ball = nets.NamedByClassifier(masks, Says([5.0, -2.0, 0.0]), order=[1, 0, 2], size=(16, 24)).eval()
    with torch.no_grad():
        assert torch.equal(ball(x).argmax(1) == 2, out.argmax(1) == 3)
