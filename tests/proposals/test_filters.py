import numpy as np
import pytest

from d2ext.proposals import ALIGNDET_FILTER, SOCO_FILTER, ProposalFilter, filter_from_name

IMAGE = (400, 400)  # sqrt(H W) = 400: size ratio = sqrt(w h) / 400


def _boxes(*whs):
    return np.array([[5, 5, w, h] for w, h in whs], dtype=np.float32)


def test_soco_filter_bounds_are_inclusive():
    boxes = _boxes(
        (120, 120),  # ratio 0.3 exactly: kept
        (119, 119),  # 0.2975: too small
        (320, 320),  # 0.8 exactly: kept
        (321, 321),  # too large
        (96, 288),  # aspect 1/3 exactly, size sqrt(27648)/400 = 0.416: kept
        (95, 288),  # aspect below 1/3
        (300, 100),  # aspect 3 exactly, size 0.433: kept
    )
    kept, stage = SOCO_FILTER(boxes, IMAGE)
    assert stage == "ratio_size"
    assert kept[:, 2:].tolist() == [[120, 120], [320, 320], [96, 288], [300, 100]]


def test_aligndet_filter_has_no_lower_size_bound():
    boxes = _boxes((32, 32), (31, 40), (320, 320), (321, 321))
    kept, stage = ALIGNDET_FILTER(boxes, IMAGE)
    assert stage == "ratio_size" and kept[:, 2:].tolist() == [[32, 32], [320, 320]]
    assert SOCO_FILTER(_boxes((32, 32)), IMAGE)[1] != "ratio_size"


def test_fallbacks_for_images_left_empty():
    # only small boxes: the size condition fails, the ratio filter keeps the square one
    kept, stage = SOCO_FILTER(_boxes((40, 40), (40, 200)), IMAGE)
    assert stage == "ratio" and kept[:, 2:].tolist() == [[40, 40]]
    # only elongated boxes: the ratio filter fails too, the side filter keeps them
    kept, stage = SOCO_FILTER(_boxes((40, 200), (10, 10)), IMAGE)
    assert stage == "size" and kept[:, 2:].tolist() == [[40, 200]]
    # nothing survives even the side filter
    kept, stage = SOCO_FILTER(_boxes((10, 10), (31, 300)), IMAGE)
    assert stage == "empty" and kept.shape == (0, 4)
    # no fallback
    kept, stage = ProposalFilter(fallback=False)(_boxes((40, 40)), IMAGE)
    assert stage == "empty"
    # no boxes at all, and zero-height boxes (no division error)
    assert SOCO_FILTER(np.zeros((0, 4)), IMAGE)[1] == "empty"
    assert SOCO_FILTER(_boxes((40, 0)), IMAGE)[1] == "empty"


def test_names_and_errors():
    assert SOCO_FILTER.name == "ratio3size0308" and ALIGNDET_FILTER.name == "ratio3size0008"
    assert filter_from_name("ratio3size0308") == SOCO_FILTER
    assert filter_from_name("ratio2size0110", min_side=16).min_side == 16
    with pytest.raises(ValueError, match="form"):
        filter_from_name("ratio3")
    with pytest.raises(ValueError, match="NaN"):
        SOCO_FILTER(np.array([[0, 0, np.nan, 40]]), IMAGE)
    with pytest.raises(ValueError, match="positive"):
        SOCO_FILTER(_boxes((40, 40)), (0, 10))
    with pytest.raises(ValueError):
        ProposalFilter(min_size_ratio=0.9, max_size_ratio=0.8)
