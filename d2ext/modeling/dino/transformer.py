"""DINO's transformer: the two-stage deformable transformer of
``d2ext.modeling.deformable_detr`` (same encoder, encoder proposals, decoder layers and prediction
heads) with DINO's query selection and decoder.

What changes against :class:`~d2ext.modeling.deformable_detr.DeformableTransformer`:

- query selection: the top-k encoder proposals by their best class score (not class 0); their
  boxes are the reference points, the content is ``num_queries`` learned embeddings (mixed
  query selection);
- decoder: each layer's query position is ``ref_point_head(sine(reference))`` (an MLP on the
  sine embedding of the current reference box in (y, x, w, h) order, scaled by the level-0 valid
  ratio), the self-attention takes an optional mask (the denoising groups), and the predictions
  read a final LayerNorm of each layer's output while the reference update reads the un-normed
  output (mmdetection's ``DinoTransformerDecoder`` and ``DINOHead``);
- look-forward-twice as in Deformable DETR: layer l predicts from layer l-1's un-detached box.
"""

from __future__ import annotations

import torch
from torch import nn

from d2ext.modeling.deformable_detr.position_encoding import box_sine_embedding, inverse_sigmoid
from d2ext.modeling.deformable_detr.transformer import MLP, DeformableTransformer, EncoderOutput

__all__ = ["DINOTransformer"]


class DINOTransformer(DeformableTransformer):
    """DINO's two-stage deformable transformer (see the module docstring).

    Args:
        xavier_query_embed: xavier-uniform init of the learned content queries (mmdetection's
            and the DINO repository's DINO); False keeps N(0, 1) (Co-DINO).
        kwargs: :class:`DeformableTransformer`'s arguments except ``mixed_selection`` (always
            on).
    """

    def __init__(self, *, xavier_query_embed: bool = False, **kwargs):
        super().__init__(mixed_selection=True, **kwargs)
        d = self.d_model
        # query positions come from the reference boxes in every layer, not from pos_trans
        del self.pos_trans, self.pos_trans_norm
        self.ref_point_head = MLP(2 * d, d, d, 2)
        self.decoder_norm = nn.LayerNorm(d)
        if kwargs.get("xavier_init", True):  # part of the authors' decoder: in the xavier pass
            for p in self.ref_point_head.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        if xavier_query_embed:
            nn.init.xavier_uniform_(self.query_embed.weight)

    def select_topk(self, enc: EncoderOutput):
        """The top-k encoder proposals by their best class score.

        Args:
            enc: the encoder's output (with ``enc_logits`` / ``enc_boxes`` of every location).

        Returns:
            tuple: content [N, k, C] (the learned queries), reference boxes [N, k, 4] (detached),
            and the selected proposals' logits [N, k, K] and boxes [N, k, 4] (with gradients,
            for the encoder loss); k = min(num_queries, locations).
        """
        k = min(self.num_queries, enc.enc_logits.shape[1])
        topk = torch.topk(enc.enc_logits.max(-1)[0], k, dim=1)[1]
        logits = torch.gather(
            enc.enc_logits, 1, topk[..., None].expand(-1, -1, enc.enc_logits.shape[-1])
        )
        boxes = torch.gather(enc.enc_boxes, 1, topk[..., None].expand(-1, -1, 4))
        content = self.query_embed.weight[None, :k].expand(boxes.shape[0], -1, -1)
        return content, boxes.detach(), logits, boxes

    def select_queries(self, enc: EncoderOutput):
        """Top-k encoder proposals -> (content, None, reference boxes (detached)): DINO's
        decoder builds the query positions itself."""
        content, ref, _, _ = self.select_topk(enc)
        return content, None, ref

    def query_position(self, ref: torch.Tensor) -> torch.Tensor:
        """``ref_point_head`` on the sine embedding of [N, Q, 4] reference boxes (already scaled
        by the level-0 valid ratio), coordinates in DINO's (y, x, w, h) order -> [N, Q, C]."""
        emb = box_sine_embedding(ref[..., [1, 0, 2, 3]], num_feats=self.d_model // 2)
        return self.ref_point_head(emb)

    def decode(
        self,
        enc: EncoderOutput,
        content: torch.Tensor,
        query_pos: torch.Tensor | None,
        reference_boxes: torch.Tensor,
        return_hidden: bool = False,
        attn_mask: torch.Tensor | None = None,
    ):
        """Runs DINO's decoder on one query sequence.

        Args:
            enc: the encoder's output.
            content: [N, Q, C] query content.
            query_pos: must be None (positions come from the references).
            reference_boxes: [N, Q, 4] normalised cxcywh (detached here).
            return_hidden: also return the per-layer (normed) query features.
            attn_mask: optional [Q, Q] bool self-attention mask, True = blocked.

        Returns:
            per-layer logits [D, N, Q, K] and boxes [D, N, Q, 4] (normalised cxcywh), and with
            ``return_hidden`` the features [D, N, Q, C].
        """
        if query_pos is not None:
            raise ValueError("DINO's decoder builds the query positions from the reference boxes")
        tgt, ref = content, reference_boxes.detach()
        prev = ref
        ratios = torch.cat([enc.valid_ratios, enc.valid_ratios], -1)[:, None]
        all_logits, all_boxes, hidden = [], [], []
        for i, layer in enumerate(self.decoder_layers):
            ref_input = ref[:, :, None] * ratios
            tgt = layer(
                tgt,
                self.query_position(ref_input[:, :, 0]),
                ref_input,
                enc.memory,
                enc.spatial_shapes,
                enc.padding_mask,
                attn_mask=attn_mask,
            )
            new_ref = (self.bbox_embed[i](tgt) + inverse_sigmoid(ref, eps=1e-3)).sigmoid()
            h = self.decoder_norm(tgt)
            # look-forward-twice: the prediction refines the previous layer's un-detached box
            base = prev if self.look_forward_twice else ref
            all_boxes.append((self.bbox_embed[i](h) + inverse_sigmoid(base)).sigmoid())
            all_logits.append(self.class_embed[i](h))
            hidden.append(h)
            prev = new_ref
            ref = new_ref.detach()
        if return_hidden:
            return torch.stack(all_logits), torch.stack(all_boxes), torch.stack(hidden)
        return torch.stack(all_logits), torch.stack(all_boxes)
