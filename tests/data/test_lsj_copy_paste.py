"""LSJ augmentations, copy-paste and the LSJCopyPasteDatasetMapper on synthetic images: sizes,
padding, boxes equal to their masks' tight boxes, occluded objects dropped, pasted pixels from
the source; the coco_lsj data block builds a working mapper."""

import numpy as np
import pytest
import torch
from detectron2.config import instantiate
from detectron2.structures import BitMasks, Boxes, BoxMode, Instances
from PIL import Image

from d2ext.data.copy_paste import (
    LSJCopyPasteDatasetMapper,
    build_lsj_copy_paste_train_loader,
    copy_paste,
    mask_boxes,
)
from d2ext.data.transforms import PadToSize, lsj_augmentations, lsj_test_augmentations
from d2ext.model_zoo import get_config


def _rect_mask(h, w, rows, cols):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[rows[0] : rows[1], cols[0] : cols[1]] = True
    return m


def _instances(h, w, rects, classes):
    """rects: (row0, row1, col0, col1) per object; boxes are the rectangles' tight boxes."""
    inst = Instances((h, w))
    masks = [_rect_mask(h, w, (r0, r1), (c0, c1)) for r0, r1, c0, c1 in rects]
    inst.gt_masks = BitMasks(torch.stack(masks) if masks else torch.zeros(0, h, w, dtype=bool))
    inst.gt_boxes = Boxes(torch.tensor([[c0, r0, c1, r1] for r0, r1, c0, c1 in rects]).float())
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    return inst


def _assert_boxes_are_mask_boxes(inst: Instances):
    masks = inst.gt_masks.tensor
    assert masks.flatten(1).any(1).all(), "an object with an empty mask"
    torch.testing.assert_close(inst.gt_boxes.tensor, inst.gt_masks.get_bounding_boxes().tensor)


def test_mask_boxes_equal_detectron2s():
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(6, 17, 23, dtype=torch.bool)
    masks[0] = torch.rand(17, 23, generator=g) > 0.9
    masks[1, 3, 5] = True  # one pixel
    masks[2, 0:17, 22] = True  # the last column
    masks[3, 16, 0:23] = True  # the last row
    masks[5, 4:9, 2:20] = torch.rand(5, 18, generator=g) > 0.5  # masks[4] stays empty
    expected = BitMasks(masks).get_bounding_boxes().tensor
    torch.testing.assert_close(mask_boxes(masks), expected)
    torch.testing.assert_close(mask_boxes(masks)[4], torch.zeros(4))
    assert mask_boxes(torch.zeros(0, 5, 5, dtype=torch.bool)).shape == (0, 4)


def test_copy_paste_by_hand():
    h = w = 64
    dst = _instances(
        h,
        w,
        [
            (5, 17, 5, 17),  # 0: covered entirely by source A -> dropped
            (20, 40, 20, 40),  # 1: 160 px left, box moved 12 px -> dropped
            (22, 40, 0, 18),  # 2: 252 px left but box moved only 4 px -> kept, box shrunk
            (0, 18, 30, 64),  # 3: box moved 15 px but 342 px left -> kept, box shrunk
        ],
        [0, 1, 2, 3],
    )
    src = _instances(
        h,
        w,
        [(4, 18, 4, 18), (20, 40, 20, 32), (22, 40, 0, 4), (0, 18, 30, 45)],
        [10, 11, 12, 13],
    )
    dst_image = torch.full((3, h, w), 7, dtype=torch.uint8)
    src_image = torch.full((3, h, w), 200, dtype=torch.uint8)
    image, out = copy_paste(dst_image, dst, src_image, src, selected=False)
    assert out.gt_classes.tolist() == [2, 3, 10, 11, 12, 13]
    torch.testing.assert_close(
        out.gt_boxes.tensor[:2], torch.tensor([[4.0, 22, 18, 40], [45.0, 0, 64, 18]])
    )
    torch.testing.assert_close(out.gt_boxes.tensor[2:], src.gt_boxes.tensor)
    _assert_boxes_are_mask_boxes(out)
    union = src.gt_masks.tensor.any(0)
    assert (image[:, union] == 200).all() and (image[:, ~union] == 7).all()
    assert not (out.gt_masks.tensor[:2] & union).any()  # covered parts removed
    assert out.image_size == (h, w)


