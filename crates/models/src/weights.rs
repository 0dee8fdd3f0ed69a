//! Model and Adam state as PyTorch-named [`TensorMap`]s, the form the weights store keeps.
//!
//! Model tensor names are those of DaCapo's `Model` state dict (CNNectomeUNet under
//! `architecture.unet.`, the 1×1 head as `prediction_head.`), with PyTorch layouts
//! (`(out, in, k...)` convolutions, `(in, out, k...)` transposed convolutions). Loading also
//! accepts the duplicate `chain.0.` / `chain.1.` names of a DaCapo state dict. Optimizer
//! state is per parameter `"{name}.exp_avg"`, `"{name}.exp_avg_sq"` (F32, the parameter's
//! shape) and `"{name}.step"` (I64 scalar), as in `torch.optim.Adam`'s state.

use std::collections::{BTreeMap, BTreeSet};

use burn::module::{Param, ParamId};
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::tensor::{Bytes, Tensor, TensorData};
use burn_pack::{DType as PackDType, Reader, Scalar, Writer};
use dacapo_core::{DType, NamedTensor, TensorMap};

use crate::error::ModelError;
use crate::unet::{Conv, ConvT, UNet, Up};

/// A reference to one parameter of the U-Net.
enum ParamRef<'a> {
    T1(&'a Param<Tensor<1>>),
    T4(&'a Param<Tensor<4>>),
    T5(&'a Param<Tensor<5>>),
}

/// A mutable reference to one parameter of the U-Net.
enum ParamMut<'a> {
    T1(&'a mut Param<Tensor<1>>),
    T4(&'a mut Param<Tensor<4>>),
    T5(&'a mut Param<Tensor<5>>),
}

impl ParamRef<'_> {
    fn id(&self) -> ParamId {
        match self {
            ParamRef::T1(p) => p.id,
            ParamRef::T4(p) => p.id,
            ParamRef::T5(p) => p.id,
        }
    }

    fn shape(&self) -> Vec<usize> {
        match self {
            ParamRef::T1(p) => p.lazy_shape().to_vec(),
            ParamRef::T4(p) => p.lazy_shape().to_vec(),
            ParamRef::T5(p) => p.lazy_shape().to_vec(),
        }
    }

    fn data(&self) -> TensorData {
        match self {
            ParamRef::T1(p) => p.val().into_data(),
            ParamRef::T4(p) => p.val().into_data(),
            ParamRef::T5(p) => p.val().into_data(),
        }
    }
}

const ARCH: &str = "architecture.unet";
const HEAD: &str = "prediction_head";

/// `(prefix, weight, bias)` of every convolution, in a fixed order.
fn conv_refs(model: &UNet) -> Vec<(String, ParamRef<'_>, Option<ParamRef<'_>>)> {
    fn conv<'a>(prefix: String, c: &'a Conv) -> (String, ParamRef<'a>, Option<ParamRef<'a>>) {
        match c {
            Conv::D2(c) => (
                prefix,
                ParamRef::T4(&c.weight),
                c.bias.as_ref().map(ParamRef::T1),
            ),
            Conv::D3(c) => (
                prefix,
                ParamRef::T5(&c.weight),
                c.bias.as_ref().map(ParamRef::T1),
            ),
        }
    }
    let mut out = Vec::new();
    for (level, pass) in model.l_conv.iter().enumerate() {
        for (j, c) in pass.convs.iter().enumerate() {
            // PyTorch's Sequential interleaves ReLUs: convolutions sit at even indices.
            out.push(conv(
                format!("{ARCH}.l_conv.{level}.conv_pass.{}", 2 * j),
                c,
            ));
        }
    }
    for (level, up) in model.r_up.iter().enumerate() {
        match up {
            Up::Transposed(ConvT::D2(c)) => out.push((
                format!("{ARCH}.r_up.0.{level}.up.0"),
                ParamRef::T4(&c.weight),
                c.bias.as_ref().map(ParamRef::T1),
            )),
            Up::Transposed(ConvT::D3(c)) => out.push((
                format!("{ARCH}.r_up.0.{level}.up.0"),
                ParamRef::T5(&c.weight),
                c.bias.as_ref().map(ParamRef::T1),
            )),
            // Sequential(Upsample, Conv, ReLU).
            Up::Nearest(c) => out.push(conv(format!("{ARCH}.r_up.0.{level}.up.1"), c)),
        }
    }
    for (level, pass) in model.r_conv.iter().enumerate() {
        for (j, c) in pass.convs.iter().enumerate() {
            out.push(conv(
                format!("{ARCH}.r_conv.0.{level}.conv_pass.{}", 2 * j),
                c,
            ));
        }
    }
    out.push(conv(HEAD.to_string(), &model.head));
    out
}

/// Every parameter with its PyTorch name, in a fixed order.
fn param_refs(model: &UNet) -> Vec<(String, ParamRef<'_>)> {
    let mut out = Vec::new();
    for (prefix, weight, bias) in conv_refs(model) {
        out.push((format!("{prefix}.weight"), weight));
        if let Some(bias) = bias {
            out.push((format!("{prefix}.bias"), bias));
        }
    }
    out
}

/// Mutable counterpart of [`param_refs`], same names and order.
fn param_muts(model: &mut UNet) -> Vec<(String, ParamMut<'_>)> {
    fn conv<'a>(out: &mut Vec<(String, ParamMut<'a>)>, prefix: String, c: &'a mut Conv) {
        let (w, b) = match c {
            Conv::D2(c) => (
                ParamMut::T4(&mut c.weight),
                c.bias.as_mut().map(ParamMut::T1),
            ),
            Conv::D3(c) => (
                ParamMut::T5(&mut c.weight),
                c.bias.as_mut().map(ParamMut::T1),
            ),
        };
        push(out, prefix, w, b);
    }
    fn push<'a>(
        out: &mut Vec<(String, ParamMut<'a>)>,
        prefix: String,
        w: ParamMut<'a>,
        b: Option<ParamMut<'a>>,
    ) {
        out.push((format!("{prefix}.weight"), w));
        if let Some(b) = b {
            out.push((format!("{prefix}.bias"), b));
        }
    }
    let mut out = Vec::new();
    for (level, pass) in model.l_conv.iter_mut().enumerate() {
        for (j, c) in pass.convs.iter_mut().enumerate() {
            conv(
                &mut out,
                format!("{ARCH}.l_conv.{level}.conv_pass.{}", 2 * j),
                c,
            );
        }
    }
    for (level, up) in model.r_up.iter_mut().enumerate() {
        match up {
            Up::Transposed(ConvT::D2(c)) => push(
                &mut out,
                format!("{ARCH}.r_up.0.{level}.up.0"),
                ParamMut::T4(&mut c.weight),
                c.bias.as_mut().map(ParamMut::T1),
            ),
            Up::Transposed(ConvT::D3(c)) => push(
                &mut out,
                format!("{ARCH}.r_up.0.{level}.up.0"),
                ParamMut::T5(&mut c.weight),
                c.bias.as_mut().map(ParamMut::T1),
            ),
            Up::Nearest(c) => conv(&mut out, format!("{ARCH}.r_up.0.{level}.up.1"), c),
        }
    }
    for (level, pass) in model.r_conv.iter_mut().enumerate() {
        for (j, c) in pass.convs.iter_mut().enumerate() {
            conv(
                &mut out,
                format!("{ARCH}.r_conv.0.{level}.conv_pass.{}", 2 * j),
                c,
            );
        }
    }
    conv(&mut out, HEAD.to_string(), &mut model.head);
    out
}

