// Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021): input checks and the
// bilinear sampling arithmetic shared by the CPU and CUDA kernels. The arithmetic is the
// authors' (fundamentalvision/Deformable-DETR, ms_deform_im2col_cuda.cuh): a location (x, y) in
// [0, 1] of an H x W level maps to pixel coordinates h = y * H - 0.5, w = x * W - 0.5
// (align_corners=False), is sampled only when -1 < h < H and -1 < w < W, and neighbours outside
// the map read as zeros.
//
// Layouts (all contiguous):
//   value               [N, S, M, D]     S = sum_l H_l * W_l, levels flattened one after another
//   spatial_shapes      [L, 2] int64     (H_l, W_l)
//   sampling_locations  [N, Q, M, L, P, 2]  (x, y)
//   attention_weights   [N, Q, M, L, P]
//   output              [N, Q, M * D]
#pragma once
#include <ATen/ATen.h>

#include <cmath>
#include <sstream>

#include "../checks.h"

namespace d2ext {

// The four neighbours of one sampling point: their pixel indices within the level (row-major,
// -1 for a neighbour outside the map) and their bilinear weights, in the order
// (h_low, w_low), (h_low, w_high), (h_high, w_low), (h_high, w_high).
template <typename T>
struct BilinearCorners {
  int64_t index[4];
  T weight[4];
  T lh, lw, hh,
      hw;  // fractional parts and their complements: weight = {hh hw, hh lw, lh hw, lh lw}
};

// Fills `c` for the location (x, y) of an H x W level; returns false when the point lies
// outside (-1, H) x (-1, W), where it samples nothing and has no gradient (the authors' rule).
template <typename T>
D2EXT_HOST_DEVICE inline bool bilinear_corners(T x, T y, int64_t height, int64_t width,
                                               BilinearCorners<T>& c) {
  const T h_im = y * static_cast<T>(height) - T(0.5);
  const T w_im = x * static_cast<T>(width) - T(0.5);
  if (!(h_im > T(-1) && w_im > T(-1) && h_im < static_cast<T>(height) &&
        w_im < static_cast<T>(width))) {
    return false;
  }
#ifdef __CUDA_ARCH__
  const T h_floor = floor(h_im);
  const T w_floor = floor(w_im);
#else
  const T h_floor = std::floor(h_im);
  const T w_floor = std::floor(w_im);
#endif
  const int64_t h_low = static_cast<int64_t>(h_floor);
  const int64_t w_low = static_cast<int64_t>(w_floor);
  const int64_t h_high = h_low + 1;
  const int64_t w_high = w_low + 1;
  c.lh = h_im - h_floor;
  c.lw = w_im - w_floor;
  c.hh = T(1) - c.lh;
  c.hw = T(1) - c.lw;
  c.weight[0] = c.hh * c.hw;
  c.weight[1] = c.hh * c.lw;
  c.weight[2] = c.lh * c.hw;
  c.weight[3] = c.lh * c.lw;
  const bool h_low_in = h_low >= 0, h_high_in = h_high <= height - 1;
  const bool w_low_in = w_low >= 0, w_high_in = w_high <= width - 1;
  c.index[0] = (h_low_in && w_low_in) ? h_low * width + w_low : -1;
  c.index[1] = (h_low_in && w_high_in) ? h_low * width + w_high : -1;
  c.index[2] = (h_high_in && w_low_in) ? h_high * width + w_low : -1;
  c.index[3] = (h_high_in && w_high_in) ? h_high * width + w_high : -1;
  return true;
}

// Gradients of one sample with respect to its attention weight and its location, from the dot
// products g[i] = <grad_output, value at neighbour i> (0 for neighbours outside the map):
// sample = sum_i weight[i] * v_i, output += a * sample.
template <typename T>
D2EXT_HOST_DEVICE inline void sample_gradients(const BilinearCorners<T>& c, const T g[4], T a,
                                               int64_t height, int64_t width, T& grad_a, T& grad_x,
                                               T& grad_y) {
  grad_a = c.weight[0] * g[0] + c.weight[1] * g[1] + c.weight[2] * g[2] + c.weight[3] * g[3];
  // d weight / d w_im = {-hh, hh, -lh, lh}; d weight / d h_im = {-hw, -lw, hw, lw}
  const T dw = c.hh * (g[1] - g[0]) + c.lh * (g[3] - g[2]);
  const T dh = c.hw * (g[2] - g[0]) + c.lw * (g[3] - g[1]);
  grad_x = static_cast<T>(width) * dw * a;
  grad_y = static_cast<T>(height) * dh * a;
}

// Shapes, dtypes and devices; the level sizes are checked by check_ms_deform_attn_levels.
inline void check_ms_deform_attn_inputs(const char* op, const at::Tensor& value,
                                        const at::Tensor& spatial_shapes,
                                        const at::Tensor& sampling_locations,
                                        const at::Tensor& attention_weights) {
  TORCH_CHECK(value.dim() == 4, op, ": value must have shape [N, S, M, D], got ", value.sizes());
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2, op,
              ": spatial_shapes must have shape [L, 2] (H, W per level), got ",
              spatial_shapes.sizes());
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong, op, ": spatial_shapes must be int64, got ",
              spatial_shapes.scalar_type());
  const int64_t n = value.size(0), m = value.size(2), l = spatial_shapes.size(0);
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(0) == n &&
                  sampling_locations.size(2) == m && sampling_locations.size(3) == l &&
                  sampling_locations.size(5) == 2,
              op, ": sampling_locations must have shape [N, Q, M, L, P, 2] with N = ", n,
              ", M = ", m, ", L = ", l, ", got ", sampling_locations.sizes());
  const int64_t q = sampling_locations.size(1), p = sampling_locations.size(4);
  TORCH_CHECK(attention_weights.dim() == 5 && attention_weights.size(0) == n &&
                  attention_weights.size(1) == q && attention_weights.size(2) == m &&
                  attention_weights.size(3) == l && attention_weights.size(4) == p,
              op, ": attention_weights must have shape [N, Q, M, L, P] = [", n, ", ", q, ", ", m,
              ", ", l, ", ", p, "], got ", attention_weights.sizes());
  TORCH_CHECK(value.scalar_type() == at::kFloat || value.scalar_type() == at::kDouble, op,
              ": value must be float32 or float64, got ", value.scalar_type());
  TORCH_CHECK(sampling_locations.scalar_type() == value.scalar_type() &&
                  attention_weights.scalar_type() == value.scalar_type(),
              op, ": sampling_locations and attention_weights must have the dtype of value (",
              value.scalar_type(), "), got ", sampling_locations.scalar_type(), " and ",
              attention_weights.scalar_type());
  TORCH_CHECK(spatial_shapes.device() == value.device() &&
                  sampling_locations.device() == value.device() &&
                  attention_weights.device() == value.device(),
              op,
              ": value, spatial_shapes, sampling_locations and attention_weights are on "
              "different devices (",
              value.device(), ", ", spatial_shapes.device(), ", ", sampling_locations.device(),
              ", ", attention_weights.device(), ")");
}

