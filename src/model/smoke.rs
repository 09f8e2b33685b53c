//! An end-to-end check of the tensor engine: fit a small MLP with AdamW on CPU (or the Mac's
//! default device), save it as safetensors, load it into a fresh model and compare outputs.
use mlx_rs::builder::Builder;
use mlx_rs::error::Exception;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::{Module, ModuleParameters, ModuleParametersExt};
use mlx_rs::nn::{self, Linear};
use mlx_rs::optimizers::{AdamWBuilder, Optimizer};
use mlx_rs::{Array, random, transforms};
use serde::Serialize;
use std::path::Path;

/// A two-layer perceptron.
#[derive(Debug, ModuleParameters)]
pub struct Mlp {
    #[param]
    hidden: Linear,
    #[param]
    out: Linear,
}

impl Mlp {
    pub fn new(inputs: i32, width: i32) -> Result<Self, Exception> {
        Ok(Self { hidden: Linear::new(inputs, width)?, out: Linear::new(width, 1)? })
    }
}

impl Module<&Array> for Mlp {
    type Error = Exception;
    type Output = Array;

    /// # Shapes
    /// `x`: [batch, inputs] → [batch, 1]
    fn forward(&mut self, x: &Array) -> Result<Array, Exception> {
        let h = nn::relu(self.hidden.forward(x)?)?;
        self.out.forward(&h)
    }

    fn training_mode(&mut self, _: bool) {}
}

/// What the smoke run measured.
#[derive(Debug, Clone, Serialize)]
pub struct SmokeReport {
    pub device: String,
    pub first_loss: f32,
    pub last_loss: f32,
    pub steps: usize,
    pub mean_step_ms: f64,
    /// Largest |output difference| after the safetensors round trip.
    pub max_roundtrip_diff: f32,
}

/// Fit `y = sin(x₀) + 0.5·x₁` on 256 seeded points for `steps` AdamW steps, then round-trip
/// the weights through `dir/smoke.safetensors`.
pub fn run(dir: &Path, steps: usize) -> Result<SmokeReport, Exception> {
    random::seed(7)?;
    let x = random::uniform::<_, f32>(-2.0, 2.0, &[256, 2], None)?;
    let x0 = x.index_axis(0)?;
    let x1 = x.index_axis(1)?;
    let y = x0.sin()?.add(x1.multiply(Array::from_f32(0.5))?)?.reshape(&[256, 1])?;

    let mut model = Mlp::new(2, 32)?;
    let mut optimizer =
        AdamWBuilder::new(1e-2).weight_decay(0.0).build().map_err(|e| Exception::custom(format!("{e:?}")))?;
    let loss_fn = |m: &mut Mlp, (x, y): (&Array, &Array)| -> Result<Array, Exception> {
        m.forward(x)?.subtract(y)?.square()?.mean(None)
    };
    let mut step = nn::value_and_grad(loss_fn);
    let (mut first_loss, mut last_loss) = (f32::NAN, f32::NAN);
    let started = std::time::Instant::now();
    for i in 0..steps {
        let (loss, grads) = step(&mut model, (&x, &y))?;
        optimizer.update(&mut model, grads)?;
        transforms::eval_params(model.parameters())?;
        let loss = loss.item_exact::<f32>();
        if i == 0 {
            first_loss = loss;
        }
        last_loss = loss;
    }
    let mean_step_ms = started.elapsed().as_secs_f64() * 1e3 / steps.max(1) as f64;

    let path = dir.join("smoke.safetensors");
    model.save_safetensors(&path).map_err(|e| Exception::custom(format!("save failed: {e:?}")))?;
    let mut loaded = Mlp::new(2, 32)?;
    loaded.load_safetensors(&path).map_err(|e| Exception::custom(format!("load failed: {e:?}")))?;
    let a = model.forward(&x)?;
    let b = loaded.forward(&x)?;
    let diff = a.subtract(&b)?.abs()?.max(None)?.item_exact::<f32>();
    Ok(SmokeReport {
        device: format!("{:?}", mlx_rs::Device::default()),
        first_loss,
        last_loss,
        steps,
        mean_step_ms,
        max_roundtrip_diff: diff,
    })
}

trait IndexAxis {
    fn index_axis(&self, column: i32) -> Result<Array, Exception>;
}

impl IndexAxis for Array {
    /// Column `column` of a [n, k] array as [n].
    fn index_axis(&self, column: i32) -> Result<Array, Exception> {
        self.take_axis(Array::from_slice(&[column], &[1]), 1)?.reshape(&[-1])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mlx_smoke_loss_falls_and_safetensors_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let report = super::run(dir.path(), 60).unwrap();
        assert!(report.first_loss.is_finite());
        assert!(report.last_loss < 0.5 * report.first_loss, "{report:?}");
        assert_eq!(report.max_roundtrip_diff, 0.0, "{report:?}");
    }
}
