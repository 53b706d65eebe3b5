"""imTED against the authors' code (LiewFeng/imTED@3f5e927), on built objects: the box head's
position table, its final LN, weight decay per parameter, drop path per block, the ViT-L
pyramid block, RPN / mask head shapes, the few-shot stages, and the DETR-style crop policy."""

import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import instantiate
from detectron2.data import DatasetMapper
from detectron2.data import transforms as T
from detectron2.layers import ShapeSpec
from detectron2.structures import BoxMode

from d2ext.data.transforms import DETR_SCALES, RandomChoice, resize_or_crop_resize
from d2ext.model_zoo import get_config
from d2ext.projects.imted import (
    MAEDecoderHead,
    fewshot_init_from_base,
    mae_to_imted,
    sincos_pos_embed_2d,
)
from d2ext.projects.imted.builders import imted_model, imted_optimizer

from ..helpers import REPO
from .test_imted import _official_checkpoint

CONFIGS = os.path.join(REPO, "projects/imTED/configs")


def _shrink(model_cfg, depth=None, width=32, dec=16, dec_depth=2):
    """Narrow the encoder / decoder of an imTED LazyCall (depth kept unless given)."""
    net = model_cfg.backbone.net
    net.update(embed_dim=width, num_heads=2, img_size=224, pretrain_img_size=224)
    if depth is not None:
        net.depth = depth
    model_cfg.backbone.out_channels = 32
    model_cfg.proposal_generator.head.in_channels = 32
    model_cfg.roi_heads.modulator.out_channels = width
    model_cfg.roi_heads.box_head.update(
        input_shape=ShapeSpec(channels=width, height=7, width=7),
        decoder_dim=dec,
        depth=dec_depth,
        num_heads=2,
    )
    model_cfg.roi_heads.box_predictor.input_shape = ShapeSpec(channels=dec)
    if model_cfg.roi_heads.get("mask_head") is not None:
        model_cfg.roi_heads.mask_head.input_shape = ShapeSpec(channels=32, width=14, height=14)
    return model_cfg


def _build(model_cfg):
    torch.manual_seed(0)
    return instantiate(model_cfg)


# ---------------------------------------------------------------- box head: position table


def _authors_table(table: torch.Tensor, size: int = 7) -> torch.Tensor:
    """MAEBBoxHead.interpolate_pos_encoding (mae_bbox_head.py:95-115), written out."""
    n = table.shape[1] - 1
    g, dim = int(n**0.5), table.shape[-1]
    grid = table[:, 1:].reshape(1, g, g, dim).permute(0, 3, 1, 2)
    w0 = h0 = size + 0.1
    grid = F.interpolate(grid, scale_factor=(w0 / g, h0 / g), mode="bicubic")
    return grid.permute(0, 2, 3, 1).reshape(1, -1, dim)


def test_head_position_table_is_the_checkpoint_table_resized_bicubically():
    model = _build(_shrink(imted_model("S"), depth=2))
    ckpt = _official_checkpoint(c=32, d=16, grid=14)  # the decoder table: 1 + 14 x 14 rows
    state, rep = mae_to_imted(ckpt, model)
    assert "roi_heads.box_head.decoder_pos_embed" in rep.loaded
    assert rep.missing == [] and rep.unexpected == [] and rep.shape_mismatch == []
    model.load_state_dict(state, strict=False)
    head = model.roi_heads.box_head
    table = ckpt["model"]["decoder_pos_embed"]
    expect = _authors_table(table)
    assert torch.equal(head.position_table(7, 7), expect)
    # not the size=(7, 7) resize, nor a fresh sin-cos table
    by_size = F.interpolate(
        table[:, 1:].reshape(1, 14, 14, 16).permute(0, 3, 1, 2), size=(7, 7), mode="bicubic"
    )
    assert (by_size.permute(0, 2, 3, 1).reshape(1, 49, 16) - expect).abs().max() > 1e-2
    assert not torch.allclose(expect[0], sincos_pos_embed_2d(16, 7), atol=1e-2)
    # frozen: a buffer (in the state dict, never a parameter)
    assert "decoder_pos_embed" not in dict(head.named_parameters())
    assert "roi_heads.box_head.decoder_pos_embed" in model.state_dict()
    # used at every forward: the output follows the table
    x = torch.randn(3, 32, 7, 7)
    head.eval()
    with torch.no_grad():
        a = head(x)
        t = head.decoder_embed(head.norm(x.flatten(2).transpose(1, 2))) + expect
        t = t.reshape(3, 7, 7, 16)
        for blk in head.decoder_blocks:
            t = blk(t)
        assert torch.allclose(a, head.decoder_box_norm(t.reshape(3, 49, 16).mean(1)), atol=1e-5)
        head.decoder_pos_embed.mul_(2.0)
        assert not torch.allclose(head(x), a)


