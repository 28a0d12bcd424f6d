// GFLOP/s of rnnkit's GEMM kernel (rnnkit/csrc/gemm.h), for bench/: kept out of the extension
// that layers load. Built and loaded by bench/kernel.py with the same -march as the extension
// (RNNKIT_MARCH), so it measures the register tile the loop runs.
#include <chrono>
#include <thread>
#include <vector>

#include "gemm.h"

extern "C" {

// `threads` threads, each multiplying its own (n, n) x (n, n) float32 matrices `reps` times,
// B packed once as the recurrent weights are.
double rnnkit_gemm_peak(int n, int reps, int threads) {
  std::vector<std::vector<float>> a(threads), p(threads), c(threads);
  for (int t = 0; t < threads; ++t) {
    a[t].assign(static_cast<size_t>(n) * n, 0.5f);
    c[t].assign(static_cast<size_t>(n) * n, 0.0f);
    p[t].resize(static_cast<size_t>(rnnkit::packed_size<float>(n, n)));
    rnnkit::pack_b<float>(n, n, a[t].data(), n, p[t].data());
  }
  auto job = [&](int t) {
    for (int r = 0; r < reps; ++r)
      rnnkit::gemm_packed<float>(n, n, n, a[t].data(), n, p[t].data(), c[t].data(), n, false);
  };
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> others;
  for (int t = 1; t < threads; ++t) others.emplace_back(job, t);
  job(0);
  for (auto& th : others) th.join();
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 2.0 * n * n * n * reps * threads / sec / 1e9;
}

const char* rnnkit_isa() { return rnnkit::kIsa; }
}
