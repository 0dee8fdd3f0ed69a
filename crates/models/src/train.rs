//! One training step (forward, loss, backward, Adam) and inference on CPU arrays.

use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use dacapo_core::TensorMap;
use ndarray::ArrayD;

use crate::error::ModelError;
use crate::nd::NdTensor;
use crate::task::Task;
use crate::unet::UNet;
use crate::weights::{
    load_model_tensors, load_optimizer_tensors, model_to_tensors, optimizer_to_tensors,
};

/// burn's Adam with PyTorch's defaults (betas 0.9 / 0.999, eps 1e-8) and L2 `weight_decay`
/// added to the gradient as `torch.optim.Adam` does (0 = none).
pub fn adam_config(weight_decay: f64) -> AdamConfig {
    let config = AdamConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8);
    if weight_decay > 0.0 {
        config.with_weight_decay(Some(WeightDecayConfig::new(weight_decay as f32)))
    } else {
        config
    }
}

/// The device the model's parameters live on.
pub fn model_device(model: &UNet) -> Device {
    model.devices().into_iter().next().unwrap_or_default()
}

/// A model on an autodiff device with its Adam optimizer and task: the trainer's state.
pub struct TrainStep {
    model: Option<UNet>,
    optim: ModuleOptimizer,
    task: Task,
    learning_rate: f64,
}

impl TrainStep {
    /// Wraps `model` (moved to the autodiff version of its device) with a fresh optimizer
    /// built from `adam`.
    pub fn new(model: UNet, task: Task, adam: &AdamConfig, learning_rate: f64) -> Self {
        let device = model_device(&model).autodiff();
        Self {
            model: Some(model.fork(&device).train()),
            optim: adam.init(),
            task,
            learning_rate,
        }
    }

    fn model_ref(&self) -> &UNet {
        // `model` is only None inside `step`, between taking and putting it back.
        self.model
            .as_ref()
            .unwrap_or_else(|| unreachable!("model is always present between steps"))
    }

    /// The model being trained.
    pub fn model(&self) -> &UNet {
        self.model_ref()
    }

    /// The task whose loss is trained.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// The learning rate of the next steps.
    pub fn learning_rate(&self) -> f64 {
        self.learning_rate
    }

    /// Changes the learning rate (for a schedule).
    pub fn set_learning_rate(&mut self, learning_rate: f64) {
        self.learning_rate = learning_rate;
    }

    /// One optimizer step on a batch: `raw` is `(batch, in_channels, spatial...)`, `target`
    /// and `weight` are `(batch, out_channels, output spatial...)` as [`Task::targets`] makes
    /// them for the network's output window. Returns the loss before the update. A non-finite
    /// loss is an error and leaves model and optimizer unchanged.
    pub fn step(
        &mut self,
        raw: &ArrayD<f32>,
        target: &ArrayD<f32>,
        weight: &ArrayD<f32>,
    ) -> Result<f64, ModelError> {
        let model = self.model_ref();
        let device = model_device(model);
        let spatial = raw.shape().get(2..).unwrap_or_default();
        let out_spatial = model.output_shape(spatial)?;
        let mut expected = vec![raw.shape()[0], model.config().out_channels];
        expected.extend(out_spatial);
        for (what, a) in [("target", target), ("weight", weight)] {
            if a.shape() != expected.as_slice() {
                return Err(ModelError::Shape {
                    what: format!("training {what}"),
                    expected: format!("{expected:?} (batch, out_channels, output window)"),
                    found: a.shape().to_vec(),
                });
            }
        }
        let x = NdTensor::from_array(raw, &device)?;
        let t = NdTensor::from_array(target, &device)?;
        let w = NdTensor::from_array(weight, &device)?;
        let pred = model.forward(x)?;
        let loss = self.task.loss(pred, t, w)?;
        let value = f64::from(loss.clone().into_scalar::<f32>());
        if !value.is_finite() {
            return Err(ModelError::NonFiniteLoss(value));
        }
        let grads = loss.backward();
        let model = self
            .model
            .take()
            .unwrap_or_else(|| unreachable!("model is always present between steps"));
        let grads = GradientsParams::from_grads(grads, &model);
        self.model = Some(self.optim.step(self.learning_rate, model, grads));
        Ok(value)
    }

    /// Model and optimizer state as tensor maps for the weights store.
    pub fn to_tensors(&self) -> Result<(TensorMap, TensorMap), ModelError> {
        let model = self.model_ref();
        Ok((
            model_to_tensors(model)?,
            optimizer_to_tensors(&self.optim, model)?,
        ))
    }

    /// Replaces model weights and optimizer state with stored ones (exact resume).
    pub fn load_tensors(
        &mut self,
        model_tensors: &TensorMap,
        optimizer_tensors: &TensorMap,
    ) -> Result<(), ModelError> {
        let model = self.model_ref().clone();
        let model = load_model_tensors(model, model_tensors)?;
        let optim = load_optimizer_tensors(self.optim.clone(), &model, optimizer_tensors)?;
        self.model = Some(model);
        self.optim = optim;
        Ok(())
    }

    /// Gives back the trained model.
    pub fn into_model(self) -> UNet {
        self.model
            .unwrap_or_else(|| unreachable!("model is always present between steps"))
    }
}

impl UNet {
    /// Inference on a `(batch, in_channels, spatial...)` block: the task's activation of the
    /// network output, `(batch, out_channels, output spatial...)`. Runs without autodiff.
    pub fn predict(&self, task: &Task, block: &ArrayD<f32>) -> Result<ArrayD<f32>, ModelError> {
        let model = self.valid();
        let device = model_device(&model);
        let x = NdTensor::from_array(block, &device)?;
        task.activation(model.forward(x)?).to_array()
    }
}
