"""Co-DETR: positive-query construction, the auxiliary branch (no Hungarian matching, loss
scales as configured), inference identical to the base detector without auxiliary modules."""

import copy

import pytest
import torch
from detectron2.config import instantiate
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from d2ext.modeling.deformable_detr import DeformableDETR, HungarianMatcher
from d2ext.projects.codetr import (
    AUXILIARY_PREFIXES,
    CoDeformableDETR,
    build_positive_queries,
    strip_auxiliary,
)

from ..helpers import load_config

CO = "projects/CoDETR/configs/co_deformable_detr_R18_demo.py"
BASE = "projects/CoDETR/configs/deformable_detr_R18_demo.py"


def _shrink(model_cfg):
    model_cfg.transformer.update(num_encoder_layers=1, num_decoder_layers=2, num_queries=20)
    return model_cfg


def _co_model(**overrides) -> CoDeformableDETR:
    cfg = _shrink(load_config(CO).model)
    cfg.update(overrides)
    torch.manual_seed(0)
    return instantiate(cfg)


def _inputs():
    a = Instances((96, 128))
    a.gt_boxes = Boxes(
        torch.tensor([[10.0, 20.0, 60.0, 70.0], [70.0, 5.0, 120.0, 50.0], [30.0, 30.0, 90.0, 90.0]])
    )
    a.gt_classes = torch.tensor([1, 2, 4])
    b = Instances((128, 96))
    b.gt_boxes = Boxes(torch.tensor([[5.0, 5.0, 40.0, 60.0]]))
    b.gt_classes = torch.tensor([0])
    g = torch.Generator().manual_seed(1)
    return [
        {
            "image": torch.rand(3, 96, 128, generator=g) * 255,
            "instances": a,
            "height": 96,
            "width": 128,
        },
        {
            "image": torch.rand(3, 128, 96, generator=g) * 255,
            "instances": b,
            "height": 256,
            "width": 192,
        },
    ]


def test_positive_queries_counts_padding_and_reference_boxes():
    bg = 5
    boxes = torch.tensor(
        [
            [0.0, 0.0, 50.0, 50.0],
            [10.0, 10.0, 30.0, 40.0],
            [-10.0, 20.0, 60.0, 120.0],
            [5.0, 5.0, 15.0, 15.0],
        ]
    )
    img0 = {"boxes": boxes, "labels": torch.tensor([1, bg, 3, bg]), "target_boxes": boxes + 1}
    img1 = {"boxes": boxes[:3], "labels": torch.tensor([bg, 2, bg]), "target_boxes": boxes[:3] + 2}
    q = build_positive_queries(
        [img0, img1], [(100, 50), (100, 50)], num_classes=bg, max_per_image=300, min_per_image=0
    )
    assert q["ref"].shape == (2, 2, 4) and q["num_pos"] == 3
    assert q["labels"][0].tolist() == [1, 3]
    assert q["labels"][1, 0] == 2 and q["labels"][1, 1] == bg  # padded with a negative
    # reference = the positive box, not clipped to the image, normalised cx, cy, w, h
    torch.testing.assert_close(q["ref"][0, 1], torch.tensor([0.5, 0.7, 1.4, 1.0]))
    torch.testing.assert_close(q["ref"][1, 0], torch.tensor([0.4, 0.25, 0.4, 0.3]))
    torch.testing.assert_close(q["target_boxes"][0, 0], torch.tensor([26 / 50, 26 / 100, 1.0, 0.5]))
    # the cap: at most max_per_image positives, a random subset
    many = {
        "boxes": boxes.repeat(100, 1),
        "labels": torch.ones(400, dtype=torch.long),
        "target_boxes": boxes.repeat(100, 1),
    }
    q = build_positive_queries(
        [many, img1], [(100, 50), (100, 50)], num_classes=bg, max_per_image=300
    )
    assert (
        q["ref"].shape[1] == 300
        and (q["labels"][0] < bg).all()
        and (q["labels"][1] < bg).sum() == 1
    )
    assert q["num_pos"] == 301
    # no positives anywhere and no floor: no query group
    none = {"boxes": boxes, "labels": torch.full((4,), bg), "target_boxes": boxes}
    assert build_positive_queries([none], [(100, 50)], num_classes=bg, min_per_image=0) is None


