"""The two-stage Deformable-DETR transformer: deformable encoder, encoder-side proposals with
top-k (mixed) query selection, and a decoder with iterative box refinement and
look-forward-twice.

Box predictions live in the decoder (``class_embed`` / ``bbox_embed``, one per decoder layer
plus one for the encoder proposals) because box refinement feeds each layer's boxes to the next.
``decode`` is public so that extra query groups (Co-DETR's positive queries) go through the same
layers.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .ms_deform_attn import MSDeformAttn
from .position_encoding import box_sine_embedding, inverse_sigmoid

__all__ = [
    "DeformableDecoderLayer",
    "DeformableEncoderLayer",
    "DeformableTransformer",
    "EncoderOutput",
    "MLP",
]


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: [..., input_dim].

        Returns:
            Tensor: [..., output_dim].
        """
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class _FFN(nn.Module):
    def __init__(self, d_model: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Linear, ReLU, Linear with dropout, then residual and LayerNorm.

        Args:
            x: [..., d_model].

        Returns:
            Tensor: [..., d_model].
        """
        return self.norm(x + self.dropout2(self.linear2(self.dropout1(F.relu(self.linear1(x))))))


class DeformableEncoderLayer(nn.Module):
    """Post-norm: deformable self-attention over all levels, then the FFN."""

    def __init__(self, d_model, dim_feedforward, dropout, n_levels, n_heads, n_points):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.ffn = _FFN(d_model, dim_feedforward, dropout)

    def forward(self, src, pos, reference_points, spatial_shapes, padding_mask):
        """
        Args:
            src: [N, S, C] flattened features of all levels.
            pos: [N, S, C] position embeddings.
            reference_points: [N, S, L, 2] reference points.
            spatial_shapes: [L, 2] (H_l, W_l) of each level.
            padding_mask: [N, S], True at padded positions.

        Returns:
            Tensor: [N, S, C].
        """
        attn = self.self_attn(src + pos, reference_points, src, spatial_shapes, padding_mask)
        return self.ffn(self.norm(src + self.dropout(attn)))


class DeformableDecoderLayer(nn.Module):
    """Post-norm: multi-head self-attention among the queries, deformable cross-attention into
    the encoder memory, then the FFN."""

    def __init__(self, d_model, dim_feedforward, dropout, n_levels, n_heads, n_points):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = _FFN(d_model, dim_feedforward, dropout)

    def forward(
        self, tgt, query_pos, reference_points, memory, spatial_shapes, padding_mask, attn_mask=None
    ):
        """
        Args:
            tgt: [N, Q, C] query content.
            query_pos: [N, Q, C] query position embeddings.
            reference_points: [N, Q, L, 4] reference boxes (or [N, Q, L, 2] points).
            memory: [N, S, C] encoder memory.
            spatial_shapes: [L, 2] (H_l, W_l) of each level.
            padding_mask: [N, S], True at padded positions.
            attn_mask: optional [Q, Q] bool self-attention mask, True where query i may not
                attend to query j (DINO's denoising groups).

        Returns:
            Tensor: [N, Q, C] updated query content.
        """
        q = k = tgt + query_pos
        attn = self.self_attn(q, k, tgt, attn_mask=attn_mask, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout1(attn))
        attn = self.cross_attn(
            tgt + query_pos, reference_points, memory, spatial_shapes, padding_mask
        )
        tgt = self.norm2(tgt + self.dropout2(attn))
        return self.ffn(tgt)


@dataclass
class EncoderOutput:
    """What the encoder side hands to the decoder(s) and to auxiliary heads."""

    memory: torch.Tensor  # (N, S, C)
    padding_mask: torch.Tensor  # (N, S) True at padding
    spatial_shapes: torch.Tensor  # (L, 2) long
    level_start_index: torch.Tensor  # (L,) long
    valid_ratios: torch.Tensor  # (N, L, 2) (w, h) fraction of each level that is valid
    enc_logits: torch.Tensor | None = None  # (N, S, num_classes) two-stage proposal scores
    enc_boxes: torch.Tensor | None = None  # (N, S, 4) two-stage proposals, sigmoid space

    def level_maps(self) -> list[torch.Tensor]:
        """The memory reshaped back to per-level (N, C, H_l, W_l) maps."""
        n, _, c = self.memory.shape
        shapes = [(int(h), int(w)) for h, w in self.spatial_shapes.tolist()]
        chunks = self.memory.split([h * w for h, w in shapes], dim=1)
        return [x.transpose(1, 2).reshape(n, c, h, w) for x, (h, w) in zip(chunks, shapes)]


def _clones(module: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList(copy.deepcopy(module) for _ in range(n))


class DeformableTransformer(nn.Module):
    """Two-stage Deformable DETR with box refinement (``two_stage=True``,
    ``with_box_refine=True`` in the authors' terms), mixed query selection (positions from the
    top-k encoder proposals, content from ``num_queries`` learned embeddings, as in DINO and
    Co-DETR's ``mixed_selection``) and look-forward-twice (each layer's box prediction is refined
    from the previous layer's un-detached prediction; sampling uses the detached one).

    Proposal scores: the encoder head uses the decoder's class count and is trained on
    class-agnostic targets (every object class 0, as in mmdetection's Deformable DETR and
    Co-DETR); top-k selects on channel 0.

    Initialisation (``xavier_init=True``, the authors' ``DeformableDetrTransformer.init_weights``):
    xavier-uniform on every parameter of more than one dimension of the transformer proper
    (encoder / decoder layers, ``enc_output``, ``pos_trans``), then each ``MSDeformAttn``'s own
    reset and ``level_embed`` ~ N(0, 1). The prediction heads (``class_embed``, ``bbox_embed``)
    and ``query_embed`` live here but belong to the authors' detection head, so they keep their
    own initialisation (PyTorch defaults, class bias from ``prior_prob``, last box layer zero,
    ``query_embed`` ~ N(0, 1)). ``xavier_init=False`` leaves the PyTorch defaults.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        d_model: int = 256,
        n_heads: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.0,
        n_levels: int = 4,
        n_points: int = 4,
        num_queries: int = 300,
        mixed_selection: bool = True,
        look_forward_twice: bool = True,
        prior_prob: float = 0.01,
        xavier_init: bool = True,
    ):
        """
        Args:
            dropout: dropout of the attention outputs and the FFN (the authors' 0.0).
            xavier_init: the authors' xavier pass over the transformer proper (see above).
        """
        super().__init__()
        self.d_model, self.n_levels, self.num_queries = d_model, n_levels, num_queries
        self.num_classes = num_classes
        self.mixed_selection, self.look_forward_twice = mixed_selection, look_forward_twice
        self.encoder_layers = _clones(
            DeformableEncoderLayer(d_model, dim_feedforward, dropout, n_levels, n_heads, n_points),
            num_encoder_layers,
        )
        self.decoder_layers = _clones(
            DeformableDecoderLayer(d_model, dim_feedforward, dropout, n_levels, n_heads, n_points),
            num_decoder_layers,
        )
        self.level_embed = nn.Parameter(torch.empty(n_levels, d_model))
        # encoder proposals
        self.enc_output = nn.Linear(d_model, d_model)
        self.enc_output_norm = nn.LayerNorm(d_model)
        self.pos_trans = nn.Linear(2 * d_model, 2 * d_model)
        self.pos_trans_norm = nn.LayerNorm(2 * d_model)
        self.query_embed = nn.Embedding(num_queries, d_model) if mixed_selection else None
        # prediction heads: decoder layers 0..n-1, then the encoder proposals (index n)
        class_embed = nn.Linear(d_model, num_classes)
        bbox_embed = MLP(d_model, d_model, 4, 3)
        bias = -math.log((1 - prior_prob) / prior_prob)
        nn.init.constant_(class_embed.bias, bias)
        nn.init.constant_(bbox_embed.layers[-1].weight, 0.0)
        nn.init.constant_(bbox_embed.layers[-1].bias, 0.0)
        self.class_embed = _clones(class_embed, num_decoder_layers + 1)
        self.bbox_embed = _clones(bbox_embed, num_decoder_layers + 1)
        if xavier_init:
            for name, p in self.named_parameters():
                if p.dim() > 1 and not name.startswith(self.HEAD_PREFIXES):
                    nn.init.xavier_uniform_(p)
        for mod in self.modules():
            if isinstance(mod, MSDeformAttn):
                mod.reset_parameters()
        nn.init.normal_(self.level_embed)

    # parameters of the authors' detection head that live in this module: outside the xavier pass
    HEAD_PREFIXES = ("class_embed.", "bbox_embed.", "query_embed.")

    @property
    def num_decoder_layers(self) -> int:
        """
        Returns:
            int: the number of decoder layers.
        """
        return len(self.decoder_layers)

    # ------------------------------------------------------------------ encoder
    @staticmethod
    def valid_ratios(mask: torch.Tensor) -> torch.Tensor:
        """(N, H, W) padding mask -> (N, 2) valid (w, h) fractions."""
        _, h, w = mask.shape
        valid_h = (~mask[:, :, 0]).sum(1).float() / h
        valid_w = (~mask[:, 0, :]).sum(1).float() / w
        return torch.stack([valid_w, valid_h], -1)

    @staticmethod
    def encoder_reference_points(spatial_shapes, valid_ratios) -> torch.Tensor:
        """Every location's centre in its own level, projected onto every level: (N, S, L, 2)."""
        refs = []
        device = valid_ratios.device
        for lvl, (h, w) in enumerate(spatial_shapes.tolist()):
            ref_y, ref_x = torch.meshgrid(
                torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
                torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
                indexing="ij",
            )
            ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
            ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
            refs.append(torch.stack((ref_x, ref_y), -1))
        ref = torch.cat(refs, 1)
        return ref[:, :, None] * valid_ratios[:, None]

    def encode(
        self, features: list[torch.Tensor], masks: list[torch.Tensor], pos: list[torch.Tensor]
    ) -> EncoderOutput:
        """features / pos (N, C, H_l, W_l) and masks (N, H_l, W_l) per level."""
        if len(features) != self.n_levels:
            raise ValueError(f"got {len(features)} feature levels, the model has {self.n_levels}")
        src, mask_flat, pos_flat, shapes = [], [], [], []
        for lvl, (x, m, p) in enumerate(zip(features, masks, pos)):
            shapes.append(x.shape[-2:])
            src.append(x.flatten(2).transpose(1, 2))
            mask_flat.append(m.flatten(1))
            pos_flat.append(p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1))
        src, mask_flat, pos_flat = (
            torch.cat(src, 1),
            torch.cat(mask_flat, 1),
            torch.cat(pos_flat, 1),
        )
        device = src.device
        spatial_shapes = torch.as_tensor(
            [tuple(s) for s in shapes], dtype=torch.long, device=device
        )
        level_start_index = torch.cat(
            (spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1])
        )
        valid_ratios = torch.stack([self.valid_ratios(m) for m in masks], 1)
        ref = self.encoder_reference_points(spatial_shapes, valid_ratios)
        memory = src
        for layer in self.encoder_layers:
            memory = layer(memory, pos_flat, ref, spatial_shapes, mask_flat)
        out = EncoderOutput(memory, mask_flat, spatial_shapes, level_start_index, valid_ratios)
        out.enc_logits, out.enc_boxes = self._encoder_proposals(out)
        return out

    def _encoder_proposals(self, enc: EncoderOutput):
        """Per-location proposal boxes (the authors' ``gen_encoder_output_proposals``: a box of
        side 0.05 * 2**level at each valid centre, refined by the encoder head) and scores."""
        n = enc.memory.shape[0]
        proposals, start = [], 0
        for lvl, (h, w) in enumerate(enc.spatial_shapes.tolist()):
            m = enc.padding_mask[:, start : start + h * w].view(n, h, w)
            valid_h = (~m[:, :, 0]).sum(1)
            valid_w = (~m[:, 0, :]).sum(1)
            gy, gx = torch.meshgrid(
                torch.linspace(0, h - 1, h, dtype=torch.float32, device=m.device),
                torch.linspace(0, w - 1, w, dtype=torch.float32, device=m.device),
                indexing="ij",
            )
            grid = torch.stack([gx, gy], -1)[None] + 0.5
            scale = torch.stack([valid_w, valid_h], 1).view(n, 1, 1, 2).float()
            grid = grid / scale
            wh = torch.ones_like(grid) * 0.05 * (2.0**lvl)
            proposals.append(torch.cat((grid, wh), -1).view(n, -1, 4))
            start += h * w
        proposals = torch.cat(proposals, 1)
        valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1, keepdim=True)
        proposals = torch.log(proposals / (1 - proposals))
        invalid = enc.padding_mask[..., None] | ~valid
        proposals = proposals.masked_fill(invalid, float("inf"))
        memory = enc.memory.masked_fill(invalid, 0.0)
        memory = self.enc_output_norm(self.enc_output(memory))
        lvl = self.num_decoder_layers
        logits = self.class_embed[lvl](memory)
        boxes = (self.bbox_embed[lvl](memory) + proposals).sigmoid()
        return logits, boxes

    # ------------------------------------------------------------------ queries
    def query_from_boxes(
        self, boxes: torch.Tensor, pos_trans: nn.Module, pos_norm: nn.Module
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, Q, 4) sigmoid-space boxes -> (query_pos, content) each (N, Q, C): the box's sine
        embedding -> Linear -> LayerNorm, split in two."""
        emb = box_sine_embedding(boxes, num_feats=self.d_model // 2)
        return pos_norm(pos_trans(emb)).split(self.d_model, dim=-1)

    def select_queries(self, enc: EncoderOutput):
        """Top-k encoder proposals -> (content, query_pos, reference boxes (detached))."""
        k = min(self.num_queries, enc.enc_logits.shape[1])
        topk = torch.topk(enc.enc_logits[..., 0], k, dim=1)[1]
        ref = torch.gather(enc.enc_boxes, 1, topk[..., None].expand(-1, -1, 4)).detach()
        query_pos, content = self.query_from_boxes(ref, self.pos_trans, self.pos_trans_norm)
        if self.mixed_selection:
            content = self.query_embed.weight[None, :k].expand(ref.shape[0], -1, -1)
        return content, query_pos, ref

    # ------------------------------------------------------------------ decoder
    def decode(
        self,
        enc: EncoderOutput,
        content: torch.Tensor,
        query_pos: torch.Tensor,
        reference_boxes: torch.Tensor,
        return_hidden: bool = False,
    ):
        """Runs the decoder layers on one query group. Returns per-layer logits (D, N, Q, K) and
        boxes (D, N, Q, 4) (normalised cx, cy, w, h), and with ``return_hidden`` the per-layer
        query features (D, N, Q, C)."""
        tgt, ref = content, reference_boxes.detach()
        prev = ref
        ratios = torch.cat([enc.valid_ratios, enc.valid_ratios], -1)[:, None]
        all_logits, all_boxes, hidden = [], [], []
        for i, layer in enumerate(self.decoder_layers):
            tgt = layer(
                tgt,
                query_pos,
                ref[:, :, None] * ratios,
                enc.memory,
                enc.spatial_shapes,
                enc.padding_mask,
            )
            delta = self.bbox_embed[i](tgt)
            new_ref = (delta + inverse_sigmoid(ref)).sigmoid()
            # look-forward-twice: predict from the previous layer's un-detached boxes, so this
            # layer's loss also refines the previous layer's boxes (one layer back, not more)
            boxes = (
                (delta + inverse_sigmoid(prev)).sigmoid() if self.look_forward_twice else new_ref
            )
            all_logits.append(self.class_embed[i](tgt))
            all_boxes.append(boxes)
            hidden.append(tgt)
            prev = new_ref
            ref = new_ref.detach()
        if return_hidden:
            return torch.stack(all_logits), torch.stack(all_boxes), torch.stack(hidden)
        return torch.stack(all_logits), torch.stack(all_boxes)
