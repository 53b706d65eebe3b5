"""imTED (Liu et al., ICCV 2023): the whole MAE encoder-decoder migrated into a two-stage
detector. The encoder is detectron2's ViT, the ROI box head is the MAE decoder, and a
multi-scale feature modulator adds pyramid RoI features to the single-scale ones.

    image -> IMTEDViT (global attention, abs pos interpolated, optional cls token in sequence)
          -> IMTEDFeaturePyramid: SimpleFeaturePyramid P2-P6 for the RPN and the modulator
             (from the last block, or from block ``pyramid_block``), plus the last block's
             token map ("last_feat", stride 16)
    RoI   -> RoIAlign 7x7 on last_feat  +  w * Conv1x1(RoIAlign 7x7 on P2-P5), w init 0
          -> MAEDecoderHead: LN (encoder's final norm) -> Linear to decoder width
             -> + the checkpoint's decoder position table resized to 7x7 (bicubic)
             -> decoder blocks -> mean pool -> fresh LN (``decoder_box_norm``)
          -> FastRCNNOutputLayers (class-specific boxes, GIoU loss weight 10)
"""

import math
from functools import partial

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling.backbone.utils import get_abs_pos
from detectron2.modeling.backbone.vit import Block, SimpleFeaturePyramid, ViT
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import StandardROIHeads
from torch import nn

__all__ = [
    "IMTEDBoxPooler",
    "IMTEDFeaturePyramid",
    "IMTEDROIHeads",
    "IMTEDViT",
    "LayerDecay",
    "MAEDecoderHead",
    "MultiScaleFeatureModulator",
    "resize_pos_table",
    "sincos_pos_embed_2d",
    "sincos_pos_table",
]


def _sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = pos.reshape(-1, 1).double() * omega[None]  # [M, dim/2]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_pos_embed_2d(dim: int, grid_size: int) -> torch.Tensor:
    """MAE's fixed 2D sin-cos position embedding (``get_2d_sincos_pos_embed``, no cls
    position): [grid_size**2, dim], half the channels encode one axis, half the other."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim % 4 == 0, got {dim}")
    g = torch.arange(grid_size, dtype=torch.float64)
    gw, gh = torch.meshgrid(g, g, indexing="xy")  # MAE: np.meshgrid(grid_w, grid_h)
    emb = torch.cat([_sincos_1d(dim // 2, gw), _sincos_1d(dim // 2, gh)], dim=1)
    return emb.float()


def mae_init_weights(m: nn.Module) -> None:
    """MAE's initialisation of one module (``module.apply``): xavier-uniform linear weights,
    zero biases, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)


