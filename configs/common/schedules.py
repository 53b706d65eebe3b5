"""LR multiplier blocks; each follows ``train.max_iter``, overrides included."""

from detectron2.config import LazyCall as L

from d2ext.solver import warmup_cosine, warmup_multistep

# detectron2's COCO schedule: warmup 1000 iterations, decay 10x at 2/3 and 8/9 of the run.
multistep = L(warmup_multistep)(
    max_iter="${train.max_iter}", steps=(2 / 3, 8 / 9), warmup_iter=1000
)
cosine = L(warmup_cosine)(max_iter="${train.max_iter}", warmup_iter=0)
