// rnnkit's compiled time loop: GRU, LSTM and their layer-norm variants, forward and backward
// through time on the CPU.
//
// What it computes is exactly rnnkit.cells.GRUCell / LSTMCell / LayerNormGRUCell /
// LayerNormLSTMCell run over time (see those docstrings for the equations and the gate order
// r, z, n / i, f, g, o). The input half has no recurrence in it: x W_ih^T (+ b_ih) is one
// product per chunk of steps (project_chunk, 256 rows of steps x batch), done in the loop
// just before those steps, so that it is still in cache when they read it. Per step s:
//
//     gh = (m * h_prev) W_hh^T              one small GEMM (B, H) x (H, G*H), our own kernel
//     gates, state = fused elementwise math  one pass over (B, G*H), our own vectorised loop
//                                            (the layer-norm kinds: LN_ih of the row's input
//                                            half and LN_hh per gate, and LN_LSTM's LN_c)
//
// saving the gate activations (and the normalised values and 1/std of each layer norm) so that
// the backward pass is, per step, elementwise math plus one small GEMM (B, G*H) x (G*H, H),
// and per chunk of steps, while its d gates are in cache, the chunk's share of the weight
// gradients and its rows of dx (backward_chunk).
//
// Variable lengths: row b does real work only while s < len_b; after that its state is kept
// (so the final state is the one at its own end) and its output stays zero. reverse=true reads
// each row from its own last real step back to its first, i.e. step s reads time len_b-1-s:
// the per-sequence reversal of recurrence.reverse_padded, done by the gather of each chunk's
// input rows before their projection.
//
// Several directions (a bidirectional layer) run concurrently, one of torch's intra-op threads
// each (on_torch_threads).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace {

// ------------------------------------------------------------------ small GEMM
//
// The products here are small or skinny ((B, H) x (H, G*H) per step, B, H ~ 16..256) and run
// inside a direction's own thread, thousands of times per call: a BLAS call per step costs
// more in dispatch and threading decisions than the product itself. The kernel follows the
// usual blocked scheme (Goto & van de Geijn 2008), kept small:
//
// * B is packed: per block of kDepth rows of k, per panel of NR columns (two 512-bit vectors),
//   a contiguous kk x NR tile, the last panel zero-padded. Unpacked, the rows of a panel lie
//   N floats apart -- 4 KB for N = 1024 -- and all map to the same few L1 sets, so the panel
//   never stayed in L1 (measured: 171 -> 243 GFLOP/s for (64, 1024) x (1024, 256) on one core).
//   The recurrent weights are packed once per call and reused by every step.
// * Rows of A go in blocks of kBlockRows, so that the A block stays in L2 while every panel of
//   B passes over it (a 6400-row input projection: 138 -> 204 GFLOP/s).
// * The register tile is 8 rows x NR columns of accumulators (16 vector registers), one
//   broadcast of A and two vector loads of B per 16 FMAs.

constexpr int kRows = 8, kDepth = 128, kBlockRows = 96;
// NR: two vectors -- 32 floats / 16 doubles with AVX-512 (8 x 2 accumulators of its 32
// registers), 16 / 8 with AVX2 (whose 16 registers 8 x 4 would spill).
#if defined(__AVX512F__)
template <typename T> constexpr int panel_width() { return 128 / sizeof(T); }
#else
template <typename T> constexpr int panel_width() { return 64 / sizeof(T); }
#endif

template <typename T> int64_t packed_size(int N, int K) {
  constexpr int NR = panel_width<T>();
  return static_cast<int64_t>(K) * ((N + NR - 1) / NR) * NR;
}

// P <- B (K, N) (leading dimension ldb) in the panel layout above; with TRANS_B, B = W^T for W
// (N, K) as it lies, ldb its leading dimension (forward's weights: no transposed copy first).
template <typename T, bool TRANS_B = false> void pack_b(int N, int K, const T* B, int64_t ldb, T* P) {
  constexpr int NR = panel_width<T>();
  const int np = (N + NR - 1) / NR;
  for (int k0 = 0; k0 < K; k0 += kDepth) {
    const int kk = std::min(kDepth, K - k0);
    for (int p = 0; p < np; ++p) {
      T* dst = P + static_cast<int64_t>(k0) * np * NR + static_cast<int64_t>(p) * kk * NR;
      const int c0 = p * NR, nv = std::min(NR, N - c0);
      if constexpr (TRANS_B) {  // a row of W is a column of the tile: read along it
        for (int j = 0; j < NR; ++j) {
          const T* src = B + static_cast<int64_t>(c0 + j) * ldb + k0;
          for (int k = 0; k < kk; ++k) dst[k * NR + j] = j < nv ? src[k] : T(0);
        }
      } else {
        for (int k = 0; k < kk; ++k) {
          const T* src = B + static_cast<int64_t>(k0 + k) * ldb + c0;
          for (int j = 0; j < NR; ++j) dst[k * NR + j] = j < nv ? src[j] : T(0);
        }
      }
    }
  }
}

// C (R, nv) (+)= op(A) (R, K) times one packed panel (K, NR). A is (R, K) with leading
// dimension lda, or, when TRANS_A, stored (K, R) (weight gradients: K runs over steps x rows).
template <typename T, int R, bool TRANS_A>
inline void gemm_tile(int K, const T* __restrict A, int64_t lda, const T* __restrict B, T* __restrict C,
                      int64_t ldc, bool accumulate, int nv) {
  constexpr int NR = panel_width<T>();
  T c[R][NR];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NR; ++j) c[r][j] = T(0);
  for (int k = 0; k < K; ++k) {
    const T* __restrict b = B + k * NR;
    for (int r = 0; r < R; ++r) {
      const T a = TRANS_A ? A[k * lda + r] : A[r * lda + k];
      for (int j = 0; j < NR; ++j) c[r][j] += a * b[j];
    }
  }
  if (nv == NR) {
    if (accumulate) {
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < NR; ++j) C[r * ldc + j] += c[r][j];
    } else {
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < NR; ++j) C[r * ldc + j] = c[r][j];
    }
  } else {
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < nv; ++j) C[r * ldc + j] = accumulate ? C[r * ldc + j] + c[r][j] : c[r][j];
  }
}

// C (M, N) (+)= op(A) B, row-major, with B given packed (pack_b); op(A) = A (M, K), or A^T
// with A stored (K, M) if TRANS_A.
//
// Loop order: a block of kBlockRows rows of A (in L2) meets every panel of B; for each panel
// the k-blocks run innermost, so that the block's C tiles stay in L1 until their sum is
// complete and C goes to memory once -- C of an input projection (B*T, G*H) is tens of MB,
// and writing it once per k-block more than doubled its memory traffic (one core, 6400 x 256
// times 256 x 1024: 173 -> 203 GFLOP/s). Weight gradients (TRANS_A) have a small C (the
// weight's size) and a very long k (steps x rows): there the k-block is outermost, so that
// its slice of A stays in L2 while all of C is updated.
template <typename T, bool TRANS_A = false>
void gemm_packed(int M, int N, int K, const T* A, int64_t lda, const T* P, T* C, int64_t ldc, bool accumulate) {
  constexpr int NR = panel_width<T>();
  const int np = (N + NR - 1) / NR;
  auto block = [&](int k0, int i0, int p) {
    const int kk = std::min(kDepth, K - k0), i1 = std::min(M, i0 + kBlockRows);
    const bool acc = accumulate || k0 > 0;
    const T* Ak = TRANS_A ? A + static_cast<int64_t>(k0) * lda : A + k0;
    auto a = [&](int i) { return TRANS_A ? Ak + i : Ak + static_cast<int64_t>(i) * lda; };
    const T* Bp = P + static_cast<int64_t>(k0) * np * NR + static_cast<int64_t>(p) * kk * NR;
    const int nv = std::min(NR, N - p * NR);
    T* Cp = C + p * NR;
    int i = i0;
    for (; i + kRows <= i1; i += kRows)
      gemm_tile<T, kRows, TRANS_A>(kk, a(i), lda, Bp, Cp + static_cast<int64_t>(i) * ldc, ldc, acc, nv);
    for (; i + 4 <= i1; i += 4)
      gemm_tile<T, 4, TRANS_A>(kk, a(i), lda, Bp, Cp + static_cast<int64_t>(i) * ldc, ldc, acc, nv);
    for (; i < i1; ++i)
      gemm_tile<T, 1, TRANS_A>(kk, a(i), lda, Bp, Cp + static_cast<int64_t>(i) * ldc, ldc, acc, nv);
  };
  if (TRANS_A) {
    for (int k0 = 0; k0 < K; k0 += kDepth)
      for (int i0 = 0; i0 < M; i0 += kBlockRows)
        for (int p = 0; p < np; ++p) block(k0, i0, p);
  } else {
    for (int i0 = 0; i0 < M; i0 += kBlockRows)
      for (int p = 0; p < np; ++p)
        for (int k0 = 0; k0 < K; k0 += kDepth) block(k0, i0, p);
  }
}

// Runs job(0) .. job(n - 1) concurrently on torch's intra-op threads (at::parallel_for, one
// job per thread; serially when torch has one thread or the caller already is inside a
// parallel region). Not threads of our own: torch's OpenMP workers spin for a while after
// each of torch's parallel ops, and a thread of ours then shared its core with a spinning
// worker -- with our own threads, 42 % of the CPU time of a BiLSTM (32, 50, 128) training
// step on the C++ loop was libgomp's spin, and the step ran at half the speed it has here,
// where the spinning worker is the one that picks up the second job.
std::atomic<int64_t> jobs_on_workers{0};  // jobs run by a thread other than the caller's (tests)

template <typename F> void on_torch_threads(int64_t n, const F& job) {
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    if (at::get_thread_num() != 0) jobs_on_workers += end - begin;
    for (int64_t k = begin; k < end; ++k) job(k);
  });
}

// Waits until ready() holds: spinning at first (the other thread is torch's, normally on a
// core of its own, and the wait short), then yielding the core, in case both threads share one
// (a CPU quota, other processes, several calls at once): spinning there waited for a
// scheduler tick per hand-off.
template <typename F> void wait_until(const F& ready) {
  for (int spins = 0; !ready(); ++spins) {
#if defined(__x86_64__) || defined(__i386__)
    if (spins < 4096) {
      __builtin_ia32_pause();
      continue;
    }
#endif
    std::this_thread::yield();
  }
}

// Workers for the one-off products of this thread's direction: 2 when a layer runs one
// direction and torch may use two threads (the second core would otherwise idle while
// backward's weight and input gradients run), else 1. Set per job by the entry points; forward
// with two threads pipelines its projections instead (forward_direction).
thread_local int gemm_workers = 1;
std::atomic<int64_t> gemm_splits{0};  // products split so far (tests check that it happens)

// Rows (steps x batch) of the input projection per chunk (project_chunk, backward_chunk). A
// BiLSTM (64, 100, 256) x 2 inference call, fresh processes: 61-63k tokens/s with all steps
// projected at once, 70-73k with chunks of 1024 rows, 76-81k with 64-256.
std::atomic<int64_t> projection_chunk_rows{256};
inline int chunk_steps(int B, int steps) {
  const int64_t rows = projection_chunk_rows.load();
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(steps, (rows + B - 1) / B)));
}

