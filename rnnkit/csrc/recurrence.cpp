// rnnkit's compiled time loop: GRU, LSTM and their layer-norm variants, forward and backward
// through time on the CPU -- the entry points called from Python (rnnkit/_compiled.py) and
// their bindings. The rest lives in one header per concept, each including the ones below it:
//
//   simd.h        the SIMD vocabulary per instruction set (AVX-512, AVX2, NEON, SSE2, scalar)
//   gemm.h        the small GEMM: packing and the register tile, one thread, torch-free
//   vmath.h       vectorisable exp / sigmoid / tanh and lane sums
//   cells.h       one row, one step: the gate arithmetic of each kind, forward and backward
//   threads.h     torch's intra-op threads: directions side by side, products split in two
//   directions.h  one direction over time, forward and backward; batch halves
//   pool.h        the memory pool of scratch and results
//
// What it computes is exactly rnnkit.cells.GRUCell / LSTMCell / LayerNormGRUCell /
// LayerNormLSTMCell run over time (see those docstrings for the equations and the gate order
// r, z, n / i, f, g, o). The input half has no recurrence in it: x W_ih^T (+ b_ih) is one
// product per chunk of steps (project_chunk, 256 rows of steps x batch), done in the loop
// just before those steps, so that it is still in cache when they read it. Per step s:
//
//     gh = (m * h_prev) W_hh^T              one small GEMM (B, H) x (H, G*H), gemm.h
//     gates, state = fused elementwise math  one pass over (B, G*H), cells.h
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
// each (run_directions).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "directions.h"
#include "pool.h"
#include "threads.h"

namespace rnnkit {
namespace {

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

}  // namespace
}  // namespace rnnkit

using namespace rnnkit;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rnnkit's compiled GRU/LSTM (and layer-norm GRU/LSTM) time loop (forward and backward through time)";
  // Arguments are converted before and results after; in between nothing touches Python, so
  // other Python threads (data loading, logging) run while the loop does.
  m.def("forward", &forward, "forward through time", py::call_guard<py::gil_scoped_release>());
  m.def("backward", &backward, "backward through time", py::call_guard<py::gil_scoped_release>());
#if defined(RNNKIT_TEST_HOOKS)
  m.def("gemm_splits", [] { return gemm_splits.load(); }, "products split across two threads so far");
  m.def("jobs_on_workers", [] { return jobs_on_workers.load(); },
        "directions or product halves run so far by one of torch's threads other than the caller's");
#endif
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
  m.def("isa", [] { return std::string(kIsa); },
        "the instruction set the GEMM kernel was built for (simd.h): avx512, avx2, neon, sse2 or scalar");
  m.def("tile", [] { return std::vector<int>{kTileRows, panel_width<float>()}; },
        "the GEMM's register tile in float32: rows, columns");
}
