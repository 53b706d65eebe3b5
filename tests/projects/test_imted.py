"""imTED: the modulator starts as a no-op, the MAE decoder head, the official MAE checkpoint
mapping (every key accounted for, position-embedding interpolation), layer decay, the compact
MAE."""

import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import LazyConfig, instantiate
from detectron2.layers import ShapeSpec
from detectron2.structures import Boxes

from d2ext.projects.imted import (
    MAE,
    IMTEDViT,
    LayerDecay,
    MAEDecoderHead,
    mae_to_imted,
    sincos_pos_embed_2d,
)

from ..helpers import REPO

DEMO = "projects/imTED/configs/imted_faster_rcnn_vit_tiny_demo.py"
TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "dec": 16, "dec_depth": 2, "dec_heads": 2}


def _demo_model(head_grid=None, **net):
    cfg = LazyConfig.load(os.path.join(REPO, DEMO))
    cfg.model.backbone.net.update(embed_dim=32, depth=2, num_heads=2, **net)
    cfg.model.roi_heads.modulator.out_channels = 32
    cfg.model.roi_heads.box_head.update(
        input_shape=ShapeSpec(channels=32, height=7, width=7), decoder_dim=16, depth=2, num_heads=2
    )
    # the decoder's position table has the MAE's grid (by default the encoder's)
    grid = head_grid or cfg.model.backbone.net.pretrain_img_size // 16
    cfg.model.roi_heads.box_head.pretrain_grid = grid
    cfg.model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=16)
    torch.manual_seed(0)
    return instantiate(cfg.model)


def _features(model, size=(160, 224)):
    images = torch.randn(2, 3, *size)
    return model.backbone(images)


def test_modulator_is_a_no_op_at_initialisation():
    model = _demo_model().eval()
    heads = model.roi_heads
    feats = _features(model)
    assert set(feats) == {"p2", "p3", "p4", "p5", "p6", "last_feat"}
    assert feats["last_feat"].shape == (2, 32, 10, 14)  # stride 16, encoder width
    boxes = [
        Boxes(torch.tensor([[4.0, 4, 60, 50], [30, 20, 150, 140]])),
        Boxes(torch.tensor([[0.0, 0, 223, 159]])),
    ]
    inputs = [feats[f] for f in heads.box_in_features]
    assert heads.box_in_features == ["last_feat", "p2", "p3", "p4", "p5"]
    with torch.no_grad():
        both = heads.box_head(heads.box_pooler(inputs, boxes))
        single = heads.box_head(heads.box_pooler.single(inputs[:1], boxes))
        assert torch.equal(both, single)  # exactly: the per-channel weight starts at 0
        heads.box_pooler.modulator.weight.fill_(0.5)
        assert not torch.allclose(heads.box_head(heads.box_pooler(inputs, boxes)), single)
    # the weight receives gradient at initialisation (it is not dead)
    heads.box_pooler.modulator.weight.data.zero_()
    heads.box_head(heads.box_pooler(inputs, boxes)).sum().backward()
    assert heads.box_pooler.modulator.weight.grad.abs().sum() > 0


def test_decoder_head_shapes_and_position_embedding():
    head = MAEDecoderHead(
        input_shape=ShapeSpec(channels=24, height=7, width=7), decoder_dim=16, depth=2, num_heads=4
    )
    out = head(torch.randn(5, 24, 7, 7))
    assert out.shape == (5, 16) and head.output_shape.channels == 16
    assert head(torch.randn(0, 24, 7, 7)).shape == (0, 16)
    with pytest.raises(ValueError, match="7x7"):
        head(torch.randn(2, 24, 5, 5))
    # MAE's 2D sin-cos: first half encodes x (column), second half y (row); sin then cos
    pe = sincos_pos_embed_2d(8, 3)
    assert pe.shape == (9, 8)
    row, col = 1, 2
    expect_x = [torch.sin(torch.tensor(col * 1.0)), torch.sin(torch.tensor(col / 100.0))]
    assert torch.allclose(pe[row * 3 + col, :2], torch.stack(expect_x), atol=1e-6)
    assert torch.allclose(
        pe[row * 3 + col, 4:6], torch.tensor([1.0, 0.01]).mul(row).sin(), atol=1e-6
    )
    # the detector's box predictor: K + 1 scores and class-specific boxes, GIoU x10
    model = _demo_model()
    p = model.roi_heads.box_predictor
    scores, deltas = p(torch.randn(3, 16))
    assert scores.shape == (3, 6) and deltas.shape == (3, 20)
    assert p.box_reg_loss_type == "giou" and p.loss_weight["loss_box_reg"] == 10.0


