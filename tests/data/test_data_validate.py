"""bbc1k.validate: a clean synthetic set passes; each deliberate defect is reported."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from bbc1k import layout
from bbc1k.validate import MIN_BOX_IOU, validate


def test_clean_synthetic_set_passes(synthetic_dataset):
    report = validate(synthetic_dataset)
    assert report.ok, report.format()
    assert report.n_images == 24 and report.n_masks == 24 and report.n_boxes == 24
    assert report.class_counts == {"brick": 8, "ball": 8, "cylinder": 8}
    assert dict(report.sizes) == {(128, 96): 24}
    text = report.format()
    assert "brick 8, ball 8, cylinder 8" in text and "128x96 (24)" in text and "OK" in text
    assert f">= {MIN_BOX_IOU}" in text


def test_parent_folder_is_accepted(synthetic_dataset):
    assert validate(synthetic_dataset.parent).dataset == synthetic_dataset


def test_missing_folder_is_one_clear_problem(tmp_path):
    report = validate(tmp_path / "nope")
    assert not report.ok and "does not exist" in report.problems[0]


def _edit_boxes(ds, edit):
    path = ds / layout.BBOXES_JSON
    coco = json.loads(path.read_text())
    edit(coco)
    path.write_text(json.dumps(coco))


def _set_box(coco, filename, box):
    image_id = next(im["id"] for im in coco["images"] if im["file_name"] == filename)
    next(a for a in coco["annotations"] if a["image_id"] == image_id)["bbox"] = box


@pytest.fixture
def broken(synthetic_dataset, tmp_path):
    """A copy of the synthetic set with one defect per image; returns (path, {name: expected text})."""
    ds = shutil.copytree(synthetic_dataset, tmp_path / "bbc_train")
    rows = layout.read_labels(ds)
    names = [r.filename for r in rows]
    label = {r.filename: r.label for r in rows}
    expect = {}

    (ds / "images" / names[0]).write_bytes(b"not a jpeg at all")
    expect[names[0]] = "unreadable image"

    layout.mask_path(ds, names[1]).unlink()
    expect[names[1]] = "image has no mask"

    def drop_box(coco):
        image_id = next(im["id"] for im in coco["images"] if im["file_name"] == names[2])
        coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != image_id]
    _edit_boxes(ds, drop_box)
    expect[names[2]] = "image has no box"

    def edit_mask(name, change):
        mask = np.array(Image.open(layout.mask_path(ds, name)))
        change(mask)
        Image.fromarray(mask, "L").save(layout.mask_path(ds, name))

    edit_mask(names[3], lambda m: m.__setitem__((0, 0), 7))
    expect[names[3]] = "mask values outside 0..3: [7]"

    other = next(v for v in (1, 2, 3) if layout.MASK_CLASSES[v] != label[names[4]])
    edit_mask(names[4], lambda m: m.__setitem__((slice(0, 2), slice(0, 2)), other))
    expect[names[4]] = "mask holds more than one object class"

    _edit_boxes(ds, lambda coco: _set_box(coco, names[5], [120, 10, 30, 20]))
    expect[names[5]] = "is outside the 128x96 image"

    # Find a corner box that barely overlaps the object: a plausible but wrong hand-drawn box.
    mask6 = np.array(Image.open(layout.mask_path(ds, names[6])))
    corner = [0, 0, 12, 12] if not mask6[:12, :12].any() else [116, 84, 12, 12]
    _edit_boxes(ds, lambda coco: _set_box(coco, names[6], corner))
    expect[names[6]] = "box does not match the mask (IoU 0.00"

    # Relabel one image in the csv only: its mask (and box) still say otherwise.
    wrong = next(c for c in layout.OBJECT_CLASSES if c != label[names[7]])
    rows[7] = layout.LabelRow(names[7], wrong, layout.label_index(wrong))
    expect[names[7]] = f"class label {wrong!r} disagrees with the mask ({label[names[7]]})"

    rows[8] = layout.LabelRow(names[8], label[names[8]], 0)
    expect[names[8]] = f"has label_index 0 but {label[names[8]]} is"

    del rows[9]
    expect[names[9]] = "image has no row in classification_labels.csv"

    rows.append(layout.LabelRow("ghost.jpg", "ball", 2))
    expect["ghost.jpg"] = "names a missing image ghost.jpg"
    layout.write_labels(ds, rows)

    edit_mask(names[10], lambda m: m.__setitem__(slice(None), 0))
    expect[names[10]] = "mask is empty"
    return ds, expect


def test_each_defect_is_reported(broken):
    ds, expect = broken
    report = validate(ds)
    assert not report.ok
    for name, text in expect.items():
        stem = name.rsplit(".", 1)[0]
        hits = [p for p in report.problems if stem in p and text in p]
        assert hits, f"{name}: expected a problem containing {text!r}; got:\n" + "\n".join(report.problems)
    # A wrong csv label also disagrees with the box's class: both are said.
    assert any("box class" in p and "disagrees with the label" in p for p in report.problems)
    formatted = report.format()
    assert f"{len(report.problems)} problems found" in formatted
    assert all(p in formatted for p in report.problems)


def test_quick_check_finds_file_level_defects_without_decoding(broken):
    ds, _ = broken
    report = validate(ds, deep=False)
    text = "\n".join(report.problems)
    assert "image has no mask" in text and "names a missing image ghost.jpg" in text
    assert "unreadable image" not in text  # not decoded in a quick check
    assert not report.sizes


def test_extra_coco_entries_are_a_note_not_a_problem(synthetic_dataset, tmp_path):
    ds = shutil.copytree(synthetic_dataset, tmp_path / "bbc_train")

    def add_entries(coco):
        coco["images"] += [{"id": 1000 + i, "file_name": f"gone_{i}.jpg", "width": 128, "height": 96}
                           for i in range(5)]
    _edit_boxes(ds, add_entries)
    report = validate(ds)
    assert report.ok, report.format()
    assert any("lists 29 image entries; 5 name no file" in n for n in report.notes)


def test_labels_only_dataset_says_boxes_and_masks_are_absent(synthetic_dataset, tmp_path):
    ds = tmp_path / "bbc_train"
    shutil.copytree(synthetic_dataset / "images", ds / "images")
    shutil.copy(synthetic_dataset / layout.LABELS_CSV, ds)
    report = validate(ds)
    assert report.ok, report.format()
    assert not report.has_masks and not report.has_boxes
    assert "boxes and masks are absent" in report.summary()


def test_missing_labels_csv_is_a_problem(synthetic_dataset, tmp_path):
    ds = shutil.copytree(synthetic_dataset, tmp_path / "bbc_train")
    (ds / layout.LABELS_CSV).unlink()
    report = validate(ds)
    assert any("classification_labels.csv is missing" in p for p in report.problems)


def test_csv_without_required_column(synthetic_dataset, tmp_path):
    ds = shutil.copytree(synthetic_dataset, tmp_path / "bbc_train")
    with open(ds / layout.LABELS_CSV, "w", newline="") as f:
        csv.writer(f).writerows([("filename", "label"), ("synth_000000.jpg", "ball")])
    report = validate(ds)
    assert any("cannot be read" in p and "label_index" in p for p in report.problems)
