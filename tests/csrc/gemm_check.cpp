// Parity of rnnkit's GEMM kernel (rnnkit/csrc/gemm.h) and gate math (vmath.h) with reference
// math, for whichever instruction set this file is compiled for (simd.h picks the register
// tile from -march / -DRNNKIT_SIMD_SCALAR). Built and run once per ISA by
// tests/test_kernel_isas.py; needs nothing but a C++17 compiler:
//
//   g++ -O2 -std=c++17 -I rnnkit/csrc -march=... tests/csrc/gemm_check.cpp -o gemm_check
//
// (optionally -DGEMM_CHECK_ISA='"avx2"', see below).
//
// Prints "isa: NAME" (rnnkit::kIsa) on the first line, then one line per failed check and a
// summary; exits 1 on any failure.
//
// The shapes hit every edge of gemm_packed: M not a multiple of the 6- or 8-row tile (the 4-,
// 2- and 1-row remainders) and more than kBlockRows = 96; N narrower than a panel, a whole
// panel, a panel and a bit (the partial store); K more than kDepth = 128 (the k-blocks that
// add into C). Per shape, both layouts of A (TRANS_A) and of B (pack_b's TRANS_B); `accumulate`
// and leading dimensions larger than the width alternate with the shape, each on and off for
// every M, N and K and every layout, float and double. Padding of A and B holds NaN
// (reading it poisons the product), C starts as NaN when not accumulating (a kernel that adds
// to it poisons the product), and the padding of C and guards past C and past the packed
// panels hold a sentinel that must survive.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string_view>
#include <vector>

#include "gemm.h"
#include "vmath.h"

// -DGEMM_CHECK_ISA='"avx2"': the build fails unless simd.h chose that ISA, so that a target
// this machine cannot run (AVX-512 on a CPU without it) still has its choice checked.
#if defined(GEMM_CHECK_ISA)
static_assert(std::string_view(rnnkit::kIsa) == std::string_view(GEMM_CHECK_ISA), "simd.h chose another ISA");
#endif

namespace {

int failures = 0, checks = 0;
constexpr int kMaxPrinted = 40;

template <typename... Args> void fail(const char* fmt, Args... args) {
  if (++failures <= kMaxPrinted) {
    std::printf(fmt, args...);
    std::printf("\n");
  }
}

template <typename T> const char* type_name() { return sizeof(T) == 4 ? "float" : "double"; }

// Deterministic values in [-1, 1), exact in float (so float and double runs multiply the same
// numbers and the double reference of a float product is exact up to its own summation).
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  double next() {
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    return static_cast<double>(static_cast<int32_t>(s >> 40) - (1 << 23)) / (1 << 23);
  }
};

// One logical problem: A (M, K), B (K, N), C0 (M, N), and the reference in double.
struct Problem {
  int M, N, K;
  std::vector<double> a, b, c0, prod, mag;  // prod = A B, mag = sum_k |a_ik b_kj|
  Problem(int M_, int N_, int K_, uint64_t seed) : M(M_), N(N_), K(K_) {
    Rng rng(seed);
    a.resize(static_cast<size_t>(M) * K);
    b.resize(static_cast<size_t>(K) * N);
    c0.resize(static_cast<size_t>(M) * N);
    for (auto& v : a) v = rng.next();
    for (auto& v : b) v = rng.next();
    for (auto& v : c0) v = 4 * rng.next();
    prod.assign(static_cast<size_t>(M) * N, 0.0);
    mag.assign(static_cast<size_t>(M) * N, 0.0);
    for (int i = 0; i < M; ++i)
      for (int k = 0; k < K; ++k) {
        const double x = a[static_cast<size_t>(i) * K + k];
        for (int j = 0; j < N; ++j) {
          const double y = b[static_cast<size_t>(k) * N + j];
          prod[static_cast<size_t>(i) * N + j] += x * y;
          mag[static_cast<size_t>(i) * N + j] += std::fabs(x * y);
        }
      }
  }
};

constexpr double kSentinel = 12345.0;
constexpr int kGuard = 64;