def test_head_table_of_another_grid_and_the_sincos_switch():
    ckpt = _official_checkpoint(c=32, d=16, grid=4)  # a 64-px MAE: 4 x 4 decoder table
    model = _build(_shrink(imted_model("S"), depth=2))  # head built for MAE's 14 x 14
    _, rep = mae_to_imted(ckpt, model)
    assert any("pretrain_grid=4" in m for m in rep.shape_mismatch)  # says how to fix it
    cfg = _shrink(imted_model("S"), depth=2)
    cfg.roi_heads.box_head.pretrain_grid = 4
    model = _build(cfg)
    state, rep = mae_to_imted(ckpt, model)
    assert "roi_heads.box_head.decoder_pos_embed" in rep.loaded
    model.load_state_dict(state, strict=False)
    head = model.roi_heads.box_head
    assert head.decoder_pos_embed.shape == (1, 17, 16)
    table = ckpt["model"]["decoder_pos_embed"]
    assert torch.equal(head.position_table(7, 7), _authors_table(table))  # 4 -> 7: up-sampled
    # before any checkpoint: MAE's own fixed table (the value official checkpoints hold)
    fresh = MAEDecoderHead(input_shape=ShapeSpec(channels=32, height=7, width=7), decoder_dim=16)
    assert torch.allclose(fresh.decoder_pos_embed[0, 1:], sincos_pos_embed_2d(16, 14))
    assert fresh.decoder_pos_embed[0, 0].abs().sum() == 0
    # switch: today's fixed 7x7 sin-cos table; the checkpoint's table is then unused
    old = _build(_shrink(imted_model("S", head_pos_embed="sincos"), depth=2))
    assert torch.equal(old.roi_heads.box_head.position_table(7, 7)[0], sincos_pos_embed_2d(16, 7))
    _, rep = mae_to_imted(_official_checkpoint(c=32, d=16, grid=14), old)
    assert "decoder_pos_embed" in rep.unused and rep.unexpected == []


def test_final_norm_is_a_fresh_decoder_box_norm():
    ckpt = _official_checkpoint(c=32, d=16, grid=14)
    model = _build(_shrink(imted_model("S"), depth=2))
    state, rep = mae_to_imted(ckpt, model)
    model.load_state_dict(state, strict=False)
    head = model.roi_heads.box_head
    assert not hasattr(head, "decoder_norm")
    assert torch.equal(head.decoder_box_norm.weight, torch.ones(16))
    assert torch.equal(head.decoder_box_norm.bias, torch.zeros(16))
    assert {"decoder_norm.weight", "decoder_norm.bias"} <= set(rep.unused)
    # switch: MAE's decoder_norm loaded as the last LN
    old = _build(_shrink(imted_model("S", pretrained_final_norm=True), depth=2))
    state, rep = mae_to_imted(ckpt, old)
    old.load_state_dict(state, strict=False)
    assert torch.equal(
        old.roi_heads.box_head.decoder_norm.weight, ckpt["model"]["decoder_norm.weight"]
    )
    assert rep.missing == []


# ---------------------------------------------------------------- optimizer


