"""Co-DINO: three decoder passes per step (DINO's with denoising, one per auxiliary head with
no mask and no matching), the positive-query construction (content only; the optional feature
term), quality focal loss, soft-NMS inference, inference identical to DINO loaded with the
stripped checkpoint, batches with no boxes, and the full-scale config's built values."""

import pytest
import torch
from detectron2.config import instantiate
from detectron2.utils.events import EventStorage
from torchvision.ops import box_convert

from d2ext.data.transforms import PadToSize
from d2ext.modeling.deformable_detr.position_encoding import box_sine_embedding
from d2ext.modeling.dino import DINO, DINOTransformer
from d2ext.modeling.losses import aligned_box_iou, quality_focal_loss
from d2ext.projects.codetr import AUXILIARY_PREFIXES, CoDINO, ViTLayerDecayLRFactor, strip_auxiliary

from ..helpers import load_config
from ..modeling.test_dino import _inputs, _shrink, bad_input_losses, spy_matcher

CO = "projects/CoDETR/configs/co_dino_R18_demo.py"
BASE = "projects/CoDETR/configs/dino_R18_demo.py"


def _co(**overrides) -> CoDINO:
    cfg = _shrink(load_config(CO).model)
    cfg.update(overrides)
    torch.manual_seed(0)
    return instantiate(cfg)


def _spy_decode(model, monkeypatch):
    calls = []

    def decode(enc, content, query_pos, ref, return_hidden=False, attn_mask=None):
        calls.append((content.shape[1], attn_mask, query_pos))
        return DINOTransformer.decode(
            model.transformer, enc, content, query_pos, ref, return_hidden, attn_mask
        )

    monkeypatch.setattr(model.transformer, "decode", decode)
    return calls


def test_training_runs_dino_then_one_pass_per_auxiliary_head(monkeypatch):
    model = _co().train()
    seen = spy_matcher(monkeypatch)
    calls = _spy_decode(model, monkeypatch)
    with EventStorage(0):
        losses = model(_inputs())
    assert seen == [20, 20, 20]  # matching queries and proposals only
    # DINO's pass: 3 groups x (3 + 3) denoising queries, then 20, under the mask
    assert calls[0][0] == 18 + 20 and calls[0][1].shape == (38, 38)
    # R-CNN (head 0) and ATSS (head 1) positives: no mask, positions from the decoder
    assert len(calls) == 3 and all(c[1] is None and c[2] is None for c in calls[1:])
    assert calls[1][0] >= 9 and calls[2][0] >= 9  # the floor of 9 positive queries
    for key in ("loss_class_dn", "loss_class_pos0", "loss_giou_0_pos1", "aux_atss_loss_cls"):
        assert key in losses, key
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    params = dict(model.named_parameters())
    for name in (
        "aux_pos_trans.0.weight",
        "aux_pos_trans.1.weight",
        "denoising.label_embed.weight",
        "adapter.downsample.0.weight",
        "transformer.ref_point_head.layers.0.weight",
    ):
        assert params[name].grad.abs().sum() > 0, name


