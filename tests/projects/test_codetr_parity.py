"""Co-Deformable-DETR against its authors' code (projects/CoDETR/README.md, parity table): each
setting checked on the built model, optimizer or augmentation of the full-scale configs."""

import math

import numpy as np
import pytest
import torch
from detectron2.config import instantiate
from detectron2.data import transforms as T
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling.poolers import assign_boxes_to_levels
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage
from torch import nn

from d2ext.data.transforms import DETR_SCALES
from d2ext.modeling.deformable_detr import DeformableTransformer
from d2ext.modeling.deformable_detr.ms_deform_attn import MSDeformAttn
from d2ext.modeling.deformable_detr.position_encoding import inverse_sigmoid
from d2ext.projects.codetr import build_positive_queries, octave_anchor_sizes
from d2ext.projects.codetr import modeling as co_modeling

from ..helpers import load_config
from .test_codetr import _co_model, _inputs

R50 = "projects/CoDETR/configs/co_deformable_detr_R50_12ep_coco.py"
SWIN = "projects/CoDETR/configs/co_deformable_detr_SwinT_12ep_coco.py"


@pytest.fixture(scope="module")
def r50_cfg():
    return load_config(R50)


@pytest.fixture(scope="module")
def r50_model(r50_cfg):
    torch.manual_seed(0)
    return instantiate(r50_cfg.model)


def _var_close(w: torch.Tensor, expected: float, rtol: float = 0.1) -> bool:
    return abs(w.detach().double().var().item() - expected) < rtol * expected


def test_transformer_dropout_is_zero(r50_model):
    drops = [m for m in r50_model.transformer.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 6 * 3 + 6 * 4  # encoder: attn + FFN 2; decoder: 2 attn + FFN 2
    assert all(m.p == 0.0 for m in drops)
    mha = [m for m in r50_model.transformer.modules() if isinstance(m, nn.MultiheadAttention)]
    assert len(mha) == 6 and all(m.dropout == 0.0 for m in mha)
    # the class default is the authors' too; other rates stay a choice
    t = DeformableTransformer(num_classes=3, num_encoder_layers=1, num_decoder_layers=1)
    assert {m.p for m in t.modules() if isinstance(m, nn.Dropout)} == {0.0}
    t = DeformableTransformer(
        num_classes=3, num_encoder_layers=1, num_decoder_layers=1, dropout=0.1
    )
    assert {m.p for m in t.modules() if isinstance(m, nn.Dropout)} == {0.1}


def test_optimizer_slows_backbone_and_sampling_offsets(r50_cfg, r50_model):
    opt_cfg = r50_cfg.optimizer
    opt_cfg.params.model = r50_model
    opt = instantiate(opt_cfg)
    base = opt_cfg.lr
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    names = dict(r50_model.named_parameters())
    offsets = [n for n in names if ".sampling_offsets." in n]
    # weight and bias of every deformable attention: 6 encoder self-attn + 6 decoder cross-attn
    assert len(offsets) == 2 * 12
    # the authors' reference_points key has no parameter to match in the two-stage model
    assert not any("reference_points" in n for n in names)
    for n, p in names.items():
        if not p.requires_grad:
            continue
        slow = n.startswith("backbone.") or "sampling_offsets" in n
        assert lr_of[id(p)] == pytest.approx(base * (0.1 if slow else 1.0)), n
        assert wd_of[id(p)] == 1e-4, n  # every parameter decays, norms and biases too
    assert opt_cfg.clip_value == 0.1


def test_swin_weight_decay():
    cfg = load_config(SWIN)
    cfg.model.transformer.update(num_encoder_layers=1, num_decoder_layers=1)
    model = instantiate(cfg.model)
    cfg.optimizer.params.model = model
    opt = instantiate(cfg.optimizer)
    assert {g["weight_decay"] for g in opt.param_groups} == {0.05}
    lrs = {n: g["lr"] for g in opt.param_groups for n in [id(p) for p in g["params"]]}
    off = model.transformer.encoder_layers[0].self_attn.sampling_offsets.weight
    assert lrs[id(off)] == pytest.approx(0.1 * cfg.optimizer.lr)


def test_rpn_anchors_nine_per_location(r50_model):
    rpn = r50_model.rpn
    gen = rpn.anchor_generator
    assert gen.strides == [8, 16, 32, 64, 128] and gen.offset == 0.0
    assert rpn.rpn_head.objectness_logits.out_channels == 9
    assert rpn.rpn_head.anchor_deltas.out_channels == 9 * 4
    for stride, cell in zip(gen.strides, gen.cell_anchors):
        assert cell.shape == (9, 4)
        w, h = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
        torch.testing.assert_close(cell[:, :2] + cell[:, 2:], torch.zeros(9, 2))  # centred
        sizes = sorted({round(v, 3) for v in (w * h).sqrt().tolist()})
        expected = [round(4 * 2 ** (k / 3) * stride, 3) for k in range(3)]
        assert sizes == pytest.approx(expected, rel=1e-4)
        assert sorted({round(v, 4) for v in (h / w).tolist()}) == [0.5, 1.0, 2.0]
    assert octave_anchor_sizes([8], 4.0, 3) == [[32.0, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)]]


