// Fused CPU kernels for the forecaster on Linux's CPU build of MLX (`cpu_kernels.rs`).
//
// MLX's CPU build runs one scalar kernel per operation: `power` calls glibc's `powf` for every
// element (about 5 ns), and the online softmax of a block pair took five passes over its scores
// (row max, maximum, subtract, power, row sum). These are MLX primitives of our own, written
// like MLX's extension example (`examples/extensions/axpby`): each builds its outputs lazily in
// the graph, runs on the stream it was created on through MLX's CPU command encoder (so the
// batch parts keep running side by side), and defines its vector-Jacobian product, so autodiff
// goes through it as through MLX's own operations.
//
// - `OnlineSoftmaxBlock(scores, max_old) -> (max_new, weights, weight_sum)`: for each row r of
//   base-2 scores, `max_new[r] = max(max_old[r], max_j scores[r, j])`,
//   `weights[r, j] = 2^(scores[r, j] - max_new[r])`, `weight_sum[r] = sum_j weights[r, j]`, in
//   one pass over the row (kept in L1). The gradient flows to the scores only, through the
//   weights and their sum; the running maximum is a shift the attention output does not depend
//   on (the Rust side stopped its gradient before these kernels, too).
// - `GeluCpu(x) -> y` or `(y, y')`: the exact GELU with the erf approximation of MLX's own CPU
//   kernel (Abramowitz & Stegun 7.1.26), whose derivative is produced in the same pass for a
//   training step; its vector-Jacobian product is `cotangent * y'`.
//
// `2^x` is a degree-6 polynomial on [-1/2, 1/2] and the exponent's bits (relative error about
// 1e-7, one float ulp), written so that gcc vectorises it; `target_clones` compiles each loop for
// x86-64-v4 (AVX-512), x86-64-v3 (AVX2, FMA) and the x86-64 baseline, chosen at load time for
// the CPU it runs on (by ISA level: gcc's `arch=<cpu model>` clones match only those exact CPU
// models, and this machine's Xeon got the scalar baseline from them).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <dlfcn.h>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"
#include "mlx/stream.h"
#include "mlx/utils.h"

namespace mx = mlx::core;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ENERGY_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ENERGY_CLONES
#endif

