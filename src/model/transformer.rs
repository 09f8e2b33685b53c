//! The Ring Attention forecaster: a pre-norm Transformer encoder over `positions` hourly steps
//! (the context followed by the horizon) whose attention is [`ring_attention`], and a quantile
//! head on the last `horizon` positions.
//!
//! The horizon positions carry the known-future features (calendar, weather forecasts, …) and
//! an `observed = 0` indicator in place of the target, so attention is non-causal over all
//! positions: every horizon step can read the whole context and the other horizon steps.
//!
//! The head predicts quantiles that are monotone by construction (see [`QuantileHead`]), so
//! the p10/p50/p90 forecasts never cross.
use crate::config::ModelConfig;
use crate::model::attention::ring_attention;
use crate::model::distributed::attention_across_ranks;
use mlx_rs::builder::Builder;
use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::{Module, ModuleParamMut, ModuleParamRef, ModuleParameters, Param, Parameter};
use mlx_rs::nn::{self, LayerNorm, LayerNormBuilder, Linear};
use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::{Array, ops, random};
use serde::{Deserialize, Serialize};
use std::rc::Rc;

/// The quantiles forecast when nothing else is asked for.
pub const DEFAULT_QUANTILES: [f32; 3] = [0.1, 0.5, 0.9];
/// Largest power of two [`Activation::QuickGelu`] takes (2^64 is finite in f32, and its
/// sigmoid already 5e-20).
const QUICK_GELU_MAX_EXPONENT: f32 = 64.0;
/// Standard deviation of the positional embedding's initial values.
const POSITION_INIT_STD: f32 = 0.02;

/// The MLP's activation.
///
/// `gelu` (exact, with `erf`) is the default. On the CPU build of MLX `erf` and `exp` are scalar,
/// so MLX's own GELU took about a quarter of a training step's time there; on the CPU the
/// forecaster computes it as [`gelu_cpu`] instead (the same function to float precision, 26 %
/// more training sequences/s), and on a GPU with MLX's. `relu` and `quick-gelu` are faster
/// still but forecast worse on the fixed synthetic windows (README, "Model throughput"), so
/// they are there to choose, not the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    Relu,
    #[default]
    Gelu,
    /// `x · sigmoid(1.702 x)`, GELU's sigmoid approximation, with the sigmoid's exponential
    /// taken as `2^y` (about a quarter of `erf`'s cost here).
    QuickGelu,
}

impl Activation {
    /// What a saved `config.json` without the field means: the GELU of earlier models (named, so
    /// that a later change of the default does not change what old models load as).
    fn saved_before_the_choice() -> Self {
        Self::Gelu
    }

    fn apply(self, x: Array, pass: Pass) -> Result<Array, Exception> {
        match self {
            Self::Relu => nn::relu(x),
            Self::Gelu if crate::model::cpu_kernels::available() && x.dtype() == mlx_rs::Dtype::Float32 => {
                Ok(crate::model::cpu_kernels::gelu(&x, pass == Pass::Training)?.0)
            }
            Self::Gelu if crate::model::streams::on_cpu() => gelu_cpu(&x, pass),
            Self::Gelu => nn::gelu(x),
            Self::QuickGelu => {
                // sigmoid(1.702 x) = 1 / (1 + 2^(-1.702 log2(e) x)); the power is capped so that
                // neither it nor its gradient overflows for very negative x.
                let exponent = x.multiply(Array::from_f32(-1.702 * std::f32::consts::LOG2_E))?;
                let capped = ops::minimum(&exponent, Array::from_f32(QUICK_GELU_MAX_EXPONENT))?;
                let denominator = ops::power(Array::from_f32(2.0), &capped)?.add(Array::from_f32(1.0))?;
                x.divide(&denominator)
            }
        }
    }
}

/// What a forward pass is for: a training step, whose gradients are taken, or a forecast or a
/// loss without them. Both give the same values; a training pass builds what the backward
/// pass needs more cheaply ([`gelu_cpu`]), an inference pass skips it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Training,
    Inference,
}

/// `P` of the erf approximation in [`gelu_cpu`] (Abramowitz & Stegun 7.1.26).
const ERF_P: f32 = 0.327_591_1;
/// Its coefficients `a1 … a5`.
const ERF_A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152, 1.061_405_4];

/// The exact GELU, `x · Φ(x)`, for the CPU build of MLX, whose own (`nn::gelu`) costs about a
/// quarter of a training step there: its `erf` calls MLX's scalar `exp` (seven out-of-line
/// `fmaf` calls an element), and the backward pass calls it again for `erf`'s derivative.
///
/// - `Φ(x) = ½·(1 + erf(x/√2))` with the same approximation of `erf` MLX's CPU kernel uses
///   (Abramowitz & Stegun 7.1.26, error under 1.5·10⁻⁷): `1 − erf(z) ≈ q = t·P(t)·e^(−z²)`,
///   `t = 1/(1 + p·z)` for `z = |x|/√2`, so that `Φ(x) = 1 − q/2` for `x > 0` and `q/2` else
///   (in the left tail, where `1 + erf` cancels to 0 in f32, this stays within half a percent);
/// - `e^(−x²/2)` is `2^(−x²·log₂e/2)` (glibc's `powf`, under half of MLX's `exp` here), and it
///   is also the normal density's shape, so the derivative `Φ(x) + x·φ(x)` costs three more
///   elementwise operations;
/// - in a [`Pass::Training`], the derivative is given to autodiff directly: the output is
///   `sg(y) + (x − sg(x))·sg(y′)` with `sg` MLX's `stop_gradient`, whose value is `y` and whose
///   gradient is `y′`, so the backward pass is one multiplication instead of the chain rule
///   through the approximation (a [`Pass::Inference`] leaves the derivative out; autodiff
///   through it still gives the approximation's own, slower to run).
fn gelu_cpu(x: &Array, pass: Pass) -> Result<Array, Exception> {
    let one = || Array::from_f32(1.0);
    let z = x.abs()?.multiply(Array::from_f32(std::f32::consts::FRAC_1_SQRT_2))?;
    let t = one().divide(&z.multiply(Array::from_f32(ERF_P))?.add(one())?)?;
    let mut poly = t.multiply(Array::from_f32(ERF_A[4]))?;
    for a in ERF_A[..4].iter().rev() {
        poly = poly.add(Array::from_f32(*a))?.multiply(&t)?;
    }
    let exponent = x.square()?.multiply(Array::from_f32(-0.5 * std::f32::consts::LOG2_E))?;
    let gaussian = ops::power(Array::from_f32(2.0), &exponent)?;
    let tail = poly.multiply(&gaussian)?.multiply(Array::from_f32(0.5))?;
    let cdf = ops::select(&x.gt(Array::from_f32(0.0))?, &one().subtract(&tail)?, &tail)?;
    let value = x.multiply(&cdf)?;
    if pass == Pass::Inference {
        return Ok(value);
    }
    // Φ(x) + x·φ(x), φ(x) = e^(−x²/2)/√(2π)
    let inv_sqrt_tau = 1.0 / std::f32::consts::TAU.sqrt();
    let slope = cdf.add(x.multiply(&gaussian)?.multiply(Array::from_f32(inv_sqrt_tau))?)?;
    let zero_with_gradient = x.subtract(mlx_rs::stop_gradient(x)?)?;
    mlx_rs::stop_gradient(&value)?.add(zero_with_gradient.multiply(mlx_rs::stop_gradient(&slope)?)?)
}

