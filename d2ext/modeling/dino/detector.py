"""``DINO``: a detectron2 meta-architecture (registered) for DINO (Zhang et al., ICLR 2023) on the
parts of ``d2ext.modeling.deformable_detr``: backbone, ``ChannelMapper`` neck, the deformable
encoder, DINO's query selection and decoder (:class:`DINOTransformer`), contrastive denoising
in training (:class:`ContrastiveDenoising`), DINO's losses (:class:`DINOCriterion`)."""

from __future__ import annotations

import torch
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Boxes, Instances
from torchvision.ops import box_convert

from d2ext.layers.soft_nms import batched_soft_nms
from d2ext.modeling.deformable_detr.criterion import layer_suffixes
from d2ext.modeling.deformable_detr.detector import DeformableDETR
from d2ext.modeling.deformable_detr.position_encoding import PositionEmbeddingSine
from d2ext.modeling.deformable_detr.transformer import EncoderOutput

from .denoising import ContrastiveDenoising
from .transformer import DINOTransformer

__all__ = ["DINO"]


@META_ARCH_REGISTRY.register()
class DINO(DeformableDETR):
    """DINO as a detectron2 meta-architecture.

    Training: the denoising queries (when ``denoising`` is set and the batch has a box) go
    before the matching queries in one decoder pass, under the denoising attention mask; the
    losses are the Hungarian ones of the matching queries and the selected encoder proposals and
    the denoising ones. With ``denoising=None`` training is the plain two-stage path. Inference
    never builds denoising queries.

    The arguments are listed in ``__init__``.
    """

    def __init__(
        self,
        *,
        denoising: ContrastiveDenoising | None,
        position_temperature: float = 20.0,
        position_offset: float = 0.0,
        soft_nms_iou: float | None = None,
        num_preselect: int | None = None,
        **kwargs,
    ):
        """
        Args:
            denoising: the denoising-query builder (None: no denoising).
            position_temperature, position_offset: the sine position encoding of the feature
                maps (mmdetection's DINO: 20 and 0).
            soft_nms_iou: None: the top ``num_detections`` (query, class) pairs (DINO); else the
                top ``num_preselect`` pairs go through class-wise linear soft-NMS at this IoU
                before the top ``num_detections`` are kept (Co-DINO: 0.8).
            num_preselect: the pairs kept before soft-NMS (None: ``num_detections``).
            kwargs: :class:`DeformableDETR`'s arguments; ``transformer`` must be a
                :class:`DINOTransformer`.
        """
        super().__init__(**kwargs)
        if not isinstance(self.transformer, DINOTransformer):
            raise TypeError(f"DINO needs a DINOTransformer, got {type(self.transformer).__name__}")
        self.denoising = denoising
        self.position_embedding = PositionEmbeddingSine(
            num_feats=self.transformer.d_model // 2,
            temperature=position_temperature,
            offset=position_offset,
        )
        if soft_nms_iou is not None and not 0.0 < soft_nms_iou <= 1.0:
            raise ValueError(f"soft_nms_iou must be in (0, 1], got {soft_nms_iou}")
        self.soft_nms_iou = soft_nms_iou
        self.num_preselect = num_preselect

    def forward_queries(
        self, enc: EncoderOutput, targets: list[dict] | None = None
    ) -> dict[str, object]:
        """Selects the top-k encoder proposals as queries, prepends the denoising queries (in
        training with ``targets``), and runs the decoder once.

        Args:
            enc: the encoder's output.
            targets: per image ``labels`` / ``boxes`` (normalised cxcywh), or None.

        Returns:
            dict: ``pred_logits`` [D, N, Q, K] and ``pred_boxes`` [D, N, Q, 4] of the matching
            queries, ``enc_logits`` [N, Q, K] and ``enc_boxes`` [N, Q, 4] of the selected
            proposals; with denoising queries also ``dn_logits`` [D, N, P, K], ``dn_boxes``
            [D, N, P, 4] and ``denoising`` (:class:`DenoisingQueries`).
        """
        content, ref, enc_logits, enc_boxes = self.transformer.select_topk(enc)
        dn = None
        if self.training and self.denoising is not None and targets is not None:
            dn = self.denoising(targets, num_queries=content.shape[1])
        mask = None
        if dn is not None:
            content = torch.cat([dn.content, content], 1)
            ref = torch.cat([dn.ref, ref], 1)
            mask = dn.attn_mask
        logits, boxes = self.transformer.decode(enc, content, None, ref, attn_mask=mask)
        p = dn.pad_size if dn is not None else 0
        out = {
            "pred_logits": logits[:, :, p:],
            "pred_boxes": boxes[:, :, p:],
            "enc_logits": enc_logits,
            "enc_boxes": enc_boxes,
        }
        if dn is not None:
            out.update(dn_logits=logits[:, :, :p], dn_boxes=boxes[:, :, :p], denoising=dn)
        return out

    def empty_denoising_losses(self) -> dict[str, torch.Tensor]:
        """Zero ``*_dn`` losses for a batch without boxes (tied to the label embedding, so every
        parameter takes part in the step)."""
        zero = self.denoising.label_embed.weight.sum() * 0.0
        names = ("loss_class", "loss_bbox", "loss_giou")
        suffixes = layer_suffixes(self.transformer.num_decoder_layers, two_stage=False)
        return {f"{n}{s}_dn": zero for s in suffixes for n in names}

    def training_losses(self, enc: EncoderOutput, targets: list[dict]) -> dict[str, torch.Tensor]:
        """The matching, encoder-proposal and denoising losses of one batch.

        Args:
            enc: the encoder's output.
            targets: per image ``labels`` / ``boxes`` (normalised cxcywh).

        Returns:
            dict[str, Tensor]: the weighted losses.
        """
        outputs = self.forward_queries(enc, targets)
        losses = self.criterion(outputs, targets)
        if self.denoising is not None and "denoising" not in outputs:
            losses.update(self.empty_denoising_losses())
        return losses

    def forward(self, batched_inputs: list[dict]):
        """
        Args:
            batched_inputs: detectron2's input dicts; in training each needs ``instances``.

        Returns:
            In training, dict[str, Tensor]: the weighted losses. At inference, list[dict]: per
            image ``{"instances": Instances}`` with ``pred_boxes``, ``scores`` and
            ``pred_classes``.
        """
        images = self.preprocess_image(batched_inputs)
        enc, _ = self.encode(images)
        if self.training:
            return self.training_losses(enc, self.prepare_targets(batched_inputs, images))
        return self.postprocess(self.forward_queries(enc), images, batched_inputs)

    def inference(self, logits, boxes, image_sizes) -> list[Instances]:
        """Top (query, class) pairs per image (through soft-NMS when ``soft_nms_iou`` is set),
        boxes in input pixels."""
        if self.soft_nms_iou is None:
            return super().inference(logits, boxes, image_sizes)
        n, q, k = logits.shape
        prob = logits.sigmoid().view(n, -1)
        pre = self.num_preselect or self.num_detections
        scores, idx = prob.topk(min(pre, q * k), dim=1)
        labels, qidx = idx % k, idx // k
        xyxy = box_convert(
            torch.gather(boxes, 1, qidx[..., None].expand(-1, -1, 4)), "cxcywh", "xyxy"
        )
        results = []
        for i, (h, w) in enumerate(image_sizes):
            b = Boxes(xyxy[i] * xyxy.new_tensor([w, h, w, h]))
            b.clip((h, w))  # clipped before the suppression, as the authors
            keep, kept_scores = batched_soft_nms(
                b.tensor,
                scores[i],
                labels[i],
                iou_threshold=self.soft_nms_iou,
                max_dets=self.num_detections,
            )
            r = Instances((h, w))
            r.pred_boxes = b[keep]
            r.scores, r.pred_classes = kept_scores.to(scores), labels[i][keep]
            results.append(r)
        return results
