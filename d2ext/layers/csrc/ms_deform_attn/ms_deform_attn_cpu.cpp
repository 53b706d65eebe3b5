// CPU kernels of d2ext::ms_deform_attn and its backward. The forward runs one (batch, query,
// head) per task; the backward runs one (batch, head) per task, so each task owns its slice
// value[b, :, h, :] of the value gradient and no two threads add into the same place. The
// loops over the D channels of a head are written so the compiler vectorises them.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "ms_deform_attn.h"

namespace d2ext {
namespace {

constexpr const char* kOp = "d2ext::ms_deform_attn";
constexpr const char* kBackwardOp = "d2ext::ms_deform_attn_backward";

// out[k] += c0 r0[k] + c1 r1[k] + c2 r2[k] + c3 r3[k] for k < d
template <typename T>
inline void accumulate4(T* __restrict__ out, const T* __restrict__ r0, const T* __restrict__ r1,
                        const T* __restrict__ r2, const T* __restrict__ r3, T c0, T c1, T c2, T c3,
                        int64_t d) {
  for (int64_t k = 0; k < d; ++k) out[k] += c0 * r0[k] + c1 * r1[k] + c2 * r2[k] + c3 * r3[k];
}

// g[i] = <go, ri> for the four rows. `omp simd reduction` lets the compiler split each sum
// into vector lanes (a reassociation it may not make on its own).
template <typename T>
inline void dot4(const T* __restrict__ go, const T* __restrict__ r0, const T* __restrict__ r1,
                 const T* __restrict__ r2, const T* __restrict__ r3, int64_t d, T g[4]) {
  T t0 = 0, t1 = 0, t2 = 0, t3 = 0;
#pragma omp simd reduction(+ : t0, t1, t2, t3)
  for (int64_t k = 0; k < d; ++k) {
    t0 += go[k] * r0[k];
    t1 += go[k] * r1[k];
    t2 += go[k] * r2[k];
    t3 += go[k] * r3[k];
  }
  g[0] = t0;
  g[1] = t1;
  g[2] = t2;
  g[3] = t3;
}

// out[k] += c x[k] for k < d
template <typename T>
inline void axpy(T* __restrict__ out, const T* __restrict__ x, T c, int64_t d) {
  for (int64_t k = 0; k < d; ++k) out[k] += c * x[k];
}

// Sizes of one call and the first value index of every level.
struct Dims {
  int64_t n, s, m, d, q, l, p;
  std::vector<int64_t> heights, widths, starts;

  Dims(const at::Tensor& value, const at::Tensor& shapes_cpu, const at::Tensor& locations)
      : n(value.size(0)),
        s(value.size(1)),
        m(value.size(2)),
        d(value.size(3)),
        q(locations.size(1)),
        l(locations.size(3)),
        p(locations.size(4)) {
    const int64_t* hw = shapes_cpu.const_data_ptr<int64_t>();
    int64_t start = 0;
    for (int64_t i = 0; i < l; ++i) {
      heights.push_back(hw[2 * i]);
      widths.push_back(hw[2 * i + 1]);
      starts.push_back(start);
      start += hw[2 * i] * hw[2 * i + 1];
    }
  }
};

// The four value rows of a sample (a row of zeros for neighbours outside the map) and their
// coefficients a * weight (0 outside).
template <typename T>
inline void corner_rows(const BilinearCorners<T>& c, const T* level_value, int64_t row_stride,
                        const T* zeros, T a, const T* rows[4], T coef[4]) {
  for (int k = 0; k < 4; ++k) {
    const bool inside = c.index[k] >= 0;
    rows[k] = inside ? level_value + c.index[k] * row_stride : zeros;
    coef[k] = inside ? a * c.weight[k] : T(0);
  }
}

template <typename T>
void forward_kernel(const Dims& dm, const T* value, const T* loc, const T* attn, T* out) {
  const int64_t lp = dm.l * dm.p, row_stride = dm.m * dm.d;
  const std::vector<T> zeros(dm.d, T(0));
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, lp * dm.d));
  at::parallel_for(0, dm.n * dm.q * dm.m, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {  // i = (batch * Q + query) * M + head
      const int64_t head = i % dm.m, batch = i / (dm.q * dm.m);
      T* acc = out + i * dm.d;
      std::fill(acc, acc + dm.d, T(0));
      const T* li = loc + i * lp * 2;
      const T* ai = attn + i * lp;
      for (int64_t lvl = 0; lvl < dm.l; ++lvl) {
        const T* v = value + (batch * dm.s + dm.starts[lvl]) * row_stride + head * dm.d;
        const int64_t h = dm.heights[lvl], w = dm.widths[lvl];
        for (int64_t pt = lvl * dm.p; pt < (lvl + 1) * dm.p; ++pt) {
          BilinearCorners<T> c;
          if (!bilinear_corners(li[2 * pt], li[2 * pt + 1], h, w, c)) continue;
          const T* rows[4];
          T coef[4];
          corner_rows(c, v, row_stride, zeros.data(), ai[pt], rows, coef);
          accumulate4(acc, rows[0], rows[1], rows[2], rows[3], coef[0], coef[1], coef[2], coef[3],
                      dm.d);
        }
      }
    }
  });
}

