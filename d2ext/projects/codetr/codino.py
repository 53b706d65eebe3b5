"""Co-DINO: Co-DETR's collaborative hybrid assignment training on the DINO base detector
(``d2ext.modeling.dino``), as the authors' ``CoDINOHead`` / ``CoDinoTransformer``.

Training runs one encoder pass and three decoder passes: DINO's (denoising queries, then the
matching queries, under the denoising attention mask), then one pass per auxiliary head on its
positive queries (no denoising, no matching queries, no mask) on the same encoder memory. The
auxiliary heads (Faster R-CNN = head 0, ATSS = head 1 on the multi-scale adapter) and the
positive queries' sampling are :class:`CoDeformableDETR`'s. A positive query of head k is
``content = LN_k(Linear_k(sine(box)))`` (512 -> d_model), plus ``LN_k(Linear_k(f))`` of the
feature at the positive when ``with_coord_feat`` (off in every released Co-DINO config); its
position comes from DINO's decoder (``ref_point_head`` on the reference box), so there is no
head embedding. Inference is :class:`DINO`'s; ``strip_auxiliary`` gives a ``DINO`` state dict.
"""

from __future__ import annotations

import torch
from detectron2.modeling import META_ARCH_REGISTRY

from d2ext.modeling.deformable_detr.position_encoding import box_sine_embedding, inverse_sigmoid
from d2ext.modeling.dino import DINO

from .modeling import CoDeformableDETR

__all__ = ["CoDINO"]


@META_ARCH_REGISTRY.register()
class CoDINO(CoDeformableDETR, DINO):
    """Co-DETR on DINO: in training, DINO's matching, encoder-proposal and denoising losses plus
    the auxiliary heads' losses (``aux_rcnn_*``, ``aux_atss_*``) and the positive queries'
    losses (``*_pos{head}``); at inference, ``DINO``'s forward.

    Args:
        head_embed: must be None (Co-DINO's queries take their position from the decoder).
        kwargs: :class:`CoDeformableDETR`'s arguments (adapter, heads, lambdas, positive-query
            sampling, ``with_coord_feat``) and :class:`DINO`'s (``denoising``, position
            encoding, soft-NMS, and the base detector's parts).
    """

    # aux_pos_trans maps a box's sine embedding to the content only
    positive_query_parts = 1

    def __init__(self, *, head_embed: str | None = None, **kwargs):
        if head_embed is not None:
            raise ValueError("Co-DINO has no head embedding (head_embed must be None)")
        super().__init__(head_embed=None, **kwargs)

    def positive_query_embedding(
        self, head: int, q: dict[str, torch.Tensor]
    ) -> tuple[None, torch.Tensor]:
        """The content of head ``head``'s positive queries ``q`` (``build_positive_queries``'s
        output), [N, M, d_model]; their position is built by the decoder (None here)."""
        # the authors embed sigmoid(inverse_sigmoid(box)): the box clamped into (0, 1)
        box = inverse_sigmoid(q["ref"]).sigmoid()
        emb = box_sine_embedding(box, num_feats=self.transformer.d_model // 2)
        content = self.aux_pos_trans_norm[head](self.aux_pos_trans[head](emb))
        if self.with_coord_feat:
            content = content + self.pos_feats_norm[head](self.pos_feats_trans[head](q["feats"]))
        return None, content

    def forward(self, batched_inputs: list[dict]):
        """
        Args:
            batched_inputs: detectron2's input dicts; in training each needs ``instances``.

        Returns:
            In training, dict[str, Tensor]: DINO's losses, the auxiliary heads' losses and the
            positive queries' losses. At inference, ``DINO.forward``'s output.
        """
        if not self.training:
            return DINO.forward(self, batched_inputs)
        images = self.preprocess_image(batched_inputs)
        targets = self.prepare_targets(batched_inputs, images)
        enc, _ = self.encode(images)
        losses = self.training_losses(enc, targets)
        aux, positives = self.auxiliary_losses(images, enc, targets)
        losses.update(aux)
        losses.update(self.positive_query_losses(images, enc, positives))
        return losses
