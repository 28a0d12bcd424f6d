// Parity of rnnkit's GEMM kernel (rnnkit/csrc/gemm.h), gate math (vmath.h) and per-row gate
// kernels (cells.h) with reference math, for whichever instruction set this file is compiled
// for (simd.h picks the register tile from -march / -DRNNKIT_SIMD_SCALAR; the row kernels are
// loops the compiler vectorises for it). Built and run once per ISA by
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
//
// The row kernels -- gru_row, lstm_row, gru_row_backward, lstm_row_backward, ln_stats (centred
// or not), layer_norm_row and layer_norm_row_backward (G = 1, 3, 4 rows) -- run for float and
// double at H = 1, 3, 8, 16, 17, 64, 100 (vector loops with and without remainders) on random
// inputs (gate pre-activations in about [-4, 4]), each buffer differently misaligned and
// guarded by sentinels before and after, outputs starting as NaN. Forward values and the saved
// ones are checked against the equations in double; each backward against hand-derived
// gradients in double from the kernel's saved values (tight: 1e-5 / 1e-12 of the rounding's
// magnitude, see E below) and against central differences of the double reference step (loose),
// so that a wrong gradient term fails even where the hand-derived formula shares the mistake.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string_view>
#include <vector>

#include "cells.h"  // and vmath.h
#include "gemm.h"

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


// ---------------------------------------------------------------------------------------------
// The per-row gate kernels of cells.h (the GRU and LSTM steps, forward and backward, and the
// layer norms' helpers), against the equations evaluated in double.
//
// A reference value carries the magnitude its rounding is judged against (a running error
// bound, in units of the result: every operation adds |its result| and carries its operands'
// magnitudes through its derivative), and a check passes when |got - want| <= tol * magnitude:
// for a sum that is the sum of |terms| (as for the GEMM), for a product the product of
// |factors|, for 1 - n * n it is 1 + n * n (a saturated tanh's 1 - n^2 loses its digits in any
// order of evaluation, and is not held to a relative error it cannot have). sigmoid and tanh
// add one |result| for their own error (vmath.h's ~3e-7 float / ~4e-15 double relative is far
// below tol, 1e-5 / 1e-12). A wrong term, a swapped gate or a missing factor is off by a good
// part of the magnitude.
struct E {
  double v = 0, e = 0;
  E() = default;
  E(double x) : v(x) {}  // an exact input or constant
  E(double x, double m) : v(x), e(m) {}
};
inline E operator+(E a, E b) { const double v = a.v + b.v; return {v, a.e + b.e + std::fabs(v)}; }
inline E operator-(E a, E b) { const double v = a.v - b.v; return {v, a.e + b.e + std::fabs(v)}; }
inline E operator*(E a, E b) {
  const double v = a.v * b.v;
  return {v, a.e * std::fabs(b.v) + std::fabs(a.v) * b.e + std::fabs(v)};
}
inline E operator/(E a, double d) { const double v = a.v / d; return {v, a.e / std::fabs(d) + std::fabs(v)}; }
inline double sig(double x) { return 1 / (1 + std::exp(-x)); }
inline double tnh(double x) { return std::tanh(x); }
inline double rsqrt(double x) { return 1 / std::sqrt(x); }
inline E sig(E a) { const double s = sig(a.v); return {s, s * (1 - s) * a.e + s}; }
inline E tnh(E a) { const double t = std::tanh(a.v); return {t, (1 - t * t) * a.e + std::fabs(t)}; }
inline E rsqrt(E a) { const double r = rsqrt(a.v); return {r, 0.5 * r / a.v * a.e + 2 * r}; }  // sqrt, divide
inline E total(const std::vector<E>& t) {  // in any order of summation: sum |terms|
  E s;
  for (const E& v : t) { s.v += v.v; s.e += v.e + std::fabs(v.v); }
  return s;
}