// Below kSplitMacs multiply-adds a product stays on one thread (about 17 us of one core):
// handing half of it to a second thread costs about as much as it saves. kPipelineMacs: see
// forward().
constexpr int64_t kSplitMacs = int64_t(1) << 21, kPipelineMacs = int64_t(1) << 21;
// A layer of one direction whose batch has an even number of rows, at least 2 * batch_half_rows,
// runs as two halves of the batch, one per thread (batch_half): the rows of a batch are
// independent recurrences, so the halves need no hand-off at all, and each thread does half of
// everything -- projections, steps, gate arithmetic. Below that (or with an odd batch) it takes
// the projection pipeline. 8 rows: one register tile of the GEMM (kRows).
std::atomic<int64_t> batch_half_rows{kRows};

// C (M, N) (+)= op(A) B with B packed (pack_b), on this thread alone or, with gemm_workers = 2,
// with the rows of C split between this thread and one more; each element is summed in the
// same order either way, so the result is the same to the bit.
template <typename T, bool TRANS_A = false>
void gemm_shared(int M, int N, int K, const T* A, int64_t lda, const T* P, T* C, int64_t ldc, bool accumulate) {
  const int half = M / 2 / kRows * kRows;
  if (gemm_workers < 2 || half < 4 * kRows || static_cast<int64_t>(M) * N * K < kSplitMacs) {
    gemm_packed<T, TRANS_A>(M, N, K, A, lda, P, C, ldc, accumulate);
    return;
  }
  ++gemm_splits;
  const T* A2 = TRANS_A ? A + half : A + static_cast<int64_t>(half) * lda;
  T* C2 = C + static_cast<int64_t>(half) * ldc;
  // gemm_packed allocates nothing and throws nothing: the workers need no exception guard.
  on_torch_threads(2, [&](int64_t part) {
    if (part == 0) gemm_packed<T, TRANS_A>(half, N, K, A, lda, P, C, ldc, accumulate);
    else gemm_packed<T, TRANS_A>(M - half, N, K, A2, lda, P, C2, ldc, accumulate);
  });
}

// The same with B as it lies (K, N), packed here (for the one-off products: weight gradients
// and the input gradient, where packing costs K*N against M*N*K of work; the buffer is freed
// after, so that no thread keeps the largest one it ever saw).
template <typename T, bool TRANS_A = false>
void gemm(int M, int N, int K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc,
          bool accumulate) {
  std::vector<T> packed(static_cast<size_t>(packed_size<T>(N, K)));
  pack_b<T>(N, K, B, ldb, packed.data());
  gemm_shared<T, TRANS_A>(M, N, K, A, lda, packed.data(), C, ldc, accumulate);
}

