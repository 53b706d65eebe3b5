#!/usr/bin/env python
"""Draws a detector's predictions on images with detectron2's Visualizer, one PNG per image.

From a model (runs it on the images, as detectron2's demo does):

    python tools/visualize_predictions.py --config-file CONFIG.py --checkpoint model.pth \\
        --input img1.png more_images/ --output OUT [--score-threshold 0.5] \\
        [--opts key=value ...]

    The model is built from the LazyConfig's ``model``, its weights are read with d2ext's
    D2extCheckpointer, and each image is resized as
    ``dataloader.test.mapper.augmentations`` says; predictions are drawn at the image's own
    size. Class names come from the metadata of ``dataloader.test.dataset.names`` (or
    --dataset). --opts key=value pairs override the config, as in tools/train_net.py.

From a results file (as detectron2's tools/visualize_json_results.py does):

    python tools/visualize_predictions.py --results OUT/inference/coco_instances_results.json \\
        --dataset d2ext_demo_shapes_val --output OUT [--score-threshold 0.5] [--max-images N]

    The results are COCOEvaluator's ``coco_instances_results.json`` (boxes, scores, dataset
    category ids, optional RLE masks) and are drawn on the images of the registered dataset.

Each image gives OUT/<image file name without extension>.png (same size as the image) with the
predictions scoring at least --score-threshold: box, class name, score, mask when predicted.
Colours are detectron2's random instance colours from a fixed seed: a rerun gives the same PNGs.
"""

import argparse
import os
import sys

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def argument_parser() -> argparse.ArgumentParser:
    """The command line of this tool (argparse only: no torch import, so --help is instant)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    model = parser.add_argument_group("from a model")
    model.add_argument("--config-file", help="LazyConfig file (.py or .yaml) of the model")
    model.add_argument("--checkpoint", help="weights to load, e.g. OUTPUT/model_final.pth")
    model.add_argument(
        "--input",
        nargs="+",
        help="image files and/or folders (their images, sorted, not recursive)",
    )
    model.add_argument("--device", help="default: the config's train.device, else cpu")
    model.add_argument(
        "--opts", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides"
    )
    results = parser.add_argument_group("from a results file")
    results.add_argument("--results", help="coco_instances_results.json written by COCOEvaluator")
    results.add_argument("--max-images", type=int, help="draw only the first N dataset images")
    parser.add_argument(
        "--dataset",
        help="registered dataset: its images (--results) or class names (default with a model: "
        "dataloader.test.dataset.names)",
    )
    parser.add_argument("--output", required=True, help="folder for the PNGs (created)")
    parser.add_argument(
        "--score-threshold", type=float, default=0.5, help="draw predictions scoring at least this"
    )
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from_model = args.config_file or args.checkpoint or args.input
    if bool(from_model) == bool(args.results):
        parser.error("give either --config-file/--checkpoint/--input or --results/--dataset")
    if from_model and not (args.config_file and args.checkpoint and args.input):
        parser.error("drawing from a model needs --config-file, --checkpoint and --input")
    if args.results and not args.dataset:
        parser.error("--results needs --dataset (the registered dataset it was computed on)")
    if args.results and args.opts:
        parser.error(f"config overrides {args.opts} only apply when drawing from a model")
    for path in [args.config_file, args.checkpoint, args.results, *(args.input or [])]:
        if path and not os.path.exists(path):
            parser.error(f"{path} does not exist")


def list_images(paths: list[str]) -> list[str]:
    """Image files among ``paths``: files as given, folders as their images, sorted.

    Args:
        paths (list[str]): image files and folders.

    Returns:
        list[str]: the image paths, in order.
    """
    images = []
    for path in paths:
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
            if not names:
                raise FileNotFoundError(f"no image ({', '.join(IMAGE_EXTENSIONS)}) in {path}")
            images += [os.path.join(path, n) for n in names]
        else:
            images.append(path)
    return images


def output_paths(images: list[str], output_dir: str) -> list[str]:
    """OUT/<file name without extension>.png per image; two images with one name is an error."""
    outs = [
        os.path.join(output_dir, os.path.splitext(os.path.basename(p))[0] + ".png") for p in images
    ]
    seen = {}
    for image, out in zip(images, outs):
        if out in seen:
            raise ValueError(f"{image} and {seen[out]} would both be written to {out}")
        seen[out] = image
    return outs


def draw(image_rgb, instances, metadata, score_threshold: float):
    """Draws the ``instances`` scoring at least ``score_threshold`` on ``image_rgb``.

    Args:
        image_rgb (np.ndarray): uint8 HxWx3 RGB image.
        instances (Instances): predictions in the image's pixel coordinates (``pred_boxes``,
            ``scores``, ``pred_classes``, optional ``pred_masks``).
        metadata (Metadata): gives ``thing_classes`` for the labels.
        score_threshold (float): least score drawn.

    Returns:
        tuple[np.ndarray, int]: the uint8 HxWx3 RGB drawing at the image's size, and the number
        of predictions drawn.
    """
    import numpy as np
    from detectron2.utils.visualizer import Visualizer

    instances = instances[instances.scores >= score_threshold]
    # detectron2 picks instance colours with np.random: seed it here (and restore the global
    # state after) so that one input always gives the same picture
    state = np.random.get_state()
    np.random.seed(0)
    try:
        drawing = Visualizer(image_rgb, metadata).draw_instance_predictions(instances)
    finally:
        np.random.set_state(state)
    return drawing.get_image(), len(instances)


def _save_png(array, path: str) -> None:
    import io

    from PIL import Image

    from d2ext.utils.io import atomic_write_bytes

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def predictions_from_model(args) -> list[dict]:
    """Runs the config's model with the checkpoint on ``args.input`` and draws its predictions."""
    import torch
    from detectron2.config import LazyConfig
    from detectron2.data import Metadata, MetadataCatalog
    from detectron2.data import transforms as T
    from detectron2.data.detection_utils import read_image

    from d2ext.data import register_all_datasets
    from d2ext.engine.inference import build_loaded_model, config_test_dataset, config_test_inputs

    register_all_datasets()
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts or [])
    dataset = args.dataset or config_test_dataset(cfg)
    metadata = MetadataCatalog.get(dataset) if dataset else Metadata()  # no names: class ids

    model, device = build_loaded_model(cfg, args.checkpoint, args.device)
    augs, input_format = config_test_inputs(cfg, model)
    augmentations = T.AugmentationList(augs)

    images = list_images(args.input)
    outs = output_paths(images, args.output)
    written = []
    for path, out in zip(images, outs):
        rgb = read_image(path, format="RGB")
        model_image = rgb[:, :, ::-1] if input_format == "BGR" else rgb
        aug_input = T.AugInput(model_image)
        augmentations(aug_input)
        tensor = torch.as_tensor(aug_input.image.astype("float32").transpose(2, 0, 1))
        h, w = rgb.shape[:2]
        with torch.no_grad():
            output = model([{"image": tensor.to(device), "height": h, "width": w}])[0]
        drawing, n = draw(rgb, output["instances"].to("cpu"), metadata, args.score_threshold)
        _save_png(drawing, out)
        written.append({"input": path, "output": out, "instances": n})
        print(f"{out}: {n} predictions drawn")
    return written


