"""SoCo: the three-view mapper, the pretraining network and its transfer to Faster R-CNN."""

import math

import numpy as np
import pytest
import torch
from detectron2.config import instantiate
from PIL import Image

from d2ext.checkpoint.convert import compare_with_model, convert_state_dict
from d2ext.layers import assign_levels_soco
from d2ext.projects.soco import SOCO_TO_DETECTRON2, SoCoDatasetMapper, byol_loss

from ..helpers import load_config

PRETRAIN = "projects/SoCo/configs/soco_R18_FPN_4conv1fc_demo.py"
FINETUNE = "projects/SoCo/configs/faster_rcnn_R18_FPN_4conv1fc_demo.py"


@pytest.fixture
def square_image(tmp_path):
    """A dark 200x300 image with one bright square, and the square as the proposal."""
    img = np.full((200, 300, 3), 20, np.uint8)
    img[60:140, 100:180] = 240
    path = tmp_path / "square.png"
    Image.fromarray(img).save(path)
    box = np.array([[100, 60, 179, 139]], np.float32)  # inclusive XYXY
    return {"file_name": str(path), "image_id": 7, "height": 200, "width": 300}, box


def _mapper(boxes, **kw):
    kw.setdefault("colour_augmentation", False)
    return SoCoDatasetMapper(proposals=lambda d: boxes, **kw)


def _inside_mean(view: torch.Tensor, box: torch.Tensor) -> tuple[float, float]:
    """Mean intensity inside the box (shrunk by 2 px) and outside it (grown by 2 px)."""
    img = view.float().mean(0)
    x1, y1, x2, y2 = box.tolist()
    inside = img[int(y1) + 2 : int(y2) - 2, int(x1) + 2 : int(x2) - 2]
    mask = torch.ones_like(img, dtype=torch.bool)
    mask[max(int(y1) - 2, 0) : int(y2) + 3, max(int(x1) - 2, 0) : int(x2) + 3] = False
    return float(inside.mean()), float(img[mask].mean()) if mask.any() else 0.0


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_boxes_land_on_the_object_in_every_view(square_image, flip_prob):
    d, box = square_image
    torch.manual_seed(0)
    mapper = _mapper(box, jitter_prob=0.0, flip_prob=flip_prob, crop_scale=(0.6, 1.0))
    for _ in range(5):
        out = mapper(d)
        assert [tuple(v.shape) for v in out["views"]] == [(3, 224, 224)] * 2 + [(3, 112, 112)]
        assert all(v.dtype == torch.uint8 for v in out["views"])
        for view, boxes, levels in zip(out["views"], out["boxes"], out["levels"]):
            assert boxes.shape == (4, 4) and levels.shape == (4,)
            size = view.shape[-1]
            assert (boxes >= 0).all() and (boxes <= size).all()
            # every box is the square (the only proposal), padded by redrawing it
            assert torch.equal(boxes, boxes[:1].expand(4, 4))
            if levels[0] >= 0:
                inside, outside = _inside_mean(view, boxes[0])
                assert inside > 200 and outside < 60, (inside, outside)
        # V1 is the whole image: the box is the square scaled by 224 / size, exactly
        x1, y1, x2, y2 = 100 * 224 / 300, 60 * 224 / 200, 180 * 224 / 300, 140 * 224 / 200
        want = [224 - x2, y1, 224 - x1, y2] if flip_prob else [x1, y1, x2, y2]
        np.testing.assert_allclose(out["boxes"][0][0].numpy(), want, rtol=1e-5)


def test_levels_are_socos_rule_in_each_view(square_image):
    d, box = square_image
    torch.manual_seed(1)
    out = _mapper(box)(d)
    for boxes, levels in zip(out["boxes"], out["levels"]):
        expected = assign_levels_soco(boxes, inclusive=False)
        np.testing.assert_array_equal(levels.numpy(), expected.numpy())
    # the 80 px square of the 300x200 image is 60x90 px in V1: sqrt(wh) = 73, level 1 (P3)
    assert out["levels"][0][0] == 1