template <typename T, bool TRANS_A, bool TRANS_B>
void check_product(const Problem& pr, bool accumulate, int pad_a, int pad_b, int pad_c) {
  const int M = pr.M, N = pr.N, K = pr.K;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  ++checks;

  // A as the kernel reads it: (M, K) with lda >= K, or stored (K, M) with lda >= M.
  const int64_t lda = (TRANS_A ? M : K) + pad_a;
  std::vector<T> A(static_cast<size_t>(TRANS_A ? K : M) * lda, nan);
  for (int i = 0; i < M; ++i)
    for (int k = 0; k < K; ++k)
      (TRANS_A ? A[static_cast<size_t>(k) * lda + i] : A[static_cast<size_t>(i) * lda + k]) =
          static_cast<T>(pr.a[static_cast<size_t>(i) * K + k]);

  // B (K, N) with ldb >= N, or given as W (N, K) with ldb >= K.
  const int64_t ldb = (TRANS_B ? K : N) + pad_b;
  std::vector<T> B(static_cast<size_t>(TRANS_B ? N : K) * ldb, nan);
  for (int k = 0; k < K; ++k)
    for (int j = 0; j < N; ++j)
      (TRANS_B ? B[static_cast<size_t>(j) * ldb + k] : B[static_cast<size_t>(k) * ldb + j]) =
          static_cast<T>(pr.b[static_cast<size_t>(k) * N + j]);

  const int64_t psize = rnnkit::packed_size<T>(N, K);
  std::vector<T> P(static_cast<size_t>(psize) + kGuard, static_cast<T>(kSentinel));
  rnnkit::pack_b<T, TRANS_B>(N, K, B.data(), ldb, P.data());

  const int64_t ldc = N + pad_c;
  std::vector<T> C(static_cast<size_t>(M) * ldc + kGuard, static_cast<T>(kSentinel));
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j)
      C[static_cast<size_t>(i) * ldc + j] = accumulate ? static_cast<T>(pr.c0[static_cast<size_t>(i) * N + j]) : nan;

  rnnkit::gemm_packed<T, TRANS_A>(M, N, K, A.data(), lda, P.data(), C.data(), ldc, accumulate);

  char what[160];
  std::snprintf(what, sizeof what, "%s M=%d N=%d K=%d trans_a=%d trans_b=%d accumulate=%d lda=%lld ldb=%lld ldc=%lld",
                type_name<T>(), M, N, K, int(TRANS_A), int(TRANS_B), int(accumulate), static_cast<long long>(lda),
                static_cast<long long>(ldb), static_cast<long long>(ldc));

  // The last panel of each k-block is zero-padded past column N (the padding is multiplied
  // into accumulators that are never stored, so only this shows a pack that reads past B).
  {
    constexpr int NR = rnnkit::panel_width<T>();
    const int np = (N + NR - 1) / NR, nv = N - (np - 1) * NR;
    int nonzero = 0;
    for (int k0 = 0; k0 < K; k0 += rnnkit::kDepth) {
      const int kk = std::min(rnnkit::kDepth, K - k0);
      const T* last = P.data() + static_cast<int64_t>(k0) * np * NR + static_cast<int64_t>(np - 1) * kk * NR;
      for (int k = 0; k < kk; ++k)
        for (int j = nv; j < NR; ++j) nonzero += !(last[k * NR + j] == T(0));
    }
    if (nonzero) fail("FAIL %s: %d elements of the last packed panel's padding not zero", what, nonzero);
  }
  for (int g = 0; g < kGuard; ++g)
    if (P[static_cast<size_t>(psize) + g] != static_cast<T>(kSentinel)) {
      fail("FAIL %s: pack_b wrote past packed_size (%lld)", what, static_cast<long long>(psize));
      break;
    }
  for (int g = 0; g < kGuard; ++g)
    if (C[static_cast<size_t>(M) * ldc + g] != static_cast<T>(kSentinel)) {
      fail("FAIL %s: wrote past the end of C", what);
      break;
    }

  // Tolerance relative to sum_k |a b| (+ |c0| when accumulating): a dropped, repeated or
  // misplaced term of k is ~ that sum / K, far above it.
  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-12;
  double worst = -1;  // the largest error / bound, NaN counted as infinite
  int wi = -1, wj = -1, bad = 0, clobbered = 0;
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < N; ++j) {
      const size_t e = static_cast<size_t>(i) * N + j;
      const double c0 = accumulate ? pr.c0[e] : 0.0;
      const double want = c0 + pr.prod[e];
      const double got = C[static_cast<size_t>(i) * ldc + j];
      const double bound = tol * (pr.mag[e] + std::fabs(c0)) + 1e-300;
      const double ratio = std::fabs(got - want) / bound;
      if (!(ratio <= 1.0)) ++bad;  // NaN too
      const double key = std::isnan(ratio) ? HUGE_VAL : ratio;
      if (key > worst) { worst = key; wi = i; wj = j; }
    }
    for (int j = N; j < ldc; ++j)
      if (C[static_cast<size_t>(i) * ldc + j] != static_cast<T>(kSentinel)) ++clobbered;
  }
  if (bad) {
    const size_t e = static_cast<size_t>(wi) * N + wj;
    const double c0 = accumulate ? pr.c0[e] : 0.0;
    fail("FAIL %s: %d of %d elements off; worst C[%d][%d] = %.17g, want %.17g (error %.3g, bound %.3g)", what, bad,
         M * N, wi, wj, static_cast<double>(C[static_cast<size_t>(wi) * ldc + wj]), c0 + pr.prod[e],
         std::fabs(static_cast<double>(C[static_cast<size_t>(wi) * ldc + wj]) - (c0 + pr.prod[e])),
         tol * (pr.mag[e] + std::fabs(c0)));
  }
  if (clobbered) fail("FAIL %s: %d elements of C's padding (columns N..ldc) overwritten", what, clobbered);
}

