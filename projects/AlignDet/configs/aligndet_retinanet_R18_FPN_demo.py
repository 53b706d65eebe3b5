"""AlignDet box-domain pretraining at demo scale on CPU: the demo RetinaNet (ResNet-18 frozen,
128-channel FPN P3-P7, 4-conv heads) on the 400 unlabeled demo images, the top-50 proposals
per image (AlignDet's RetinaNet setting), two views at short side 176-208, 8 images per batch,
128 sampled anchors per image.

The sample count is scaled to the demo's image size, not the authors' 2048: a 192 x 256 view
has 9,216 anchors, against 132,462 for a 720 x 960 COCO view at the recipe's mean scale. So
128 per image samples 1.4 % of the anchors, and the authors' 2048 sample 1.5 %. At 2048 the
demo samples 22 % of them: the InfoNCE is then 16,384 queries x 32,768 columns per batch, and
the step's overhead was measured at +39.8 % (projects/AlignDet/README.md, step overhead).
aligndet_retinanet_R50_FPN_coco_12ep.py keeps the authors' 2048.

The frozen backbone comes from train.init_checkpoint (projects/AlignDet/run_demo.py passes a
ResNet-18 trained on another labelled split); FPN and head start random, as in the paper.
"""

from d2ext.model_zoo import get_config
from d2ext.projects.aligndet.builders import aligndet_model

from .common.pretrain_demo import dataloader, lr_multiplier, optimizer, train

model = aligndet_model(get_config("common/models/retinanet_R18_FPN_demo.py").model, num_samples=128)
dataloader.train.mapper.max_proposals = 50
optimizer.lr = 0.01
train.output_dir = "output/aligndet_retinanet_R18_FPN_demo"