def test_backbone_freezes_stem_and_res2(r50_model):
    bb = r50_model.backbone
    for name, p in bb.named_parameters():
        frozen = name.startswith(("stem.", "res2."))
        assert p.requires_grad != frozen, name
    assert any(n.startswith("res2.") for n, _ in bb.named_parameters())
    # every BN is frozen (the authors' requires_grad=False + norm_eval=True)
    bns = [m for m in bb.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert not bns
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in bb.modules()) == 53


def test_roi_pooler_levels_match_finest_scale_112(r50_model):
    pooler = r50_model.roi_heads.box_pooler
    assert len(pooler.level_poolers) == 4
    assert [lp.spatial_scale for lp in pooler.level_poolers] == [1 / 8, 1 / 16, 1 / 32, 1 / 64]
    assert r50_model.roi_heads.box_in_features == ["p3", "p4", "p5", "p6"]
    side = torch.cat([torch.linspace(2, 4000, 997), torch.tensor([223.9, 224.0, 1792.0, 3000])])
    boxes = torch.stack([torch.zeros_like(side), torch.zeros_like(side), side, side], 1)
    got = assign_boxes_to_levels(
        [Boxes(boxes)],
        pooler.min_level,
        pooler.max_level,
        pooler.canonical_box_size,
        pooler.canonical_level,
    )
    # mmdet SingleRoIExtractor.map_roi_levels with finest_scale 112 over 4 levels
    authors = torch.floor(torch.log2(side / 112 + 1e-6)).clamp(0, 3).long()
    assert torch.equal(got, authors)


def _expected_xavier_var(w: torch.Tensor) -> float:
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
    return 2.0 / (fan_in + fan_out)


def test_xavier_init_only_where_the_authors_apply_it(r50_model):
    t = r50_model.transformer
    xavier = {
        "ffn.linear1": t.encoder_layers[0].ffn.linear1.weight,  # default var: 1/(3*256)
        "ffn.linear2": t.decoder_layers[5].ffn.linear2.weight,
        "mha.out_proj": t.decoder_layers[0].self_attn.out_proj.weight,
        "enc_output": t.enc_output.weight,
        "pos_trans": t.pos_trans.weight,
        "aux_pos_trans": r50_model.aux_pos_trans[1].weight,
        "pos_feats_trans": r50_model.pos_feats_trans[0].weight,
    }
    for name, w in xavier.items():
        assert _var_close(w, _expected_xavier_var(w)), name
        # PyTorch's Linear default (kaiming-uniform a=sqrt(5)): var 1 / (3 fan_in)
        assert not _var_close(w, 1 / (3 * w.shape[1])), name
    # the head's branches and the query embedding keep their own initialisation
    kept = {
        "class_embed": t.class_embed[0].weight,
        "bbox_embed": t.bbox_embed[2].layers[0].weight,
    }
    for name, w in kept.items():
        assert _var_close(w, 1 / (3 * w.shape[1])), name
        assert not _var_close(w, _expected_xavier_var(w)), name
    assert _var_close(t.query_embed.weight, 1.0)
    assert torch.all(t.bbox_embed[0].layers[-1].weight == 0)
    bias = -math.log(0.99 / 0.01)
    assert torch.allclose(t.class_embed[3].bias, torch.full_like(t.class_embed[3].bias, bias))
    # MSDeformAttn's own init runs after the xavier pass; level_embed ~ N(0, 1)
    attn = [m for m in t.modules() if isinstance(m, MSDeformAttn)]
    assert len(attn) == 12
    for m in attn:
        assert torch.all(m.sampling_offsets.weight == 0)
        assert torch.all(m.attention_weights.weight == 0)
        assert m.sampling_offsets.bias.abs().max() == 4.0  # the ring, 4 points
    assert _var_close(t.level_embed, 1.0, rtol=0.5)  # 1024 samples
    # the authors' scalar head embedding: xavier over a (2, 1) weight, U(-sqrt 2, sqrt 2)
    assert r50_model.head_pos_embed.weight.shape == (2, 1)
    assert r50_model.head_pos_embed.weight.abs().max() <= math.sqrt(2)
    # the switch: PyTorch defaults
    torch.manual_seed(0)
    plain = DeformableTransformer(
        num_classes=80, num_encoder_layers=1, num_decoder_layers=1, xavier_init=False
    )
    w = plain.encoder_layers[0].ffn.linear1.weight
    assert _var_close(w, 1 / (3 * w.shape[1])) and not _var_close(w, _expected_xavier_var(w))


