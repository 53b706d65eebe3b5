"""Config builders for imTED: the detector around a ViT size and AdamW with imTED's layer-wise
lr decay and weight-decay rule. Both return LazyConfig nodes built on detectron2's model-zoo
blocks; their arguments default to the values of the authors' configs (LiewFeng/imTED). Where
the built model still differs from the authors' (e.g. the pyramid's up-sampling layers) is
listed in projects/imTED/README.md."""

import torch
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
from .optim import imted_param_groups

__all__ = ["DROP_PATH", "VIT_SIZES", "imted_model", "imted_optimizer"]

# encoder (width, depth, heads) and MAE decoder (width, depth, heads) per size (SPEC.md)
VIT_SIZES = {
    "S": ((384, 12, 6), (256, 4, 8)),
    "B": ((768, 12, 12), (512, 8, 16)),
    "L": ((1024, 24, 16), (512, 8, 16)),
}
# the encoder's stochastic depth per size in the authors' 3x and few-shot configs
DROP_PATH = {"S": 0.1, "B": 0.2, "L": 0.3}


def imted_model(
    size: str = "B",
    mask: bool = False,
    num_classes: int = 80,
    drop_path: float | None = None,
    *,
    pyramid_block: int | None = 11,
    upsample: str = "imted",
    rpn_convs: int = 1,
    mask_norm: str = "",
    head_pos_embed: str = "pretrained",
    pretrained_final_norm: bool = False,
):
    """Faster (``mask=False``) or Mask R-CNN with imTED's encoder, pyramid, modulator and MAE
    decoder box head (GIoU loss x10, class-specific boxes), from detectron2's ViTDet Mask R-CNN
    block. The arguments default to the authors' values.

    Args:
        size: ``"S"``, ``"B"`` or ``"L"`` (:data:`VIT_SIZES`).
        mask: keep detectron2's FCN mask head (Mask R-CNN).
        num_classes: detector classes.
        drop_path: the encoder's stochastic depth rate (linear over the blocks); None: the
            authors' value for ``size`` (:data:`DROP_PATH`: 0.1 / 0.2 / 0.3).
        pyramid_block: the block (0-based) whose output feeds the feature pyramid; the
            authors take block 11 for every size (the last block of S and B, the 12th of L's
            24); None: the last block.
        upsample: the pyramid's up-sampling layers, ``"imted"`` (full width, BatchNorm) or
            ``"detectron2"`` (ViTDet's, C/2 and C/4 with LN); see :class:`IMTEDFeaturePyramid`.
        rpn_convs: 3x3 convs in the RPN head (authors: mmdet's ``RPNHead``, 1; detectron2's
            ViTDet: 2).
        mask_norm: norm of the mask head's convs (authors' ``FCNMaskHead``: none, ``""``;
            detectron2's ViTDet: ``"LN"``).
        head_pos_embed: the box head's position embedding, ``"pretrained"`` (the checkpoint's
            ``decoder_pos_embed`` resized to 7x7, as the authors) or ``"sincos"`` (a fixed 7x7
            sin-cos table); see :class:`MAEDecoderHead`.
        pretrained_final_norm: load MAE's ``decoder_norm`` as the head's last LN (False: a
            fresh ``decoder_box_norm``, as the authors).

    Returns:
        the LazyCall of the ``GeneralizedRCNN``.
    """
    (width, depth, heads), (dec_width, dec_depth, dec_heads) = VIT_SIZES[size]
    if drop_path is None:
        drop_path = DROP_PATH[size]
    model = get_config("common/models/mask_rcnn_vitdet.py").model
    model.backbone._target_ = IMTEDFeaturePyramid
    model.backbone.square_pad = 0
    model.backbone.upsample = upsample
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
    if pyramid_block is not None and pyramid_block != depth - 1:
        net.pyramid_block = pyramid_block
        model.backbone.in_feature = "pyramid_feat"
    model.proposal_generator.head.conv_dims = [-1] * rpn_convs
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
            pos_embed=head_pos_embed,
            pretrain_grid=14,  # MAE's 224-px pretraining, patch 16
            pretrained_final_norm=pretrained_final_norm,
        ),
    )
    model.backbone.token_feature = "last_feat"
    heads_cfg.box_predictor.update(
        input_shape=ShapeSpec(channels=dec_width),
        box_reg_loss_type="giou",
        loss_weight={"loss_box_reg": 10.0},
    )
    if mask:
        heads_cfg.mask_head.conv_norm = mask_norm
    else:
        heads_cfg.update(mask_in_features=None, mask_pooler=None, mask_head=None)
    return model


def imted_optimizer(
    num_layers: int,
    num_decoder_layers: int = 0,
    rate: float = 0.75,
    exclude: tuple[str, ...] = (),
):
    """AdamW, lr 1e-4, betas (0.9, 0.999), weight decay 0.05 except for every bias, every 1-d
    parameter (norms, the modulator's weight) and names ending in ``_token`` / ``pos_embed``
    (:func:`~d2ext.projects.imted.optim.no_weight_decay`), layer-wise lr decay ``rate`` over
    the encoder blocks (and the decoder blocks when ``num_decoder_layers`` is given): the
    authors' ``LayerDecayOptimizerConstructor`` (and, with ``exclude``, their
    ``...BackboneFronzen`` one).

    Args:
        num_layers: encoder blocks.
        num_decoder_layers: decoder blocks of the box head that layer decay also covers (0:
            none; the authors' few-shot fine-tuning: 8).
        rate: the per-layer lr decay.
        exclude: parameter-name prefixes left out of the optimizer.

    Returns:
        the LazyCall of ``torch.optim.AdamW`` (``params.model`` filled in by the trainer).
    """
    return L(torch.optim.AdamW)(
        params=L(imted_param_groups)(
            model=None,
            base_lr="${..lr}",
            weight_decay="${..weight_decay}",
            lr_factor_func=L(LayerDecay)(
                rate=rate, num_layers=num_layers, num_decoder_layers=num_decoder_layers
            ),
            exclude=tuple(exclude),
        ),
        lr=1e-4,
        betas=(0.9, 0.999),
        weight_decay=0.05,
    )
