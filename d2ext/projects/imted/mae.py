"""A compact MAE (He et al., CVPR 2022) for pretraining on the embedded unlabeled pool, written
so its checkpoint has the *official* full-checkpoint layout (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.N``, ``norm``, ``mask_token``, ``decoder_embed``,
``decoder_pos_embed``, ``decoder_blocks.N``, ``decoder_norm``, ``decoder_pred``) that
:func:`d2ext.projects.imted.mae_to_imted` loads. A detectron2 meta-architecture: ``forward``
takes detectron2's list of dicts and returns ``{"loss_mae": ...}`` in training.
"""

from functools import partial

import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.modeling.backbone.vit import Block
from detectron2.structures import ImageList
from torch import nn

from .modeling import mae_init_weights, sincos_pos_embed_2d

__all__ = ["MAE", "MAEDatasetMapper"]


class _PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        """
        Args:
            x: [B, 3, H, W] images.

        Returns:
            Tensor: [B, L, C] patch tokens, L = (H / patch_size) * (W / patch_size).
        """
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, L, C]


class MAE(nn.Module):
    """Masked autoencoder with a ViT encoder and a light decoder (random masking, loss on the
    masked patches only, per-patch normalised pixels by default)."""

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        pixel_mean=(123.675, 116.28, 103.53),
        pixel_std=(58.395, 57.12, 57.375),
        input_format: str = "RGB",
    ):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.patch_size, self.grid = patch_size, img_size // patch_size
        self.mask_ratio, self.norm_pix_loss, self.input_format = (
            mask_ratio,
            norm_pix_loss,
            input_format,
        )
        num_patches = self.grid**2
        self.patch_embed = _PatchEmbed(patch_size, 3, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        pos = torch.cat([torch.zeros(1, embed_dim), sincos_pos_embed_2d(embed_dim, self.grid)])
        self.pos_embed = nn.Parameter(pos[None], requires_grad=False)  # fixed, as in MAE
        self.blocks = nn.ModuleList(
            [
                Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm)
                for _ in range(depth)
            ]
        )
        self.norm = norm(embed_dim)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        dpos = torch.cat(
            [torch.zeros(1, decoder_embed_dim), sincos_pos_embed_2d(decoder_embed_dim, self.grid)]
        )
        self.decoder_pos_embed = nn.Parameter(dpos[None], requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [
                Block(
                    decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm
                )
                for _ in range(decoder_depth)
            ]
        )
        self.decoder_norm = norm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * 3)
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False
        )
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        self.num_patches = num_patches
        self._init_weights()

    def _init_weights(self):
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():  # (the order of random draws as before)
            mae_init_weights(m)

    @property
    def device(self):
        """
        Returns:
            torch.device: the device of the model's buffers.
        """
        return self.pixel_mean.device

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """
        Args:
            imgs: [B, 3, H, W] images, H = W = grid * patch_size.

        Returns:
            Tensor: [B, L, patch_size**2 * 3] the pixels of each patch (row-major patches; pixels in
            (row, column, channel) order).
        """
        p, g = self.patch_size, self.grid
        x = imgs.reshape(imgs.shape[0], 3, g, p, g, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(imgs.shape[0], g * g, p * p * 3)

    @staticmethod
    def _blocks(blocks, x):  # [B, L, C] through detectron2 blocks ([B, 1, L, C], global attention)
        x = x.unsqueeze(1)
        for blk in blocks:
            x = blk(x)
        return x.squeeze(1)

    def random_masking(self, x: torch.Tensor, generator=None):
        """Keeps a random (1 - mask_ratio) of the tokens per sample. Returns the kept tokens
        [B, L_keep, C], the mask [B, L] (1 = removed) and the order to restore [B, L]."""
        b, n, _ = x.shape
        keep = int(n * (1 - self.mask_ratio))
        noise = torch.rand(b, n, device=x.device, generator=generator)
        shuffle = torch.argsort(noise, dim=1)
        restore = torch.argsort(shuffle, dim=1)
        kept = torch.gather(x, 1, shuffle[:, :keep, None].expand(-1, -1, x.shape[-1]))
        mask = torch.ones(b, n, device=x.device)
        mask[:, :keep] = 0
        return kept, torch.gather(mask, 1, restore), restore

    def forward_encoder(self, imgs, generator=None):
        """Embeds the patches, adds the position table, keeps a random (1 - mask_ratio) of the
        tokens and runs the encoder on them with the cls token.

        Args:
            imgs: [B, 3, H, W] normalised images.
            generator: optional torch generator of the masking noise.

        Returns:
            tuple[Tensor, Tensor, Tensor]: the normalised tokens [B, 1 + L_keep, C] (cls first), the
            mask [B, L] (1 = removed) and the order that restores the patches [B, L].
        """
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]  # [B, L, C]
        x, mask, restore = self.random_masking(x, generator)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = self._blocks(self.blocks, torch.cat([cls, x], dim=1))  # [B, 1 + L_keep, C]
        return self.norm(x), mask, restore

    def forward_decoder(self, x, restore):
        """Fills the removed patches with the mask token, restores the patch order, adds the
        decoder's position table and runs the decoder.

        Args:
            x: [B, 1 + L_keep, C] the encoder's output.
            restore: [B, L] the order that restores the patches.

        Returns:
            Tensor: [B, L, patch_size**2 * 3] the predicted pixels of every patch.
        """
        x = self.decoder_embed(x)  # [B, 1 + L_keep, D]
        b, n = restore.shape
        masked = self.mask_token.expand(b, n + 1 - x.shape[1], -1)
        x_ = torch.cat([x[:, 1:], masked], dim=1)
        x_ = torch.gather(x_, 1, restore[:, :, None].expand(-1, -1, x.shape[-1]))  # [B, L, D]
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed
        x = self.decoder_norm(self._blocks(self.decoder_blocks, x))
        return self.decoder_pred(x)[:, 1:]  # [B, L, p*p*3]

    def forward_loss(self, imgs, pred, mask):
        """
        Args:
            imgs: [B, 3, H, W] normalised images.
            pred: [B, L, patch_size**2 * 3] the predicted patches.
            mask: [B, L], 1 at the removed patches.

        Returns:
            Tensor: the mean squared error over the removed patches (targets normalised per patch
            with ``norm_pix_loss``).
        """
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(dim=-1)  # [B, L]
        return (loss * mask).sum() / mask.sum()

    def forward(self, batched_inputs):
        """
        Args:
            batched_inputs: detectron2's input dicts; every ``image`` a [3, S, S] crop,
                S = grid * patch_size.

        Returns:
            In training, dict[str, Tensor]: ``{"loss_mae": loss}``. In eval mode, list[dict]: the
            batch's loss (detached) as ``{"loss_mae": loss}`` for every input.

        Raises:
            ValueError: the images are not S x S.
        """
        images = [
            (x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std
            for x in batched_inputs
        ]
        imgs = ImageList.from_tensors(images).tensor
        size = self.grid * self.patch_size
        if imgs.shape[-2:] != (size, size):
            raise ValueError(f"MAE expects {size}x{size} crops, got {tuple(imgs.shape[-2:])}")
        latent, mask, restore = self.forward_encoder(imgs)
        pred = self.forward_decoder(latent, restore)
        loss = self.forward_loss(imgs, pred, mask)
        if self.training:
            return {"loss_mae": loss}
        return [{"loss_mae": loss.detach()} for _ in batched_inputs]


class MAEDatasetMapper:
    """MAE's augmentation: random resized crop (scale 0.2-1) to ``size``, horizontal flip."""

    def __init__(self, size: int = 224, scale=(0.2, 1.0), image_format: str = "RGB"):
        self.size, self.scale, self.image_format = size, scale, image_format

    def __call__(self, dataset_dict):
        import numpy as np
        import torchvision.transforms.functional as F

        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        if image.size == 0:
            raise ValueError(f"empty image {dataset_dict['file_name']}")
        h, w = image.shape[:2]
        area = h * w
        for _ in range(10):
            s = np.random.uniform(*self.scale) * area
            r = np.exp(np.random.uniform(np.log(3 / 4), np.log(4 / 3)))
            cw, ch = int(round((s * r) ** 0.5)), int(round((s / r) ** 0.5))
            if 0 < cw <= w and 0 < ch <= h:
                break
        else:
            cw, ch = min(h, w), min(h, w)
        y, x = np.random.randint(0, h - ch + 1), np.random.randint(0, w - cw + 1)
        aug = T.AugmentationList([T.RandomFlip(horizontal=True)])
        crop = np.ascontiguousarray(image[y : y + ch, x : x + cw])
        inp = T.AugInput(crop)
        aug(inp)
        t = torch.as_tensor(np.ascontiguousarray(inp.image.transpose(2, 0, 1)))
        t = F.resize(t, [self.size, self.size], antialias=True)
        return {"image": t, "file_name": dataset_dict["file_name"]}
