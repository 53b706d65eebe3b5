"""The three detectors of AlignDet's demo at CPU size (ResNet-18 with BN, 128-channel FPN, the
demo's 5 classes), shared by the demo pretraining and fine-tuning configs, and a helper that
turns any detector block into its AlignDet pretraining model."""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from d2ext.projects.aligndet import (
    AlignDet,
    AlignDetDETR,
    AlignDetFCOS,
    AlignDetRCNN,
    AlignDetRetinaNet,
    AlignDetROIHeads,
)

from .....configs.baselines.faster_rcnn_R18_FPN_demo import model as faster_rcnn_demo
from .....configs.common.models.fcos_fpn import model as fcos_demo
from .....configs.common.models.retinanet_fpn import model as retinanet_demo

DEMO_CLASSES = 5


def _r18_fpn_p3_p7(model):
    bottom_up = model.backbone.bottom_up
    bottom_up.stem.norm = "BN"
    bottom_up.stages.update(depth=18, norm="BN")
    del bottom_up.stages.stride_in_1x1
    model.backbone.norm = "BN"
    model.backbone.out_channels = 128
    model.backbone.top_block = L(LastLevelP6P7)(in_channels=128, out_channels=128, in_feature="p5")
    model.head.input_shape = [ShapeSpec(channels=128)] * 5
    model.head.conv_dims = [128, 128, 128, 128]
    model.num_classes = DEMO_CLASSES


_r18_fpn_p3_p7(retinanet_demo)
retinanet_demo.anchor_generator.sizes = [
    [x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [16, 32, 64, 128, 256]
]
_r18_fpn_p3_p7(fcos_demo)


def aligndet_model(detector, *, num_samples: int = 2048, roi_samples: int = 4096):
    """AlignDet pretraining model around a detector block (Faster R-CNN, RetinaNet, FCOS or
    d2ext's Deformable DETR):
    the detector's AlignDet subclass with one pseudo class, AlignDet's sample counts, and the
    momentum copy."""
    target = detector._target_
    target = target if isinstance(target, str) else f"{target.__module__}.{target.__qualname__}"
    if target.endswith("GeneralizedRCNN"):
        detector._target_ = AlignDetRCNN
        detector.roi_heads._target_ = AlignDetROIHeads
        detector.roi_heads.update(
            num_classes=1, batch_size_per_image=roi_samples, positive_fraction=1.0
        )
    elif target.endswith("RetinaNet"):
        detector._target_ = AlignDetRetinaNet
        detector.num_classes = 1
        detector.num_samples = num_samples
    elif target.endswith("FCOS"):
        detector._target_ = AlignDetFCOS
        detector.num_classes = 1
        detector.num_samples = num_samples
    elif target.endswith("DeformableDETR"):
        detector._target_ = AlignDetDETR
        detector.transformer.num_classes = 1
        detector.criterion.matcher.cost_class = 0.0  # box costs only: L1 5, GIoU 2
        return L(AlignDet)(
            detector=detector,
            temperature=0.5,
            loss_weight=1.0,
            copy_keys=("transformer.query_embed.weight",),  # copied, not averaged
        )
    else:
        raise ValueError(
            f"AlignDet supports Faster R-CNN, RetinaNet, FCOS and Deformable DETR, not {target}"
        )
    return L(AlignDet)(detector=detector, temperature=0.5, loss_weight=1.0)
