#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "assign_fpn_levels.h"

namespace d2ext {
namespace {

template <typename T, typename Fn>
__global__ void map_boxes_kernel(int64_t n, const T* boxes, int64_t* out, int* flags, Fn fn) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int local = 0;
    out[i] = fn(boxes + 4 * i, &local);
    if (local) atomicOr(flags, local);
  }
}

// Runs `fn(box_ptr, flags_ptr) -> level` over every box on the GPU, then checks the flags.
template <typename scalar_t, typename Fn>
at::Tensor map_boxes_cuda(const char* op, const at::Tensor& boxes, Fn fn) {
  c10::cuda::CUDAGuard guard(boxes.device());
  const auto b = boxes.contiguous();
  const int64_t n = b.size(0);
  auto out = at::empty({n}, b.options().dtype(at::kLong));
  if (n == 0) return out;
  auto flags = at::zeros({1}, b.options().dtype(at::kInt));
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 65535));
  map_boxes_kernel<<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      n, b.const_data_ptr<scalar_t>(), out.mutable_data_ptr<int64_t>(),
      flags.mutable_data_ptr<int>(), fn);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  check_flags(op, flags.item<int>());
  return out;
}

// Area thresholds are computed on the host, so CPU and CUDA agree exactly.
template <typename T>
struct SocoRule {
  Thresholds<T> areas;
  T extra;
  int64_t top;
  __device__ int64_t operator()(const T* box, int* flags) const {
    return level_soco_one(box, areas, extra, top, flags);
  }
};

template <typename T>
struct LogRule {
  Thresholds<T> areas;
  __device__ int64_t operator()(const T* box, int* flags) const {
    return level_of_box(box, T(0), areas, flags);
  }
};

at::Tensor assign_fpn_levels_threshold_cuda(const at::Tensor& boxes,
                                            c10::ArrayRef<double> thresholds, bool inclusive,
                                            bool clamp_top) {
  constexpr const char* op = "d2ext::assign_fpn_levels_threshold";
  check_boxes(op, boxes);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "assign_fpn_levels_threshold_cuda", [&] {
    const auto areas = soco_area_thresholds(make_thresholds<scalar_t>(op, thresholds));
    SocoRule<scalar_t> rule{areas, soco_extra<scalar_t>(inclusive),
                            soco_top(areas.count, clamp_top)};
    out = map_boxes_cuda<scalar_t>(op, boxes, rule);
  });
  return out;
}

at::Tensor assign_fpn_levels_log_cuda(const at::Tensor& boxes, int64_t min_level, int64_t max_level,
                                      double canonical_box_size, int64_t canonical_level) {
  constexpr const char* op = "d2ext::assign_fpn_levels_log";
  check_boxes(op, boxes);
  check_log_rule_args(op, min_level, max_level, canonical_box_size);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "assign_fpn_levels_log_cuda", [&] {
    LogRule<scalar_t> rule{log_rule_area_thresholds<scalar_t>(min_level, max_level,
                                                              canonical_box_size, canonical_level)};
    out = map_boxes_cuda<scalar_t>(op, boxes, rule);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(d2ext, CUDA, m) {
  m.impl("assign_fpn_levels_threshold", &assign_fpn_levels_threshold_cuda);
  m.impl("assign_fpn_levels_log", &assign_fpn_levels_log_cuda);
}

}  // namespace d2ext
