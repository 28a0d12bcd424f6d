// One row, one step: the gate arithmetic of each kind of cell, forward and backward, for one
// sequence at one step, H lanes wide (the layer-norm kinds with their row-wise layer norms).
// What is saved per row for backward, and where.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "vmath.h"

namespace rnnkit {

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

}  // namespace rnnkit