def test_copy_paste_thresholds_decide():
    h = w = 64
    dst = _instances(h, w, [(22, 40, 0, 18)], [2])
    src = _instances(h, w, [(22, 40, 0, 4)], [12])
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    # a 4 px shift is more than a 3 px tolerance, and 252 px are not above 300: dropped
    _, out = copy_paste(image, dst, image, src, selected=False, bbox_occluded_thr=3)
    assert out.gt_classes.tolist() == [12]
    # ... unless 252 px count as visible
    _, out = copy_paste(
        image, dst, image, src, selected=False, bbox_occluded_thr=3, mask_occluded_thr=200
    )
    assert out.gt_classes.tolist() == [2, 12]


def test_copy_paste_draws_at_most_max_minus_one_objects():
    h = w = 32
    dst = _instances(h, w, [(0, 4, 0, 4)], [0])
    src = _instances(h, w, [(10, 12, 2 * k, 2 * k + 1) for k in range(5)], [5] * 5)
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    counts = set()
    for seed in range(40):
        _, out = copy_paste(
            image, dst, image, src, max_num_pasted=3, rng=np.random.RandomState(seed)
        )
        pasted = int((out.gt_classes == 5).sum())
        # mmdetection: randint(0, min(n + 1, max_num_pasted)), high excluded
        assert pasted == np.random.RandomState(seed).randint(0, 3)
        counts.add(pasted)
        if pasted == 0:
            assert out is dst  # nothing drawn: the destination unchanged
    assert counts == {0, 1, 2}


def test_copy_paste_bad_input():
    a = _instances(8, 8, [(0, 2, 0, 2)], [0])
    with pytest.raises(ValueError, match="one size"):
        copy_paste(torch.zeros(3, 8, 8), a, torch.zeros(3, 9, 8), a)
    no_masks = Instances((8, 8), gt_boxes=Boxes(torch.zeros(0, 4)))
    with pytest.raises(ValueError, match="BitMasks"):
        copy_paste(torch.zeros(3, 8, 8), no_masks, torch.zeros(3, 8, 8), a)


# ---------------------------------------------------------------------------- the mapper
def _write(path, h, w, colour, rects):
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[:] = 30
    for r0, r1, c0, c1 in rects:
        image[r0:r1, c0:c1] = colour
    Image.fromarray(image).save(path)


def _record(path, h, w, rects, category, image_id):
    annos = []
    for r0, r1, c0, c1 in rects:
        poly = [c0, r0, c1, r0, c1, r1, c0, r1]
        annos.append(
            {
                "bbox": [c0, r0, c1, r1],
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": category,
                "segmentation": [poly],
                "iscrowd": 0,
            }
        )
    return {
        "file_name": str(path),
        "height": h,
        "width": w,
        "image_id": image_id,
        "annotations": annos,
    }


@pytest.fixture
def two_images(tmp_path):
    """Image A (100 x 80, class 0, red objects) and image B (64 x 64, class 1, a green
    object covering most of the image)."""
    a_rects = [(10, 30, 10, 40), (50, 90, 40, 75)]
    b_rects = [(4, 60, 4, 60)]
    _write(tmp_path / "a.png", 100, 80, (255, 0, 0), a_rects)
    _write(tmp_path / "b.png", 64, 64, (0, 255, 0), b_rects)
    return (
        _record(tmp_path / "a.png", 100, 80, a_rects, 0, 1),
        _record(tmp_path / "b.png", 64, 64, b_rects, 1, 2),
    )