def _groups(model, **kw):
    opt_cfg = imted_optimizer(num_layers=len(model.backbone.net.blocks), **kw)
    opt_cfg.params.model = model
    opt = instantiate(opt_cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    return opt, {names[id(p)]: g for g in opt.param_groups for p in g["params"]}


@pytest.mark.parametrize("mask", [False, True])
def test_weight_decay_zero_for_every_bias_and_1d_parameter(mask):
    model = _build(_shrink(imted_model("B", mask=mask), depth=2))
    opt, group_of = _groups(model)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["lr"] == 1e-4
    params = dict(model.named_parameters())
    assert set(group_of) == {n for n, p in params.items() if p.requires_grad}
    for name, g in group_of.items():
        p = params[name]
        exempt = p.ndim == 1 or name.endswith((".bias", "_token", "pos_embed"))
        assert g["weight_decay"] == (0.0 if exempt else 0.05), name
    # the parameters today's code decayed: biases, detectron2's channel LN, the modulator
    for name in (
        "backbone.net.blocks.0.attn.qkv.bias",
        "backbone.simfp_2.1.weight",  # the up-sampling branch's BatchNorm
        "backbone.simfp_2.4.norm.weight",  # detectron2.layers.LayerNorm in the pyramid
        "proposal_generator.rpn_head.conv.bias",
        "roi_heads.box_pooler.modulator.weight",
        "roi_heads.box_pooler.modulator.conv.bias",
        "roi_heads.box_head.decoder_box_norm.weight",
        "roi_heads.box_predictor.cls_score.bias",
        "backbone.net.cls_token",
        "backbone.net.pos_embed",
    ):
        assert group_of[name]["weight_decay"] == 0.0, name
    assert group_of["backbone.net.blocks.0.attn.qkv.weight"]["weight_decay"] == 0.05
    assert group_of["roi_heads.box_head.decoder_embed.weight"]["weight_decay"] == 0.05
    if mask:
        assert group_of["roi_heads.mask_head.mask_fcn1.bias"]["weight_decay"] == 0.0
    # the frozen position table is not in the optimizer
    assert "roi_heads.box_head.decoder_pos_embed" not in params
    # exclude: the authors' BackboneFronzen constructor leaves backbone.* out
    _, kept = _groups(model, exclude=("backbone.",))
    assert kept and not any(n.startswith("backbone.") for n in kept)
    assert set(kept) == {n for n in group_of if not n.startswith("backbone.")}


# ---------------------------------------------------------------- encoder, pyramid, heads


@pytest.mark.parametrize("size,rate,depth", [("S", 0.1, 12), ("B", 0.2, 12), ("L", 0.3, 24)])
def test_drop_path_per_block(size, rate, depth):
    model = _build(_shrink(imted_model(size)))
    blocks = model.backbone.net.blocks
    assert len(blocks) == depth
    got = [float(getattr(b.drop_path, "drop_prob", 0.0)) for b in blocks]
    assert got == pytest.approx(torch.linspace(0, rate, depth).tolist())
    assert all(
        isinstance(b.drop_path, torch.nn.Identity) for b in model.roi_heads.box_head.decoder_blocks
    )  # the decoder: no drop path


def test_vit_l_pyramid_from_block_11_and_rpn_mask_heads():
    model = _build(_shrink(imted_model("L", mask=True))).eval()
    bb = model.backbone
    assert bb.in_feature == "pyramid_feat" and bb.net.pyramid_block == 11
    x = torch.randn(1, 3, 64, 96)
    captured = {}
    hooks = [
        bb.net.blocks[i].register_forward_hook(lambda m, a, o, i=i: captured.update({i: o}))
        for i in (11, 23)
    ]
    with torch.no_grad():
        out = bb(x)
    for h in hooks:
        h.remove()
    as_map = lambda t: t[:, 0, 1:].reshape(1, 4, 6, -1).permute(0, 3, 1, 2)  # noqa: E731
    assert torch.equal(out["last_feat"], as_map(captured[23]))
    with torch.no_grad():
        assert torch.allclose(out["p4"], bb.simfp_4(as_map(captured[11])))
        assert not torch.allclose(out["p4"], bb.simfp_4(as_map(captured[23])))
    # S and B: block 11 is the last block, the pyramid reads it directly
    small = _build(_shrink(imted_model("B")))
    assert small.backbone.in_feature == "last_feat" and small.backbone.net.pyramid_block is None
    last = _build(_shrink(imted_model("L", pyramid_block=None)))
    assert last.backbone.in_feature == "last_feat"
    # RPN head: one 3x3 conv (mmdet's RPNHead); mask convs without norm (FCNMaskHead)
    assert isinstance(model.proposal_generator.rpn_head.conv, torch.nn.Conv2d)
    fcn = model.roi_heads.mask_head
    assert all(getattr(fcn, f"mask_fcn{i}").norm is None for i in range(1, 5))
    vitdet = _build(_shrink(imted_model("B", mask=True, rpn_convs=2, mask_norm="LN")))
    assert len(vitdet.proposal_generator.rpn_head.conv) == 2
    assert vitdet.roi_heads.mask_head.mask_fcn1.norm is not None


def test_encoder_position_resize_and_padding_as_the_authors():
    from detectron2.modeling.backbone.utils import get_abs_pos

    from d2ext.projects.imted import IMTEDViT

    kw = {"img_size": 224, "pretrain_img_size": 224, "embed_dim": 32, "depth": 1, "num_heads": 2}
    x = torch.randn(1, 3, 64, 96)  # 4 x 6 tokens
    for mode in ("imted", "detectron2"):
        torch.manual_seed(0)
        vit = IMTEDViT(keep_cls_token=True, pos_resize=mode, **kw)
        vit.blocks = torch.nn.ModuleList([torch.nn.Identity()])  # output = tokens + position
        with torch.no_grad():
            got = vit(x)["last_feat"].permute(0, 2, 3, 1) - vit.patch_embed(x)
            grid = vit.pos_embed[:, 1:].reshape(1, 14, 14, 32).permute(0, 3, 1, 2)
            authors = F.interpolate(grid, scale_factor=(4.1 / 14, 6.1 / 14), mode="bicubic")
            authors = authors.permute(0, 2, 3, 1)
            d2 = get_abs_pos(vit.pos_embed, True, (4, 6))
        assert torch.allclose(got, authors if mode == "imted" else d2, atol=1e-6), mode
        assert not torch.allclose(authors, d2, atol=1e-3)
    # images padded to a multiple of 32 (the authors' Pad); 0: no padding
    model = _build(_shrink(imted_model("S"), depth=2))
    image = [{"image": torch.rand(3, 90, 150) * 255}]
    assert model.preprocess_image(image).tensor.shape[-2:] == (96, 160)
    cfg = _shrink(imted_model("S"), depth=2)
    cfg.backbone.size_divisibility = 0
    assert _build(cfg).preprocess_image(image).tensor.shape[-2:] == (90, 150)


def test_upsampling_branch_full_width_with_batchnorm():
    from detectron2.layers import NaiveSyncBatchNorm

    model = _build(_shrink(imted_model("B"), depth=2))
    p2, p3 = model.backbone.simfp_2, model.backbone.simfp_3
    shapes = [tuple(m.weight.shape) for m in (p2[0], p2[3], p3[0])]
    assert shapes == [(32, 32, 2, 2)] * 3  # ConvT at the encoder width (the authors' fpn1/fpn2)
    assert isinstance(p2[1], NaiveSyncBatchNorm) and isinstance(p2[2], torch.nn.GELU)
    assert p2[4].weight.shape[1] == p3[1].weight.shape[1] == 32  # 1x1 convs read width C
    out = model.backbone(torch.randn(2, 3, 64, 64))
    assert out["p2"].shape == (2, 32, 16, 16) and out["p3"].shape == (2, 32, 8, 8)
    d2 = _build(_shrink(imted_model("B", upsample="detectron2"), depth=2))
    assert d2.backbone.simfp_2[0].weight.shape == (32, 16, 2, 2)
    assert d2.backbone.simfp_2[3].weight.shape == (16, 8, 2, 2)
    assert not isinstance(d2.backbone.simfp_2[1], torch.nn.BatchNorm2d)


# ---------------------------------------------------------------- configs: few-shot, COCO


def _config(name):
    cfg = get_config(f"imTED/{name}.py")
    _shrink(cfg.model, dec_depth=8)
    model = _build(cfg.model).train()
    cfg.optimizer.params.model = model
    opt = instantiate(cfg.optimizer)
    names = {id(p): n for n, p in model.named_parameters()}
    group_of = {names[id(p)]: g for g in opt.param_groups for p in g["params"]}
    return cfg, model, opt, group_of


def test_fewshot_base_stage_trains_everything():
    cfg, model, opt, group_of = _config("imted_faster_rcnn_vit_b_fewshot_base")
    params = dict(model.named_parameters())
    assert all(p.requires_grad for p in params.values())  # the encoder trains
    assert set(group_of) == set(params)
    assert opt.defaults["lr"] == 1e-4
    lr = {n: g["lr"] for n, g in group_of.items()}
    assert lr["backbone.net.blocks.0.attn.qkv.weight"] == pytest.approx(1e-4 * 0.75**12)
    assert lr["backbone.net.patch_embed.proj.weight"] == pytest.approx(1e-4 * 0.75**13)
    assert lr["backbone.net.blocks.11.mlp.fc1.weight"] == pytest.approx(1e-4 * 0.75)
    assert lr["roi_heads.box_head.decoder_blocks.0.attn.qkv.weight"] == pytest.approx(1e-4)
    assert model.roi_heads.num_classes == 60
    assert model.backbone.net.blocks[11].drop_path.drop_prob == pytest.approx(0.2)
    assert cfg.train.max_iter == 24 * 117266 // 16
    assert list(cfg.lr_multiplier.steps) == pytest.approx([18 / 24, 22 / 24])
    assert cfg.lr_multiplier.warmup_iter == 500


def test_fewshot_finetuning_freezes_the_authors_backbone():
    cfg, model, opt, group_of = _config("imted_faster_rcnn_vit_b_fewshot_10shot")
    bb = model.backbone
    resampling = {  # the authors' backbone.fpn1 / fpn2 (fpn3 identity, fpn4 max-pool)
        n
        for n, _ in bb.named_parameters()
        if n.startswith(("simfp_2.0", "simfp_2.1", "simfp_2.3", "simfp_3.0"))
    }
    assert len(resampling) == 8
    for n, p in bb.named_parameters():
        frozen = n.startswith("net.") or n in resampling
        assert p.requires_grad != frozen, n
        assert ("backbone." + n in group_of) != frozen, n
    for prefix in ("proposal_generator.", "roi_heads."):
        assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith(prefix))
    lr = {n: g["lr"] for n, g in group_of.items()}
    assert opt.defaults["lr"] == 1e-4
    assert lr["roi_heads.box_head.decoder_embed.weight"] == pytest.approx(1e-4 * 0.8**9)
    assert lr["roi_heads.box_head.norm.weight"] == pytest.approx(1e-4 * 0.8**9)
    assert lr["roi_heads.box_head.decoder_blocks.0.mlp.fc1.weight"] == pytest.approx(1e-4 * 0.8**8)
    assert lr["roi_heads.box_head.decoder_blocks.7.mlp.fc1.weight"] == pytest.approx(1e-4 * 0.8)
    for n in (
        "roi_heads.box_head.decoder_box_norm.weight",
        "roi_heads.box_predictor.cls_score.weight",
        "backbone.simfp_2.4.weight",
        "proposal_generator.rpn_head.conv.weight",
    ):
        assert lr[n] == pytest.approx(1e-4), n
    assert group_of["roi_heads.box_predictor.cls_score.bias"]["weight_decay"] == 0.0
    # frozen parts get no gradient; the encoder stays in train mode (drop path 0.2 active)
    out = bb(torch.randn(1, 3, 64, 64))
    sum(v.sum() for v in out.values()).backward()
    assert all(p.grad is None for n, p in bb.named_parameters() if not p.requires_grad)
    assert bb.simfp_2[4].weight.grad is not None
    assert bb.net.training and bb.net.blocks[11].drop_path.drop_prob == pytest.approx(0.2)
    assert cfg.train.max_iter == 108 * 800 // 16
    assert list(cfg.lr_multiplier.steps) == pytest.approx([81 / 108, 99 / 108])


