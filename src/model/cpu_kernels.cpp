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

ENERGY_CLONES void online_softmax_rows(
    const float* scores,
    const float* max_old,
    float* max_new,
    float* weights,
    float* weight_sum,
    size_t rows,
    size_t cols) {
  for (size_t r = 0; r < rows; r++) {
    const float* s = scores + r * cols;
    float* w = weights + r * cols;
    float lanes[LANES];
    for (int l = 0; l < LANES; l++) {
      lanes[l] = max_old[r];
    }
    size_t j = 0;
    for (; j + LANES <= cols; j += LANES) {
      for (int l = 0; l < LANES; l++) {
        lanes[l] = s[j + l] > lanes[l] ? s[j + l] : lanes[l];
      }
    }
    float m = max_old[r];
    for (int l = 0; l < LANES; l++) {
      m = lanes[l] > m ? lanes[l] : m;
    }
    for (; j < cols; j++) {
      m = s[j] > m ? s[j] : m;
    }
    max_new[r] = m;
    for (size_t k = 0; k < cols; k++) {
      w[k] = exp2_poly(s[k] - m);
    }
    weight_sum[r] = lane_sum(w, cols);
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

void check_f32(const mx::array& a, const char* what) {
  if (a.dtype() != mx::float32) {
    throw std::invalid_argument(std::string(what) + " must be float32");
  }
}

// The input as a row-major contiguous array on stream `s` (a view when it already is one).
mx::array row_major(const mx::array& a, mx::Stream s) {
  return mx::contiguous(a, false, s);
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
    out.set_data(mx::allocator::malloc(out.nbytes()));
    size_t cols = weights.shape().back();
    size_t rows = cols == 0 ? 0 : weights.size() / cols;
    auto& encoder = mx::cpu::get_command_encoder(stream());
    encoder.set_input_array(weights);
    encoder.set_input_array(d_weights);
    encoder.set_input_array(d_sum);
    encoder.set_output_array(out);
    encoder.dispatch([w = weights.data<float>(),
                      dw = d_weights.data<float>(),
                      ds = d_sum.data<float>(),
                      o = out.data<float>(),
                      rows,
                      cols]() { online_softmax_rows_vjp(w, dw, ds, o, rows, cols); });
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
    for (auto& out : outputs) {
      out.set_data(mx::allocator::malloc(out.nbytes()));
    }
    size_t cols = scores.shape().back();
    size_t rows = cols == 0 ? 0 : scores.size() / cols;
    auto& encoder = mx::cpu::get_command_encoder(stream());
    encoder.set_input_array(scores);
    encoder.set_input_array(max_old);
    for (auto& out : outputs) {
      encoder.set_output_array(out);
    }
    encoder.dispatch([s = scores.data<float>(),
                      m_old = max_old.data<float>(),
                      m_new = outputs[0].data<float>(),
                      w = outputs[1].data<float>(),
                      l = outputs[2].data<float>(),
                      rows,
                      cols]() { online_softmax_rows(s, m_old, m_new, w, l, rows, cols); });
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
    for (auto& out : outputs) {
      out.set_data(mx::allocator::malloc(out.nbytes()));
    }
    auto& encoder = mx::cpu::get_command_encoder(stream());
    encoder.set_input_array(x);
    for (auto& out : outputs) {
      encoder.set_output_array(out);
    }
    encoder.dispatch([x_ptr = x.data<float>(),
                      y = outputs[0].data<float>(),
                      slope = with_slope_ ? outputs[1].data<float>() : nullptr,
                      n = x.size()]() { gelu_elements(x_ptr, y, slope, n); });
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
    for (auto& out : outputs) {
      out.set_data(mx::allocator::malloc(out.nbytes()));
    }
    size_t cols = x.shape().back();
    size_t rows = cols == 0 ? 0 : x.size() / cols;
    auto& encoder = mx::cpu::get_command_encoder(stream());
    encoder.set_input_array(x);
    encoder.set_input_array(w);
    encoder.set_input_array(dy);
    for (auto& out : outputs) {
      encoder.set_output_array(out);
    }
    encoder.dispatch([x_ptr = x.data<float>(),
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
    out.set_data(mx::allocator::malloc(out.nbytes()));
    size_t cols = x.shape().back();
    size_t rows = cols == 0 ? 0 : x.size() / cols;
    auto& encoder = mx::cpu::get_command_encoder(stream());
    encoder.set_input_array(x);
    encoder.set_input_array(w);
    encoder.set_input_array(b);
    encoder.set_output_array(out);
    encoder.dispatch([x_ptr = x.data<float>(),
                      w_ptr = w.data<float>(),
                      b_ptr = b.data<float>(),
                      y = out.data<float>(),
                      eps = eps_,
                      rows,
                      cols]() {
      std::vector<float> scratch(cols);
      layer_norm_rows(x_ptr, w_ptr, b_ptr, y, scratch.data(), eps, rows, cols);
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

void write_error(const std::exception& e, char* error, size_t error_len) {
  if (error != nullptr && error_len > 0) {
    std::strncpy(error, e.what(), error_len - 1);
    error[error_len - 1] = '\0';
  }
}

mx::array& as_array(void* ctx) {
  return *static_cast<mx::array*>(ctx);
}

}  // namespace

// The C interface Rust calls. Arrays are passed as mlx-c's handle payload (`mlx_array.ctx`, an
// `mlx::core::array*`); outputs are new arrays that the caller owns (mlx-c frees them with
// `delete`); `stream` is mlx-c's stream payload (`mlx_stream.ctx`, an `mlx::core::Stream*`).
// Returns 0, or 1 with a message in `error`.
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
  try {
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
    return 0;
  } catch (const std::exception& e) {
    write_error(e, error, error_len);
    return 1;
  }
}

int energy_gelu(void* stream, void* x, int with_slope, void** y, void** slope, char* error, size_t error_len) {
  try {
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
    return 0;
  } catch (const std::exception& e) {
    write_error(e, error, error_len);
    return 1;
  }
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
  try {
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
    return 0;
  } catch (const std::exception& e) {
    write_error(e, error, error_len);
    return 1;
  }
}
}