// C (M, N) += A (K, M)^T B (K, N).
template <typename T>
void gemm_at(int M, int N, int K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc) {
  gemm<T, true>(M, N, K, A, lda, B, ldb, C, ldc, true);
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

// ------------------------------------------------------------------ one row, one step
//
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

// GRU forward: x = xi row (3H), g = W_hh h row (3H), bias (3H, zeros if none), hp (H);
// writes h, out (H) and the saved r, z, n, hn (4H).
template <typename T>
__attribute__((noinline)) void gru_row(int H, const T* __restrict x, const T* __restrict g, const T* __restrict bias,
                                       const T* __restrict hp, T* __restrict h, T* __restrict out,
                                       T* __restrict a) {
  RNNKIT_IVDEP
  for (int j = 0; j < H; ++j) {
    T r = vsigmoid(x[j] + g[j] + bias[j]);
    T z = vsigmoid(x[H + j] + g[H + j] + bias[H + j]);
    T hn = g[2 * H + j] + bias[2 * H + j];
    T n = vtanh(x[2 * H + j] + r * hn);
    T hv = n + z * (hp[j] - n);
    h[j] = hv;
    out[j] = hv;
    a[j] = r; a[H + j] = z; a[2 * H + j] = n; a[3 * H + j] = hn;
  }
}

// LSTM forward: writes h, c, out (H) and the saved i, f, g, o, tanh(c) (5H).
template <typename T>
__attribute__((noinline)) void lstm_row(int H, const T* __restrict x, const T* __restrict g, const T* __restrict bias,
                                        const T* __restrict cp, T* __restrict h, T* __restrict c,
                                        T* __restrict out, T* __restrict a) {
  RNNKIT_IVDEP
  for (int j = 0; j < H; ++j) {
    T i = vsigmoid(x[j] + g[j] + bias[j]);
    T f = vsigmoid(x[H + j] + g[H + j] + bias[H + j]);
    T gg = vtanh(x[2 * H + j] + g[2 * H + j] + bias[2 * H + j]);
    T o = vsigmoid(x[3 * H + j] + g[3 * H + j] + bias[3 * H + j]);
    T cv = f * cp[j] + i * gg;
    T tc = vtanh(cv);
    T hv = o * tc;
    c[j] = cv;
    h[j] = hv;
    out[j] = hv;
    a[j] = i; a[H + j] = f; a[2 * H + j] = gg; a[3 * H + j] = o; a[4 * H + j] = tc;
  }
}

// GRU backward: dh (H) in: carried gradient, out: the carry term z * dh of h_prev (the GEMM
// part is added by the caller); go = d out row; writes dG (3H, w.r.t. W_hh h + b_hh) and dx
// (3H, w.r.t. xi).
template <typename T>
__attribute__((noinline)) void gru_row_backward(int H, const T* __restrict a, const T* __restrict hp,
                                                const T* __restrict go, T* __restrict dh, T* __restrict dg,
                                                T* __restrict dx) {
  RNNKIT_IVDEP
  for (int j = 0; j < H; ++j) {
    T r = a[j], z = a[H + j], n = a[2 * H + j], hn = a[3 * H + j];
    T g = dh[j] + go[j];
    T dn = g * (T(1) - z);
    T dz = g * (hp[j] - n);
    T dnp = dn * (T(1) - n * n);
    T drp = dnp * hn * r * (T(1) - r);
    T dzp = dz * z * (T(1) - z);
    dg[j] = drp; dg[H + j] = dzp; dg[2 * H + j] = dnp * r;
    dx[j] = drp; dx[H + j] = dzp; dx[2 * H + j] = dnp;
    dh[j] = g * z;
  }
}

// LSTM backward: dh, dc (H) carried in; dc out = dc_prev, dh out = 0 (all of d h_prev comes
// through the GEMM); writes dG = dx (4H).
template <typename T>
__attribute__((noinline)) void lstm_row_backward(int H, const T* __restrict a, const T* __restrict cp,
                                                 const T* __restrict go, T* __restrict dh, T* __restrict dc,
                                                 T* __restrict dg, T* __restrict dx) {
  RNNKIT_IVDEP
  for (int j = 0; j < H; ++j) {
    T i = a[j], f = a[H + j], gg = a[2 * H + j], o = a[3 * H + j], tc = a[4 * H + j];
    T g = dh[j] + go[j];
    T dcv = dc[j] + g * o * (T(1) - tc * tc);
    T dip = dcv * gg * i * (T(1) - i);
    T dfp = dcv * cp[j] * f * (T(1) - f);
    T dgp = dcv * i * (T(1) - gg * gg);
    T dop = g * tc * o * (T(1) - o);
    dg[j] = dip; dg[H + j] = dfp; dg[2 * H + j] = dgp; dg[3 * H + j] = dop;
    dx[j] = dip; dx[H + j] = dfp; dx[2 * H + j] = dgp; dx[3 * H + j] = dop;
    dc[j] = dcv * f;
    dh[j] = T(0);
  }
}

// ----------------------------------------------------------------------- one direction

// LN_GRU / LN_LSTM: cells.LayerNormGRUCell / LayerNormLSTMCell -- the GRU / LSTM step with
// LN_hh(W_hh h) (per gate, gain and shift (G, H)) in place of W_hh h + b_hh; LN_LSTM also
// normalises the cell state before its tanh (LN_c, gain_c and shift_c (H,)). Their LN_ih is
// applied in the loop to each row's projection W_ih x (no b_ih) as a step reads it. Both
// products are taken with centred weights (centred_gates), so each gate's mean is gone before
// its layer norm.
enum Kind { GRU = 0, LSTM = 1, LN_GRU = 2, LN_LSTM = 3 };

inline bool has_cell(int kind) { return kind == LSTM || kind == LN_LSTM; }
inline bool is_layer_norm(int kind) { return kind == LN_GRU || kind == LN_LSTM; }
inline int gates(int kind) { return has_cell(kind) ? 4 : 3; }
// Rows of the per-direction gain / shift tensors: LN_hh's G, then LN_c's one (LN_LSTM), then
// (from row ln_rows on) LN_ih's G: ln_all_rows in all.
inline int ln_rows(int kind) { return kind == LN_GRU ? 3 : kind == LN_LSTM ? 5 : 0; }
inline int ln_all_rows(int kind) { return ln_rows(kind) + gates(kind); }

template <typename T> struct Direction {
  int B, T_, H, G;               // batch, time, hidden, gates (3 or 4)
  int steps;                     // max length (T when there are no lengths)
  bool reverse, train;
  const int64_t* len;            // (B,) or null = all T
  // The input half, x W_ih^T (+ b_ih), projected in the loop a chunk of steps at a time:
  const T* x; int D;             // (B, T, D) contiguous
  const T* wi;                   // W_ih (G*H, D) contiguous
  const T* bias_ih;              // b_ih (G*H,) or null
  int chunk;                     // steps per chunk
  bool pipeline;                 // project on a second thread, ahead of the steps (one direction)
  T* xa; T* xi;                  // scratch (chunk * B, D): the chunk's inputs, (chunk * B, G*H): theirs
                                 // projected (two such buffers, one after the other, with pipeline)
  const T* w;                    // W_hh (G*H, H), contiguous
  const T* bias;                 // b_hh (G*H,) or null
  const T* mask;                 // (B, H) recurrent-dropout mask or null
  const T* h0; const T* c0;      // (B, H)
  T* out; int64_t out_sb, out_st;     // out[b, t, :] (zero-filled by the caller when padded)
  T* S;                          // (steps, B, H) states h after each step (train) or 2 rows (infer)
  T* C;                          // LSTM: (steps, B, H) cell states (train) or 2 rows (infer)
  T* A;                          // (steps, B, GA) saved activations (train only)
  T* hN; T* cN;                  // (B, H) final states
  const T* ln_gain; const T* ln_shift; T eps;  // LN kinds: (ln_all_rows, H) each: LN_hh, [LN_c], LN_ih

  int length(int b) const { return len ? static_cast<int>(len[b]) : T_; }
  int time(int b, int s) const {
    int L = length(b);
    return (reverse && s < L) ? L - 1 - s : s;
  }
  T* state(T* base, int s) const { return base + static_cast<int64_t>(train ? s : (s & 1)) * B * H; }
};

// Saved per row and step:
//   GRU      r, z, n, hn                                              4H
//   LSTM     i, f, g, o, tanh(c)                                      5H
//   LN_GRU   r, z, n, b_n | yhat of LN_hh (3H) | 1/std per gate (3) |
//            yhat of LN_ih (3H) | its 1/std per gate (3)             10H + 6
//   LN_LSTM  i, f, g, o, tanh(c_norm) | chat of LN_c (H) | yhat of LN_hh (4H) |
//            1/std per gate (4) | 1/std of LN_c (1) |
//            yhat of LN_ih (4H) | its 1/std per gate (4)             14H + 9
template <typename T> inline int saved_width(int kind, int H) {
  switch (kind) {
    case GRU: return 4 * H;
    case LSTM: return 5 * H;
    case LN_GRU: return 10 * H + 6;
    default: return 14 * H + 9;
  }
}

// Where a layer-norm kind keeps its saved LN values inside a row of A.
template <typename T> struct LnSaved {
  T* yhat_hh; T* rstd_hh;  // (G*H), (G)
  T* chat; T* rstd_c;      // LN_LSTM: (H), (1)
  T* yhat_ih; T* rstd_ih;  // (G*H), (G): LN_ih of this row's input projection
};
template <typename T> inline LnSaved<T> ln_saved(int kind, int H, T* a) {
  if (kind == LN_GRU) return {a + 4 * H, a + 7 * H, nullptr, nullptr, a + 7 * H + 3, a + 10 * H + 3};
  return {a + 6 * H, a + 10 * H, a + 5 * H, a + 10 * H + 4, a + 10 * H + 5, a + 14 * H + 5};
}

// sum_j f(j) for j < H in one vector's worth of partial sums: without -ffast-math the compiler
// keeps a plain `s += ...` loop as one scalar chain (it may not reorder the additions); these
// lanes it vectorises, which makes the layer norms' reductions about as cheap as their
// elementwise passes.
template <typename T, typename F> inline T lane_sum(int H, F f) {
  constexpr int L = 64 / sizeof(T);  // one 512-bit vector
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

// The statistics of G layer norms side by side, each over its own H values y_q (F.layer_norm:
// biased variance): mean[q] (computed unless `centred`: then all zero), r[q] = 1 / std.
// Each is taken for every gate before the next, so that the gates' reduction chains are
// independent work side by side, not one long chain.
//
// Centred rows are the layer-norm kinds' gate pre-activations W_hh h and W_ih x: the loop
// multiplies by weights whose rows have had their gate block's mean row taken off
// (centred_gates), which makes the products y - mean(y) already -- LN(W h) = LN(C W h) with C
// the centring, and C W h = (C W) h -- and saves the mean pass. What is left of the mean in
// them is rounding, of the size of the rounding in y itself. Backward multiplies by C W too:
// the gradient that comes out of LN's backward sums to zero over each gate, so
// W^T dy = (C W)^T dy, and with C W its rounding is not multiplied by the mean rows
// (backward_direction).
template <typename T> void ln_stats(int G, int H, const T* __restrict y, bool centred, T eps, T* mean, T* r) {
  for (int q = 0; q < G; ++q)
    mean[q] = centred ? T(0) : lane_sum<T>(H, [&](int j) { return y[q * H + j]; }) / H;
  for (int q = 0; q < G; ++q) {
    const T* __restrict yq = y + q * H;
    const T m = mean[q];
    r[q] = lane_sum<T>(H, [&](int j) { return (yq[j] - m) * (yq[j] - m); }) / H;
  }
  for (int q = 0; q < G; ++q) r[q] = T(1) / std::sqrt(r[q] + eps);
}

// G layer norms of centred rows side by side (LN_GRU's LN_hh and LN_ih, G = 3): out_q =
// yhat_q * gain_q + shift_q with yhat_q = y_q / sqrt(var + eps); saves yhat (G*H) and 1/std (G).
template <typename T>
void layer_norm_row(int G, int H, const T* __restrict y, const T* __restrict gain, const T* __restrict shift,
                    T eps, T* __restrict out, T* __restrict yhat, T* __restrict rstd) {
  T mean[4], r[4];
  ln_stats<T>(G, H, y, true, eps, mean, r);
  for (int q = 0; q < G; ++q) {
    const T* __restrict yq = y + q * H;
    for (int j = 0; j < H; ++j) {
      T v = yq[j] * r[q];
      yhat[q * H + j] = v;
      out[q * H + j] = v * gain[q * H + j] + shift[q * H + j];
    }
    rstd[q] = r[q];
  }
}

// Its backward: d (G*H) = d out in, d y out; accumulates d gain, d shift (G*H).
template <typename T>
void layer_norm_row_backward(int G, int H, const T* __restrict yhat, const T* __restrict rstd,
                             const T* __restrict gain, T* __restrict d, T* __restrict dgain,
                             T* __restrict dshift) {
  T m1[4], m2[4];
  for (int k = 0; k < G * H; ++k) {
    dgain[k] += d[k] * yhat[k];
    dshift[k] += d[k];
  }
  for (int q = 0; q < G; ++q) {
    const T* __restrict dq = d + q * H;
    const T* __restrict gq = gain + q * H;
    const T* __restrict v = yhat + q * H;
    m1[q] = lane_sum<T>(H, [&](int j) { return dq[j] * gq[j]; }) / H;
    m2[q] = lane_sum<T>(H, [&](int j) { return dq[j] * gq[j] * v[j]; }) / H;
  }
  for (int q = 0; q < G; ++q) {
    T* __restrict dq = d + q * H;
    const T* __restrict gq = gain + q * H;
    const T* __restrict v = yhat + q * H;
    for (int j = 0; j < H; ++j) dq[j] = rstd[q] * (dq[j] * gq[j] - m1[q] - v[j] * m2[q]);
  }
}

// LN_LSTM forward, in two passes around LN_c's statistics. This one takes x = W_ih x and
// y = W_hh h, both centred (4H each), and their 1/std per gate, rs = (LN_ih's 4, LN_hh's 4);
// with gih, ghh the gains (4H each) and sh = shift_ih + shift_hh (4H), it writes c (H) and
// saves i, f, g, o (4H), and when SAVE (training) the normalised values yih, yhh (4H each):
//   pre = x * r_ih * gain_ih + y * r_hh * gain_hh + sh   (= LN_ih(W_ih x) + LN_hh(W_hh h)).
// One pass, not a layer norm per half and then the cell: LN-LSTM (32, 50, 128) inference ran
// 5-6 % faster so (docs/benchmarks.md).
template <typename T, bool SAVE>
__attribute__((noinline)) void ln_lstm_cell_row(int H, const T* __restrict x, const T* __restrict y,
                                                const T* __restrict rs, const T* __restrict gih,
                                                const T* __restrict ghh, const T* __restrict sh,
                                                const T* __restrict cp, T* __restrict c, T* __restrict a,
                                                T* __restrict yih, T* __restrict yhh) {
  const T ri = rs[0], rf = rs[1], rg = rs[2], ro = rs[3], si = rs[4], sf = rs[5], sg = rs[6], so = rs[7];
  RNNKIT_IVDEP
  for (int j = 0; j < H; ++j) {
    const T xi = x[j] * ri, xf = x[H + j] * rf, xg = x[2 * H + j] * rg, xo = x[3 * H + j] * ro;
    const T yi = y[j] * si, yf = y[H + j] * sf, yg = y[2 * H + j] * sg, yo = y[3 * H + j] * so;
    if (SAVE) {
      yih[j] = xi; yih[H + j] = xf; yih[2 * H + j] = xg; yih[3 * H + j] = xo;
      yhh[j] = yi; yhh[H + j] = yf; yhh[2 * H + j] = yg; yhh[3 * H + j] = yo;
    }
    T i = vsigmoid(xi * gih[j] + yi * ghh[j] + sh[j]);
    T f = vsigmoid(xf * gih[H + j] + yf * ghh[H + j] + sh[H + j]);
    T gg = vtanh(xg * gih[2 * H + j] + yg * ghh[2 * H + j] + sh[2 * H + j]);
    T o = vsigmoid(xo * gih[3 * H + j] + yo * ghh[3 * H + j] + sh[3 * H + j]);
    c[j] = f * cp[j] + i * gg;
    a[j] = i; a[H + j] = f; a[2 * H + j] = gg; a[3 * H + j] = o;
  }
}

// ... then, with LN_c's mean m and 1/std r of c, c_norm = (c - m) r gain_c + shift_c and
// h = o tanh(c_norm); writes h, out (H), saves tanh(c_norm) and, when SAVE, chat = (c - m) r.
template <typename T, bool SAVE>
__attribute__((noinline)) void ln_lstm_out_row(int H, const T* __restrict c, T m, T r, const T* __restrict gc,
                                               const T* __restrict sc, T* __restrict h, T* __restrict out,
                                               T* __restrict a, T* __restrict chat) {
  RNNKIT_IVDEP
  for (int j = 0; j < H; ++j) {
    T v = (c[j] - m) * r;
    if (SAVE) chat[j] = v;
    T tc = vtanh(v * gc[j] + sc[j]);
    T hv = a[3 * H + j] * tc;
    h[j] = hv;
    out[j] = hv;
    a[4 * H + j] = tc;
  }
}

// LN_LSTM backward, first pass: dh (H) in: the carried gradient, out: dh + d out (the total
// gradient of h, which the second pass needs again); writes d c_norm into dcn (H).
template <typename T>
__attribute__((noinline)) void ln_lstm_out_row_backward(int H, const T* __restrict a, const T* __restrict go,
                                                        T* __restrict dh, T* __restrict dcn) {
  for (int j = 0; j < H; ++j) {
    T o = a[3 * H + j], tc = a[4 * H + j];
    T g = dh[j] + go[j];
    dh[j] = g;
    dcn[j] = g * o * (T(1) - tc * tc);
  }
}

// Second pass, after LN_c's backward turned dcn into its share of d c: dc (H) carried in, out
// dc_prev; dh (H) in: dh + d out from the first pass, out 0 (all of d h_prev comes through the
// GEMM); writes dG (4H), the gradient of the gate pre-activations, which is that of both
// LN_ih's and LN_hh's outputs (they are summed).
template <typename T>
__attribute__((noinline)) void ln_lstm_cell_row_backward(int H, const T* __restrict a, const T* __restrict cp,
                                                         const T* __restrict dcn, T* __restrict dh,
                                                         T* __restrict dc, T* __restrict dg) {
  for (int j = 0; j < H; ++j) {
    T i = a[j], f = a[H + j], gg = a[2 * H + j], o = a[3 * H + j], tc = a[4 * H + j];
    T dcv = dc[j] + dcn[j];
    T dip = dcv * gg * i * (T(1) - i);
    T dfp = dcv * cp[j] * f * (T(1) - f);
    T dgp = dcv * i * (T(1) - gg * gg);
    T dop = dh[j] * tc * o * (T(1) - o);
    dg[j] = dip; dg[H + j] = dfp; dg[2 * H + j] = dgp; dg[3 * H + j] = dop;
    dc[j] = dcv * f;
    dh[j] = T(0);
  }
}

// Third pass: back through LN_ih and LN_hh at once (layer_norm_row_backward, for both, reading
// d once). d (4H) in: dG, out: d (W_hh h); writes dx (4H) = d (W_ih x); yih / yhh and rih / rhh
// are the saved normalised values and 1/std per gate, gih / ghh the gains. Accumulates d gain
// of both, and d shift once: the two shifts get the same gradient, copied to LN_ih's after the
// loop. Training an LN-LSTM (32, 50, 128) ran 2-8 % faster than with a layer norm's backward
// after the other.
template <typename T>
__attribute__((noinline)) void ln_lstm_gates_backward(int H, const T* __restrict yih, const T* __restrict rih,
                                                      const T* __restrict gih, const T* __restrict yhh,
                                                      const T* __restrict rhh, const T* __restrict ghh,
                                                      T* __restrict d, T* __restrict dx, T* __restrict dgain_ih,
                                                      T* __restrict dgain_hh, T* __restrict dshift) {
  T m[16];
  RNNKIT_IVDEP
  for (int k = 0; k < 4 * H; ++k) {
    dgain_ih[k] += d[k] * yih[k];
    dgain_hh[k] += d[k] * yhh[k];
    dshift[k] += d[k];
  }
  for (int q = 0; q < 4; ++q) {
    const T* __restrict dq = d + q * H;
    const T* __restrict gi = gih + q * H;
    const T* __restrict gh = ghh + q * H;
    const T* __restrict vi = yih + q * H;
    const T* __restrict vh = yhh + q * H;
    m[q] = lane_sum<T>(H, [&](int j) { return dq[j] * gi[j]; }) / H;
    m[4 + q] = lane_sum<T>(H, [&](int j) { return dq[j] * gi[j] * vi[j]; }) / H;
    m[8 + q] = lane_sum<T>(H, [&](int j) { return dq[j] * gh[j]; }) / H;
    m[12 + q] = lane_sum<T>(H, [&](int j) { return dq[j] * gh[j] * vh[j]; }) / H;
  }
  for (int q = 0; q < 4; ++q) {
    T* __restrict dq = d + q * H;
    T* __restrict xq = dx + q * H;
    const T* __restrict gi = gih + q * H;
    const T* __restrict gh = ghh + q * H;
    const T* __restrict vi = yih + q * H;
    const T* __restrict vh = yhh + q * H;
    const T ri = rih[q], rh = rhh[q], m1i = m[q], m2i = m[4 + q], m1h = m[8 + q], m2h = m[12 + q];
    RNNKIT_IVDEP
    for (int j = 0; j < H; ++j) {
      const T g = dq[j];
      xq[j] = ri * (g * gi[j] - m1i - vi[j] * m2i);
      dq[j] = rh * (g * gh[j] - m1h - vh[j] * m2h);
    }
  }
}

// The input projection of steps [s0, s1): row (s - s0) * B + b of d.xi <- x[b, t] W_ih^T (+ b_ih)
// for t = d.time(b, s), the time step s reads -- the rows are gathered into d.xa first, so
// that one product serves every row whatever its length and direction. Projecting a chunk
// just before its steps run keeps it in cache: projected all at once before the loop, the
// projections of a BiLSTM (64, 100, 256) layer are 26 MB per direction, written out to memory
// and read back step by step. Rows past their end are projected too and not read.
template <typename T> void gather_inputs(const Direction<T>& d, int s0, int s1) {
  for (int s = s0; s < s1; ++s)
    for (int b = 0; b < d.B; ++b) {
      const int t = std::min(d.time(b, s), d.T_ - 1);
      std::memcpy(d.xa + (static_cast<int64_t>(s - s0) * d.B + b) * d.D,
                  d.x + (static_cast<int64_t>(b) * d.T_ + t) * d.D, sizeof(T) * d.D);
    }
}

template <typename T> void project_chunk(const Direction<T>& d, int s0, int s1, const T* wit_packed, T* xi) {
  const int64_t rows = static_cast<int64_t>(s1 - s0) * d.B, GH = d.G * d.H;
  gather_inputs<T>(d, s0, s1);
  if (d.bias_ih)
    for (int64_t r = 0; r < rows; ++r) std::memcpy(xi + r * GH, d.bias_ih, sizeof(T) * GH);
  gemm_shared<T>(static_cast<int>(rows), GH, d.D, d.xa, d.D, wit_packed, xi, GH, d.bias_ih != nullptr);
}

// W (G*H, K) with each gate block's mean row taken off (each of its K columns then sums to zero
// over the block's H rows), summed in double: the weights the layer-norm kinds multiply by,
// forward and backward, so that their products come out centred (ln_stats).
template <typename T> std::vector<T> centred_gates(int G, int H, int K, const T* w) {
  std::vector<T> c(static_cast<size_t>(G) * H * K);
  std::vector<double> mean(K);
  for (int q = 0; q < G; ++q) {
    const T* wq = w + static_cast<int64_t>(q) * H * K;
    T* cq = c.data() + static_cast<int64_t>(q) * H * K;
    std::fill(mean.begin(), mean.end(), 0.0);
    for (int r = 0; r < H; ++r)
      for (int k = 0; k < K; ++k) mean[k] += wq[static_cast<int64_t>(r) * K + k];
    for (int k = 0; k < K; ++k) mean[k] /= H;
    for (int r = 0; r < H; ++r)
      for (int k = 0; k < K; ++k)
        cq[static_cast<int64_t>(r) * K + k] = static_cast<T>(wq[static_cast<int64_t>(r) * K + k] - mean[k]);
  }
  return c;
}

// W (G*H, K) packed once per call as the B operand of a product (pack_b): W^T when TRANS_B
// (forward: x W^T, h W^T), W itself otherwise (backward: dG W); centred first for the
// layer-norm kinds (centred_gates).
template <typename T, bool TRANS_B> std::vector<T> packed_weight(int kind, int G, int H, int K, const T* w) {
  const std::vector<T> centred = is_layer_norm(kind) ? centred_gates<T>(G, H, K, w) : std::vector<T>();
  const int N = TRANS_B ? G * H : K, depth = TRANS_B ? K : G * H;
  std::vector<T> packed(static_cast<size_t>(packed_size<T>(N, depth)));
  pack_b<T, TRANS_B>(N, depth, centred.empty() ? w : centred.data(), K, packed.data());
  return packed;
}

template <typename T> void forward_direction(int kind, Direction<T>& d) {
  const int B = d.B, H = d.H, GH = d.G * H, GA = saved_width<T>(kind, H);
  std::vector<T> gh(static_cast<size_t>(B) * GH), hm(d.mask ? static_cast<size_t>(B) * H : 0);
  // No bias is a zero bias, and at inference the activations go to a scratch row: the row
  // kernels then have no branches in their loops.
  const bool cell = has_cell(kind);
  std::vector<T> zeros(GH, T(0)), scratch(d.train ? 0 : GA), lnb(kind == LN_GRU ? GH : 0),
      lni(kind == LN_GRU ? GH : 0), shift(kind == LN_LSTM ? GH : 0);
  const std::vector<T> wt = packed_weight<T, true>(kind, d.G, H, H, d.w),     // W_hh^T, for all steps
      wit = packed_weight<T, true>(kind, d.G, H, d.D, d.wi);                   // W_ih^T, for all chunks
  const T* bias = d.bias ? d.bias : zeros.data();
  const int ih = ln_rows(kind) * H;  // LN_ih's gains and shifts start at this row (ln_gain, ln_shift)
  for (int k = 0; k < static_cast<int>(shift.size()); ++k) shift[k] = d.ln_shift[ih + k] + d.ln_shift[k];
  // Step s, reading its input projections from xic, the buffer of its chunk.
  auto step = [&](int s, const T* xic) {
    const T* hp = s == 0 ? d.h0 : d.state(d.S, s - 1);
    const T* cp = cell ? (s == 0 ? d.c0 : d.state(d.C, s - 1)) : nullptr;
    T* h = d.state(d.S, s);
    T* c = cell ? d.state(d.C, s) : nullptr;
    const T* hin = hp;
    if (d.mask) {
      for (int64_t k = 0; k < static_cast<int64_t>(B) * H; ++k) hm[k] = d.mask[k] * hp[k];
      hin = hm.data();
    }
    gemm_packed<T>(B, GH, H, hin, H, wt.data(), gh.data(), GH, false);  // (B, G*H)
    for (int b = 0; b < B; ++b) {
      const T* hpb = hp + static_cast<int64_t>(b) * H;
      T* hb = h + static_cast<int64_t>(b) * H;
      if (s >= d.length(b)) {  // past this row's end: keep its state, output stays zero
        std::memcpy(hb, hpb, sizeof(T) * H);
        if (c) std::memcpy(c + static_cast<int64_t>(b) * H, cp + static_cast<int64_t>(b) * H, sizeof(T) * H);
        continue;
      }
      const int t = d.time(b, s);
      const T* x = xic + (static_cast<int64_t>(s % d.chunk) * B + b) * GH;
      const T* g = gh.data() + static_cast<int64_t>(b) * GH;
      T* o = d.out + b * d.out_sb + t * d.out_st;
      T* a = d.train ? d.A + (static_cast<int64_t>(s) * B + b) * GA : scratch.data();
      if (kind == GRU) gru_row<T>(H, x, g, bias, hpb, hb, o, a);
      else if (kind == LSTM)
        lstm_row<T>(H, x, g, bias, cp + static_cast<int64_t>(b) * H, hb, c + static_cast<int64_t>(b) * H, o, a);
      else if (kind == LN_GRU) {
        // x is this row's W_ih x (projected with its chunk); the cell reads LN_ih of it.
        const LnSaved<T> sv = ln_saved<T>(kind, H, a);
        layer_norm_row<T>(d.G, H, x, d.ln_gain + ih, d.ln_shift + ih, d.eps, lni.data(), sv.yhat_ih, sv.rstd_ih);
        layer_norm_row<T>(d.G, H, g, d.ln_gain, d.ln_shift, d.eps, lnb.data(), sv.yhat_hh, sv.rstd_hh);
        gru_row<T>(H, lni.data(), lnb.data(), zeros.data(), hpb, hb, o, a);
      } else {  // LN_LSTM
        const LnSaved<T> sv = ln_saved<T>(kind, H, a);
        T mean[8], rs[8];  // LN_ih's 1/std per gate, then LN_hh's; the means are zero
        ln_stats<T>(4, H, x, true, d.eps, mean, rs);
        ln_stats<T>(4, H, g, true, d.eps, mean + 4, rs + 4);
        const T* cpb = cp + static_cast<int64_t>(b) * H;
        T* cb = c + static_cast<int64_t>(b) * H;
        T m, r;
        if (d.train) {
          ln_lstm_cell_row<T, true>(H, x, g, rs, d.ln_gain + ih, d.ln_gain, shift.data(), cpb, cb, a, sv.yhat_ih,
                                    sv.yhat_hh);
          std::copy(rs, rs + 4, sv.rstd_ih);
          std::copy(rs + 4, rs + 8, sv.rstd_hh);
          ln_stats<T>(1, H, cb, false, d.eps, &m, &r);
          ln_lstm_out_row<T, true>(H, cb, m, r, d.ln_gain + GH, d.ln_shift + GH, hb, o, a, sv.chat);
          *sv.rstd_c = r;
        } else {
          ln_lstm_cell_row<T, false>(H, x, g, rs, d.ln_gain + ih, d.ln_gain, shift.data(), cpb, cb, a, nullptr,
                                     nullptr);
          ln_stats<T>(1, H, cb, false, d.eps, &m, &r);
          ln_lstm_out_row<T, false>(H, cb, m, r, d.ln_gain + GH, d.ln_shift + GH, hb, o, a, nullptr);
        }
      }
    }
  };
  const int chunks = (d.steps + d.chunk - 1) / d.chunk;
  auto first = [&](int k) { return k * d.chunk; };
  auto end = [&](int k) { return std::min(d.steps, (k + 1) * d.chunk); };
  auto one_thread = [&] {
    for (int k = 0; k < chunks; ++k) {
      project_chunk<T>(d, first(k), end(k), wit.data(), d.xi);
      for (int s = first(k); s < end(k); ++s) step(s, d.xi);
    }
  };
  if (!d.pipeline) {
    one_thread();
  } else {
    // A layer of one direction on two threads: the second projects chunk k + 1 while this one
    // runs the steps of chunk k, in two buffers taken in turn, with one hand-off per chunk
    // (wait_until). Nothing in here allocates or throws.
    std::atomic<int> projected{0}, done{0};
    const int64_t slot = static_cast<int64_t>(d.chunk) * B * GH;
    at::parallel_for(0, 2, 1, [&](int64_t begin, int64_t stop) {
      if (stop - begin == 2) {  // one thread got both halves (no second thread free): no pipeline
        one_thread();
        return;
      }
      if (begin == 1) {
        if (at::get_thread_num() != 0) ++jobs_on_workers;
        gemm_workers = 1;
        for (int k = 0; k < chunks; ++k) {
          wait_until([&] { return done.load(std::memory_order_acquire) >= k - 1; });  // its buffer is free
          project_chunk<T>(d, first(k), end(k), wit.data(), d.xi + (k & 1) * slot);
          projected.store(k + 1, std::memory_order_release);
        }
      } else {
        for (int k = 0; k < chunks; ++k) {
          wait_until([&] { return projected.load(std::memory_order_acquire) > k; });
          for (int s = first(k); s < end(k); ++s) step(s, d.xi + (k & 1) * slot);
          done.store(k + 1, std::memory_order_release);
        }
      }
    });
  }
  const T* hl = d.steps > 0 ? d.state(d.S, d.steps - 1) : d.h0;
  std::memcpy(d.hN, hl, sizeof(T) * B * H);
  if (cell) std::memcpy(d.cN, d.steps > 0 ? d.state(d.C, d.steps - 1) : d.c0, sizeof(T) * B * H);
}

// Forward projects in the loop (project_chunk); backward takes the projection back a chunk of
// steps at a time (backward_chunk): dx = dxi W_ih, dW_ih += dxi^T x, db_ih += sum of dxi rows.
template <typename T> struct Projection {
  const T* w;                    // W_ih (G*H, D)
  T* dx; T* dw; T* db;           // outputs: dx (B, T, D) zero-filled by the caller when padded
};

template <typename T> struct Grad {
  const T* dout; int64_t dout_sb, dout_st;  // d loss / d out[b, t, :]
  const T* dhN; const T* dcN;              // (B, H), may be null (no gradient)
  T* dxi;                                  // scratch (chunk * B, G*H): d (W_ih x) of a chunk of steps
  T* dG;                                   // scratch (chunk * B, G*H): d pre-activations of W_hh h
  T* dxc;                                  // scratch (chunk * B, D): d x of a chunk, before it is scattered
  T* dh0; T* dc0;                          // (B, H)
  T* dw; T* db;                            // (G*H, H), (G*H) or null: d W_hh, d b_hh
  T* dgain; T* dshift;                     // LN kinds: (ln_all_rows, H) each
};

// Rows sum_r rows[r] (GH) added into acc (bias gradients).
template <typename T> void add_rows(int64_t rows, int GH, const T* m, T* __restrict acc) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* __restrict g = m + r * GH;
    for (int j = 0; j < GH; ++j) acc[j] += g[j];
  }
}

