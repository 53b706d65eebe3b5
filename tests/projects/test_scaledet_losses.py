"""ScaleDet (issue 17): the loss normalisation keeps lambda's meaning at any vocabulary size,
the federated loss masks both terms to detectron2's sampled classes, label merging ignores case
and white space and reports what merged."""

import logging
import math

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, Instances

from d2ext.projects.scaledet import (
    ScaleDetOutputLayers,
    build_unified_label_space,
    fed_loss_class_weights,
    label_space_names,
    scaledet_losses,
)

TAU, BIAS = 0.02, math.log(0.01 / 0.99)


def _inputs(num_classes, num_regions=256, seed=0):
    """Regions whose per-label statistics do not depend on C: 25% foreground, the gt label's
    cosine in [0.3, 0.8], every other cosine in [-0.2, 0.4], similarities in [0, 0.5]."""
    g = torch.Generator().manual_seed(seed)
    gt = torch.randint(0, num_classes, (num_regions,), generator=g)
    gt[torch.rand(num_regions, generator=g) < 0.75] = num_classes
    cos = torch.rand(num_regions, num_classes, generator=g, dtype=torch.float64) * 0.6 - 0.2
    fg = (gt < num_classes).nonzero()[:, 0]
    cos[fg, gt[fg]] = 0.3 + 0.5 * torch.rand(len(fg), generator=g, dtype=torch.float64)
    sim = torch.rand(num_classes, num_classes, generator=g, dtype=torch.float64) * 0.5
    sim = (sim + sim.T) / 2
    sim.fill_diagonal_(1.0)
    return cos, gt, sim


def test_soft_to_hard_ratio_does_not_depend_on_vocabulary_size():
    ratios = {}
    for c in (10, 2000):
        cos, gt, sim = _inputs(c)
        hard, soft = scaledet_losses(cos, cos / TAU + BIAS, gt, sim)
        ratios[c] = (soft / hard).item()
    # with L_hard summed and L_soft averaged over labels the ratio falls ~275x from 10 to 2000
    assert 0.5 < ratios[2000] / ratios[10] < 2.0, ratios


def test_per_label_gradients_do_not_depend_on_vocabulary_size():
    """The first 10 labels and every region are the same at C = 10 and C = 2000 (1990 labels
    appended): each (region, label) pair gets the same gradient from each term."""
    cos10, gt10, sim10 = _inputs(10, num_regions=64, seed=1)
    extra, _, big_sim = _inputs(2000, num_regions=64, seed=2)
    cos2000 = torch.cat([cos10, extra[:, 10:]], dim=1)
    sim2000 = big_sim.clone()
    sim2000[:10, :10] = sim10
    gt2000 = torch.where(gt10 == 10, 2000, gt10)
    grads = {}
    for c, cos, gt, sim in ((10, cos10, gt10, sim10), (2000, cos2000, gt2000, sim2000)):
        for term in (0, 1):
            x = cos.clone().requires_grad_(True)
            scaledet_losses(x, x / TAU + BIAS, gt, sim)[term].backward()
            grads[c, term] = x.grad[:, :10]
    for term in (0, 1):  # 0: L_hard, 1: L_soft
        torch.testing.assert_close(grads[10, term], grads[2000, term], rtol=1e-12, atol=0)
    assert grads[10, 1].abs().sum() > 0


def _predictor(num_classes=200, **kw):
    emb = torch.randn(num_classes, 8, generator=torch.Generator().manual_seed(0))
    return ScaleDetOutputLayers(
        ShapeSpec(channels=12),
        text_embeddings=emb,
        box2box_transform=Box2BoxTransform((10, 10, 5, 5)),
        **kw,
    )


def _proposals(gt_classes):
    n = len(gt_classes)
    inst = Instances((64, 64))
    boxes = torch.tensor([[4.0, 4.0, 30.0, 30.0]]).repeat(n, 1)
    inst.proposal_boxes = Boxes(boxes)
    inst.gt_boxes = Boxes(boxes + 1)
    inst.gt_classes = torch.as_tensor(gt_classes)
    return [inst]


