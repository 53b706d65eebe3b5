#!/usr/bin/env python
"""Computes the Co-DETR paper's encoder analysis for a trained Deformable-DETR-family model
(Deformable DETR, Co-Deformable-DETR, DINO, Co-DINO): the discriminability score map of the
encoder output and the IoF-IoB curve over a dataset, written as PNGs and a JSON.

    python tools/analyze_discriminability.py --config-file CONFIG.py --checkpoint model.pth \\
        --output OUT [--dataset NAME] [--num-images N] [--label NAME] [--opts key=value ...]

The model is built from the LazyConfig's ``model`` and its weights read with d2ext's
D2extCheckpointer. Images come from the registered dataset (default: the config's
``dataloader.test.dataset.names``), resized by ``dataloader.test.mapper.augmentations`` with
their ground-truth boxes. Per image: the L2 norm over channels of every encoder output level,
min-max normalised per level (--normalization max: divided by the maximum), resized to the
finest level's grid and averaged over levels (d2ext.projects.codetr.analysis). IoF(t) / IoB(t):
the fraction of foreground (inside a ground-truth box) / background cells scoring >= t.

OUT gets discriminability.json (thresholds, iof, iob, auc, mean foreground / background
score), iof_iob.png and score_maps/*.png (the first --num-visualize images); state.json lets a
rerun with the same arguments continue where an interrupted one stopped.

To draw several finished runs on one plot (e.g. Deformable DETR against Co-Deformable-DETR):

    python tools/analyze_discriminability.py --compare OUT1/discriminability.json \\
        OUT2/discriminability.json --output OUT  # writes OUT/iof_iob_compare.png
"""

import argparse
import os
import sys


def argument_parser() -> argparse.ArgumentParser:
    """The command line of this tool (argparse only: no torch import, so --help is instant)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    run = parser.add_argument_group("analyse a model")
    run.add_argument("--config-file", help="LazyConfig file (.py or .yaml) of the model")
    run.add_argument("--checkpoint", help="weights to load, e.g. OUTPUT/model_final.pth")
    run.add_argument("--dataset", help="registered dataset (default: the config's test dataset)")
    run.add_argument("--num-images", type=int, help="use only the first N images of the dataset")
    run.add_argument("--label", help="the run's name in the JSON and the plot (default: config)")
    run.add_argument("--num-thresholds", type=int, default=101, help="thresholds in [0, 1]")
    run.add_argument("--normalization", choices=("minmax", "max"), default="minmax")
    run.add_argument("--num-visualize", type=int, default=4, help="score-map PNGs to draw")
    run.add_argument("--device", help="default: the config's train.device, else cpu")
    run.add_argument("--opts", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument(
        "--compare", nargs="+", metavar="JSON", help="plot these discriminability.json together"
    )
    parser.add_argument("--output", required=True, help="output folder (created)")
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.compare:
        if args.config_file or args.checkpoint:
            parser.error("give either --compare or --config-file/--checkpoint")
        paths = args.compare
    else:
        if not (args.config_file and args.checkpoint):
            parser.error("analysing a model needs --config-file and --checkpoint")
        paths = [args.config_file, args.checkpoint]
    for path in paths:
        if not os.path.exists(path):
            parser.error(f"{path} does not exist")
    if args.num_images is not None and args.num_images < 1:
        parser.error("--num-images must be >= 1")
    if args.num_thresholds < 2:
        parser.error("--num-thresholds must be >= 2")


def compare(args) -> str:
    """Plots the curves of several result files into OUT/iof_iob_compare.png."""
    import json

    from d2ext.projects.codetr.analysis import plot_iof_iob

    curves = {}
    for path in args.compare:
        with open(path) as f:
            result = json.load(f)
        label = result.get("label") or os.path.basename(os.path.dirname(os.path.abspath(path)))
        while label in curves:
            label += "'"
        curves[label] = result
    out = os.path.join(args.output, "iof_iob_compare.png")
    plot_iof_iob(curves, out)
    aucs = ", ".join(f"{k} AUC {v['auc']:.4f}" for k, v in curves.items())
    print(f"{out}: {aucs}")
    return out


def analyse(args) -> dict:
    """Builds the model, loads the weights and runs the analysis over the dataset."""
    from detectron2.config import LazyConfig
    from detectron2.data import DatasetCatalog, DatasetMapper

    from d2ext.data import register_all_datasets
    from d2ext.engine.inference import build_loaded_model, config_test_dataset, config_test_inputs
    from d2ext.projects.codetr.analysis import analyze_discriminability

    register_all_datasets()
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts or [])
    dataset = args.dataset or config_test_dataset(cfg)
    if not dataset:
        raise ValueError("no --dataset and no dataloader.test.dataset.names in the config")
    if dataset not in DatasetCatalog.list():
        raise KeyError(f"dataset {dataset!r} is not registered")
    dicts = DatasetCatalog.get(dataset)
    if args.num_images is not None:
        dicts = dicts[: args.num_images]
    if not dicts:
        raise ValueError(f"dataset {dataset!r} is empty")

    model, _ = build_loaded_model(cfg, args.checkpoint, args.device)
    augmentations, image_format = config_test_inputs(cfg, model)
    # the test resize, with the annotations kept and moved with the image
    mapper = DatasetMapper(
        is_train=True,
        augmentations=augmentations,
        image_format=image_format,
        use_instance_mask=False,
    )
    label = args.label or os.path.splitext(os.path.basename(args.config_file))[0]
    run_info = {
        "config_file": os.path.abspath(args.config_file),
        "checkpoint": os.path.abspath(args.checkpoint),
        "dataset": dataset,
        "opts": list(args.opts or []),
    }
    result = analyze_discriminability(
        model,
        dicts,
        mapper,
        args.output,
        label=label,
        num_thresholds=args.num_thresholds,
        normalization=args.normalization,
        num_visualize=args.num_visualize,
        input_format=image_format,
        run_info=run_info,
    )
    print(
        f"{args.output}: {result['num_images']} images, IoF-IoB AUC {result['auc']:.4f}, mean "
        f"score foreground {result['mean_fg_score']:.4f} / background {result['mean_bg_score']:.4f}"
    )
    return result


def main(argv: list[str] | None = None):
    """Runs the tool.

    Args:
        argv (list[str] | None): command line without the program name (default sys.argv).

    Returns:
        dict | str: the analysis result, or the comparison PNG's path with --compare.
    """
    parser = argument_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    _check_args(parser, args)
    os.makedirs(args.output, exist_ok=True)
    if args.compare:
        return compare(args)
    return analyse(args)


if __name__ == "__main__":
    main()