def test_auxiliary_branch_uses_no_hungarian_matching(monkeypatch):
    model = _co_model().train()
    calls = []
    original = HungarianMatcher.forward
    monkeypatch.setattr(
        HungarianMatcher, "forward", lambda self, *a: calls.append(1) or original(self, *a)
    )
    captured = []
    decode = model.transformer.decode
    monkeypatch.setattr(
        model.transformer,
        "decode",
        lambda enc, c, p, ref: captured.append(ref) or decode(enc, c, p, ref),
    )
    with EventStorage(0):
        losses = model(_inputs())
    # one match per decoder layer and one for the encoder proposals: the base detector's only
    assert len(calls) == 2 + 1
    assert len(captured) == 3  # base queries, R-CNN positives (head 0), ATSS positives (head 1)
    assert any(k.endswith("_pos0") for k in losses) and any(k.endswith("_pos1") for k in losses)
    assert {"aux_atss_loss_cls", "aux_rcnn_loss_box_reg", "aux_rcnn_loss_rpn_cls"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name in (
        "adapter.downsample.0.weight",
        "aux_pos_trans.0.weight",
        "aux_pos_trans.1.weight",
        "pos_feats_trans.0.weight",
        "pos_feats_trans.1.weight",
        "head_pos_embed.weight",
        "atss_head.cls_logits.weight",
    ):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name
    # the R-CNN branch's references are its sampled positive proposals (inside the images)
    assert captured[1].min() >= 0 and captured[1].max() <= 1


def test_loss_weights_as_configured():
    inputs = _inputs()

    def run(**kw):
        torch.manual_seed(5)
        model = _co_model(**kw).train()
        torch.manual_seed(6)  # same RPN / ROI sampling and positive subsets
        with EventStorage(0):
            return model(inputs), model

    base, model = run()
    assert model.aux_loss_scale == 2.0 * 2  # lambda2 x decoder layers (12 at full scale)
    doubled, _ = run(lambda2=4.0, lambda1=3.0)
    for k, v in base.items():
        factor = 2.0 if k.startswith("aux_") else 3.0 if "_pos" in k else 1.0
        torch.testing.assert_close(doubled[k], v * factor, rtol=1e-4, atol=1e-6)
    explicit, m = run(aux_loss_scale=1.0)
    assert m.aux_loss_scale == 1.0
    torch.testing.assert_close(
        explicit["aux_atss_loss_cls"] * 4, base["aux_atss_loss_cls"], rtol=1e-4, atol=1e-6
    )


def test_inference_equals_the_base_detector_without_auxiliary_modules():
    model = _co_model().eval()
    inputs = _inputs()
    with torch.no_grad():
        out = model(inputs)
    base_cfg = _shrink(load_config(BASE).model)
    base = instantiate(base_cfg).eval()
    stripped = strip_auxiliary(model.state_dict())
    assert set(model.state_dict()) - set(stripped) and all(
        k.startswith(AUXILIARY_PREFIXES) for k in set(model.state_dict()) - set(stripped)
    )
    base.load_state_dict(stripped, strict=True)
    assert type(base) is DeformableDETR
    pruned = copy.deepcopy(model)
    pruned.adapter = pruned.atss_head = pruned.rpn = pruned.roi_heads = None
    pruned.aux_pos_trans = pruned.aux_pos_trans_norm = None
    pruned.pos_feats_trans = pruned.pos_feats_norm = pruned.head_pos_embed = None
    with torch.no_grad():
        for other in (base(inputs), pruned(inputs)):
            for a, b in zip(out, other):
                x, y = a["instances"], b["instances"]
                assert torch.equal(x.pred_boxes.tensor, y.pred_boxes.tensor)
                assert torch.equal(x.scores, y.scores) and torch.equal(
                    x.pred_classes, y.pred_classes
                )
    assert out[1]["instances"].image_size == (256, 192)
    n_base = sum(p.numel() for p in base.parameters())
    assert n_base < sum(p.numel() for p in model.parameters())


def test_rcnn_branch_needs_both_parts():
    with pytest.raises(ValueError, match="both rpn and roi_heads"):
        _co_model(rpn=None)