// The equations, one lane (V = double for the central differences, E for the tight checks).
// GRU in PyTorch's convention: r, z, n, with hn = W_hn h + b_hn inside r * (.).
template <typename V> struct GruStep { V r, z, n, hn, h; };
template <typename V> GruStep<V> gru_step(const V* x, const V* g, const V* b, V hp) {
  GruStep<V> s;
  s.r = sig(x[0] + g[0] + b[0]);
  s.z = sig(x[1] + g[1] + b[1]);
  s.hn = g[2] + b[2];
  s.n = tnh(x[2] + s.r * s.hn);
  s.h = (V(1) - s.z) * s.n + s.z * hp;
  return s;
}
template <typename V> struct LstmStep { V i, f, g, o, c, tc, h; };
template <typename V> LstmStep<V> lstm_step(const V* x, const V* g, const V* b, V cp) {
  LstmStep<V> s;
  s.i = sig(x[0] + g[0] + b[0]);
  s.f = sig(x[1] + g[1] + b[1]);
  s.g = tnh(x[2] + g[2] + b[2]);
  s.o = sig(x[3] + g[3] + b[3]);
  s.c = s.f * cp + s.i * s.g;
  s.tc = tnh(s.c);
  s.h = s.o * s.tc;
  return s;
}

// Their gradients by hand, from the saved values, for the loss L = (dh + go) . h (+ dc . c):
// dx = dL/d x, dg = dL/d (W_hh h) (= dL/d b), dhp = dL/d h_prev through z's blend (GRU; the
// rest comes through W_hh), dcp = dL/d c_prev (LSTM). Checked against central differences of
// gru_step / lstm_step too, so a wrong formula here fails as well.
struct GruGrad { E dx[3], dg[3], dhp; };
GruGrad gru_grad(E r, E z, E n, E hn, E hp, E dh, E go) {
  const E G = dh + go;
  const E dn = G * (E(1) - z);                // dh/dn = 1 - z
  const E dz = G * (hp - n);                  // dh/dz = hp - n
  const E dnp = dn * (E(1) - n * n);          // through tanh
  const E drp = dnp * hn * (r * (E(1) - r));  // n's argument has r * hn
  const E dzp = dz * (z * (E(1) - z));
  return {{drp, dzp, dnp}, {drp, dzp, dnp * r}, G * z};
}
struct LstmGrad { E dx[4], dcp; };
LstmGrad lstm_grad(E i, E f, E g, E o, E tc, E cp, E dh, E dc, E go) {
  const E G = dh + go;
  const E dct = dc + G * o * (E(1) - tc * tc);  // carried + through h = o tanh(c)
  return {{dct * g * (i * (E(1) - i)), dct * cp * (f * (E(1) - f)), dct * i * (E(1) - g * g),
           G * tc * (o * (E(1) - o))},
          dct * f};
}

// A kernel's buffer: a guard of sentinels before and after (both must survive), the data at
// an offset that cycles through 0..3 elements from one buffer to the next (so that the
// kernels' vector loops meet differently aligned streams). Outputs start as NaN.
template <typename T> class Buf {
 public:
  Buf(int n, double fill)
      : n_(n), lead_(kGuard + shift_++ % 4), v_(static_cast<size_t>(lead_ + n + kGuard), T(kSentinel)) {
    std::fill(p(), p() + n, static_cast<T>(fill));
  }
  Buf(int n, Rng& rng, double scale, double offset = 0) : Buf(n, 0.0) {
    for (int i = 0; i < n; ++i) p()[i] = static_cast<T>(offset + scale * rng.next());
  }
  T* p() { return v_.data() + lead_; }
  bool intact() const {
    for (int i = 0; i < lead_; ++i)
      if (v_[static_cast<size_t>(i)] != T(kSentinel)) return false;
    for (int i = 0; i < kGuard; ++i)
      if (v_[static_cast<size_t>(lead_ + n_ + i)] != T(kSentinel)) return false;
    return true;
  }
  std::vector<double> values() const { return {v_.begin() + lead_, v_.begin() + lead_ + n_}; }

 private:
  static inline int shift_ = 0;
  int n_, lead_;
  std::vector<T> v_;
};