def test_fewshot_init_keeps_base_and_background_rows(tmp_path):
    from d2ext.checkpoint import D2extCheckpointer

    base = _build(_shrink(imted_model("S", num_classes=3), depth=2))
    torch.manual_seed(1)
    fine = instantiate(_shrink(imted_model("S", num_classes=5), depth=2))
    fresh = {k: v.clone() for k, v in fine.state_dict().items()}
    base_classes, all_classes = ["cat", "dog", "car"], ["car", "bird", "cat", "bus", "dog"]
    state = fewshot_init_from_base({"model": base.state_dict()}, fine, base_classes, all_classes)
    torch.save({"model": state}, tmp_path / "init.pth")
    D2extCheckpointer(fine).load(str(tmp_path / "init.pth"))
    w, bw = (
        fine.roi_heads.box_predictor.cls_score.weight,
        base.roi_heads.box_predictor.cls_score.weight,
    )
    for i, c in enumerate(base_classes):
        assert torch.equal(w[all_classes.index(c)], bw[i]), c
    assert torch.equal(w[-1], bw[-1])  # background
    key = "roi_heads.box_predictor.cls_score.weight"
    for c in ("bird", "bus"):  # novel: the fine-tuning model's fresh rows
        assert torch.equal(w[all_classes.index(c)], fresh[key][all_classes.index(c)])
    reg = "roi_heads.box_predictor.bbox_pred.weight"
    assert torch.equal(fine.state_dict()[reg], fresh[reg])  # fresh, as the authors'
    blk = "roi_heads.box_head.decoder_blocks.1.mlp.fc2.weight"
    assert torch.equal(fine.state_dict()[blk], base.state_dict()[blk])
    with pytest.raises(ValueError, match="not among"):
        fewshot_init_from_base(base.state_dict(), fine, ["zebra", "dog", "car"], all_classes)