// What backward does for the steps [s0, s1) once their d gates are known, while those are in
// cache (the whole sequence's, written out and read back after the loop, were 20 MB per
// direction for a BiGRU (64, 100, 256) layer): the weight gradients' share of these steps,
//   dW_hh += dG^T (m * h_prev),  db_hh += sum dG,  dW_ih += dxi^T x,  db_ih += sum dxi,
// and the input gradient dx = dxi W_ih of their rows, put in place at (b, t) (rows past their
// end are skipped: their dx stays zero). Rows are (s - s0) * B + b, as in forward.
template <typename T>
void backward_chunk(const Direction<T>& d, Grad<T>& q, Projection<T>& p, int s0, int s1, const T* w_ih_packed,
                    T* hm) {
  const int B = d.B, H = d.H, GH = d.G * H, D = d.D, rows = (s1 - s0) * B;
  const int64_t BH = static_cast<int64_t>(B) * H;
  if (d.mask) {
    for (int s = s0; s < s1; ++s) {
      const T* hp = s == 0 ? d.h0 : d.state(d.S, s - 1);
      for (int64_t k = 0; k < BH; ++k) hm[(s - s0) * BH + k] = d.mask[k] * hp[k];
    }
    gemm_at<T>(GH, H, rows, q.dG, GH, hm, H, q.dw, H);
  } else {
    int first = s0;
    if (s0 == 0) {  // h_prev of step 0 is h0; of the later steps, the saved states, contiguous
      gemm_at<T>(GH, H, B, q.dG, GH, d.h0, H, q.dw, H);
      first = 1;
    }
    if (s1 > first)
      gemm_at<T>(GH, H, (s1 - first) * B, q.dG + static_cast<int64_t>(first - s0) * B * GH, GH,
                 d.state(d.S, first - 1), H, q.dw, H);
  }
  if (q.db) add_rows<T>(rows, GH, q.dG, q.db);
  gather_inputs<T>(d, s0, s1);
  gemm_at<T>(GH, D, rows, q.dxi, GH, d.xa, D, p.dw, D);
  if (p.db) add_rows<T>(rows, GH, q.dxi, p.db);
  gemm_shared<T>(rows, D, GH, q.dxi, GH, w_ih_packed, q.dxc, D, false);
  for (int s = s0; s < s1; ++s)
    for (int b = 0; b < B; ++b)
      if (s < d.length(b))
        std::memcpy(p.dx + (static_cast<int64_t>(b) * d.T_ + d.time(b, s)) * D,
                    q.dxc + (static_cast<int64_t>(s - s0) * B + b) * D, sizeof(T) * D);
}