namespace {

constexpr float LN2 = 0.6931471805599453f;
constexpr int LANES = 16;

// 2^x for x in [-127, 127] (clamped there; 2^-127 gives 0). NaN stays NaN.
inline __attribute__((always_inline)) float exp2_poly(float x) {
  x = x < -127.0f ? -127.0f : x;
  x = x > 127.0f ? 127.0f : x;
  // Round to nearest by adding 1.5 * 2^23: the integer lands in the low mantissa bits.
  const float shifter = 12582912.0f;
  float t = x + shifter;
  float n = t - shifter;
  int32_t t_bits;
  std::memcpy(&t_bits, &t, sizeof t_bits);
  int32_t exponent = t_bits - 0x4B400000;  // the integer n
  float f = x - n;                        // in [-1/2, 1/2]
  float p = 1.5345812e-4f;
  p = p * f + 1.3399931e-3f;
  p = p * f + 9.6184891e-3f;
  p = p * f + 5.5503286e-2f;
  p = p * f + 2.4022646e-1f;
  p = p * f + 6.9314718e-1f;
  p = p * f + 1.0f;
  int32_t scale_bits = (exponent + 127) << 23;
  float scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  return p * scale;
}

// Sum of n floats in LANES interleaved partial sums (vectorised, and the same order every run).
inline __attribute__((always_inline)) float lane_sum(const float* x, size_t n) {
  float lanes[LANES] = {};
  size_t j = 0;
  for (; j + LANES <= n; j += LANES) {
    for (int l = 0; l < LANES; l++) {
      lanes[l] += x[j + l];
    }
  }
  float sum = 0.0f;
  for (int l = 0; l < LANES; l++) {
    sum += lanes[l];
  }
  for (; j < n; j++) {
    sum += x[j];
  }
  return sum;
}

// One row of the online softmax: m_new = max(m_old, max_j s[j]), w[j] = 2^(s[j] - m_new) (`w`
// may be `s`); returns m_new and writes Σ_j w[j] to `sum`.
inline __attribute__((always_inline)) float softmax_row(const float* s, float* w, size_t cols, float m_old, float* sum) {
  float lanes[LANES];
  for (int l = 0; l < LANES; l++) {
    lanes[l] = m_old;
  }
  size_t j = 0;
  for (; j + LANES <= cols; j += LANES) {
    for (int l = 0; l < LANES; l++) {
      lanes[l] = s[j + l] > lanes[l] ? s[j + l] : lanes[l];
    }
  }
  float m = m_old;
  for (int l = 0; l < LANES; l++) {
    m = lanes[l] > m ? lanes[l] : m;
  }
  for (; j < cols; j++) {
    m = s[j] > m ? s[j] : m;
  }
  for (size_t k = 0; k < cols; k++) {
    w[k] = exp2_poly(s[k] - m);
  }
  *sum = lane_sum(w, cols);
  return m;
}

ENERGY_CLONES void online_softmax_rows(
    const float* scores,
    const float* max_old,
    float* max_new,
    float* weights,
    float* weight_sum,
    size_t rows,
    size_t cols) {
  for (size_t r = 0; r < rows; r++) {
    max_new[r] = softmax_row(scores + r * cols, weights + r * cols, cols, max_old[r], weight_sum + r);
  }
}

// d scores = ln 2 * weights * (d weights + d weight_sum[row]).
ENERGY_CLONES void online_softmax_rows_vjp(
    const float* weights,
    const float* d_weights,
    const float* d_sum,
    float* d_scores,
    size_t rows,
    size_t cols) {
  for (size_t r = 0; r < rows; r++) {
    const float* w = weights + r * cols;
    const float* dw = d_weights + r * cols;
    float* ds = d_scores + r * cols;
    const float shift = d_sum[r];
    for (size_t k = 0; k < cols; k++) {
      ds[k] = LN2 * w[k] * (dw[k] + shift);
    }
  }
}

// A&S 7.1.26, the erf approximation of MLX's CPU kernel (and of the Rust `gelu_cpu`).
constexpr float ERF_P = 0.3275911f;
constexpr float ERF_A1 = 0.2548296f;
constexpr float ERF_A2 = -0.28449674f;
constexpr float ERF_A3 = 1.4214137f;
constexpr float ERF_A4 = -1.453152f;
constexpr float ERF_A5 = 1.0614054f;
constexpr float FRAC_1_SQRT_2 = 0.70710678118654752f;
constexpr float HALF_LOG2_E = 0.72134752044448170f;  // log2(e) / 2
constexpr float INV_SQRT_TAU = 0.39894228040143268f;  // 1 / sqrt(2 pi)

// y = x * Phi(x) and, when `slope` is not null, y' = Phi(x) + x * phi(x).
ENERGY_CLONES void gelu_elements(const float* x, float* y, float* slope, size_t n) {
  if (slope == nullptr) {
    for (size_t i = 0; i < n; i++) {
      float v = x[i];
      float z = std::fabs(v) * FRAC_1_SQRT_2;
      float t = 1.0f / (1.0f + ERF_P * z);
      float poly = ((((ERF_A5 * t + ERF_A4) * t + ERF_A3) * t + ERF_A2) * t + ERF_A1) * t;
      float gaussian = exp2_poly(-v * v * HALF_LOG2_E);
      float tail = 0.5f * poly * gaussian;
      float cdf = v > 0.0f ? 1.0f - tail : tail;
      y[i] = v * cdf;
    }
    return;
  }
  for (size_t i = 0; i < n; i++) {
    float v = x[i];
    float z = std::fabs(v) * FRAC_1_SQRT_2;
    float t = 1.0f / (1.0f + ERF_P * z);
    float poly = ((((ERF_A5 * t + ERF_A4) * t + ERF_A3) * t + ERF_A2) * t + ERF_A1) * t;
    float gaussian = exp2_poly(-v * v * HALF_LOG2_E);
    float tail = 0.5f * poly * gaussian;
    float cdf = v > 0.0f ? 1.0f - tail : tail;
    y[i] = v * cdf;
    slope[i] = cdf + v * gaussian * INV_SQRT_TAU;
  }
}

// y = (x - mean) / sqrt(var + eps) * w + b over each row of `cols` (var without Bessel's
// correction, as MLX's `fast::layer_norm`); `scratch` holds one row.
ENERGY_CLONES void layer_norm_rows(
    const float* x,
    const float* w,
    const float* b,
    float* y,
    float* scratch,
    float eps,
    size_t rows,
    size_t cols) {
  const float inv_cols = 1.0f / static_cast<float>(cols);
  for (size_t r = 0; r < rows; r++) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    const float mean = lane_sum(xr, cols) * inv_cols;
    for (size_t j = 0; j < cols; j++) {
      float centred = xr[j] - mean;
      scratch[j] = centred * centred;
    }
    const float rstd = 1.0f / std::sqrt(lane_sum(scratch, cols) * inv_cols + eps);
    for (size_t j = 0; j < cols; j++) {
      yr[j] = (xr[j] - mean) * rstd * w[j] + b[j];
    }
  }
}