@pytest.mark.parametrize(
    "name,rate",
    [
        ("imted_faster_rcnn_vit_s_3x_coco", 0.1),
        ("imted_faster_rcnn_vit_b_3x_coco", 0.2),
        ("imted_faster_rcnn_vit_l_3x_coco", 0.3),
        ("imted_mask_rcnn_vit_b_3x_coco", 0.2),
        ("imted_mask_rcnn_vit_l_3x_coco", 0.3),
    ],
)
def test_coco_configs_drop_path_and_augmentation(name, rate):
    cfg = get_config(f"imTED/{name}.py")
    net = instantiate(_shrink(cfg.model).backbone.net)
    depth = len(net.blocks)
    got = [float(getattr(b.drop_path, "drop_prob", 0.0)) for b in net.blocks]
    assert got == pytest.approx(torch.linspace(0, rate, depth).tolist())
    assert net.pyramid_block == (11 if depth == 24 else None)
    mapper = instantiate(cfg.dataloader.train.mapper)
    flip, choice = mapper.augmentations.augs
    assert isinstance(flip, T.RandomFlip) and isinstance(choice, RandomChoice)
    resize, (pre, crop, post) = choice.augmentations[0], choice.augmentations[1].augs
    assert tuple(resize.short_edge_length) == DETR_SCALES == tuple(range(480, 801, 32))
    assert resize.max_size == 1333 and post.short_edge_length == resize.short_edge_length
    assert tuple(pre.short_edge_length) == (400, 500, 600) and pre.max_size == 1333
    assert crop.crop_type == "absolute_range" and tuple(crop.crop_size) == (384, 600)
    assert cfg.lr_multiplier.warmup_iter == 500
    assert cfg.train.max_iter == 36 * 117266 // 16  # 36 epochs of annotated train2017
    assert list(cfg.lr_multiplier.steps) == pytest.approx([27 / 36, 33 / 36])


