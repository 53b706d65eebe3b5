"""Demo DINO: the demo Deformable DETR's data, optimiser and iterations
(deformable_detr_R18_demo.py) with DINO as the detector (configs/common/models/dino_R18_demo.py:
ResNet-18, 128-d, 3 + 3 layers, 100 queries, 30 denoising queries)."""

from d2ext.model_zoo import get_config

from .deformable_detr_R18_demo import dataloader, lr_multiplier, optimizer, train

model = get_config("common/models/dino_R18_demo.py").model
train.output_dir = "output/dino_R18_demo"
