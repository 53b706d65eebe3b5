// Arithmetic of SoCo's box jitter, shared by the CPU and CUDA kernels so both evaluate the
// same operations in the same order (the pure-torch reference in d2ext/layers/box_jitter.py
// mirrors it op by op). Inclusive pixel boxes: w = x2 - x1 + 1.
#pragma once
#include "../checks.h"

namespace d2ext {

// Jitters one box; returns the InputFlag bits for bad input. Branch-free: the jittered box is
// always computed and selected per coordinate, since rand < prob is a coin flip per box.
template <typename T>
D2EXT_HOST_DEVICE inline int box_jitter_one(const T* box, const T* rnd, T prob, T ratio, T* out) {
  bool finite = true, in_range = true;
  for (int k = 0; k < 4; ++k) finite &= is_finite(box[k]);
  for (int k = 0; k < 5; ++k) in_range &= (rnd[k] >= T(0)) & (rnd[k] <= T(1));
  const T w = box[2] - box[0] + T(1);
  const T h = box[3] - box[1] + T(1);
  T u[4];
  for (int k = 0; k < 4; ++k) u[k] = (rnd[k + 1] * T(2) - T(1)) * ratio;
  const T x1 = box[0] + u[0] * w;
  const T y1 = box[1] + u[1] * h;
  const T nw = w * (u[2] + T(1));
  const T nh = h * (u[3] + T(1));
  const T jittered[4] = {x1, y1, x1 + nw - T(1), y1 + nh - T(1)};
  const bool take = rnd[0] < prob;
  for (int k = 0; k < 4; ++k) out[k] = select(take, jittered[k], box[k]);
  return (finite ? 0 : kNonFinite) | (in_range ? 0 : kBadRandom);
}

inline void check_box_jitter_inputs(const at::Tensor& boxes, const at::Tensor& rand, double prob,
                                    double ratio) {
  constexpr const char* op = "d2ext::box_jitter";
  check_boxes(op, boxes);
  TORCH_CHECK(prob >= 0 && prob <= 1, op, ": prob must be in [0, 1], got ", prob);
  TORCH_CHECK(ratio >= 0 && ratio < 1, op, ": ratio must be in [0, 1), got ", ratio);
  TORCH_CHECK(rand.dim() == 2 && rand.size(0) == boxes.size(0) && rand.size(1) == 5, op,
              ": rand must have shape [N, 5] = [", boxes.size(0), ", 5], got ", rand.sizes());
  TORCH_CHECK(rand.scalar_type() == boxes.scalar_type(), op,
              ": rand must have the dtype of boxes (", boxes.scalar_type(), "), got ",
              rand.scalar_type());
  TORCH_CHECK(boxes.device() == rand.device(), op, ": boxes and rand are on different devices (",
              boxes.device(), " and ", rand.device(), ")");
}

}  // namespace d2ext
