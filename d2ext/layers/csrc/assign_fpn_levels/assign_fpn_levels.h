// Per-box arithmetic of the two FPN level rules, shared by the CPU and CUDA kernels. Each
// mirrors, operation by operation and in the boxes' dtype, the pure-torch reference in
// d2ext/layers/assign_fpn_levels.py (and, for the log rule,
// detectron2.modeling.poolers.assign_boxes_to_levels).
#pragma once
#include <cfloat>
#include <cmath>
#include <vector>

#include "../checks.h"

namespace d2ext {

constexpr int kMaxLevels = 8;

template <typename T>
struct Thresholds {
  T value[kMaxLevels];
  int count;
};

// SoCo: s = sqrt(w * h) (inclusive widths w = x2 - x1 + 1 when `inclusive`); the first level
// whose upper bound is >= s; boxes above the last bound get -1, or the last level.
template <typename T>
D2EXT_HOST_DEVICE inline int64_t level_threshold_one(const T* box, const Thresholds<T>& thr,
                                                     bool inclusive, bool clamp_top, int* flags) {
  T w = box[2] - box[0];
  T h = box[3] - box[1];
  if (inclusive) {
    w = w + T(1);
    h = h + T(1);
  }
  for (int k = 0; k < 4; ++k) {
    if (!is_finite(box[k])) *flags |= kNonFinite;
  }
  const T area = w * h;
  if (area < T(0)) *flags |= kNegativeArea;
  const T s = static_cast<T>(sqrt(area));
  for (int j = 0; j < thr.count; ++j) {
    if (s <= thr.value[j]) return j;
  }
  return clamp_top ? thr.count - 1 : -1;
}

// Detectron2: floor(canonical_level + log2(sqrt(area) / canonical_box_size + eps)), clamped.
template <typename T>
D2EXT_HOST_DEVICE inline int64_t level_log_one(const T* box, int64_t min_level, int64_t max_level,
                                               T canonical_box_size, T canonical_level,
                                               int* flags) {
  for (int k = 0; k < 4; ++k) {
    if (!is_finite(box[k])) *flags |= kNonFinite;
  }
  const T area = (box[2] - box[0]) * (box[3] - box[1]);
  if (area < T(0)) *flags |= kNegativeArea;
  // Every step is rounded to T, as torch rounds each elementwise op to the tensor's dtype
  // (sqrt/log2 may resolve to their double overloads: cast back before the next step).
  const T size = static_cast<T>(sqrt(area));
  const T ratio = size / canonical_box_size + static_cast<T>(DBL_EPSILON);
  const T log_ratio = static_cast<T>(log2(ratio));
  const T sum = canonical_level + log_ratio;
  T level = static_cast<T>(floor(sum));
  if (level < static_cast<T>(min_level)) level = static_cast<T>(min_level);
  if (level > static_cast<T>(max_level)) level = static_cast<T>(max_level);
  return static_cast<int64_t>(level) - min_level;
}

template <typename T>
inline Thresholds<T> make_thresholds(const char* op, c10::ArrayRef<double> values) {
  TORCH_CHECK(!values.empty() && values.size() <= kMaxLevels, op, ": between 1 and ",
              kMaxLevels, " thresholds are supported, got ", values.size());
  Thresholds<T> thr{};
  thr.count = static_cast<int>(values.size());
  for (size_t j = 0; j < values.size(); ++j) {
    TORCH_CHECK(std::isfinite(values[j]), op, ": thresholds must be finite");
    TORCH_CHECK(j == 0 || values[j] > values[j - 1], op,
                ": thresholds must be strictly increasing, got ", values);
    thr.value[j] = static_cast<T>(values[j]);
  }
  return thr;
}

inline void check_log_rule_args(const char* op, int64_t min_level, int64_t max_level,
                                double canonical_box_size) {
  TORCH_CHECK(min_level <= max_level, op, ": min_level (", min_level, ") > max_level (",
              max_level, ")");
  TORCH_CHECK(canonical_box_size > 0 && std::isfinite(canonical_box_size), op,
              ": canonical_box_size must be positive, got ", canonical_box_size);
}

}  // namespace d2ext
