"""AlignDet box-domain pretraining at demo scale on CPU: the demo FCOS (ResNet-18 frozen,
128-channel FPN P3-P7, 4-conv heads) on the 400 unlabeled demo images, two views at
short side 176-208, 8 images per batch, 2048 sampled locations per batch (the
authors' FCOS sampling and losses: aligndet_fcos_recipe's defaults).

The frozen backbone comes from train.init_checkpoint (projects/AlignDet/run_demo.py passes a
ResNet-18 trained on another labelled split); FPN and head start random, as in the paper.
"""

from d2ext.model_zoo import get_config
from d2ext.projects.aligndet.builders import aligndet_model

from .common.pretrain_demo import dataloader, lr_multiplier, optimizer, train

model = aligndet_model(get_config("common/models/fcos_R18_FPN_demo.py").model, num_samples=2048)
optimizer.lr = 0.01
train.output_dir = "output/aligndet_fcos_R18_FPN_demo"
