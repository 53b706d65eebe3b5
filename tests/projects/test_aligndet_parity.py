"""AlignDet against the authors' recipe (liming-ai/AlignDet), on built objects: the samplers'
picks, the FCOS sampling scope and box loss, the colour operations and scales, the proposal
NMS, the fine-tuning modules, optimizer groups, clipping and schedule, and bad inputs."""

import math

import numpy as np
import pytest
import torch
from detectron2.config import instantiate
from detectron2.structures import Boxes, Instances, pairwise_iou
from detectron2.utils.events import EventStorage
from PIL import Image, ImageEnhance, ImageOps

from d2ext.projects.aligndet import (
    ALIGNDET_SCALES,
    RANDAUG_COLOUR_OPS,
    AlignDetDatasetMapper,
    NormEvalResNet,
    RandAugColour,
    aligndet_colour_augmentation,
)

from ..helpers import load_config
from .test_aligndet import PRETRAIN, _batch, _pretrain_model, four_squares  # noqa: F401


@pytest.fixture
def squares(four_squares):  # noqa: F811 (test_aligndet's fixture)
    return four_squares


R50_PRETRAIN = {
    k: f"projects/AlignDet/configs/aligndet_{k}_R50_FPN_coco_12ep.py"
    for k in ("faster_rcnn", "retinanet", "fcos")
}
R50_FINETUNE = {
    k: f"projects/AlignDet/configs/{k}_R50_FPN_1x_coco_finetune.py"
    for k in ("faster_rcnn", "retinanet", "fcos")
}


def _pretrain_model_r50(kind):
    """The built AlignDet model of the authors' R-50 pretraining recipe for ``kind``."""
    return instantiate(load_config(R50_PRETRAIN[kind]).model)


# ------------------------------------------------------------------------------- R-CNN samplers


def _rcnn_targets(image_size=(200, 200)):
    gt = Instances(image_size)
    gt.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 60.0, 60.0], [100.0, 100.0, 180.0, 170.0]]))
    gt.gt_classes = torch.zeros(2, dtype=torch.int64)
    gt.gt_ids = torch.tensor([0, 1])
    return gt


def _rcnn_proposals(n_fg: int, n_bg: int, image_size=(200, 200)):
    g = torch.Generator().manual_seed(0)
    fg = torch.tensor([10.0, 10.0, 60.0, 60.0]) + torch.rand(n_fg, 4, generator=g) * 3
    bg = torch.tensor([120.0, 10.0, 150.0, 40.0]) + torch.rand(n_bg, 4, generator=g) * 3
    p = Instances(image_size)
    p.proposal_boxes = Boxes(torch.cat([fg, bg]))
    p.objectness_logits = torch.zeros(n_fg + n_bg)
    return p


@pytest.mark.parametrize("positives_only", [True, False])
def test_roi_sampler_picks_positives_only_as_the_authors(positives_only):
    heads = _pretrain_model("faster_rcnn").online.roi_heads
    assert heads.positives_only  # the recipe's default
    heads.positives_only = positives_only
    heads.batch_size_per_image = 16
    torch.manual_seed(0)
    with EventStorage(0):
        # 5 foreground proposals (+ the 2 ground-truth boxes appended), 30 background
        (few,) = heads.label_and_sample_proposals([_rcnn_proposals(5, 30)], [_rcnn_targets()])
        # 40 foreground: more than the budget
        (many,) = heads.label_and_sample_proposals([_rcnn_proposals(40, 30)], [_rcnn_targets()])
    fg_few = int((few.gt_classes == 0).sum())
    assert fg_few == 7
    assert int((many.gt_classes == 0).sum()) == 16 and len(many) == 16
    if positives_only:  # authors: RandomSampler(num, pos_fraction=1, neg_pos_ub=0)
        assert len(few) == 7 and (few.gt_classes == 0).all()
    else:  # detectron2's subsample_labels fills the budget with background
        assert len(few) == 16 and int((few.gt_classes == 1).sum()) == 9


