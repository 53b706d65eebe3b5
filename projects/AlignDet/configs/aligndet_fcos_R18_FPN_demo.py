"""AlignDet box-domain pretraining at demo scale on CPU: the demo FCOS (ResNet-18 frozen,
128-channel FPN P3-P7, 4-conv heads) on the 400 unlabeled demo images, two views at
short side 176-208, 8 images per batch, 512 sampled locations per batch (the authors' FCOS
sampling scope and losses: aligndet_fcos_recipe's defaults, except the count).

The sample count is scaled to the demo's image size, not the authors' 2048: a batch of eight
192 x 256 views has 8,192 locations, against 29,436 for the authors' two 720 x 960 COCO views
per GPU at the recipe's mean scale. So 512 per batch samples 6.2 % of the locations, and the
authors' 2048 sample 7.0 %. At 2048 the demo samples 25 % of them, and the step's overhead was
measured at +16.9 % (projects/AlignDet/README.md, step overhead).
aligndet_fcos_R50_FPN_coco_12ep.py keeps the authors' 2048.

The frozen backbone comes from train.init_checkpoint (projects/AlignDet/run_demo.py passes a
ResNet-18 trained on another labelled split); FPN and head start random, as in the paper.
"""

from d2ext.model_zoo import get_config
from d2ext.projects.aligndet.builders import aligndet_model

from .common.pretrain_demo import dataloader, lr_multiplier, optimizer, train

model = aligndet_model(get_config("common/models/fcos_R18_FPN_demo.py").model, num_samples=512)
optimizer.lr = 0.01
train.output_dir = "output/aligndet_fcos_R18_FPN_demo"
