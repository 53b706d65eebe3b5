"""ScaleDet's classifier: region features scored against label text embeddings, trained with
the hard-label and soft-label losses of ScaleDet (Chen et al., CVPR 2023, Sec. 3.2).

For a region feature x the predictor computes v = W x (a linear projection to the text width
D) and, for every label c of the current vocabulary with fixed unit text embedding t_c,

    cos_c = <v / |v|, t_c>,    logit_c = cos_c / tau + b                      (Eq. 4-5)
    L_hard = (1 / R)    sum_{r}       sum_{c in K} BCE(sigmoid(logit_rc), y_rc)       (Eq. 6)
    L_soft = (1 / R_fg) sum_{r in fg} sum_{c in K} (cos_rc - S[y_r, c])^2             (Eq. 7)
    L_cls = L_hard + lambda * L_soft

y is one-hot (all zeros for background), R the number of sampled regions, R_fg the foreground
ones, S the label similarity matrix (cosine of the text embeddings rescaled to [0, 1]) and K
the labels a batch is trained against: all C labels, or with the federated loss the classes of
detectron2's ``get_fed_loss_classes`` (Detic's sampler). Both terms sum over K and average over
regions, so the gradient that each (region, label) pair receives from either term does not
depend on C, and lambda weighs the two the same way at any vocabulary size. (The paper's
normalisation could not be checked; see projects/ScaleDet/README.md.)

Box regression is class-agnostic (the vocabulary can change at test time) and its loss is
detectron2's. The vocabulary is a non-persistent buffer: checkpoints do not carry it, so a
trained model loads under any vocabulary (open-vocabulary inference).
"""

import contextlib
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from detectron2.layers import cat
from detectron2.modeling import GeneralizedRCNN
from detectron2.modeling.roi_heads import CascadeROIHeads, FastRCNNOutputLayers, StandardROIHeads
from torch import nn

from .text_embeddings import DEFAULT_PROMPTS, build_text_encoder, encode_labels, label_similarity

__all__ = [
    "ScaleDetCascadeROIHeads",
    "ScaleDetOutputLayers",
    "ScaleDetRCNN",
    "ScaleDetROIHeads",
    "VocabularySwap",
    "encode_vocabulary",
    "scaledet_losses",
    "set_vocabulary",
]