def test_positive_queries_floor_of_nine():
    bg = 5
    boxes = torch.tensor([[0.0, 0.0, 50.0, 50.0], [10.0, 10.0, 30.0, 40.0], [5.0, 5, 15, 15]])
    feats = torch.randn(3, 8)
    img = {
        "boxes": boxes,
        "labels": torch.tensor([1, bg, bg]),
        "target_boxes": boxes,
        "feats": feats,
    }
    q = build_positive_queries([img], [(100, 50)], num_classes=bg)
    assert q["ref"].shape == (1, 9, 4) and q["num_pos"] == 1 and q["feats"].shape == (1, 9, 8)
    assert q["labels"][0, 0] == 1 and (q["labels"][0, 1:] == bg).all()
    torch.testing.assert_close(q["feats"][0, 0], feats[0])
    # negatives are drawn again when too few; their features follow them
    for j in range(1, 9):
        assert any(torch.equal(q["feats"][0, j], feats[i]) for i in (1, 2))
    # a batch without any positive still trains a group of 9 background queries
    none = dict(img, labels=torch.full((3,), bg))
    q = build_positive_queries([none, none], [(100, 50)] * 2, num_classes=bg)
    assert q["ref"].shape == (2, 9, 4) and q["num_pos"] == 0 and (q["labels"] == bg).all()


def test_positive_query_features_head_order_and_embedding(monkeypatch):
    model = _co_model().train()
    assert model.with_coord_feat and model.min_positive_queries == 9
    seen = []
    original = co_modeling.build_positive_queries

    def spy(positives, *args, **kw):
        seen.append(positives)
        return original(positives, *args, **kw)

    monkeypatch.setattr(co_modeling, "build_positive_queries", spy)
    maps = {}
    adapter_forward = model.adapter.forward

    def keep_maps(enc):
        maps.update(adapter_forward(enc))
        return maps

    monkeypatch.setattr(model.adapter, "forward", keep_maps)
    inputs = _inputs()
    torch.manual_seed(3)
    with EventStorage(0):
        losses = model(inputs)
    rcnn, atss = seen  # head 0 = R-CNN, head 1 = ATSS (the authors' order)
    assert rcnn[0]["boxes"].shape[0] <= model.roi_heads.batch_size_per_image
    # every image keeps the batch's fewest sampled RoIs, positives first (max_proposal)
    assert len({len(x["boxes"]) for x in rcnn}) == 1
    for x in rcnn:
        fg = (x["labels"] < model.num_classes).long()
        assert fg.sum() > 0 and torch.equal(fg, fg.sort(descending=True)[0])
    levels = list(maps.values())
    n_anchors = sum(x.shape[2] * x.shape[3] for x in levels)
    assert atss[0]["boxes"].shape[0] == n_anchors and atss[0]["feats"].shape == (n_anchors, 128)
    # ATSS: an anchor's feature is the adapter map at its centre, on its level (all 5 levels)
    start = sum(x.shape[2] * x.shape[3] for x in levels[:2])
    h, w = levels[2].shape[2:]
    for a in (0, 7, h * w - 1):
        y, x = divmod(a, w)
        box = atss[1]["boxes"][start + a]
        assert torch.allclose((box[:2] + box[2:]) / 2, torch.tensor([x * 32.0, y * 32.0]))
        torch.testing.assert_close(atss[1]["feats"][start + a], levels[2][1, :, y, x])
    # R-CNN: the RoI feature averaged over its 7x7 bins
    pooler = model.roi_heads.box_pooler
    feats_in = [maps[f][:1] for f in model.roi_heads.box_in_features]
    pooled = pooler(feats_in, [Boxes(rcnn[0]["boxes"])]).mean((2, 3))
    torch.testing.assert_close(rcnn[0]["feats"], pooled)
    # the feature term changes the content, the head embedding adds one scalar to query_pos
    q = original(atss, [x["image"].shape[1:] for x in inputs], model.num_classes, 300)
    pos_a, con_a = model.positive_query_embedding(1, q)
    pos_b, con_b = model.positive_query_embedding(1, dict(q, feats=q["feats"] + 1.0))
    assert not torch.allclose(con_a, con_b) and torch.equal(pos_a, pos_b)
    # boxes that cross the border: the authors embed sigmoid(inverse_sigmoid(box))
    q["ref"] = q["ref"] * 1.5 - 0.25
    pos_a, con_a = model.positive_query_embedding(1, q)
    base_pos, base_con = model.transformer.query_from_boxes(
        inverse_sigmoid(q["ref"]).sigmoid(), model.aux_pos_trans[1], model.aux_pos_trans_norm[1]
    )
    torch.testing.assert_close(pos_a - base_pos, model.head_pos_embed.weight[1].expand_as(pos_a))
    assert not torch.allclose(con_a, base_con)
    # gradients reach the feature path, the head embedding and the adapter through f
    sum(losses.values()).backward()
    params = dict(model.named_parameters())
    for name in ("pos_feats_trans.0.weight", "pos_feats_trans.1.weight", "head_pos_embed.weight"):
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name
    assert params["head_pos_embed.weight"].grad.shape == (2, 1)


