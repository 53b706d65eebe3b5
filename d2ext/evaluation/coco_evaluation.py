"""detectron2's COCOEvaluator computing its COCO metrics with faster-coco-eval when installed."""

import logging
import threading
from contextlib import contextmanager
from typing import Any

from detectron2.evaluation import COCOEvaluator as _D2COCOEvaluator
from detectron2.evaluation import coco_evaluation as _d2_coco_evaluation
from pycocotools.cocoeval import COCOeval

__all__ = ["COCOEvaluator", "fast_cocoeval_class"]

logger = logging.getLogger(__name__)

_FALLBACK_LOGGED = False
_PATCH_LOCK = threading.RLock()
# detectron2's own fast class (pycocotools' COCOeval when detectron2 has no _C), before any patch
_D2_COCOEVAL_OPT = _d2_coco_evaluation.COCOeval_opt


def fast_cocoeval_class() -> type:
    """The fastest available class with pycocotools' ``COCOeval`` interface and results.

    Returns:
        type: ``faster_coco_eval.COCOeval_faster`` when faster-coco-eval is importable, else
        detectron2's ``COCOeval_opt`` when detectron2 was built with its ``_C``, else
        pycocotools' ``COCOeval`` (logged once per process).
    """
    global _FALLBACK_LOGGED
    try:
        from faster_coco_eval import COCOeval_faster
    except ImportError as e:
        if _D2_COCOEVAL_OPT is not COCOeval:
            fallback, name = _D2_COCOEVAL_OPT, "detectron2's COCOeval_opt"
        else:
            fallback, name = COCOeval, "pycocotools' COCOeval"
        if not _FALLBACK_LOGGED:
            logger.warning(
                f"faster-coco-eval is not importable ({e}); COCO evaluation uses {name}. "
                "pip install faster-coco-eval to compute the same numbers faster."
            )
            _FALLBACK_LOGGED = True
        return fallback
    return COCOeval_faster


@contextmanager
def _detectron2_fast_cocoeval(cocoeval_fn):
    """Makes detectron2's COCOEvaluator build its fast COCOeval with ``cocoeval_fn`` inside the
    block.

    detectron2 (``COCOEvaluator._eval_predictions``) looks its fast class up by the module name
    ``COCOeval_opt`` at call time and offers no argument for it; the name is restored on exit.
    """
    with _PATCH_LOCK:
        previous = _d2_coco_evaluation.COCOeval_opt
        _d2_coco_evaluation.COCOeval_opt = cocoeval_fn
        try:
            yield
        finally:
            _d2_coco_evaluation.COCOeval_opt = previous


class COCOEvaluator(_D2COCOEvaluator):
    """detectron2's :class:`~detectron2.evaluation.COCOEvaluator` whose box and mask AP come from
    faster-coco-eval's ``COCOeval_faster`` when faster-coco-eval is installed.

    ``COCOeval_faster`` gives pycocotools' ``stats`` and ``eval["precision"]`` up to float
    rounding (its C++ accumulate puts some precision entries 1 ulp away; tested to 1e-12 on boxes
    and masks, with empty images and crowd annotations) in a fraction of the time
    (``benchmarks/coco_eval.py``). Without faster-coco-eval it uses detectron2's
    ``COCOeval_opt`` if detectron2 was built with it, else pycocotools, and logs that once.
    Everything else (results json and ``instances_predictions.pth`` in ``output_dir``,
    per-category AP, proposal AR) is detectron2's. Keypoint AP keeps detectron2's own class
    (faster-coco-eval's keypoint path needs its own ``COCO`` objects), and a
    ``max_dets_per_image`` other than 100 keeps detectron2's pycocotools-based
    ``COCOevalMaxDets``.
    """

    def __init__(
        self,
        dataset_name: str,
        tasks: Any = None,
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        use_fast_impl: bool = True,
        **kwargs: Any,
    ):
        """
        Args:
            dataset_name, tasks, distributed, output_dir: as detectron2's ``COCOEvaluator``.
            use_fast_impl (bool): True: faster-coco-eval (or the fallbacks above); False:
                pycocotools' official ``COCOeval``.
            kwargs: the other keyword arguments of detectron2's ``COCOEvaluator``
                (``max_dets_per_image``, ``kpt_oks_sigmas``, ``allow_cached_coco``).
        """
        # False: detectron2 would otherwise drop use_fast_impl (and log it) when its _C is absent
        super().__init__(
            dataset_name, tasks, distributed, output_dir, use_fast_impl=False, **kwargs
        )
        self._cocoeval_cls = fast_cocoeval_class() if use_fast_impl else COCOeval
        self._use_fast_impl = self._cocoeval_cls is not COCOeval

    @property
    def cocoeval_class(self) -> type:
        """The ``COCOeval``-compatible class computing box and mask AP."""
        return self._cocoeval_cls

    def _build_cocoeval(self, coco_gt, coco_dt, iou_type: str):
        cls = self._cocoeval_cls if iou_type in ("bbox", "segm") else _D2_COCOEVAL_OPT
        return cls(coco_gt, coco_dt, iou_type)

    def _eval_predictions(self, predictions, img_ids=None):
        if not self._use_fast_impl:
            return super()._eval_predictions(predictions, img_ids=img_ids)
        with _detectron2_fast_cocoeval(self._build_cocoeval):
            return super()._eval_predictions(predictions, img_ids=img_ids)
