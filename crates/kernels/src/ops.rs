//! The kernels as burn operations on the flex backend: a backend extension whose flex
//! implementation runs the [`crate::cpu`] kernels and whose autodiff implementation records
//! one graph node per layer with its own backward.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::TensorData;

use crate::cpu::conv::{self, ConvShape};
use crate::cpu::conv_transpose::{self, UpShape};
use crate::cpu::pool::{self, PoolShape};
use crate::cpu::relu_backward;

/// Layers computed by this crate's kernels. Shapes arrive as rank-5 tensors (2D layers get a
/// depth axis of 1); the public functions in the crate root check them first.
#[backend_extension(Flex, Autodiff)]
pub trait KernelOps: Backend {
    /// Stride-1 convolution + bias, then ReLU if `relu`.
    fn dacapo_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        pad: [usize; 3],
        relu: bool,
    ) -> FloatTensor<Self>;

    /// Transposed convolution with kernel = stride + bias, then ReLU if `relu`.
    fn dacapo_conv_transpose(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        relu: bool,
    ) -> FloatTensor<Self>;

    /// Max-pooling with kernel = stride = `factor`.
    fn dacapo_max_pool(x: FloatTensor<Self>, factor: [usize; 3]) -> FloatTensor<Self>;
}

/// A contiguous `f32` view of a flex tensor (copied only if it is a strided view).
struct F32s(FlexTensor);

impl F32s {
    fn new(t: &FlexTensor) -> Self {
        if t.layout().contiguous_offsets().is_some() {
            Self(t.clone())
        } else {
            Self(t.to_contiguous())
        }
    }

    fn get(&self) -> &[f32] {
        self.0
            .as_slice::<f32>()
            .unwrap_or_else(|| panic!("dacapo-kernels: expected f32, got {:?}", self.0.dtype()))
    }
}

fn dims5(t: &FlexTensor) -> [usize; 5] {
    let shape = t.shape();
    let mut d = [0; 5];
    d.copy_from_slice(&shape[..5]);
    d
}

fn tensor(values: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.to_vec()))
}

fn conv_shape(x: &FlexTensor, w: &FlexTensor, pad: [usize; 3]) -> ConvShape {
    let [batch, cin, d, h, wd] = dims5(x);
    let [cout, _, kd, kh, kw] = dims5(w);
    ConvShape {
        batch,
        cin,
        cout,
        input: [d, h, wd],
        kernel: [kd, kh, kw],
        pad,
    }
}

fn up_shape(x: &FlexTensor, w: &FlexTensor) -> UpShape {
    let [batch, cin, d, h, wd] = dims5(x);
    let [_, cout, fd, fh, fw] = dims5(w);
    UpShape {
        batch,
        cin,
        cout,
        input: [d, h, wd],
        factor: [fd, fh, fw],
    }
}

fn pool_shape(x: &FlexTensor, factor: [usize; 3]) -> PoolShape {
    let [b, c, d, h, w] = dims5(x);
    PoolShape {
        planes: b * c,
        input: [d, h, w],
        factor,
    }
}

fn conv_flex(
    x: &FlexTensor,
    w: &FlexTensor,
    b: &FlexTensor,
    pad: [usize; 3],
    relu: bool,
) -> FlexTensor {
    let s = conv_shape(x, w, pad);
    let y = conv::forward(
        &s,
        F32s::new(x).get(),
        F32s::new(w).get(),
        Some(F32s::new(b).get()),
        relu,
    );
    let [od, oh, ow] = s
        .output()
        .unwrap_or_else(|| unreachable!("checked by the caller"));
    tensor(y, &[s.batch, s.cout, od, oh, ow])
}

fn conv_transpose_flex(x: &FlexTensor, w: &FlexTensor, b: &FlexTensor, relu: bool) -> FlexTensor {
    let s = up_shape(x, w);
    let y = conv_transpose::forward(
        &s,
        F32s::new(x).get(),
        F32s::new(w).get(),
        Some(F32s::new(b).get()),
        relu,
    );
    let [od, oh, ow] = s.output();
    tensor(y, &[s.batch, s.cout, od, oh, ow])
}

fn max_pool_flex(x: &FlexTensor, factor: [usize; 3]) -> (FlexTensor, Vec<u8>) {
    let s = pool_shape(x, factor);
    let (y, arg) = pool::forward(&s, F32s::new(x).get());
    let [b, c, ..] = dims5(x);
    let [od, oh, ow] = s.output();
    (tensor(y, &[b, c, od, oh, ow]), arg)
}

impl KernelOps for Flex {
    fn dacapo_conv(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        pad: [usize; 3],
        relu: bool,
    ) -> FlexTensor {
        conv_flex(&x, &weight, &bias, pad, relu)
    }

    fn dacapo_conv_transpose(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        relu: bool,
    ) -> FlexTensor {
        conv_transpose_flex(&x, &weight, &bias, relu)
    }

    fn dacapo_max_pool(x: FlexTensor, factor: [usize; 3]) -> FlexTensor {
        max_pool_flex(&x, factor).0
    }
}