def test_selection_overlap_padding_jitter_and_fallbacks(square_image):
    d, _ = square_image
    far = np.array([[0, 0, 30, 30], [100, 60, 179, 139], [110, 70, 170, 130]], np.float32)
    torch.manual_seed(0)
    mapper = _mapper(far, num_boxes=4)
    crop2, crop3, selected = mapper.select(far, 200, 300)
    for crop in (crop2, crop3):
        top, left, h, w = crop
        assert ((selected[:, 0] < left + w - 1) & (selected[:, 2] > left)).all()
        assert ((selected[:, 1] < top + h - 1) & (selected[:, 3] > top)).all()
    assert len(selected) == 4
    # no proposals at all: the crops' overlap is the one box, repeated
    _, _, selected = mapper.select(np.zeros((0, 4), np.float32), 200, 300)
    assert len(selected) == 4 and (selected == selected[0]).all()
    out = _mapper(np.zeros((0, 4), np.float32))(d)
    assert all((lv >= -1).all() for lv in out["levels"])
    # jitter moves V1 boxes only, and by at most ratio * size
    torch.manual_seed(3)
    out = _mapper(far[1:2], jitter_prob=1.0, jitter_ratio=0.1, flip_prob=0.0)(d)
    v1 = out["boxes"][0][0].numpy() * np.array([300, 200, 300, 200]) / 224
    assert not np.allclose(v1, [100, 60, 180, 140], atol=0.5)
    assert np.abs(v1 - [100, 60, 180, 140]).max() <= 0.1 * 80 * 2 + 1
    with pytest.raises(ValueError, match="NaN"):
        _mapper(np.array([[0, 0, np.nan, 5]], np.float32))(d)
    with pytest.raises(ValueError, match="small_view"):
        _mapper(far, small_view="zoom")


def test_jitter_moves_v1_boxes_only_with_the_given_probability(square_image):
    d, box = square_image
    moved = total = 0
    for seed in range(60):
        outs = []
        for prob in (0.3, 0.0):
            torch.manual_seed(seed)
            outs.append(_mapper(box, num_boxes=4, jitter_prob=prob, flip_prob=0.0)(d))
        jit, plain = outs
        for v in (1, 2):  # V2 and V3 never jittered: the same boxes as without jitter
            assert torch.equal(jit["boxes"][v], plain["boxes"][v])
        exact = torch.tensor([100.0, 60.0, 180.0, 140.0]) * torch.tensor([224 / 300, 224 / 200] * 2)
        assert torch.allclose(plain["boxes"][0], exact.expand(4, 4), atol=1e-4)
        moved += int((~torch.isclose(jit["boxes"][0], exact, atol=1e-4).all(dim=1)).sum())
        total += 4
    assert abs(moved / total - 0.3) < 0.08, moved / total  # 240 boxes: 3.5 sigma


def test_downsampled_small_view_is_v2_at_half_size(square_image):
    d, box = square_image
    torch.manual_seed(5)
    out = _mapper(box, small_view="downsample", flip_prob=0.0)(d)
    np.testing.assert_allclose(out["boxes"][2].numpy(), out["boxes"][1].numpy() / 2, rtol=1e-6)


def test_byol_loss_values():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    np.testing.assert_allclose(byol_loss(a, b).numpy(), [0.0, 2.0, 4.0], atol=1e-6)


def _tiny_soco():
    cfg = load_config(PRETRAIN)
    cfg.model.projector_hidden_dim = 64
    cfg.model.out_dim = 32
    torch.manual_seed(0)
    return instantiate(cfg.model)


def _batch(levels_v3=None):
    g = torch.Generator().manual_seed(0)
    batch = []
    for _ in range(2):
        views = [
            torch.randint(0, 255, (3, s, s), generator=g, dtype=torch.uint8) for s in (64, 64, 32)
        ]
        boxes = [
            torch.tensor([[4.0, 4.0, 40.0, 30.0], [10.0, 8.0, 60.0, 60.0]]) * s / 64
            for s in (64, 64, 32)
        ]
        levels = [assign_levels_soco(b, inclusive=False) for b in boxes]
        if levels_v3 is not None:
            levels[2] = torch.full_like(levels[2], levels_v3)
        batch.append({"views": views, "boxes": boxes, "levels": levels})
    return batch


def test_network_losses_gradients_and_momentum():
    model = _tiny_soco().train()
    losses = model(_batch())
    assert sorted(losses) == ["loss_v1_v2", "loss_v1_v3", "loss_v2_v1", "loss_v3_v1"]
    assert all(math.isfinite(float(v)) and 0 <= float(v) <= 4 for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.online.parameters())
    assert all(p.grad is not None for p in model.predictor.parameters())
    assert all(p.grad is None and not p.requires_grad for p in model.target.parameters())
    # momentum 1 keeps the target; momentum 0 copies the online network
    with torch.no_grad():
        for p in model.online.parameters():
            p.add_(0.5)
    before = [p.clone() for p in model.target.parameters()]
    model.momentum_update(1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.target.parameters()))
    model.momentum_update(0.0)
    assert all(
        torch.equal(a, b) for a, b in zip(model.online.parameters(), model.target.parameters())
    )


