"""The from-scratch networks, and the wrappers that go into their exported graphs.

- :class:`ResNet9`: the classifier (Page's "How to train your ResNet", at a
  modest width);
- :class:`UNet`: the segmenter, small enough to learn masks from random
  weights in CPU minutes, with an optional head that names the picture's class;
- :class:`FlipAverage` / :class:`MaskFlipAverage`: test-time augmentation
  (the mean of the image and its mirror) inside the graph, so the exported
  ONNX gives what validation measured;
- :class:`NamedByClassifier`: a segmenter whose mask a classifier names;
- :class:`BoxFromMask`: a detector made of a segmenter;
- :class:`SplitBoxLogits`: a lesson's multitask head as two named outputs.

Training code only: this module imports torch.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    """3x3 convolution (no bias: BatchNorm follows), a 2x2 max-pool when
    ``pool``, BatchNorm, ReLU. Pooling straight after the convolution (as
    airbench does) leaves BatchNorm and ReLU a quarter of the pixels: a
    ResNet-9 training step on a 2-core CPU takes a fifth less time."""
    pooling = [nn.MaxPool2d(2)] if pool else []
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), *pooling,
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Scale(nn.Module):
    """Multiply by a constant. Max-pooled features are large and all
    positive: scaled-down logits start near uniform, and training stays stable."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class Residual(nn.Module):
    """``x + body(x)``, the body two :func:`conv_bn` blocks at ``c`` channels."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(c, c), conv_bn(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet9(nn.Sequential):
    """ResNet-9 (Page, 2018) at ``width`` channels in the stem: four stages
    doubling the width, residual blocks after the first and the third.

    A Sequential, so its layers (and their random initialisation) come in
    exactly the order written here."""

    def __init__(self, n_classes: int, width: int = 16):
        w = width
        super().__init__(
            conv_bn(3, w, pool=True),                            # stride 2 early: cheap at full resolution
            # (wider, 24 whitened filters of 3x3 or 2x2 patches, folds 0-1 of bench.recipe_cv at 240 s:
            # 90.8%, 91.7% and 90.0%, 92.5%; 16 of 3x3: 93.3%, and 94.2% or 91.7% over two sessions)
            conv_bn(w, 2 * w, pool=True), Residual(2 * w),
            conv_bn(2 * w, 4 * w, pool=True),
            conv_bn(4 * w, 8 * w, pool=True), Residual(8 * w),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),
            nn.Linear(8 * w, n_classes, bias=False), Scale(0.125),
        )

    def class_map(self, x: torch.Tensor) -> torch.Tensor:
        """Each class's score at each cell of the last feature map (N x classes x h x w): the
        final linear layer on each cell's features instead of on their channel-wise maximum,
        which says where the picture shows a class (on a 1 x 1 map, the logits themselves)."""
        features = x
        for layer in list(self)[:-4]:  # up to the global pooling, flattening, linear layer and scale
            features = layer(features)
        return torch.einsum("nchw,kc->nkhw", features, self[-2].weight) * self[-1].factor


WHITEN_IMAGES = 256
"""How many training images :func:`whiten_first_conv` reads patches from (enough for a stable covariance)."""


def whiten_first_conv(conv: nn.Conv2d, x: torch.Tensor, seed: int = 0, eps: float = 5e-4,
                      n_patches: int = 20000) -> None:
    """Start a network's first convolution ``conv`` as a whitening of the patches of
    images ``x`` (normalised, N x 3 x H x W), and freeze it, as Keller
    Jordan's airbench does: half its filters are the top eigenvectors of the
    patches' covariance, each divided by the square root of its eigenvalue,
    the other half their negatives (so the ReLU passes both signs). The
    network then starts from decorrelated inputs instead of random ones."""
    k = conv.kernel_size[0]
    patches = F.unfold(x.float(), k, padding=conv.padding[0]).transpose(1, 2).reshape(-1, 3 * k * k)
    pick = torch.randperm(len(patches), generator=torch.Generator().manual_seed(seed))[:n_patches]
    p = patches[pick].double().cpu()
    p = p - p.mean(0)
    eigval, eigvec = torch.linalg.eigh(p.T @ p / len(p))  # ascending
    half = min(conv.out_channels // 2, p.shape[1])
    filters = (eigvec.flip(1)[:, :half] / torch.sqrt(eigval.flip(0)[:half].clamp(min=0) + eps)).T
    with torch.no_grad():
        conv.weight[:2 * half].copy_(torch.cat([filters, -filters]).reshape(2 * half, 3, k, k))
    conv.weight.requires_grad_(False)


class UNet(nn.Module):
    """A small U-Net: three stages down (convolutions, max-pooling), three up
    (bilinear upsampling, the skip connection of the same scale, a convolution).
    Input height and width must be multiples of 8.

    With ``image_head``, the picture's one object is found and named apart
    (a bbc1k picture holds one object): the decoder's two channels say
    background or object, and a head on the deepest features (a stage down
    with a residual block, max-pooled, linear: :class:`ResNet9`'s ending)
    names the picture's class. The output is still one logit per class:
    each object class's logit is the object logit plus the head's
    log-probability of that class. So the mask's object pixels all carry the
    picture's class, and a photo's class label trains the head directly.

    With ``half_res``, the decoder stops one stage early, at half the input's
    resolution, and its logits are upsampled (bilinear): the full-resolution
    stage works on the largest tensors (the segmenter's 150 s hold about 1.5
    times as many epochs without it), and an object's outline loses little
    at half resolution."""

    def __init__(self, n_classes: int, width: int = 16, image_head: bool = False, half_res: bool = False):
        super().__init__()
        w = width
        self.down = nn.ModuleList([conv_bn(3, w), conv_bn(w, 2 * w), conv_bn(2 * w, 4 * w)])
        self.middle = nn.Sequential(conv_bn(4 * w, 8 * w), conv_bn(8 * w, 8 * w))
        stages = [conv_bn(12 * w, 4 * w), conv_bn(6 * w, 2 * w), conv_bn(3 * w, w)]
        self.up = nn.ModuleList(stages[:2] if half_res else stages)
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.half_res = half_res
        self.out = nn.Conv2d(2 * w if half_res else w, 2 if image_head else n_classes, 1)
        # One more stage down, with a residual block, before pooling: ResNet9's ending.
        self.head = nn.Sequential(nn.MaxPool2d(2), Residual(8 * w), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                                  nn.Linear(8 * w, n_classes - 1, bias=False), Scale(0.125)) if image_head else None

    def forward(self, x: torch.Tensor, masked: int | None = None,
                picture: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Mask logits of ``x``. With ``masked`` (training with the image
        head), only the first ``masked`` images go through the decoder: the
        rest carry a class label, not a mask, and are only encoded. Returns
        their mask logits and the head's class logits of all of ``x``.
        ``picture``: each picture's log-probabilities of the object classes
        (N x classes - 1) from elsewhere (:class:`NamedByClassifier`), used
        in place of the image head's."""
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        deepest = x = self.middle(x)
        if masked is not None:
            x, skips = x[:masked], [s[:masked] for s in skips]
        for block, skip in zip(self.up, reversed(skips)):  # half_res: the first skip goes unused
            x = block(torch.cat([self.upsample(x), skip], 1))
        logits = self.out(x)
        if self.half_res:
            logits = self.upsample(logits)
        if self.head is None:
            return logits
        named = None
        if picture is None:
            named = self.head(deepest)
            picture = named[:logits.shape[0]].float().log_softmax(1)
        picture = picture.to(logits.dtype)
        fused = torch.cat([logits[:, :1], logits[:, 1:] + picture[:, :, None, None]], 1)
        return fused if masked is None else (fused, named)


class FlipAverage(nn.Module):
    """Class logits averaged over the image and its mirror: test-time
    augmentation inside the graph, so the exported ONNX gives what
    validation measured."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.net(x) + self.net(torch.flip(x, dims=[3]))) / 2


class Ensemble(nn.Module):
    """The mean of several networks' class logits, in one graph: small nets
    trained apart (other initial weights, other batches) err on different
    photos, so together they err less than each alone."""

    def __init__(self, nets: list[nn.Module]):
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(x) for net in self.nets]).mean(0)


class MaskFlipAverage(nn.Module):
    """Mask logits averaged over the image and its mirror; the mirror's
    logits are mirrored back first, so pixels line up."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, **named: torch.Tensor) -> torch.Tensor:
        """``named``: passed on to the network (``picture``: a class that no mirror changes)."""
        return (self.net(x, **named) + torch.flip(self.net(torch.flip(x, dims=[3]), **named), dims=[3])) / 2


class NamedByClassifier(nn.Module):
    """A segmenter with an image head whose object pixels are named by a
    classifier instead of the head: where the object is comes from the
    segmenter, what it is from the classifier (trained on real photos for
    that alone), so the app's classification and mask agree. ``masks``: a
    :class:`MaskFlipAverage` of a :class:`UNet` with ``image_head``;
    ``classifier``: class logits of the same normalised input, its classes
    taken in the segmenter's object-class order ``order`` (indices into the
    classifier's classes); ``size``: the classifier's input (H, W), which
    the picture is resized to.

    The classifier's log-probabilities are shifted so that its top class
    gets 0: the mask then reaches exactly as far as the segmenter's own
    object logit says, however sure the classifier is. Unshifted, an unsure
    verdict (log 0.5 is -0.7) shrank the mask, to nothing on some photos:
    on the 120 held-out photos of three main jobs, 5, 7 and 2 masks were
    empty, 2, 2 and 0 with the shift (main class right 87.5 -> 89.2%,
    87.5 -> 88.3%, 91.7 -> 93.3%)."""

    def __init__(self, masks: nn.Module, classifier: nn.Module, order: list[int], size: tuple[int, int]):
        super().__init__()
        self.masks, self.classifier, self.size = masks, classifier, tuple(size)
        self.register_buffer("order", torch.tensor(order), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Always resized (exact at the same size), so the traced graph holds no test of the input's shape.
        seen = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        logits = self.classifier(seen).float().index_select(1, self.order)
        # its log-probabilities less their largest: the same as the logits less theirs
        picture = logits - logits.amax(1, keepdim=True)
        return self.masks(x, picture=picture)


class OneObject(nn.Module):
    """Mask logits with an object in every picture, as every bbc1k picture
    holds one: where the segmenter's mask would be empty (no pixel's object
    logit above the background's), the object logits are raised until the
    most object-like pixel's are ``margin`` above the background's, so the
    mask is that pixel and those within ``margin`` of it. Masks that hold
    an object are left as they are."""

    def __init__(self, net: nn.Module, margin: float = 1.0):
        super().__init__()
        self.net, self.margin = net, margin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        surest = (logits[:, 1:].amax(1) - logits[:, 0]).amax((1, 2))        # N
        lift = torch.where(surest > 0, torch.zeros_like(surest), self.margin - surest)[:, None, None, None]
        return torch.cat([logits[:, :1], logits[:, 1:] + lift], 1)


def extent(present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last index where ``present`` (N x L, 0/1 floats) is 1, as
    edges scaled to -1..1 (the first pixel's left edge, the last one's right)."""
    n = present.shape[1]
    first = present.argmax(1).float()
    last = (n - 1) - torch.flip(present, dims=[1]).argmax(1).float()
    return 2 * first / n - 1, 2 * (last + 1) / n - 1


def tight_boxes(obj: torch.Tensor) -> torch.Tensor:
    """(x0, y0, x1, y1) in -1..1 of each N x H x W 0/1 mask; the whole
    picture where a mask is empty. Batched torch maths, so it traces into the
    detector's graph (the dataset's pixel boxes come from ``bbc1k.layout.tight_box``)."""
    x0, x1 = extent(obj.amax(1))
    y0, y1 = extent(obj.amax(2))
    box = torch.stack([x0, y0, x1, y1], 1)
    whole = torch.cat([-torch.ones_like(box[:, :2]), torch.ones_like(box[:, 2:])], 1)
    return torch.where(obj.amax((1, 2))[:, None] > 0, box, whole)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of matching rows of two N x 4 (x0, y0, x1, y1) box tensors."""
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    area = lambda t: (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])  # noqa: E731
    inter = iw * ih
    return inter / (area(a) + area(b) - inter)


def main_blob(obj: torch.Tensor, score: torch.Tensor, cell: int = 4) -> torch.Tensor:
    """The pixels of each N x H x W 0/1 mask ``obj`` that belong to the blob
    holding its highest-``score`` pixel: a flood fill from that pixel over
    ``obj`` seen in ``cell`` x ``cell`` cells (so pieces closer than a cell
    join), as repeated 3x3 max-pooling, which traces into a graph. Pixels of
    the class elsewhere in the picture (clutter the segmenter took for the
    object) are dropped."""
    h, w = obj.shape[1:]
    cells = F.max_pool2d(obj[:, None], cell, ceil_mode=True)
    top = torch.where(obj > 0, score, torch.full_like(score, -1.0))
    reached = F.max_pool2d(((top == top.amax((1, 2), keepdim=True)).float() * obj)[:, None], cell, ceil_mode=True)
    with warnings.catch_warnings():  # traced, the steps are fixed for the model's one input size, as meant
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        steps = max(cells.shape[2:])  # enough to cross the whole picture
    for _ in range(steps):
        reached = F.max_pool2d(reached, 3, stride=1, padding=1) * cells
    return obj * F.interpolate(reached, scale_factor=cell, mode="nearest")[:, 0, :h, :w]


def boxes_from_mask_logits(logits: torch.Tensor, blob: bool = True) -> torch.Tensor:
    """The box of the picture's main object class (the one with the most
    probability mass) in segmenter ``logits`` (N x classes x H x W, class 0
    the background), as (x0, y0, x1, y1) in -1..1: the tight box of that
    class's pixels, with ``blob`` of their :func:`main_blob` only. (The main
    job's segmenter, 200 new synthetic pictures: mean IoU with the true box
    0.34 for every pixel of the class, 0.51 for the blob; by eye on 64 real
    photos, tight / loose / off the object 14 / 47 / 3 against 33 / 14 / 17.)"""
    probs = torch.softmax(logits, 1)
    main = probs[:, 1:].sum((2, 3)).argmax(1) + 1                       # N
    obj = (logits.argmax(1) == main[:, None, None]).float()
    if blob:  # on the main class's pixels, their largest probability is the main class's
        obj = main_blob(obj, probs.amax(1))
    return tight_boxes(obj)


class BoxFromMask(nn.Module):
    """A detector made of a segmenter: the box of the picture's main object
    (:func:`boxes_from_mask_logits`), as (x0, y0, x1, y1) in [-1, 1] of the
    input; the whole input when no pixel is an object. The dataset's boxes
    are defined the same way, as the tight box of the mask."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return boxes_from_mask_logits(self.net(x))


class SplitBoxLogits(nn.Module):
    """One graph, two named outputs: the box and the class logits, from a
    network that returns both as a pair or side by side in one tensor (the
    first ``box_outputs`` columns the box). Used by :func:`bbc1k.export.export_learner`."""

    def __init__(self, net: nn.Module, box_outputs: int = 4) -> None:
        super().__init__()
        self.net = net
        self.box_outputs = box_outputs

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.net(x)
        if isinstance(y, (tuple, list)):
            return y[0], y[1]
        return y[:, :self.box_outputs], y[:, self.box_outputs:]