def test_lsj_augmentations_build_the_authors_steps():
    augs = lsj_augmentations(1024)
    names = [type(a).__name__ for a in augs]
    assert names == ["ResizeScale", "RandomCrop", "RandomFlip", "PadToSize"]
    assert (augs[0].min_scale, augs[0].max_scale) == (0.1, 2.0)
    assert augs[1].crop_type == "absolute" and augs[1].crop_size == (1024, 1024)
    assert augs[3].pad_value == 114.0 and (augs[3].height, augs[3].width) == (1024, 1024)
    # the test resize puts the long side at S
    t = lsj_test_augmentations(1024)[0].get_transform(np.zeros((480, 640, 3), np.uint8))
    assert (t.new_h, t.new_w) == (768, 1024)
    with pytest.raises(ValueError):
        lsj_augmentations(0)


def test_pad_to_size():
    t = PadToSize(6, 5, pad_value=114).get_transform(np.zeros((4, 3, 3), np.uint8))
    out = t.apply_image(np.ones((4, 3, 3), np.uint8))
    assert out.shape == (6, 5, 3)
    assert (out[:4, :3] == 1).all() and (out[4:] == 114).all() and (out[:, 3:] == 114).all()
    assert (t.apply_segmentation(np.ones((4, 3), np.uint8))[4:] == 0).all()


def test_mapper_sizes_padding_and_mask_boxes(two_images):
    a, b = two_images
    mapper = LSJCopyPasteDatasetMapper(
        True,
        augmentations=lsj_augmentations(64, min_scale=0.5, max_scale=0.5),
        image_format="RGB",
        copy_paste=False,
    )
    out = mapper(a)
    # long side 100 -> 32: 32 x 26 (0.32 x 80 = 25.6), then flipped or not, padded to 64 x 64
    assert out["image"].shape == (3, 64, 64) and out["image"].dtype == torch.uint8
    assert (out["image"][:, 32:, :] == 114).all() and (out["image"][:, :, 26:] == 114).all()
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [0, 0] and isinstance(inst.gt_masks, BitMasks)
    _assert_boxes_are_mask_boxes(inst)
    assert (inst.gt_boxes.tensor[:, 2] <= 26).all() and (inst.gt_boxes.tensor[:, 3] <= 32).all()


def test_mapper_crops_large_images_and_drops_objects_outside(two_images):
    a, _ = two_images
    mapper = LSJCopyPasteDatasetMapper(
        True,
        augmentations=lsj_augmentations(64, min_scale=2.0, max_scale=2.0),
        image_format="RGB",
        copy_paste=False,
    )
    seen = set()
    for seed in range(12):
        np.random.seed(seed)
        out = mapper(a)
        if out is None:  # both objects cut to nothing: the loader maps another image
            continue
        assert out["image"].shape == (3, 64, 64)
        assert (out["image"] != 114).all()  # 128 x 102 image: the crop fills the window
        _assert_boxes_are_mask_boxes(out["instances"])
        seen.add(len(out["instances"]))
    assert 1 in seen  # some crops leave one of the two objects out: it is dropped


def test_mapper_pastes_source_objects_and_drops_the_covered(two_images):
    """A onto itself-size squares: image B's large green object pasted on a 64 x 64 copy of
    the scene covers A's first object entirely."""
    a, b = two_images
    mapper = LSJCopyPasteDatasetMapper(
        True,
        augmentations=lsj_augmentations(64, min_scale=1.0, max_scale=1.0, horizontal_flip=False),
        image_format="RGB",
        source_dataset=[b],
    )
    pasted_runs = 0
    for seed in range(10):
        np.random.seed(seed)
        out = mapper(a)
        inst = out["instances"]
        _assert_boxes_are_mask_boxes(inst)
        if (inst.gt_classes == 1).any():
            pasted_runs += 1
            # A at scale 0.64: objects at rows 6-19 / cols 6-26 and rows 32-58 / cols 26-48;
            # B's object (rows 4-60, cols 4-60) covers both: only the pasted object is left
            assert inst.gt_classes.tolist() == [1]
            green = out["image"][:, inst.gt_masks.tensor[0]]
            assert (green[1] == 255).all() and (green[0] == 0).all()
        else:
            assert inst.gt_classes.tolist() == [0, 0]
    assert 0 < pasted_runs < 10  # randint(0, 2): sometimes nothing is drawn


