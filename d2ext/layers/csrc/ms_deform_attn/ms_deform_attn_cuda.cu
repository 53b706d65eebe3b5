// CUDA kernels of d2ext::ms_deform_attn and its backward, one thread per (batch, query, head,
// channel) as in the authors' kernel, so neighbouring threads read neighbouring channels of a
// value row. The backward adds into the value gradient with atomics (several samples share a
// pixel); the location and attention-weight gradients, sums over the D channels of a head, are
// reduced across the head's threads with warp shuffles before one atomic add per warp segment.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <ATen/cuda/Atomic.cuh>

#include "ms_deform_attn.h"

namespace d2ext {
namespace {

constexpr const char* kOp = "d2ext::ms_deform_attn";
constexpr const char* kBackwardOp = "d2ext::ms_deform_attn_backward";
constexpr int kThreads = 256;  // a multiple of the warp size (the backward's segments need it)

// Splits a thread index into (i = (batch * Q + query) * M + head, channel) and the batch / head.
struct ThreadIndex {
  int64_t i, channel, batch, head;

  __device__ ThreadIndex(int64_t idx, int64_t q, int64_t m, int64_t d)
      : i(idx / d), channel(idx % d), batch(idx / d / (q * m)), head(idx / d % m) {}
};

template <typename T>
__global__ void ms_deform_attn_forward_kernel(int64_t total, const T* __restrict__ value,
                                              const int64_t* __restrict__ shapes,
                                              const T* __restrict__ loc, const T* __restrict__ attn,
                                              T* __restrict__ out, int64_t s, int64_t q, int64_t m,
                                              int64_t d, int64_t l, int64_t p) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const ThreadIndex t(idx, q, m, d);
    const int64_t row_stride = m * d;
    const T* li = loc + t.i * l * p * 2;
    const T* ai = attn + t.i * l * p;
    T acc = 0;
    int64_t start = 0;
    for (int64_t lvl = 0; lvl < l; ++lvl) {
      const int64_t h = shapes[2 * lvl], w = shapes[2 * lvl + 1];
      const T* v = value + (t.batch * s + start) * row_stride + t.head * d + t.channel;
      for (int64_t pt = lvl * p; pt < (lvl + 1) * p; ++pt) {
        BilinearCorners<T> c;
        if (!bilinear_corners(li[2 * pt], li[2 * pt + 1], h, w, c)) continue;
        T sample = 0;
        for (int k = 0; k < 4; ++k) {
          if (c.index[k] >= 0) sample += c.weight[k] * v[c.index[k] * row_stride];
        }
        acc += ai[pt] * sample;
      }
      start += h * w;
    }
    out[idx] = acc;
  }
}

// Sum of x over the kSegment consecutive lanes of a segment, valid in the segment's first lane.
// Every lane of the warp must call it.
template <int kSegment, typename T>
__device__ inline T segment_sum(T x) {
#pragma unroll
  for (int offset = kSegment / 2; offset > 0; offset /= 2) {
    x += __shfl_down_sync(0xffffffffu, x, offset, kSegment);
  }
  return x;
}

// kSegment: lanes that belong to one head and are reduced together (D when D divides 32, 32
// when 32 divides D, 1 otherwise). Threads past `total` take part in the shuffles with zeros.
template <typename T, int kSegment>
__global__ void ms_deform_attn_backward_kernel(int64_t total, const T* __restrict__ grad_out,
                                               const T* __restrict__ value,
                                               const int64_t* __restrict__ shapes,
                                               const T* __restrict__ loc,
                                               const T* __restrict__ attn, T* grad_value,
                                               T* grad_loc, T* grad_attn, int64_t s, int64_t q,
                                               int64_t m, int64_t d, int64_t l, int64_t p) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const bool active = idx < total;
  const bool leader = active && (threadIdx.x % kSegment == 0);
  const ThreadIndex t(active ? idx : 0, q, m, d);
  const int64_t row_stride = m * d;
  const T* li = loc + t.i * l * p * 2;
  const T* ai = attn + t.i * l * p;
  const T go = active ? grad_out[idx] : T(0);
  int64_t start = 0;
  for (int64_t lvl = 0; lvl < l; ++lvl) {
    const int64_t h = shapes[2 * lvl], w = shapes[2 * lvl + 1];
    const int64_t offset = (t.batch * s + start) * row_stride + t.head * d + t.channel;
    for (int64_t pt = lvl * p; pt < (lvl + 1) * p; ++pt) {
      BilinearCorners<T> c;
      T grad_a = 0, grad_x = 0, grad_y = 0;
      if (active && bilinear_corners(li[2 * pt], li[2 * pt + 1], h, w, c)) {
        const T a = ai[pt];
        T g[4];
        for (int k = 0; k < 4; ++k) {
          g[k] = 0;
          if (c.index[k] >= 0) {
            g[k] = go * value[offset + c.index[k] * row_stride];
            gpuAtomicAdd(grad_value + offset + c.index[k] * row_stride, a * c.weight[k] * go);
          }
        }
        sample_gradients(c, g, a, h, w, grad_a, grad_x, grad_y);
      }
      grad_a = segment_sum<kSegment>(grad_a);
      grad_x = segment_sum<kSegment>(grad_x);
      grad_y = segment_sum<kSegment>(grad_y);
      if (leader) {
        gpuAtomicAdd(grad_attn + t.i * l * p + pt, grad_a);
        gpuAtomicAdd(grad_loc + (t.i * l * p + pt) * 2, grad_x);
        gpuAtomicAdd(grad_loc + (t.i * l * p + pt) * 2 + 1, grad_y);
      }
    }
    start += h * w;
  }
}