def test_federated_loss_masks_both_terms_to_the_sampled_classes():
    num_classes, per_batch = 200, 20
    weights = torch.zeros(num_classes)
    weights[:100] = torch.arange(1, 101).float() ** 0.5  # labels 100+ are never negatives
    p = _predictor(use_fed_loss=True, fed_loss_cls_weights=weights, fed_loss_num_classes=per_batch)
    assert "fed_loss_cls_weights" not in p.state_dict()  # metadata, not a checkpoint entry
    gt = torch.tensor([3, 150, 3, 200, 200, 200])  # labels 3, 150 and background
    x = torch.randn(len(gt), 12, generator=torch.Generator().manual_seed(1))
    scores, deltas = p(x)
    scores = scores.detach().requires_grad_(True)
    torch.manual_seed(7)
    losses = p.losses((scores, deltas), _proposals(gt))
    torch.manual_seed(7)  # the same draw, straight from detectron2's sampler
    classes = p.get_fed_loss_classes(gt, per_batch, num_classes, weights)
    mask = torch.zeros(num_classes + 1, dtype=torch.bool)
    mask[classes] = True
    mask = mask[:num_classes]
    # the gt labels (150 despite weight 0) plus 17 drawn negatives: 20 minus the 3 unique
    # classes detectron2 counts (background included)
    assert mask[3] and mask[150] and int(mask.sum()) == 19
    negatives = [i for i in mask.nonzero()[:, 0].tolist() if i not in (3, 150)]
    assert torch.all(weights[negatives] > 0)  # zero-weight labels are never drawn
    logits = scores[:, :-1].detach().double()
    target = torch.nn.functional.one_hot(gt, num_classes + 1)[:, :num_classes].double()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    expect_hard = (bce * mask).sum() / len(gt)
    cos = (logits - p.cls_bias.detach().double()) * p.temperature
    fg = gt < num_classes
    err = (cos[fg] - p.similarity.double()[gt[fg]]) ** 2
    expect_soft = (err * mask).sum() / int(fg.sum())
    assert losses["loss_cls"].item() == pytest.approx(expect_hard.item(), rel=1e-5)
    assert losses["loss_cls_soft"].item() == pytest.approx(expect_soft.item(), rel=1e-5)
    # the BCE gradient reaches exactly the sampled classes
    losses["loss_cls"].backward()
    touched = scores.grad[:, :num_classes].abs().sum(0) > 0
    assert torch.equal(touched, mask)
    # without the federated loss every label is trained
    plain = _predictor()
    assert plain.fed_loss_class_mask(gt) is None
    with pytest.raises(ValueError, match="fed_loss_cls_weights"):
        _predictor(use_fed_loss=True)
    with pytest.raises(ValueError, match="expected \\(200,\\)"):
        _predictor(use_fed_loss=True, fed_loss_cls_weights=torch.ones(7))
    # a vocabulary swapped in for training no longer matches the weights
    p.set_vocabulary(torch.randn(5, 8))
    with pytest.raises(ValueError, match="vocabulary"):
        p.fed_loss_class_mask(torch.tensor([0, 5]))


def test_federated_loss_never_asks_for_more_classes_than_have_weight():
    weights = torch.zeros(30)
    weights[:4] = 1.0
    p = _predictor(30, use_fed_loss=True, fed_loss_cls_weights=weights, fed_loss_num_classes=50)
    mask = p.fed_loss_class_mask(torch.tensor([10, 30]))
    assert mask.nonzero()[:, 0].tolist() == [0, 1, 2, 3, 10]


def test_fed_loss_class_weights_from_class_image_count():
    from detectron2.data import MetadataCatalog

    MetadataCatalog.get("_fed_lvis_like").set(
        thing_classes=["dog", "Cat", "zebra"],
        class_image_count=[
            {"id": 1, "image_count": 16},
            {"id": 3, "image_count": 9},
            {"id": 2, "image_count": 4},
        ],
    )
    MetadataCatalog.get("_fed_coco_like").set(thing_classes=["cat", "car"])
    w = fed_loss_class_weights(["_fed_coco_like", "_fed_lvis_like"], True, 0.5)
    # unified: cat (coco, lvis "Cat"), car (coco only: 0), dog, zebra; counts sorted by id
    assert build_unified_label_space(["_fed_coco_like", "_fed_lvis_like"], True).names == (
        "cat",
        "car",
        "dog",
        "zebra",
    )
    torch.testing.assert_close(w, torch.tensor([2.0, 0.0, 4.0, 3.0]))
    with pytest.raises(ValueError, match="class_image_count"):
        fed_loss_class_weights(["_fed_coco_like"])
    # LVIS v1 as detectron2 registers it: 1203 weights, image_count ** 0.5
    import detectron2.data.datasets  # noqa: F401 (registers lvis_v1_*)

    lvis = fed_loss_class_weights(["lvis_v1_train"])
    counts = sorted(MetadataCatalog.get("lvis_v1_train").class_image_count, key=lambda c: c["id"])
    assert lvis.shape == (1203,)
    assert lvis[0].item() == pytest.approx(counts[0]["image_count"] ** 0.5)