// The gradient of the output, [N, Q, M * D], of value's dtype and device.
inline void check_ms_deform_attn_grad_output(const char* op, const at::Tensor& grad_output,
                                             const at::Tensor& value,
                                             const at::Tensor& sampling_locations) {
  const int64_t n = value.size(0), q = sampling_locations.size(1);
  const int64_t md = value.size(2) * value.size(3);
  TORCH_CHECK(grad_output.dim() == 3 && grad_output.size(0) == n && grad_output.size(1) == q &&
                  grad_output.size(2) == md,
              op, ": grad_output must have shape [N, Q, M * D] = [", n, ", ", q, ", ", md,
              "], got ", grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == value.scalar_type(), op,
              ": grad_output must have the dtype of value (", value.scalar_type(), "), got ",
              grad_output.scalar_type());
  TORCH_CHECK(grad_output.device() == value.device(), op,
              ": grad_output and value are on different devices (", grad_output.device(), " and ",
              value.device(), ")");
}

// shapes_cpu: the [L, 2] int64 level sizes on the host. Every size must be positive and the
// levels must hold exactly the S values of `value`.
inline void check_ms_deform_attn_levels(const char* op, const at::Tensor& shapes_cpu, int64_t s) {
  const auto acc = shapes_cpu.accessor<int64_t, 2>();
  int64_t total = 0;
  std::ostringstream sizes;
  for (int64_t l = 0; l < shapes_cpu.size(0); ++l) {
    TORCH_CHECK(acc[l][0] > 0 && acc[l][1] > 0, op, ": level ", l, " has size ", acc[l][0], "x",
                acc[l][1], "; spatial_shapes must be positive");
    total += acc[l][0] * acc[l][1];
    sizes << (l ? ", " : "") << acc[l][0] << "x" << acc[l][1];
  }
  TORCH_CHECK(total == s, op, ": spatial_shapes (", sizes.str(), ") do not add up to S = ", s,
              " (value.size(1)): they hold ", total, " values");
}

}  // namespace d2ext
