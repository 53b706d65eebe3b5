"""The one training loop of d2ext: LazyConfig in, detectron2 trainer, hooks and evaluators.

``tools/train_net.py`` is a thin command line over :func:`main`. Per-paper behaviour comes in
through the config (``train.extra_hooks``, model and data blocks), never through a copy of
this file.
"""

import contextlib
import difflib
import inspect
import json
import logging
import os
import re

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    create_ddp_model,
    default_setup,
    hooks,
)
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from detectron2.utils.registry import locate
from omegaconf import DictConfig, ListConfig, OmegaConf

from d2ext.checkpoint import D2extCheckpointer
from d2ext.data import register_all_datasets
from d2ext.utils.arguments import argument_parser
from d2ext.utils.io import atomic_write_bytes, remove_stale_temporaries

logger = logging.getLogger("d2ext")

__all__ = [
    "ConfigKeyError",
    "MetricsJSONWriter",
    "apply_checked_overrides",
    "argument_parser",
    "PeriodicCheckpointer",
    "build_checkpointer",
    "build_trainer",
    "do_test",
    "do_train",
    "main",
    "prepare_output_dir",
    "setup_config",
]


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


class PeriodicCheckpointer(hooks.PeriodicCheckpointer):
    """detectron2's :class:`~detectron2.engine.hooks.PeriodicCheckpointer`; ``period=0`` saves
    no periodic checkpoints, only ``model_final`` after the last iteration."""

    def __init__(self, checkpointer, period: int, *args, **kwargs):
        if period < 0:
            raise ValueError(
                f"train.checkpointer.period must be >= 0 (0: no periodic checkpoints), got {period}"
            )
        super().__init__(checkpointer, period, *args, **kwargs)

    def step(self, iteration: int, **kwargs) -> None:
        """With ``period > 0``, detectron2's step; with ``period == 0``, saves only
        ``{file_prefix}_final`` at iteration ``max_iter - 1`` (or later).

        Args:
            iteration: the iteration just finished.
            kwargs: extra entries stored in the checkpoint.
        """
        if self.period > 0:
            super().step(iteration, **kwargs)
        elif self.max_iter is not None and iteration >= self.max_iter - 1:
            state = {"iteration": int(iteration), **kwargs}
            self.checkpointer.save(f"{self.file_prefix}_final", **state)


class MetricsJSONWriter(JSONWriter):
    """detectron2's :class:`~detectron2.utils.events.JSONWriter` (one json line per logged
    iteration, appended), made resumable: :meth:`start` first drops the lines of iterations
    ``>= start_iter``, which a resumed run logs again (they were logged after the checkpoint it
    resumes from), and a partial last line left by a kill. The file is opened at :meth:`start`
    or at the first :meth:`write`."""

    def __init__(self, json_file: str, window_size: int = 20):
        # JSONWriter.__init__ opens the file; here that waits until start()
        self._json_file = json_file
        self._window_size = window_size
        self._last_write = -1
        self._file_handle = None

    def start(self, start_iter: int) -> None:
        """Drops the lines of iterations ``>= start_iter`` (atomically), then opens the file."""
        if os.path.isfile(self._json_file):
            with open(self._json_file) as f:
                lines = f.read().splitlines()
            keep = []
            for line in lines:
                try:
                    rec = json.loads(line)
                except ValueError:  # a line cut by a kill
                    continue
                if isinstance(rec, dict) and rec.get("iteration", -1) < start_iter:
                    keep.append(line)
            if len(keep) != len(lines):
                logger.info(
                    f"{self._json_file}: dropped {len(lines) - len(keep)} lines of iterations "
                    f">= {start_iter} (run again from there) or cut by a kill"
                )
                atomic_write_bytes(self._json_file, "".join(x + "\n" for x in keep).encode())
        if self._file_handle is None:
            self._file_handle = open(self._json_file, "a")  # noqa: SIM115 (closed in close())

    def write(self) -> None:
        """Opens the file if :meth:`start` did not, then writes like ``JSONWriter.write``."""
        if self._file_handle is None:
            self._file_handle = open(self._json_file, "a")  # noqa: SIM115
        super().write()

    def close(self) -> None:
        """Closes the file if it is open."""
        if self._file_handle is not None:
            super().close()
            self._file_handle = None