/// The PyTorch names and shapes of all parameters, in a fixed order.
pub fn parameter_names(model: &UNet) -> Vec<(String, Vec<usize>)> {
    param_refs(model)
        .into_iter()
        .map(|(name, p)| {
            let shape = p.shape();
            (name, shape)
        })
        .collect()
}

fn data_to_f32(name: &str, data: TensorData) -> Result<Vec<f32>, ModelError> {
    data.convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| ModelError::OptimizerState(format!("reading tensor {name}: {e:?}")))
}

/// All model parameters as F32 tensors under DaCapo/PyTorch state-dict names.
pub fn model_to_tensors(model: &UNet) -> Result<TensorMap, ModelError> {
    let mut map = TensorMap::new();
    for (name, p) in param_refs(model) {
        let shape = p.shape();
        let values = data_to_f32(&name, p.data())?;
        map.insert(name, NamedTensor::from_f32(shape, &values)?);
    }
    Ok(map)
}

/// Looks `name` up, also under the `chain.0.` / `chain.1.` aliases of a DaCapo state dict.
fn lookup<'a>(tensors: &'a TensorMap, name: &str) -> Option<(&'a str, &'a NamedTensor)> {
    if let Some((k, t)) = tensors.get_key_value(name) {
        return Some((k.as_str(), t));
    }
    let alias = if let Some(rest) = name.strip_prefix("architecture.") {
        format!("chain.0.{rest}")
    } else if let Some(rest) = name.strip_prefix("prediction_head.") {
        format!("chain.1.{rest}")
    } else {
        return None;
    };
    tensors.get_key_value(&alias).map(|(k, t)| (k.as_str(), t))
}