def test_rpn_sampler_fills_with_negatives_as_the_authors():
    # mmdet RandomSampler(num=4096, pos_fraction=1.0, neg_pos_ub=-1): up to 4096 positives,
    # negatives fill the rest to 4096; detectron2's RPN at batch 4096, fraction 1.0 does that.
    model = _pretrain_model("faster_rcnn")
    rpn = model.online.proposal_generator
    assert (rpn.batch_size_per_image, rpn.positive_fraction) == (4096, 1.0)
    cfg = load_config(R50_PRETRAIN["faster_rcnn"])
    assert cfg.model.detector.proposal_generator.batch_size_per_image == 4096
    assert cfg.model.detector.proposal_generator.positive_fraction == 1.0
    image = torch.zeros(1, 3, 224, 224)
    features = rpn.in_features
    feats = model.online.backbone(image)
    anchors = rpn.anchor_generator([feats[f] for f in features])
    torch.manual_seed(0)
    labels, _ = rpn.label_and_sample_anchors(anchors, [_rcnn_targets()])
    pos, neg = int((labels[0] == 1).sum()), int((labels[0] == 0).sum())
    assert 0 < pos < 4096 and pos + neg == 4096 < len(labels[0])
    assert pos >= 2
    rpn.batch_size_per_image = pos - 1  # fewer slots than positives: all positive, no negative
    labels, _ = rpn.label_and_sample_anchors(anchors, [_rcnn_targets()])
    assert int((labels[0] == 1).sum()) == pos - 1 and int((labels[0] == 0).sum()) == 0


@pytest.mark.parametrize("which", ["pretrain", "finetune"])
def test_rcnn_box_head_is_shared4conv1fc(which):
    from detectron2.modeling.roi_heads import FastRCNNConvFCHead

    cfg = load_config((R50_PRETRAIN if which == "pretrain" else R50_FINETUNE)["faster_rcnn"])
    model = instantiate(cfg.model)
    head = (model.online if which == "pretrain" else model).roi_heads.box_head
    assert isinstance(head, FastRCNNConvFCHead)
    convs = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)]
    fcs = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (256, 256, (3, 3))
    ] * 4
    assert all(c.norm is None and c.bias is not None for c in convs)  # no norm, conv bias
    assert [(f.in_features, f.out_features) for f in fcs] == [(256 * 7 * 7, 1024)]
    if which == "pretrain":
        predictor = model.online.roi_heads.box_predictor
        assert predictor.bbox_pred.out_features == 4  # class-agnostic (README row)


# ------------------------------------------------------------------------------- dense sampling


def test_fcos_samples_per_batch_retinanet_per_image():
    fcos = _pretrain_model_r50("fcos").online
    retina = _pretrain_model_r50("retinanet").online
    assert (fcos.sample_scope, fcos.num_samples) == ("batch", 2048)
    assert (retina.sample_scope, retina.num_samples) == ("image", 2048)
    matched = torch.full((3, 3000), -1)
    matched[:, :100] = 0  # 100 positives per image
    matched[:, 100:150] = -2  # ignored
    torch.manual_seed(0)
    batch = fcos.sample_positions(matched)
    assert int(batch.sum()) == 2048
    assert bool(batch[:, :100].all()) and not batch[:, 100:150].any()  # every positive
    fcos.sample_scope = "image"
    image = fcos.sample_positions(matched)
    assert image.sum(1).tolist() == [2048] * 3 and not image[:, 100:150].any()
    # more positives than the budget: positives only
    fcos.sample_scope = "batch"
    matched[:, :1000] = 0
    only_pos = fcos.sample_positions(matched)
    assert int(only_pos.sum()) == 2048 and not only_pos[:, 1000:].any()


def _positions_per_image(detector, height: int, width: int) -> int:
    """Anchors (RetinaNet) or locations (FCOS) the built detector has on one padded image."""
    div = detector.backbone.size_divisibility
    height, width = (math.ceil(x / div) * div for x in (height, width))
    shapes = detector.backbone.output_shape()
    features = [
        torch.zeros(1, 1, math.ceil(height / shapes[f].stride), math.ceil(width / shapes[f].stride))
        for f in detector.head_in_features
    ]
    return sum(len(a) for a in detector.anchor_generator(features))