template <typename T> void backward_direction(int kind, const Direction<T>& d, Grad<T>& q, Projection<T>& p) {
  const int B = d.B, H = d.H, GH = d.G * H, GA = saved_width<T>(kind, H);
  const int64_t BH = static_cast<int64_t>(B) * H;
  const bool cell = has_cell(kind);
  std::vector<T> dh(BH, T(0)), dc(cell ? BH : 0, T(0)), tmp(d.mask ? BH : 0), dcn(kind == LN_LSTM ? H : 0),
      hm(d.mask ? d.chunk * BH : 0);
  // W_hh and W_ih, packed once for all steps and chunks, centred for the layer-norm kinds as in
  // forward. The gradients that come out of their layer norms sum to zero over each gate only
  // up to rounding, and that rounding times a gate block's mean row (large when the rows share
  // a large common part) is kept out of dh and dx so: float32 dx of a layer-norm LSTM whose
  // gate blocks share a row of scale 1000, against float64, 2e-3 relative error with W, 4e-6
  // with the centred weights (found in review).
  const std::vector<T> w = packed_weight<T, false>(kind, d.G, H, H, d.w),
      wi = packed_weight<T, false>(kind, d.G, H, d.D, p.w);
  if (is_layer_norm(kind)) {
    std::fill(q.dgain, q.dgain + ln_all_rows(kind) * H, T(0));
    std::fill(q.dshift, q.dshift + ln_all_rows(kind) * H, T(0));
  }
  std::fill(q.dw, q.dw + static_cast<int64_t>(GH) * H, T(0));
  if (q.db) std::fill(q.db, q.db + GH, T(0));
  std::fill(p.dw, p.dw + static_cast<int64_t>(GH) * d.D, T(0));
  if (p.db) std::fill(p.db, p.db + GH, T(0));
  if (q.dhN) std::copy(q.dhN, q.dhN + BH, dh.begin());
  if (cell && q.dcN) std::copy(q.dcN, q.dcN + BH, dc.begin());
  for (int s = d.steps - 1; s >= 0; --s) {
    const int s0 = s / d.chunk * d.chunk;  // this step's chunk is [s0, min(steps, s0 + chunk))
    const T* hp = s == 0 ? d.h0 : d.state(d.S, s - 1);
    const T* cp = cell ? (s == 0 ? d.c0 : d.state(d.C, s - 1)) : nullptr;
    T* dGs = q.dG + static_cast<int64_t>(s - s0) * B * GH;
    for (int b = 0; b < B; ++b) {
      T* dgb = dGs + static_cast<int64_t>(b) * GH;
      T* dx = q.dxi + (static_cast<int64_t>(s - s0) * B + b) * GH;
      T* dhb = dh.data() + static_cast<int64_t>(b) * H;
      if (s >= d.length(b)) {  // the state was only carried: the gradient passes through
        std::fill(dgb, dgb + GH, T(0));
        std::fill(dx, dx + GH, T(0));
        continue;
      }
      const int t = d.time(b, s);
      T* a = d.A + (static_cast<int64_t>(s) * B + b) * GA;
      const T* go = q.dout + b * q.dout_sb + t * q.dout_st;
      const T* cpb = cell ? cp + static_cast<int64_t>(b) * H : nullptr;
      T* dcb = cell ? dc.data() + static_cast<int64_t>(b) * H : nullptr;
      if (kind == GRU || kind == LN_GRU) gru_row_backward<T>(H, a, hp + static_cast<int64_t>(b) * H, go, dhb, dgb, dx);
      else if (kind == LSTM) lstm_row_backward<T>(H, a, cpb, go, dhb, dcb, dgb, dx);
      else {  // LN_LSTM: back through h = o tanh(LN_c(c)), LN_c, then the gates
        const LnSaved<T> sv = ln_saved<T>(kind, H, a);
        ln_lstm_out_row_backward<T>(H, a, go, dhb, dcn.data());
        layer_norm_row_backward<T>(1, H, sv.chat, sv.rstd_c, d.ln_gain + GH, dcn.data(), q.dgain + GH,
                                   q.dshift + GH);
        ln_lstm_cell_row_backward<T>(H, a, cpb, dcn.data(), dhb, dcb, dgb);
        const int ih = ln_rows(kind) * H;
        ln_lstm_gates_backward<T>(H, sv.yhat_ih, sv.rstd_ih, d.ln_gain + ih, sv.yhat_hh, sv.rstd_hh, d.ln_gain,
                                  dgb, dx, q.dgain + ih, q.dgain, q.dshift);
      }
      if (kind == LN_GRU) {  // dG so far is d LN_hh(gh); through LN_hh to d gh
        const LnSaved<T> sv = ln_saved<T>(kind, H, a);
        layer_norm_row_backward<T>(d.G, H, sv.yhat_hh, sv.rstd_hh, d.ln_gain, dgb, q.dgain, q.dshift);
        // and dx is d LN_ih(W_ih x): through LN_ih to d (W_ih x), which backward_chunk takes
        const int ih = ln_rows(kind) * H;
        layer_norm_row_backward<T>(d.G, H, sv.yhat_ih, sv.rstd_ih, d.ln_gain + ih, dx, q.dgain + ih, q.dshift + ih);
      }
    }
    // d h_prev += m * (dG_s W_hh); rows past their end have dG = 0 and keep their carry.
    if (d.mask) {
      gemm_packed<T>(B, H, GH, dGs, GH, w.data(), tmp.data(), H, false);
      for (int64_t k = 0; k < BH; ++k) dh[k] += d.mask[k] * tmp[k];
    } else {
      gemm_packed<T>(B, H, GH, dGs, GH, w.data(), dh.data(), H, true);
    }
    if (s == s0) backward_chunk<T>(d, q, p, s0, std::min(d.steps, s0 + d.chunk), wi.data(), hm.data());
  }
  if (kind == LN_LSTM) std::copy(q.dshift, q.dshift + GH, q.dshift + ln_rows(kind) * H);  // d shift_ih
  std::copy(dh.begin(), dh.end(), q.dh0);
  if (cell) std::copy(dc.begin(), dc.end(), q.dc0);
}