/// Shape and attention settings of a [`Forecaster`]; saved as `config.json` beside the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecasterConfig {
    /// Features per position (the target column, its `observed` indicator, calendar, …).
    pub n_features: usize,
    /// Positions per window: the context followed by the horizon.
    pub positions: usize,
    /// The last `horizon` positions are forecast.
    pub horizon: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_layers: usize,
    /// Width of the MLP hidden layer, as a multiple of `d_model`.
    pub mlp_ratio: usize,
    /// Rows per attention block (query and key/value) inside each ring shard.
    pub block_size: usize,
    /// Ring Attention shards; 1 is plain blockwise attention. The output does not depend on it.
    pub ring_shards: usize,
    /// Strictly increasing, each in (0, 1).
    pub quantiles: Vec<f32>,
    /// The MLP's activation (GELU where a saved config predates the field).
    #[serde(default = "Activation::saved_before_the_choice")]
    pub activation: Activation,
    /// Networks trained side by side from their own initial weights, whose mean forecast is
    /// the forecast (1 where a saved config predates the field).
    #[serde(default = "one_member")]
    pub members: usize,
}

fn one_member() -> usize {
    1
}

impl ForecasterConfig {
    /// The forecaster for `model` (positions = context + horizon) over `n_features` features,
    /// with an MLP ratio of 4, one ring shard and the [`DEFAULT_QUANTILES`].
    pub fn from_model_config(model: &ModelConfig, n_features: usize) -> Self {
        Self {
            n_features,
            positions: model.context + model.horizon,
            horizon: model.horizon,
            d_model: model.d_model,
            n_heads: model.n_heads,
            n_layers: model.n_layers,
            mlp_ratio: 4,
            block_size: model.block_size,
            ring_shards: 1,
            quantiles: DEFAULT_QUANTILES.to_vec(),
            activation: model.activation,
            members: model.members,
        }
    }

    /// Every size positive and within `i32`, `d_model` divisible by `n_heads`, `horizon <=
    /// positions`, quantiles strictly increasing in (0, 1).
    pub fn validate(&self) -> Result<(), Exception> {
        let sizes = [
            ("n_features", self.n_features),
            ("positions", self.positions),
            ("horizon", self.horizon),
            ("d_model", self.d_model),
            ("n_heads", self.n_heads),
            ("n_layers", self.n_layers),
            ("mlp_ratio", self.mlp_ratio),
            ("block_size", self.block_size),
            ("ring_shards", self.ring_shards),
            ("members", self.members),
        ];
        for (name, value) in sizes {
            if value == 0 || i32::try_from(value).is_err() {
                return Err(invalid(format!("{name} must be between 1 and i32::MAX, got {value}")));
            }
        }
        let widest = self.d_model.saturating_mul(self.mlp_ratio.max(3));
        if i32::try_from(widest).is_err() {
            return Err(invalid(format!("d_model × max(mlp_ratio, 3) = {widest} does not fit in i32")));
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(invalid(format!("d_model ({}) must be divisible by n_heads ({})", self.d_model, self.n_heads)));
        }
        if self.horizon > self.positions {
            return Err(invalid(format!("horizon ({}) exceeds positions ({})", self.horizon, self.positions)));
        }
        let in_range = self.quantiles.iter().all(|q| *q > 0.0 && *q < 1.0);
        let increasing = self.quantiles.windows(2).all(|pair| pair[0] < pair[1]);
        if self.quantiles.is_empty() || !in_range || !increasing {
            return Err(invalid(format!(
                "quantiles must be non-empty, strictly increasing and in (0, 1), got {:?}",
                self.quantiles
            )));
        }
        Ok(())
    }

    pub fn n_quantiles(&self) -> usize {
        self.quantiles.len()
    }
}

fn invalid(message: String) -> Exception {
    Exception::custom(format!("invalid forecaster config: {message}"))
}

/// `value` as an `i32` dimension (checked by [`ForecasterConfig::validate`]).
fn dim(value: usize) -> Result<i32, Exception> {
    i32::try_from(value).map_err(|_| invalid(format!("{value} does not fit in i32")))
}