def scaledet_losses(
    cos: torch.Tensor,
    logits: torch.Tensor,
    gt_classes: torch.Tensor,
    similarity: torch.Tensor,
    class_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ScaleDet's hard- and soft-label losses.

    Args:
        cos: (R, C) cosine between each region's projected feature and each label embedding.
        logits: (R, C) the hard-label logits (cos / tau + bias).
        gt_classes: (R,) labels in [0, C], C meaning background.
        similarity: (C, C) label similarity in [0, 1].
        class_mask: optional (C,) bool, the labels K both terms are computed over (the
            federated loss's classes); None: all C.

    Returns:
        (L_hard, L_soft): BCE summed over the labels in K and averaged over the R regions;
        squared error summed over the labels in K and averaged over the foreground regions
        (0 when no region is foreground).
    """
    num_regions, num_classes = logits.shape
    if num_regions == 0:
        zero = logits.sum() * 0.0
        return zero, zero
    weight = None if class_mask is None else class_mask.to(logits.dtype)[None]  # [1, C]
    target = F.one_hot(gt_classes, num_classes + 1)[:, :num_classes].to(logits.dtype)
    hard = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum")
    hard = hard / num_regions
    fg = gt_classes < num_classes
    if fg.any():
        err = (cos[fg] - similarity[gt_classes[fg]].to(cos.dtype)) ** 2  # [R_fg, C]
        if weight is not None:
            err = err * weight.to(err.dtype)
        soft = err.sum() / int(fg.sum())
    else:
        soft = cos.sum() * 0.0
    return hard, soft


class ScaleDetOutputLayers(FastRCNNOutputLayers):
    """FastRCNNOutputLayers whose classifier is the cosine to fixed label text embeddings.

    ``cls_score`` is the projection W (input -> D); ``forward`` returns (R, C + 1) logits, the
    last column a constant 0 for detectron2's background slot (ignored by the sigmoid
    inference and by the losses).
    """

    def __init__(
        self,
        input_shape,
        *,
        text_embeddings: torch.Tensor,
        temperature: float = 0.02,
        soft_loss_weight: float = 1.0,
        similarity_rescale: str = "minmax",
        bias_prior_prob: float | None = 0.01,
        num_classes: int | None = None,
        use_fed_loss: bool = False,
        fed_loss_cls_weights: torch.Tensor | Callable[[], torch.Tensor] | None = None,
        fed_loss_num_classes: int = 50,
        **kwargs,
    ):
        """
        Args:
            text_embeddings: (C, D) label embeddings of the training vocabulary (the unified
                label space); rows are L2-normalised here.
            temperature: tau of the hard-label logits.
            soft_loss_weight: lambda, the weight of the soft-label loss.
            similarity_rescale: how cosines become S in [0, 1] (see ``label_similarity``).
            bias_prior_prob: initialise a learned logit bias b to the log-odds of this prior
                (None: no bias). ScaleDet does not say; Detic's zero-shot classifier does this.
            num_classes: optional; must equal C when given.
            use_fed_loss: train each batch against the federated classes only (Detic's
                federated loss, through detectron2's ``get_fed_loss_classes``): the batch's gt
                classes plus negatives drawn without replacement with probability
                proportional to ``fed_loss_cls_weights``, up to ``fed_loss_num_classes``. Both
                L_hard and L_soft are then summed over those classes. Off by default, as in
                Detic.
            fed_loss_cls_weights: (C,) sampling weights over the training vocabulary, or a
                callable returning them, called only with ``use_fed_loss`` (e.g.
                :class:`~d2ext.projects.scaledet.label_space.FedLossClassWeights`: LVIS
                image counts ** 0.5, 0 for labels never drawn as negatives). Needed with
                ``use_fed_loss``; a buffer that checkpoints do not carry.
            fed_loss_num_classes: classes per batch (Detic: 50).
            kwargs: FastRCNNOutputLayers' arguments (box2box_transform, test_score_thresh...).
        """
        if text_embeddings.ndim != 2:
            raise ValueError(f"text_embeddings must be (C, D), got {tuple(text_embeddings.shape)}")
        num_labels = text_embeddings.shape[0]
        if num_classes is not None and num_classes != num_labels:
            raise ValueError(
                f"num_classes={num_classes} but the text embeddings have {num_labels} labels"
            )
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if use_fed_loss:
            if fed_loss_cls_weights is None:
                raise ValueError("use_fed_loss needs fed_loss_cls_weights (C,)")
            if callable(fed_loss_cls_weights):
                fed_loss_cls_weights = fed_loss_cls_weights()
            fed_loss_cls_weights = torch.as_tensor(fed_loss_cls_weights, dtype=torch.float32)
            if fed_loss_cls_weights.shape != (num_labels,):
                raise ValueError(
                    f"fed_loss_cls_weights has shape {tuple(fed_loss_cls_weights.shape)}, "
                    f"expected ({num_labels},) for the vocabulary"
                )
            if not (
                torch.isfinite(fed_loss_cls_weights).all() and fed_loss_cls_weights.ge(0).all()
            ):
                raise ValueError("fed_loss_cls_weights must be finite and >= 0")
            if fed_loss_num_classes < 1:
                raise ValueError(f"fed_loss_num_classes must be >= 1, got {fed_loss_num_classes}")
        kwargs.update(
            cls_agnostic_bbox_reg=True,
            use_sigmoid_ce=True,
            use_fed_loss=use_fed_loss,
            get_fed_loss_cls_weights=lambda: fed_loss_cls_weights,
            fed_loss_num_classes=fed_loss_num_classes,
        )
        super().__init__(input_shape, num_classes=num_labels, **kwargs)
        if use_fed_loss:  # derived from dataset metadata: not saved in checkpoints
            del self._buffers["fed_loss_cls_weights"]
            self.register_buffer("fed_loss_cls_weights", fed_loss_cls_weights, persistent=False)
        dim = text_embeddings.shape[1]
        self.cls_score = nn.Linear(self.cls_score.in_features, dim)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.constant_(self.cls_score.bias, 0.0)
        self.temperature = temperature
        self.soft_loss_weight = soft_loss_weight
        self.similarity_rescale = similarity_rescale
        if bias_prior_prob is None:
            self.register_buffer("cls_bias", torch.zeros(1), persistent=False)
        else:
            init = -math.log((1 - bias_prior_prob) / bias_prior_prob)
            self.cls_bias = nn.Parameter(torch.full((1,), init))
        self.register_buffer("text_embeddings", torch.empty(0, dim), persistent=False)
        self.register_buffer("similarity", torch.empty(0, 0), persistent=False)
        self.set_vocabulary(text_embeddings)

    @property
    def embedding_dim(self) -> int:
        """
        Returns:
            int: D, the width of the label embeddings (``cls_score``'s output).
        """
        return self.cls_score.out_features

    def set_vocabulary(self, embeddings: torch.Tensor) -> None:
        """Replaces the label embeddings (C', D); C' may differ from C."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_dim:
            raise ValueError(
                f"vocabulary embeddings must be (C, {self.embedding_dim}), "
                f"got {tuple(embeddings.shape)}"
            )
        if embeddings.shape[0] == 0:
            raise ValueError("the vocabulary is empty")
        if not torch.isfinite(embeddings).all():
            raise ValueError("vocabulary embeddings contain NaN or inf")
        device = self.cls_score.weight.device
        emb = F.normalize(embeddings.detach().float(), dim=1).to(device)
        self.text_embeddings = emb
        self.similarity = label_similarity(emb, self.similarity_rescale)
        self.num_classes = emb.shape[0]

    def cosine(self, x: torch.Tensor) -> torch.Tensor:
        """(R, C) cosine between the projected region features and the label embeddings."""
        v = F.normalize(self.cls_score(x.flatten(1)), dim=1)  # [R, D]
        return v @ self.text_embeddings.T  # [R, C]

    def forward(self, x):
        """
        Args:
            x: [R, ...] region features (flattened to [R, F]).

        Returns:
            tuple[Tensor, Tensor]: the scores [R, C + 1] (cosine / temperature + bias, then a zero
            background column) and the box deltas [R, 4] (class-agnostic).
        """
        x = x.flatten(1)
        logits = self.cosine(x) / self.temperature + self.cls_bias  # [R, C]
        scores = torch.cat([logits, logits.new_zeros(logits.shape[0], 1)], dim=1)  # [R, C+1]
        return scores, self.bbox_pred(x)

    def losses(self, predictions, proposals):
        """
        Args:
            predictions: the output of :meth:`forward`.
            proposals: per image the sampled proposals with ``gt_classes`` (and ``gt_boxes``).

        Returns:
            dict[str, Tensor]: ``loss_cls`` (the hard-label loss), ``loss_cls_soft`` (the soft-label
            loss times ``soft_loss_weight``) and ``loss_box_reg``, each times its ``loss_weight``
            (see :func:`scaledet_losses`).
        """
        scores, proposal_deltas = predictions
        logits = scores[:, :-1]
        cos = (logits - self.cls_bias) * self.temperature
        if len(proposals):
            gt_classes = cat([p.gt_classes for p in proposals], dim=0)
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
            gt_boxes = cat(
                [(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals],
                dim=0,
            )
        else:
            gt_classes = proposal_deltas.new_empty(0, dtype=torch.long)
            proposal_boxes = gt_boxes = proposal_deltas.new_empty((0, 4))
        hard, soft = scaledet_losses(
            cos, logits, gt_classes, self.similarity, self.fed_loss_class_mask(gt_classes)
        )
        losses = {
            "loss_cls": hard,
            "loss_cls_soft": self.soft_loss_weight * soft,
            "loss_box_reg": self.box_reg_loss(
                proposal_boxes, gt_boxes, proposal_deltas, gt_classes
            ),
        }
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}

    def fed_loss_class_mask(self, gt_classes: torch.Tensor) -> torch.Tensor | None:
        """The (C,) bool mask of the classes this batch is trained against (None: all, when
        the federated loss is off or there are no regions). Draws from the global torch RNG.

        Args:
            gt_classes: (R,) the batch's region labels in [0, C].
        """
        if not self.use_fed_loss or gt_classes.numel() == 0:
            return None
        num_classes = self.num_classes
        weights = self.fed_loss_cls_weights
        if weights.numel() != num_classes:
            raise ValueError(
                f"federated-loss weights cover {weights.numel()} labels but the vocabulary has "
                f"{num_classes}: train under the vocabulary the weights were made for"
            )
        unique = torch.unique(gt_classes)  # background included, as detectron2 counts it
        appeared = unique[unique < num_classes]
        available = int((weights > 0).sum()) - int((weights[appeared] > 0).sum())
        # never ask torch.multinomial for more classes than have a nonzero weight
        count = min(self.fed_loss_num_classes, len(unique) + available)
        classes = self.get_fed_loss_classes(gt_classes, count, num_classes, weights)
        mask = torch.zeros(num_classes + 1, dtype=torch.bool, device=gt_classes.device)
        mask[classes] = True
        return mask[:num_classes]


class _VocabularyMixin:
    def _predictors(self) -> list[ScaleDetOutputLayers]:
        preds = self.box_predictor
        preds = list(preds) if isinstance(preds, nn.ModuleList) else [preds]
        for p in preds:
            if not isinstance(p, ScaleDetOutputLayers):
                raise TypeError(f"{type(self).__name__} needs ScaleDetOutputLayers, got {type(p)}")
        return preds

    def _check_num_classes(self):
        counts = {p.num_classes for p in self._predictors()}
        if len(counts) != 1:
            raise ValueError(f"cascade stages have different vocabularies: {counts}")
        self.num_classes = counts.pop()

    @property
    def vocabulary(self) -> torch.Tensor:
        """The (C, D) label embeddings in use."""
        return self._predictors()[0].text_embeddings

    def set_vocabulary(self, embeddings: torch.Tensor) -> None:
        """Makes the model detect the C' labels whose text embeddings are given (C', D)."""
        for p in self._predictors():
            p.set_vocabulary(embeddings)
        self.num_classes = embeddings.shape[0]


class ScaleDetROIHeads(_VocabularyMixin, StandardROIHeads):
    """StandardROIHeads with a :class:`ScaleDetOutputLayers` predictor; ``num_classes`` follows
    the predictor's vocabulary (give it or leave it out)."""

    def __init__(self, *, box_predictor, num_classes: int | None = None, **kwargs):
        super().__init__(
            box_predictor=box_predictor,
            num_classes=num_classes or box_predictor.num_classes,
            **kwargs,
        )
        if num_classes is not None and num_classes != box_predictor.num_classes:
            raise ValueError(
                f"roi_heads.num_classes={num_classes} but the vocabulary has "
                f"{box_predictor.num_classes} labels"
            )
        self._check_num_classes()


class ScaleDetCascadeROIHeads(_VocabularyMixin, CascadeROIHeads):
    """CascadeROIHeads whose every stage predictor is a :class:`ScaleDetOutputLayers`."""

    def __init__(self, *, box_predictors, num_classes: int | None = None, **kwargs):
        n = box_predictors[0].num_classes
        if num_classes is not None and num_classes != n:
            raise ValueError(f"roi_heads.num_classes={num_classes} but the vocabulary has {n}")
        super().__init__(box_predictors=box_predictors, num_classes=n, **kwargs)
        self._check_num_classes()


def _roi_heads(model):
    model = getattr(model, "module", model)  # DistributedDataParallel
    heads = getattr(model, "roi_heads", None)
    if not isinstance(heads, _VocabularyMixin):
        raise TypeError(f"{type(model).__name__} has no ScaleDet ROI heads")
    return heads


def encode_vocabulary(
    names: Sequence[str], encoder=None, prompts: Sequence[str] = DEFAULT_PROMPTS
) -> torch.Tensor:
    """Text embeddings (C, D) of any label list, by ``encoder`` (default the offline sentence
    encoder; it must be the one the model was trained with)."""
    encoder = encoder or build_text_encoder("sentence")
    return torch.from_numpy(encode_labels(encoder, list(names), prompts))


def set_vocabulary(model, vocabulary, encoder=None, prompts=DEFAULT_PROMPTS) -> torch.Tensor:
    """Swaps a ScaleDet model's vocabulary.

    Args:
        model: a detector (or its DDP wrapper) with ScaleDet ROI heads.
        vocabulary: a (C', D) tensor of text embeddings, or a list of label names to encode
            with ``encoder`` and ``prompts``.

    Returns:
        The previous (C, D) embeddings, to restore them later.
    """
    heads = _roi_heads(model)
    if not torch.is_tensor(vocabulary):
        vocabulary = encode_vocabulary(vocabulary, encoder, prompts)
    old = heads.vocabulary.clone()
    heads.set_vocabulary(vocabulary)
    return old


class VocabularySwap:
    """A test-time vocabulary as a config value: ``VocabularySwap(embeddings)(model)`` is a
    context manager that sets the vocabulary and restores the previous one on exit (the
    engine's per-dataset evaluation uses it as ``dataloader.tests.<name>.context``)."""

    def __init__(self, embeddings: torch.Tensor):
        self.embeddings = embeddings

    @contextlib.contextmanager
    def __call__(self, model):
        old = set_vocabulary(model, self.embeddings)
        try:
            yield model
        finally:
            set_vocabulary(model, old)


class ScaleDetRCNN(GeneralizedRCNN):
    """GeneralizedRCNN with ScaleDet ROI heads whose test inputs may carry their vocabulary.

    An input dict with a ``"vocabulary"`` (C', D) tensor of label embeddings is detected in
    that vocabulary (classes index its rows); the model's own vocabulary is restored after the
    batch. Every input of a batch must carry the same tensor (or none). This lets a test loader
    score several datasets, each in its own label space, through detectron2's plain
    ``inference_on_dataset`` (see :class:`MultiDatasetTestLoader`). Training is unchanged.
    """

    def inference(self, batched_inputs, detected_instances=None, do_postprocess=True):
        """``GeneralizedRCNN.inference``, in the inputs' ``vocabulary`` when they carry one.

        Args:
            batched_inputs: detectron2's input dicts, optionally with ``vocabulary`` [C', D] (the
                same tensor for every input of the batch).
            detected_instances, do_postprocess: as in ``GeneralizedRCNN.inference``.

        Returns:
            ``GeneralizedRCNN.inference``'s output; classes index the vocabulary's rows.

        Raises:
            ValueError: the inputs carry different vocabularies, or only some carry one.
        """
        vocabs = [d.get("vocabulary") for d in batched_inputs]
        if all(v is None for v in vocabs):
            return super().inference(batched_inputs, detected_instances, do_postprocess)
        first = vocabs[0]
        if any(v is None or (v is not first and not torch.equal(v, first)) for v in vocabs):
            raise ValueError("every input of a batch must carry the same 'vocabulary'")
        with VocabularySwap(first)(self):
            return super().inference(batched_inputs, detected_instances, do_postprocess)