fn checked_values(
    map: &'static str,
    name: &str,
    t: &NamedTensor,
    shape: &[usize],
) -> Result<Vec<f32>, ModelError> {
    if t.dtype != DType::F32 || t.shape != shape {
        return Err(ModelError::TensorMismatch {
            map,
            name: name.to_string(),
            expected: shape.to_vec(),
            found: t.shape.clone(),
            dtype: format!("{:?}", t.dtype),
        });
    }
    Ok(t.to_f32()?)
}

/// Loads every parameter of `model` from `tensors` (names as [`model_to_tensors`] writes
/// them), keeping each parameter's device, id and gradient setting. Missing, mis-shaped and
/// unused tensors are errors that name them.
pub fn load_model_tensors(mut model: UNet, tensors: &TensorMap) -> Result<UNet, ModelError> {
    let mut used = BTreeSet::new();
    for (name, p) in param_muts(&mut model) {
        let Some((key, t)) = lookup(tensors, &name) else {
            return Err(ModelError::MissingTensor {
                map: "model",
                name,
                hint: format!(
                    " (the map holds {} tensors, e.g. {:?})",
                    tensors.len(),
                    tensors.keys().take(3).collect::<Vec<_>>()
                ),
            });
        };
        used.insert(key.to_string());
        match p {
            ParamMut::T1(p) => {
                let shape = p.lazy_shape().to_vec();
                let v = checked_values("model", key, t, &shape)?;
                let device = p.lazy_device();
                let value = Tensor::from_data(TensorData::new(v, shape), &device);
                *p = p.clone().transform_for_load(value, p.id);
            }
            ParamMut::T4(p) => {
                let shape = p.lazy_shape().to_vec();
                let v = checked_values("model", key, t, &shape)?;
                let device = p.lazy_device();
                let value = Tensor::from_data(TensorData::new(v, shape), &device);
                *p = p.clone().transform_for_load(value, p.id);
            }
            ParamMut::T5(p) => {
                let shape = p.lazy_shape().to_vec();
                let v = checked_values("model", key, t, &shape)?;
                let device = p.lazy_device();
                let value = Tensor::from_data(TensorData::new(v, shape), &device);
                *p = p.clone().transform_for_load(value, p.id);
            }
        }
    }
    // A DaCapo state dict holds each tensor twice (architecture.* and chain.0.*): the
    // duplicate of a used tensor is not "unused".
    let unused: Vec<String> = tensors
        .keys()
        .filter(|k| !used.contains(*k))
        .filter(|k| {
            let twin = if let Some(r) = k.strip_prefix("chain.0.") {
                format!("architecture.{r}")
            } else if let Some(r) = k.strip_prefix("chain.1.") {
                format!("prediction_head.{r}")
            } else {
                return true;
            };
            !used.contains(&twin)
        })
        .cloned()
        .collect();
    if !unused.is_empty() {
        return Err(ModelError::UnusedTensors {
            map: "model",
            names: unused,
        });
    }
    Ok(model)
}

/// burn's Adam state field names and ours.
const FIELDS: [(&str, &str); 3] = [
    ("momentum.moment_1", "exp_avg"),
    ("momentum.moment_2", "exp_avg_sq"),
    ("momentum.max_moment_2", "max_exp_avg_sq"),
];
const TIME: &str = "momentum.time";
const RANK: &str = "__rank";

fn pack_error(e: impl std::fmt::Debug) -> ModelError {
    ModelError::OptimizerState(format!("burnpack conversion failed: {e:?}"))
}