/// Multi-head self-attention computed with [`ring_attention`]: non-causal in the
/// [`Forecaster`]; causal blocks exist for the causality tests.
#[derive(Debug, ModuleParameters)]
pub struct SelfAttention {
    /// d_model → 3·d_model: queries, keys and values of every head.
    #[param]
    qkv: Linear,
    /// d_model → d_model.
    #[param]
    output: Linear,
    n_heads: i32,
    block_size: i32,
    ring_shards: usize,
    /// Position i attends to positions ≤ i only.
    causal: bool,
}

impl SelfAttention {
    fn new(config: &ForecasterConfig, causal: bool) -> Result<Self, Exception> {
        let d_model = dim(config.d_model)?;
        Ok(Self {
            qkv: Linear::new(d_model, 3 * d_model)?,
            output: Linear::new(d_model, d_model)?,
            n_heads: dim(config.n_heads)?,
            block_size: dim(config.block_size)?,
            ring_shards: config.ring_shards,
            causal,
        })
    }
}

impl Module<&Array> for SelfAttention {
    type Error = Exception;
    type Output = Array;

    /// # Shapes
    /// `x`: [batch, positions, d_model] → [batch, positions, d_model]
    fn forward(&mut self, x: &Array) -> Result<Array, Exception> {
        self.attend(x, Attention::Local)
    }

    fn training_mode(&mut self, _: bool) {}
}

/// Where a layer's attention runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attention {
    /// Over the positions given, in this process ([`ring_attention`]).
    Local,
    /// The positions given are this rank's shard of the sequence; keys and values of the
    /// others come around the active ring ([`attention_across_ranks`]).
    AcrossRanks,
}

impl SelfAttention {
    /// # Shapes
    /// `x`: [batch, positions, d_model] → [batch, positions, d_model]
    /// Over the positions given, on the CPU, the blockwise attention runs as one fused
    /// primitive with its own backward pass ([`crate::model::cpu_kernels::fused_attention`]:
    /// the same exact online softmax as [`ring_attention`] with one shard); causal blocks,
    /// several shards and other devices build [`ring_attention`]'s graph of MLX operations.
    fn attend(&mut self, x: &Array, attention: Attention) -> Result<Array, Exception> {
        let (batch, positions, d_model) = match *x.shape() {
            [batch, positions, d_model] => (batch, positions, d_model),
            ref shape => {
                return Err(Exception::custom(format!("attention needs [batch, positions, d_model], got {shape:?}")));
            }
        };
        let head_dim = d_model / self.n_heads;
        let qkv = self.qkv.forward(x)?;
        if attention == Attention::Local
            && !self.causal
            && self.ring_shards <= 1
            && crate::model::cpu_kernels::available()
            && qkv.dtype() == mlx_rs::Dtype::Float32
        {
            // The fused kernel reads the heads out of the projection and writes them side by
            // side: no transpose is copied on either side.
            let scale = crate::model::attention::LOG2_E / (head_dim as f32).sqrt();
            let attended = crate::model::cpu_kernels::fused_attention(&qkv, self.n_heads, self.block_size, scale)?;
            return self.output.forward(&attended);
        }
        // [batch, positions, 3·d_model] → 3 × [batch, heads, positions, head_dim], laid out
        // row-major by one copy: MLX's CPU matmul copies any operand whose rows are not
        // contiguous, and strided views of the heads were copied again for every block pair.
        // Split, not an integer index: mlx-rs indexes with an integer through `take` (a gather,
        // and a scatter in the backward pass).
        let qkv = qkv
            .reshape(&[batch, positions, 3, self.n_heads, head_dim])?
            .transpose_axes(&[2, 0, 3, 1, 4])?
            .contiguous()?;
        let parts = qkv.split_equal(3, 0)?;
        let heads = |part: &Array| part.squeeze_axes(&[0]);
        let [query, key, value] = [heads(&parts[0])?, heads(&parts[1])?, heads(&parts[2])?];
        let attended = match attention {
            Attention::Local => ring_attention(&query, &key, &value, self.ring_shards, self.block_size, self.causal)?,
            Attention::AcrossRanks if self.causal => {
                return Err(Exception::custom("the forecaster's attention across ranks is not causal"));
            }
            Attention::AcrossRanks => attention_across_ranks(&query, &key, &value)?,
        };
        let merged = attended.swap_axes(1, 2)?.reshape(&[batch, positions, d_model])?;
        self.output.forward(&merged)
    }
}

/// Pre-norm encoder block: `x + attention(norm(x))`, then `x + mlp(norm(x))` with the config's
/// [`Activation`].
#[derive(Debug, ModuleParameters)]
pub struct EncoderBlock {
    #[param]
    attention_norm: LayerNorm,
    #[param]
    attention: SelfAttention,
    #[param]
    mlp_norm: LayerNorm,
    #[param]
    mlp_in: Linear,
    #[param]
    mlp_out: Linear,
    activation: Activation,
}

impl EncoderBlock {
    /// A block whose attention is causal or not (the [`Forecaster`]'s is not).
    fn new(config: &ForecasterConfig, causal: bool) -> Result<Self, Exception> {
        let d_model = dim(config.d_model)?;
        let hidden = dim(config.d_model * config.mlp_ratio)?;
        Ok(Self {
            attention_norm: layer_norm(d_model)?,
            attention: SelfAttention::new(config, causal)?,
            mlp_norm: layer_norm(d_model)?,
            mlp_in: Linear::new(d_model, hidden)?,
            mlp_out: Linear::new(hidden, d_model)?,
            activation: config.activation,
        })
    }
}

impl Module<&Array> for EncoderBlock {
    type Error = Exception;
    type Output = Array;

    /// # Shapes
    /// `x`: [batch, positions, d_model] → [batch, positions, d_model]
    fn forward(&mut self, x: &Array) -> Result<Array, Exception> {
        self.apply(x, Attention::Local, Pass::Inference)
    }

    fn training_mode(&mut self, _: bool) {}
}

