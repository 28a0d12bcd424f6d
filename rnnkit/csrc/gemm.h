// The small GEMM of the time loop, on one thread: B packed into panels, a register tile of
// explicit SIMD (simd.h) per instruction set. Needs nothing of torch, so that it builds on its
// own (bench/gemm_peak.cpp, the ARM64 compile check).
//
// The products here are small or skinny ((B, H) x (H, G*H) per step, B, H ~ 16..256) and run
// inside a direction's own thread, thousands of times per call: a BLAS call per step costs
// more in dispatch and threading decisions than the product itself. The kernel follows the
// usual blocked scheme (Goto & van de Geijn 2008), kept small:
//
// * B is packed: per block of kDepth rows of k, per panel of NR columns (the tile's width,
//   panel_width), a contiguous kk x NR tile, the last panel zero-padded. Unpacked, the rows of
//   a panel lie N floats apart -- 4 KB for N = 1024 -- and all map to the same few L1 sets, so
//   the panel would not stay in L1. The recurrent weights are packed once per call and reused
//   by every step.
// * Rows of A go in blocks of kBlockRows, so that the A block stays in L2 while every panel of
//   B passes over it.
// * The register tile is kTileRows rows x NR columns of accumulators, one broadcast of A and
//   kTileVectors vector loads of B per kTileRows x kTileVectors FMAs (simd.h says why each ISA
//   has the size it has).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "simd.h"

#if defined(__clang__)
#define RNNKIT_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define RNNKIT_UNROLL _Pragma("GCC unroll 16")
#else
#define RNNKIT_UNROLL
#endif

