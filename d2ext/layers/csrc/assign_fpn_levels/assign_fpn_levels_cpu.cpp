#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>

#include "assign_fpn_levels.h"

namespace d2ext {
namespace {

// Runs `fn(box_ptr, flags_ptr) -> level` over every box in parallel, then checks the flags.
template <typename scalar_t, typename Fn>
at::Tensor map_boxes_cpu(const char* op, const at::Tensor& boxes, Fn fn) {
  const auto b = boxes.contiguous();
  const int64_t n = b.size(0);
  auto out = at::empty({n}, b.options().dtype(at::kLong));
  const scalar_t* bp = b.const_data_ptr<scalar_t>();
  int64_t* op_ = out.mutable_data_ptr<int64_t>();
  std::atomic<int> flags{0};
  at::parallel_for(0, n, 8192, [&](int64_t begin, int64_t end) {
    int local = 0;
    for (int64_t i = begin; i < end; ++i) op_[i] = fn(bp + 4 * i, &local);
    if (local) flags.fetch_or(local);
  });
  check_flags(op, flags.load());
  return out;
}

at::Tensor assign_fpn_levels_threshold_cpu(const at::Tensor& boxes,
                                           c10::ArrayRef<double> thresholds, bool inclusive,
                                           bool clamp_top) {
  constexpr const char* op = "d2ext::assign_fpn_levels_threshold";
  check_boxes(op, boxes);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "assign_fpn_levels_threshold_cpu", [&] {
    const auto areas = soco_area_thresholds(make_thresholds<scalar_t>(op, thresholds));
    const scalar_t extra = soco_extra<scalar_t>(inclusive);
    const int64_t top = soco_top(areas.count, clamp_top);
    out = map_boxes_cpu<scalar_t>(op, boxes, [=](const scalar_t* box, int* flags) {
      return level_soco_one(box, areas, extra, top, flags);
    });
  });
  return out;
}

at::Tensor assign_fpn_levels_log_cpu(const at::Tensor& boxes, int64_t min_level, int64_t max_level,
                                     double canonical_box_size, int64_t canonical_level) {
  constexpr const char* op = "d2ext::assign_fpn_levels_log";
  check_boxes(op, boxes);
  check_log_rule_args(op, min_level, max_level, canonical_box_size);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "assign_fpn_levels_log_cpu", [&] {
    const auto thr = log_rule_area_thresholds<scalar_t>(min_level, max_level, canonical_box_size,
                                                        canonical_level);
    out = map_boxes_cpu<scalar_t>(op, boxes, [=](const scalar_t* box, int* flags) {
      return level_of_box(box, scalar_t(0), thr, flags);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(d2ext, CPU, m) {
  m.impl("assign_fpn_levels_threshold", &assign_fpn_levels_threshold_cpu);
  m.impl("assign_fpn_levels_log", &assign_fpn_levels_log_cpu);
}

}  // namespace d2ext