// Checks everything, including the level sizes (one small copy of spatial_shapes to the host).
void check_cuda_inputs(const char* op, const at::Tensor& value, const at::Tensor& spatial_shapes,
                       const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  check_ms_deform_attn_inputs(op, value, spatial_shapes, sampling_locations, attention_weights);
  TORCH_CHECK(value.is_cuda(), op, ": CUDA kernel called with ", value.device());
  check_ms_deform_attn_levels(op, spatial_shapes.to(at::kCPU).contiguous(), value.size(1));
}

int blocks_for(int64_t total) {
  return static_cast<int>(std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 30));
}

at::Tensor ms_deform_attn_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                               const at::Tensor& sampling_locations,
                               const at::Tensor& attention_weights) {
  check_cuda_inputs(kOp, value, spatial_shapes, sampling_locations, attention_weights);
  c10::cuda::CUDAGuard guard(value.device());
  const auto v = value.contiguous();
  const auto shapes = spatial_shapes.contiguous();
  const auto loc = sampling_locations.contiguous();
  const auto attn = attention_weights.contiguous();
  const int64_t n = v.size(0), s = v.size(1), m = v.size(2), d = v.size(3);
  const int64_t q = loc.size(1), l = loc.size(3), p = loc.size(4);
  auto out = at::empty({n, q, m * d}, v.options());
  const int64_t total = out.numel();
  if (total == 0) return out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "ms_deform_attn_cuda", [&] {
    ms_deform_attn_forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        total, v.const_data_ptr<scalar_t>(), shapes.const_data_ptr<int64_t>(),
        loc.const_data_ptr<scalar_t>(), attn.const_data_ptr<scalar_t>(),
        out.mutable_data_ptr<scalar_t>(), s, q, m, d, l, p);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

template <typename T, int kSegment>
void launch_backward(int64_t total, cudaStream_t stream, const T* grad_out, const T* value,
                     const int64_t* shapes, const T* loc, const T* attn, T* grad_value, T* grad_loc,
                     T* grad_attn, int64_t s, int64_t q, int64_t m, int64_t d, int64_t l,
                     int64_t p) {
  ms_deform_attn_backward_kernel<T, kSegment><<<blocks_for(total), kThreads, 0, stream>>>(
      total, grad_out, value, shapes, loc, attn, grad_value, grad_loc, grad_attn, s, q, m, d, l, p);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  check_cuda_inputs(kBackwardOp, value, spatial_shapes, sampling_locations, attention_weights);
  check_ms_deform_attn_grad_output(kBackwardOp, grad_output, value, sampling_locations);
  c10::cuda::CUDAGuard guard(value.device());
  const auto go = grad_output.contiguous();
  const auto v = value.contiguous();
  const auto shapes = spatial_shapes.contiguous();
  const auto loc = sampling_locations.contiguous();
  const auto attn = attention_weights.contiguous();
  const int64_t s = v.size(1), m = v.size(2), d = v.size(3);
  const int64_t q = loc.size(1), l = loc.size(3), p = loc.size(4);
  auto grad_value = at::zeros_like(v);
  auto grad_loc = at::zeros_like(loc);
  auto grad_attn = at::zeros_like(attn);
  const int64_t total = go.numel();
  if (total == 0) return {grad_value, grad_loc, grad_attn};
  // one thread per element, no grid-stride loop (the segments need every thread's lane)
  TORCH_CHECK(total <= static_cast<int64_t>(1 << 30) * kThreads, kBackwardOp,
              ": too many elements for one launch (", total, ")");
  // Every (batch, query, head) owns d consecutive thread indices; blocks start at multiples
  // of kThreads, so segments of `segment` lanes never straddle two heads.
  const int segment = d % 32 == 0 ? 32 : (32 % d == 0 ? static_cast<int>(d) : 1);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
    const auto args = std::make_tuple(
        total, static_cast<cudaStream_t>(stream), go.const_data_ptr<scalar_t>(),
        v.const_data_ptr<scalar_t>(), shapes.const_data_ptr<int64_t>(),
        loc.const_data_ptr<scalar_t>(), attn.const_data_ptr<scalar_t>(),
        grad_value.mutable_data_ptr<scalar_t>(), grad_loc.mutable_data_ptr<scalar_t>(),
        grad_attn.mutable_data_ptr<scalar_t>(), s, q, m, d, l, p);
    switch (segment) {
      case 32:
        std::apply(launch_backward<scalar_t, 32>, args);
        break;
      case 16:
        std::apply(launch_backward<scalar_t, 16>, args);
        break;
      case 8:
        std::apply(launch_backward<scalar_t, 8>, args);
        break;
      case 4:
        std::apply(launch_backward<scalar_t, 4>, args);
        break;
      case 2:
        std::apply(launch_backward<scalar_t, 2>, args);
        break;
      default:
        std::apply(launch_backward<scalar_t, 1>, args);
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace

TORCH_LIBRARY_IMPL(d2ext, CUDA, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_cuda);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cuda);
}

}  // namespace d2ext
