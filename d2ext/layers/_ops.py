"""Loading of the compiled extension ``d2ext._C`` and the choice between kernel and reference.

Importing this module never raises: when ``d2ext._C`` is missing or has no kernel for a
device, the public ops in :mod:`d2ext.layers` run their pure-torch references instead, and say
so once in the log.
"""

import logging

import torch

logger = logging.getLogger(__name__)

try:
    from d2ext import _C  # noqa: F401  (registers torch.ops.d2ext.*)

    C_IMPORT_ERROR: Exception | None = None
except ImportError as e:  # not built, or built against another torch
    _C = None
    C_IMPORT_ERROR = e

OP_NAMES = (
    "box_jitter",
    "assign_fpn_levels_threshold",
    "assign_fpn_levels_log",
    "felzenszwalb",
    "selective_search",
    "ms_deform_attn",
    "ms_deform_attn_backward",
)
# Preprocessing ops with a CPU kernel only (proposals are made before training, on CPUs).
CPU_ONLY_OPS = ("felzenszwalb", "selective_search")
_warned: set[tuple[str, str]] = set()


def has_kernel(op_name: str, device_type: str) -> bool:
    """Whether ``d2ext._C`` registered a kernel of ``d2ext::op_name`` for ``device_type``."""
    if _C is None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"d2ext::{op_name}", device_type.upper())


def use_compiled(op_name: str, tensor: torch.Tensor) -> bool:
    """True when the compiled kernel of ``op_name`` can run on ``tensor``'s device.

    Otherwise logs, once per op and device, why the pure-torch reference runs instead.
    """
    device_type = tensor.device.type
    if has_kernel(op_name, device_type):
        return True
    if (op_name, device_type) not in _warned:
        _warned.add((op_name, device_type))
        why = f"d2ext._C failed to import ({C_IMPORT_ERROR})" if _C is None else "no such kernel"
        logger.warning(
            "d2ext::%s has no compiled %s kernel (%s); using the pure-torch reference.",
            op_name,
            device_type,
            why,
        )
    return False


def check(cond: bool, msg: str) -> None:
    """Raises the error a compiled kernel's ``TORCH_CHECK`` raises, so both paths agree."""
    if not cond:
        raise RuntimeError(msg)


def check_boxes(op: str, boxes: torch.Tensor) -> None:
    """Checks that ``boxes`` are [N, 4] float32 / float64 with only finite values.

    Args:
        op: the op's name, used in the error message.
        boxes: the boxes to check.

    Raises:
        RuntimeError: on a wrong shape, dtype, NaN or Inf (what the compiled kernel raises).
    """
    check(
        boxes.dim() == 2 and boxes.shape[1] == 4,
        f"{op}: boxes must have shape [N, 4] (XYXY), got {list(boxes.shape)}",
    )
    check(
        boxes.dtype in (torch.float32, torch.float64),
        f"{op}: boxes must be float32 or float64, got {boxes.dtype}",
    )
    check(bool(torch.isfinite(boxes).all()), f"{op}: boxes contain NaN or Inf")


if _C is not None:
    # Shape-only implementations for FakeTensor / torch.compile / opcheck.
    @torch.library.register_fake("d2ext::box_jitter")
    def _box_jitter_fake(boxes, rand, prob, ratio):
        return torch.empty_like(boxes)

    @torch.library.register_fake("d2ext::assign_fpn_levels_threshold")
    def _threshold_fake(boxes, thresholds, inclusive, clamp_top):
        return boxes.new_empty((boxes.shape[0],), dtype=torch.int64)

    @torch.library.register_fake("d2ext::assign_fpn_levels_log")
    def _log_fake(boxes, min_level, max_level, canonical_box_size, canonical_level):
        return boxes.new_empty((boxes.shape[0],), dtype=torch.int64)

    @torch.library.register_fake("d2ext::ms_deform_attn")
    def _ms_deform_attn_fake(value, spatial_shapes, sampling_locations, attention_weights):
        n, _, m, d = value.shape
        return value.new_empty((n, sampling_locations.shape[1], m * d))

    @torch.library.register_fake("d2ext::ms_deform_attn_backward")
    def _ms_deform_attn_backward_fake(
        grad_output, value, spatial_shapes, sampling_locations, attention_weights
    ):
        return (
            torch.empty_like(value, memory_format=torch.contiguous_format),
            torch.empty_like(sampling_locations, memory_format=torch.contiguous_format),
            torch.empty_like(attention_weights, memory_format=torch.contiguous_format),
        )

    def _ms_deform_attn_setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def _ms_deform_attn_backward(ctx, grad_output):
        value, spatial_shapes, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value, grad_loc, grad_attn = torch.ops.d2ext.ms_deform_attn_backward(
            grad_output, value, spatial_shapes, sampling_locations, attention_weights
        )
        need = ctx.needs_input_grad
        return (
            grad_value if need[0] else None,
            None,
            grad_loc if need[2] else None,
            grad_attn if need[3] else None,
        )

    # The backward runs the compiled d2ext::ms_deform_attn_backward; it is not itself
    # differentiable (no double backward).
    torch.library.register_autograd(
        "d2ext::ms_deform_attn",
        _ms_deform_attn_backward,
        setup_context=_ms_deform_attn_setup_context,
    )