template <typename T> void check_products(const Problem& pr, int variant) {
  // Per shape, every layout pair; `accumulate` and the padding of each leading dimension
  // alternate with the shape, so that each is on and off for every M, N and K.
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      const int v = variant + ta + 2 * tb;
      const bool acc = v % 2;
      const int pad_a = (v / 2) % 2 ? 3 : 0, pad_b = (v / 4) % 2 ? 5 : 0, pad_c = (v + 1) / 2 % 2 ? 2 : 0;
      if (ta == 0 && tb == 0) check_product<T, false, false>(pr, acc, pad_a, pad_b, pad_c);
      if (ta == 0 && tb == 1) check_product<T, false, true>(pr, acc, pad_a, pad_b, pad_c);
      if (ta == 1 && tb == 0) check_product<T, true, false>(pr, acc, pad_a, pad_b, pad_c);
      if (ta == 1 && tb == 1) check_product<T, true, true>(pr, acc, pad_a, pad_b, pad_c);
    }
}

// vtanh / vsigmoid against long-double std::tanh and 1 / (1 + exp(-x)), to a few times the
// accuracy vmath.h states (worst relative error ~3e-7 float, ~4e-15 double). Plus an absolute
// tolerance below any value a gate cares about: vexp clamps its argument to [-87, 88] in float, so
// vsigmoid(-100) in float is ~6e-39 where the exact value is ~4e-44.
template <typename T> void check_vmath() {
  std::vector<double> xs = {0.0, 1e-8, 1e-3, 0.05, 0.055, 0.3, 0.35, 0.5, 1.0, 5.0, 9.0, 20.0, 30.0, 100.0, 1e4};
  const size_t n = xs.size();
  for (size_t i = 0; i < n; ++i) xs.push_back(-xs[i]);
  for (int i = -2000; i <= 2000; ++i) xs.push_back(i / 128.0);  // [-15.6, 15.6], through both tanh branches
  const double rtol = sizeof(T) == 4 ? 1e-6 : 1e-14;
  const double atol = sizeof(T) == 4 ? 1e-30 : 1e-300;
  const char* names[2] = {"vtanh", "vsigmoid"};
  for (int f = 0; f < 2; ++f) {
    int bad = 0;
    double worst = -1, wx = 0, wgot = 0, wwant = 0;
    for (double xd : xs) {
      const T x = static_cast<T>(xd);
      const long double xl = x;
      const long double want = f == 0 ? std::tanh(xl) : 1.0L / (1.0L + std::exp(-xl));
      const T got = f == 0 ? rnnkit::vtanh(x) : rnnkit::vsigmoid(x);
      const double ratio =
          static_cast<double>(std::fabs(static_cast<long double>(got) - want) / (rtol * std::fabs(want) + atol));
      if (!(ratio <= 1.0)) ++bad;
      const double key = std::isnan(ratio) ? HUGE_VAL : ratio;
      if (key > worst) { worst = key; wx = xd; wgot = got; wwant = static_cast<double>(want); }
    }
    ++checks;
    if (bad)
      fail("FAIL %s %s: %d of %d inputs off; worst %s(%.9g) = %.17g, want %.17g (relative error %.3g, tolerance %.3g)",
           type_name<T>(), names[f], bad, static_cast<int>(xs.size()), names[f], wx, wgot, wwant,
           std::fabs(wgot - wwant) / std::fabs(wwant), rtol);
  }
}

}  // namespace

int main() {
  std::printf("isa: %s\n", rnnkit::kIsa);
  const int Ms[] = {1, 2, 3, 5, 6, 7, 8, 13, 16, 97, 200};
  const int Ns[] = {1, 7, 8, 16, 17, 33, 100};
  const int Ks[] = {1, 5, 128, 129, 300};
  int variant = 0;
  for (int M : Ms)
    for (int N : Ns)
      for (int K : Ks) {
        const Problem pr(M, N, K, static_cast<uint64_t>(M) * 1000003 + N * 1009 + K);
        check_products<float>(pr, variant);
        check_products<double>(pr, variant + 1);
        ++variant;
      }
  check_vmath<float>();
  check_vmath<double>();
  if (failures > kMaxPrinted) std::printf("... and %d more failures\n", failures - kMaxPrinted);
  std::printf("%d checks, %d failed (register tile %d rows x %d float / %d double columns)\n", checks, failures,
              rnnkit::kTileRows, rnnkit::panel_width<float>(), rnnkit::panel_width<double>());
  return failures ? 1 : 0;
}
