"""Config builders for ScaleDet: the model surgery that turns a Faster R-CNN (or Cascade R-CNN)
block into ScaleDet, the multi-dataset train loader and one per-dataset test entry (its own
vocabulary, its own evaluator).

Every function returns or edits LazyConfig nodes whose open choices point at the config's
``scaledet`` node (``${scaledet.temperature}``, ``${scaledet.text.path}``, ...), so command-line
overrides of that node reach every head and loader. Every vocabulary is
``label_embeddings(path, labels, ...)``: read from ``path`` (Detic's .npy format), or encoded
with ``scaledet.text`` and written there on first use.
"""

import copy
import inspect

from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, get_detection_dataset_dicts
from detectron2.modeling import GeneralizedRCNN

from ...data.multi_dataset import build_multi_dataset_train_loader
from .label_space import FedLossClassWeights
from .modeling import (
    ScaleDetCascadeROIHeads,
    ScaleDetOutputLayers,
    ScaleDetRCNN,
    ScaleDetROIHeads,
    VocabularySwap,
)
from .text_embeddings import (
    dataset_label_names,
    label_embeddings,
    label_space_mappings,
    label_space_names,
)

__all__ = ["dataset_test", "make_scaledet", "multi_dataset_loader", "text_embeddings_node"]


def text_embeddings_node(path, labels):
    """The LazyCall of ``label_embeddings`` for ``labels`` cached at ``path``, with the text
    encoder of ``scaledet.text``.

    Args:
        path: the embedding file (str or interpolation).
        labels: the label names, or a LazyCall producing them.

    Returns:
        a LazyCall node.
    """
    return L(label_embeddings)(
        path=path,
        labels=labels,
        backend="${scaledet.text.backend}",
        model="${scaledet.text.model}",
        pretrained="${scaledet.text.pretrained}",
        prompts="${scaledet.text.prompts}",
    )


def _predictor(predictor):
    predictor._target_ = ScaleDetOutputLayers
    predictor.pop("num_classes", None)
    predictor.pop("cls_agnostic_bbox_reg", None)
    predictor.update(
        text_embeddings=text_embeddings_node(
            "${scaledet.text.path}",
            L(label_space_names)(
                datasets="${scaledet.datasets}", merge_identical="${scaledet.merge_identical}"
            ),
        ),
        temperature="${scaledet.temperature}",
        soft_loss_weight="${scaledet.soft_loss_weight}",
        similarity_rescale="${scaledet.similarity_rescale}",
        use_fed_loss="${scaledet.fed_loss.enabled}",
        fed_loss_num_classes="${scaledet.fed_loss.num_classes}",
        fed_loss_cls_weights=L(FedLossClassWeights)(
            datasets="${scaledet.datasets}",
            merge_identical="${scaledet.merge_identical}",
            freq_weight_power="${scaledet.fed_loss.freq_weight_power}",
        ),
    )


def make_scaledet(model):
    """Turns a Faster R-CNN / Cascade R-CNN block into ScaleDet in place: ScaleDet ROI heads and
    output layers whose classifier is the unified label space's text embeddings; a
    ``GeneralizedRCNN`` becomes ``ScaleDetRCNN`` (test inputs may carry their vocabulary).

    Args:
        model: the LazyCall of a ``GeneralizedRCNN`` with standard or cascade ROI heads.

    Returns:
        ``model``.
    """
    if model._target_ in (GeneralizedRCNN, "detectron2.modeling.GeneralizedRCNN"):
        model._target_ = ScaleDetRCNN
    heads = model.roi_heads
    heads.num_classes = None
    if "box_predictors" in heads:
        heads._target_ = ScaleDetCascadeROIHeads
        for p in heads.box_predictors:
            _predictor(p)
    else:
        heads._target_ = ScaleDetROIHeads
        _predictor(heads.box_predictor)
    return model


def multi_dataset_loader(mapper, total_batch_size, num_workers):
    """The train loader over ``scaledet.datasets``, labels mapped into the unified label space,
    sampled by ``scaledet.ratios`` (one dataset per batch when
    ``scaledet.one_dataset_per_batch``).

    Args:
        mapper: the dataset mapper (LazyCall).
        total_batch_size: images per iteration over all workers.
        num_workers: loader processes per worker.

    Returns:
        the LazyCall of ``build_multi_dataset_train_loader``.
    """
    return L(build_multi_dataset_train_loader)(
        names="${scaledet.datasets}",
        mapper=mapper,
        total_batch_size=total_batch_size,
        mappings=L(label_space_mappings)(
            datasets="${scaledet.datasets}", merge_identical="${scaledet.merge_identical}"
        ),
        ratios="${scaledet.ratios}",
        one_dataset_per_batch="${scaledet.one_dataset_per_batch}",
        num_workers=num_workers,
    )


def dataset_test(dataset, mapper, evaluator, vocab_path=None):
    """One entry of ``dataloader.tests``: ``dataset`` scored in its own label space, under the
    vocabulary of its own label names.

    Args:
        dataset: the detectron2 dataset name.
        mapper: the test mapper (LazyCall; copied, its image format follows the train mapper's).
        evaluator: the evaluator (LazyCall). One that takes ``output_dir`` and has none gets
            ``${train.output_dir}/inference/<dataset>`` (a COCOEvaluator writes its
            ``coco_instances_results.json`` there).
        vocab_path: the vocabulary's embedding file (default:
            ``${scaledet.text.vocab_dir}/<dataset>.npy``).

    Returns:
        ``{"loader", "evaluator", "context"}``; the context swaps the vocabulary in for the test.
    """
    vocab_path = vocab_path or "${scaledet.text.vocab_dir}/" + dataset + ".npy"
    if "output_dir" in inspect.signature(evaluator._target_).parameters and not evaluator.get(
        "output_dir"
    ):
        # a COCOEvaluator writes coco_instances_results.json there (tools/visualize_predictions.py)
        evaluator.output_dir = "${train.output_dir}/inference/" + dataset
    mapper = copy.deepcopy(mapper)
    mapper.image_format = "${dataloader.train.mapper.image_format}"
    return {
        "loader": L(build_detection_test_loader)(
            dataset=L(get_detection_dataset_dicts)(names=dataset, filter_empty=False),
            mapper=mapper,
            num_workers=1,
        ),
        "evaluator": evaluator,
        "context": L(VocabularySwap)(
            embeddings=text_embeddings_node(vocab_path, L(dataset_label_names)(dataset=dataset))
        ),
    }
