// One direction over time: forward (project a chunk of steps, then per step one small GEMM
// and the gate arithmetic) and backward through time (per step the gate gradients and one
// small GEMM; per chunk the weight gradients and dx), and one direction as two batch halves.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cells.h"
#include "gemm.h"
#include "threads.h"

namespace rnnkit {

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
        if (at::get_thread_num() != 0) RNNKIT_COUNT(jobs_on_workers, 1);
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

}  // namespace rnnkit