def test_positive_query_switches():
    off = _co_model(with_coord_feat=False)
    assert not hasattr(off, "pos_feats_trans") and not hasattr(off, "head_pos_embed")
    with EventStorage(0):
        losses = off.train()(_inputs())
    assert all(torch.isfinite(v) for v in losses.values())
    vec = _co_model(head_embed="vector")
    assert vec.head_pos_embed.weight.shape == (2, 128)
    with pytest.raises(ValueError, match="head_embed"):
        _co_model(head_embed="matrix")


def _augment(augs, image, boxes):
    aug_input = T.AugInput(image, boxes=boxes)
    tfms = T.AugmentationList(augs)(aug_input)
    return aug_input, tfms


def test_detr_augmentation_two_policies(r50_cfg):
    augs = instantiate(r50_cfg.dataloader.train.mapper.augmentations)
    np.random.seed(0)
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    boxes = np.array([[100.0, 100.0, 300.0, 260.0]])
    crops, flips, n = 0, 0, 300
    for _ in range(n):
        out, tfms = _augment(augs, image, boxes)
        kinds = [type(t).__name__ for t in tfms.transforms]
        flips += "HFlipTransform" in kinds
        h, w = out.image.shape[:2]
        assert min(h, w) in DETR_SCALES or max(h, w) == 1333
        torch.testing.assert_close(
            torch.as_tensor(out.boxes), torch.as_tensor(tfms.apply_box(boxes))
        )
        if "CropTransform" in kinds:
            crops += 1
            resizes = [t for t in tfms.transforms if type(t).__name__ == "ResizeTransform"]
            crop = next(t for t in tfms.transforms if type(t).__name__ == "CropTransform")
            assert len(resizes) == 2
            assert min(resizes[0].new_h, resizes[0].new_w) in (400, 500, 600)
            assert 384 <= crop.h <= 600 and 384 <= crop.w <= 600
        else:
            assert kinds.count("ResizeTransform") == 1
            assert abs(w / h - 640 / 480) < 0.01
    assert 0.4 < crops / n < 0.6 and 0.4 < flips / n < 0.6
    # the pre-crop resize caps the long side at 4200
    long_image = np.zeros((100, 1500, 3), dtype=np.uint8)
    for _ in range(40):
        _, tfms = _augment(augs, long_image, boxes)
        resizes = [t for t in tfms.transforms if type(t).__name__ == "ResizeTransform"]
        if len(resizes) == 2:
            assert resizes[0].new_w == 4200 and resizes[0].new_h == 280
            break
    else:
        pytest.fail("no crop policy drawn in 40 images")