namespace rnnkit {

// kBlockRows: a multiple of every ISA's tile height (6 and 8).
constexpr int kDepth = 128, kBlockRows = 96;
static_assert(kBlockRows % kTileRows == 0, "a block of rows is whole tiles");

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

// C (R, nv) (+)= op(A) (R, K) times one packed panel (K, NR), in R x kTileVectors registers.
// A is (R, K) with leading dimension lda, or, when TRANS_A, stored (K, R) (weight gradients:
// K runs over steps x rows). Each element of C is summed over k in order, one FMA per k.
template <typename T, int R, bool TRANS_A>
inline void gemm_tile(int K, const T* __restrict A, int64_t lda, const T* __restrict B, T* __restrict C,
                      int64_t ldc, bool accumulate, int nv) {
  using O = Ops<T>;
  using V = typename O::V;
  constexpr int NV = kTileVectors, L = O::lanes, NR = NV * L;
  V c[R][NV];
  RNNKIT_UNROLL
  for (int r = 0; r < R; ++r) {
    RNNKIT_UNROLL
    for (int j = 0; j < NV; ++j) c[r][j] = O::zero();
  }
  for (int k = 0; k < K; ++k) {
    const T* __restrict b = B + static_cast<int64_t>(k) * NR;
    V bv[NV];
    RNNKIT_UNROLL
    for (int j = 0; j < NV; ++j) bv[j] = O::load(b + j * L);
    RNNKIT_UNROLL
    for (int r = 0; r < R; ++r) {
      const V a = O::set1(TRANS_A ? A[static_cast<int64_t>(k) * lda + r] : A[r * lda + k]);
      RNNKIT_UNROLL
      for (int j = 0; j < NV; ++j) c[r][j] = O::fma(a, bv[j], c[r][j]);
    }
  }
  if (nv == NR) {
    RNNKIT_UNROLL
    for (int r = 0; r < R; ++r) {
      RNNKIT_UNROLL
      for (int j = 0; j < NV; ++j) {
        T* dst = C + r * ldc + j * L;
        O::store(dst, accumulate ? O::add(O::load(dst), c[r][j]) : c[r][j]);
      }
    }
  } else {  // the last panel of a width that is not a multiple of NR
    T row[NR];
    for (int r = 0; r < R; ++r) {
      RNNKIT_UNROLL
      for (int j = 0; j < NV; ++j) O::store(row + j * L, c[r][j]);
      for (int j = 0; j < nv; ++j) C[r * ldc + j] = accumulate ? C[r * ldc + j] + row[j] : row[j];
    }
  }
}

// The rows [i, i1) of a block, in tiles of kTileRows rows and then 4, 2 and 1: tile(R, i) is
// called for each, in order.
template <typename F> inline void for_tiles(int i, int i1, const F& tile) {
  for (; i + kTileRows <= i1; i += kTileRows) tile(std::integral_constant<int, kTileRows>(), i);
  if (kTileRows > 4 && i + 4 <= i1) { tile(std::integral_constant<int, 4>(), i); i += 4; }
  if (i + 2 <= i1) { tile(std::integral_constant<int, 2>(), i); i += 2; }
  if (i < i1) tile(std::integral_constant<int, 1>(), i);
}

// Rows [i0, i1) x depth [k0, k0 + kk) of op(A), tile by tile (for_tiles) into Q: a tile of R
// rows as kk x R, k-major -- what gemm_tile reads as a transposed A with leading dimension R,
// one contiguous run of R values per k.
template <typename T, bool TRANS_A>
void pack_a(int i0, int i1, int k0, int kk, const T* A, int64_t lda, T* __restrict Q) {
  for_tiles(i0, i1, [&](auto rows, int i) {
    constexpr int R = decltype(rows)::value;
    if constexpr (TRANS_A) {
      for (int k = 0; k < kk; ++k) {
        const T* src = A + static_cast<int64_t>(k0 + k) * lda + i;
        for (int r = 0; r < R; ++r) Q[k * R + r] = src[r];
      }
    } else {
      for (int r = 0; r < R; ++r) {
        const T* src = A + static_cast<int64_t>(i + r) * lda + k0;
        for (int k = 0; k < kk; ++k) Q[k * R + r] = src[k];
      }
    }
    Q += static_cast<int64_t>(kk) * R;
  });
}

// C (M, N) (+)= op(A) B, row-major, with B given packed (pack_b); op(A) = A (M, K), or A^T
// with A stored (K, M) if TRANS_A.
//
// A transposed (weight gradients) is packed too, a block at a time (pack_a), whenever B has
// more than one panel: every panel then reads the block as contiguous runs of R values, where
// unpacked each step of k read R values out of a 64-byte line of another row of A. On one
// AVX2 core weight gradients (K = steps x rows) ran at 61-69 GFLOP/s unpacked and at 75-85
// packed. An A as it lies (row-major) is read R rows side by side, which the hardware
// prefetches well: packed, the per-step products (M = B = 8..64) lost 5-8 % to the packing,
// and the large projections gained nothing (docs/benchmarks.md).
//
// Loop order: a block of kBlockRows rows of A (in L2) meets every panel of B; for each panel
// the k-blocks run innermost, so that the block's C tiles stay in L1 until their sum is
// complete and C goes to memory once -- C of an input projection (B*T, G*H) is tens of MB,
// and writing it once per k-block more than doubles its memory traffic. Weight gradients
// (TRANS_A) have a small C (the weight's size) and a very long k (steps x rows): there the
// k-block is outermost, so that its slice of A stays in L2 while all of C is updated.
template <typename T, bool TRANS_A = false>
void gemm_packed(int M, int N, int K, const T* A, int64_t lda, const T* P, T* C, int64_t ldc, bool accumulate) {
  constexpr int NR = panel_width<T>();
  const int np = (N + NR - 1) / NR;
  const bool pack = TRANS_A && np > 1;
  thread_local std::vector<T> buffer;  // the packed A block; kept, so that steps do not allocate
  if (pack) {
    const int64_t need = static_cast<int64_t>(std::min(M, kBlockRows)) * std::min(K, kDepth);
    if (static_cast<int64_t>(buffer.size()) < need) buffer.resize(static_cast<size_t>(need));
  }
  // rows [i0, i1) x depth [k0, k0 + kk) times panel p; Q: the packed block at k0, or null
  auto block = [&](int i0, int i1, int k0, int kk, int p, const T* Q) {
    const bool acc = accumulate || k0 > 0;
    const T* Bp = P + static_cast<int64_t>(k0) * np * NR + static_cast<int64_t>(p) * kk * NR;
    const int nv = std::min(NR, N - p * NR);
    T* Cp = C + p * NR;
    for_tiles(i0, i1, [&](auto rows, int i) {
      constexpr int R = decltype(rows)::value;
      T* Ci = Cp + static_cast<int64_t>(i) * ldc;
      if (Q) {
        gemm_tile<T, R, true>(kk, Q, R, Bp, Ci, ldc, acc, nv);
        Q += static_cast<int64_t>(kk) * R;
      } else if (TRANS_A) {
        gemm_tile<T, R, true>(kk, A + static_cast<int64_t>(k0) * lda + i, lda, Bp, Ci, ldc, acc, nv);
      } else {
        gemm_tile<T, R, false>(kk, A + static_cast<int64_t>(i) * lda + k0, lda, Bp, Ci, ldc, acc, nv);
      }
    });
  };
  if (TRANS_A) {
    for (int k0 = 0; k0 < K; k0 += kDepth) {
      const int kk = std::min(kDepth, K - k0);
      for (int i0 = 0; i0 < M; i0 += kBlockRows) {
        const int i1 = std::min(M, i0 + kBlockRows);
        if (pack) pack_a<T, TRANS_A>(i0, i1, k0, kk, A, lda, buffer.data());
        for (int p = 0; p < np; ++p) block(i0, i1, k0, kk, p, pack ? buffer.data() : nullptr);
      }
    }
  } else {
    for (int i0 = 0; i0 < M; i0 += kBlockRows) {
      const int i1 = std::min(M, i0 + kBlockRows);
      for (int p = 0; p < np; ++p)
        for (int k0 = 0; k0 < K; k0 += kDepth) block(i0, i1, k0, std::min(kDepth, K - k0), p, nullptr);
    }
  }
}

}  // namespace rnnkit