/// The Adam state of `optim` for the parameters of `model`, under PyTorch-style names.
/// Parameters that have not been stepped yet have no entries.
pub fn optimizer_to_tensors(
    optim: &ModuleOptimizer,
    model: &UNet,
) -> Result<TensorMap, ModelError> {
    let names: BTreeMap<u64, String> = param_refs(model)
        .into_iter()
        .map(|(name, p)| (p.id().val(), name))
        .collect();
    let bytes = optim.to_record().into_bytes().map_err(pack_error)?;
    let reader = Reader::from_bytes(bytes).map_err(pack_error)?;
    let scalars = reader.scalars().clone();
    let param_of = |key: &str| -> Result<(String, String), ModelError> {
        let (id, field) = key
            .split_once('.')
            .ok_or_else(|| ModelError::OptimizerState(format!("unexpected state entry {key:?}")))?;
        let name = id
            .parse::<u64>()
            .ok()
            .and_then(|id| names.get(&id))
            .ok_or_else(|| {
                ModelError::OptimizerState(format!(
                    "state entry {key:?} belongs to no parameter of this model"
                ))
            })?;
        Ok((name.clone(), field.to_string()))
    };
    let mut map = TensorMap::new();
    for tensor in reader.into_tensors().map_err(pack_error)? {
        let (key, dtype, shape, _, bytes) = tensor.into_parts().map_err(pack_error)?;
        let (name, field) = param_of(&key)?;
        let ours = FIELDS
            .iter()
            .find(|(burn, _)| *burn == field)
            .map(|(_, ours)| *ours)
            .ok_or_else(|| {
                ModelError::OptimizerState(format!(
                    "unknown Adam state field {field:?}: this burn version stores its state \
                     differently from what dacapo-models expects"
                ))
            })?;
        if dtype != PackDType::F32 {
            return Err(ModelError::OptimizerState(format!(
                "{key}: state dtype {dtype:?}, expected F32"
            )));
        }
        let t = NamedTensor::new(DType::F32, shape.to_vec(), bytes.to_vec())?;
        map.insert(format!("{name}.{ours}"), t);
    }
    for (key, value) in scalars {
        let (name, field) = param_of(&key)?;
        match field.as_str() {
            RANK => {}
            TIME => {
                let step = u64::try_from(value)
                    .ok()
                    .and_then(|s| i64::try_from(s).ok())
                    .ok_or_else(|| {
                        ModelError::OptimizerState(format!("{key}: step {value:?} is not a count"))
                    })?;
                map.insert(
                    format!("{name}.step"),
                    NamedTensor::from_i64(vec![], &[step])?,
                );
            }
            other => {
                return Err(ModelError::OptimizerState(format!(
                    "unknown Adam state scalar {other:?} of {name}"
                )));
            }
        }
    }
    Ok(map)
}

/// Restores Adam state written by [`optimizer_to_tensors`] into `optim` for the parameters of
/// `model` (which may be a freshly built model with other parameter ids). A parameter
/// without entries starts with fresh state; partial or mis-shaped entries are errors.
pub fn load_optimizer_tensors(
    optim: ModuleOptimizer,
    model: &UNet,
    tensors: &TensorMap,
) -> Result<ModuleOptimizer, ModelError> {
    let mut used = BTreeSet::new();
    let mut pack = Vec::new();
    let mut writer_scalars = Vec::new();
    for (name, p) in param_refs(model) {
        let step_key = format!("{name}.step");
        let present = FIELDS
            .iter()
            .any(|(_, ours)| tensors.contains_key(&format!("{name}.{ours}")))
            || tensors.contains_key(&step_key);
        if !present {
            continue;
        }
        let id = p.id().val();
        let shape = p.shape();
        // exp_avg, exp_avg_sq and step are required together; max_exp_avg_sq only with amsgrad.
        for (i, (field, ours)) in FIELDS.iter().enumerate() {
            let key = format!("{name}.{ours}");
            match tensors.get(&key) {
                Some(t) => {
                    checked_values("optimizer", &key, t, &shape)?;
                    pack.push(burn_pack::Tensor::new(
                        format!("{id}.{field}"),
                        PackDType::F32,
                        shape.clone(),
                        Some(id),
                        Bytes::from_bytes_vec(t.data.clone()),
                    ));
                    used.insert(key);
                }
                None if i < 2 => {
                    return Err(ModelError::MissingTensor {
                        map: "optimizer",
                        name: key,
                        hint: format!(" (other state of {name} is present)"),
                    });
                }
                None => {}
            }
        }
        let step = tensors
            .get(&step_key)
            .ok_or_else(|| ModelError::MissingTensor {
                map: "optimizer",
                name: step_key.clone(),
                hint: format!(" (other state of {name} is present)"),
            })?;
        let step = match step.to_i64()?.as_slice() {
            [s] if *s >= 0 => *s as u64,
            other => {
                return Err(ModelError::OptimizerState(format!(
                    "{step_key} must hold one non-negative count, found {other:?}"
                )));
            }
        };
        used.insert(step_key);
        writer_scalars.push((format!("{id}.{TIME}"), Scalar::from(step)));
        writer_scalars.push((format!("{id}.{RANK}"), Scalar::from(shape.len())));
    }
    let unused: Vec<String> = tensors
        .keys()
        .filter(|k| !used.contains(*k))
        .cloned()
        .collect();
    if !unused.is_empty() {
        return Err(ModelError::UnusedTensors {
            map: "optimizer",
            names: unused,
        });
    }
    let mut writer = Writer::new(pack);
    for (key, value) in &writer_scalars {
        writer = writer.with_scalar(key, *value);
    }
    let bytes = writer.into_bytes().map_err(pack_error)?;
    let record = OptimizerRecord::from_bytes(bytes).map_err(pack_error)?;
    Ok(optim.load_record(record))
}