class PeriodicWriter(hooks.PeriodicWriter):
    """detectron2's :class:`~detectron2.engine.hooks.PeriodicWriter`; before training it
    starts each :class:`MetricsJSONWriter` at the trainer's start iteration."""

    def before_train(self) -> None:
        """Starts every :class:`MetricsJSONWriter` at the trainer's ``start_iter``."""
        for writer in self._writers:
            if isinstance(writer, MetricsJSONWriter):
                writer.start(self.trainer.start_iter)


def _writers(output_dir: str, max_iter: int) -> list:
    # detectron2's default_writers, with the resumable metrics.json writer
    os.makedirs(output_dir, exist_ok=True)
    return [
        CommonMetricPrinter(max_iter),
        MetricsJSONWriter(os.path.join(output_dir, "metrics.json")),
        TensorboardXWriter(output_dir),
    ]


def build_checkpointer(cfg, model, save_dir: str = "", **checkpointables) -> D2extCheckpointer:
    """A :class:`D2extCheckpointer` for ``model`` per ``cfg.train``: ``unsafe_load`` (unpickle
    without restrictions), ``min_init_fraction`` (least share of the model's parameter values a
    load must fill) unless ``allow_partial_init``."""
    t = cfg.train
    min_fraction = 0.0 if t.get("allow_partial_init", False) else t.get("min_init_fraction", 0.5)
    return D2extCheckpointer(
        model,
        save_dir,
        unsafe_load=bool(t.get("unsafe_load", False)),
        unsafe_switch="train.unsafe_load=True",
        min_loaded_fraction=float(min_fraction),
        **checkpointables,
    )


def prepare_output_dir(cfg, resume: bool) -> None:
    """Checks and tidies ``cfg.train.output_dir`` before training.

    A folder holding checkpoints (``last_checkpoint`` or ``model_*.pth``) of an earlier run is
    an error unless ``resume`` (continue it) or ``cfg.train.overwrite`` (replace it:
    ``last_checkpoint`` is removed now, the other files as the new run writes them). Temporaries
    of writes cut by a kill are removed (main process).

    Raises:
        FileExistsError: checkpoints are there and neither ``resume`` nor ``train.overwrite``.
    """
    out = cfg.train.output_dir
    if not out or not os.path.isdir(out):
        return
    names = sorted(os.listdir(out))
    found = [n for n in names if n == "last_checkpoint" or re.fullmatch(r"model_.*\.pth", n)]
    overwrite = bool(cfg.train.get("overwrite", False))
    if found and not resume and not overwrite:
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise FileExistsError(
            f"{out} already holds checkpoints of an earlier run ({shown}). Pass --resume to "
            "continue that run, set train.output_dir to another folder, or set "
            "train.overwrite=True to replace it."
        )
    if comm.is_main_process():
        for path in remove_stale_temporaries(out):
            logger.info(f"Removed {path}, left by an interrupted write")
        if found and overwrite and not resume:
            logger.warning(f"train.overwrite=True: replacing the run in {out}")
            last = os.path.join(out, "last_checkpoint")
            if os.path.exists(last):
                os.remove(last)
    comm.synchronize()


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
    checkpointer = build_checkpointer(cfg, model, cfg.train.output_dir, trainer=trainer)
    if cfg.train.get("clip_grad_norm"):
        raise ValueError(
            "train.clip_grad_norm is not read any more: clip in the optimizer, "
            "cfg.optimizer = L(d2ext.solver.with_gradient_clipping)(optimizer=..., clip_value=...)"
        )
    extra = [instantiate(h) for h in cfg.train.get("extra_hooks", [])]
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            *extra,
            PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
            if comm.is_main_process()
            else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            PeriodicWriter(
                _writers(cfg.train.output_dir, cfg.train.max_iter),
                period=cfg.train.log_period,
            )
            if comm.is_main_process()
            else None,
        ]
    )
    return trainer, checkpointer