// ---------------------------------------------------------- one direction, two batch halves

// Half h of the batch (of two equal ones): the same recurrence over rows [h B/2, (h + 1) B/2).
// Inputs, outputs and states are row ranges of the whole batch's; the saved states and
// activations are laid out (2, steps, B/2, .), half after half, and so are the scratch chunks.
// One direction on two threads this way ran 5-23 % faster than with the projection pipeline,
// and the layer-norm cells 23-36 % (docs/benchmarks.md).
template <typename T> Direction<T> batch_half(int kind, const Direction<T>& d, int h) {
  Direction<T> e = d;
  const int B = d.B / 2;
  const int64_t b0 = static_cast<int64_t>(h) * B, H = d.H;
  e.B = B;
  e.pipeline = false;
  if (d.len) e.len = d.len + b0;
  e.x = d.x + b0 * d.T_ * d.D;
  e.xa = d.xa + static_cast<int64_t>(h) * d.chunk * B * d.D;
  if (d.xi) e.xi = d.xi + static_cast<int64_t>(h) * d.chunk * B * d.G * H;
  if (d.mask) e.mask = d.mask + b0 * H;
  e.h0 = d.h0 + b0 * H;
  if (d.c0) e.c0 = d.c0 + b0 * H;
  if (d.out) e.out = d.out + b0 * d.out_sb;
  const int64_t rows = d.train ? d.steps : 2;  // saved steps, or the two rows of inference
  e.S = d.S + h * rows * B * H;
  if (d.C) e.C = d.C + h * rows * B * H;
  if (d.A) e.A = d.A + h * d.steps * B * saved_width<T>(kind, d.H);
  if (d.hN) e.hN = d.hN + b0 * H;
  if (d.cN) e.cN = d.cN + b0 * H;
  return e;
}

// Backward's share of half h: its rows of d out, of the final states' gradients and of dh0,
// dc0 and dx, and its scratch chunks; the weight gradients of half 1 go to `own` (the caller
// adds them to half 0's, which are the results).
template <typename T> struct GradHalf {
  std::vector<T> dw, db, dgain, dshift, dwi, dbi;
};
template <typename T>
void grad_half(int kind, const Direction<T>& d, const Grad<T>& q, const Projection<T>& p, int h,
               GradHalf<T>& own, Grad<T>& qh, Projection<T>& ph) {
  const int B = d.B / 2, GH = d.G * d.H;
  const int64_t b0 = static_cast<int64_t>(h) * B, H = d.H, rows = static_cast<int64_t>(d.chunk) * B;
  qh = q;
  ph = p;
  qh.dout = q.dout + b0 * q.dout_sb;
  if (q.dhN) qh.dhN = q.dhN + b0 * H;
  if (q.dcN) qh.dcN = q.dcN + b0 * H;
  qh.dxi = q.dxi + h * rows * GH;
  qh.dG = q.dG + h * rows * GH;
  qh.dxc = q.dxc + h * rows * d.D;
  qh.dh0 = q.dh0 + b0 * H;
  if (q.dc0) qh.dc0 = q.dc0 + b0 * H;
  ph.dx = p.dx + b0 * d.T_ * d.D;
  if (h == 0) return;
  auto mine = [](std::vector<T>& v, const T* like, int64_t n) {
    v.assign(like ? n : 0, T(0));
    return like ? v.data() : nullptr;
  };
  const int64_t ln = static_cast<int64_t>(ln_all_rows(kind)) * H;
  qh.dw = mine(own.dw, q.dw, GH * H);
  qh.db = mine(own.db, q.db, GH);
  qh.dgain = mine(own.dgain, q.dgain, ln);
  qh.dshift = mine(own.dshift, q.dshift, ln);
  ph.dw = mine(own.dwi, p.dw, static_cast<int64_t>(GH) * d.D);
  ph.db = mine(own.dbi, p.db, GH);
}

template <typename T> void add_into(const std::vector<T>& from, T* to) {
  for (size_t k = 0; k < from.size(); ++k) to[k] += from[k];
}

// -------------------------------------------------------------------- the entry points

// Memory: the large buffers of a call are pooled, instead of being allocated anew each call.
// Fresh memory is faulted in page by page by the kernel, and glibc gives large freed blocks
// back to it: a layer-norm BiLSTM (32, 50, 128) training step ran 25-35 % faster, and a BiGRU
// (64, 100, 256) x 2 one 7-15 % faster, with malloc told to keep them
// (GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...:trim_threshold=...) -- which is a setting of
// the whole process, so the loop keeps its own:
// * scratch, which does not outlive a call (per direction, a chunk's gathered inputs and their
//   projections in forward; a chunk's d gates, d (W_ih x), gathered inputs and dx rows, and a
//   second direction's input gradient in backward): leased, given back when the call ends;
// * the results (out, the saved states and activations, dx): tensors whose storage goes back
//   to the pool when torch frees it, typically when backward is done with it.
// A request takes the smallest free buffer of the dtype that is large enough and at most
// twice as large (or allocates one), so concurrent calls never share one. Of equal sizes it
// takes the last given back: taking the first, inference after training rotated through
// same-size buffers and found none of them in cache (a BiLSTM (16, 500, 64) inference call ran
// at 1.5M tokens/s after training steps, and 2.0-2.3M with this order). Results below
// kPoolMinBytes come from torch's allocator as usual; scratch of every size is pooled. The pool keeps at most kPoolKeep free
// buffers, none above kPoolMaxBytes and kPoolTotalBytes in all; release_scratch() empties it.
constexpr size_t kPoolKeep = 32;
constexpr int64_t kPoolMinBytes = int64_t(256) << 10, kPoolMaxBytes = int64_t(256) << 20,
                  kPoolTotalBytes = int64_t(768) << 20;
struct Pool {
  std::mutex mutex;
  std::vector<at::Tensor> free;  // flat tensors
};
// Never destroyed: a pooled result may be freed by Python after static destructors have run.
Pool& pool() {
  static Pool* p = new Pool;
  return *p;
}

int64_t bytes_of(const at::Tensor& t) { return t.numel() * static_cast<int64_t>(t.element_size()); }

at::Tensor pool_take(int64_t n, const at::TensorOptions& opts) {
  Pool& P = pool();
  {
    std::lock_guard<std::mutex> lock(P.mutex);
    int best = -1;
    for (int i = 0; i < static_cast<int>(P.free.size()); ++i) {
      const at::Tensor& t = P.free[i];
      if (t.dtype() == opts.dtype() && t.numel() >= n && t.numel() <= 2 * n &&
          (best < 0 || t.numel() <= P.free[best].numel()))
        best = i;
    }
    if (best >= 0) {
      at::Tensor t = P.free[best];
      P.free.erase(P.free.begin() + best);
      return t;
    }
  }
  // Never an inference tensor, whatever mode the caller is in: the buffer may serve a later
  // call that records autograd (an in-place zero_ on an inference tensor there would throw).
  c10::InferenceMode not_inference(false);
  return at::empty({std::max<int64_t>(n, 1)}, opts);
}

void pool_give(const at::Tensor& t) {
  Pool& P = pool();
  std::lock_guard<std::mutex> lock(P.mutex);
  if (bytes_of(t) > kPoolMaxBytes) return;
  P.free.push_back(t);
  int64_t total = 0;
  for (auto& f : P.free) total += bytes_of(f);
  while (P.free.size() > kPoolKeep || (!P.free.empty() && total > kPoolTotalBytes)) {
    auto smallest = std::min_element(P.free.begin(), P.free.end(),
                                     [](const at::Tensor& a, const at::Tensor& b) { return a.numel() < b.numel(); });
    total -= bytes_of(*smallest);
    P.free.erase(smallest);
  }
}

int64_t numel_of(at::IntArrayRef shape) {
  int64_t n = 1;
  for (auto v : shape) n *= v;
  return n;
}

// A result of the call: an empty tensor whose memory comes from the pool and goes back to it
// when its storage is freed.
at::Tensor pooled_empty(at::IntArrayRef shape, const at::TensorOptions& opts) {
  const int64_t n = numel_of(shape);
  if (n * static_cast<int64_t>(c10::elementSize(c10::typeMetaToScalarType(opts.dtype()))) < kPoolMinBytes)
    return at::empty(shape, opts);
  auto* base = new at::Tensor(pool_take(n, opts));
  return at::from_blob(base->data_ptr(), shape, [base](void*) {
    pool_give(*base);
    delete base;
  }, opts);
}

at::Tensor pooled_zeros(at::IntArrayRef shape, const at::TensorOptions& opts) {
  return pooled_empty(shape, opts).zero_();
}

struct ScratchLeases {
  std::vector<at::Tensor> taken;
  ScratchLeases() = default;
  ScratchLeases(const ScratchLeases&) = delete;
  ScratchLeases& operator=(const ScratchLeases&) = delete;

  at::Tensor take(at::IntArrayRef shape, const at::TensorOptions& opts) {
    const int64_t n = numel_of(shape);
    taken.push_back(pool_take(n, opts));
    return taken.back().narrow(0, 0, n).view(shape);
  }

