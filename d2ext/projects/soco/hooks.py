"""Precise BN for detectron2's training loop when the model is built by the trainer."""

from detectron2.engine import hooks

__all__ = ["PreciseBN"]


class PreciseBN(hooks.PreciseBN):
    """detectron2's :class:`~detectron2.engine.hooks.PreciseBN` whose model may be left out:
    it is then the trainer's model (``trainer.model``, unwrapped from DDP), taken in
    ``before_train``, so a LazyConfig can list the hook in ``train.extra_hooks``. It
    re-estimates the BN statistics on ``num_iter`` batches of ``data_loader`` every ``period``
    iterations and after the last one; hooks run in order, so listed before the evaluation
    hook it runs before each evaluation (detectron2's ``TEST.PRECISE_BN``).

    In a loop of one's own, build detectron2's hook with the model, or call
    ``fvcore.nn.precise_bn.update_bn_stats(model, batches, num_iter)`` before evaluating.

    Args:
        period: iterations between two updates; 0: only after the last iteration.
        data_loader: iterable of training batches (``model(batch)`` runs in training mode).
        num_iter: batches per update (detectron2's default 200).
        model: the model; None: the trainer's.
    """

    def __init__(self, period: int, data_loader, num_iter: int = 200, model=None):
        self._pending = (period, data_loader, num_iter)
        self._disabled = True
        if model is not None:
            super().__init__(period, model, data_loader, num_iter)
            self._pending = None

    def before_train(self):
        """Without a model given, builds detectron2's hook on the trainer's model (unwrapped from
        DDP).
        """
        if self._pending is not None:
            model = self.trainer.model
            model = getattr(model, "module", model)  # DDP
            period, data_loader, num_iter = self._pending
            super().__init__(period, model, data_loader, num_iter)
            self._pending = None

    def after_step(self):
        """Runs detectron2's ``after_step`` (an update every ``period`` iterations and after the
        last) unless the hook is disabled (no model yet, or no BN layer in training mode).
        """
        if not self._disabled:
            super().after_step()
