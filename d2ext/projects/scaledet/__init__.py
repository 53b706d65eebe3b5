"""ScaleDet (Chen et al., CVPR 2023): one detector over several datasets in a unified label space
of text embeddings, trained with hard- and soft-label losses; any vocabulary at test time."""

from .evaluation import MultiDatasetEvaluator, MultiDatasetTestLoader
from .label_space import (
    FedLossClassWeights,
    UnifiedLabelSpace,
    build_unified_label_space,
    fed_loss_class_weights,
    label_key,
)
from .modeling import (
    ScaleDetCascadeROIHeads,
    ScaleDetOutputLayers,
    ScaleDetRCNN,
    ScaleDetROIHeads,
    VocabularySwap,
    encode_vocabulary,
    scaledet_losses,
    set_vocabulary,
)
from .text_embeddings import (
    DEFAULT_PROMPTS,
    build_text_encoder,
    dataset_label_names,
    encode_labels,
    label_embeddings,
    label_similarity,
    label_space_mappings,
    label_space_names,
    load_text_embeddings,
    read_embedding_file,
    save_text_embeddings,
    text_encoder_spec,
)

__all__ = [
    "DEFAULT_PROMPTS",
    "FedLossClassWeights",
    "MultiDatasetEvaluator",
    "MultiDatasetTestLoader",
    "ScaleDetCascadeROIHeads",
    "ScaleDetOutputLayers",
    "ScaleDetRCNN",
    "ScaleDetROIHeads",
    "UnifiedLabelSpace",
    "VocabularySwap",
    "build_text_encoder",
    "build_unified_label_space",
    "dataset_label_names",
    "encode_labels",
    "encode_vocabulary",
    "fed_loss_class_weights",
    "label_embeddings",
    "label_key",
    "label_similarity",
    "label_space_mappings",
    "label_space_names",
    "load_text_embeddings",
    "read_embedding_file",
    "save_text_embeddings",
    "scaledet_losses",
    "set_vocabulary",
    "text_encoder_spec",
]