impl EncoderBlock {
    fn apply(&mut self, x: &Array, attention: Attention, pass: Pass) -> Result<Array, Exception> {
        let attended = self.attention.attend(&normalize(&mut self.attention_norm, x)?, attention)?;
        let x = x.add(&attended)?;
        let hidden = self.activation.apply(self.mlp_in.forward(&normalize(&mut self.mlp_norm, &x)?)?, pass)?;
        x.add(self.mlp_out.forward(&hidden)?)
    }
}

/// `norm(x)`: on the CPU the fused [`crate::model::cpu_kernels::layer_norm`] (MLX's CPU build
/// runs a layer norm as about ten operations, forward and backward), else MLX's.
fn normalize(norm: &mut LayerNorm, x: &Array) -> Result<Array, Exception> {
    use crate::model::cpu_kernels;
    match (norm.weight.value.as_ref(), norm.bias.value.as_ref()) {
        (Some(weight), Some(bias)) if cpu_kernels::available() && x.dtype() == mlx_rs::Dtype::Float32 => {
            cpu_kernels::layer_norm(x, weight, bias, norm.eps)
        }
        _ => norm.forward(x),
    }
}

fn layer_norm(d_model: i32) -> Result<LayerNorm, Exception> {
    LayerNormBuilder::new(d_model).build()
}

/// Quantiles that never cross. A linear layer gives one raw value per quantile; the one
/// closest to 0.5 (the anchor, index `m`) is used as is, and the others are placed at
/// softplus-positive distances from it:
/// `q[i] = q[m] + Σ_{j=m+1..=i} softplus(raw[j])` above and
/// `q[i] = q[m] - Σ_{j=i..m-1} softplus(raw[j])` below, so `q[0] <= … <= q[n-1]` always.
#[derive(Debug, ModuleParameters)]
pub struct QuantileHead {
    /// d_model → n_quantiles.
    #[param]
    linear: Linear,
    anchor: i32,
    n_quantiles: i32,
}

impl QuantileHead {
    fn new(config: &ForecasterConfig) -> Result<Self, Exception> {
        let anchor = config
            .quantiles
            .iter()
            .enumerate()
            .min_by(|(_, a), (_, b)| (*a - 0.5).abs().total_cmp(&(*b - 0.5).abs()))
            .map_or(0, |(index, _)| index);
        Ok(Self {
            linear: Linear::new(dim(config.d_model)?, dim(config.n_quantiles())?)?,
            anchor: dim(anchor)?,
            n_quantiles: dim(config.n_quantiles())?,
        })
    }
}

impl Module<&Array> for QuantileHead {
    type Error = Exception;
    type Output = Array;

    /// # Shapes
    /// `x`: [batch, horizon, d_model] → [batch, horizon, n_quantiles] (non-decreasing along the
    /// last axis)
    fn forward(&mut self, x: &Array) -> Result<Array, Exception> {
        let raw = self.linear.forward(x)?;
        let (anchor, count) = (self.anchor, self.n_quantiles);
        let center = raw.try_index((.., .., anchor..anchor + 1))?;
        let mut parts = Vec::with_capacity(3);
        if anchor > 0 {
            let gaps = nn::softplus(raw.try_index((.., .., 0..anchor))?)?;
            parts.push(center.subtract(gaps.cumsum(-1, true, true)?)?);
        }
        parts.push(center.clone());
        if anchor + 1 < count {
            let gaps = nn::softplus(raw.try_index((.., .., anchor + 1..count))?)?;
            parts.push(center.add(gaps.cumsum(-1, false, true)?)?);
        }
        match parts.as_slice() {
            [single] => Ok(single.clone()),
            _ => ops::concatenate(&parts, -1),
        }
    }

    fn training_mode(&mut self, _: bool) {}
}

/// One network of the forecaster: input and positional embeddings, encoder blocks, final norm
/// and quantile head. A forecaster is one member, or an ensemble of several trained side by
/// side ([`ForecasterConfig::members`]).
#[derive(Debug, ModuleParameters)]
pub struct Member {
    /// Per-position input embedding, n_features → d_model.
    #[param]
    input: Linear,
    /// Learned positional embedding, [positions, d_model].
    #[param]
    position: Param<Array>,
    #[param]
    blocks: Vec<EncoderBlock>,
    #[param]
    final_norm: LayerNorm,
    #[param]
    head: QuantileHead,
}

impl Member {
    /// Draws from the thread's MLX random state, the positional embedding first.
    fn new(config: &ForecasterConfig) -> Result<Self, Exception> {
        let d_model = dim(config.d_model)?;
        let position = random::normal::<f32>(&[dim(config.positions)?, d_model], None, POSITION_INIT_STD, None)?;
        Ok(Self {
            input: Linear::new(dim(config.n_features)?, d_model)?,
            position: Param::new(position),
            blocks: (0..config.n_layers).map(|_| EncoderBlock::new(config, false)).collect::<Result<_, _>>()?,
            final_norm: layer_norm(d_model)?,
            head: QuantileHead::new(config)?,
        })
    }

    /// Positions `rows` of every window (all of them, or a rank's shard with attention across
    /// the ranks): the quantile forecasts of those of them from `horizon_start` on (`None`
    /// when there are none) and the final hidden state.
    ///
    /// # Shapes
    /// `inputs`: [batch, rows, n_features] → ([batch, horizon rows, n_quantiles], [batch, rows,
    /// d_model])
    fn run(
        &mut self,
        inputs: &Array,
        rows: (i32, i32),
        horizon_start: i32,
        attention: Attention,
        pass: Pass,
    ) -> Result<(Option<Array>, Array), Exception> {
        let (start, end) = rows;
        let embedded = self.input.forward(inputs)?;
        let mut hidden = if (start, end) == (0, self.position.shape()[0]) {
            embedded.add(&*self.position)?
        } else {
            embedded.add(self.position.try_index((start..end, ..))?)?
        };
        for block in &mut self.blocks {
            hidden = block.apply(&hidden, attention, pass)?;
        }
        let hidden = normalize(&mut self.final_norm, &hidden)?;
        let first = horizon_start.max(start);
        let forecasts =
            if first < end { Some(self.head.forward(&hidden.try_index((.., first - start.., ..))?)?) } else { None };
        Ok((forecasts, hidden))
    }
}