  ~ScratchLeases() {
    for (auto& t : taken) pool_give(t);
  }
};

int64_t release_scratch() {
  Pool& P = pool();
  std::lock_guard<std::mutex> lock(P.mutex);
  int64_t bytes = 0;
  for (auto& t : P.free) bytes += bytes_of(t);
  P.free.clear();
  return bytes;
}

// Directions run concurrently, one of torch's intra-op threads each (the caller's thread takes
// the first); with torch.set_num_threads(1) they run one after the other. Inside a direction
// nothing calls into ATen or BLAS but at::parallel_for, for a second thread of its own (one
// direction: the projection pipeline, backward's split products).
// An exception in a job (bad_alloc of a buffer) is carried to the caller's thread and thrown
// there after every job has ended -- as a catchable Python error, not std::terminate.
void run_directions(std::vector<std::function<void()>>& jobs) {
  if (jobs.size() == 1 || at::get_num_threads() < 2) {
    for (auto& job : jobs) job();
    return;
  }
  std::vector<std::exception_ptr> errors(jobs.size());
  on_torch_threads(static_cast<int64_t>(jobs.size()), [&](int64_t k) {
    try {
      jobs[k]();
    } catch (...) {
      errors[k] = std::current_exception();
    }
  });
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// One direction on a two-thread torch leaves a core for its big products (gemm_workers).
int spare_workers(size_t directions) { return directions == 1 && at::get_num_threads() >= 2 ? 2 : 1; }

void check(bool ok, const std::string& what) { TORCH_CHECK(ok, "rnnkit compiled recurrence: ", what); }

// Optional tensors cross from Python as empty tensors.
bool present(const at::Tensor& t) { return t.defined() && t.numel() > 0; }

// Input: x (B, T, D) and per direction w_ih[k] (G*H, D), b_ih[k] (the projection is done
// here, a chunk of steps at a time: forward_direction). Per direction k: h0[k], c0[k] (LSTM) (B, H), w[k] = W_hh (G*H, H), bias[k] = b_hh
// (G*H) or empty, mask[k] (B, H) or empty, reverse[k]. Empty tensors stand for "none".
// out (B, T, sum H): direction k writes columns [offset_k, offset_k + H_k).
// Layer-norm kinds take x and w_ih (no b_ih) and ln_gain[k], ln_shift[k]: (6, H) for LN_GRU
// (gain_hh / shift_hh (3, H), then gain_ih / shift_ih (3, H)) or (9, H) for LN_LSTM (gain_hh /
// shift_hh (4, H), gain_c / shift_c, then gain_ih / shift_ih (4, H)), and eps; the loop applies
// LN_ih to each row's W_ih x as it reads it. Empty lists otherwise.
// Returns [out, then per direction: hN, cN (LSTM kinds), S, C (LSTM kinds), A] (S, C, A empty
// unless train).
std::vector<at::Tensor> forward(int64_t kind, bool train, const at::Tensor& lengths, const at::Tensor& x,
                                std::vector<at::Tensor> w_ih, std::vector<at::Tensor> b_ih,
                                std::vector<at::Tensor> h0, std::vector<at::Tensor> c0,
                                std::vector<at::Tensor> w, std::vector<at::Tensor> bias,
                                std::vector<at::Tensor> mask, std::vector<bool> reverse,
                                std::vector<at::Tensor> ln_gain, std::vector<at::Tensor> ln_shift,
                                double eps) {
  check(kind >= GRU && kind <= LN_LSTM, "kind must be 0 (GRU), 1 (LSTM), 2 (LN_GRU) or 3 (LN_LSTM)");
  const size_t nd = h0.size();
  check(present(x) && x.dim() == 3, "x must be (B, T, D)");
  check(nd >= 1 && w.size() == nd && bias.size() == nd && mask.size() == nd && reverse.size() == nd &&
            (!has_cell(kind) || c0.size() == nd) && w_ih.size() == nd && b_ih.size() == nd,
        "one entry per direction in every list");
  const int B = static_cast<int>(x.size(0)), T_ = static_cast<int>(x.size(1));
  const int G = gates(kind);
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
  auto opts = x.options();
  at::Tensor xc = x.contiguous();
  at::Tensor out = present(lengths) ? pooled_zeros({B, T_, total}, opts) : pooled_empty({B, T_, total}, opts);
  std::vector<at::Tensor> results{out};
  std::vector<Direction<float>> df;
  std::vector<Direction<double>> dd;
  std::vector<std::function<void()>> jobs;
  std::vector<at::Tensor> keep;  // contiguous copies that must outlive the jobs
  ScratchLeases scratch;
  // One direction on two threads: as two halves of the batch when it can be halved
  // (batch_half_rows), else by the projection pipeline (below).
  const bool two = nd == 1 && at::get_num_threads() >= 2 && !at::in_parallel_region();
  const bool halves = two && B % 2 == 0 && B / 2 >= batch_half_rows.load();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rnnkit_forward", [&] {
    std::vector<Direction<scalar_t>> dirs(nd);
    for (size_t k = 0; k < nd; ++k) {
      const int H = static_cast<int>(w[k].size(1));
      // the inputs and projections of a chunk of steps are scratch: backward needs only the
      // saved activations
      const int chunk = chunk_steps(B, steps);
      // The projection pipeline, from 2M multiply-adds of projection in all. Above that it pays
      // (A/B of builds, docs/benchmarks.md): an LSTM (32, 50, 32) inference call (6.5M) took
      // 0.20 ms with it and 0.26 ms without, a GRU (16, 70, 32 -> 64) training call (6.9M)
      // 0.90 ms and 0.95 ms; as halves they take 0.16 and 0.66 ms.
      const bool pipeline = two && !halves && static_cast<int64_t>(B) * steps * xc.size(2) * G * H >= kPipelineMacs;
      auto xa = scratch.take({chunk * B, xc.size(2)}, opts),
           xi = scratch.take({(pipeline ? 2 : 1) * chunk * B, G * H}, opts);
      auto wi = w_ih[k].contiguous();
      keep.push_back(wi);
      auto wk = w[k].contiguous(), h0k = h0[k].contiguous();
      keep.insert(keep.end(), {wk, h0k});
      auto& d = dirs[k];
      d.B = B; d.T_ = T_; d.H = H; d.G = G; d.steps = steps; d.reverse = reverse[k]; d.train = train;
      d.len = len.defined() ? len.data_ptr<int64_t>() : nullptr;
      d.x = xc.data_ptr<scalar_t>(); d.D = static_cast<int>(xc.size(2)); d.wi = wi.data_ptr<scalar_t>();
      d.chunk = chunk; d.pipeline = pipeline; d.xa = xa.data_ptr<scalar_t>(); d.xi = xi.data_ptr<scalar_t>();
      if (present(b_ih[k])) { auto bk = b_ih[k].contiguous(); keep.push_back(bk); d.bias_ih = bk.data_ptr<scalar_t>(); }
      else d.bias_ih = nullptr;
      d.w = wk.data_ptr<scalar_t>();
      if (present(bias[k])) { auto bk = bias[k].contiguous(); keep.push_back(bk); d.bias = bk.data_ptr<scalar_t>(); }
      else d.bias = nullptr;
      if (present(mask[k])) { auto mk = mask[k].contiguous(); keep.push_back(mk); d.mask = mk.data_ptr<scalar_t>(); }
      else d.mask = nullptr;
      d.h0 = h0k.data_ptr<scalar_t>();
      d.ln_gain = d.ln_shift = nullptr; d.eps = static_cast<scalar_t>(eps);
      if (is_layer_norm(kind)) {
        auto gk = ln_gain[k].contiguous(), sk = ln_shift[k].contiguous();
        check(gk.numel() == ln_all_rows(kind) * H && sk.numel() == ln_all_rows(kind) * H,
              "layer-norm gain and shift must be (6, H) (LN_GRU: LN_hh's 3 rows, then LN_ih's) or (9, H) "
              "(LN_LSTM: LN_hh's 4 rows, LN_c, then LN_ih's 4)");
        keep.insert(keep.end(), {gk, sk});
        d.ln_gain = gk.data_ptr<scalar_t>(); d.ln_shift = sk.data_ptr<scalar_t>();
      }
      d.out = out.data_ptr<scalar_t>() + offset[k]; d.out_sb = out.stride(0); d.out_st = out.stride(1);
      auto hN = at::empty({B, H}, opts);
      // with halves: (2, steps, B / 2, .), each half's steps together (batch_half)
      auto saved = [&](int64_t width) {
        return halves ? pooled_empty({2, steps, B / 2, width}, opts) : pooled_empty({steps, B, width}, opts);
      };
      auto S = train ? saved(H) : at::empty({2, B, H}, opts);
      d.S = S.data_ptr<scalar_t>(); d.hN = hN.data_ptr<scalar_t>();
      keep.push_back(S);  // at inference S (and C) are scratch, not returned
      results.push_back(hN);
      at::Tensor C, cN;
      if (has_cell(kind)) {
        auto c0k = c0[k].contiguous();
        keep.push_back(c0k);
        d.c0 = c0k.data_ptr<scalar_t>();
        cN = at::empty({B, H}, opts);
        C = train ? saved(H) : at::empty({2, B, H}, opts);
        d.C = C.data_ptr<scalar_t>(); d.cN = cN.data_ptr<scalar_t>();
        keep.push_back(C);
        results.push_back(cN);
      } else {
        d.c0 = nullptr; d.C = nullptr; d.cN = nullptr;
      }
      at::Tensor A = train ? saved(saved_width<scalar_t>(kind, H)) : at::empty({0}, opts);
      d.A = train ? A.data_ptr<scalar_t>() : nullptr;
      results.push_back(train ? S : at::empty({0}, opts));
      if (has_cell(kind)) results.push_back(train ? C : at::empty({0}, opts));
      results.push_back(A);
    }
    if (halves)
      for (int h = 0; h < 2; ++h)
        jobs.emplace_back([&dirs, h, kind] {
          gemm_workers = 1;
          Direction<scalar_t> e = batch_half<scalar_t>(kind, dirs[0], h);
          forward_direction<scalar_t>(kind, e);
        });
    else
      for (size_t k = 0; k < nd; ++k)
        jobs.emplace_back([&dirs, k, kind, workers = spare_workers(nd)] {
          gemm_workers = workers;
          forward_direction<scalar_t>(kind, dirs[k]);
        });
    run_directions(jobs);
  });
  return results;
}

