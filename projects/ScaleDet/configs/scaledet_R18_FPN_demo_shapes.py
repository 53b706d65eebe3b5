"""Single-dataset control for the ScaleDet demo: the same model and schedule trained on the
shapes dataset alone (its 5 labels), scored like the joint model."""

from .scaledet_R18_FPN_demo import dataloader, lr_multiplier, model, optimizer, scaledet, train

scaledet.datasets = ["d2ext_demo_shapes_train"]
scaledet.ratios = [1.0]
scaledet.text.path = "output/scaledet_demo/text/shapes.npy"
train.output_dir = "output/scaledet_demo/shapes"