/// The encoder forecaster (see the module documentation): one [`Member`], or an ensemble whose
/// forecast is the mean of its members' quantiles (each member non-decreasing across the
/// quantiles, so their mean is too).
///
/// Its parameters are the first member's, at the top level (the keys of every checkpoint
/// since format 1), then `others.0.…`, `others.1.…` for the other members.
#[derive(Debug)]
pub struct Forecaster {
    first: Member,
    others: Vec<Member>,
    config: ForecasterConfig,
}

impl ModuleParameters for Forecaster {
    fn num_parameters(&self) -> usize {
        self.first.num_parameters() + self.others.iter().map(Member::num_parameters).sum::<usize>()
    }

    fn parameters(&self) -> ModuleParamRef<'_> {
        let mut parameters = self.first.parameters();
        if !self.others.is_empty() {
            parameters.insert(Rc::from(OTHERS), Parameter::as_nested_value(&self.others));
        }
        parameters
    }

    fn parameters_mut(&mut self) -> ModuleParamMut<'_> {
        let mut parameters = self.first.parameters_mut();
        if !self.others.is_empty() {
            parameters.insert(Rc::from(OTHERS), Parameter::as_nested_value_mut(&mut self.others));
        }
        parameters
    }

    fn trainable_parameters(&self) -> ModuleParamRef<'_> {
        let mut parameters = self.first.trainable_parameters();
        if let Some(others) = Parameter::as_trainable_nested_value(&self.others).filter(|_| !self.others.is_empty()) {
            parameters.insert(Rc::from(OTHERS), others);
        }
        parameters
    }

    fn freeze_parameters(&mut self, recursive: bool) {
        self.first.freeze_parameters(recursive);
        self.others.freeze(recursive);
    }

    fn unfreeze_parameters(&mut self, recursive: bool) {
        self.first.unfreeze_parameters(recursive);
        self.others.unfreeze(recursive);
    }

    fn all_frozen(&self) -> Option<bool> {
        let others = if self.others.is_empty() { None } else { self.others.is_frozen() };
        match (self.first.all_frozen(), others) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (first, _) => first,
        }
    }

    fn any_frozen(&self) -> Option<bool> {
        let others = if self.others.is_empty() { None } else { self.others.is_frozen() };
        match (self.first.any_frozen(), others) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (first, _) => first,
        }
    }
}

/// The parameter key of the members after the first.
const OTHERS: &str = "others";

impl Forecaster {
    /// A freshly initialised model, drawing from the thread's MLX random state (see
    /// [`Forecaster::with_seed`] for a reproducible one); the members one after the other.
    pub fn new(config: &ForecasterConfig) -> Result<Self, Exception> {
        config.validate()?;
        Ok(Self {
            first: Member::new(config)?,
            others: (1..config.members).map(|_| Member::new(config)).collect::<Result<_, _>>()?,
            config: config.clone(),
        })
    }

    /// Seed this thread's MLX random state with `seed`, then [`Forecaster::new`]: the same seed
    /// gives the same initial weights.
    pub fn with_seed(config: &ForecasterConfig, seed: u64) -> Result<Self, Exception> {
        random::seed(seed)?;
        Self::new(config)
    }

    pub fn config(&self) -> &ForecasterConfig {
        &self.config
    }

    fn members(&mut self) -> impl Iterator<Item = &mut Member> {
        std::iter::once(&mut self.first).chain(&mut self.others)
    }

    /// Each member's forecasts of the whole windows.
    ///
    /// # Shapes
    /// `inputs`: [batch, positions, n_features] → members × [batch, horizon, n_quantiles]
    fn member_forecasts(&mut self, inputs: &Array, pass: Pass) -> Result<Vec<Array>, Exception> {
        let shape = inputs.shape();
        let expected = [dim(self.config.positions)?, dim(self.config.n_features)?];
        if shape.len() != 3 || shape[1..] != expected {
            return Err(Exception::custom(format!(
                "forecaster needs inputs [batch, {}, {}], got {shape:?}",
                expected[0], expected[1]
            )));
        }
        let horizon_start = expected[0] - dim(self.config.horizon)?;
        self.members()
            .map(|member| {
                let (forecasts, _) = member.run(inputs, (0, expected[0]), horizon_start, Attention::Local, pass)?;
                forecasts.ok_or_else(|| Exception::custom("the forecaster has no horizon"))
            })
            .collect()
    }

    /// The training loss: each member's mean pinball loss against `targets`, averaged over the
    /// members (so each member learns on its own, as if trained alone; the forecast is their
    /// mean). For one member, `pinball_loss(forward(inputs))`.
    ///
    /// # Shapes
    /// `inputs`: [batch, positions, n_features], `targets`: [batch, horizon] → scalar
    pub fn training_loss(&mut self, inputs: &Array, targets: &Array, quantiles: &[f32]) -> Result<Array, Exception> {
        let forecasts = self.member_forecasts(inputs, Pass::Training)?;
        mean_member_loss(&forecasts, targets, quantiles)
    }

