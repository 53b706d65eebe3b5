// Schemas of every d2ext operator, declared once. Kernels register per device in
// <op>/<op>_cpu.cpp and <op>/<op>_cuda.cu with TORCH_LIBRARY_IMPL.
#include <torch/extension.h>

TORCH_LIBRARY(d2ext, m) {
  // SoCo box jitter. boxes [N, 4] XYXY inclusive pixels; rand [N, 5] uniforms in [0, 1]:
  // column 0 decides (jitter iff rand < prob), columns 1..4 give u = ratio * (2 * rand - 1).
  m.def("box_jitter(Tensor boxes, Tensor rand, float prob, float ratio) -> Tensor");
  // SoCo's scale-aware rule: level = first j with sqrt(w * h) <= thresholds[j], else -1
  // (or the last level when clamp_top). Returns int64 [N] indices into thresholds.
  m.def(
      "assign_fpn_levels_threshold(Tensor boxes, float[] thresholds, bool inclusive, "
      "bool clamp_top) -> Tensor");
  // Detectron2's rule floor(canonical_level + log2(sqrt(area) / canonical_box_size + eps)),
  // clamped to [min_level, max_level], minus min_level. int64 [N].
  m.def(
      "assign_fpn_levels_log(Tensor boxes, int min_level, int max_level, "
      "float canonical_box_size, int canonical_level) -> Tensor");
  // Felzenszwalb-Huttenlocher segmentation of a uint8 HxWxC image as scikit-image computes it
  // (scale, sigma, min_size as there). int64 [H, W] labels numbered in raster order. CPU only.
  m.def("felzenszwalb(Tensor image, float scale, float sigma, int min_size) -> Tensor");
  // Selective search of a uint8 HxWx3 RGB image as the `selectivesearch` package computes it:
  // int64 [N, 4] XYWH boxes (inclusive pixels, w = x_max - x_min), segments then merges. CPU
  // only: proposals are made in preprocessing.
  m.def("selective_search(Tensor image, float scale, float sigma, int min_size) -> Tensor");
  // Multi-scale deformable attention (Deformable DETR) with the authors' bilinear sampling:
  // value [N, S, M, D], spatial_shapes int64 [L, 2] (H, W; sum H * W = S), sampling_locations
  // [N, Q, M, L, P, 2] (x, y in [0, 1]), attention_weights [N, Q, M, L, P] -> [N, Q, M * D].
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor sampling_locations, "
      "Tensor attention_weights) -> Tensor");
  // Its backward: gradients of value, sampling_locations and attention_weights.
  m.def(
      "ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor sampling_locations, Tensor attention_weights) -> (Tensor, Tensor, Tensor)");
}

// Importable as the Python module d2ext._C; loading it registers the operators above.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "d2ext compiled operators; use them through torch.ops.d2ext or d2ext.layers.";
}