// The layer norm's vector-Jacobian product: with x̂ = (x - mean) * rstd and g = dy * w,
// dx = rstd * (g - mean(g) - x̂ * mean(g * x̂)), dw = Σ_rows dy * x̂, db = Σ_rows dy (summed
// row after row: deterministic). `scratch` holds three rows.
ENERGY_CLONES void layer_norm_rows_vjp(
    const float* x,
    const float* w,
    const float* dy,
    float* dx,
    float* dw,
    float* db,
    float* scratch,
    float eps,
    size_t rows,
    size_t cols) {
  const float inv_cols = 1.0f / static_cast<float>(cols);
  float* xhat = scratch;
  float* g = scratch + cols;
  float* gx = scratch + 2 * cols;
  for (size_t j = 0; j < cols; j++) {
    dw[j] = 0.0f;
    db[j] = 0.0f;
  }
  for (size_t r = 0; r < rows; r++) {
    const float* xr = x + r * cols;
    const float* dyr = dy + r * cols;
    float* dxr = dx + r * cols;
    const float mean = lane_sum(xr, cols) * inv_cols;
    for (size_t j = 0; j < cols; j++) {
      float centred = xr[j] - mean;
      gx[j] = centred * centred;
    }
    const float rstd = 1.0f / std::sqrt(lane_sum(gx, cols) * inv_cols + eps);
    for (size_t j = 0; j < cols; j++) {
      xhat[j] = (xr[j] - mean) * rstd;
      g[j] = dyr[j] * w[j];
      gx[j] = g[j] * xhat[j];
      dw[j] += dyr[j] * xhat[j];
      db[j] += dyr[j];
    }
    const float mean_g = lane_sum(g, cols) * inv_cols;
    const float mean_gx = lane_sum(gx, cols) * inv_cols;
    for (size_t j = 0; j < cols; j++) {
      dxr[j] = rstd * (g[j] - mean_g - xhat[j] * mean_gx);
    }
  }
}

// cblas_sgemm of whichever BLAS the process loaded (OpenBLAS, or the wheel's reference BLAS),
// looked up at run time so that the kernels link against neither.
using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*, int);
constexpr int CBLAS_ROW_MAJOR = 101;
constexpr int CBLAS_NO_TRANS = 111;
constexpr int CBLAS_TRANS = 112;

SgemmFn sgemm() {
  static SgemmFn f = reinterpret_cast<SgemmFn>(dlsym(RTLD_DEFAULT, "cblas_sgemm"));
  if (f == nullptr) {
    throw std::runtime_error("no cblas_sgemm in the process (MLX's BLAS)");
  }
  return f;
}

// Rescales one query block's accumulators for a key block whose base-2 scores `s` ([rows, cols])
// were just computed: the running maximum `m`, the weights 2^(s - m) in place of the scores,
// the denominators `l` and the numerators `acc` ([rows, head_dim]) times 2^(m_old - m_new).
ENERGY_CLONES void online_softmax_fold(
    float* s,
    float* m,
    float* l,
    float* acc,
    size_t ld_acc,
    size_t rows,
    size_t cols,
    size_t head_dim) {
  for (size_t r = 0; r < rows; r++) {
    float* sr = s + r * cols;
    float block_sum;
    const float m_new = softmax_row(sr, sr, cols, m[r], &block_sum);
    const float correction = exp2_poly(m[r] - m_new);
    l[r] = l[r] * correction + block_sum;
    m[r] = m_new;
    float* ar = acc + r * ld_acc;
    for (size_t d = 0; d < head_dim; d++) {
      ar[d] *= correction;
    }
  }
}

// Where the attention's rows live: q, k and v are the three thirds of each row of one
// [batch, length, 3, heads, head_dim] array (the QKV projection's output as it is) and the
// output is [batch, length, heads, head_dim] (what the output projection takes), so that no
// transpose is copied on either side; each (batch, head) `p` is a strided matrix, which BLAS
// reads through its leading dimension.
struct Layout {
  size_t batch, heads, length, head_dim;

  // from the packed input [batch, length, 3 · heads · head_dim]
  static Layout of(const mx::array& qkv, size_t heads) {
    return {static_cast<size_t>(qkv.shape(0)), heads, static_cast<size_t>(qkv.shape(1)),
            static_cast<size_t>(qkv.shape(2)) / (3 * heads)};
  }
  size_t bh() const {
    return batch * heads;
  }
  size_t ld_in() const {
    return 3 * heads * head_dim;
  }
  size_t ld_out() const {
    return heads * head_dim;
  }
  // offsets of `p`'s first row in the packed input (q, k, v) and in the output
  size_t q(size_t p) const {
    return (p / heads) * length * ld_in() + (p % heads) * head_dim;
  }
  size_t k(size_t p) const {
    return q(p) + heads * head_dim;
  }
  size_t v(size_t p) const {
    return q(p) + 2 * heads * head_dim;
  }
  size_t out(size_t p) const {
    return (p / heads) * length * ld_out() + (p % heads) * head_dim;
  }
};

