import pytest
import torch
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes

from d2ext.modeling import ScaleAwareROIPooler

SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)


def _inputs(seed=0, n_images=2, size=320):
    g = torch.Generator().manual_seed(seed)
    feats = [
        torch.randn(n_images, 8, size // int(1 / s), size // int(1 / s), generator=g)
        for s in SCALES
    ]
    boxes = []
    for _ in range(n_images):
        xy = torch.rand(40, 2, generator=g) * size * 0.7
        wh = torch.rand(40, 2, generator=g) * size + 1
        boxes.append(Boxes(torch.cat([xy, xy + wh], dim=1)))
    return feats, boxes


def _pooler(cls, **kw):
    return cls(output_size=7, scales=SCALES, sampling_ratio=0, pooler_type="ROIAlignV2", **kw)


def test_detectron2_rule_bit_identical_to_roipooler():
    feats, boxes = _inputs()
    ours = _pooler(ScaleAwareROIPooler, level_rule="detectron2")(feats, boxes)
    theirs = _pooler(ROIPooler)(feats, boxes)
    assert torch.equal(ours, theirs)


def test_soco_rule_pools_each_box_from_its_threshold_level():
    feats, boxes = _inputs(seed=1)
    pooler = _pooler(ScaleAwareROIPooler, level_rule="soco")
    out = pooler(feats, boxes)
    all_boxes = torch.cat([b.tensor for b in boxes])
    s = ((all_boxes[:, 2] - all_boxes[:, 0] + 1) * (all_boxes[:, 3] - all_boxes[:, 1] + 1)).sqrt()
    expected_level = torch.full_like(s, -1, dtype=torch.long)
    for j, t in reversed(list(enumerate((48, 96, 192, 224)))):
        expected_level[s <= t] = j
    assert (expected_level >= 0).any() and (expected_level == -1).any()
    assert len(set(expected_level.tolist())) >= 3
    # Pool every box from every level with a single-level ROIPooler and pick per box.
    per_level = [
        ROIPooler(7, (sc,), 0, "ROIAlignV2")([f], boxes)
        for f, sc in zip(feats, SCALES, strict=True)
    ]
    for i, lvl in enumerate(expected_level.tolist()):
        if lvl == -1:
            assert torch.count_nonzero(out[i]) == 0
        else:
            assert torch.equal(out[i], per_level[lvl][i])
    # And it differs from detectron2's rule on these boxes.
    assert not torch.equal(out, _pooler(ROIPooler)(feats, boxes))


def test_precomputed_levels_and_callable_rule():
    feats, boxes = _inputs(seed=2)
    n = sum(len(b) for b in boxes)
    levels = torch.arange(n) % 4
    pooler = _pooler(ScaleAwareROIPooler, level_rule=lambda b: torch.arange(len(b)) % 4)
    a = pooler(feats, boxes)
    b = _pooler(ScaleAwareROIPooler)(feats, boxes, level_assignments=levels)
    assert torch.equal(a, b)


def test_errors():
    with pytest.raises(ValueError, match="level_rule"):
        _pooler(ScaleAwareROIPooler, level_rule="fpn")
    with pytest.raises(ValueError, match="soco_thresholds"):
        _pooler(ScaleAwareROIPooler, level_rule="soco", soco_thresholds=(48, 96))
    feats, boxes = _inputs()
    with pytest.raises(ValueError, match="feature maps"):
        _pooler(ScaleAwareROIPooler)(feats[:3], boxes)


def test_without_a_rule_the_caller_owns_the_levels():
    feats, boxes = _inputs(seed=3)
    pooler = _pooler(ScaleAwareROIPooler, level_rule=None)
    n = sum(len(b) for b in boxes)
    levels = torch.arange(n) % 4
    got = pooler(feats, boxes, level_assignments=levels)
    want = _pooler(ScaleAwareROIPooler)(feats, boxes, level_assignments=levels)
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="no level rule"):
        pooler(feats, boxes)
