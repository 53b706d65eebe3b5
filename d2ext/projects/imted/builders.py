"""Config builders for imTED: the detector around a ViT size and AdamW with imTED's layer-wise
lr decay. Both return LazyConfig nodes built on detectron2's model-zoo blocks."""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config

from .modeling import (
    IMTEDFeaturePyramid,
    IMTEDROIHeads,
    IMTEDViT,
    LayerDecay,
    MAEDecoderHead,
    MultiScaleFeatureModulator,
)

__all__ = ["VIT_SIZES", "imted_model", "imted_optimizer"]

# encoder (width, depth, heads) and MAE decoder (width, depth, heads) per size (SPEC.md)
VIT_SIZES = {
    "S": ((384, 12, 6), (256, 4, 8)),
    "B": ((768, 12, 12), (512, 8, 16)),
    "L": ((1024, 24, 16), (512, 8, 16)),
}


def imted_model(size: str = "B", mask: bool = False, num_classes: int = 80, drop_path: float = 0.1):
    """Faster (``mask=False``) or Mask R-CNN with imTED's encoder, pyramid, modulator and MAE
    decoder box head (GIoU loss x10, class-specific boxes), from detectron2's ViTDet Mask R-CNN
    block.

    Args:
        size: ``"S"``, ``"B"`` or ``"L"`` (:data:`VIT_SIZES`).
        mask: keep detectron2's FCN mask head (Mask R-CNN).
        num_classes: detector classes.
        drop_path: the encoder's stochastic depth rate.

    Returns:
        the LazyCall of the ``GeneralizedRCNN``.
    """
    (width, depth, heads), (dec_width, dec_depth, dec_heads) = VIT_SIZES[size]
    model = get_config("common/models/mask_rcnn_vitdet.py").model
    model.backbone._target_ = IMTEDFeaturePyramid
    model.backbone.square_pad = 0
    net = model.backbone.net
    net._target_ = IMTEDViT
    # IMTEDViT fixes these (global attention, no relative position, MAE's LayerNorm eps 1e-6)
    for key in (
        "window_size",
        "window_block_indexes",
        "residual_block_indexes",
        "use_rel_pos",
        "norm_layer",
    ):
        net.pop(key)
    net.update(
        embed_dim=width,
        depth=depth,
        num_heads=heads,
        drop_path_rate=drop_path,
        img_size=224,
        pretrain_img_size=224,
        keep_cls_token=True,
    )
    heads_cfg = model.roi_heads
    heads_cfg._target_ = IMTEDROIHeads
    heads_cfg.pop("box_in_features")
    heads_cfg.pop("box_pooler")
    heads_cfg.num_classes = num_classes
    heads_cfg.update(
        single_scale_feature="${..backbone.token_feature}",
        single_scale_stride=16,
        modulator=L(MultiScaleFeatureModulator)(
            in_channels="${...backbone.out_channels}",
            out_channels=width,
            scales=(1 / 4, 1 / 8, 1 / 16, 1 / 32),
        ),
        box_head=L(MAEDecoderHead)(
            input_shape=ShapeSpec(channels=width, height=7, width=7),
            decoder_dim=dec_width,
            depth=dec_depth,
            num_heads=dec_heads,
        ),
    )
    model.backbone.token_feature = "last_feat"
    heads_cfg.box_predictor.update(
        input_shape=ShapeSpec(channels=dec_width),
        box_reg_loss_type="giou",
        loss_weight={"loss_box_reg": 10.0},
    )
    if not mask:
        heads_cfg.update(mask_in_features=None, mask_pooler=None, mask_head=None)
    return model


def imted_optimizer(num_layers: int, num_decoder_layers: int = 0, rate: float = 0.75):
    """AdamW 1e-4, weight decay 0.05 (none on norms, biases and position embeddings), layer
    decay ``rate`` over the encoder blocks (and the decoder blocks when given).

    Args:
        num_layers: encoder blocks.
        num_decoder_layers: decoder blocks of the box head that layer decay also covers (0:
            none).
        rate: the per-layer lr decay.

    Returns:
        the LazyCall of ``torch.optim.AdamW`` (``params.model`` filled in by the trainer).
    """
    optimizer = get_config("common/optim.py").AdamW
    optimizer.lr = 1e-4
    optimizer.weight_decay = 0.05
    optimizer.params.update(
        lr_factor_func=L(LayerDecay)(
            rate=rate, num_layers=num_layers, num_decoder_layers=num_decoder_layers
        ),
        overrides={"pos_embed": {"weight_decay": 0.0}, "cls_token": {"weight_decay": 0.0}},
    )
    return optimizer