    /// One rank's part of the forward pass when the ranks split the sequence (sequence-parallel
    /// training): `inputs` are positions `rows` of every window, and each layer's attention
    /// runs across the ranks on the active ring ([`crate::model::distributed::ActiveRing`]),
    /// which every rank must call together. Everything else in the model works per position,
    /// so the rows of all ranks together give [`Module::forward`]'s result.
    ///
    /// Returns each member's quantile forecasts of the horizon positions among `rows` (none
    /// when the shard lies in the context) and the sum of the members' final hidden states,
    /// which a rank without a horizon position adds to its loss with weight zero so that its
    /// backward pass (a collective) still runs.
    ///
    /// # Shapes
    /// `inputs`: [batch, rows, n_features] → (members × [batch, horizon rows among `rows`,
    /// n_quantiles], scalar)
    pub fn forward_shard(&mut self, inputs: &Array, rows: (i32, i32)) -> Result<(Vec<Array>, Array), Exception> {
        let (start, end) = rows;
        let (positions, features) = (dim(self.config.positions)?, dim(self.config.n_features)?);
        let shape = inputs.shape();
        if !(0 <= start && start < end && end <= positions) || shape.len() != 3 || shape[1..] != [end - start, features]
        {
            return Err(Exception::custom(format!(
                "a shard of positions {start}..{end} of {positions} needs inputs [batch, {}, {features}], got {shape:?}",
                end - start
            )));
        }
        let horizon_start = positions - dim(self.config.horizon)?;
        let mut forecasts = Vec::new();
        let mut hidden_sum = Array::from_f32(0.0);
        for member in self.members() {
            let (member_forecasts, hidden) =
                member.run(inputs, rows, horizon_start, Attention::AcrossRanks, Pass::Training)?;
            forecasts.extend(member_forecasts);
            hidden_sum = hidden_sum.add(hidden.sum(None)?)?;
        }
        Ok((forecasts, hidden_sum))
    }
}

/// The mean over members of each member's [`pinball_loss`] (for one member, its loss).
pub fn mean_member_loss(forecasts: &[Array], targets: &Array, quantiles: &[f32]) -> Result<Array, Exception> {
    let mut total: Option<Array> = None;
    for forecast in forecasts {
        let loss = pinball_loss(forecast, targets, quantiles)?;
        total = Some(match total {
            Some(total) => total.add(&loss)?,
            None => loss,
        });
    }
    let total = total.ok_or_else(|| Exception::custom("an ensemble needs at least one member"))?;
    match forecasts.len() {
        1 => Ok(total),
        members => total.divide(Array::from_f32(members as f32)),
    }
}

impl Module<&Array> for Forecaster {
    type Error = Exception;
    type Output = Array;

    /// The members' mean forecast (the one member's, alone).
    ///
    /// # Shapes
    /// `inputs`: [batch, positions, n_features] f32 → [batch, horizon, n_quantiles] f32
    fn forward(&mut self, inputs: &Array) -> Result<Array, Exception> {
        let mut forecasts = self.member_forecasts(inputs, Pass::Inference)?.into_iter();
        let first = forecasts.next().ok_or_else(|| Exception::custom("an ensemble needs at least one member"))?;
        let members = 1 + forecasts.len();
        if members == 1 {
            return Ok(first);
        }
        forecasts.try_fold(first, |sum, forecast| sum.add(&forecast))?.divide(Array::from_f32(members as f32))
    }

    fn training_mode(&mut self, _: bool) {}
}

