// Input checks shared by the CPU and CUDA kernels of every d2ext operator.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#ifdef __CUDACC__
#define D2EXT_HOST_DEVICE __host__ __device__
#else
#define D2EXT_HOST_DEVICE
#endif

namespace d2ext {

// True for every value but NaN and +-Inf. Branch-free (`&`, not `&&`) so per-box loops over
// random data do not pay for mispredicted branches and can be vectorised.
template <typename T>
D2EXT_HOST_DEVICE inline bool is_finite(T v) {
  return (v == v) & (v - v == T(0));
}

// c ? a : b without a branch on the host (a coin flip per box defeats branch prediction);
// bit-exact, as it moves bits rather than computing with them.
template <typename T>
D2EXT_HOST_DEVICE inline T select(bool c, T a, T b) {
#ifdef __CUDA_ARCH__
  return c ? a : b;
#else
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  U ua, ub;
  std::memcpy(&ua, &a, sizeof(T));
  std::memcpy(&ub, &b, sizeof(T));
  const U mask = U(0) - static_cast<U>(c);
  const U r = (ua & mask) | (ub & ~mask);
  T out;
  std::memcpy(&out, &r, sizeof(T));
  return out;
#endif
}

// Bits a kernel raises while it reads its inputs; decoded by check_flags().
enum InputFlag : int {
  kNonFinite = 1,     // a NaN or an infinity among the boxes
  kNegativeArea = 2,  // w * h < 0: the box has no scale
  kBadRandom = 4,     // a random number outside [0, 1] (or NaN)
};

inline void check_boxes(const char* op, const at::Tensor& boxes) {
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, op,
              ": boxes must have shape [N, 4] (XYXY), got ", boxes.sizes());
  TORCH_CHECK(boxes.scalar_type() == at::kFloat || boxes.scalar_type() == at::kDouble, op,
              ": boxes must be float32 or float64, got ", boxes.scalar_type());
}

inline void check_flags(const char* op, int flags) {
  TORCH_CHECK(!(flags & kNonFinite), op,
              ": boxes contain NaN or Inf (or a box so large that its area overflows)");
  TORCH_CHECK(!(flags & kNegativeArea), op,
              ": a box has negative area (exactly one of its sides is negative), so it has no "
              "scale; filter or fix such boxes first");
  TORCH_CHECK(!(flags & kBadRandom), op, ": rand must hold numbers in [0, 1]");
}

}  // namespace d2ext