// What the checks see of a buffer (the comparisons are type-free: one copy of them is compiled,
// not one per type).
struct Col {
  const char* name;
  std::vector<double> v;
  bool intact;
  double operator()(int i) const { return v[static_cast<size_t>(i)]; }
};
template <typename T> Col col(const char* name, const Buf<T>& b) { return {name, b.values(), b.intact()}; }

// One check: many values against their references, one line (the worst) if any is off.
class Tally {
 public:
  template <typename... Args> explicit Tally(const char* fmt, Args... args) {
    std::snprintf(what_, sizeof what_, fmt, args...);
  }
  Tally(const Tally&) = delete;
  void operator()(const char* name, int index, double got, double want, double bound) {
    ++n_;
    const double ratio = std::fabs(got - want) / (bound + 1e-300);
    if (!(ratio <= 1.0)) ++bad_;  // NaN too
    const double key = std::isnan(ratio) ? HUGE_VAL : ratio;
    if (key > worst_) { worst_ = key; name_ = name; index_ = index; got_ = got; want_ = want; bound_ = bound; }
  }
  void guards(std::initializer_list<const Col*> cols) {
    for (const Col* c : cols)
      if (!c->intact) fail("FAIL %s: wrote outside %s (%d values)", what_, c->name, static_cast<int>(c->v.size()));
  }
  ~Tally() {
    ++checks;
    if (bad_)
      fail("FAIL %s: %d of %d values off; worst %s[%d] = %.17g, want %.17g (error %.3g, bound %.3g)", what_, bad_,
           n_, name_, index_, got_, want_, std::fabs(got_ - want_), bound_);
  }

 private:
  char what_[160];
  int n_ = 0, bad_ = 0, index_ = -1;
  double worst_ = -1, got_ = 0, want_ = 0, bound_ = 0;
  const char* name_ = "";
};

// The type's tolerances. Central differences of the double reference (step 1e-5, error
// ~1e-10 relative) and the kernel's gradient, from its own saved values (which carry its
// forward's rounding), must agree to `fd` of the magnitude plus 1e-7 of the loss's scale.
struct Tol {
  const char* type;
  double tight, fd;
};
template <typename T> constexpr Tol tol_of() {
  return sizeof(T) == 4 ? Tol{"float", 1e-5, 1e-4} : Tol{"double", 1e-12, 1e-8};
}
constexpr double kFdAbs = 1e-7;
// d f / d v at v by a central difference; f takes the perturbed value.
template <typename F> double central(double v, F f) {
  const double up = v + 1e-5, down = v - 1e-5;
  return (f(up) - f(down)) / (up - down);
}