def do_train(cfg, resume: bool = False):
    """Trains per ``cfg``; with ``resume``, continues from the last checkpoint in
    ``cfg.train.output_dir`` (iteration, optimizer and scheduler state included). Without it,
    a folder holding an earlier run's checkpoints is refused unless ``train.overwrite=True``
    (:func:`prepare_output_dir`)."""
    prepare_output_dir(cfg, resume)
    trainer, checkpointer = build_trainer(cfg)
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    start_iter = trainer.iter + 1 if resume and checkpointer.has_checkpoint() else 0
    if start_iter:
        logger.info(f"Resuming at iteration {start_iter} of {cfg.train.max_iter}")
    trainer.train(start_iter, cfg.train.max_iter)
    return trainer


_UNCHECKED = object()  # a value whose type is not checked (new LazyCall argument, unresolved)


class ConfigKeyError(KeyError):
    """An override names a key the config does not have."""

    def __str__(self) -> str:  # KeyError's own str() shows the message's repr
        return str(self.args[0]) if self.args else ""


def _parse_overrides(opts: list[str]) -> list[tuple[str, object]]:
    """(key, value) per ``key=value``, parsed as LazyConfig.apply_overrides parses them (hydra's
    override grammar)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser  # detectron2 dep

    out = []
    for o in OverridesParser.create().parse_overrides(opts):
        if o.is_delete():
            raise ValueError(f"override ~{o.key_or_group}: deleting a key is not supported")
        out.append((o.key_or_group, o.value()))
    return out


def _all_keys(node, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(node, DictConfig):
        for k in node.keys():
            full = f"{prefix}{k}"
            keys.append(full)
            child = node._get_node(k)
            if isinstance(child, (DictConfig, ListConfig)):
                keys += _all_keys(child, full + ".")
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            child = node._get_node(i)
            if isinstance(child, (DictConfig, ListConfig)):
                keys += _all_keys(child, f"{prefix}{i}.")
    return keys


def _target_params(target) -> dict[str, inspect.Parameter] | None:
    """The keyword parameters a LazyCall target accepts, by name (None: any, through
    ``**kwargs`` that end in no known signature). For a class, ``**kwargs`` passed up the MRO
    add the base's parameters."""
    if isinstance(target, str):
        target = locate(target)
    if target is None:
        return None
    chain = list(inspect.getmro(target)) if inspect.isclass(target) else [target]
    params: dict[str, inspect.Parameter] = {}
    for obj in chain:
        fn = obj.__init__ if inspect.isclass(obj) else obj
        if fn is object.__init__:
            return params
        try:
            own = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            return None
        for p in own:
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                params.setdefault(p.name, p)
        if not any(p.kind == p.VAR_KEYWORD for p in own):
            return params
        if not inspect.isclass(obj):
            return None
    return None


def _existing_value(cfg, key: str):
    """The config's value at ``key`` (``_UNCHECKED`` for an argument a LazyCall target accepts
    but the config does not set).

    Raises:
        ConfigKeyError: ``key`` is not in the config, naming the closest key that is.
    """
    node = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        if isinstance(node, DictConfig) and part in node:
            try:
                node = node[part]
            except Exception:  # an interpolation that does not resolve (yet)
                node = _UNCHECKED if i == len(parts) - 1 else node._get_node(part)
            continue
        if isinstance(node, ListConfig) and part.lstrip("-").isdigit():
            if -len(node) <= int(part) < len(node):
                node = node[int(part)]
                continue
        if isinstance(node, DictConfig) and i == len(parts) - 1 and "_target_" in node:
            accepted = _target_params(node._target_)
            if accepted is None or part in accepted:
                return _UNCHECKED
        if not isinstance(node, (DictConfig, ListConfig)):
            parent = ".".join(parts[:i])
            raise ConfigKeyError(f"override {key}: {parent} holds {node!r}, not a config")
        candidates = _all_keys(cfg)
        close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
        if not close:  # compare the last part among the keys at this level
            prefix = ".".join(parts[:i])
            level = [k for k in candidates if k.rpartition(".")[0] == prefix]
            names = {k.rpartition(".")[2]: k for k in level}
            close = [names[m] for m in difflib.get_close_matches(part, list(names), n=1)]
        hint = f"; the closest existing key is {close[0]}" if close else ""
        raise ConfigKeyError(f"override {key}: the config has no key {here}{hint}")
    return node


