"""AlignDet box-domain pretraining at demo scale on CPU: the demo Faster R-CNN (ResNet-18 frozen,
128-channel FPN, RPN, 512-d box head) on the 400 unlabeled demo images and their
ratio3size0008 proposals, two views at short side 176-208, 8 images per batch.

The frozen backbone comes from train.init_checkpoint (projects/AlignDet/run_demo.py passes a
ResNet-18 trained on another labelled split); FPN and heads start random, as in the paper.
RoI sample count scaled to the demo: at most 128 foreground RoIs per image, no background RoI
(the RPN samples 4096 anchors at positive fraction 1.0, as the authors').
"""

from d2ext.model_zoo import get_config
from d2ext.projects.aligndet.builders import aligndet_model

from .common.pretrain_demo import dataloader, lr_multiplier, optimizer, train

model = aligndet_model(
    get_config("common/models/faster_rcnn_R18_FPN_demo.py").model, roi_samples=128
)
optimizer.lr = 0.02
train.output_dir = "output/aligndet_faster_rcnn_R18_FPN_demo"