// Exact blockwise attention with an online softmax, one (batch, head) after another, with
// base-2 scores `scale · q kᵀ`: each block pair's scores stay in a [block, block] buffer in
// cache, and the two products are BLAS calls. Also writes each row's base-2 log-sum-exp `lse`
// [batch · heads, length], from which the backward pass recomputes the probabilities.
void fused_attention(const float* qkv, float* out, float* lse, const Layout& layout, size_t block, float scale) {
  auto gemm = sgemm();
  std::vector<float> scores(block * block);
  std::vector<float> m(block);
  std::vector<float> l(block);
  const size_t head_dim = layout.head_dim;
  const int hd = static_cast<int>(head_dim);
  const int ld_in = static_cast<int>(layout.ld_in());
  const size_t ld_out = layout.ld_out();
  for (size_t p = 0; p < layout.bh(); p++) {
    const float* qp = qkv + layout.q(p);
    const float* kp = qkv + layout.k(p);
    const float* vp = qkv + layout.v(p);
    float* op = out + layout.out(p);
    for (size_t qs = 0; qs < layout.length; qs += block) {
      const size_t rows = std::min(block, layout.length - qs);
      float* acc = op + qs * ld_out;
      for (size_t r = 0; r < rows; r++) {
        std::fill(acc + r * ld_out, acc + r * ld_out + head_dim, 0.0f);
      }
      std::fill(m.begin(), m.end(), -1e30f);
      std::fill(l.begin(), l.end(), 0.0f);
      for (size_t ks = 0; ks < layout.length; ks += block) {
        const size_t cols = std::min(block, layout.length - ks);
        // scores = scale · q_block · k_blockᵀ
        gemm(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS, static_cast<int>(rows), static_cast<int>(cols), hd, scale,
             qp + qs * ld_in, ld_in, kp + ks * ld_in, ld_in, 0.0f, scores.data(), static_cast<int>(cols));
        online_softmax_fold(scores.data(), m.data(), l.data(), acc, ld_out, rows, cols, head_dim);
        // acc += weights · v_block
        gemm(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_NO_TRANS, static_cast<int>(rows), hd, static_cast<int>(cols), 1.0f,
             scores.data(), static_cast<int>(cols), vp + ks * ld_in, ld_in, 1.0f, acc, static_cast<int>(ld_out));
      }
      for (size_t r = 0; r < rows; r++) {
        const float denominator = std::max(l[r], 1.17549435e-38f);
        const float inv = 1.0f / denominator;
        for (size_t d = 0; d < head_dim; d++) {
          acc[r * ld_out + d] *= inv;
        }
        lse[p * layout.length + qs + r] = m[r] + std::log2(denominator);
      }
    }
  }
}

// p = 2^(s - lse[row]) in place: a block's softmax probabilities from the rows' base-2
// log-sum-exp; then, given dp = dO · v_blockᵀ in `dp`, ds = p · (dp - delta[row]) in place.
ENERGY_CLONES void probabilities_and_score_gradients(
    float* s,
    float* dp,
    const float* lse,
    const float* delta,
    size_t rows,
    size_t cols) {
  for (size_t r = 0; r < rows; r++) {
    float* sr = s + r * cols;
    float* dr = dp + r * cols;
    const float shift = lse[r];
    const float d = delta[r];
    for (size_t k = 0; k < cols; k++) {
      const float prob = exp2_poly(sr[k] - shift);
      sr[k] = prob;
      dr[k] = prob * (dr[k] - d);
    }
  }
}