# ---------------------------------------------------------------- crop policy


def _policy_draws(aug, image, n, seed=0):
    np.random.seed(seed)
    out = []
    for _ in range(n):
        inp = T.AugInput(image.copy())
        tfms = T.AugmentationList([aug])(inp)
        out.append((tfms, inp.image))
    return out


def test_crop_policy_sizes_and_choice():
    image = np.zeros((480, 640, 3), np.uint8)
    aug = resize_or_crop_resize()
    draws = _policy_draws(aug, image, 200)
    crops = 0
    for tfms, img in draws:
        h, w = img.shape[:2]
        assert min(h, w) in DETR_SCALES and max(h, w) <= 1333
        crop = [t for t in tfms.transforms if isinstance(t, T.CropTransform)]
        if not crop:
            continue
        crops += 1
        (c,) = crop
        # the crop comes after a resize to short side 400 / 500 / 600 of the 480 x 640 image
        first = tfms.transforms[0]
        assert isinstance(first, T.ResizeTransform) and first.new_h in (400, 500, 600)
        assert min(first.new_h, 384) <= c.h <= min(first.new_h, 600)
        assert min(first.new_w, 384) <= c.w <= min(first.new_w, 600)
        assert 0 <= c.y0 <= first.new_h - c.h and 0 <= c.x0 <= first.new_w - c.w
    assert 70 <= crops <= 130  # one of two policies, equal chance
    with pytest.raises(ValueError, match="non-empty"):
        resize_or_crop_resize(scales=())


