// The loop's memory pool: scratch leased for a call, and results whose memory comes back when
// torch frees them.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <vector>

namespace rnnkit {

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
// takes the last given back, the one most likely still in cache: taking the first, inference
// after training steps rotated through same-size buffers and found none of them in cache
// (measured in docs/benchmarks.md, section 2). Results below
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
inline Pool& pool() {
  static Pool* p = new Pool;
  return *p;
}

inline int64_t bytes_of(const at::Tensor& t) { return t.numel() * static_cast<int64_t>(t.element_size()); }

inline at::Tensor pool_take(int64_t n, const at::TensorOptions& opts) {
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

inline void pool_give(const at::Tensor& t) {
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

inline int64_t numel_of(at::IntArrayRef shape) {
  int64_t n = 1;
  for (auto v : shape) n *= v;
  return n;
}

// A result of the call: an empty tensor whose memory comes from the pool and goes back to it
// when its storage is freed.
inline at::Tensor pooled_empty(at::IntArrayRef shape, const at::TensorOptions& opts) {
  const int64_t n = numel_of(shape);
  if (n * static_cast<int64_t>(c10::elementSize(c10::typeMetaToScalarType(opts.dtype()))) < kPoolMinBytes)
    return at::empty(shape, opts);
  auto* base = new at::Tensor(pool_take(n, opts));
  return at::from_blob(base->data_ptr(), shape, [base](void*) {
    pool_give(*base);
    delete base;
  }, opts);
}

inline at::Tensor pooled_zeros(at::IntArrayRef shape, const at::TensorOptions& opts) {
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

inline int64_t release_scratch() {
  Pool& P = pool();
  std::lock_guard<std::mutex> lock(P.mutex);
  int64_t bytes = 0;
  for (auto& t : P.free) bytes += bytes_of(t);
  P.free.clear();
  return bytes;
}

}  // namespace rnnkit