def predictions_from_results(args) -> list[dict]:
    """Draws the predictions of a COCO results json on the images of ``args.dataset``."""
    import json
    from collections import defaultdict

    import numpy as np
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.detection_utils import read_image
    from detectron2.structures import Boxes, BoxMode, Instances

    from d2ext.data import register_all_datasets

    register_all_datasets()
    if args.dataset not in DatasetCatalog.list():
        raise KeyError(f"dataset {args.dataset!r} is not registered")
    dicts = DatasetCatalog.get(args.dataset)
    metadata = MetadataCatalog.get(args.dataset)
    id_map = metadata.get("thing_dataset_id_to_contiguous_id")
    with open(args.results) as f:
        results = json.load(f)
    if not isinstance(results, list):
        raise ValueError(f"{args.results}: expected COCO results (a list of detections)")
    by_image = defaultdict(list)
    for r in results:
        by_image[r["image_id"]].append(r)
    unknown = set(by_image) - {d["image_id"] for d in dicts}
    if unknown:
        raise ValueError(
            f"{args.results} has image ids not in {args.dataset!r} (e.g. {sorted(unknown)[:5]}): "
            "pass the dataset the results were computed on"
        )
    if args.max_images is not None:
        dicts = dicts[: args.max_images]

    outs = output_paths([d["file_name"] for d in dicts], args.output)
    written = []
    for d, out in zip(dicts, outs):
        rgb = read_image(d["file_name"], format="RGB")
        h, w = rgb.shape[:2]
        preds = by_image.get(d["image_id"], [])
        instances = Instances((h, w))
        boxes = np.asarray([p["bbox"] for p in preds], dtype=np.float64).reshape(-1, 4)
        boxes = BoxMode.convert(boxes, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
        instances.pred_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32))
        instances.scores = torch.tensor([p["score"] for p in preds], dtype=torch.float32)
        classes = [id_map[p["category_id"]] if id_map else p["category_id"] for p in preds]
        instances.pred_classes = torch.tensor(classes, dtype=torch.int64)
        if preds and all("segmentation" in p for p in preds):
            import pycocotools.mask as mask_util

            masks = mask_util.decode([p["segmentation"] for p in preds])  # H x W x N
            instances.pred_masks = torch.as_tensor(masks.transpose(2, 0, 1).astype(bool))
        drawing, n = draw(rgb, instances, metadata, args.score_threshold)
        _save_png(drawing, out)
        written.append({"input": d["file_name"], "output": out, "instances": n})
        print(f"{out}: {n} predictions drawn")
    return written


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs the tool.

    Args:
        argv (list[str] | None): command line without the program name (default sys.argv).

    Returns:
        list[dict]: per image ``input`` path, ``output`` PNG path and ``instances`` drawn.
    """
    parser = argument_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    _check_args(parser, args)
    os.makedirs(args.output, exist_ok=True)
    if args.results:
        return predictions_from_results(args)
    return predictions_from_model(args)


if __name__ == "__main__":
    main()