void verify_gru(Tol tol, int H, const Col& x, const Col& g, const Col& bias, const Col& hp, const Col& h,
                const Col& out, const Col& a, const Col& go, const Col& dh0, const Col& dh, const Col& dg,
                const Col& dx) {
  {
    Tally t("%s gru_row H=%d", tol.type, H);
    for (int j = 0; j < H; ++j) {
      E xs[3], gs[3], bs[3];
      for (int q = 0; q < 3; ++q) { xs[q] = x(q * H + j); gs[q] = g(q * H + j); bs[q] = bias(q * H + j); }
      const GruStep<E> s = gru_step<E>(xs, gs, bs, hp(j));
      t("h", j, h(j), s.h.v, tol.tight * s.h.e);
      t("out", j, out(j), s.h.v, tol.tight * s.h.e);
      const E saved[4] = {s.r, s.z, s.n, s.hn};
      for (int q = 0; q < 4; ++q) t("saved", q * H + j, a(q * H + j), saved[q].v, tol.tight * saved[q].e);
    }
    t.guards({&x, &g, &bias, &hp, &h, &out, &a});
  }
  // f before t: t is destroyed, and reports, first
  Tally f("%s gru_row_backward H=%d (central differences of the reference step)", tol.type, H);
  Tally t("%s gru_row_backward H=%d (analytic, from the saved values)", tol.type, H);
  for (int j = 0; j < H; ++j) {
    const GruGrad d = gru_grad(a(j), a(H + j), a(2 * H + j), a(3 * H + j), hp(j), dh0(j), go(j));
    for (int q = 0; q < 3; ++q) {
      t("dx", q * H + j, dx(q * H + j), d.dx[q].v, tol.tight * d.dx[q].e);
      t("dg", q * H + j, dg(q * H + j), d.dg[q].v, tol.tight * d.dg[q].e);
    }
    t("dh", j, dh(j), d.dhp.v, tol.tight * d.dhp.e);

    // in = x (3), g (3), b (3), hp; L = G h
    const double G = dh0(j) + go(j), scale = kFdAbs * std::fabs(G);
    double in[10];
    for (int q = 0; q < 3; ++q) { in[q] = x(q * H + j); in[3 + q] = g(q * H + j); in[6 + q] = bias(q * H + j); }
    in[9] = hp(j);
    auto dL = [&](int k) {
      return central(in[k], [&](double v) {
        double p[10];
        std::copy(in, in + 10, p);
        p[k] = v;
        return G * gru_step<double>(p, p + 3, p + 6, p[9]).h;
      });
    };
    for (int q = 0; q < 3; ++q) {
      f("dx", q * H + j, dx(q * H + j), dL(q), tol.fd * d.dx[q].e + scale);
      f("dg", q * H + j, dg(q * H + j), dL(3 + q), tol.fd * d.dg[q].e + scale);
      f("dg (as d bias)", q * H + j, dg(q * H + j), dL(6 + q), tol.fd * d.dg[q].e + scale);
    }
    f("dh", j, dh(j), dL(9), tol.fd * d.dhp.e + scale);
  }
  t.guards({&a, &hp, &go, &dh, &dg, &dx});
}

void verify_lstm(Tol tol, int H, const Col& x, const Col& g, const Col& bias, const Col& cp, const Col& h,
                 const Col& c, const Col& out, const Col& a, const Col& go, const Col& dh0, const Col& dc0,
                 const Col& dh, const Col& dc, const Col& dg, const Col& dx) {
  {
    Tally t("%s lstm_row H=%d", tol.type, H);
    for (int j = 0; j < H; ++j) {
      E xs[4], gs[4], bs[4];
      for (int q = 0; q < 4; ++q) { xs[q] = x(q * H + j); gs[q] = g(q * H + j); bs[q] = bias(q * H + j); }
      const LstmStep<E> s = lstm_step<E>(xs, gs, bs, cp(j));
      t("h", j, h(j), s.h.v, tol.tight * s.h.e);
      t("c", j, c(j), s.c.v, tol.tight * s.c.e);
      t("out", j, out(j), s.h.v, tol.tight * s.h.e);
      const E saved[5] = {s.i, s.f, s.g, s.o, s.tc};
      for (int q = 0; q < 5; ++q) t("saved", q * H + j, a(q * H + j), saved[q].v, tol.tight * saved[q].e);
    }
    t.guards({&x, &g, &bias, &cp, &h, &c, &out, &a});
  }
  // f before t: t is destroyed, and reports, first
  Tally f("%s lstm_row_backward H=%d (central differences of the reference step)", tol.type, H);
  Tally t("%s lstm_row_backward H=%d (analytic, from the saved values)", tol.type, H);
  for (int j = 0; j < H; ++j) {
    const LstmGrad d =
        lstm_grad(a(j), a(H + j), a(2 * H + j), a(3 * H + j), a(4 * H + j), cp(j), dh0(j), dc0(j), go(j));
    for (int q = 0; q < 4; ++q) {
      t("dx", q * H + j, dx(q * H + j), d.dx[q].v, tol.tight * d.dx[q].e);
      t("dg", q * H + j, dg(q * H + j), d.dx[q].v, tol.tight * d.dx[q].e);
    }
    t("dc", j, dc(j), d.dcp.v, tol.tight * d.dcp.e);
    t("dh", j, dh(j), 0.0, 0.0);  // all of d h_prev comes through W_hh

    // in = x (4), g (4), b (4), cp; L = G h + dc c
    const double G = dh0(j) + go(j), scale = kFdAbs * (std::fabs(G) + std::fabs(dc0(j)));
    double in[13];
    for (int q = 0; q < 4; ++q) { in[q] = x(q * H + j); in[4 + q] = g(q * H + j); in[8 + q] = bias(q * H + j); }
    in[12] = cp(j);
    auto dL = [&](int k) {
      return central(in[k], [&](double v) {
        double p[13];
        std::copy(in, in + 13, p);
        p[k] = v;
        const LstmStep<double> s = lstm_step<double>(p, p + 4, p + 8, p[12]);
        return G * s.h + dc0(j) * s.c;
      });
    };
    for (int q = 0; q < 4; ++q) {
      f("dx", q * H + j, dx(q * H + j), dL(q), tol.fd * d.dx[q].e + scale);
      f("dg", q * H + j, dg(q * H + j), dL(4 + q), tol.fd * d.dx[q].e + scale);
      f("dg (as d bias)", q * H + j, dg(q * H + j), dL(8 + q), tol.fd * d.dx[q].e + scale);
    }
    f("dc", j, dc(j), dL(12), tol.fd * d.dcp.e + scale);
  }
  t.guards({&a, &cp, &go, &dh, &dc, &dg, &dx});
}