// The gradients of fused_attention (FlashAttention-2's backward pass, on blocks): with
// delta = rowsum(dO ∘ O) and each block pair's probabilities recomputed from the saved
// log-sum-exp, dV += Pᵀ dO, dS = P ∘ (dO Vᵀ − delta), dQ += c · dS K, dK += c · dSᵀ Q, where
// c = scale · ln 2 turns base-2 scores back into the natural scale's 1/sqrt(head_dim). d_qkv
// has the packed input's layout. Blocks are visited in a fixed order: the sums are the same
// every run.
void fused_attention_vjp(
    const float* qkv,
    const float* out,
    const float* lse,
    const float* d_out,
    float* d_qkv,
    const Layout& layout,
    size_t block,
    float scale) {
  auto gemm = sgemm();
  std::vector<float> probs(block * block);
  std::vector<float> dp(block * block);
  std::vector<float> delta(block);
  const size_t head_dim = layout.head_dim;
  const int hd = static_cast<int>(head_dim);
  const int ld_in = static_cast<int>(layout.ld_in());
  const size_t ld_out = layout.ld_out();
  const int ldo = static_cast<int>(ld_out);
  const float c = scale * LN2;
  std::fill(d_qkv, d_qkv + layout.batch * layout.length * layout.ld_in(), 0.0f);
  for (size_t p = 0; p < layout.bh(); p++) {
    for (size_t qs = 0; qs < layout.length; qs += block) {
      const size_t rows = std::min(block, layout.length - qs);
      const int m = static_cast<int>(rows);
      const float* qb = qkv + layout.q(p) + qs * ld_in;
      const float* dob = d_out + layout.out(p) + qs * ld_out;
      const float* ob = out + layout.out(p) + qs * ld_out;
      float* dqb = d_qkv + layout.q(p) + qs * ld_in;
      const float* lse_b = lse + p * layout.length + qs;
      for (size_t r = 0; r < rows; r++) {
        float sum = 0.0f;
        for (size_t d = 0; d < head_dim; d++) {
          sum += dob[r * ld_out + d] * ob[r * ld_out + d];
        }
        delta[r] = sum;
      }
      for (size_t ks = 0; ks < layout.length; ks += block) {
        const size_t cols = std::min(block, layout.length - ks);
        const int n = static_cast<int>(cols);
        const float* kb = qkv + layout.k(p) + ks * ld_in;
        const float* vb = qkv + layout.v(p) + ks * ld_in;
        // scores = scale · q_block · k_blockᵀ, dp = dO_block · v_blockᵀ
        gemm(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS, m, n, hd, scale, qb, ld_in, kb, ld_in, 0.0f, probs.data(), n);
        gemm(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS, m, n, hd, 1.0f, dob, ldo, vb, ld_in, 0.0f, dp.data(), n);
        probabilities_and_score_gradients(probs.data(), dp.data(), lse_b, delta.data(), rows, cols);
        // dV_block += Pᵀ dO_block
        gemm(CBLAS_ROW_MAJOR, CBLAS_TRANS, CBLAS_NO_TRANS, n, hd, m, 1.0f, probs.data(), n, dob, ldo, 1.0f,
             d_qkv + layout.v(p) + ks * ld_in, ld_in);
        // dQ_block += c · dS K_block
        gemm(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_NO_TRANS, m, hd, n, c, dp.data(), n, kb, ld_in, 1.0f, dqb, ld_in);
        // dK_block += c · dSᵀ Q_block
        gemm(CBLAS_ROW_MAJOR, CBLAS_TRANS, CBLAS_NO_TRANS, n, hd, m, c, dp.data(), n, qb, ld_in, 1.0f,
             d_qkv + layout.k(p) + ks * ld_in, ld_in);
      }
    }
  }
}

void check_f32(const mx::array& a, const char* what) {
  if (a.dtype() != mx::float32) {
    throw std::invalid_argument(std::string(what) + " must be float32");
  }
}

// The input as a row-major contiguous array on stream `s` (a view when it already is one).
mx::array row_major(const mx::array& a, mx::Stream s) {
  return mx::contiguous(a, false, s);
}

// Allocates `outputs` and hands `task` (a kernel over the arrays' raw pointers, made by
// `make_task` once the outputs have memory) to the stream's CPU encoder, which runs it on the
// stream's thread after the work already queued there, as MLX's own CPU kernels do.
template <typename MakeTask>
void dispatch(
    mx::Stream stream,
    const std::vector<mx::array>& inputs,
    std::vector<mx::array>& outputs,
    MakeTask make_task) {
  for (auto& out : outputs) {
    out.set_data(mx::allocator::malloc(out.nbytes()));
  }
  auto& encoder = mx::cpu::get_command_encoder(stream);
  for (const auto& in : inputs) {
    encoder.set_input_array(in);
  }
  for (auto& out : outputs) {
    encoder.set_output_array(out);
  }
  encoder.dispatch(make_task());
}

// The same for a primitive with one output.
template <typename MakeTask>
void dispatch(mx::Stream stream, const std::vector<mx::array>& inputs, mx::array& out, MakeTask make_task) {
  std::vector<mx::array> outputs{out};
  dispatch(stream, inputs, outputs, make_task);
}

// The stream the Rust caller builds on (mlx-rs's scoped stream or MLX's default), which must
// be a CPU stream.
mx::Stream cpu_stream(void* stream) {
  auto s = *static_cast<mx::Stream*>(stream);
  if (s.device.type != mx::Device::DeviceType::cpu) {
    throw std::invalid_argument("the kernels run on a CPU stream only");
  }
  return s;
}

class OnlineSoftmaxBlockVjp : public mx::UnaryPrimitive {
 public:
  explicit OnlineSoftmaxBlockVjp(mx::Stream stream) : mx::UnaryPrimitive(stream) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& weights = inputs[0];
    const auto& d_weights = inputs[1];
    const auto& d_sum = inputs[2];
    size_t cols = weights.shape().back();
    size_t rows = cols == 0 ? 0 : weights.size() / cols;
    dispatch(stream(), inputs, out, [&] {
      return [w = weights.data<float>(),
              dw = d_weights.data<float>(),
              ds = d_sum.data<float>(),
              o = out.data<float>(),
              rows,
              cols]() { online_softmax_rows_vjp(w, dw, ds, o, rows, cols); };
    });
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("energy's OnlineSoftmaxBlockVjp runs on the CPU only");
  }

  const char* name() const override {
    return "EnergyOnlineSoftmaxBlockVjp";
  }
};