def test_merging_ignores_case_and_white_space_and_reports_it(caplog):
    per = {
        "a": ["person", "Traffic_Light", "cat"],
        "b": ["Person", "traffic  light", "dog", " person "],
    }
    merged = build_unified_label_space(per, merge_identical=True)
    assert merged.names == ("person", "Traffic_Light", "cat", "dog")
    assert merged.mapping("b") == (0, 1, 3, 0)
    report = merged.report()
    assert "2 merged" in report
    assert "'person' <- a: 'person', b: 'Person', b: ' person '" in report
    assert "'Traffic_Light' <- a: 'Traffic_Light', b: 'traffic  light'" in report
    assert type(merged).from_json(merged.to_json()) == merged
    apart = build_unified_label_space(per)
    assert len(apart) == 7 and "nothing merged" in apart.report()
    assert "kept apart" in apart.report() and "'person' / 'Person' / 'person'" in apart.report()
    with caplog.at_level(logging.INFO, logger="d2ext.projects.scaledet.text_embeddings"):
        assert label_space_names(per, True) == list(merged.names)
    assert "'person' <- a: 'person', b: 'Person'" in caplog.text


def test_config_switches_the_federated_loss_on_built_heads(tmp_path):
    """The demo config's heads train every label; ``scaledet.fed_loss.enabled=True`` gives
    heads with the federated mask and the LVIS-style weights over the unified space."""
    import numpy as np
    from detectron2.config import instantiate
    from detectron2.data import MetadataCatalog

    from d2ext.model_zoo import get_config
    from d2ext.projects.scaledet import save_text_embeddings

    MetadataCatalog.get("_fedcfg_lvis").set(
        thing_classes=["dog", "cat"],
        class_image_count=[{"id": 1, "image_count": 4}, {"id": 2, "image_count": 25}],
    )
    MetadataCatalog.get("_fedcfg_coco").set(thing_classes=["Cat", "car"])
    cfg = get_config("ScaleDet/scaledet_R18_FPN_demo.py")
    assert cfg.scaledet.fed_loss.enabled is False and cfg.scaledet.fed_loss.num_classes == 50
    cfg.scaledet.datasets = ["_fedcfg_lvis", "_fedcfg_coco"]
    cfg.scaledet.text.backend = "precomputed"  # random embeddings supplied as a file
    cfg.scaledet.text.path = str(tmp_path / "train.npy")
    names = label_space_names(cfg.scaledet.datasets, True)
    assert names == ["dog", "cat", "car"]
    save_text_embeddings(cfg.scaledet.text.path, np.random.RandomState(0).randn(3, 16), names)
    off = instantiate(cfg.model).roi_heads.box_predictor
    assert off.use_fed_loss is False and off.fed_loss_class_mask(torch.tensor([0, 3])) is None
    cfg.scaledet.fed_loss.enabled = True
    cfg.scaledet.fed_loss.num_classes = 2
    on = instantiate(cfg.model).roi_heads.box_predictor
    assert on.use_fed_loss and on.fed_loss_num_classes == 2
    torch.testing.assert_close(on.fed_loss_cls_weights, torch.tensor([2.0, 5.0, 0.0]))
    torch.manual_seed(0)
    assert on.fed_loss_class_mask(torch.tensor([2, 3])).tolist() == [False, False, True]
    mask = on.fed_loss_class_mask(torch.tensor([0, 0]))
    assert mask.tolist() == [True, True, False]  # "car" (weight 0) is never a negative
    cfg.scaledet.datasets = ["_fedcfg_coco"]  # no class_image_count anywhere: a clear error
    cfg.scaledet.text.path = str(tmp_path / "coco.npy")
    save_text_embeddings(cfg.scaledet.text.path, np.ones((2, 16)), ["Cat", "car"])
    with pytest.raises(ValueError, match="class_image_count"):
        instantiate(cfg.model)