class IMTEDViT(ViT):
    """detectron2's ViT as imTED's encoder: global attention in every block, no relative
    position, the absolute position embedding interpolated to the input.

    Args:
        keep_cls_token: keep MAE's cls token in the token sequence (as imTED's encoder does);
            it attends with the patch tokens and is dropped from the output map.
        frozen: no parameter of the encoder is trained.
        pyramid_block: also output block ``pyramid_block``'s token map (0-based) as
            ``"pyramid_feat"`` (same width and stride as the last block's). imTED's ViT-L
            builds its feature pyramid from block 11 of 24 (the last of its ``out_indices``
            [3, 5, 7, 11]); None: no extra output.
        pos_resize: how the absolute position table meets the input's token grid:
            ``"imted"`` (the authors' ``interpolate_pos_encoding``: bicubic with
            ``scale_factor=((h + 0.1) / g, (w + 0.1) / g)``, :func:`resize_pos_table`) or
            ``"detectron2"`` (``get_abs_pos``: bicubic to ``size=(h, w)``).
        kwargs: ViT's arguments (img_size, patch_size, embed_dim, depth, num_heads, ...).
    """

    def __init__(
        self,
        *,
        keep_cls_token: bool = False,
        frozen: bool = False,
        pyramid_block: int | None = None,
        pos_resize: str = "imted",
        **kwargs,
    ):
        kwargs.update(window_size=0, window_block_indexes=(), use_rel_pos=False)
        kwargs.setdefault("residual_block_indexes", ())
        kwargs.setdefault("norm_layer", partial(nn.LayerNorm, eps=1e-6))  # MAE's
        super().__init__(**kwargs)
        self.keep_cls_token = keep_cls_token
        if keep_cls_token:
            if self.pos_embed is None or not self.pretrain_use_cls_token:
                raise ValueError("keep_cls_token needs use_abs_pos and pretrain_use_cls_token")
            self.cls_token = nn.Parameter(torch.zeros(1, 1, self.pos_embed.shape[-1]))
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        if pyramid_block is not None:
            if not 0 <= pyramid_block < len(self.blocks):
                raise ValueError(
                    f"pyramid_block {pyramid_block} is not a block of this {len(self.blocks)}-"
                    "block ViT"
                )
            last = self._out_features[0]
            self._out_features.append("pyramid_feat")
            self._out_feature_channels["pyramid_feat"] = self._out_feature_channels[last]
            self._out_feature_strides["pyramid_feat"] = self._out_feature_strides[last]
        self.pyramid_block = pyramid_block
        if pos_resize not in ("imted", "detectron2"):
            raise ValueError(f"pos_resize must be 'imted' or 'detectron2', got {pos_resize!r}")
        if pos_resize == "imted" and self.pos_embed is not None and not self.pretrain_use_cls_token:
            raise ValueError("pos_resize='imted' needs a position table with a cls row")
        self.pos_resize = pos_resize
        self.frozen = frozen
        if frozen:
            for p in self.parameters():
                p.requires_grad_(False)

    def forward(self, x):
        """
        Args:
            x: [B, 3, H, W] images.

        Returns:
            dict[str, Tensor]: the last block's token map [B, C, H / p, W / p] under the ViT's out
            feature name, and with ``pyramid_block`` that block's map as ``"pyramid_feat"``.
        """
        x = self.patch_embed(x)  # [B, H, W, C]
        b, h, w, c = x.shape
        if self.pos_embed is not None:
            if self.pos_resize == "imted":
                x = x + resize_pos_table(self.pos_embed, h, w).reshape(1, h, w, c)
            else:
                x = x + get_abs_pos(self.pos_embed, self.pretrain_use_cls_token, (h, w))
        if self.keep_cls_token:
            cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)  # [B, 1, C]
            # blocks see [B, 1, 1 + HW, C]: with window_size 0 and no relative position, the
            # attention is global over the flattened tokens, cls included
            x = torch.cat([cls, x.reshape(b, h * w, c)], dim=1).unsqueeze(1)
        out = {}
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i == self.pyramid_block:
                out["pyramid_feat"] = self._token_map(x, h, w)
        out[self._out_features[0]] = self._token_map(x, h, w)
        return out

    def _token_map(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        if self.keep_cls_token:
            x = x[:, 0, 1:].reshape(x.shape[0], h, w, -1)
        return x.permute(0, 3, 1, 2)


class IMTEDFeaturePyramid(SimpleFeaturePyramid):
    """SimpleFeaturePyramid (P2-P5 from ``in_feature`` of the ViT, P6 by the top block) that
    also returns the ViT's last-block token map under ``token_feature`` (default "last_feat",
    stride 16), the input of imTED's single-scale RoIAlign.

    Args:
        token_feature: the name of the last block's map in this module's outputs.
        upsample: ``"imted"`` (the authors' ``fpn1`` / ``fpn2``): the 4x level up-samples with
            ConvT(C -> C) -> ``upsample_norm`` -> GELU -> ConvT(C -> C) and the 2x level with
            ConvT(C -> C), at the encoder width C; ``"detectron2"``: SimpleFeaturePyramid's
            ConvT to C/2 and C/4 with ``norm`` between.
        upsample_norm: the norm inside the 4x branch with ``upsample="imted"`` (the authors:
            BatchNorm, SyncBN under DDP; default detectron2's ``"naiveSyncBN"``, which averages
            the per-GPU statistics and is plain BatchNorm on one process).
        size_divisibility: pad input images to a multiple of this (the authors' ``Pad``: 32);
            0: no padding beyond the batch's largest image (what detectron2's ViTDet pyramid
            gives without ``square_pad``: its ``padding_constraints`` key is misspelled, so
            ``GeneralizedRCNN`` never reads its stride).
        frozen: freeze what imTED's ``backbone`` holds: the whole ViT and, in each level, the
            up/down-sampling layers before the 1x1 and 3x3 convs (their ``fpn1``-``fpn4``).
            The 1x1 / 3x3 convs (imTED's neck) stay trainable. imTED's few-shot fine-tuning
            leaves ``backbone.*`` out of the optimizer; here those parameters get
            ``requires_grad=False`` (not updated either way; no gradient is computed).
        kwargs: SimpleFeaturePyramid's arguments.
    """

    def __init__(
        self,
        *,
        token_feature: str = "last_feat",
        upsample: str = "imted",
        upsample_norm: str = "naiveSyncBN",
        size_divisibility: int = 32,
        frozen: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.token_feature = token_feature
        if size_divisibility % self.net.patch_embed.proj.stride[0]:
            raise ValueError(
                f"size_divisibility {size_divisibility} is not a multiple of the patch size"
            )
        self._pad_to = size_divisibility
        if upsample == "imted":
            self._full_width_upsampling(
                upsample_norm, kwargs["out_channels"], kwargs.get("norm", "LN")
            )
        elif upsample != "detectron2":
            raise ValueError(f"upsample must be 'imted' or 'detectron2', got {upsample!r}")
        self.frozen = frozen
        if frozen:
            for module in [self.net] + [stage[:-2] for stage in self.stages]:
                for p in module.parameters():
                    p.requires_grad_(False)

    def _full_width_upsampling(self, upsample_norm: str, out_channels: int, norm: str) -> None:
        dim = self.net.output_shape()[self.in_feature].channels
        use_bias = norm == ""
        for idx, scale in enumerate(self.scale_factors):
            if scale == 4.0:
                layers = [
                    nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2),
                    get_norm(upsample_norm, dim),
                    nn.GELU(),
                    nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2),
                ]
            elif scale == 2.0:
                layers = [nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)]
            else:
                continue
            for kernel, cin in ((1, dim), (3, out_channels)):
                layers.append(
                    Conv2d(
                        cin,
                        out_channels,
                        kernel_size=kernel,
                        padding=kernel // 2,
                        bias=use_bias,
                        norm=get_norm(norm, out_channels),
                    )
                )
            stage = nn.Sequential(*layers)
            name = next(n for n, m in self.named_children() if m is self.stages[idx])
            setattr(self, name, stage)
            self.stages[idx] = stage

    @property
    def size_divisibility(self) -> int:
        """
        Returns:
            int: the multiple input images are padded to (0: none).
        """
        return self._pad_to

    def output_shape(self):
        """
        Returns:
            dict[str, ShapeSpec]: SimpleFeaturePyramid's levels plus ``token_feature`` (the ViT's
            last-block map).
        """
        shapes = super().output_shape()
        shapes[self.token_feature] = self.net.output_shape()[self.net._out_features[0]]
        return shapes

    def forward(self, x):
        """
        Args:
            x: [B, 3, H, W] images.

        Returns:
            dict[str, Tensor]: SimpleFeaturePyramid's levels [B, C, H_l, W_l], plus the ViT's
            last-block token map under ``token_feature``.
        """
        captured = {}
        handle = self.net.register_forward_hook(lambda m, i, out: captured.update(out))
        try:
            out = super().forward(x)
        finally:
            handle.remove()
        out[self.token_feature] = captured[self.net._out_features[0]]
        return out