// Pre-activations in about [-4, 4]: x in [-2, 2), g = W_hh h in [-1.5, 1.5), b in [-0.5, 0.5);
// h_prev in [-1, 1), c_prev in [-2, 2), the gradients coming in in [-1, 1).
template <typename T> void check_gru(int H, uint64_t seed) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Rng rng(seed);
  Buf<T> x(3 * H, rng, 2), g(3 * H, rng, 1.5), bias(3 * H, rng, 0.5), hp(H, rng, 1);
  Buf<T> h(H, nan), out(H, nan), a(4 * H, nan);
  rnnkit::gru_row<T>(H, x.p(), g.p(), bias.p(), hp.p(), h.p(), out.p(), a.p());
  Buf<T> go(H, rng, 1), dh(H, rng, 1), dg(3 * H, nan), dx(3 * H, nan);
  const Col dh0 = col("dh", dh);
  rnnkit::gru_row_backward<T>(H, a.p(), hp.p(), go.p(), dh.p(), dg.p(), dx.p());
  verify_gru(tol_of<T>(), H, col("x", x), col("g", g), col("bias", bias), col("hp", hp), col("h", h),
             col("out", out), col("saved", a), col("go", go), dh0, col("dh", dh), col("dg", dg), col("dx", dx));
}

template <typename T> void check_lstm(int H, uint64_t seed) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Rng rng(seed);
  Buf<T> x(4 * H, rng, 2), g(4 * H, rng, 1.5), bias(4 * H, rng, 0.5), cp(H, rng, 2);
  Buf<T> h(H, nan), c(H, nan), out(H, nan), a(5 * H, nan);
  rnnkit::lstm_row<T>(H, x.p(), g.p(), bias.p(), cp.p(), h.p(), c.p(), out.p(), a.p());
  Buf<T> go(H, rng, 1), dh(H, rng, 1), dc(H, rng, 1), dg(4 * H, nan), dx(4 * H, nan);
  const Col dh0 = col("dh", dh), dc0 = col("dc", dc);
  rnnkit::lstm_row_backward<T>(H, a.p(), cp.p(), go.p(), dh.p(), dc.p(), dg.p(), dx.p());
  verify_lstm(tol_of<T>(), H, col("x", x), col("g", g), col("bias", bias), col("cp", cp), col("h", h),
              col("c", c), col("out", out), col("saved", a), col("go", go), dh0, dc0, col("dh", dh),
              col("dc", dc), col("dg", dg), col("dx", dx));
}