def _official_checkpoint(c=32, depth=2, d=16, ddepth=2, grid=4, patch=16):
    """A synthetic checkpoint in the official MAE full layout, written key by key."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    sd = {"cls_token": r(1, 1, c), "pos_embed": r(1, 1 + grid * grid, c)}
    sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"] = r(c, 3, patch, patch), r(c)

    def block(prefix, w):
        for n in ("norm1", "norm2"):
            sd[f"{prefix}.{n}.weight"], sd[f"{prefix}.{n}.bias"] = r(w), r(w)
        sd[f"{prefix}.attn.qkv.weight"], sd[f"{prefix}.attn.qkv.bias"] = r(3 * w, w), r(3 * w)
        sd[f"{prefix}.attn.proj.weight"], sd[f"{prefix}.attn.proj.bias"] = r(w, w), r(w)
        sd[f"{prefix}.mlp.fc1.weight"], sd[f"{prefix}.mlp.fc1.bias"] = r(4 * w, w), r(4 * w)
        sd[f"{prefix}.mlp.fc2.weight"], sd[f"{prefix}.mlp.fc2.bias"] = r(w, 4 * w), r(w)

    for i in range(depth):
        block(f"blocks.{i}", c)
    sd["norm.weight"], sd["norm.bias"] = r(c), r(c)
    sd["mask_token"] = r(1, 1, d)
    sd["decoder_embed.weight"], sd["decoder_embed.bias"] = r(d, c), r(d)
    sd["decoder_pos_embed"] = r(1, 1 + grid * grid, d)
    for j in range(ddepth):
        block(f"decoder_blocks.{j}", d)
    sd["decoder_norm.weight"], sd["decoder_norm.bias"] = r(d), r(d)
    sd["decoder_pred.weight"], sd["decoder_pred.bias"] = (
        r(patch * patch * 3, d),
        r(patch * patch * 3),
    )
    return {"model": sd}


def test_official_checkpoint_maps_every_key():
    ckpt = _official_checkpoint(grid=4)
    model = _demo_model(pretrain_img_size=64)  # 4x4 grid: no interpolation
    state, rep = mae_to_imted(ckpt, model)
    src = ckpt["model"]
    assert rep.missing == [] and rep.unexpected == [] and rep.shape_mismatch == []
    assert sorted(rep.unused) == [
        "decoder_norm.bias",  # imTED's head: a fresh decoder_box_norm instead
        "decoder_norm.weight",
        "decoder_pred.bias",
        "decoder_pred.weight",
        "mask_token",
    ]
    assert len(rep.loaded) + len(rep.unused) == len(src)  # every key accounted for
    assert torch.equal(
        state["backbone.net.blocks.1.mlp.fc2.weight"], src["blocks.1.mlp.fc2.weight"]
    )
    assert torch.equal(
        state["roi_heads.box_head.norm.weight"], src["norm.weight"]
    )  # encoder norm -> head
    assert torch.equal(
        state["roi_heads.box_head.decoder_blocks.1.attn.qkv.bias"],
        src["decoder_blocks.1.attn.qkv.bias"],
    )
    assert torch.equal(state["backbone.net.cls_token"], src["cls_token"])
    assert torch.equal(state["roi_heads.box_head.decoder_pos_embed"], src["decoder_pos_embed"])
    incompatible = model.load_state_dict(state, strict=False)
    assert not incompatible.unexpected_keys
    loaded = set(state)
    for k in model.state_dict():
        if k.startswith(("backbone.net.", "roi_heads.box_head.")):
            assert k in loaded or k.startswith("roi_heads.box_head.decoder_box_norm."), k
    # encoder only (the baseline): the head is left to its random initialisation
    state, rep = mae_to_imted(ckpt, model, load_decoder=False)
    assert not any(k.startswith("roi_heads.") for k in state) and "norm.weight" in rep.unused


def test_position_embedding_is_interpolated():
    ckpt = _official_checkpoint(grid=4)
    model = _demo_model(pretrain_img_size=96, head_grid=4)  # encoder: 6x6 grid
    state, rep = mae_to_imted(ckpt, model)
    assert rep.interpolated == ["backbone.net.pos_embed"] and rep.shape_mismatch == []
    pos = ckpt["model"]["pos_embed"]
    ref = F.interpolate(
        pos[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2),
        size=(6, 6),
        mode="bicubic",
        align_corners=False,
    )
    got = state["backbone.net.pos_embed"]
    assert got.shape == (1, 37, 32) and torch.equal(got[:, :1], pos[:, :1])
    assert torch.allclose(got[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, 36, 32), atol=1e-6)
    # and at run time the ViT interpolates again to the input's token grid
    assert _features(model, (96, 128))["last_feat"].shape[-2:] == (6, 8)


def test_wrong_checkpoints_fail_clearly():
    model = _demo_model(pretrain_img_size=64)
    d2 = {"model": {f"backbone.net.{k}": v for k, v in _official_checkpoint()["model"].items()}}
    with pytest.raises(ValueError, match="official layout"):
        mae_to_imted(d2, model)
    enc_only = {
        k: v
        for k, v in _official_checkpoint()["model"].items()
        if not k.startswith(("decoder", "mask"))
    }
    with pytest.raises(ValueError, match="encoder-only"):
        mae_to_imted(enc_only, model)
    assert mae_to_imted(enc_only, model, load_decoder=False)[1].missing == []
    bad = _official_checkpoint(c=48)
    assert mae_to_imted(bad, model)[1].shape_mismatch  # another width: reported, not loaded


def test_layer_decay_rates():
    f = LayerDecay(0.75, num_layers=12)
    assert f("backbone.net.patch_embed.proj.weight") == pytest.approx(0.75**13)
    assert f("backbone.net.pos_embed") == f("backbone.net.cls_token") == pytest.approx(0.75**13)
    assert f("backbone.net.blocks.0.attn.qkv.weight") == pytest.approx(0.75**12)
    assert f("backbone.net.blocks.11.mlp.fc2.bias") == pytest.approx(0.75)
    assert f("backbone.simfp_2.0.weight") == 1.0
    assert f("roi_heads.box_head.decoder_blocks.0.attn.qkv.weight") == 1.0
    fs = LayerDecay(0.75, num_layers=12, num_decoder_layers=8)
    assert fs("roi_heads.box_head.decoder_embed.weight") == pytest.approx(0.75**9)
    assert fs("roi_heads.box_head.decoder_blocks.0.norm1.weight") == pytest.approx(0.75**8)
    assert fs("roi_heads.box_head.decoder_blocks.7.norm1.weight") == pytest.approx(0.75)
    assert (
        fs("roi_heads.box_head.decoder_norm.weight")
        == fs("roi_heads.box_predictor.cls_score.weight")
        == 1.0
    )
    # through detectron2's optimizer builder, as the configs use it
    cfg = LazyConfig.load(os.path.join(REPO, DEMO))
    model = _demo_model()
    cfg.optimizer.params.model = model
    opt = instantiate(cfg.optimizer)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    base = cfg.optimizer.lr
    net = model.backbone.net
    assert lr_of[id(net.blocks[0].attn.qkv.weight)] == pytest.approx(base * 0.75**6)
    assert lr_of[id(net.patch_embed.proj.weight)] == pytest.approx(base * 0.75**7)
    assert lr_of[id(model.roi_heads.box_head.decoder_embed.weight)] == pytest.approx(base)


def test_cls_token_kept_in_the_sequence_and_frozen_encoder():
    kw = {"img_size": 64, "patch_size": 16, "embed_dim": 32, "depth": 2, "num_heads": 2}
    kw["pretrain_img_size"] = 64
    torch.manual_seed(0)
    vit = IMTEDViT(keep_cls_token=True, **kw)
    out = vit(torch.randn(1, 3, 64, 96))["last_feat"]
    assert out.shape == (1, 32, 4, 6)
    out.sum().backward()
    assert vit.cls_token.grad.abs().sum() > 0  # the cls token attends with the patches
    frozen = IMTEDViT(keep_cls_token=False, frozen=True, **kw)
    assert not any(p.requires_grad for p in frozen.parameters())


def test_compact_mae_official_keys_and_masked_loss():
    mae = MAE(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2,
              decoder_embed_dim=16, decoder_depth=2, decoder_num_heads=2)  # fmt: skip
    official = set(_official_checkpoint(grid=4)["model"])
    assert set(mae.state_dict()) == official  # the checkpoint it writes is in MAE's layout
    imgs = torch.randn(2, 3, 64, 64)
    latent, mask, restore = mae.forward_encoder(imgs, torch.Generator().manual_seed(0))
    assert latent.shape == (2, 1 + 4, 32) and mask.sum(1).tolist() == [12.0, 12.0]  # 75% of 16
    pred = mae.forward_decoder(latent, restore)
    assert pred.shape == (2, 16, 16 * 16 * 3)
    loss = mae.forward_loss(imgs, pred, mask)
    changed = pred.clone()
    changed[mask == 0] += 5.0  # predictions of visible patches do not count
    assert torch.allclose(mae.forward_loss(imgs, changed, mask), loss)
    changed[mask == 1] += 5.0
    assert not torch.allclose(mae.forward_loss(imgs, changed, mask), loss)
    # loads into imTED
    model = _demo_model(pretrain_img_size=64)
    _, rep = mae_to_imted({"model": mae.state_dict()}, model)
    assert rep.missing == [] and rep.unexpected == [] and rep.shape_mismatch == []
