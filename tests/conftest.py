import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(scope="session")
def demo_unlabeled_proposals(tmp_path_factory):
    """A SoCo-filtered proposal cache of the unlabeled demo split (about 10 s), once a session."""
    from d2ext.proposals import SOCO_FILTER, dataset_items, generate_proposals

    from .helpers import demo_data_root

    demo_data_root()
    items = dataset_items("d2ext_demo_unlabeled")
    out = str(tmp_path_factory.mktemp("proposals"))
    generate_proposals(items, out, filt=SOCO_FILTER, workers=2, progress=False)
    return out