@pytest.mark.parametrize("kind, demo_batch, recipe_batch", [("retinanet", 8, 2), ("fcos", 8, 2)])
def test_dense_demo_configs_sample_the_authors_fraction_of_positions(
    kind, demo_batch, recipe_batch
):
    # The demo configs scale the authors' 2048 samples to the demo's image size (README row):
    # the fraction of positions sampled at the demo's mean view (192 x 256, short side 176-208
    # of the 320 x 240 demo images) is the fraction the R-50 recipe samples at its mean scale
    # (720 x 960: a 640 x 480 COCO image at short side 720, the six scales' mean).
    demo = _pretrain_model(kind).online
    recipe = _pretrain_model_r50(kind).online
    assert recipe.num_samples == 2048 and demo.sample_scope == recipe.sample_scope
    n = _positions_per_image(demo, 192, 256)

    def fraction(model, batch, positions):
        images = batch if model.sample_scope == "batch" else 1
        return model.num_samples / (positions * images)

    demo_fraction = fraction(demo, demo_batch, n)
    recipe_fraction = fraction(recipe, recipe_batch, _positions_per_image(recipe, 720, 960))
    assert 0.8 < demo_fraction / recipe_fraction < 1.2, (demo_fraction, recipe_fraction)
    # the drawn mask holds that many positions on a demo-sized batch
    matched = torch.full((demo_batch, n), -1)
    matched[:, : n // 2] = 0  # more positives than samples: positives only
    drawn = demo.sample_positions(matched)
    per_draw = demo.num_samples * (1 if demo.sample_scope == "batch" else demo_batch)
    assert int(drawn.sum()) == per_draw and not drawn[:, n // 2 :].any()


@pytest.mark.parametrize("kind", ["retinanet", "fcos"])
def test_dense_samples_carry_the_id_of_their_own_image_and_position(kind, squares):
    # the authors' RetinaNet pairs image-major labels with level-major embeddings; here each
    # embedding row must carry the id of the box its own position matched.
    model = _pretrain_model(kind)
    online = model.online
    views = model._views(_batch(squares), 0)
    real_head = online._align_head

    def tagged_head(features):
        emb, predictions = real_head(features)
        tagged = []
        for lvl, e in enumerate(emb):
            t = torch.zeros_like(e)
            n, r = e.shape[:2]
            t[..., 0] = torch.arange(n)[:, None].float()
            t[..., 1] = torch.arange(r)[None, :].float() + sum(x.shape[1] for x in emb[:lvl])
            tagged.append(t)
        return tagged, predictions

    online._align_head = tagged_head
    matches = []
    original = online._match
    online._match = lambda a, inst: matches.append(original(a, inst)) or matches[-1]
    with EventStorage(0):
        _, emb, ids = online.align_forward(views, with_losses=False)
    gt = [v["instances"] for v in views]
    for (img, pos), sample_id in zip(emb[:, :2].long().tolist(), ids.tolist()):
        m = int(matches[img][pos])
        expected = int(gt[img].gt_ids[m]) if m >= 0 else -1
        assert sample_id == expected
    assert (ids >= 0).any() and (ids == -1).any()


# ------------------------------------------------------------------------------- FCOS losses


def test_fcos_recipe_defaults_and_the_authors_box_loss(squares):
    cfg = load_config(R50_PRETRAIN["fcos"])
    det = cfg.model.detector
    assert (det.box_loss, det.ctrness_on, det.sample_scope) == ("aligndet", "cls", "batch")
    assert det.center_sampling_radius == float("inf")
    model = _pretrain_model("fcos")
    online = model.online
    assert online.center_sampling_radius == float("inf") and online.box_loss == "aligndet"

    # no centre sampling: a location inside a large box far from its centre is matched
    anchors = [Boxes(torch.tensor([[0.0, 0.0, 8.0, 8.0], [26.0, 26.0, 34.0, 34.0]]))]
    big = Instances((100, 100))
    big.gt_boxes = Boxes(torch.tensor([[0.0, 0.0, 60.0, 60.0]]))
    assert online._match(anchors, big).tolist() == [0, 0]
    online.center_sampling_radius = 1.5
    assert online._match(anchors, big).tolist() == [-1, 0]  # detectron2's centre sampling
    online.center_sampling_radius = float("inf")

    # centerness from the classification tower
    seen = {}

    def keep(key, index):
        def hook(module, inputs, output):
            seen.setdefault(key, (inputs[0], output)[index])

        return hook

    online.head.cls_subnet.register_forward_hook(keep("cls", 1))
    online.head.ctrness.register_forward_hook(keep("ctr_in", 0))
    views = model._views(_batch(squares), 0)
    with EventStorage(0):
        online.align_forward(views)
    assert seen["ctr_in"] is seen["cls"]

    # the loss on a hand-made case: two positives sampled, one positive left out
    level = Boxes(torch.tensor([[0.0, 0.0, 8.0, 8.0], [8.0, 0.0, 16.0, 8.0], [0, 8, 8, 16.0]]))
    matched = [torch.tensor([0, 0, 0])]
    gt_box = torch.tensor([[0.0, 0.0, 24.0, 16.0]])
    inst = Instances((32, 32))
    inst.gt_boxes = Boxes(gt_box)
    deltas = torch.tensor([[[0.5, 0.5, 2.0, 1.0], [1.0, 0.5, 1.0, 1.0], [0.5, 1.0, 2.0, 0.5]]])
    predictions = {"deltas": [deltas], "ctrness": [torch.tensor([[[0.3], [-0.2], [1.0]]])]}
    sampled = torch.tensor([[True, True, False]])
    got = online._align_losses([level], predictions, matched, [inst], sampled)

    centres = level.get_centers()[:2]
    pred = online.box2box_transform.apply_deltas(deltas[0, :2], level.tensor[:2])
    l, t = centres[:, 0] - 0.0, centres[:, 1] - 0.0
    r, b = 24.0 - centres[:, 0], 16.0 - centres[:, 1]
    ctr = torch.sqrt((torch.min(l, r) / torch.max(l, r)) * (torch.min(t, b) / torch.max(t, b)))
    iou = torch.diag(pairwise_iou(Boxes(pred), Boxes(gt_box.expand(2, 4))))
    loss_loc = float((-iou.log() * ctr).sum() / ctr.sum())
    loss_ctr = float(
        torch.nn.functional.binary_cross_entropy_with_logits(
            torch.tensor([0.3, -0.2]), ctr, reduction="sum"
        )
        / 2
    )
    assert float(got["loss_fcos_loc"]) == pytest.approx(loss_loc, rel=1e-5)
    assert float(got["loss_fcos_ctr"]) == pytest.approx(loss_ctr, rel=1e-5)
    online.box_loss = "detectron2"  # the switch: GIoU over all positives
    d2 = online._align_losses([level], predictions, matched, [inst], sampled)
    assert float(d2["loss_fcos_loc"]) != pytest.approx(loss_loc, rel=1e-3)


# ------------------------------------------------------------------------------- colour, scales


def _rgb_image():
    g = np.random.default_rng(0)
    img = g.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    img[:8] = g.integers(60, 120, (8, 32, 3), dtype=np.uint8)  # not full-range: autocontrast acts
    return img


def _authors(op: str, rgb: np.ndarray, m: int) -> np.ndarray:
    """The authors' operation on an RGB image at magnitude m, written out from rand_aug.py."""
    pil = Image.fromarray(rgb)
    factor = m * 1.8 / 10 + 0.1
    return np.asarray(
        {
            "Identity": lambda: pil,
            "AutoContrast": lambda: ImageOps.autocontrast(pil),
            "RandEqualize": lambda: ImageOps.equalize(pil),
            "RandSolarize": lambda: ImageOps.solarize(pil, min(int(m * 256 / 10), 255)),
            "RandColor": lambda: ImageEnhance.Color(pil).enhance(factor),
            "RandContrast": lambda: ImageEnhance.Contrast(pil).enhance(factor),
            "RandBrightness": lambda: ImageEnhance.Brightness(pil).enhance(factor),
            "RandSharpness": lambda: ImageEnhance.Sharpness(pil).enhance(factor),
            "RandPosterize": lambda: ImageOps.posterize(pil, 4 - int(m * 4 / 10)),
        }[op]()
    )


@pytest.mark.parametrize("op", sorted(RANDAUG_COLOUR_OPS))
def test_randaug_colour_op_is_the_authors_on_bgr_images(op, monkeypatch):
    assert len(RANDAUG_COLOUR_OPS) == 9
    rgb = _rgb_image()
    for m in (1, 5, 9):
        monkeypatch.setattr(np.random, "randint", lambda lo, hi, m=m: m)
        bgr_out = RandAugColour(op, image_format="BGR").get_transform(rgb[:, :, ::-1].copy())
        got = bgr_out.apply_image(rgb[:, :, ::-1].copy())[:, :, ::-1]
        np.testing.assert_array_equal(got, _authors(op, rgb, m))
        rgb_out = RandAugColour(op, image_format="RGB").get_transform(rgb)
        np.testing.assert_array_equal(rgb_out.apply_image(rgb.copy()), _authors(op, rgb, m))


def test_randaug_choice_and_magnitudes_are_drawn_as_the_authors():
    np.random.seed(0)
    rgb = _rgb_image()
    magnitudes = set()
    aug = RandAugColour("RandSolarize", image_format="RGB")
    for _ in range(300):
        out = aug.get_transform(rgb).apply_image(rgb.copy())
        thresholds = [m for m in range(0, 11) if np.array_equal(out, _authors(aug.op, rgb, m))]
        magnitudes.add(thresholds[0])
    assert magnitudes == set(range(1, 10))  # np.random.randint(1, 10)
    choice = aligndet_colour_augmentation()
    assert sorted(a.op for a in choice.augmentations) == sorted(RANDAUG_COLOUR_OPS)
    picked = {choice.augmentations[np.random.randint(9)].op for _ in range(200)}
    assert len(picked) == 9


def test_pretraining_views_use_the_authors_six_scales_and_colour_ops(squares):
    from detectron2.data import transforms as T

    from d2ext.data.transforms import RandomChoice

    d, boxes = squares
    cfg = load_config(R50_PRETRAIN["faster_rcnn"])
    mapper_cfg = cfg.dataloader.train.mapper
    assert mapper_cfg.nms_iou == 0.5
    augs = instantiate(mapper_cfg.augmentations)
    resize, flip, colour = augs
    assert isinstance(resize, T.ResizeShortestEdge) and isinstance(flip, T.RandomFlip)
    assert isinstance(colour, RandomChoice) and len(colour.augmentations) == 9
    mapper = AlignDetDatasetMapper(proposals=lambda _: boxes, augmentations=augs)
    np.random.seed(0)
    sides = {min(v["height"], v["width"]) for _ in range(40) for v in mapper(d)["views"]}
    assert sides == set(ALIGNDET_SCALES) == {640, 672, 704, 736, 768, 800}


# ------------------------------------------------------------------------------- proposal NMS


def test_proposal_nms_removes_near_duplicates_so_they_are_not_negatives(squares):
    d, boxes = squares
    dup = boxes[0] + np.array([1, 1, 1, 0], np.float32)  # IoU ~0.93 with box 0, listed later
    proposals = np.concatenate([boxes, dup[None]])
    from detectron2.data import transforms as T

    augs = [T.ResizeShortestEdge((200,), 400, "choice"), T.RandomFlip(0.5)]
    off = AlignDetDatasetMapper(proposals=lambda _: proposals, augmentations=augs, nms_iou=None)
    on = AlignDetDatasetMapper(proposals=lambda _: proposals, augmentations=augs)
    assert on.nms_iou == 0.5  # the default
    np.random.seed(0)
    out_off, out_on = off(d), on(d)
    # NMS off: the duplicate has its own id; its box overlaps box 0's at IoU > 0.5, so the
    # InfoNCE takes each as the other's negative
    assert out_off["num_ids"] == 5
    v = out_off["views"][0]["instances"]
    iou = pairwise_iou(v.gt_boxes, v.gt_boxes).fill_diagonal_(0)
    assert float(iou.max()) > 0.5 and set(v.gt_ids[iou.max(0).values > 0.5].tolist()) == {0, 4}
    # NMS on: the later duplicate is gone, the first (file order) kept; no two ids overlap > 0.5
    assert out_on["num_ids"] == 4
    for view in out_on["views"]:
        inst = view["instances"]
        assert inst.gt_ids.tolist() == [0, 1, 2, 3]
        assert float(pairwise_iou(inst.gt_boxes, inst.gt_boxes).fill_diagonal_(0).max()) <= 0.5
    np.testing.assert_allclose(on.pseudo_boxes(d, 200, 200), boxes + [0, 0, 1, 1])
    # NMS before the top-k cut: max_proposals=5 keeps the 4 distinct boxes
    top = AlignDetDatasetMapper(proposals=lambda _: proposals, augmentations=augs, max_proposals=5)
    assert len(top.pseudo_boxes(d, 200, 200)) == 4
    with pytest.raises(ValueError, match="nms_iou"):
        AlignDetDatasetMapper(proposals=lambda _: proposals, nms_iou=0.0)


# ------------------------------------------------------------------------------- fine-tuning


@pytest.mark.parametrize("kind", sorted(R50_FINETUNE))
def test_finetune_modules_schedule_and_input(kind):
    from detectron2.layers import FrozenBatchNorm2d

    cfg = load_config(R50_FINETUNE[kind])
    model = instantiate(cfg.model).train()
    bottom_up = model.backbone.bottom_up
    assert isinstance(bottom_up, NormEvalResNet) and bottom_up.norm_eval
    # stem and res2 frozen (mmdet frozen_stages=1), res3-res5 SyncBN in eval mode, affine trained
    assert isinstance(bottom_up.stem.conv1.norm, FrozenBatchNorm2d)
    assert not any(p.requires_grad for p in bottom_up.stem.parameters())
    assert not any(p.requires_grad for p in bottom_up.res2.parameters())
    bns = [m for n, m in bottom_up.named_modules() if n.startswith(("res3", "res4", "res5"))]
    bns = [m for m in bns if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(type(m) is torch.nn.SyncBatchNorm for m in bns)
    assert all(not m.training and m.weight.requires_grad for m in bns)
    x = torch.randn(1, 3, 64, 64)
    before = bns[0].running_mean.clone()
    bottom_up(x)
    assert torch.equal(before, bns[0].running_mean)  # statistics frozen
    # SyncBN neck in training mode (one process on CPU: plain batch norm)
    neck = [model.backbone.fpn_lateral3.norm, model.backbone.fpn_output3.norm]
    assert all(type(m) is torch.nn.SyncBatchNorm and m.training for m in neck)
    assert model.backbone.fpn_lateral3.bias is None
    # input: one scale, 800 (long side 1333), flip
    resize = instantiate(cfg.dataloader.train.mapper.augmentations[0])
    assert tuple(resize.short_edge_length) == (800,) and resize.max_size == 1333
    # schedule: warmup 500 from 0.001, x0.1 after epochs 8 and 11 of 12
    sched = instantiate(cfg.lr_multiplier)
    n = cfg.train.max_iter
    assert n == 88000
    assert sched(0) == pytest.approx(0.001) and sched(500 / n) == pytest.approx(1.0)
    assert sched((n * 8 // 12 - 1) / n) == 1.0 and sched((n * 8 // 12 + 1) / n) == 0.1
    assert sched((n * 11 // 12 + 1) / n) == pytest.approx(0.01)


@pytest.mark.parametrize("kind", sorted(R50_FINETUNE))
def test_finetune_optimizer_groups_and_clipping(kind):
    cfg = load_config(R50_FINETUNE[kind])
    model = instantiate(cfg.model)
    cfg.optimizer.params.model = model
    opt = instantiate(cfg.optimizer)
    base = {"faster_rcnn": 0.03, "retinanet": 0.015, "fcos": 0.015}[kind]
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {names[id(g["params"][0])]: (g["lr"], g["weight_decay"]) for g in opt.param_groups}
    assert set(groups) == {n for n, p in model.named_parameters() if p.requires_grad}
    norm_bias = "backbone.fpn_lateral3.norm.bias"
    conv_bias = {"faster_rcnn": "roi_heads.box_head.conv1.bias"}.get(kind, "head.cls_score.bias")
    assert groups["backbone.fpn_lateral3.weight"] == pytest.approx((base, 5e-5))
    assert groups[norm_bias] == pytest.approx((base, 5e-5))  # norms decayed, normal lr
    if kind == "fcos":  # bias_lr_mult 2, bias_decay_mult 0, clip 35
        assert groups[conv_bias] == pytest.approx((2 * base, 0.0))
        assert opt.gradient_clipping == {
            "clip_type": "full_model",
            "clip_value": 35.0,
            "norm_type": 2.0,
        }
        params = [p for g in opt.param_groups for p in g["params"]]
        for p in params:
            p.grad = torch.full_like(p, 1.0)
        opt.step()
        total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        assert float(total) == pytest.approx(35.0, rel=1e-3)
    else:
        assert groups[conv_bias] == pytest.approx((base, 5e-5))
        assert not hasattr(opt, "gradient_clipping")


def test_pretraining_schedule_and_decay_as_the_authors():
    cfg = load_config(R50_PRETRAIN["fcos"])
    sched = instantiate(cfg.lr_multiplier)
    n = cfg.train.max_iter
    assert sched(0) == pytest.approx(0.001) and sched(500 / n) == pytest.approx(1.0)
    assert sched((n * 8 // 12 + 1) / n) == pytest.approx(0.1)
    assert sched((n * 11 // 12 + 1) / n) == pytest.approx(0.01)
    assert cfg.optimizer.params.weight_decay_norm is None  # every parameter decayed


# ------------------------------------------------------------------------------- bad inputs


def _subset(view: dict, keep_ids: list[int]) -> dict:
    inst = view["instances"]
    keep = torch.tensor([int(i) in keep_ids for i in inst.gt_ids], dtype=torch.bool)
    return {**view, "instances": inst[keep]}


@pytest.mark.parametrize("kind", sorted(PRETRAIN))
def test_empty_views_and_views_without_a_shared_box_give_a_finite_loss(kind, squares):
    model = _pretrain_model(kind)
    batch = _batch(squares)
    # image 0: view 1 has no box at all; image 1: the views share no box
    batch[0] = {**batch[0], "views": [_subset(batch[0]["views"][0], []), batch[0]["views"][1]]}
    v0, v1 = batch[1]["views"]
    batch[1] = {**batch[1], "views": [_subset(v0, [0, 1]), _subset(v1, [2, 3])]}
    empty = [
        {**b, "views": [_subset(b["views"][0], []), _subset(b["views"][1], [])]} for b in batch
    ]
    for case in (batch, empty):
        with EventStorage(0):
            losses = model(case)
        assert all(math.isfinite(float(v)) for v in losses.values()), losses
        sum(losses.values()).backward()


def test_an_image_without_usable_proposals_is_replaced_in_the_batch(squares, tmp_path):
    from detectron2.data.common import MapDataset

    d, boxes = squares
    empty = {**d, "image_id": 4}
    per_image = {3: boxes, 4: np.array([[500, 500, 600, 600]], np.float32)}  # outside
    mapper = AlignDetDatasetMapper(proposals=lambda x: per_image[x["image_id"]])
    assert mapper(empty) is None
    dataset = MapDataset([empty, d], mapper)
    np.random.seed(0)
    out = dataset[0]  # detectron2 draws another image instead
    assert out is not None and out["image_id"] == 3 and out["num_ids"] == 4