// The layer norms' helpers, G rows of H side by side (each its own spread, and for the
// uncentred statistics its own offset). ln_stats: mean and 1 / sqrt(biased variance + eps),
// the mean taken as zero when `centred`; layer_norm_row: the centred contract
// yhat = y / sqrt(mean(y^2) + eps), out = yhat gain + shift; layer_norm_row_backward: the
// gradient of F.layer_norm (mean and variance both depend on y), checked against central
// differences of the full layer norm of the (centred) rows as well.
E ln_rstd(const Col& y, int q, int H, bool centred, double eps, E* mean) {
  std::vector<E> t(static_cast<size_t>(H));
  E m = 0.0;
  if (!centred) {
    for (int j = 0; j < H; ++j) t[static_cast<size_t>(j)] = y(q * H + j);
    m = total(t) / H;
  }
  for (int j = 0; j < H; ++j) t[static_cast<size_t>(j)] = (E(y(q * H + j)) - m) * (E(y(q * H + j)) - m);
  if (mean) *mean = m;
  return rsqrt(total(t) / H + E(eps));
}

void verify_ln_stats(Tol tol, int G, int H, bool centred, double eps, const Col& y, const Col& mean, const Col& rs) {
  Tally t("%s ln_stats G=%d H=%d centred=%d", tol.type, G, H, int(centred));
  for (int q = 0; q < G; ++q) {
    E m;
    const E r = ln_rstd(y, q, H, centred, eps, &m);
    t("mean", q, mean(q), m.v, tol.tight * m.e);
    t("rstd", q, rs(q), r.v, tol.tight * r.e);
  }
  t.guards({&y, &mean, &rs});
}

void verify_layer_norm(Tol tol, int G, int H, double eps, const Col& y, const Col& gain, const Col& shift,
                       const Col& out, const Col& yhat, const Col& rstd, const Col& d0, const Col& dgain0,
                       const Col& dshift0, const Col& d, const Col& dgain, const Col& dshift) {
  {
    Tally t("%s layer_norm_row G=%d H=%d", tol.type, G, H);
    for (int q = 0; q < G; ++q) {
      const E r = ln_rstd(y, q, H, true, eps, nullptr);
      t("rstd", q, rstd(q), r.v, tol.tight * r.e);
      for (int k = q * H; k < (q + 1) * H; ++k) {
        const E v = E(y(k)) * r, o = v * E(gain(k)) + E(shift(k));
        t("yhat", k, yhat(k), v.v, tol.tight * v.e);
        t("out", k, out(k), o.v, tol.tight * o.e);
      }
    }
    t.guards({&y, &gain, &shift, &out, &yhat, &rstd});
  }
  // f before t: t is destroyed, and reports, first
  Tally f("%s layer_norm_row_backward G=%d H=%d (central differences of F.layer_norm)", tol.type, G, H);
  Tally t("%s layer_norm_row_backward G=%d H=%d (analytic, from the saved values)", tol.type, G, H);
  for (int q = 0; q < G; ++q) {
    // d y = rstd (d gain - mean(d gain) - yhat mean(d gain yhat))
    std::vector<E> dgn(static_cast<size_t>(H)), dgv(static_cast<size_t>(H));
    for (int j = 0; j < H; ++j) {
      const int k = q * H + j;
      dgn[static_cast<size_t>(j)] = E(d0(k)) * E(gain(k));
      dgv[static_cast<size_t>(j)] = dgn[static_cast<size_t>(j)] * E(yhat(k));
    }
    const E m1 = total(dgn) / H, m2 = total(dgv) / H;
    // L(y) = sum_j d_j gain_j (y_j - mean) / sqrt(var + eps) over row q (the shift adds a constant)
    std::vector<double> yq(y.v.begin() + q * H, y.v.begin() + (q + 1) * H);
    double lmag = 0;  // the scale of L, for the central differences' rounding
    for (int j = 0; j < H; ++j) lmag += std::fabs(d0(q * H + j) * gain(q * H + j) * yhat(q * H + j));
    auto L = [&](int jk, double v) {
      std::vector<double> p = yq;
      p[static_cast<size_t>(jk)] = v;
      double m = 0, var = 0, s = 0;
      for (double w : p) m += w / H;
      for (double w : p) var += (w - m) * (w - m) / H;
      for (int j = 0; j < H; ++j) s += d0(q * H + j) * gain(q * H + j) * (p[static_cast<size_t>(j)] - m);
      return s / std::sqrt(var + eps);
    };
    for (int j = 0; j < H; ++j) {
      const int k = q * H + j;
      const E dy = E(rstd(q)) * (dgn[static_cast<size_t>(j)] - m1 - E(yhat(k)) * m2);
      const E dgk = E(dgain0(k)) + E(d0(k)) * E(yhat(k)), dsk = E(dshift0(k)) + E(d0(k));
      t("dy", k, d(k), dy.v, tol.tight * dy.e);
      t("dgain", k, dgain(k), dgk.v, tol.tight * dgk.e);
      t("dshift", k, dshift(k), dsk.v, tol.tight * dsk.e);
      const double fd = central(yq[static_cast<size_t>(j)], [&](double v) { return L(j, v); });
      f("dy", k, d(k), fd, tol.fd * dy.e + 1e-9 * lmag + kFdAbs * std::fabs(d0(k)));
    }
  }
  t.guards({&yhat, &rstd, &gain, &d, &dgain, &dshift});
}

