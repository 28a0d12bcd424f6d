// rnnkit's compiled time loop: GRU and LSTM forward and backward through time on the CPU.
//
// What it computes is exactly rnnkit.cells.GRUCell / LSTMCell run over time (see those
// docstrings for the equations and the gate order r, z, n / i, f, g, o). Only the recurrent
// half lives here: the input projection xi = W_ih x + b_ih of all steps is one GEMM done by
// PyTorch before the call (and differentiated by autograd), so this file sees xi (B, T, G*H)
// and computes, per step s,
//
//     gh = (m * h_prev) W_hh^T              one small GEMM (B, H) x (H, G*H), BLAS
//     gates, state = fused elementwise math  one pass over (B, G*H), our own vectorised loop
//
// saving the gate activations so that the backward pass is, per step, one pass of elementwise
// math plus one small GEMM (B, G*H) x (G*H, H), and after the loop one big GEMM for dW_hh.
//
// Variable lengths: row b does real work only while s < len_b; after that its state is kept
// (so the final state is the one at its own end) and its output stays zero. reverse=true reads
// each row from its own last real step back to its first, i.e. step s reads time len_b-1-s:
// the per-sequence reversal of recurrence.reverse_padded, without gathering anything.
//
// Several directions (a bidirectional layer) run concurrently, one thread each.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

extern "C" {
// The Fortran BLAS interface; torch's CPU wheels export MKL's from libtorch_cpu.
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
            const int*, const float*, const int*, const float*, float*, const int*);
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*,
            const int*, const double*, const int*, const double*, double*, const int*);
}