class OnlineSoftmaxBlock : public mx::Primitive {
 public:
  explicit OnlineSoftmaxBlock(mx::Stream stream) : mx::Primitive(stream) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const auto& scores = inputs[0];
    const auto& max_old = inputs[1];
    size_t cols = scores.shape().back();
    size_t rows = cols == 0 ? 0 : scores.size() / cols;
    dispatch(stream(), inputs, outputs, [&] {
      return [s = scores.data<float>(),
              m_old = max_old.data<float>(),
              m_new = outputs[0].data<float>(),
              w = outputs[1].data<float>(),
              l = outputs[2].data<float>(),
              rows,
              cols]() { online_softmax_rows(s, m_old, m_new, w, l, rows, cols); };
    });
  }

  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error("energy's OnlineSoftmaxBlock runs on the CPU only");
  }

  std::vector<mx::array> vjp(
      const std::vector<mx::array>& primals,
      const std::vector<mx::array>& cotangents,
      const std::vector<int>& argnums,
      const std::vector<mx::array>& outputs) override {
    auto s = stream();
    std::vector<mx::array> grads;
    for (int arg : argnums) {
      if (arg == 0) {
        auto d_weights = row_major(cotangents[1], s);
        auto d_sum = row_major(cotangents[2], s);
        const auto& weights = outputs[1];
        grads.push_back(mx::array(
            weights.shape(),
            mx::float32,
            std::make_shared<OnlineSoftmaxBlockVjp>(s),
            {weights, d_weights, d_sum}));
      } else {
        // The running maximum only shifts the exponent; the output does not depend on it.
        grads.push_back(mx::zeros_like(primals[arg], s));
      }
    }
    return grads;
  }

  const char* name() const override {
    return "EnergyOnlineSoftmaxBlock";
  }
};

class GeluCpu : public mx::Primitive {
 public:
  GeluCpu(mx::Stream stream, bool with_slope) : mx::Primitive(stream), with_slope_(with_slope) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const auto& x = inputs[0];
    dispatch(stream(), inputs, outputs, [&] {
      return [x_ptr = x.data<float>(),
              y = outputs[0].data<float>(),
              slope = with_slope_ ? outputs[1].data<float>() : nullptr,
              n = x.size()]() { gelu_elements(x_ptr, y, slope, n); };
    });
  }

  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error("energy's GeluCpu runs on the CPU only");
  }

  std::vector<mx::array> vjp(
      const std::vector<mx::array>& primals,
      const std::vector<mx::array>& cotangents,
      const std::vector<int>& argnums,
      const std::vector<mx::array>& outputs) override {
    auto s = stream();
    mx::array slope = with_slope_
        ? outputs[1]
        : mx::array::make_arrays(
              {primals[0].shape(), primals[0].shape()},
              {mx::float32, mx::float32},
              std::make_shared<GeluCpu>(s, true),
              {primals[0]})[1];
    // The slope output itself is not differentiated (its cotangent, if any, is ignored).
    std::vector<mx::array> grads;
    for (size_t i = 0; i < argnums.size(); i++) {
      grads.push_back(mx::multiply(cotangents[0], slope, s));
    }
    return grads;
  }

  const char* name() const override {
    return "EnergyGeluCpu";
  }

 private:
  bool with_slope_;
};

class LayerNormCpuVjp : public mx::Primitive {
 public:
  LayerNormCpuVjp(mx::Stream stream, float eps) : mx::Primitive(stream), eps_(eps) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const auto& x = inputs[0];
    const auto& w = inputs[1];
    const auto& dy = inputs[2];
    size_t cols = x.shape().back();
    size_t rows = cols == 0 ? 0 : x.size() / cols;
    dispatch(stream(), inputs, outputs, [&] {
      return [x_ptr = x.data<float>(),
              w_ptr = w.data<float>(),
              dy_ptr = dy.data<float>(),
              dx = outputs[0].data<float>(),
              dw = outputs[1].data<float>(),
              db = outputs[2].data<float>(),
              eps = eps_,
              rows,
              cols]() {
      std::vector<float> scratch(3 * cols);
      layer_norm_rows_vjp(x_ptr, w_ptr, dy_ptr, dx, dw, db, scratch.data(), eps, rows, cols);
    };
    });
  }

  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error("energy's LayerNormCpuVjp runs on the CPU only");
  }

  const char* name() const override {
    return "EnergyLayerNormCpuVjp";
  }

 private:
  float eps_;
};