/// Pinball (quantile) loss averaged over batch, horizon and quantiles:
/// `mean(max(q·(y - ŷ_q), (q - 1)·(y - ŷ_q)))`.
///
/// # Shapes
/// `pred`: [batch, horizon, n_quantiles], `target`: [batch, horizon] → scalar
pub fn pinball_loss(pred: &Array, target: &Array, quantiles: &[f32]) -> Result<Array, Exception> {
    let (pred_shape, target_shape) = (pred.shape(), target.shape());
    let quantile_count = dim(quantiles.len())?;
    if pred_shape.len() != 3 || pred_shape[..2] != *target_shape || pred_shape[2] != quantile_count {
        return Err(Exception::custom(format!(
            "pinball loss needs pred [batch, horizon, {quantile_count}] and target [batch, horizon], got \
             {pred_shape:?} and {target_shape:?}"
        )));
    }
    let levels = Array::from_slice(quantiles, &[quantile_count]);
    let error = target.expand_dims(-1)?.subtract(pred)?;
    let under = error.multiply(&levels)?;
    let over = error.multiply(levels.subtract(Array::from_f32(1.0))?)?;
    ops::maximum(&under, &over)?.mean(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mlx_rs::module::ModuleParameters;
    use std::rc::Rc;

    pub(crate) fn tiny_config() -> ForecasterConfig {
        ForecasterConfig {
            n_features: 5,
            positions: 20,
            horizon: 6,
            d_model: 16,
            n_heads: 2,
            n_layers: 2,
            mlp_ratio: 2,
            block_size: 4,
            ring_shards: 1,
            quantiles: DEFAULT_QUANTILES.to_vec(),
            activation: Activation::Gelu,
            members: 1,
        }
    }

    fn max_abs_difference(a: &Array, b: &Array) -> f32 {
        assert_eq!(a.shape(), b.shape());
        a.subtract(b).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>()
    }

    fn copy_weights(from: &Forecaster, to: &mut Forecaster) {
        let weights: std::collections::HashMap<Rc<str>, Array> =
            from.parameters().flatten().into_iter().map(|(key, value)| (key, value.clone())).collect();
        mlx_rs::module::ModuleParameters::update_flattened(to, weights);
    }

    #[test]
    fn forward_shapes() -> Result<(), Exception> {
        let config = tiny_config();
        let mut model = Forecaster::with_seed(&config, 1)?;
        let inputs = random::normal::<f32>(&[3, 20, 5], None, None, None)?;
        let output = model.forward(&inputs)?;
        assert_eq!(output.shape(), &[3, 6, 3]);
        assert!(output.abs()?.max(None)?.item_exact::<f32>().is_finite());
        // Wrong positions or features are errors, not panics.
        assert!(model.forward(&random::normal::<f32>(&[3, 19, 5], None, None, None)?).is_err());
        assert!(model.forward(&random::normal::<f32>(&[3, 20, 4], None, None, None)?).is_err());
        // input 2 + position 1 + 2 blocks × (2 norms × 2 + qkv 2 + output 2 + mlp 4) + final norm 2 + head 2.
        assert_eq!(model.parameters().flatten().len(), 31);
        Ok(())
    }

    #[test]
    fn single_quantile_and_even_quantiles_work() -> Result<(), Exception> {
        for quantiles in [vec![0.5], vec![0.05, 0.25, 0.75, 0.95], vec![0.9, 0.95]] {
            let config = ForecasterConfig { quantiles: quantiles.clone(), ..tiny_config() };
            let mut model = Forecaster::with_seed(&config, 2)?;
            let output = model.forward(&random::normal::<f32>(&[2, 20, 5], None, None, None)?)?;
            assert_eq!(output.shape(), &[2, 6, quantiles.len() as i32]);
            let gaps = output.try_index((.., .., 1..))?.subtract(output.try_index((.., .., ..-1))?)?;
            if quantiles.len() > 1 {
                assert!(gaps.min(None)?.item_exact::<f32>() >= 0.0, "{quantiles:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn ring_shards_do_not_change_the_output() -> Result<(), Exception> {
        let config = tiny_config();
        let mut single = Forecaster::with_seed(&config, 3)?;
        let inputs = random::normal::<f32>(&[2, 20, 5], None, None, None)?;
        let expected = single.forward(&inputs)?;
        for shards in [2, 4] {
            let mut sharded = Forecaster::new(&ForecasterConfig { ring_shards: shards, ..config.clone() })?;
            // Different initial weights before the copy, so the comparison is not vacuous.
            assert!(max_abs_difference(&sharded.forward(&inputs)?, &expected) > 1e-3);
            copy_weights(&single, &mut sharded);
            let difference = max_abs_difference(&sharded.forward(&inputs)?, &expected);
            assert!(difference < 1e-5, "{shards} shards: {difference}");
        }
        Ok(())
    }

    /// Causality at the encoder-layer level. The [`Forecaster`] attends non-causally over
    /// context + horizon (the horizon positions read the whole context and each other, see the
    /// module documentation), so the property is checked on an [`EncoderBlock`] built with
    /// causal attention: a pre-norm block (layer norm, ring attention with `causal = true`,
    /// MLP) with 1, 2 and 4 ring shards, blocks of 4 rows, over 19 positions. Replacing the
    /// inputs after position t leaves the outputs at positions ≤ t bit-identical. The test can
    /// fail: the same block with the model's non-causal attention (the same weights) changes
    /// them.
    #[test]
    fn causal_encoder_block_ignores_later_positions() -> Result<(), Exception> {
        let config = ForecasterConfig { positions: 19, ..tiny_config() };
        let inputs = random::normal::<f32>(&[2, 19, 16], None, None, None)?;
        let other = random::normal::<f32>(&[2, 19, 16], None, None, None)?;
        for shards in [1, 2, 4] {
            let config = ForecasterConfig { ring_shards: shards, ..config.clone() };
            random::seed(31)?;
            let mut causal = EncoderBlock::new(&config, true)?;
            random::seed(31)?;
            let mut open = EncoderBlock::new(&config, false)?;
            for t in [0, 5, 11, 17] {
                let changed =
                    ops::concatenate(&[inputs.try_index((.., ..=t, ..))?, other.try_index((.., t + 1.., ..))?], 1)?;
                let head = |output: Array| output.try_index((.., ..=t, ..));
                let tail = |output: Array| output.try_index((.., t + 1.., ..));
                let (before, after) = (causal.forward(&inputs)?, causal.forward(&changed)?);
                let difference = max_abs_difference(&head(before.clone())?, &head(after.clone())?);
                assert_eq!(difference, 0.0, "{shards} shards: positions ≤ {t} changed by {difference}");
                assert!(max_abs_difference(&tail(before)?, &tail(after)?) > 1e-3, "{shards} shards, t {t}");
                let reached = max_abs_difference(&head(open.forward(&inputs)?)?, &head(open.forward(&changed)?)?);
                assert!(reached > 1e-3, "{shards} shards: the non-causal block ignored positions > {t}");
            }
        }
        Ok(())
    }

    #[test]
    fn pinball_loss_matches_hand_computation() -> Result<(), Exception> {
        // One batch, two horizon steps, quantiles 0.1 / 0.5 / 0.9.
        // y = 1: preds 0, 1, 3 → errors 1, 0, -2 → 0.1·1, 0, (0.9-1)·(-2) = 0.1, 0, 0.2
        // y = -2: preds -1, -3, 0 → errors -1, 1, -2 → 0.9·1, 0.5·1, 0.1·2 = 0.9, 0.5, 0.2
        let pred = Array::from_slice(&[0.0f32, 1.0, 3.0, -1.0, -3.0, 0.0], &[1, 2, 3]);
        let target = Array::from_slice(&[1.0f32, -2.0], &[1, 2]);
        let loss = pinball_loss(&pred, &target, &DEFAULT_QUANTILES)?.item_exact::<f32>();
        let expected = (0.1 + 0.0 + 0.2 + 0.9 + 0.5 + 0.2) / 6.0;
        assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
        assert!(pinball_loss(&pred, &target, &[0.5]).is_err());
        assert!(pinball_loss(&pred, &Array::from_slice(&[1.0f32], &[1, 1]), &DEFAULT_QUANTILES).is_err());
        Ok(())
    }

    #[test]
    fn activations_match_their_definitions_and_stay_finite() -> Result<(), Exception> {
        let x = Array::from_slice(&[-1000.0f32, -40.0, -3.0, -0.5, 0.0, 0.7, 4.0, 1000.0], &[8]);
        let quick = Activation::QuickGelu.apply(x.clone(), Pass::Inference)?;
        let expected = x.multiply(nn::sigmoid(x.multiply(Array::from_f32(1.702))?)?)?;
        let difference = max_abs_difference(&quick, &expected);
        assert!(difference < 1e-5, "quick GELU differs from x·sigmoid(1.702 x) by {difference}");
        let relu = Activation::Relu.apply(x.clone(), Pass::Inference)?;
        assert_eq!(max_abs_difference(&relu, &ops::maximum(&x, Array::from_f32(0.0))?), 0.0);
        // Gradients stay finite at both ends (the capped power never gives inf · 0).
        for activation in [Activation::QuickGelu, Activation::Relu, Activation::Gelu] {
            for pass in [Pass::Training, Pass::Inference] {
                let gradient =
                    mlx_rs::transforms::grad(move |x: &Array| activation.apply(x.clone(), pass)?.sum(None))(&x)?;
                let largest = gradient.abs()?.max(None)?.item_exact::<f32>();
                assert!(largest.is_finite(), "{activation:?} {pass:?}: gradient {gradient:?}");
            }
        }
        Ok(())
    }

    /// The CPU's GELU is MLX's exact GELU to float precision, in value and gradient, in both
    /// passes, from far in the left tail to far in the right.
    #[test]
    fn the_cpu_gelu_matches_mlx_gelu_in_value_and_gradient() -> Result<(), Exception> {
        let values: Vec<f32> = (-400..=400).map(|i| i as f32 / 40.0).chain([-30.0, -12.0, 25.0, 300.0]).collect();
        let x = Array::from_slice(&values, &[values.len() as i32]);
        let expected = nn::gelu(&x)?;
        let expected_gradient = mlx_rs::transforms::grad(|x: &Array| nn::gelu(x)?.sum(None))(&x)?;
        for pass in [Pass::Training, Pass::Inference] {
            let got = gelu_cpu(&x, pass)?;
            let difference = max_abs_difference(&got, &expected);
            assert!(difference < 1e-5, "{pass:?}: values differ by {difference}");
            let gradient = mlx_rs::transforms::grad(move |x: &Array| gelu_cpu(x, pass)?.sum(None))(&x)?;
            let difference = max_abs_difference(&gradient, &expected_gradient);
            assert!(difference < 1e-5, "{pass:?}: gradients differ by {difference}");
        }
        // in the left tail, where `1 + erf` cancels in f32, the value stays within half a
        // percent (the approximation's own relative error there)
        let tail = gelu_cpu(&Array::from_f32(-6.0), Pass::Inference)?.item_exact::<f32>();
        let exact = -6.0 * 9.865_876e-10; // −6·Φ(−6)
        assert!(((tail - exact) / exact).abs() < 5e-3, "GELU(-6) = {tail}, not {exact}");
        Ok(())
    }

    #[test]
    fn a_saved_config_without_an_activation_is_the_gelu_it_was_trained_with() {
        let mut saved = serde_json::to_value(tiny_config()).unwrap();
        saved.as_object_mut().unwrap().remove("activation");
        let config: ForecasterConfig = serde_json::from_value(saved).unwrap();
        assert_eq!(config.activation, Activation::Gelu);
        let text = serde_json::to_string(&ForecasterConfig { activation: Activation::QuickGelu, ..tiny_config() });
        assert!(text.unwrap().contains(r#""activation":"quick-gelu""#));
    }

    #[test]
    fn an_ensemble_forecasts_the_mean_of_its_members() -> Result<(), Exception> {
        let config = ForecasterConfig { members: 3, ..tiny_config() };
        let mut ensemble = Forecaster::with_seed(&config, 9)?;
        // The first member draws first: a single model of the same seed is that member.
        let mut alone = Forecaster::with_seed(&tiny_config(), 9)?;
        let inputs = random::normal::<f32>(&[2, 20, 5], None, None, None)?;
        let members = ensemble.member_forecasts(&inputs, Pass::Inference)?;
        assert_eq!(members.len(), 3);
        assert_eq!(max_abs_difference(&members[0], &alone.forward(&inputs)?), 0.0);
        assert!(max_abs_difference(&members[0], &members[1]) > 1e-3, "members start from their own weights");
        let mean = members[0].add(&members[1])?.add(&members[2])?.divide(Array::from_f32(3.0))?;
        let forecast = ensemble.forward(&inputs)?;
        assert!(max_abs_difference(&forecast, &mean) < 1e-6);
        // Monotone quantiles stay monotone on average.
        let steps = forecast.try_index((.., .., 1..))?.subtract(forecast.try_index((.., .., ..-1))?)?;
        assert!(steps.min(None)?.item_exact::<f32>() >= 0.0);
        // The training loss is the members' mean loss: each member learns as if alone.
        let targets = random::normal::<f32>(&[2, 6], None, None, None)?;
        let quantiles = config.quantiles.clone();
        let each: Vec<f32> = members
            .iter()
            .map(|m| pinball_loss(m, &targets, &quantiles).map(|l| l.item_exact::<f32>()))
            .collect::<Result<_, _>>()?;
        let loss = ensemble.training_loss(&inputs, &targets, &quantiles)?.item_exact::<f32>();
        assert!((loss - each.iter().sum::<f32>() / 3.0).abs() < 1e-6);
        assert_eq!(ensemble.num_parameters(), 3 * alone.num_parameters());
        Ok(())
    }

    #[test]
    fn a_saved_config_without_members_is_one_model() {
        let mut saved = serde_json::to_value(tiny_config()).unwrap();
        saved.as_object_mut().unwrap().remove("members");
        let config: ForecasterConfig = serde_json::from_value(saved).unwrap();
        assert_eq!(config.members, 1);
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let bad = [
            ForecasterConfig { d_model: 15, ..tiny_config() },
            ForecasterConfig { horizon: 21, ..tiny_config() },
            ForecasterConfig { n_layers: 0, ..tiny_config() },
            ForecasterConfig { quantiles: vec![0.5, 0.1], ..tiny_config() },
            ForecasterConfig { quantiles: vec![0.0, 0.5], ..tiny_config() },
            ForecasterConfig { quantiles: vec![], ..tiny_config() },
            ForecasterConfig { members: 0, ..tiny_config() },
        ];
        for config in bad {
            assert!(Forecaster::new(&config).is_err(), "{config:?}");
        }
    }
}
