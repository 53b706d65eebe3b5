// Per-box arithmetic of the two FPN level rules, shared by the CPU and CUDA kernels, and the
// host-side set-up of their thresholds. Results equal, box for box, the pure-torch references
// in d2ext/layers/assign_fpn_levels.py (and detectron2's assign_boxes_to_levels).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "../checks.h"

namespace d2ext {

constexpr int kMaxLevels = 8;

// The eps detectron2 adds inside log2 (detectron2/modeling/poolers.py, upstream commit
// a59f0563; older releases used sys.float_info.epsilon). Rounded to T before the addition,
// as torch rounds a Python scalar to the tensor's dtype.
constexpr double kDetectron2Eps = 1e-8;

// Increasing bounds; a box's level is the number of bounds it exceeds (SoCo) or reaches (log).
// Entries past `count` are +inf, so per-box loops run a fixed kMaxLevels times (unrolled and
// vectorised across boxes by the compiler); an infinite area is rejected as bad input anyway.
template <typename T>
struct Thresholds {
  T value[kMaxLevels];
  int count;
};

template <typename T>
inline Thresholds<T> empty_thresholds(int count) {
  Thresholds<T> thr{};
  thr.count = count;
  for (int k = 0; k < kMaxLevels; ++k) thr.value[k] = std::numeric_limits<T>::infinity();
  return thr;
}

// The area w * h a rule measures (inclusive widths x2 - x1 + 1 when extra = 1); raises flags
// for NaN / Inf (a non-finite coordinate always makes the area NaN or Inf) and for negative
// areas. Branch-free.
template <typename T>
D2EXT_HOST_DEVICE inline T checked_area(const T* box, T extra, int* flags) {
  const T area = (box[2] - box[0] + extra) * (box[3] - box[1] + extra);
  *flags |= (is_finite(area) ? 0 : kNonFinite) | (area < T(0) ? kNegativeArea : 0);
  return area;
}

// Both rules are non-decreasing step functions of the area (each of their steps -- sqrt,
// division by a positive constant, adding eps, log2, adding a constant, floor, clamp -- is
// monotone), so each is fully described by the smallest area reaching each level. Those are
// found once per call by bisection over the bit patterns of non-negative T (ordered like their
// values) with the scalar rule itself; a box then costs one multiplication and a few
// comparisons, and gets exactly the level the scalar rule gives it.
template <typename T, typename LevelFn>
inline Thresholds<T> smallest_areas(int count, LevelFn level_of_area) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  const T inf = std::numeric_limits<T>::infinity();
  Bits top;
  std::memcpy(&top, &inf, sizeof(T));
  auto level_of = [&](Bits bits) {
    T area;
    std::memcpy(&area, &bits, sizeof(T));
    return level_of_area(area);
  };
  Thresholds<T> thr = empty_thresholds<T>(count);
  for (int k = 1; k <= count; ++k) {
    Bits lo = 0, hi = top;  // smallest pattern in [0, +inf] with level >= k (+inf: never)
    while (lo < hi) {
      const Bits mid = lo + (hi - lo) / 2;
      if (level_of(mid) >= k) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    std::memcpy(&thr.value[k - 1], &lo, sizeof(T));
  }
  return thr;
}

// SoCo: s = sqrt(area) rounded to T; the level is the first j with s <= bounds[j], i.e. the
// number of bounds below s (before mapping "above every bound" to -1 or the top level).
template <typename T>
inline Thresholds<T> soco_area_thresholds(const Thresholds<T>& bounds) {
  return smallest_areas<T>(bounds.count, [&](T area) {
    const T s = static_cast<T>(std::sqrt(area));
    int level = 0;
    for (int j = 0; j < bounds.count; ++j) level += s > bounds.value[j];
    return level;
  });
}

// Detectron2's rule for one area, evaluated step by step in T as torch evaluates it:
// floor(canonical_level + log2(sqrt(area) / canonical_box_size + eps)), clamped, - min_level.
template <typename T>
inline int64_t level_log_scalar(T area, int64_t min_level, int64_t max_level, T canonical_box_size,
                                T canonical_level) {
  const T size = static_cast<T>(std::sqrt(area));
  const T ratio = size / canonical_box_size + static_cast<T>(kDetectron2Eps);
  const T log_ratio = static_cast<T>(std::log2(ratio));
  const T sum = canonical_level + log_ratio;
  T level = static_cast<T>(std::floor(sum));
  level = std::min(std::max(level, static_cast<T>(min_level)), static_cast<T>(max_level));
  return static_cast<int64_t>(level) - min_level;
}

template <typename T>
inline Thresholds<T> log_rule_area_thresholds(int64_t min_level, int64_t max_level,
                                              double canonical_box_size, int64_t canonical_level) {
  const T cbs = static_cast<T>(canonical_box_size);
  const T cl = static_cast<T>(canonical_level);
  return smallest_areas<T>(static_cast<int>(max_level - min_level), [&](T area) {
    return level_log_scalar(area, min_level, max_level, cbs, cl);
  });
}

// The level of one box: how many of the smallest areas its area reaches.
template <typename T>
D2EXT_HOST_DEVICE inline int64_t level_of_box(const T* box, T extra, const Thresholds<T>& areas,
                                              int* flags) {
  const T area = checked_area(box, extra, flags);
  int64_t level = 0;
  for (int k = 0; k < kMaxLevels; ++k) level += area >= areas.value[k];
  return level;
}

// SoCo's rule for one box: `extra` is 1 for SoCo's inclusive widths ((x2 - x1) + 1, as the
// reference computes it) and 0 otherwise; boxes above every bound get `top` (-1, or the top
// level with clamp_top).
template <typename T>
D2EXT_HOST_DEVICE inline int64_t level_soco_one(const T* box, const Thresholds<T>& areas, T extra,
                                                int64_t top, int* flags) {
  const int64_t level = level_of_box(box, extra, areas, flags);
  return level + (level == areas.count) * (top - level);  // branch-free select
}

// The values level_soco_one takes for SoCo's options.
template <typename T>
inline T soco_extra(bool inclusive) {
  return inclusive ? T(1) : T(0);
}
inline int64_t soco_top(int count, bool clamp_top) { return clamp_top ? count - 1 : -1; }

template <typename T>
inline Thresholds<T> make_thresholds(const char* op, c10::ArrayRef<double> values) {
  TORCH_CHECK(!values.empty() && values.size() <= kMaxLevels, op, ": between 1 and ", kMaxLevels,
              " thresholds are supported, got ", values.size());
  Thresholds<T> thr = empty_thresholds<T>(static_cast<int>(values.size()));
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
  TORCH_CHECK(min_level <= max_level, op, ": min_level (", min_level, ") > max_level (", max_level,
              ")");
  TORCH_CHECK(max_level - min_level < kMaxLevels, op, ": at most ", kMaxLevels,
              " levels are supported, got ", max_level - min_level + 1);
  TORCH_CHECK(canonical_box_size > 0 && std::isfinite(canonical_box_size), op,
              ": canonical_box_size must be positive, got ", canonical_box_size);
}

}  // namespace d2ext
