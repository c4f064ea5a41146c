"""The lessons' own losses and metrics, run from their cells (no training, no data)
and checked against cases worked out by hand."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from lesson_tools import cell_with, lesson_cells

REPO = Path(__file__).resolve().parents[2]
LESSON_02 = REPO / "02-bounding-box-detection.ipynb"
LESSON_03 = REPO / "03-semantic-segmentation.ipynb"


def run_cells(lesson: Path, *texts: str, **names) -> dict:
    """The namespace after the lesson's imports cell and the cells containing ``texts``,
    run in order with ``names`` (the parameters they read) already defined."""
    cells = lesson_cells(lesson)
    namespace = dict(names)
    for source in (cell_with(cells, "from fastai.vision.all import *"), *(cell_with(cells, t) for t in texts)):
        exec(compile(source, f"{lesson.name}: {source.splitlines()[0]}", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def boxes():
    return run_cells(LESSON_02, "def box_head", "def box_ious", "def multitask_loss", CLASS_LOSS_WEIGHT=1.0)


@pytest.fixture(scope="module")
def masks():
    from bbc1k.layout import MASK_CLASSES

    return run_cells(LESSON_03, "def pixel_accuracy", "def class_ious", codes=list(MASK_CLASSES))


def t(rows):
    import torch

    return torch.tensor(rows, dtype=torch.float32)


@pytest.mark.parametrize("pred, true, iou", [
    ([0, 0, 2, 1], [0, 0, 2, 1], 1.0),        # the same box
    ([0, 0, 1, 1], [2, 2, 3, 3], 0.0),        # apart
    ([0, 0, 2, 1], [1, 0, 3, 1], 1 / 3),      # half of each: 1 / (2 + 2 - 1)
    ([0, 0, 1, 1], [0, 0, 2, 2], 1 / 4),      # one inside the other
    ([1, 1, 0, 0], [0, 0, 1, 1], 0.0),        # corners swapped: no area
    ([-1, -1, 0, 1], [-0.5, -1, 1, 1], 1 / 4),  # [-1, 1] scale: 0.5 x 2 shared by 1 x 2 and 1.5 x 2
])
def test_box_ious_by_hand(boxes, pred, true, iou):
    assert boxes["box_ious"](t([pred]), t([true])).item() == pytest.approx(iou, abs=1e-5)


def test_box_iou_and_l1_of_a_batch(boxes):
    pred = t([[0, 0, 2, 1, 9, 9, 9], [0, 0, 1, 1, 9, 9, 9]])   # box, then class logits the box metrics ignore
    true = t([[[1, 0, 3, 1]], [[0, 0, 2, 2]]])                 # [batch, 1 box, 4]
    labels = None
    assert boxes["box_iou"](pred, true, labels).item() == pytest.approx((1 / 3 + 1 / 4) / 2, abs=1e-5)
    # |0-1| + 0 + |2-3| + 0 and 0 + 0 + |1-2| + |1-2|, over 8 numbers
    assert boxes["box_l1_loss"](pred, true, labels).item() == pytest.approx(4 / 8)


def test_class_accuracy_counts_classes_from_label_one(boxes):
    import torch

    # classes brick, ball, cylinder are labels 1, 2, 3 (0 is fastai's '#na#' padding)
    pred = t([[0, 0, 0, 0, 5, 1, 0], [0, 0, 0, 0, 0, 0, 5], [0, 0, 0, 0, 0, 5, 0]])
    labels = torch.tensor([[1], [3], [1]])
    assert boxes["class_accuracy"](pred, None, labels).item() == pytest.approx(2 / 3)


def test_multitask_loss_adds_the_weighted_cross_entropy(boxes):
    import torch

    pred = t([[0, 0, 1, 1, 0, 0, 0], [0, 0, 1, 1, 0, 0, 0]])
    true = t([[[0, 0, 1, 1]], [[0, 0, 1, 1]]])                 # boxes exact: L1 = 0
    labels = torch.tensor([[2], [0]])                          # the second is padding: ignored
    # equal logits over 3 classes: cross-entropy ln 3, on the one real label
    assert boxes["multitask_loss"](pred, true, labels).item() == pytest.approx(math.log(3), abs=1e-5)
    boxes["CLASS_LOSS_WEIGHT"] = 0.5
    try:
        assert boxes["multitask_loss"](pred, true, labels).item() == pytest.approx(0.5 * math.log(3), abs=1e-5)
    finally:
        boxes["CLASS_LOSS_WEIGHT"] = 1.0


def test_box_head_shapes(boxes):
    import torch

    head = boxes["box_head"](7).eval()
    with torch.no_grad():
        assert head(torch.zeros(2, 512, 4, 4)).shape == (2, 7)
        y = boxes["BoxAndClassHead"](3).eval()(torch.randn(2, 512, 4, 4) * 100)
    assert y.shape == (2, 7) and y[:, :4].abs().max() <= 1


def test_pixel_accuracy_by_hand(masks):
    import torch

    target = torch.tensor([[[0, 1], [2, 3]]])
    logits = torch.zeros(1, 4, 2, 2)
    logits[0, 0] = 1                                   # background everywhere...
    logits[0, 1, 0, 1] = 2                             # ...but a brick top right
    assert masks["pixel_accuracy"](logits, target).item() == pytest.approx(2 / 4)


def test_class_ious_and_scores_by_hand(masks):
    import torch

    pred = torch.tensor([[0, 1], [1, 1]])
    true = torch.tensor([[0, 1], [0, 2]])
    # background: both at (0,0), either at (0,0),(1,0); brick: both at (0,1), either at 3 pixels;
    # ball: in the truth only; cylinder: in neither
    ious = masks["class_ious"](pred, true, 4)
    assert ious[:3] == pytest.approx([1 / 2, 1 / 3, 0.0]) and math.isnan(ious[3])
    scores = masks["segmentation_scores"](pred, true)
    assert scores["mean IoU"] == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)
    assert scores["pixel accuracy"] == pytest.approx(2 / 4)
    assert list(scores.index[:4]) == ["IoU background", "IoU brick", "IoU ball", "IoU cylinder"]


def test_all_background_baseline_scores_the_background_share(masks):
    import torch

    true = torch.zeros(2, 4, 5, dtype=torch.long)
    true[0, :2, :3] = 1                                # 6 brick pixels
    true[1, 1:3, 1:4] = 3                              # 6 cylinder pixels, of 40 in all
    scores = masks["segmentation_scores"](torch.zeros_like(true), true)
    assert scores["pixel accuracy"] == pytest.approx(28 / 40)
    assert scores["IoU background"] == pytest.approx(28 / 40)
    assert scores["IoU brick"] == 0 and scores["IoU cylinder"] == 0 and math.isnan(scores["IoU ball"])
    assert scores["mean IoU"] == pytest.approx(28 / 40 / 3)