namespace {

// ------------------------------------------------------------------------------ BLAS

inline void gemm_cm(char ta, char tb, int m, int n, int k, float alpha, const float* a, int lda,
                    const float* b, int ldb, float beta, float* c, int ldc) {
  sgemm_(&ta, &tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
}
inline void gemm_cm(char ta, char tb, int m, int n, int k, double alpha, const double* a, int lda,
                    const double* b, int ldb, double beta, double* c, int ldc) {
  dgemm_(&ta, &tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
}

// Row-major products on top of the column-major BLAS (a row-major X is a column-major X^T).
// C (M, N) = A (M, K) B (N, K)^T
template <typename T>
void mm_nt(int M, int N, int K, const T* A, int lda, const T* B, int ldb, T beta, T* C, int ldc) {
  gemm_cm('T', 'N', N, M, K, T(1), B, ldb, A, lda, beta, C, ldc);
}
// C (M, N) = A (M, K) B (K, N)
template <typename T>
void mm_nn(int M, int N, int K, const T* A, int lda, const T* B, int ldb, T beta, T* C, int ldc) {
  gemm_cm('N', 'N', N, M, K, T(1), B, ldb, A, lda, beta, C, ldc);
}
// C (M, N) = A (K, M)^T B (K, N)
template <typename T>
void mm_tn(int M, int N, int K, const T* A, int lda, const T* B, int ldb, T beta, T* C, int ldc) {
  gemm_cm('N', 'T', N, M, K, T(1), B, ldb, A, lda, beta, C, ldc);
}

// ------------------------------------------------------------------ vectorisable math
//
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
  const T log2e = T(1.4426950408889634), ln2hi = T(0.693145751953125), ln2lo = T(1.428606765330187e-06);
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
template <typename T> inline T vtanh(T x) { return T(1) - T(2) / (T(1) + vexp(T(2) * x)); }

// ----------------------------------------------------------------------- one direction

enum Kind { GRU = 0, LSTM = 1 };

template <typename T> struct Direction {
  int B, T_, H, G;               // batch, time, hidden, gates (3 or 4)
  int steps;                     // max length (T when there are no lengths)
  bool reverse, train;
  const int64_t* len;            // (B,) or null = all T
  const T* xi; int64_t xi_sb, xi_st;  // xi[b, t, :] = xi + b * xi_sb + t * xi_st
  const T* w;                    // W_hh (G*H, H), contiguous
  const T* bias;                 // b_hh (G*H,) or null
  const T* mask;                 // (B, H) recurrent-dropout mask or null
  const T* h0; const T* c0;      // (B, H)
  T* out; int64_t out_sb, out_st;     // out[b, t, :] (zero-filled by the caller when padded)
  T* S;                          // (steps, B, H) states h after each step (train) or 2 rows (infer)
  T* C;                          // LSTM: (steps, B, H) cell states (train) or 2 rows (infer)
  T* A;                          // (steps, B, GA) saved activations (train only)
  T* hN; T* cN;                  // (B, H) final states

  int length(int b) const { return len ? static_cast<int>(len[b]) : T_; }
  int time(int b, int s) const {
    int L = length(b);
    return (reverse && s < L) ? L - 1 - s : s;
  }
  T* state(T* base, int s) const { return base + static_cast<int64_t>(train ? s : (s & 1)) * B * H; }
};

template <typename T> inline int saved_width(int kind, int H) { return kind == GRU ? 4 * H : 5 * H; }

template <typename T> void forward_direction(int kind, Direction<T>& d) {
  const int B = d.B, H = d.H, GH = d.G * H, GA = saved_width<T>(kind, H);
  std::vector<T> gh(static_cast<size_t>(B) * GH), hm(d.mask ? static_cast<size_t>(B) * H : 0);
  const T* bias = d.bias;
  for (int s = 0; s < d.steps; ++s) {
    const T* hp = s == 0 ? d.h0 : d.state(d.S, s - 1);
    const T* cp = kind == LSTM ? (s == 0 ? d.c0 : d.state(d.C, s - 1)) : nullptr;
    T* h = d.state(d.S, s);
    T* c = kind == LSTM ? d.state(d.C, s) : nullptr;
    const T* hin = hp;
    if (d.mask) {
      for (int64_t k = 0; k < static_cast<int64_t>(B) * H; ++k) hm[k] = d.mask[k] * hp[k];
      hin = hm.data();
    }
    mm_nt<T>(B, GH, H, hin, H, d.w, H, T(0), gh.data(), GH);  // (B, G*H)
    for (int b = 0; b < B; ++b) {
      const T* hpb = hp + static_cast<int64_t>(b) * H;
      T* hb = h + static_cast<int64_t>(b) * H;
      if (s >= d.length(b)) {  // past this row's end: keep its state, output stays zero
        std::memcpy(hb, hpb, sizeof(T) * H);
        if (c) std::memcpy(c + static_cast<int64_t>(b) * H, cp + static_cast<int64_t>(b) * H, sizeof(T) * H);
        continue;
      }
      const int t = d.time(b, s);
      const T* __restrict x = d.xi + b * d.xi_sb + t * d.xi_st;
      const T* __restrict g = gh.data() + static_cast<int64_t>(b) * GH;
      T* __restrict o = d.out + b * d.out_sb + t * d.out_st;
      T* __restrict a = d.train ? d.A + (static_cast<int64_t>(s) * B + b) * GA : nullptr;
      if (kind == GRU) {
        for (int j = 0; j < H; ++j) {
          T br = bias ? bias[j] : T(0), bz = bias ? bias[H + j] : T(0), bn = bias ? bias[2 * H + j] : T(0);
          T r = vsigmoid(x[j] + g[j] + br);
          T z = vsigmoid(x[H + j] + g[H + j] + bz);
          T hn = g[2 * H + j] + bn;
          T n = vtanh(x[2 * H + j] + r * hn);
          T hv = n + z * (hpb[j] - n);
          hb[j] = hv;
          o[j] = hv;
          if (a) { a[j] = r; a[H + j] = z; a[2 * H + j] = n; a[3 * H + j] = hn; }
        }
      } else {
        const T* cpb = cp + static_cast<int64_t>(b) * H;
        T* cb = c + static_cast<int64_t>(b) * H;
        for (int j = 0; j < H; ++j) {
          T bi = bias ? bias[j] : T(0), bf = bias ? bias[H + j] : T(0);
          T bg = bias ? bias[2 * H + j] : T(0), bo = bias ? bias[3 * H + j] : T(0);
          T i = vsigmoid(x[j] + g[j] + bi);
          T f = vsigmoid(x[H + j] + g[H + j] + bf);
          T gg = vtanh(x[2 * H + j] + g[2 * H + j] + bg);
          T og = vsigmoid(x[3 * H + j] + g[3 * H + j] + bo);
          T cv = f * cpb[j] + i * gg;
          T tc = vtanh(cv);
          T hv = og * tc;
          cb[j] = cv;
          hb[j] = hv;
          o[j] = hv;
          if (a) { a[j] = i; a[H + j] = f; a[2 * H + j] = gg; a[3 * H + j] = og; a[4 * H + j] = tc; }
        }
      }
    }
  }
  const T* hl = d.steps > 0 ? d.state(d.S, d.steps - 1) : d.h0;
  std::memcpy(d.hN, hl, sizeof(T) * B * H);
  if (kind == LSTM) std::memcpy(d.cN, d.steps > 0 ? d.state(d.C, d.steps - 1) : d.c0, sizeof(T) * B * H);
}

template <typename T> struct Grad {
  const T* dout; int64_t dout_sb, dout_st;  // d loss / d out[b, t, :]
  const T* dhN; const T* dcN;              // (B, H), may be null (no gradient)
  T* dxi; int64_t dxi_sb, dxi_st;          // (B, T, G*H) zero-filled by the caller when padded
  T* dG;                                   // (steps, B, G*H): d pre-activations of W_hh h
  T* dh0; T* dc0;                          // (B, H)
};

template <typename T> void backward_direction(int kind, const Direction<T>& d, Grad<T>& q) {
  const int B = d.B, H = d.H, GH = d.G * H, GA = saved_width<T>(kind, H);
  const int64_t BH = static_cast<int64_t>(B) * H;
  std::vector<T> dh(BH, T(0)), dc(kind == LSTM ? BH : 0, T(0)), tmp(d.mask ? BH : 0);
  if (q.dhN) std::copy(q.dhN, q.dhN + BH, dh.begin());
  if (kind == LSTM && q.dcN) std::copy(q.dcN, q.dcN + BH, dc.begin());
  for (int s = d.steps - 1; s >= 0; --s) {
    const T* hp = s == 0 ? d.h0 : d.state(d.S, s - 1);
    const T* cp = kind == LSTM ? (s == 0 ? d.c0 : d.state(d.C, s - 1)) : nullptr;
    T* dGs = q.dG + static_cast<int64_t>(s) * B * GH;
    for (int b = 0; b < B; ++b) {
      T* __restrict dgb = dGs + static_cast<int64_t>(b) * GH;
      T* __restrict dhb = dh.data() + static_cast<int64_t>(b) * H;
      if (s >= d.length(b)) {  // the state was only carried: the gradient passes through
        std::fill(dgb, dgb + GH, T(0));
        continue;
      }
      const int t = d.time(b, s);
      const T* __restrict a = d.A + (static_cast<int64_t>(s) * B + b) * GA;
      const T* __restrict go = q.dout + b * q.dout_sb + t * q.dout_st;
      T* __restrict dx = q.dxi + b * q.dxi_sb + t * q.dxi_st;
      const T* __restrict hpb = hp + static_cast<int64_t>(b) * H;
      if (kind == GRU) {
        for (int j = 0; j < H; ++j) {
          T r = a[j], z = a[H + j], n = a[2 * H + j], hn = a[3 * H + j];
          T g = dhb[j] + go[j];
          T dn = g * (T(1) - z);
          T dz = g * (hpb[j] - n);
          T dnp = dn * (T(1) - n * n);
          T drp = dnp * hn * r * (T(1) - r);
          T dzp = dz * z * (T(1) - z);
          dgb[j] = drp; dgb[H + j] = dzp; dgb[2 * H + j] = dnp * r;
          dx[j] = drp; dx[H + j] = dzp; dx[2 * H + j] = dnp;
          dhb[j] = g * z;  // the carry term z * h_prev; the GEMM part is added below
        }
      } else {
        T* __restrict dcb = dc.data() + static_cast<int64_t>(b) * H;
        const T* __restrict cpb = cp + static_cast<int64_t>(b) * H;
        for (int j = 0; j < H; ++j) {
          T i = a[j], f = a[H + j], gg = a[2 * H + j], o = a[3 * H + j], tc = a[4 * H + j];
          T g = dhb[j] + go[j];
          T dcv = dcb[j] + g * o * (T(1) - tc * tc);
          T dip = dcv * gg * i * (T(1) - i);
          T dfp = dcv * cpb[j] * f * (T(1) - f);
          T dgp = dcv * i * (T(1) - gg * gg);
          T dop = g * tc * o * (T(1) - o);
          dgb[j] = dip; dgb[H + j] = dfp; dgb[2 * H + j] = dgp; dgb[3 * H + j] = dop;
          dx[j] = dip; dx[H + j] = dfp; dx[2 * H + j] = dgp; dx[3 * H + j] = dop;
          dcb[j] = dcv * f;
          dhb[j] = T(0);
        }
      }
    }
    // d h_prev += m * (dG_s W_hh); rows past their end have dG = 0 and keep their carry.
    if (d.mask) {
      mm_nn<T>(B, H, GH, dGs, GH, d.w, H, T(0), tmp.data(), H);
      for (int64_t k = 0; k < BH; ++k) dh[k] += d.mask[k] * tmp[k];
    } else {
      mm_nn<T>(B, H, GH, dGs, GH, d.w, H, T(1), dh.data(), H);
    }
  }
  std::copy(dh.begin(), dh.end(), q.dh0);
  if (kind == LSTM) std::copy(dc.begin(), dc.end(), q.dc0);
}

// -------------------------------------------------------------------- the entry points

struct Options {
  int64_t kind;
  bool train;
};

// Directions run concurrently on torch's own thread pool (at::parallel_for, one direction per
// thread); BLAS called inside a parallel region runs single-threaded, as wanted here.
void run_directions(std::vector<std::function<void()>>& jobs) {
  if (jobs.size() == 1) {
    jobs[0]();
    return;
  }
  at::parallel_for(0, static_cast<int64_t>(jobs.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) jobs[k]();
  });
}

void check(bool ok, const std::string& what) { TORCH_CHECK(ok, "rnnkit compiled recurrence: ", what); }

// Optional tensors cross from Python as empty tensors.
bool present(const at::Tensor& t) { return t.defined() && t.numel() > 0; }

// Per direction k: xi[k] (B, T, G*H) with unit last stride, h0[k], c0[k] (LSTM) (B, H),
// w[k] (G*H, H), bias[k] (G*H) or undefined, mask[k] (B, H) or undefined, reverse[k].
// out (B, T, sum H): direction k writes columns [offset_k, offset_k + H_k).
// Returns [out, then per direction: hN, cN (LSTM), S, C (LSTM), A] (S, C, A empty unless train).
std::vector<at::Tensor> forward(int64_t kind, bool train, const at::Tensor& lengths,
                                std::vector<at::Tensor> xi, std::vector<at::Tensor> h0,
                                std::vector<at::Tensor> c0, std::vector<at::Tensor> w,
                                std::vector<at::Tensor> bias, std::vector<at::Tensor> mask,
                                std::vector<bool> reverse) {
  const size_t nd = xi.size();
  check(nd >= 1 && h0.size() == nd && w.size() == nd && bias.size() == nd && mask.size() == nd &&
            reverse.size() == nd && (kind == GRU || c0.size() == nd),
        "one entry per direction in every list");
  const int B = static_cast<int>(xi[0].size(0)), T_ = static_cast<int>(xi[0].size(1));
  const int G = kind == GRU ? 3 : 4;
  at::Tensor len;
  int steps = T_;
  if (present(lengths)) {
    len = lengths.to(at::kLong).contiguous();
    steps = static_cast<int>(len.max().item<int64_t>());
  }
  int64_t total = 0;
  std::vector<int64_t> offset;
  for (size_t k = 0; k < nd; ++k) {
    offset.push_back(total);
    total += w[k].size(1);
  }
  auto opts = xi[0].options();
  at::Tensor out = present(lengths) ? at::zeros({B, T_, total}, opts) : at::empty({B, T_, total}, opts);
  std::vector<at::Tensor> results{out};
  std::vector<Direction<float>> df;
  std::vector<Direction<double>> dd;
  std::vector<std::function<void()>> jobs;
  std::vector<at::Tensor> keep;  // contiguous copies that must outlive the jobs
  AT_DISPATCH_FLOATING_TYPES(xi[0].scalar_type(), "rnnkit_forward", [&] {
    std::vector<Direction<scalar_t>> dirs(nd);
    for (size_t k = 0; k < nd; ++k) {
      const int H = static_cast<int>(w[k].size(1));
      check(xi[k].size(2) == G * H && xi[k].stride(2) == 1, "xi must be (B, T, G*H) with unit last stride");
      auto wk = w[k].contiguous(), h0k = h0[k].contiguous();
      keep.insert(keep.end(), {wk, h0k});
      auto& d = dirs[k];
      d.B = B; d.T_ = T_; d.H = H; d.G = G; d.steps = steps; d.reverse = reverse[k]; d.train = train;
      d.len = len.defined() ? len.data_ptr<int64_t>() : nullptr;
      d.xi = xi[k].data_ptr<scalar_t>(); d.xi_sb = xi[k].stride(0); d.xi_st = xi[k].stride(1);
      d.w = wk.data_ptr<scalar_t>();
      if (present(bias[k])) { auto bk = bias[k].contiguous(); keep.push_back(bk); d.bias = bk.data_ptr<scalar_t>(); }
      else d.bias = nullptr;
      if (present(mask[k])) { auto mk = mask[k].contiguous(); keep.push_back(mk); d.mask = mk.data_ptr<scalar_t>(); }
      else d.mask = nullptr;
      d.h0 = h0k.data_ptr<scalar_t>();
      d.out = out.data_ptr<scalar_t>() + offset[k]; d.out_sb = out.stride(0); d.out_st = out.stride(1);
      auto hN = at::empty({B, H}, opts);
      auto S = at::empty({train ? steps : 2, B, H}, opts);
      d.S = S.data_ptr<scalar_t>(); d.hN = hN.data_ptr<scalar_t>();
      keep.push_back(S);  // at inference S (and C) are scratch, not returned
      results.push_back(hN);
      at::Tensor C, cN;
      if (kind == LSTM) {
        auto c0k = c0[k].contiguous();
        keep.push_back(c0k);
        d.c0 = c0k.data_ptr<scalar_t>();
        cN = at::empty({B, H}, opts);
        C = at::empty({train ? steps : 2, B, H}, opts);
        d.C = C.data_ptr<scalar_t>(); d.cN = cN.data_ptr<scalar_t>();
        keep.push_back(C);
        results.push_back(cN);
      } else {
        d.c0 = nullptr; d.C = nullptr; d.cN = nullptr;
      }
      at::Tensor A = train ? at::empty({steps, B, saved_width<scalar_t>(kind, H)}, opts) : at::empty({0}, opts);
      d.A = train ? A.data_ptr<scalar_t>() : nullptr;
      results.push_back(train ? S : at::empty({0}, opts));
      if (kind == LSTM) results.push_back(train ? C : at::empty({0}, opts));
      results.push_back(A);
    }
    for (size_t k = 0; k < nd; ++k) jobs.emplace_back([&dirs, k, kind] { forward_direction<scalar_t>(kind, dirs[k]); });
    run_directions(jobs);
  });
  return results;
}

// Gradients per direction: [dxi (B, T, G*H), dh0, dc0 (LSTM), dW_hh, db_hh (if bias)].
std::vector<at::Tensor> backward(int64_t kind, const at::Tensor& lengths, const at::Tensor& dout,
                                 std::vector<at::Tensor> xi, std::vector<at::Tensor> h0,
                                 std::vector<at::Tensor> c0, std::vector<at::Tensor> w,
                                 std::vector<at::Tensor> bias, std::vector<at::Tensor> mask,
                                 std::vector<bool> reverse, std::vector<at::Tensor> S,
                                 std::vector<at::Tensor> C, std::vector<at::Tensor> A,
                                 std::vector<at::Tensor> dhN, std::vector<at::Tensor> dcN) {
  const size_t nd = xi.size();
  const int B = static_cast<int>(xi[0].size(0)), T_ = static_cast<int>(xi[0].size(1));
  const int G = kind == GRU ? 3 : 4;
  at::Tensor len;
  int steps = T_;
  if (present(lengths)) {
    len = lengths.to(at::kLong).contiguous();
    steps = static_cast<int>(len.max().item<int64_t>());
  }
  auto opts = xi[0].options();
  at::Tensor go = dout.stride(2) == 1 ? dout : dout.contiguous();
  std::vector<at::Tensor> keep, dG(nd), dxi(nd), dh0(nd), dc0(nd);
  std::vector<std::function<void()>> jobs;
  int64_t offset = 0;
  AT_DISPATCH_FLOATING_TYPES(xi[0].scalar_type(), "rnnkit_backward", [&] {
    std::vector<Direction<scalar_t>> dirs(nd);
    std::vector<Grad<scalar_t>> grads(nd);
    for (size_t k = 0; k < nd; ++k) {
      const int H = static_cast<int>(w[k].size(1));
      auto wk = w[k].contiguous(), h0k = h0[k].contiguous();
      keep.insert(keep.end(), {wk, h0k});
      auto& d = dirs[k];
      d.B = B; d.T_ = T_; d.H = H; d.G = G; d.steps = steps; d.reverse = reverse[k]; d.train = true;
      d.len = len.defined() ? len.data_ptr<int64_t>() : nullptr;
      d.w = wk.data_ptr<scalar_t>();
      d.bias = nullptr;
      if (present(mask[k])) { auto mk = mask[k].contiguous(); keep.push_back(mk); d.mask = mk.data_ptr<scalar_t>(); }
      else d.mask = nullptr;
      d.h0 = h0k.data_ptr<scalar_t>();
      d.S = S[k].data_ptr<scalar_t>(); d.A = A[k].data_ptr<scalar_t>();
      if (kind == LSTM) {
        auto c0k = c0[k].contiguous();
        keep.push_back(c0k);
        d.c0 = c0k.data_ptr<scalar_t>(); d.C = C[k].data_ptr<scalar_t>();
      } else {
        d.c0 = nullptr; d.C = nullptr;
      }
      auto& q = grads[k];
      q.dout = go.data_ptr<scalar_t>() + offset; q.dout_sb = go.stride(0); q.dout_st = go.stride(1);
      offset += H;
      dxi[k] = present(lengths) ? at::zeros({B, T_, G * H}, opts) : at::empty({B, T_, G * H}, opts);
      q.dxi = dxi[k].data_ptr<scalar_t>(); q.dxi_sb = dxi[k].stride(0); q.dxi_st = dxi[k].stride(1);
      dG[k] = at::empty({steps, B, G * H}, opts);
      q.dG = dG[k].data_ptr<scalar_t>();
      dh0[k] = at::empty({B, H}, opts);
      q.dh0 = dh0[k].data_ptr<scalar_t>();
      if (present(dhN[k])) { auto t = dhN[k].contiguous(); keep.push_back(t); q.dhN = t.data_ptr<scalar_t>(); }
      else q.dhN = nullptr;
      if (kind == LSTM) {
        dc0[k] = at::empty({B, H}, opts);
        q.dc0 = dc0[k].data_ptr<scalar_t>();
        if (present(dcN[k])) { auto t = dcN[k].contiguous(); keep.push_back(t); q.dcN = t.data_ptr<scalar_t>(); }
        else q.dcN = nullptr;
      } else {
        q.dc0 = nullptr; q.dcN = nullptr;
      }
    }
    for (size_t k = 0; k < nd; ++k)
      jobs.emplace_back([&dirs, &grads, k, kind] { backward_direction<scalar_t>(kind, dirs[k], grads[k]); });
    run_directions(jobs);
  });
  // Weight gradients: one big GEMM per direction over all steps, dW_hh = dG^T (m * H_prev).
  std::vector<at::Tensor> results;
  for (size_t k = 0; k < nd; ++k) {
    const int64_t H = w[k].size(1);
    at::Tensor hprev = at::cat({h0[k].unsqueeze(0), S[k].narrow(0, 0, steps - 1)}, 0).view({-1, H});
    if (present(mask[k])) hprev = (hprev.view({steps, B, H}) * mask[k]).view({-1, H});
    at::Tensor g = dG[k].view({-1, G * H});
    results.push_back(dxi[k]);
    results.push_back(dh0[k]);
    if (kind == LSTM) results.push_back(dc0[k]);
    results.push_back(at::mm(g.t(), hprev));
    results.push_back(present(bias[k]) ? g.sum(0) : at::Tensor());
  }
  return results;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rnnkit's compiled GRU/LSTM time loop (forward and backward through time)";
  m.def("forward", &forward, "forward through time");
  m.def("backward", &backward, "backward through time");
}
