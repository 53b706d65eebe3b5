// CPU operators d2ext::felzenszwalb and d2ext::selective_search over selective_search.h.
// Region proposal runs in data loading / preprocessing on CPU, so there is no CUDA kernel.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>

#include "selective_search.h"

namespace d2ext {
namespace {

void check_image(const char* op, const at::Tensor& image, bool rgb) {
  TORCH_CHECK(image.device().is_cpu(), op, ": image must be on the CPU, got ", image.device());
  TORCH_CHECK(image.scalar_type() == at::kByte, op, ": image must be uint8, got ",
              image.scalar_type());
  TORCH_CHECK(image.dim() == 3, op, ": image must be HxWxC (channels last), got shape ",
              image.sizes());
  if (rgb) {
    TORCH_CHECK(image.size(2) == 3, op, ": image must be RGB (3 channels), got ", image.size(2));
  } else {
    TORCH_CHECK(image.size(2) >= 1, op, ": image has no channels");
  }
  TORCH_CHECK(image.size(0) >= 1 && image.size(1) >= 1, op, ": image is empty (", image.size(0),
              "x", image.size(1), ")");
  // Edge indices are 32-bit: 4 edges per pixel must fit.
  TORCH_CHECK(image.size(0) * image.size(1) < (int64_t(1) << 30), op, ": image too large (",
              image.size(0), "x", image.size(1), "); downscale it first");
}

void check_params(const char* op, double scale, double sigma, int64_t min_size) {
  TORCH_CHECK(std::isfinite(scale) && scale > 0, op, ": scale must be > 0, got ", scale);
  TORCH_CHECK(std::isfinite(sigma) && sigma >= 0 && sigma <= 100, op,
              ": sigma must be in [0, 100], got ", sigma);
  TORCH_CHECK(min_size >= 0, op, ": min_size must be >= 0, got ", min_size);
}

at::Tensor felzenszwalb_cpu(const at::Tensor& image, double scale, double sigma, int64_t min_size) {
  constexpr const char* op = "d2ext::felzenszwalb";
  check_image(op, image, /*rgb=*/false);
  check_params(op, scale, sigma, min_size);
  const auto img = image.contiguous();
  auto labels = at::empty({img.size(0), img.size(1)}, img.options().dtype(at::kLong));
  selective_search::felzenszwalb(img.const_data_ptr<uint8_t>(), img.size(0), img.size(1),
                                 img.size(2), scale, sigma, min_size,
                                 labels.mutable_data_ptr<int64_t>());
  return labels;
}

at::Tensor selective_search_cpu(const at::Tensor& image, double scale, double sigma,
                                int64_t min_size) {
  constexpr const char* op = "d2ext::selective_search";
  check_image(op, image, /*rgb=*/true);
  check_params(op, scale, sigma, min_size);
  const auto img = image.contiguous();
  const auto regions = selective_search::selective_search(
      img.const_data_ptr<uint8_t>(), img.size(0), img.size(1), scale, sigma, min_size);
  auto out = at::empty({static_cast<int64_t>(regions.size()), 4}, img.options().dtype(at::kLong));
  int64_t* o = out.mutable_data_ptr<int64_t>();
  for (const auto& r : regions) {
    *o++ = r.min_x;
    *o++ = r.min_y;
    *o++ = r.max_x - r.min_x;
    *o++ = r.max_y - r.min_y;
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(d2ext, CPU, m) {
  m.impl("felzenszwalb", &felzenszwalb_cpu);
  m.impl("selective_search", &selective_search_cpu);
}

}  // namespace d2ext