def test_crop_policy_boxes_follow_the_pixels(tmp_path):
    """Through detectron2's DatasetMapper: each box still covers its white rectangle."""
    image = np.zeros((480, 640, 3), np.uint8)
    boxes = [[40, 60, 200, 220], [300, 100, 620, 460], [580, 10, 636, 50]]
    for x0, y0, x1, y1 in boxes:
        image[y0:y1, x0:x1] = 255
    path = str(tmp_path / "img.png")
    cv2.imwrite(path, image)
    record = {
        "file_name": path,
        "height": 480,
        "width": 640,
        "image_id": 0,
        "annotations": [
            {"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": i, "iscrowd": 0}
            for i, b in enumerate(boxes)
        ],
    }
    mapper = DatasetMapper(
        is_train=True,
        augmentations=[T.RandomFlip(horizontal=True), resize_or_crop_resize()],
        image_format="BGR",
    )
    np.random.seed(1)
    fewer = 0
    for _ in range(30):
        out = mapper(dict(record))
        img = out["image"][0].float()  # [H, W]
        h, w = img.shape
        assert min(h, w) in DETR_SCALES
        inst = out["instances"]
        fewer += len(inst) < 3
        white = img > 127
        covered = torch.zeros_like(white)
        for (x0, y0, x1, y1), cls in zip(inst.gt_boxes.tensor.tolist(), inst.gt_classes.tolist()):
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            xi0, yi0, xi1, yi1 = int(x0) + 2, int(y0) + 2, int(x1) - 2, int(y1) - 2
            if xi1 > xi0 and yi1 > yi0:
                assert img[yi0:yi1, xi0:xi1].mean() > 250, cls  # inside: white
            covered[max(0, int(y0) - 2) : int(y1) + 3, max(0, int(x0) - 2) : int(x1) + 3] = True
        assert not (white & ~covered).any()  # no white pixel outside every box
    assert fewer > 0  # some crops cut a box out entirely (dropped)