class LayerNormCpu : public mx::UnaryPrimitive {
 public:
  LayerNormCpu(mx::Stream stream, float eps) : mx::UnaryPrimitive(stream), eps_(eps) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& x = inputs[0];
    const auto& w = inputs[1];
    const auto& b = inputs[2];
    size_t cols = x.shape().back();
    size_t rows = cols == 0 ? 0 : x.size() / cols;
    dispatch(stream(), inputs, out, [&] {
      return [x_ptr = x.data<float>(),
              w_ptr = w.data<float>(),
              b_ptr = b.data<float>(),
              y = out.data<float>(),
              eps = eps_,
              rows,
              cols]() {
      std::vector<float> scratch(cols);
      layer_norm_rows(x_ptr, w_ptr, b_ptr, y, scratch.data(), eps, rows, cols);
    };
    });
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("energy's LayerNormCpu runs on the CPU only");
  }

  std::vector<mx::array> vjp(
      const std::vector<mx::array>& primals,
      const std::vector<mx::array>& cotangents,
      const std::vector<int>& argnums,
      const std::vector<mx::array>&) override {
    auto s = stream();
    const auto& x = primals[0];
    const auto& w = primals[1];
    auto grads = mx::array::make_arrays(
        {x.shape(), w.shape(), w.shape()},
        {mx::float32, mx::float32, mx::float32},
        std::make_shared<LayerNormCpuVjp>(s, eps_),
        {x, w, row_major(cotangents[0], s)});
    std::vector<mx::array> out;
    for (int arg : argnums) {
      out.push_back(grads[arg]);
    }
    return out;
  }

  const char* name() const override {
    return "EnergyLayerNormCpu";
  }

 private:
  float eps_;
};

// What the attention's two primitives share: their block size, score scale and head count, and
// the CPU.
class AttentionPrimitive : public mx::Primitive {
 public:
  AttentionPrimitive(mx::Stream stream, int block, float scale, int heads)
      : mx::Primitive(stream), block_(block), scale_(scale), heads_(heads) {}

  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error(std::string("energy's ") + name() + " runs on the CPU only");
  }

 protected:
  int block_;
  float scale_;
  int heads_;
};

// inputs: qkv, out, lse, d_out → d_qkv
class FusedAttentionVjp : public AttentionPrimitive {
 public:
  using AttentionPrimitive::AttentionPrimitive;

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    dispatch(stream(), inputs, outputs, [&] {
      return [qkv = inputs[0].data<float>(),
              out = inputs[1].data<float>(),
              lse = inputs[2].data<float>(),
              d_out = inputs[3].data<float>(),
              d_qkv = outputs[0].data<float>(),
              layout = Layout::of(inputs[0], heads_),
              block = static_cast<size_t>(block_),
              scale = scale_]() { fused_attention_vjp(qkv, out, lse, d_out, d_qkv, layout, block, scale); };
    });
  }

  const char* name() const override {
    return "EnergyFusedAttentionVjp";
  }
};

// input: qkv [batch, length, 3 · heads · head_dim]; outputs: the attention [batch, length,
// heads · head_dim] and the rows' base-2 log-sum-exp [batch · heads, length], which the
// backward pass recomputes the probabilities from.
class FusedAttention : public AttentionPrimitive {
 public:
  using AttentionPrimitive::AttentionPrimitive;

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    dispatch(stream(), inputs, outputs, [&] {
      return [qkv = inputs[0].data<float>(),
              out = outputs[0].data<float>(),
              lse = outputs[1].data<float>(),
              layout = Layout::of(inputs[0], heads_),
              block = static_cast<size_t>(block_),
              scale = scale_]() { fused_attention(qkv, out, lse, layout, block, scale); };
    });
  }

  std::vector<mx::array> vjp(
      const std::vector<mx::array>& primals,
      const std::vector<mx::array>& cotangents,
      const std::vector<int>&,
      const std::vector<mx::array>& outputs) override {
    auto s = stream();
    // The log-sum-exp output is internal: its cotangent (zeros) is ignored.
    return {mx::array(
        primals[0].shape(),
        mx::float32,
        std::make_shared<FusedAttentionVjp>(s, block_, scale_, heads_),
        {primals[0], outputs[0], outputs[1], row_major(cotangents[0], s)})};
  }

  const char* name() const override {
    return "EnergyFusedAttention";
  }
};

// Runs `build` (which builds a kernel's outputs): 0, or 1 with the message of the exception it
// threw in `error`, so that no C++ exception crosses into Rust.
template <typename Build>
int guarded(char* error, size_t error_len, Build build) {
  try {
    build();
    return 0;
  } catch (const std::exception& e) {
    if (error != nullptr && error_len > 0) {
      std::strncpy(error, e.what(), error_len - 1);
      error[error_len - 1] = '\0';
    }
    return 1;
  }
}

