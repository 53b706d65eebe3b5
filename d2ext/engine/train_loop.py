"""The one training loop of d2ext: LazyConfig in, detectron2 trainer, hooks and evaluators.

``tools/train_net.py`` is a thin command line over :func:`main`. Per-paper behaviour comes in
through the config (``train.extra_hooks``, model and data blocks), never through a copy of
this file.
"""

import contextlib
import json
import logging
import os

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    default_writers,
    hooks,
)
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

from d2ext.checkpoint import D2extCheckpointer
from d2ext.data import register_all_datasets
from d2ext.utils.io import atomic_write_bytes

from .hooks import GradientClipHook

logger = logging.getLogger("d2ext")

__all__ = ["build_trainer", "do_test", "do_train", "main", "setup_config"]


def do_test(cfg, model) -> dict:
    """Evaluates ``model`` and writes the results to ``<output_dir>/eval_results.json``.

    Either one test set: ``cfg.dataloader.test`` scored by ``cfg.dataloader.evaluator``; or
    several: ``cfg.dataloader.tests = {name: {loader, evaluator, context}}``, each scored by
    its own evaluator (in its own label space), results keyed by name. ``context``
    (optional) instantiates to a callable ``ctx(model)`` returning a context manager entered
    around that evaluation (e.g. ScaleDet's test-time vocabulary swap).
    """
    tests = cfg.dataloader.get("tests")
    if tests:
        results = {}
        for name, t in tests.items():
            if t is None or t.get("evaluator") is None:
                continue
            context = instantiate(t.get("context")) if t.get("context") is not None else None
            with context(model) if context is not None else contextlib.nullcontext():
                res = inference_on_dataset(model, instantiate(t.loader), instantiate(t.evaluator))
            if comm.is_main_process() and res:
                logger.info(f"results on {name}:")
                print_csv_format(res)
            results[name] = res
    elif cfg.dataloader.get("evaluator") is None:  # dataloader.evaluator=null: no evaluation
        return {}
    else:
        results = inference_on_dataset(
            model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
        )
        if comm.is_main_process() and results:
            print_csv_format(results)
    if comm.is_main_process() and results:
        path = os.path.join(cfg.train.output_dir, "eval_results.json")
        atomic_write_bytes(path, json.dumps(results, indent=2).encode())
    return results


def wrap_ddp(model, cfg):
    """detectron2's create_ddp_model, also for CPU processes (gloo), where DDP must not be
    given device_ids."""
    kwargs = dict(cfg.train.ddp)
    if torch.device(cfg.train.device).type == "cpu":
        kwargs["device_ids"] = None
    return create_ddp_model(model, **kwargs)


def build_trainer(cfg, model=None):
    """Builds model, optimizer, data and trainer from ``cfg``; returns (trainer, checkpointer)."""
    model = model if model is not None else instantiate(cfg.model)
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    model = wrap_ddp(model, cfg)
    trainer_cls = AMPTrainer if cfg.train.amp.enabled else SimpleTrainer
    trainer = trainer_cls(model, train_loader, optim)
    checkpointer = D2extCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    extra = [instantiate(h) for h in cfg.train.get("extra_hooks", [])]
    clip = cfg.train.get("clip_grad_norm", 0)
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            GradientClipHook(clip) if clip else None,
            *extra,
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
            if comm.is_main_process()
            else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            hooks.PeriodicWriter(
                default_writers(cfg.train.output_dir, cfg.train.max_iter),
                period=cfg.train.log_period,
            )
            if comm.is_main_process()
            else None,
        ]
    )
    return trainer, checkpointer


def do_train(cfg, resume: bool = False):
    """Trains per ``cfg``; with ``resume``, continues from the last checkpoint in
    ``cfg.train.output_dir`` (iteration, optimizer and scheduler state included)."""
    trainer, checkpointer = build_trainer(cfg)
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    start_iter = trainer.iter + 1 if resume and checkpointer.has_checkpoint() else 0
    if start_iter:
        logger.info(f"Resuming at iteration {start_iter} of {cfg.train.max_iter}")
    trainer.train(start_iter, cfg.train.max_iter)
    return trainer


def setup_config(config_file: str, opts: list[str]):
    """Loads a LazyConfig file and applies ``key=value`` overrides."""
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file {config_file!r} not found")
    cfg = LazyConfig.load(config_file)
    return LazyConfig.apply_overrides(cfg, opts)


def main(args):
    register_all_datasets()
    cfg = setup_config(args.config_file, args.opts)
    default_setup(cfg, args)
    if args.eval_only:
        if not cfg.train.init_checkpoint:
            raise ValueError("--eval-only needs train.init_checkpoint=/path/to/model.pth")
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = wrap_ddp(model, cfg)
        D2extCheckpointer(model).load(cfg.train.init_checkpoint)
        return do_test(cfg, model)
    # EvalHook evaluates after the last iteration (and every train.eval_period if > 0).
    do_train(cfg, resume=args.resume)


def argument_parser():
    parser = default_argument_parser(
        epilog="Example: python tools/train_net.py --config-file "
        "configs/baselines/faster_rcnn_R18_FPN_demo.py train.max_iter=100"
    )
    return parser