def test_mapper_pastes_boxes_as_masks_on_box_only_data(two_images):
    a, b = two_images
    mapper = LSJCopyPasteDatasetMapper(
        True,
        augmentations=lsj_augmentations(64, min_scale=1.0, max_scale=1.0, horizontal_flip=False),
        image_format="RGB",
        use_instance_mask=False,
        paste_by_box=True,
        source_dataset=[b],
    )
    outcomes = set()
    for seed in range(10):
        np.random.seed(seed)
        inst = mapper(a)["instances"]
        assert not inst.has("gt_masks")
        if (inst.gt_classes == 1).any():
            # B's box (4, 4, 60, 60) covers both of A's boxes: only the pasted box is left
            assert inst.gt_classes.tolist() == [1]
            torch.testing.assert_close(inst.gt_boxes.tensor, torch.tensor([[4.0, 4, 60, 60]]))
        else:
            assert inst.gt_classes.tolist() == [0, 0]
        outcomes.add(int((inst.gt_classes == 1).sum()))
    assert outcomes == {0, 1}


def test_mapper_needs_a_source_and_masks(two_images):
    a, _ = two_images
    augs = lsj_augmentations(64)
    with pytest.raises(ValueError, match="source_dataset"):
        LSJCopyPasteDatasetMapper(True, augmentations=augs, image_format="RGB")(a)
    with pytest.raises(ValueError, match="use_instance_mask"):
        LSJCopyPasteDatasetMapper(
            True, augmentations=augs, image_format="RGB", use_instance_mask=False
        )
    boxes_only = LSJCopyPasteDatasetMapper(
        True, augmentations=augs, image_format="RGB", use_instance_mask=False, copy_paste=False
    )
    np.random.seed(0)
    out = boxes_only(a)
    assert out is None or not out["instances"].has("gt_masks")
    test = LSJCopyPasteDatasetMapper(
        False, augmentations=lsj_test_augmentations(64), image_format="RGB"
    )
    out = test(a)
    assert out["image"].shape == (3, 64, 51) and "instances" not in out


def test_loader_uses_the_training_set_as_source(two_images):
    a, b = two_images
    mapper = LSJCopyPasteDatasetMapper(
        True, augmentations=lsj_augmentations(64, min_scale=0.8, max_scale=1.2), image_format="RGB"
    )
    loader = build_lsj_copy_paste_train_loader(
        [a, b], mapper=mapper, total_batch_size=2, num_workers=0
    )
    assert mapper.source_dataset is not None and len(mapper.source_dataset) == 2
    batch = next(iter(loader))
    assert len(batch) == 2
    for x in batch:
        assert x["image"].shape == (3, 64, 64)
        _assert_boxes_are_mask_boxes(x["instances"])


def test_coco_lsj_block_builds_the_mapper(two_images):
    a, b = two_images
    cfg = get_config("common/data/coco_lsj.py")
    train = cfg.dataloader.train
    assert train.dataset.filter_empty is False and train.total_batch_size == 16
    mapper = instantiate(train.mapper)
    assert isinstance(mapper, LSJCopyPasteDatasetMapper) and mapper.copy_paste
    assert (mapper.max_num_pasted, mapper.bbox_occluded_thr, mapper.mask_occluded_thr) == (
        100,
        10,
        300,
    )
    steps = mapper.augmentations.augs
    assert [type(s).__name__ for s in steps][-1] == "PadToSize" and steps[-1].height == 1024
    assert steps[0].target_height == 1024 and (steps[0].min_scale, steps[0].max_scale) == (0.1, 2)
    train.mapper.augmentations.image_size = 64
    small = instantiate(train.mapper)
    small.source_dataset = [a, b]
    np.random.seed(1)
    out = small(b)
    assert out["image"].shape == (3, 64, 64)
    test_mapper = instantiate(cfg.dataloader.test.mapper)
    assert test_mapper(a)["image"].shape == (3, 1024, 819)