/// The gradient flowing into a layer's pre-activation: through the ReLU if there is one,
/// in place when the incoming gradient is not shared.
fn pre_activation_grad(grad: FlexTensor, y: &Option<FlexTensor>) -> FlexTensor {
    let Some(y) = y else {
        return grad;
    };
    let n = grad.layout().num_elements();
    let mut grad = if grad.layout().contiguous_offsets() == Some((0, n)) {
        grad
    } else {
        grad.to_contiguous()
    };
    let shape = grad.shape();
    match grad.try_storage_mut::<f32>() {
        Some(values) if values.len() == n => {
            relu_backward(F32s::new(y).get(), values);
            grad
        }
        _ => {
            let mut values = F32s::new(&grad).get().to_vec();
            relu_backward(F32s::new(y).get(), &mut values);
            tensor(values, &shape)
        }
    }
}

/// What the backward of a convolution or upsampling needs: its input, weight, output (for the
/// ReLU mask, only with ReLU) and padding.
#[derive(Debug, Clone)]
struct LayerState {
    x: FlexTensor,
    weight: FlexTensor,
    relu_out: Option<FlexTensor>,
    pad: [usize; 3],
}

#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 3> for ConvBackward {
    type State = LayerState;

    fn backward(self, ops: Ops<LayerState, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let st = ops.state;
        let dz = pre_activation_grad(grads.consume::<Flex>(&ops.node), &st.relu_out);
        let s = conv_shape(&st.x, &st.weight, st.pad);
        let dz_values = F32s::new(&dz);
        if let Some(node) = node_x {
            let dx = conv::input_grad(&s, F32s::new(&st.weight).get(), dz_values.get());
            grads.register::<Flex>(node.id, tensor(dx, &st.x.shape()));
        }
        if let Some(node) = node_w {
            let dw = conv::weight_grad(&s, F32s::new(&st.x).get(), dz_values.get());
            grads.register::<Flex>(node.id, tensor(dw, &st.weight.shape()));
        }
        if let Some(node) = node_b {
            grads.register::<Flex>(
                node.id,
                tensor(conv::bias_grad(&s, dz_values.get()), &[s.cout]),
            );
        }
    }
}

#[derive(Debug)]
struct ConvTransposeBackward;

impl Backward<Flex, 3> for ConvTransposeBackward {
    type State = LayerState;

    fn backward(self, ops: Ops<LayerState, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let st = ops.state;
        let dz = pre_activation_grad(grads.consume::<Flex>(&ops.node), &st.relu_out);
        let s = up_shape(&st.x, &st.weight);
        let (dx, dw, db) = conv_transpose::backward(
            &s,
            F32s::new(&st.x).get(),
            F32s::new(&st.weight).get(),
            F32s::new(&dz).get(),
            node_x.is_some(),
        );
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, tensor(dx, &st.x.shape()));
        }
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, tensor(dw, &st.weight.shape()));
        }
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, tensor(db, &[s.cout]));
        }
    }
}

#[derive(Debug)]
struct MaxPoolBackward;

/// The pooled input's shape and factor, and the winner of every window.
#[derive(Debug, Clone)]
struct PoolState {
    shape: Vec<usize>,
    factor: [usize; 3],
    winners: Arc<Vec<u8>>,
}

impl Backward<Flex, 1> for MaxPoolBackward {
    type State = PoolState;

    fn backward(self, ops: Ops<PoolState, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node_x {
            let st = ops.state;
            let [b, c, d, h, w]: [usize; 5] = st.shape[..5]
                .try_into()
                .unwrap_or_else(|_| unreachable!("rank 5 checked on the way in"));
            let s = PoolShape {
                planes: b * c,
                input: [d, h, w],
                factor: st.factor,
            };
            let dx = pool::backward(&s, &st.winners, F32s::new(&grad).get());
            grads.register::<Flex>(node.id, tensor(dx, &st.shape));
        }
    }
}

impl<C: CheckpointStrategy> KernelOps for Autodiff<Flex, C> {
    fn dacapo_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        pad: [usize; 3],
        relu: bool,
    ) -> FloatTensor<Self> {
        let y = conv_flex(
            x.primitive(),
            weight.primitive(),
            bias.primitive(),
            pad,
            relu,
        );
        match ConvBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = LayerState {
                    x: x.into_primitive(),
                    weight: weight.into_primitive(),
                    relu_out: relu.then(|| y.clone()),
                    pad,
                };
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn dacapo_conv_transpose(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        relu: bool,
    ) -> FloatTensor<Self> {
        let y = conv_transpose_flex(x.primitive(), weight.primitive(), bias.primitive(), relu);
        match ConvTransposeBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = LayerState {
                    x: x.into_primitive(),
                    weight: weight.into_primitive(),
                    relu_out: relu.then(|| y.clone()),
                    pad: [0; 3],
                };
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn dacapo_max_pool(x: FloatTensor<Self>, factor: [usize; 3]) -> FloatTensor<Self> {
        let (y, winners) = max_pool_flex(x.primitive(), factor);
        match MaxPoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = PoolState {
                    shape: x.primitive().shape().to_vec(),
                    factor,
                    winners: Arc::new(winners),
                };
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}