def _check_type(key: str, old, new) -> None:
    if new is None or old is None or old is _UNCHECKED:
        return
    if isinstance(old, bool):
        ok, want = isinstance(new, bool), "true or false"
    elif isinstance(old, int):
        ok, want = isinstance(new, int) and not isinstance(new, bool), "an int"
    elif isinstance(old, float):
        ok, want = isinstance(new, (int, float)) and not isinstance(new, bool), "a number"
    elif isinstance(old, str):
        ok, want = isinstance(new, str), "a string (quote a number: key='1')"
    elif isinstance(old, (ListConfig, list, tuple)):
        ok, want = isinstance(new, (list, tuple)), "a list ([a,b])"
    elif isinstance(old, DictConfig):
        ok, want = isinstance(new, dict), "a dict or null"
    else:
        return
    if not ok:
        shown = OmegaConf.to_container(old) if isinstance(old, (DictConfig, ListConfig)) else old
        shown = repr(shown) if len(repr(shown)) < 60 else type(old).__name__
        raise ValueError(
            f"override {key}={new!r}: expected {want} (the config has {shown}), "
            f"got {type(new).__name__}"
        )


def _takes_float(cfg, key: str) -> bool:
    """Whether the LazyCall holding ``key`` has a target whose argument of that name is
    annotated ``float`` or defaults to a float."""
    parent_key, _, name = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if not isinstance(parent, DictConfig) or "_target_" not in parent:
        return False
    param = (_target_params(parent._target_) or {}).get(name)
    if param is None:
        return False
    return param.annotation in (float, "float") or isinstance(param.default, float)


def apply_checked_overrides(cfg, opts: list[str]):
    """:meth:`LazyConfig.apply_overrides` with checks: every key must exist in ``cfg`` (or be
    an argument the LazyCall's target accepts), the value must have the existing value's type
    (bool, int, float: int accepted, str, list, dict; a float also where the config holds an
    int for an argument its target declares float), and ``None`` or ``null`` set None.

    Raises:
        ConfigKeyError (a KeyError): an unknown key, naming the closest existing one.
        ValueError: a value of another type.
    """
    for key, value in _parse_overrides(list(opts)):
        if value == "None":
            value = None
        old = _existing_value(cfg, key)
        if type(old) is int and isinstance(value, float) and _takes_float(cfg, key):
            old = float(old)  # e.g. mlp_ratio=4 in a config, a float argument of its target
        _check_type(key, old, value)
        OmegaConf.update(cfg, key, value, merge=True)
    return cfg


def setup_config(config_file: str, opts: list[str]):
    """Loads a LazyConfig file and applies ``key=value`` overrides
    (:func:`apply_checked_overrides`)."""
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file {config_file!r} not found")
    cfg = LazyConfig.load(config_file)
    return apply_checked_overrides(cfg, opts)


def main(args):
    """Registers the datasets, loads the config with its overrides and sets up the run; then
    evaluates ``train.init_checkpoint`` (``--eval-only``) or trains.

    Args:
        args: the parsed command line: ``config_file``, ``opts``, ``eval_only``, ``resume`` and
            what ``default_setup`` reads.

    Returns:
        With ``--eval-only``, the evaluation results (:func:`do_test`); otherwise None.
    """
    register_all_datasets()
    cfg = setup_config(args.config_file, args.opts)
    default_setup(cfg, args)
    if args.eval_only:
        if not cfg.train.init_checkpoint:
            raise ValueError("--eval-only needs train.init_checkpoint=/path/to/model.pth")
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = wrap_ddp(model, cfg)
        build_checkpointer(cfg, model).load(cfg.train.init_checkpoint)
        return do_test(cfg, model)
    # EvalHook evaluates after the last iteration (and every train.eval_period if > 0).
    do_train(cfg, resume=args.resume)
