//! dacapo-models: the burn side of dacapo-rs.
//!
//! DaCapo's CNNectomeUNet in 2D and 3D ([`UNet`], configured by [`UNetConfig`], with shape
//! arithmetic for sampling and blockwise prediction), the tasks that turn instance labels into
//! targets, losses and activations ([`Task`]), conversion of model and
//! Adam state to PyTorch-named tensors for the stores ([`weights`]), and a [`TrainStep`] that
//! runs forward, loss, backward and the optimizer step on a batch.

pub mod error;
pub mod nd;
pub mod task;
pub mod train;
pub mod unet;
pub mod weights;

pub use error::ModelError;
pub use nd::NdTensor;
pub use task::Task;
pub use train::{TrainStep, adam_config, model_device};
pub use unet::{Padding, UNet, UNetConfig, Upsampling};
pub use weights::{
    load_model_tensors, load_optimizer_tensors, model_to_tensors, optimizer_to_tensors,
    parameter_names,
};
