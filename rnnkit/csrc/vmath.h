// Vector math for the gate kernels: exp, sigmoid and tanh that the compiler vectorises (no
// libm call in the loop), and lane sums for the layer norms' reductions.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace rnnkit {

// std::exp does not vectorise without -ffast-math; this one does (branch-free range reduction
// x = n ln2 + r, Taylor polynomial for e^r, 2^n built in the exponent bits). Relative error
// ~1e-7 (float) / ~1e-16 (double); inputs are clamped so nothing overflows.

template <typename T> struct Bits;
template <> struct Bits<float> {
  using I = int32_t;
  static constexpr int mant = 23, bias = 127;
  static constexpr float lo = -87.0f, hi = 88.0f;
};
template <> struct Bits<double> {
  using I = int64_t;
  static constexpr int mant = 52, bias = 1023;
  static constexpr double lo = -708.0, hi = 709.0;
};

template <typename T> inline T vexp(T x) {
  x = std::min(std::max(x, Bits<T>::lo), Bits<T>::hi);
  const T log2e = T(1.4426950408889634), ln2hi = T(0.693145751953125), ln2lo = T(1.4286068203094172321e-06);
  T n = __builtin_floor(x * log2e + T(0.5));
  T r = x - n * ln2hi - n * ln2lo;  // |r| <= ln2 / 2
  T p;
  if constexpr (sizeof(T) == 4) {
    p = T(1.0 / 5040);
    p = p * r + T(1.0 / 720); p = p * r + T(1.0 / 120); p = p * r + T(1.0 / 24);
    p = p * r + T(1.0 / 6); p = p * r + T(0.5); p = p * r + T(1); p = p * r + T(1);
  } else {
    p = T(1.0 / 6227020800.0);
    p = p * r + T(1.0 / 479001600.0); p = p * r + T(1.0 / 39916800.0); p = p * r + T(1.0 / 3628800.0);
    p = p * r + T(1.0 / 362880.0); p = p * r + T(1.0 / 40320.0); p = p * r + T(1.0 / 5040.0);
    p = p * r + T(1.0 / 720.0); p = p * r + T(1.0 / 120.0); p = p * r + T(1.0 / 24.0);
    p = p * r + T(1.0 / 6.0); p = p * r + T(0.5); p = p * r + T(1); p = p * r + T(1);
  }
  typename Bits<T>::I e = static_cast<typename Bits<T>::I>(n) + Bits<T>::bias;
  e <<= Bits<T>::mant;
  T scale;
  std::memcpy(&scale, &e, sizeof(T));
  return p * scale;
}
template <typename T> inline T vsigmoid(T x) { return T(1) / (T(1) + vexp(-x)); }
// tanh = 1 - 2 / (1 + e^2x) is exact in absolute terms but cancels near 0, where tanh(x) ~ x
// (relative error ~1e-4 at x = 1e-3 in float); there the odd series to x^9 is used instead,
// below the |x| where both errors are equal (series term x^11 * 1382/155925 against
// 2 eps / x): 0.35 for float, 0.055 for double. Worst relative error then ~3e-7 / ~4e-15.
template <typename T> inline T vtanh(T x) {
  const T far = T(1) - T(2) / (T(1) + vexp(T(2) * x));
  const T x2 = x * x;
  T p = T(62.0 / 2835);
  p = p * x2 - T(17.0 / 315); p = p * x2 + T(2.0 / 15); p = p * x2 - T(1.0 / 3);
  const T near = x + x * x2 * p;
  return std::fabs(x) < T(sizeof(T) == 4 ? 0.35 : 0.055) ? near : far;
}

// sum_j f(j) for j < H in one vector's worth of partial sums: without -ffast-math the compiler
// keeps a plain `s += ...` loop as one scalar chain (it may not reorder the additions); these
// lanes it vectorises, which makes the layer norms' reductions about as cheap as their
// elementwise passes.
template <typename T, typename F> inline T lane_sum(int H, F f) {
  constexpr int L = 64 / sizeof(T);  // 64 bytes of partial sums: one AVX-512 vector, two AVX2 ones
  T acc[L] = {};
  int j = 0;
  for (; j + L <= H; j += L)
    for (int k = 0; k < L; ++k) acc[k] += f(j + k);
  for (int w = L / 2; w > 0; w /= 2)  // the lanes pairwise: log2(L) dependent adds, not L
    for (int k = 0; k < w; ++k) acc[k] += acc[k + w];
  T s = acc[0];
  for (; j < H; ++j) s += f(j);
  return s;
}

// The gate math of one sequence at one step, H lanes wide. Separate (not inlined) functions
// with restrict-qualified arguments, so the compiler vectorises each loop as a whole. GCC does
// not trust restrict on these template arguments and gives up on loops with many streams
// (the LSTM backward, ~10: "no vectype", a scalar loop 4x slower than the GRU's); IVDEP says
// the lanes are independent, which they are.
#if defined(__clang__)
#define RNNKIT_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define RNNKIT_IVDEP _Pragma("GCC ivdep")
#else
#define RNNKIT_IVDEP
#endif

}  // namespace rnnkit
