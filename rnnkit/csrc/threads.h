// Threads: the directions of a layer, and the halves of one direction's products, on torch's
// intra-op threads; the products of one direction split across two of them (gemm_shared).
#pragma once

#include <ATen/Parallel.h>

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <thread>
#include <vector>

#include "gemm.h"

namespace rnnkit {

// Counters for the tests (tests/test_compiled_threads.py), only in a build with
// -DRNNKIT_TEST_HOOKS (RNNKIT_TEST_HOOKS=1, which tests/conftest.py sets): how many jobs ran on
// a thread other than the caller's, how many products were split across two threads.
#if defined(RNNKIT_TEST_HOOKS)
inline std::atomic<int64_t> jobs_on_workers{0}, gemm_splits{0};
#define RNNKIT_COUNT(counter, n) (counter += (n))
#else
#define RNNKIT_COUNT(counter, n) ((void)0)
#endif

// Runs job(0) .. job(n - 1) concurrently on torch's intra-op threads (at::parallel_for, one
// job per thread; serially when torch has one thread or the caller already is inside a
// parallel region). Not threads of our own: torch's OpenMP workers spin for a while after
// each of torch's parallel ops, and a thread of ours then shared its core with a spinning
// worker -- with our own threads, 42 % of the CPU time of a BiLSTM (32, 50, 128) training
// step on the C++ loop was libgomp's spin, and the step ran at half the speed it has here,
// where the spinning worker is the one that picks up the second job.
template <typename F> void on_torch_threads(int64_t n, const F& job) {
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    if (at::get_thread_num() != 0) RNNKIT_COUNT(jobs_on_workers, end - begin);
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
inline thread_local int gemm_workers = 1;

// Rows (steps x batch) of the input projection per chunk (project_chunk, backward_chunk): a
// chunk small enough that its projections are still in cache when its steps read them, which
// all steps projected at once are not (the A/B is in docs/benchmarks.md, section 2).
inline std::atomic<int64_t> projection_chunk_rows{256};
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
// the projection pipeline. 8 rows: at least one register tile of the GEMM on every ISA.
inline std::atomic<int64_t> batch_half_rows{8};

// C (M, N) (+)= op(A) B with B packed (pack_b), on this thread alone or, with gemm_workers = 2,
// with the rows of C split between this thread and one more; each element is summed in the
// same order either way, so the result is the same to the bit.
template <typename T, bool TRANS_A = false>
void gemm_shared(int M, int N, int K, const T* A, int64_t lda, const T* P, T* C, int64_t ldc, bool accumulate) {
  const int half = M / 2 / kTileRows * kTileRows;
  if (gemm_workers < 2 || half < 4 * kTileRows || static_cast<int64_t>(M) * N * K < kSplitMacs) {
    gemm_packed<T, TRANS_A>(M, N, K, A, lda, P, C, ldc, accumulate);
    return;
  }
  RNNKIT_COUNT(gemm_splits, 1);
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

// Directions run concurrently, one of torch's intra-op threads each (the caller's thread takes
// the first); with torch.set_num_threads(1) they run one after the other. Inside a direction
// nothing calls into ATen or BLAS but at::parallel_for, for a second thread of its own (one
// direction: the projection pipeline, backward's split products).
// An exception in a job (bad_alloc of a buffer) is carried to the caller's thread and thrown
// there after every job has ended -- as a catchable Python error, not std::terminate.
inline void run_directions(std::vector<std::function<void()>>& jobs) {
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
inline int spare_workers(size_t directions) { return directions == 1 && at::get_num_threads() >= 2 ? 2 : 1; }

}  // namespace rnnkit