class MultiScaleFeatureModulator(nn.Module):
    """RoIAlign 7x7 on the pyramid (each box on its detectron2 level), a shared 1x1 conv to the
    encoder width, times a per-channel weight initialised to zero: at initialisation it adds
    exactly nothing, so the migrated decoder starts from its pretrained input."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        scales,
        output_size: int = 7,
        sampling_ratio: int = 0,
        pooler_type: str = "ROIAlignV2",
    ):
        super().__init__()
        self.pooler = ROIPooler(output_size, tuple(scales), sampling_ratio, pooler_type)
        self.conv = Conv2d(in_channels, out_channels, kernel_size=1)
        self.weight = nn.Parameter(torch.zeros(out_channels))

    def forward(self, features: list[torch.Tensor], boxes) -> torch.Tensor:
        """
        Args:
            features: the pyramid levels [N, C_in, H_l, W_l].
            boxes: per image a detectron2 ``Boxes``.

        Returns:
            Tensor: [R, C_enc, S, S] the pooled, projected features times the per-channel weight
            (S: ``output_size``).
        """
        x = self.conv(self.pooler(features, boxes))  # [R, C_enc, 7, 7]
        return x * self.weight[None, :, None, None]


class IMTEDBoxPooler(nn.Module):
    """The box head's input: RoIAlign on the token map (``features[0]``) plus the modulator
    on the pyramid levels (``features[1:]``)."""

    def __init__(self, single: ROIPooler, modulator: MultiScaleFeatureModulator | None = None):
        super().__init__()
        self.single = single
        self.modulator = modulator
        self.output_size = single.output_size

    def forward(self, features: list[torch.Tensor], boxes) -> torch.Tensor:
        """
        Args:
            features: the token map, then the pyramid levels (each [N, C, H_l, W_l]).
            boxes: per image a detectron2 ``Boxes``.

        Returns:
            Tensor: [R, C_enc, S, S] RoIAlign on the token map, plus the modulator's output when
            there is one.
        """
        x = self.single(features[:1], boxes)  # [R, C_enc, 7, 7]
        if self.modulator is not None:
            x = x + self.modulator(features[1:], boxes)
        return x


def sincos_pos_table(dim: int, grid_size: int) -> torch.Tensor:
    """MAE's ``decoder_pos_embed`` as its checkpoints hold it: [1, 1 + grid_size**2, dim], a
    zero row for the cls position, then :func:`sincos_pos_embed_2d`."""
    return torch.cat([torch.zeros(1, dim), sincos_pos_embed_2d(dim, grid_size)])[None]


def resize_pos_table(table: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """imTED's ``interpolate_pos_encoding`` (its box head's and its encoder's): the cls row
    dropped, the g x g grid
    resized bicubically with ``scale_factor = ((height + 0.1) / g, (width + 0.1) / g)``
    (DINO's +0.1; ``align_corners=False``), or returned as is when it already is
    ``height x width`` with height == width.

    Args:
        table: [1, 1 + g*g, D].
        height, width: the target grid.

    Returns:
        [1, height * width, D], in ``table``'s dtype.
    """
    grid = table[:, 1:]
    n, dim = grid.shape[1], grid.shape[2]
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"position table of {table.shape[1]} rows is not 1 + a square grid")
    if n == height * width and height == width:
        return grid
    grid = grid.reshape(1, g, g, dim).permute(0, 3, 1, 2).float()
    grid = F.interpolate(
        grid,
        scale_factor=((height + 0.1) / g, (width + 0.1) / g),
        mode="bicubic",
        align_corners=False,
    )
    if grid.shape[-2:] != (height, width):  # the authors assert the same
        raise ValueError(f"resizing a {g}x{g} table gave {tuple(grid.shape[-2:])}")
    return grid.permute(0, 2, 3, 1).reshape(1, height * width, dim).to(table.dtype)


class MAEDecoderHead(nn.Module):
    """The MAE decoder as a box head. Parameter names follow the MAE release
    (``norm`` = the encoder's final norm, ``decoder_embed``, ``decoder_blocks.N``,
    ``decoder_pos_embed``) so an official full checkpoint maps onto it by prefix.

    Position embedding (``pos_embed``):

    - ``"pretrained"`` (imTED's): a frozen buffer ``decoder_pos_embed`` [1, 1 + g*g, D] that
      the MAE checkpoint fills (before loading: MAE's fixed sin-cos table at ``pretrain_grid``,
      which is what official MAE checkpoints hold; imTED's buffer starts at zeros), resized to
      the RoI grid at every forward by :func:`resize_pos_table`. ``pretrain_grid`` must be
      the checkpoint's grid (MAE's image size / patch size).
    - ``"sincos"``: MAE's sin-cos formula evaluated on the RoI grid (fixed, not loaded).

    The LN after mean pooling is a fresh ``decoder_box_norm`` (imTED's; MAE's ``decoder_norm``
    is not loaded), or with ``pretrained_final_norm=True`` a module named ``decoder_norm`` that
    the checkpoint's ``decoder_norm.*`` fills.
    """

    def __init__(
        self,
        *,
        input_shape: ShapeSpec,
        decoder_dim: int = 512,
        depth: int = 8,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        pos_embed: str = "pretrained",
        pretrain_grid: int = 14,
        pretrained_final_norm: bool = False,
    ):
        """
        Args:
            input_shape: the RoI features, channels = encoder width, height = width = 7.
            decoder_dim, depth, num_heads: MAE decoder size (ViT-B/L: 512, 8, 16; ViT-S: 256, 4).
            mlp_ratio: the blocks' MLP width over ``decoder_dim``.
            drop_path_rate: stochastic depth of the decoder blocks (imTED: 0).
            pos_embed: ``"pretrained"`` or ``"sincos"`` (see the class docstring).
            pretrain_grid: the grid of the MAE decoder's table (MAE pretraining image size /
                patch size: 224 / 16 = 14).
            pretrained_final_norm: name the final LN ``decoder_norm`` so MAE's is loaded
                (False: a fresh ``decoder_box_norm``, as imTED).
        """
        super().__init__()
        if pos_embed not in ("pretrained", "sincos"):
            raise ValueError(f"pos_embed must be 'pretrained' or 'sincos', got {pos_embed!r}")
        norm = partial(nn.LayerNorm, eps=1e-6)
        c, size = input_shape.channels, input_shape.height or 7
        self.norm = norm(c)
        self.decoder_embed = nn.Linear(c, decoder_dim)
        self.pos_embed_type = pos_embed
        if pos_embed == "pretrained":
            self.register_buffer("decoder_pos_embed", sincos_pos_table(decoder_dim, pretrain_grid))
        else:
            self.register_buffer(
                "pos_embed", sincos_pos_embed_2d(decoder_dim, size)[None], persistent=False
            )  # [1, 49, D]
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        self.decoder_blocks = nn.ModuleList(
            [
                Block(
                    decoder_dim,
                    num_heads,
                    mlp_ratio,
                    qkv_bias=True,
                    drop_path=dpr[i],
                    norm_layer=norm,
                )
                for i in range(depth)
            ]
        )
        self.final_norm_name = "decoder_norm" if pretrained_final_norm else "decoder_box_norm"
        self.add_module(self.final_norm_name, norm(decoder_dim))
        self._size = size
        self._output_size = decoder_dim
        self.apply(mae_init_weights)

    @property
    def output_shape(self) -> ShapeSpec:
        """
        Returns:
            ShapeSpec: the head's output width ``decoder_dim``.
        """
        return ShapeSpec(channels=self._output_size)

    @property
    def final_norm(self) -> nn.LayerNorm:
        """
        Returns:
            nn.LayerNorm: the final LayerNorm (``decoder_norm`` or ``decoder_box_norm``).
        """
        return getattr(self, self.final_norm_name)

    def position_table(self, height: int, width: int) -> torch.Tensor:
        """The position embedding added to the RoI tokens: [1, height * width, D]."""
        if self.pos_embed_type == "sincos":
            return self.pos_embed
        return resize_pos_table(self.decoder_pos_embed, height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """LayerNorm and projection of the RoI tokens, the position table, the decoder blocks
        (global attention), the mean over tokens and the final LayerNorm.

        Args:
            x: [R, C_enc, S, S] RoI features (S as built).

        Returns:
            Tensor: [R, decoder_dim].

        Raises:
            ValueError: the RoIs are not S x S.
        """
        r, c, h, w = x.shape  # [R, C_enc, 7, 7]
        if (h, w) != (self._size, self._size):
            raise ValueError(
                f"MAEDecoderHead built for {self._size}x{self._size} RoIs, got {h}x{w}"
            )
        if r == 0:  # no RoIs: detectron2's attention cannot reshape an empty batch
            return self.final_norm(x.new_zeros(0, self._output_size))
        t = x.flatten(2).transpose(1, 2)  # [R, 49, C_enc]
        t = self.decoder_embed(self.norm(t)) + self.position_table(h, w)  # [R, 49, D]
        t = t.reshape(r, h, w, t.shape[-1])  # blocks take [B, H, W, D]; window 0: global attention
        for blk in self.decoder_blocks:
            t = blk(t)
        t = t.reshape(r, h * w, t.shape[-1]).mean(dim=1)  # [R, D]
        return self.final_norm(t)


class IMTEDROIHeads(StandardROIHeads):
    """StandardROIHeads fed by both paths: the single-scale RoIAlign on the encoder's token map
    and the multi-scale modulator on the pyramid, through :class:`IMTEDBoxPooler`.

    Args:
        single_scale_feature: the token-map feature name (its stride sets the pooler scale).
        single_scale_stride: that feature's stride (16 for patch 16).
        modulator: a :class:`MultiScaleFeatureModulator`, or None for the single-scale path.
        modulator_in_features: the pyramid levels it pools from (P2-P5).
        box_pooler: optional; default RoIAlignV2 7x7 on the token map.
        kwargs: StandardROIHeads' arguments (box_head = MAEDecoderHead, box_predictor, mask
            branch on the pyramid...).
    """

    def __init__(
        self,
        *,
        single_scale_feature: str = "last_feat",
        single_scale_stride: int = 16,
        modulator: MultiScaleFeatureModulator | None = None,
        modulator_in_features=("p2", "p3", "p4", "p5"),
        box_pooler: ROIPooler | None = None,
        **kwargs,
    ):
        single = box_pooler or ROIPooler(7, (1.0 / single_scale_stride,), 0, "ROIAlignV2")
        in_features = [single_scale_feature]
        if modulator is not None:
            in_features += list(modulator_in_features)
        super().__init__(
            box_in_features=in_features, box_pooler=IMTEDBoxPooler(single, modulator), **kwargs
        )


class LayerDecay:
    """Layer-wise lr decay for imTED (detectron2's ``lr_factor_func``): encoder parameters
    (``backbone.net.``) get rate**(L + 1 - layer) with layer 0 for the patch / position / cls
    embeddings and i + 1 for block i; with ``num_decoder_layers`` (the authors' few-shot
    fine-tuning) the box head's decoder decays the same way (``norm``/``decoder_embed`` layer
    0, decoder block j layer j + 1). Everything else trains at the base lr."""

    def __init__(self, rate: float, num_layers: int, num_decoder_layers: int = 0):
        self.rate, self.num_layers, self.num_decoder_layers = rate, num_layers, num_decoder_layers

    def __call__(self, name: str) -> float:
        if name.startswith("backbone.net."):
            sub = name[len("backbone.net.") :]
            if sub.startswith(("pos_embed", "patch_embed", "cls_token")):
                return self.rate ** (self.num_layers + 1)
            if sub.startswith("blocks."):
                return self.rate ** (self.num_layers - int(sub.split(".")[1]))
            return 1.0
        if self.num_decoder_layers and name.startswith("roi_heads.box_head."):
            sub = name[len("roi_heads.box_head.") :]
            n = self.num_decoder_layers
            if sub.startswith(("norm.", "decoder_embed.")):
                return self.rate ** (n + 1)
            if sub.startswith("decoder_blocks."):
                return self.rate ** (n - int(sub.split(".")[1]))
        return 1.0
