"""The private parts of detectron2 that d2ext relies on, in one place.

detectron2 keeps some helpers private (a leading underscore), so they may change without
notice. d2ext imports each of them here, and only here, under a public name:

- :func:`create_zeros` (``detectron2.modeling.poolers._create_zeros``): the zero RoI-feature
  tensor of :class:`~detectron2.modeling.poolers.ROIPooler` (d2ext's ``ScaleAwareROIPooler``);
- :func:`dense_box_regression_loss`
  (``detectron2.modeling.box_regression._dense_box_regression_loss``): RetinaNet's / FCOS's box
  loss (AlignDet's dense heads);
- :func:`create_gradient_clipper` (``detectron2.solver.build._create_gradient_clipper``) and
  :func:`generate_optimizer_class_with_gradient_clipping`
  (``detectron2.solver.build._generate_optimizer_class_with_gradient_clipping``): the optimizer
  wrapper behind ``SOLVER.CLIP_GRADIENTS`` (``d2ext.solver.with_gradient_clipping``);
- :func:`evaluate_predictions_on_coco`
  (``detectron2.evaluation.coco_evaluation._evaluate_predictions_on_coco``): one COCO scoring
  of a results list with a chosen COCOeval class (``benchmarks/coco_eval.py``);
- :func:`evaluate_box_proposals`
  (``detectron2.evaluation.coco_evaluation._evaluate_box_proposals``): COCOEvaluator's
  box-proposal recall (``d2ext.projects.pretrain_diagnostics.average_recall``).

:data:`PRIVATE_MEMBERS` lists the private methods and attributes of detectron2 classes (and a
module global) that d2ext subclasses override, call or read. ``tests/utils/test_d2_compat.py``
checks every name here against the installed detectron2 (existence and signature), and that
no other d2ext file imports a private detectron2 name.
"""

from detectron2.evaluation.coco_evaluation import (
    _evaluate_box_proposals as evaluate_box_proposals,
)
from detectron2.evaluation.coco_evaluation import (
    _evaluate_predictions_on_coco as evaluate_predictions_on_coco,
)
from detectron2.modeling.box_regression import (
    _dense_box_regression_loss as dense_box_regression_loss,
)
from detectron2.modeling.poolers import _create_zeros as create_zeros
from detectron2.solver.build import _create_gradient_clipper as create_gradient_clipper
from detectron2.solver.build import (
    _generate_optimizer_class_with_gradient_clipping as generate_optimizer_class_with_gradient_clipping,  # noqa: E501
)

__all__ = [
    "PRIVATE_FUNCTIONS",
    "PRIVATE_MEMBERS",
    "create_gradient_clipper",
    "create_zeros",
    "dense_box_regression_loss",
    "evaluate_box_proposals",
    "evaluate_predictions_on_coco",
    "generate_optimizer_class_with_gradient_clipping",
]

PRIVATE_FUNCTIONS: dict[str, tuple[str, str]] = {
    # public name here -> (detectron2 private name, its parameters as d2ext calls them)
    "create_zeros": (
        "detectron2.modeling.poolers._create_zeros",
        "(batch_target, channels, height, width, like_tensor)",
    ),
    "dense_box_regression_loss": (
        "detectron2.modeling.box_regression._dense_box_regression_loss",
        "(anchors, box2box_transform, pred_anchor_deltas, gt_boxes, fg_mask, "
        "box_reg_loss_type='smooth_l1', smooth_l1_beta=0.0)",
    ),
    "create_gradient_clipper": ("detectron2.solver.build._create_gradient_clipper", "(cfg)"),
    "evaluate_box_proposals": (
        "detectron2.evaluation.coco_evaluation._evaluate_box_proposals",
        "(dataset_predictions, coco_api, thresholds=None, area='all', limit=None)",
    ),
    "evaluate_predictions_on_coco": (
        "detectron2.evaluation.coco_evaluation._evaluate_predictions_on_coco",
        "(coco_gt, coco_results, iou_type, kpt_oks_sigmas=None, "
        "cocoeval_fn=<class 'pycocotools.cocoeval.COCOeval'>, "
        "img_ids=None, max_dets_per_image=None)",
    ),
    "generate_optimizer_class_with_gradient_clipping": (
        "detectron2.solver.build._generate_optimizer_class_with_gradient_clipping",
        "(optimizer, *, per_param_clipper=None, global_clipper=None)",
    ),
}
"""Each private detectron2 function imported above, with the parameters d2ext relies on."""

PRIVATE_MEMBERS: tuple[tuple[str, str, str | None, str], ...] = (
    # (detectron2 class or module, member, parameters of a method / None for data, d2ext's use)
    ("detectron2.checkpoint.DetectionCheckpointer", "_load_file", "(self, filename)",
     "D2extCheckpointer overrides it (safe loading) and calls it"),
    ("detectron2.checkpoint.DetectionCheckpointer", "_load_model", "(self, checkpoint)",
     "D2extCheckpointer overrides it (partial-load check) and calls it"),
    ("detectron2.checkpoint.DetectionCheckpointer", "_torch_load", "(self, f)",
     "D2extCheckpointer overrides it (safe loading)"),
    ("detectron2.evaluation.COCOEvaluator", "_eval_predictions",
     "(self, predictions, img_ids=None)",
     "d2ext's COCOEvaluator overrides it (faster-coco-eval) and calls it"),
    ("detectron2.evaluation.COCOEvaluator", "_use_fast_impl", None,
     "d2ext's COCOEvaluator sets and reads it"),
    ("detectron2.evaluation.coco_evaluation", "COCOeval_opt", None,
     "module global d2ext's COCOEvaluator swaps for faster-coco-eval during an evaluation"),
    ("detectron2.data.DatasetMapper", "_transform_annotations",
     "(self, dataset_dict, transforms, image_shape)",
     "LSJCopyPasteDatasetMapper overrides it (boxes recomputed from masks)"),
    ("detectron2.modeling.roi_heads.ROIHeads", "_sample_proposals",
     "(self, matched_idxs, matched_labels, gt_classes)",
     "AlignDetROIHeads overrides it and calls it"),
    ("detectron2.modeling.meta_arch.dense_detector.DenseDetector", "_ema_update",
     "(self, name, value, initial_value, momentum=0.9)",
     "AlignDet's RetinaNet / FCOS call it (loss normaliser)"),
    ("detectron2.modeling.FCOS", "_match_anchors", "(self, gt_boxes, anchors)",
     "AlignDetFCOS calls it"),
    ("detectron2.engine.hooks.PeriodicWriter", "_writers", None,
     "d2ext's PeriodicWriter reads it"),
    ("detectron2.engine.hooks.PreciseBN", "_disabled", None,
     "SoCo's PreciseBN sets and reads it (deferred set-up)"),
    ("detectron2.utils.events.JSONWriter", "_file_handle", None,
     "MetricsJSONWriter sets and reads it (resumable metrics.json)"),
    ("detectron2.utils.events.JSONWriter", "_last_write", None, "MetricsJSONWriter sets it"),
    ("detectron2.utils.events.JSONWriter", "_window_size", None, "MetricsJSONWriter sets it"),
    ("detectron2.modeling.ViT", "_out_features", None, "IMTEDViT reads and extends it"),
    ("detectron2.modeling.ViT", "_out_feature_channels", None, "IMTEDViT reads and extends it"),
    ("detectron2.modeling.ViT", "_out_feature_strides", None, "IMTEDViT reads and extends it"),
)  # fmt: skip
"""The private members of detectron2 classes and modules that d2ext overrides, calls or reads:
(owner, member, parameters of a method or None for data, where d2ext uses it)."""