template <typename T>
void backward_kernel(const Dims& dm, const T* grad_out, const T* value, const T* loc, const T* attn,
                     T* grad_value, T* grad_loc, T* grad_attn) {
  const int64_t lp = dm.l * dm.p, row_stride = dm.m * dm.d;
  const std::vector<T> zeros(dm.d, T(0));
  // One (batch, head) per task: the task is the only writer of grad_value[batch, :, head, :].
  at::parallel_for(0, dm.n * dm.m, 1, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const int64_t batch = j / dm.m, head = j % dm.m;
      for (int64_t query = 0; query < dm.q; ++query) {
        const int64_t i = (batch * dm.q + query) * dm.m + head;
        const T* go = grad_out + i * dm.d;
        const T* li = loc + i * lp * 2;
        const T* ai = attn + i * lp;
        T* gli = grad_loc + i * lp * 2;
        T* gai = grad_attn + i * lp;
        for (int64_t lvl = 0; lvl < dm.l; ++lvl) {
          const int64_t offset = (batch * dm.s + dm.starts[lvl]) * row_stride + head * dm.d;
          const T* v = value + offset;
          T* gv = grad_value + offset;
          const int64_t h = dm.heights[lvl], w = dm.widths[lvl];
          for (int64_t pt = lvl * dm.p; pt < (lvl + 1) * dm.p; ++pt) {
            BilinearCorners<T> c;
            if (!bilinear_corners(li[2 * pt], li[2 * pt + 1], h, w, c)) continue;  // grads 0
            const T a = ai[pt];
            const T* rows[4];
            T coef[4], g[4];
            corner_rows(c, v, row_stride, zeros.data(), a, rows, coef);
            dot4(go, rows[0], rows[1], rows[2], rows[3], dm.d, g);
            sample_gradients(c, g, a, h, w, gai[pt], gli[2 * pt], gli[2 * pt + 1]);
            for (int k = 0; k < 4; ++k) {
              if (c.index[k] >= 0) axpy(gv + c.index[k] * row_stride, go, coef[k], dm.d);
            }
          }
        }
      }
    }
  });
}

at::Tensor ms_deform_attn_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                              const at::Tensor& sampling_locations,
                              const at::Tensor& attention_weights) {
  check_ms_deform_attn_inputs(kOp, value, spatial_shapes, sampling_locations, attention_weights);
  TORCH_CHECK(value.is_cpu(), kOp, ": CPU kernel called with ", value.device());
  const auto shapes = spatial_shapes.contiguous();
  check_ms_deform_attn_levels(kOp, shapes, value.size(1));
  const Dims dm(value, shapes, sampling_locations);
  const auto v = value.contiguous();
  const auto loc = sampling_locations.contiguous();
  const auto attn = attention_weights.contiguous();
  auto out = at::empty({dm.n, dm.q, dm.m * dm.d}, v.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "ms_deform_attn_cpu", [&] {
    forward_kernel<scalar_t>(dm, v.const_data_ptr<scalar_t>(), loc.const_data_ptr<scalar_t>(),
                             attn.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  check_ms_deform_attn_inputs(kBackwardOp, value, spatial_shapes, sampling_locations,
                              attention_weights);
  check_ms_deform_attn_grad_output(kBackwardOp, grad_output, value, sampling_locations);
  TORCH_CHECK(value.is_cpu(), kBackwardOp, ": CPU kernel called with ", value.device());
  const auto shapes = spatial_shapes.contiguous();
  check_ms_deform_attn_levels(kBackwardOp, shapes, value.size(1));
  const Dims dm(value, shapes, sampling_locations);
  const auto go = grad_output.contiguous();
  const auto v = value.contiguous();
  const auto loc = sampling_locations.contiguous();
  const auto attn = attention_weights.contiguous();
  auto grad_value = at::zeros_like(v);
  auto grad_loc = at::zeros_like(loc);
  auto grad_attn = at::zeros_like(attn);
  if (go.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
      backward_kernel<scalar_t>(dm, go.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(),
                                loc.const_data_ptr<scalar_t>(), attn.const_data_ptr<scalar_t>(),
                                grad_value.mutable_data_ptr<scalar_t>(),
                                grad_loc.mutable_data_ptr<scalar_t>(),
                                grad_attn.mutable_data_ptr<scalar_t>());
    });
  }
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace

TORCH_LIBRARY_IMPL(d2ext, CPU, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_cpu);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cpu);
}

}  // namespace d2ext
