// The SIMD vocabulary of the GEMM kernel (gemm.h), one definition per instruction set, chosen
// when the extension is compiled (-march=..., see rnnkit/_compiled.py and RNNKIT_MARCH):
//
//   ISA        vector      register tile (rows x vectors)   why that tile
//   AVX-512    512-bit     8 x 2  (16 accumulators)          32 registers: room to spare
//   AVX2+FMA   256-bit     6 x 2  (12 accumulators)          16 registers: 12 + 2 of B + 1
//                                                            broadcast of A; 8 x 2 would spill
//   NEON       128-bit     8 x 2  (16 accumulators)          32 registers (AArch64)
//   SSE2       128-bit     6 x 2  (12 accumulators)          16 registers, no FMA
//   other      scalar      4 x 4                             whatever the compiler makes of it
//
// The kernel is written against Ops<T> (load, store, broadcast, fused multiply-add) and never
// relies on the compiler's auto-vectoriser: built for AVX2, GCC 12 auto-vectorised the old
// plain-C++ tile along the wrong loop and ran at 3 GFLOP/s per core where torch.mm reaches
// 77 (docs/benchmarks.md). Each Ops is a handful of intrinsics, so the tile compiles to one
// broadcast per row of A, NV loads of B and rows x NV FMAs per step of k, in registers.
#pragma once

#include <cstdint>
#include <cstring>

// RNNKIT_SIMD_SCALAR forces the plain C++ tile on any machine (tests/test_kernel_isas.py builds
// the kernel that way to check the fallback on x86).
#if !defined(RNNKIT_SIMD_SCALAR) && (defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__)) || defined(__SSE2__))
#include <immintrin.h>
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#endif

namespace rnnkit {

template <typename T> struct Ops;

#if defined(RNNKIT_SIMD_SCALAR)
#define RNNKIT_SIMD_SCALAR_TILE
#elif defined(__AVX512F__)
constexpr const char* kIsa = "avx512";
constexpr int kTileRows = 8, kTileVectors = 2;
template <> struct Ops<float> {
  using V = __m512;
  static constexpr int lanes = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V set1(float a) { return _mm512_set1_ps(a); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }  // a * b + c
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
};
template <> struct Ops<double> {
  using V = __m512d;
  static constexpr int lanes = 8;
  static V zero() { return _mm512_setzero_pd(); }
  static V load(const double* p) { return _mm512_loadu_pd(p); }
  static void store(double* p, V v) { _mm512_storeu_pd(p, v); }
  static V set1(double a) { return _mm512_set1_pd(a); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static V add(V a, V b) { return _mm512_add_pd(a, b); }
};
#elif defined(__AVX2__) && defined(__FMA__)
constexpr const char* kIsa = "avx2";
constexpr int kTileRows = 6, kTileVectors = 2;
template <> struct Ops<float> {
  using V = __m256;
  static constexpr int lanes = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V set1(float a) { return _mm256_set1_ps(a); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
};
template <> struct Ops<double> {
  using V = __m256d;
  static constexpr int lanes = 4;
  static V zero() { return _mm256_setzero_pd(); }
  static V load(const double* p) { return _mm256_loadu_pd(p); }
  static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
  static V set1(double a) { return _mm256_set1_pd(a); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static V add(V a, V b) { return _mm256_add_pd(a, b); }
};
#elif defined(__aarch64__) && defined(__ARM_NEON)
constexpr const char* kIsa = "neon";
constexpr int kTileRows = 8, kTileVectors = 2;
template <> struct Ops<float> {
  using V = float32x4_t;
  static constexpr int lanes = 4;
  static V zero() { return vdupq_n_f32(0.0f); }
  static V load(const float* p) { return vld1q_f32(p); }
  static void store(float* p, V v) { vst1q_f32(p, v); }
  static V set1(float a) { return vdupq_n_f32(a); }
  static V fma(V a, V b, V c) { return vfmaq_f32(c, a, b); }
  static V add(V a, V b) { return vaddq_f32(a, b); }
};
template <> struct Ops<double> {
  using V = float64x2_t;
  static constexpr int lanes = 2;
  static V zero() { return vdupq_n_f64(0.0); }
  static V load(const double* p) { return vld1q_f64(p); }
  static void store(double* p, V v) { vst1q_f64(p, v); }
  static V set1(double a) { return vdupq_n_f64(a); }
  static V fma(V a, V b, V c) { return vfmaq_f64(c, a, b); }
  static V add(V a, V b) { return vaddq_f64(a, b); }
};
#elif defined(__SSE2__)
constexpr const char* kIsa = "sse2";
constexpr int kTileRows = 6, kTileVectors = 2;
template <> struct Ops<float> {
  using V = __m128;
  static constexpr int lanes = 4;
  static V zero() { return _mm_setzero_ps(); }
  static V load(const float* p) { return _mm_loadu_ps(p); }
  static void store(float* p, V v) { _mm_storeu_ps(p, v); }
  static V set1(float a) { return _mm_set1_ps(a); }
  static V fma(V a, V b, V c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }  // no FMA before AVX2
  static V add(V a, V b) { return _mm_add_ps(a, b); }
};
template <> struct Ops<double> {
  using V = __m128d;
  static constexpr int lanes = 2;
  static V zero() { return _mm_setzero_pd(); }
  static V load(const double* p) { return _mm_loadu_pd(p); }
  static void store(double* p, V v) { _mm_storeu_pd(p, v); }
  static V set1(double a) { return _mm_set1_pd(a); }
  static V fma(V a, V b, V c) { return _mm_add_pd(_mm_mul_pd(a, b), c); }
  static V add(V a, V b) { return _mm_add_pd(a, b); }
};
#else
#define RNNKIT_SIMD_SCALAR_TILE
#endif

#if defined(RNNKIT_SIMD_SCALAR_TILE)
constexpr const char* kIsa = "scalar";
constexpr int kTileRows = 4, kTileVectors = 4;
template <typename T> struct ScalarOps {
  using V = T;
  static constexpr int lanes = 1;
  static V zero() { return T(0); }
  static V load(const T* p) { return *p; }
  static void store(T* p, V v) { *p = v; }
  static V set1(T a) { return a; }
  static V fma(V a, V b, V c) { return a * b + c; }
  static V add(V a, V b) { return a + b; }
};
template <> struct Ops<float> : ScalarOps<float> {};
template <> struct Ops<double> : ScalarOps<double> {};
#endif

// Columns of one packed panel of B: the register tile's width.
template <typename T> constexpr int panel_width() { return kTileVectors * Ops<T>::lanes; }

}  // namespace rnnkit
