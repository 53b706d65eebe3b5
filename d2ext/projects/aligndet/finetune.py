"""Parts of AlignDet's fine-tuning recipe (mmdetection settings) that detectron2 has no key for:
a ResNet whose batch norms stay in eval mode (mmdet ``norm_eval=True``) and mmcv's optimizer
parameter groups (``bias_lr_mult``, ``bias_decay_mult``, ``norm_decay_mult``)."""

from detectron2.modeling.backbone import ResNet
from torch import nn

__all__ = ["NormEvalResNet", "aligndet_param_groups"]

_NORMS = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
)


class NormEvalResNet(ResNet):
    """detectron2's ResNet whose batch-norm layers (BatchNorm, SyncBatchNorm, and detectron2's
    NaiveSyncBatchNorm) stay in eval mode whatever ``train()`` says: they normalise with their
    running statistics and do not update them; their affine parameters still train unless
    frozen (mmdet ``norm_eval=True``). With ``norm="SyncBN"`` in eval mode nothing is
    synchronised, so it runs on CPU and in one process as on GPUs.

    Args:
        norm_eval: keep the batch norms in eval mode.
        args, kwargs: ResNet's arguments.
    """

    def __init__(self, *args, norm_eval: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm_eval = norm_eval
        self.train(self.training)

    def train(self, mode: bool = True):
        """Sets the training mode like ``nn.Module.train``, then puts every batch norm back in eval
        mode when ``norm_eval`` is set.

        Args:
            mode: training (True) or eval (False) mode.

        Returns:
            NormEvalResNet: self.
        """
        super().train(mode)
        if getattr(self, "norm_eval", False):
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


def aligndet_param_groups(
    model: nn.Module,
    base_lr: float,
    weight_decay: float,
    bias_lr_mult: float = 1.0,
    bias_decay_mult: float = 1.0,
    norm_decay_mult: float = 1.0,
) -> list[dict]:
    """One parameter group per trainable parameter, by mmcv's ``DefaultOptimizerConstructor``
    rules (mmcv 1.6): a parameter named ``bias`` of a module that is not a normalisation layer
    gets lr ``base_lr * bias_lr_mult`` and weight decay ``weight_decay * bias_decay_mult``;
    normalisation layers' parameters (batch, group, layer, instance norm) get weight decay
    ``weight_decay * norm_decay_mult`` and lr ``base_lr``; every other parameter ``base_lr`` and
    ``weight_decay``. Parameters without ``requires_grad`` are left out, each parameter once.

    Args:
        model: the model.
        base_lr: the optimizer's lr.
        weight_decay: the optimizer's weight decay.
        bias_lr_mult: lr factor of non-norm biases (AlignDet FCOS fine-tuning: 2.0).
        bias_decay_mult: weight-decay factor of non-norm biases (AlignDet FCOS: 0.0).
        norm_decay_mult: weight-decay factor of normalisation parameters (mmdet default: 1.0).

    Returns:
        a list of ``{"params": [p], "lr": ..., "weight_decay": ...}`` for a torch optimizer.
    """
    groups, seen = [], set()
    for module in model.modules():
        is_norm = isinstance(module, _NORMS)
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            lr, wd = base_lr, weight_decay
            if is_norm:
                wd = weight_decay * norm_decay_mult
            elif name == "bias":
                lr, wd = base_lr * bias_lr_mult, weight_decay * bias_decay_mult
            groups.append({"params": [p], "lr": lr, "weight_decay": wd})
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameter")
    return groups
