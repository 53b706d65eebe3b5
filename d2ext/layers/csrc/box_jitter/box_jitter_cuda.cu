#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "box_jitter.h"

namespace d2ext {
namespace {

template <typename T>
__global__ void box_jitter_kernel(int64_t n, const T* boxes, const T* rand, T prob, T ratio, T* out,
                                  int* flags) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int f = box_jitter_one(boxes + 4 * i, rand + 5 * i, prob, ratio, out + 4 * i);
    if (f) atomicOr(flags, f);
  }
}

at::Tensor box_jitter_cuda(const at::Tensor& boxes, const at::Tensor& rand, double prob,
                           double ratio) {
  check_box_jitter_inputs(boxes, rand, prob, ratio);
  c10::cuda::CUDAGuard guard(boxes.device());
  const auto b = boxes.contiguous();
  const auto r = rand.contiguous();
  auto out = at::empty_like(b);
  const int64_t n = b.size(0);
  if (n == 0) return out;
  auto flags = at::zeros({1}, b.options().dtype(at::kInt));
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 65535));
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(b.scalar_type(), "box_jitter_cuda", [&] {
    box_jitter_kernel<scalar_t><<<blocks, threads, 0, stream>>>(
        n, b.const_data_ptr<scalar_t>(), r.const_data_ptr<scalar_t>(), static_cast<scalar_t>(prob),
        static_cast<scalar_t>(ratio), out.mutable_data_ptr<scalar_t>(),
        flags.mutable_data_ptr<int>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  check_flags("d2ext::box_jitter", flags.item<int>());
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(d2ext, CUDA, m) { m.impl("box_jitter", &box_jitter_cuda); }

}  // namespace d2ext