// Gradients per direction: [dh0, dc0 (LSTM kinds), dW_hh, db_hh (if bias), d gain, d shift
// (layer-norm kinds, shaped as ln_gain), dW_ih, db_ih (if b_ih)]; last dx (B, T, D), summed
// over the directions.
std::vector<at::Tensor> backward(int64_t kind, const at::Tensor& lengths, const at::Tensor& dout,
                                 const at::Tensor& x, std::vector<at::Tensor> w_ih,
                                 std::vector<at::Tensor> b_ih, std::vector<at::Tensor> h0,
                                 std::vector<at::Tensor> c0, std::vector<at::Tensor> w,
                                 std::vector<at::Tensor> bias, std::vector<at::Tensor> mask,
                                 std::vector<bool> reverse, std::vector<at::Tensor> S,
                                 std::vector<at::Tensor> C, std::vector<at::Tensor> A,
                                 std::vector<at::Tensor> dhN, std::vector<at::Tensor> dcN,
                                 std::vector<at::Tensor> ln_gain) {
  check(kind >= GRU && kind <= LN_LSTM, "kind must be 0 (GRU), 1 (LSTM), 2 (LN_GRU) or 3 (LN_LSTM)");
  const size_t nd = h0.size();
  check(present(x) && x.dim() == 3, "x must be (B, T, D)");
  const int B = static_cast<int>(dout.size(0)), T_ = static_cast<int>(dout.size(1));
  const int G = gates(kind);
  at::Tensor len;
  int steps = T_;
  if (present(lengths)) {
    len = lengths.to(at::kLong).contiguous();
    steps = static_cast<int>(len.max().item<int64_t>());
  }
  auto opts = dout.options();
  at::Tensor go = dout.stride(2) == 1 ? dout : dout.contiguous();
  at::Tensor xc = x.contiguous();
  const int D = static_cast<int>(xc.size(2));
  std::vector<at::Tensor> keep, dG(nd), dxi(nd), dh0(nd), dc0(nd), dw(nd), db(nd), dwi(nd), dbi(nd), dx(nd);
  ScratchLeases scratch;
  std::vector<at::Tensor> dgain(nd), dshift(nd);
  std::vector<std::function<void()>> jobs;
  int64_t offset = 0;
  AT_DISPATCH_FLOATING_TYPES(dout.scalar_type(), "rnnkit_backward", [&] {
    std::vector<Direction<scalar_t>> dirs(nd);
    std::vector<Grad<scalar_t>> grads(nd);
    std::vector<Projection<scalar_t>> projs(nd);
    for (size_t k = 0; k < nd; ++k) {
      const int H = static_cast<int>(w[k].size(1));
      auto wi = w_ih[k].contiguous();
      keep.push_back(wi);
      auto& p = projs[k];
      p.w = wi.data_ptr<scalar_t>();
      dwi[k] = at::empty({G * H, D}, opts);
      p.dw = dwi[k].data_ptr<scalar_t>();
      if (present(b_ih[k])) { dbi[k] = at::empty({G * H}, opts); p.db = dbi[k].data_ptr<scalar_t>(); }
      else p.db = nullptr;
      dx[k] = k == 0 ? pooled_empty({B, T_, D}, opts) : scratch.take({B, T_, D}, opts);  // summed into dx[0]
      if (present(lengths)) dx[k].zero_();  // padded positions get no gradient from any step
      p.dx = dx[k].data_ptr<scalar_t>();
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
      d.ln_gain = d.ln_shift = nullptr;
      if (is_layer_norm(kind)) {
        auto gk = ln_gain[k].contiguous();
        check(gk.numel() == ln_all_rows(kind) * H, "layer-norm gain must be shaped as in forward");
        keep.push_back(gk);
        d.ln_gain = gk.data_ptr<scalar_t>();
      }
      if (has_cell(kind)) {
        auto c0k = c0[k].contiguous();
        keep.push_back(c0k);
        d.c0 = c0k.data_ptr<scalar_t>(); d.C = C[k].data_ptr<scalar_t>();
      } else {
        d.c0 = nullptr; d.C = nullptr;
      }
      auto& q = grads[k];
      q.dout = go.data_ptr<scalar_t>() + offset; q.dout_sb = go.stride(0); q.dout_st = go.stride(1);
      offset += H;
      // a chunk of steps at a time: d (W_ih x), d gates, the gathered inputs and their dx
      const int chunk = chunk_steps(B, steps);
      dxi[k] = scratch.take({chunk * B, G * H}, opts);
      q.dxi = dxi[k].data_ptr<scalar_t>();
      dG[k] = scratch.take({chunk * B, G * H}, opts);
      q.dG = dG[k].data_ptr<scalar_t>();
      auto xa = scratch.take({chunk * B, D}, opts), dxc = scratch.take({chunk * B, D}, opts);
      q.dxc = dxc.data_ptr<scalar_t>();
      d.x = xc.data_ptr<scalar_t>(); d.D = D; d.chunk = chunk; d.pipeline = false; d.xa = xa.data_ptr<scalar_t>();
      dh0[k] = at::empty({B, H}, opts);
      q.dh0 = dh0[k].data_ptr<scalar_t>();
      dw[k] = at::empty({G * H, H}, opts);
      q.dw = dw[k].data_ptr<scalar_t>();
      q.dgain = q.dshift = nullptr;
      if (is_layer_norm(kind)) {
        dgain[k] = at::empty({ln_all_rows(kind), H}, opts);
        dshift[k] = at::empty({ln_all_rows(kind), H}, opts);
        q.dgain = dgain[k].data_ptr<scalar_t>(); q.dshift = dshift[k].data_ptr<scalar_t>();
      }
      if (present(bias[k])) { db[k] = at::empty({G * H}, opts); q.db = db[k].data_ptr<scalar_t>(); }
      else q.db = nullptr;
      if (present(dhN[k])) { auto t = dhN[k].contiguous(); keep.push_back(t); q.dhN = t.data_ptr<scalar_t>(); }
      else q.dhN = nullptr;
      if (has_cell(kind)) {
        dc0[k] = at::empty({B, H}, opts);
        q.dc0 = dc0[k].data_ptr<scalar_t>();
        if (present(dcN[k])) { auto t = dcN[k].contiguous(); keep.push_back(t); q.dcN = t.data_ptr<scalar_t>(); }
        else q.dcN = nullptr;
      } else {
        q.dc0 = nullptr; q.dcN = nullptr;
      }
    }
    // Forward ran the batch in two halves when it saved (2, steps, B / 2, .) (batch_half).
    const bool halves = nd == 1 && S[0].dim() == 4;
    GradHalf<scalar_t> own;
    if (halves)
      for (int h = 0; h < 2; ++h)
        jobs.emplace_back([&dirs, &grads, &projs, &own, h, kind] {
          gemm_workers = 1;
          const Direction<scalar_t> e = batch_half<scalar_t>(kind, dirs[0], h);
          Grad<scalar_t> q;
          Projection<scalar_t> p;
          grad_half<scalar_t>(kind, dirs[0], grads[0], projs[0], h, own, q, p);
          backward_direction<scalar_t>(kind, e, q, p);
        });
    else
      for (size_t k = 0; k < nd; ++k)
        jobs.emplace_back([&dirs, &grads, &projs, k, kind, workers = spare_workers(nd)] {
          gemm_workers = workers;
          backward_direction<scalar_t>(kind, dirs[k], grads[k], projs[k]);
        });
    run_directions(jobs);
    if (halves) {  // half 1's weight gradients into half 0's
      const auto& q = grads[0];
      const auto& p = projs[0];
      add_into(own.dw, q.dw);
      if (q.db) add_into(own.db, q.db);
      if (q.dgain) { add_into(own.dgain, q.dgain); add_into(own.dshift, q.dshift); }
      add_into(own.dwi, p.dw);
      if (p.db) add_into(own.dbi, p.db);
    }
    for (size_t k = 1; k < nd; ++k) {  // the input feeds every direction: its gradient is the sum
      scalar_t* __restrict a = dx[0].data_ptr<scalar_t>();
      const scalar_t* __restrict b = dx[k].data_ptr<scalar_t>();
      for (int64_t n = 0; n < static_cast<int64_t>(B) * T_ * D; ++n) a[n] += b[n];
    }
  });
  std::vector<at::Tensor> results;
  for (size_t k = 0; k < nd; ++k) {
    results.push_back(dh0[k]);
    if (has_cell(kind)) results.push_back(dc0[k]);
    results.push_back(dw[k]);
    results.push_back(db[k]);
    if (is_layer_norm(kind)) {
      results.push_back(dgain[k]);
      results.push_back(dshift[k]);
    }
    results.push_back(dwi[k]);
    results.push_back(dbi[k]);
  }
  results.push_back(dx[0]);
  return results;
}

// GFLOP/s of this file's GEMM on `threads` threads, each multiplying its own (n, n) x (n, n)
// float32 matrices `reps` times: the peak bench/speed.py compares the recurrence against.
double gemm_peak(int64_t n, int64_t reps, int64_t threads) {
  std::vector<std::function<void()>> jobs;
  std::vector<std::vector<float>> mats(3 * threads, std::vector<float>(n * n, 0.5f));
  for (int64_t t = 0; t < threads; ++t) {
    mats[3 * t + 1].resize(packed_size<float>(n, n));
    pack_b<float>(n, n, mats[3 * t].data(), n, mats[3 * t + 1].data());  // as the recurrent weights are
    jobs.emplace_back([&, t] {
      for (int64_t r = 0; r < reps; ++r)
        gemm_packed<float>(n, n, n, mats[3 * t].data(), n, mats[3 * t + 1].data(), mats[3 * t + 2].data(), n, false);
    });
  }
  auto t0 = std::chrono::steady_clock::now();
  if (threads == 1) jobs[0]();
  else {
    std::vector<std::thread> pool;
    for (size_t k = 1; k < jobs.size(); ++k) pool.emplace_back(jobs[k]);
    jobs[0]();
    for (auto& th : pool) th.join();
  }
  double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 2.0 * n * n * n * reps * threads / sec / 1e9;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rnnkit's compiled GRU/LSTM (and layer-norm GRU/LSTM) time loop (forward and backward through time)";
  // Arguments are converted before and results after; in between nothing touches Python, so
  // other Python threads (data loading, logging) run while the loop does.
  m.def("forward", &forward, "forward through time", py::call_guard<py::gil_scoped_release>());
  m.def("backward", &backward, "backward through time", py::call_guard<py::gil_scoped_release>());
  m.def("gemm_splits", [] { return gemm_splits.load(); }, "products split across two threads so far");
  m.def("jobs_on_workers", [] { return jobs_on_workers.load(); },
        "directions or product halves run so far by one of torch's threads other than the caller's");
  m.def("set_projection_chunk_rows", [](int64_t rows) {
    TORCH_CHECK(rows >= 1, "rnnkit compiled recurrence: projection chunk rows must be >= 1, got ", rows);
    return projection_chunk_rows.exchange(rows);
  }, "rows (steps x batch) per chunk of the input projection, forward and backward; returns the previous value");
  m.def("set_batch_half_rows", [](int64_t rows) {
    TORCH_CHECK(rows >= 1, "rnnkit compiled recurrence: batch half rows must be >= 1, got ", rows);
    return batch_half_rows.exchange(rows);
  }, "a one-direction batch of at least twice this many rows (an even number) runs as two halves, one per "
     "thread; returns the previous value");
  m.def("release_scratch", &release_scratch, "free the pooled scratch buffers; returns their bytes");
  m.def("gemm_peak", &gemm_peak, "GFLOP/s of the GEMM kernel, one (n, n) product per thread");
}