mx::array& as_array(void* ctx) {
  return *static_cast<mx::array*>(ctx);
}

}  // namespace

// The C interface Rust calls. Arrays are passed as mlx-c's handle payload (`mlx_array.ctx`, an
// `mlx::core::array*`); outputs are new arrays that the caller owns (mlx-c frees them with
// `delete`); `stream` is mlx-c's stream payload (`mlx_stream.ctx`, an `mlx::core::Stream*`).
// Returns 0, or 1 with a message in `error` (`guarded`).
extern "C" {

int energy_online_softmax_block(
    void* stream,
    void* scores,
    void* max_old,
    void** max_new,
    void** weights,
    void** weight_sum,
    char* error,
    size_t error_len) {
  return guarded(error, error_len, [&] {
    auto s = cpu_stream(stream);
    const auto& sc = as_array(scores);
    const auto& m = as_array(max_old);
    check_f32(sc, "the scores");
    check_f32(m, "the running maximum");
    if (sc.ndim() < 1 || m.ndim() != sc.ndim() || m.shape().back() != 1 ||
        !std::equal(m.shape().begin(), m.shape().end() - 1, sc.shape().begin())) {
      throw std::invalid_argument("the running maximum must have the scores' shape with a last axis of 1");
    }
    auto outputs = mx::array::make_arrays(
        {m.shape(), sc.shape(), m.shape()},
        {mx::float32, mx::float32, mx::float32},
        std::make_shared<OnlineSoftmaxBlock>(s),
        {row_major(sc, s), row_major(m, s)});
    *max_new = new mx::array(outputs[0]);
    *weights = new mx::array(outputs[1]);
    *weight_sum = new mx::array(outputs[2]);
  });
}

int energy_gelu(void* stream, void* x, int with_slope, void** y, void** slope, char* error, size_t error_len) {
  return guarded(error, error_len, [&] {
    auto s = cpu_stream(stream);
    const auto& input = as_array(x);
    check_f32(input, "the GELU's input");
    std::vector<mx::Shape> shapes{input.shape()};
    std::vector<mx::Dtype> dtypes{mx::float32};
    if (with_slope) {
      shapes.push_back(input.shape());
      dtypes.push_back(mx::float32);
    }
    auto outputs = mx::array::make_arrays(
        shapes, dtypes, std::make_shared<GeluCpu>(s, with_slope != 0), {row_major(input, s)});
    *y = new mx::array(outputs[0]);
    if (with_slope) {
      *slope = new mx::array(outputs[1]);
    }
  });
}

int energy_layer_norm(
    void* stream,
    void* x,
    void* weight,
    void* bias,
    float eps,
    void** y,
    char* error,
    size_t error_len) {
  return guarded(error, error_len, [&] {
    auto s = cpu_stream(stream);
    const auto& input = as_array(x);
    const auto& w = as_array(weight);
    const auto& b = as_array(bias);
    check_f32(input, "the layer norm's input");
    check_f32(w, "the layer norm's weight");
    check_f32(b, "the layer norm's bias");
    if (input.ndim() < 1 || w.ndim() != 1 || b.ndim() != 1 || w.shape(0) != input.shape(-1) ||
        b.shape(0) != input.shape(-1)) {
      throw std::invalid_argument("the layer norm's weight and bias must be vectors of the input's last axis");
    }
    *y = new mx::array(
        input.shape(),
        mx::float32,
        std::make_shared<LayerNormCpu>(s, eps),
        {row_major(input, s), row_major(w, s), row_major(b, s)});
  });
}

int energy_fused_attention(
    void* stream,
    void* qkv,
    int heads,
    int block,
    float scale,
    void** out,
    char* error,
    size_t error_len) {
  return guarded(error, error_len, [&] {
    auto s = cpu_stream(stream);
    const auto& packed = as_array(qkv);
    check_f32(packed, "the packed query, key and value");
    if (packed.ndim() != 3 || heads < 1 || packed.shape(2) % (3 * heads) != 0) {
      throw std::invalid_argument("the packed query, key and value must be [batch, length, 3 · heads · head_dim]");
    }
    if (block < 1) {
      throw std::invalid_argument("the attention block must be at least 1");
    }
    sgemm();
    const int batch = packed.shape(0);
    const int length = packed.shape(1);
    const int width = packed.shape(2) / 3;
    auto outputs = mx::array::make_arrays(
        {mx::Shape{batch, length, width}, mx::Shape{batch * heads, length}},
        {mx::float32, mx::float32},
        std::make_shared<FusedAttention>(s, block, scale, heads),
        {row_major(packed, s)});
    *out = new mx::array(outputs[0]);
  });
}
}
