"""Per-dataset evaluation through detectron2's plain ``dataloader.test`` / ``dataloader.evaluator``.

d2ext's ``do_test`` scores each entry of ``dataloader.tests = {name: {loader, evaluator,
context}}`` on its own. A detectron2 loop (``tools/lazyconfig_train_net.py``) knows only
``inference_on_dataset(model, instantiate(cfg.dataloader.test),
instantiate(cfg.dataloader.evaluator))``; these two classes give it the same entries::

    dataloader.test = L(MultiDatasetTestLoader)(tests="${..tests}")
    dataloader.evaluator = L(MultiDatasetEvaluator)(tests="${..tests}")

The loader runs the entries' loaders one after another and tags every input with its entry
(``test_set``) and, when the entry's context is a :class:`VocabularySwap`, its vocabulary
(``vocabulary``), which :class:`ScaleDetRCNN` detects in. The evaluator sends each input to
its entry's evaluator and returns ``{"<name>/<task>": metrics}`` (e.g. ``"shapes/bbox"``), a
flat mapping that detectron2's ``print_csv_format`` and ``EvalHook`` take. Entries that are
None or have no evaluator are skipped, as in ``do_test``.
"""

from collections import OrderedDict
from collections.abc import Mapping

from detectron2.config import instantiate
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from .modeling import VocabularySwap

__all__ = ["MultiDatasetEvaluator", "MultiDatasetTestLoader"]


def _entries(tests: Mapping) -> list[tuple[str, Mapping]]:
    if not isinstance(tests, Mapping) or not tests:
        raise ValueError(f"tests must be a non-empty mapping name -> entry, got {tests!r}")
    return [(n, t) for n, t in tests.items() if t is not None and t.get("evaluator") is not None]


def _vocabulary(name: str, entry: Mapping):
    context = entry.get("context")
    if context is None:
        return None
    context = instantiate(context)
    if not isinstance(context, VocabularySwap):
        raise ValueError(
            f"tests.{name}.context is a {type(context).__name__}; through dataloader.test only "
            "a VocabularySwap can be applied (it travels with the inputs)"
        )
    return context.embeddings


class MultiDatasetTestLoader:
    """Several test loaders in turn, each input tagged with its entry's name and vocabulary.

    Args:
        tests: ``{name: {"loader", "evaluator", "context"}}`` (LazyCall nodes or objects), as
            ``dataloader.tests``.
    """

    def __init__(self, tests: Mapping):
        self.loaders = [
            (name, instantiate(t["loader"]), _vocabulary(name, t)) for name, t in _entries(tests)
        ]

    def __len__(self) -> int:
        return sum(len(loader) for _, loader, _ in self.loaders)

    def __iter__(self):
        for name, loader, vocabulary in self.loaders:
            for batch in loader:
                for d in batch:
                    d["test_set"] = name
                    if vocabulary is not None:
                        d["vocabulary"] = vocabulary
                yield batch


class MultiDatasetEvaluator(DatasetEvaluator):
    """One evaluator per entry; each input goes to the evaluator of its ``test_set``.

    Args:
        tests: the same mapping as :class:`MultiDatasetTestLoader`'s.
    """

    def __init__(self, tests: Mapping):
        self.evaluators = OrderedDict(
            (name, instantiate(t["evaluator"])) for name, t in _entries(tests)
        )

    def reset(self):
        """Resets every entry's evaluator."""
        for evaluator in self.evaluators.values():
            evaluator.reset()

    def process(self, inputs, outputs):
        """Groups the inputs by their ``test_set`` and passes each group to its entry's evaluator.

        Args:
            inputs: detectron2's input dicts, each tagged with ``test_set``.
            outputs: the model's outputs for ``inputs``.

        Raises:
            KeyError: an input's ``test_set`` is not one of the entries.
        """
        groups = OrderedDict()
        for d, out in zip(inputs, outputs):
            name = d.get("test_set")
            if name not in self.evaluators:
                raise KeyError(
                    f"input test_set={name!r} is not one of {list(self.evaluators)}; "
                    "use MultiDatasetTestLoader with the same tests"
                )
            groups.setdefault(name, ([], []))
            groups[name][0].append(d)
            groups[name][1].append(out)
        for name, (ins, outs) in groups.items():
            self.evaluators[name].process(ins, outs)

    def evaluate(self):
        """Returns:
        ``{"<name>/<task>": {metric: value}}`` on the main process, ``{}`` elsewhere."""
        results = OrderedDict()
        for name, evaluator in self.evaluators.items():
            res = evaluator.evaluate()
            if comm.is_main_process() and res:
                for task, value in res.items():
                    results[f"{name}/{task}"] = value
        return results