def test_one_training_step_moves_online_by_gradient_and_target_by_ema():
    """Step 0 moves the online network by its gradient; the next training forward first moves
    the target by the EMA with m(1), as the authors do right after step 0."""
    from detectron2.engine import SimpleTrainer
    from detectron2.utils.events import EventStorage

    from d2ext.modeling.momentum import cosine_momentum

    model = _tiny_soco().train()
    model.momentum_schedule.total_steps = 4
    online0 = {k: p.detach().clone() for k, p in model.online.named_parameters()}
    target0 = {k: p.detach().clone() for k, p in model.target.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    lr = 0.5
    trainer = SimpleTrainer(model, [_batch()], torch.optim.SGD(trainable, lr=lr))
    trainer.iter, trainer.max_iter = 0, 4
    with EventStorage(0) as trainer.storage:
        trainer.run_step()
        # step 0's forward had nothing to update: the target is the initial copy
        assert all(torch.equal(p, target0[k]) for k, p in model.target.named_parameters())
        for k, p in model.online.named_parameters():
            torch.testing.assert_close(p.detach(), online0[k] - lr * p.grad, rtol=1e-6, atol=1e-6)
        model(_batch())  # iteration 1's forward
        assert trainer.storage.history("momentum").latest() == cosine_momentum(0.99, 1, 4)
    m = cosine_momentum(0.99, 1, 4)
    assert 0.99 < m < 1.0 and int(model.momentum_schedule.iteration) == 2
    moved = 0
    for k, p in model.target.named_parameters():
        assert p.grad is None
        expected = m * target0[k] + (1 - m) * dict(model.online.named_parameters())[k].detach()
        torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-6)
        moved += not torch.equal(p, target0[k])
    assert moved > 0  # the EMA did move the target (online weights changed by the step)


def test_pairs_without_valid_boxes_give_zero_but_keep_the_graph():
    model = _tiny_soco().train()
    losses = model(_batch(levels_v3=-1))
    assert float(losses["loss_v1_v3"]) == 0.0 and float(losses["loss_v3_v1"]) == 0.0
    assert float(losses["loss_v1_v2"]) > 0
    sum(losses.values()).backward()
    model.eval()
    out = model(_batch())
    assert len(out["online"]) == 3 and out["online"][0].shape == (4, 32)


def test_soco_checkpoint_loads_into_the_finetuning_detector():
    soco = _tiny_soco()
    state = {k: v.clone() for k, v in soco.state_dict().items()}
    new, report = convert_state_dict(state, SOCO_TO_DETECTRON2)
    detector = instantiate(load_config(FINETUNE).model)
    diff = compare_with_model(detector, new)
    assert not diff["unexpected"] and not diff["shape_mismatch"]
    loaded = set(diff["loaded"])
    backbone_and_head = {
        k for k in detector.state_dict() if k.startswith(("backbone.", "roi_heads.box_head."))
    }
    assert backbone_and_head <= loaded  # every backbone, FPN and box-head tensor carried over
    assert not any(k.startswith(("target.", "predictor.")) for k in new)
    assert any("online.projector" in k for k in report.unused)
    detector.load_state_dict(new, strict=False)
    for k in backbone_and_head:
        src = k.replace("roi_heads.box_head.", "online.box_head.", 1)
        src = src if src.startswith("online.") else "online." + k
        assert torch.equal(detector.state_dict()[k], state[src]), k


def test_two_process_gloo_pretraining_step(tmp_path, demo_unlabeled_proposals):
    """`--num-gpus 2` on CPU: two gloo processes run pretraining steps."""
    from ..helpers import train_two_gloo_processes

    overrides = [
        "train.max_iter=2",
        "train.log_period=1",
        "dataloader.train.total_batch_size=4",
        "dataloader.train.num_workers=0",
        f"dataloader.train.mapper.proposals.cache_dir={demo_unlabeled_proposals}",
    ]
    rows = train_two_gloo_processes(PRETRAIN, tmp_path, overrides)
    last = [r for r in rows if "loss_v1_v2" in r][-1]
    assert last["iteration"] == 1 and 0 < last["momentum"] <= 1
    state = torch.load(tmp_path / "model_final.pth", map_location="cpu")["model"]
    assert any(k.startswith("target.") for k in state) and "predictor.0.weight" in state
