#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>

#include "box_jitter.h"

namespace d2ext {
namespace {

at::Tensor box_jitter_cpu(const at::Tensor& boxes, const at::Tensor& rand, double prob,
                          double ratio) {
  constexpr const char* op = "d2ext::box_jitter";
  check_box_jitter_inputs(boxes, rand, prob, ratio);
  TORCH_CHECK(boxes.is_cpu(), op, ": CPU kernel called with ", boxes.device());
  const auto b = boxes.contiguous();
  const auto r = rand.contiguous();
  auto out = at::empty_like(b);
  const int64_t n = b.size(0);
  std::atomic<int> flags{0};
  AT_DISPATCH_FLOATING_TYPES(b.scalar_type(), "box_jitter_cpu", [&] {
    const scalar_t* bp = b.const_data_ptr<scalar_t>();
    const scalar_t* rp = r.const_data_ptr<scalar_t>();
    scalar_t* op_ = out.mutable_data_ptr<scalar_t>();
    const auto p = static_cast<scalar_t>(prob);
    const auto q = static_cast<scalar_t>(ratio);
    at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
      int local = 0;
      for (int64_t i = begin; i < end; ++i) {
        local |= box_jitter_one(bp + 4 * i, rp + 5 * i, p, q, op_ + 4 * i);
      }
      if (local) flags.fetch_or(local);
    });
  });
  check_flags(op, flags.load());
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(d2ext, CPU, m) { m.impl("box_jitter", &box_jitter_cpu); }

}  // namespace d2ext