def test_positive_query_content_only_and_no_head_embedding():
    model = _co()
    d = model.transformer.d_model
    assert model.aux_pos_trans[0].out_features == d and not model.with_coord_feat
    assert not hasattr(model, "head_pos_embed") and not hasattr(model, "pos_feats_trans")
    boxes = torch.tensor([[[0.3, 0.4, 0.2, 0.1], [0.5, 0.5, 1.2, 0.4]]])  # one crosses the border
    query_pos, content = model.positive_query_embedding(1, {"ref": boxes})
    assert query_pos is None
    expected = model.aux_pos_trans_norm[1](
        model.aux_pos_trans[1](box_sine_embedding(boxes.clamp(0, 1), num_feats=d // 2))
    )
    torch.testing.assert_close(content, expected, atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="head embedding"):
        _co(head_embed="scalar")


def test_positive_query_feature_term_changes_queries_and_gets_gradients():
    model = _co(with_coord_feat=True).train()
    assert not hasattr(model, "head_pos_embed")
    boxes = torch.tensor([[[0.3, 0.4, 0.2, 0.1], [0.6, 0.5, 0.3, 0.4]]])
    feats = torch.randn(1, 2, model.adapter.channels)
    _, with_f = model.positive_query_embedding(0, {"ref": boxes, "feats": feats})
    model.with_coord_feat = False
    _, without = model.positive_query_embedding(0, {"ref": boxes})
    model.with_coord_feat = True
    term = model.pos_feats_norm[0](model.pos_feats_trans[0](feats))
    torch.testing.assert_close(with_f - without, term)
    assert term.abs().sum() > 0
    with EventStorage(0):
        losses = model(_inputs())
    sum(losses.values()).backward()
    for h in (0, 1):
        assert model.pos_feats_trans[h].weight.grad.abs().sum() > 0, h


def test_quality_focal_loss_with_iou_targets():
    model = _co()
    crit = model.criterion
    assert crit.class_loss == "quality_focal"
    torch.manual_seed(3)
    logits = torch.randn(2, 6, 5)
    boxes = torch.rand(2, 6, 4) * 0.4 + 0.2
    targets = torch.rand(2, 6, 4) * 0.4 + 0.2
    labels = torch.tensor([[0, 5, 3, 5, 5, 1], [5, 5, 5, 2, 5, 5]])
    pos = labels < 5
    iou = torch.zeros(2, 6)
    iou[pos] = aligned_box_iou(boxes[pos], targets[pos])
    expected = quality_focal_loss(logits, labels, iou, beta=2.0)
    got = crit.dense_losses(logits, boxes, labels, targets, num_pos=4.0)["loss_class"]
    torch.testing.assert_close(got, expected / 4.0 * crit.weight_dict["loss_class"])
    # the IoU targets: a prediction that equals its target is pushed towards 1
    same = crit.classification_loss(
        logits[:1, :1], labels[:1, :1], targets[:1, :1], targets[:1, :1]
    )
    worse = crit.classification_loss(logits[:1, :1], labels[:1, :1], boxes[:1, :1], targets[:1, :1])
    assert not torch.allclose(same, worse)


@pytest.mark.parametrize("soft_nms", [None, 0.8])
def test_inference_equals_dino_loaded_with_the_stripped_checkpoint(soft_nms):
    model = _co(soft_nms_iou=soft_nms, num_preselect=40 if soft_nms else None).train()
    with EventStorage(0):  # a training step, so the weights are not the initial ones
        losses = model(_inputs())
    sum(losses.values()).backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.01 * p.grad
    model.eval()
    inputs = _inputs()
    with torch.no_grad():
        out = model(inputs)
    base_cfg = _shrink(load_config(BASE).model)
    base_cfg.update(soft_nms_iou=soft_nms, num_preselect=40 if soft_nms else None)
    base = instantiate(base_cfg).eval()
    assert type(base) is DINO
    stripped = strip_auxiliary(model.state_dict())
    removed = set(model.state_dict()) - set(stripped)
    assert removed and all(k.startswith(AUXILIARY_PREFIXES) for k in removed)
    base.load_state_dict(stripped, strict=True)
    with torch.no_grad():
        other = base(inputs)
    for a, b in zip(out, other):
        x, y = a["instances"], b["instances"]
        assert len(x) <= 15 and len(x) == len(y)
        assert torch.equal(x.pred_boxes.tensor, y.pred_boxes.tensor)
        assert torch.equal(x.scores, y.scores) and torch.equal(x.pred_classes, y.pred_classes)


def test_batches_without_boxes_or_with_more_boxes_than_dn_queries_train():
    empty, many = bad_input_losses(_co().train())
    assert all(torch.isfinite(v) for v in empty.values())
    assert all(torch.isfinite(v) for v in many.values()) and many["loss_bbox_dn"] > 0


def test_soft_nms_suppresses_duplicates():
    model = _co(soft_nms_iou=0.8, num_preselect=4).eval()
    logits = torch.full((1, 3, 5), -10.0)
    logits[0, :, 2] = torch.tensor([3.0, 2.0, 1.0])
    boxes = torch.tensor([[[0.5, 0.5, 0.4, 0.4], [0.5, 0.5, 0.4, 0.4], [0.2, 0.2, 0.1, 0.1]]])
    (r,) = model.inference(logits, boxes, [(100, 100)])
    p = torch.sigmoid(torch.tensor([3.0, 2.0, 1.0]))
    # the duplicate (IoU 1 >= 0.8) is decayed linearly by 1 - IoU = 0 and dropped, as is the
    # fourth pair's score below min_score 1e-3
    assert len(r) == 2
    torch.testing.assert_close(r.scores, torch.stack([p[0], p[2]]))
    torch.testing.assert_close(
        r.pred_boxes.tensor[0], box_convert(boxes[0, 0], "cxcywh", "xyxy") * 100
    )


def test_vit_layer_decay_factor():
    f = ViTLayerDecayLRFactor(num_layers=24, lr_decay_rate=0.8)
    assert f("backbone.net.pos_embed") == pytest.approx(0.8**25)
    assert f("backbone.net.patch_embed.proj.weight") == pytest.approx(0.8**25)
    assert f("backbone.net.blocks.0.attn.qkv.weight") == pytest.approx(0.8**24)
    assert f("backbone.net.blocks.23.mlp.fc1.bias") == pytest.approx(0.8)
    assert f("backbone.simfp_2.0.weight") == 1.0 and f("transformer.query_embed.weight") == 1.0
    with pytest.raises(ValueError):
        ViTLayerDecayLRFactor(num_layers=0)


def test_full_scale_co_dino_r50_as_the_authors():
    cfg = load_config("projects/CoDETR/configs/co_dino_R50_12ep_coco.py")
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    tr = model.transformer
    assert type(model) is CoDINO and tr.n_levels == 5 and tr.num_queries == 900
    assert [s.stride for s in model.neck.output_shape()] == [4, 8, 16, 32, 64]
    assert model.adapter.strides == [4, 8, 16, 32, 64, 128]
    assert (model.denoising.num_dn_queries, model.denoising.label_noise_ratio) == (100, 0.5)
    assert model.denoising.box_noise_scale == 1.0
    assert model.position_embedding.temperature == 20 and model.position_embedding.offset == 0
    assert model.criterion.class_loss == "quality_focal" and model.criterion.qfl_beta == 2.0
    assert not model.criterion.class_agnostic_proposals
    w = model.criterion.weight_dict
    assert (w["loss_class"], w["loss_bbox"], w["loss_giou_enc"]) == (1.0, 5.0, 2.0)
    m = model.criterion.matcher
    assert (m.cost_class, m.cost_bbox, m.cost_giou) == (2.0, 5.0, 2.0)
    assert model.aux_loss_scale == 12.0 and model.lambda1 == 1.0
    assert not model.with_coord_feat and not hasattr(model, "head_pos_embed")
    assert model.aux_pos_trans[0].out_features == 256
    assert (model.num_detections, model.num_preselect, model.soft_nms_iou) == (300, 900, 0.8)
    assert model.size_divisibility == 1
    anchors = model.rpn.anchor_generator
    assert anchors.num_anchors == [9] * 6 and list(anchors.strides) == [4, 8, 16, 32, 64, 128]
    assert model.roi_heads.box_in_features == ["p2", "p3", "p4", "p5", "p6"]
    # query content N(0, 1) in Co-DINO (xavier in DINO)
    assert abs(tr.query_embed.weight.std().item() - 1.0) < 0.05
    # optimiser: lr 2e-4, x0.1 for the backbone only (sampling_offsets at 1x)
    cfg.optimizer.params.model = model
    opt = instantiate(cfg.optimizer)
    lrs = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for g in opt.param_groups:
        for p in g["params"]:
            lrs[names[id(p)]] = g["lr"]
    assert lrs["transformer.encoder_layers.0.self_attn.sampling_offsets.weight"] == 2e-4
    assert lrs["backbone.res3.0.conv1.weight"] == pytest.approx(2e-5)
    assert lrs["denoising.label_embed.weight"] == 2e-4


def test_dino_r50_configs_as_the_authors():
    cfg = load_config("projects/CoDETR/configs/dino_R50_4scale_12ep_coco.py")
    assert cfg.optimizer.lr == 1e-4 and list(cfg.optimizer.params.lr_factor_func.contains) == []
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    assert type(model) is DINO and model.transformer.n_levels == 4
    assert model.num_detections == 300 and model.soft_nms_iou is None
    assert model.criterion.class_loss == "focal"
    # DINO's content queries are xavier-initialised
    bound = (6 / (900 + 256)) ** 0.5
    assert model.transformer.query_embed.weight.abs().max() <= bound


def test_demo_pairs(tmp_path, monkeypatch):
    import importlib.util
    import json
    import os

    from ..helpers import REPO, demo_data_root

    demo_data_root()
    path = os.path.join(REPO, "projects", "CoDETR", "run_demo.py")
    spec = importlib.util.spec_from_file_location("codetr_run_demo", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    seen = {}

    def fake_arms(config, arms, out, seeds, iters):
        seen.update(arms=arms, out=out)
        ap = {"DINO": 40.0, "Co-DINO": 43.0, "Deformable DETR": 38.0}
        return [{"init": k, "seed": s, "AP": ap[k], "AP50": 50.0} for s in seeds for k in arms]

    monkeypatch.setattr(demo, "finetune_arms", fake_arms)
    (tmp_path / "backbone_init.pth").write_bytes(b"")  # made once per folder: reused
    summary = demo.main(["--pair", "codino", "--out", str(tmp_path), "--seeds", "0", "1"])
    configs = {label: os.path.basename(arm[2]) for label, arm in seen["arms"].items()}
    assert configs == {
        "DINO": "dino_R18_demo.py",
        "Co-DINO": "co_dino_R18_demo.py",
        "Deformable DETR": "deformable_detr_R18_demo.py",
    }
    assert all(arm[1] == str(tmp_path / "backbone_init.pth") for arm in seen["arms"].values())
    assert summary["ap_gain"] == 3.0 and summary["dino_vs_deformable_detr_ap"] == 2.0
    assert json.loads((tmp_path / "summary.json").read_text())["ap_gain"] == 3.0
    # the default pair and output folders stay as they were
    assert demo.PAIRS["codetr"][2] == "codetr_demo" and demo.PAIRS["codino"][2] == "codino_demo"
    assert set(demo.PAIRS["codetr"][0]) == {"Deformable DETR", "Co-DETR"}


# the authors' schedule variants: config -> (encoder layers, Swin drop path or None, epochs,
# lr-step epoch, LSJ image size or None); Sense-X/Co-DETR projects/configs/co_dino/
_VARIANTS = {
    "co_dino_R50_12ep_lsj_coco": (6, None, 12, 11, 1024),
    "co_dino_R50_36ep_lsj_coco": (6, None, 36, 30, 1024),
    "co_dino_R50_9encoder_12ep_lsj_coco": (9, None, 12, 11, 1024),
    "co_dino_R50_9encoder_36ep_lsj_coco": (9, None, 36, 30, 1024),
    "co_dino_SwinL_12ep_coco": (6, 0.3, 12, 11, None),
    "co_dino_SwinL_24ep_coco": (6, 0.5, 24, 20, None),
    "co_dino_SwinL_36ep_coco": (6, 0.6, 36, 30, None),
    "co_dino_SwinL_12ep_lsj_coco": (6, 0.3, 12, 11, 1280),
    "co_dino_SwinL_24ep_lsj_coco": (6, 0.5, 24, 20, 1280),
    "co_dino_SwinL_36ep_lsj_coco": (6, 0.5, 36, 30, 1280),
}


@pytest.mark.parametrize("name", sorted(_VARIANTS))
def test_co_dino_schedule_variants_as_the_authors(name):
    layers, drop_path, epochs, step, lsj = _VARIANTS[name]
    cfg = load_config(f"projects/CoDETR/configs/{name}.py")
    torch.manual_seed(0)
    # encoder depth, on the built transformer
    assert len(instantiate(cfg.model.transformer).encoder_layers) == layers
    # Swin drop path: the last block of the built backbone drops at the configured rate (cut to
    # 2 blocks per stage here; the rate of the last block does not depend on the depth)
    if drop_path is not None:
        cfg.model.backbone.depths = (2, 2, 2, 2)
        backbone = instantiate(cfg.model.backbone)
        assert backbone.layers[-1].blocks[-1].drop_path.drop_prob == pytest.approx(drop_path)
    else:
        assert "SwinTransformer" not in str(cfg.model.backbone._target_)
    # schedule: `epochs` of COCO train2017 at batch 16, lr x0.1 after epoch `step`
    assert cfg.train.max_iter == {12: 88000, 24: 176000, 36: 264000}[epochs]
    sched = instantiate(cfg.lr_multiplier)
    assert sched(step / epochs - 1e-3) == pytest.approx(1.0)
    assert sched(step / epochs + 1e-3) == pytest.approx(0.1)
    # LSJ: every training image is padded to image_size x image_size
    augs = instantiate(cfg.dataloader.train.mapper.augmentations)
    if lsj:
        assert cfg.dataloader.test.mapper.augmentations.image_size == lsj
        pads = [a for a in augs if isinstance(a, PadToSize)]
        assert len(pads) == 1 and (pads[0].height, pads[0].width) == (lsj, lsj)
    else:
        assert not [a for a in augs if isinstance(a, PadToSize)]