template <typename T> void check_layer_norm(int G, int H, uint64_t seed) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const T eps = T(1e-5);
  Rng rng(seed);
  const int n = G * H;
  // Centred rows (as the loop's projections with centred weights are), spread 0.5, 1, 1.5, 2.
  Buf<T> y(n, 0.0), yu(n, 0.0);
  for (int q = 0; q < G; ++q) {
    std::vector<double> raw(static_cast<size_t>(H));
    double m = 0;
    for (auto& v : raw) { v = 0.5 * (q + 1) * rng.next(); m += v / H; }
    for (int j = 0; j < H; ++j) {
      y.p()[q * H + j] = static_cast<T>(raw[static_cast<size_t>(j)] - m);
      yu.p()[q * H + j] = static_cast<T>(raw[static_cast<size_t>(j)] + 0.75 * (q + 1));  // uncentred
    }
  }
  for (int centred = 0; centred < 2; ++centred) {
    Buf<T>& in = centred ? y : yu;
    Buf<T> mean(G, nan), rs(G, nan);
    rnnkit::ln_stats<T>(G, H, in.p(), centred, eps, mean.p(), rs.p());
    verify_ln_stats(tol_of<T>(), G, H, centred, eps, col("y", in), col("mean", mean), col("rstd", rs));
  }
  Buf<T> gain(n, rng, 0.5, 1), shift(n, rng, 0.5), out(n, nan), yhat(n, nan), rstd(G, nan);
  rnnkit::layer_norm_row<T>(G, H, y.p(), gain.p(), shift.p(), eps, out.p(), yhat.p(), rstd.p());
  Buf<T> d(n, rng, 1), dgain(n, rng, 1), dshift(n, rng, 1);
  const Col d0 = col("d", d), dgain0 = col("dgain", dgain), dshift0 = col("dshift", dshift);
  rnnkit::layer_norm_row_backward<T>(G, H, yhat.p(), rstd.p(), gain.p(), d.p(), dgain.p(), dshift.p());
  verify_layer_norm(tol_of<T>(), G, H, eps, col("y", y), col("gain", gain), col("shift", shift), col("out", out),
                    col("yhat", yhat), col("rstd", rstd), d0, dgain0, dshift0, col("d", d), col("dgain", dgain),
                    col("dshift", dshift));
}

template <typename T> void check_rows() {
  for (int H : {1, 3, 8, 16, 17, 64, 100}) {
    check_gru<T>(H, 7000 + H);
    check_lstm<T>(H, 8000 + H);
    for (int G : {1, 3, 4}) check_layer_norm<T>(G, H, 9000 + 10 * H + G);
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
  check_rows<float>();
  check_rows<double>();
  if (failures > kMaxPrinted) std::printf("... and %d more failures\n", failures - kMaxPrinted);
  std::printf("%d checks, %d failed (register tile %d rows x %d float / %d double columns)\n", checks, failures,
              rnnkit::kTileRows, rnnkit::panel_width<float>(), rnnkit::panel_width<double>());
  return failures ? 1 : 0;
}
