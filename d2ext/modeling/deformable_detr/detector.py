"""``DeformableDETR``: a detectron2 meta-architecture (registered) around the two-stage
deformable transformer. Inputs and outputs are detectron2's (``list[dict]`` in,
``[{"instances": Instances}]`` out), so detectron2's loaders, evaluators and
``tools/train_net.py`` drive it unchanged."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn
from torchvision.ops import box_convert

from .criterion import SetCriterion
from .neck import ChannelMapper
from .position_encoding import PositionEmbeddingSine
from .transformer import DeformableTransformer, EncoderOutput

__all__ = ["DeformableDETR"]


@META_ARCH_REGISTRY.register()
class DeformableDETR(nn.Module):
    """Two-stage Deformable DETR as a detectron2 meta-architecture.

    Args:
        backbone: a detectron2 backbone.
        neck: maps the backbone's features to the transformer's levels.
        transformer: the deformable transformer (with the prediction heads).
        criterion: computes the training losses.
        pixel_mean, pixel_std: per-channel normalisation of the input images.
        input_format: the channel order of the input images.
        size_divisibility: images are padded to a multiple of this.
        num_detections: the number of detections kept per image at inference.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        neck: ChannelMapper,
        transformer: DeformableTransformer,
        criterion: SetCriterion,
        pixel_mean: tuple[float, float, float],
        pixel_std: tuple[float, float, float],
        input_format: str = "BGR",
        size_divisibility: int = 32,
        num_detections: int = 100,
    ):
        super().__init__()
        self.backbone, self.neck, self.transformer, self.criterion = (
            backbone,
            neck,
            transformer,
            criterion,
        )
        self.position_embedding = PositionEmbeddingSine(num_feats=transformer.d_model // 2)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.input_format, self.size_divisibility = input_format, size_divisibility
        self.num_detections = num_detections
        if len(neck.output_shape()) != transformer.n_levels:
            raise ValueError(
                f"the neck gives {len(neck.output_shape())} levels, the transformer expects "
                f"{transformer.n_levels}"
            )

    @property
    def device(self) -> torch.device:
        """
        Returns:
            torch.device: the device of the model's buffers.
        """
        return self.pixel_mean.device

    @property
    def num_classes(self) -> int:
        """
        Returns:
            int: the transformer's number of foreground classes.
        """
        return self.transformer.num_classes

    # ------------------------------------------------------------------ inputs
    def preprocess_image(self, batched_inputs: list[dict]) -> ImageList:
        """Normalises the input images and pads them into one batch.

        Args:
            batched_inputs: detectron2's input dicts, each with ``image`` [C, H, W].

        Returns:
            ImageList: the normalised images padded to a multiple of ``size_divisibility``.
        """
        if not batched_inputs:
            raise ValueError("empty batch")
        images = [
            (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        return ImageList.from_tensors(images, self.size_divisibility)

    @staticmethod
    def padding_mask(images: ImageList) -> torch.Tensor:
        """(N, H, W) True at padded pixels."""
        n, _, h, w = images.tensor.shape
        mask = torch.ones((n, h, w), dtype=torch.bool, device=images.tensor.device)
        for i, (ih, iw) in enumerate(images.image_sizes):
            mask[i, :ih, :iw] = False
        return mask

    def prepare_targets(self, batched_inputs: list[dict], images: ImageList) -> list[dict]:
        """gt Instances -> ``labels`` and ``boxes`` (cx, cy, w, h) normalised by the image."""
        out = []
        for x, (h, w) in zip(batched_inputs, images.image_sizes):
            if "instances" not in x:
                raise ValueError("training needs 'instances' in every input dict")
            inst = x["instances"].to(self.device)
            boxes = inst.gt_boxes.tensor.clone()
            boxes.clamp_(min=0)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(max=w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(max=h)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            if not torch.isfinite(boxes).all():
                raise ValueError("ground-truth boxes contain NaN or inf")
            scale = boxes.new_tensor([w, h, w, h])
            target = {
                "labels": inst.gt_classes[keep].long(),
                "boxes": box_convert(boxes[keep] / scale, "xyxy", "cxcywh"),
                "boxes_xyxy": boxes[keep],
                "image_size": (h, w),
            }
            if inst.has("gt_ids"):  # AlignDet's instance ids follow the boxes kept
                target["ids"] = inst.gt_ids[keep]
            out.append(target)
        return out

    # ------------------------------------------------------------------ stages
    def encode(self, images: ImageList) -> tuple[EncoderOutput, list[torch.Tensor]]:
        """Runs the backbone, the neck and the transformer's encoder.

        Args:
            images: the preprocessed images.

        Returns:
            tuple[EncoderOutput, list[Tensor]]: the encoder's output, and the neck's feature maps
            [N, C, H_l, W_l] per level.
        """
        feats = self.neck(self.backbone(images.tensor))
        mask = self.padding_mask(images)
        masks = [F.interpolate(mask[None].float(), size=f.shape[-2:])[0].bool() for f in feats]
        pos = [self.position_embedding(m).to(f.dtype) for m, f in zip(masks, feats)]
        return self.transformer.encode(feats, masks, pos), feats

    def forward_queries(self, enc: EncoderOutput) -> dict[str, torch.Tensor]:
        """Selects the top-k encoder proposals as queries and runs the decoder on them.

        Args:
            enc: the encoder's output.

        Returns:
            dict[str, Tensor]: ``pred_logits`` [D, N, Q, K] and ``pred_boxes`` [D, N, Q, 4] of every
            decoder layer, ``enc_logits`` [N, S, K] and ``enc_boxes`` [N, S, 4] of the encoder
            proposals; boxes are normalised (cx, cy, w, h).
        """
        content, query_pos, ref = self.transformer.select_queries(enc)
        logits, boxes = self.transformer.decode(enc, content, query_pos, ref)
        return {
            "pred_logits": logits,
            "pred_boxes": boxes,
            "enc_logits": enc.enc_logits,
            "enc_boxes": enc.enc_boxes,
        }

    def forward(self, batched_inputs: list[dict]):
        """
        Args:
            batched_inputs: detectron2's input dicts; in training each needs ``instances``.

        Returns:
            In training, dict[str, Tensor]: the weighted losses. At inference, list[dict]: per
            image ``{"instances": Instances}`` with ``pred_boxes``, ``scores`` and ``pred_classes``,
            in the ``height`` x ``width`` of the input dict (the image size if absent).
        """
        images = self.preprocess_image(batched_inputs)
        enc, _ = self.encode(images)
        outputs = self.forward_queries(enc)
        if self.training:
            return self.criterion(outputs, self.prepare_targets(batched_inputs, images))
        return self.postprocess(outputs, images, batched_inputs)

    # ------------------------------------------------------------------ outputs
    def inference(self, logits, boxes, image_sizes) -> list[Instances]:
        """Top ``num_detections`` (query, class) pairs per image, boxes in input pixels."""
        n, q, k = logits.shape
        prob = logits.sigmoid().view(n, -1)
        scores, idx = prob.topk(min(self.num_detections, q * k), dim=1)
        labels, qidx = idx % k, idx // k
        xyxy = box_convert(
            torch.gather(boxes, 1, qidx[..., None].expand(-1, -1, 4)), "cxcywh", "xyxy"
        )
        results = []
        for i, (h, w) in enumerate(image_sizes):
            r = Instances((h, w))
            b = Boxes(xyxy[i] * xyxy.new_tensor([w, h, w, h]))
            b.clip((h, w))
            r.pred_boxes, r.scores, r.pred_classes = b, scores[i], labels[i]
            results.append(r)
        return results

    def postprocess(self, outputs, images, batched_inputs) -> list[dict]:
        """Turns the last decoder layer's predictions into detections at each input's output size.

        Args:
            outputs: the output of :meth:`forward_queries`.
            images: the preprocessed images.
            batched_inputs: detectron2's input dicts (``height`` / ``width`` are read if present).

        Returns:
            list[dict]: per image ``{"instances": Instances}``.
        """
        results = self.inference(
            outputs["pred_logits"][-1], outputs["pred_boxes"][-1], images.image_sizes
        )
        out = []
        for r, x, size in zip(results, batched_inputs, images.image_sizes):
            h, w = x.get("height", size[0]), x.get("width", size[1])
            out.append({"instances": detector_postprocess(r, h, w)})
        return out
