//! ONNX export: a trained network in evaluation mode as an ONNX model, built from the ONNX
//! protobuf messages of the `onnx-protobuf` crate.
//!
//! Each network writes its own graph ([`crate::models::Network::onnx`]) from the layer
//! emitters of [`OnnxGraph`]; batch normalization stays a `BatchNormalization` node with the
//! moving statistics (not folded into the convolutions), so the file shows the network as
//! trained and any runtime may fold it. The batch dimension is dynamic (`batch`).

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{dimension, Dimension};
use onnx_protobuf::{
    type_proto, AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

use crate::models::{ModelKind, Network};
use crate::nn::batch_norm::ScratchBatchNorm;
use crate::nn::fused_batch_norm::FusedBatchNorm;
use crate::nn::layers::{padding_pairs, AvgPool2d, Conv2d, MaxPool2d};
use crate::nn::Norm;

/// The operator set the graph is written for: every operator used has had its current form
/// since opset 15 or earlier, and runtimes of the last years read 17.
pub const OPSET: i64 = 17;
/// ONNX IR version 8 goes with opset 17.
const IR_VERSION: i64 = 8;
/// The name of the dynamic batch dimension of the input and the output.
pub const BATCH_DIM: &str = "batch";
pub const INPUT_NAME: &str = "images";
pub const OUTPUT_NAME: &str = "logits";

/// A value of the graph being built: its name and its shape without the batch dimension.
#[derive(Debug, Clone)]
pub struct Value {
    name: String,
    shape: Vec<usize>,
}

impl Value {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
}

/// The nodes and weights of a graph, added layer by layer in the order a forward pass
/// computes them.
#[derive(Default)]
pub struct OnnxGraph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl OnnxGraph {
    /// A convolution (`name` is its module path, which names its weights).
    pub fn conv(&mut self, name: &str, conv: &Conv2d, x: &Value) -> Value {
        let [c, h, w] = maps(x);
        let [out, _, kh, kw] = conv.weight.dims();
        let pads = padding_pairs(&conv.padding, [h, w], conv.kernel_size, conv.stride);
        let mut inputs = vec![x.name.clone(), self.weight(name, "weight", &conv.weight)];
        if let Some(bias) = &conv.bias {
            inputs.push(self.weight(name, "bias", bias));
        }
        let size = |d: usize, input: usize| {
            let padded = input + pads[d].0 + pads[d].1;
            (padded - conv.dilation[d] * (conv.kernel_size[d] - 1) - 1) / conv.stride[d] + 1
        };
        let shape = vec![out, size(0, h), size(1, w)];
        debug_assert_eq!(c, conv.weight.dims()[1] * conv.groups);
        let attributes = vec![
            ints("kernel_shape", &[kh, kw]),
            ints("strides", &conv.stride),
            ints("dilations", &conv.dilation),
            ints("pads", &[pads[0].0, pads[1].0, pads[0].1, pads[1].1]),
            int("group", conv.groups as i64),
        ];
        self.node("Conv", name, inputs, attributes, shape)
    }

    /// burn's batch normalization layer (deepcnn's fused kernel) with its moving statistics.
    pub fn fused_batch_norm(&mut self, name: &str, bn: &FusedBatchNorm, x: &Value) -> Value {
        let statistics = [("running_mean", bn.running_mean.value()), ("running_var", bn.running_var.value())];
        self.batch_normalization(name, [&bn.gamma, &bn.beta], statistics, bn.epsilon, x)
    }

    /// deepcnn's from-scratch batch normalization with its moving statistics.
    pub fn scratch_batch_norm(&mut self, name: &str, bn: &ScratchBatchNorm, x: &Value) -> Value {
        let statistics = [("moving_mean", bn.moving_mean.value()), ("moving_var", bn.moving_var.value())];
        self.batch_normalization(name, [&bn.gamma, &bn.beta], statistics, bn.eps, x)
    }

    /// Either batch normalization of a [`Norm`] slot (its module path names the variant, as
    /// burn's records do).
    pub fn norm(&mut self, name: &str, norm: &Norm, x: &Value) -> Value {
        match norm {
            Norm::Scratch(bn) => self.scratch_batch_norm(&format!("{name}.Scratch"), bn, x),
            Norm::Builtin(bn) => self.fused_batch_norm(&format!("{name}.Builtin"), bn, x),
        }
    }

    /// `BatchNormalization` from γ and β and the (field, value) of the mean and the variance
    /// (each layer names its statistics its own way).
    fn batch_normalization(
        &mut self,
        name: &str,
        [gamma, beta]: [&Param<Tensor<1>>; 2],
        statistics: [(&str, Tensor<1>); 2],
        epsilon: f64,
        x: &Value,
    ) -> Value {
        let mut inputs = vec![x.name.clone(), self.weight(name, "gamma", gamma), self.weight(name, "beta", beta)];
        for (field, value) in statistics {
            inputs.push(self.tensor(name, field, value));
        }
        self.node("BatchNormalization", name, inputs, vec![float("epsilon", epsilon as f32)], x.shape.clone())
    }

    /// A linear layer (burn keeps its weight as inputs × outputs, which is `Gemm`'s B).
    pub fn linear(&mut self, name: &str, linear: &Linear, x: &Value) -> Value {
        let [_, out] = linear.weight.dims();
        let mut inputs = vec![x.name.clone(), self.weight(name, "weight", &linear.weight)];
        if let Some(bias) = &linear.bias {
            inputs.push(self.weight(name, "bias", bias));
        }
        self.node("Gemm", name, inputs, vec![], vec![out])
    }

    pub fn max_pool(&mut self, name: &str, pool: &MaxPool2d, x: &Value) -> Value {
        let extra = vec![ints("dilations", &pool.dilation), int("ceil_mode", pool.ceil_mode as i64)];
        self.pool(
            "MaxPool",
            name,
            [pool.kernel_size, pool.stride, pool.dilation],
            &pool.padding,
            pool.ceil_mode,
            extra,
            x,
        )
    }

    pub fn avg_pool(&mut self, name: &str, pool: &AvgPool2d, x: &Value) -> Value {
        let extra =
            vec![int("count_include_pad", pool.count_include_pad as i64), int("ceil_mode", pool.ceil_mode as i64)];
        self.pool("AveragePool", name, [pool.kernel_size, pool.stride, [1, 1]], &pool.padding, pool.ceil_mode, extra, x)
    }

    #[allow(clippy::too_many_arguments)]
    fn pool(
        &mut self,
        op: &str,
        name: &str,
        [kernel, stride, dilation]: [[usize; 2]; 3],
        padding: &burn::nn::PaddingConfig2d,
        ceil_mode: bool,
        mut attributes: Vec<AttributeProto>,
        x: &Value,
    ) -> Value {
        let [c, h, w] = maps(x);
        let pads = padding_pairs(padding, [h, w], kernel, stride);
        let size = |d: usize, input: usize| {
            let span = input + pads[d].0 + pads[d].1 - dilation[d] * (kernel[d] - 1) - 1;
            if ceil_mode {
                span.div_ceil(stride[d]) + 1
            } else {
                span / stride[d] + 1
            }
        };
        attributes.extend([
            ints("kernel_shape", &kernel),
            ints("strides", &stride),
            ints("pads", &[pads[0].0, pads[1].0, pads[0].1, pads[1].1]),
        ]);
        self.node(op, name, vec![x.name.clone()], attributes, vec![c, size(0, h), size(1, w)])
    }

    pub fn global_avg_pool(&mut self, name: &str, x: &Value) -> Value {
        let [c, _, _] = maps(x);
        self.node("GlobalAveragePool", name, vec![x.name.clone()], vec![], vec![c, 1, 1])
    }

    /// N×C×H×W to N×(C·H·W).
    pub fn flatten(&mut self, name: &str, x: &Value) -> Value {
        let features = x.shape.iter().product();
        self.node("Flatten", name, vec![x.name.clone()], vec![int("axis", 1)], vec![features])
    }

    pub fn relu(&mut self, name: &str, x: &Value) -> Value {
        self.node("Relu", name, vec![x.name.clone()], vec![], x.shape.clone())
    }

    pub fn sigmoid(&mut self, name: &str, x: &Value) -> Value {
        self.node("Sigmoid", name, vec![x.name.clone()], vec![], x.shape.clone())
    }

    pub fn add(&mut self, name: &str, a: &Value, b: &Value) -> Value {
        assert_eq!(a.shape, b.shape, "{name}: adding values of different shapes");
        self.node("Add", name, vec![a.name.clone(), b.name.clone()], vec![], a.shape.clone())
    }

    /// Concatenation along the channels.
    pub fn concat_channels(&mut self, name: &str, values: &[&Value]) -> Value {
        let mut shape = values[0].shape.clone();
        shape[0] = values.iter().map(|v| v.shape[0]).sum();
        let inputs = values.iter().map(|v| v.name.clone()).collect();
        self.node("Concat", name, inputs, vec![int("axis", 1)], shape)
    }

    /// Adds a node named after `name` and its operator, whose one output is named the same.
    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: Vec<String>,
        attributes: Vec<AttributeProto>,
        shape: Vec<usize>,
    ) -> Value {
        let output = format!("{name}:{op}");
        self.nodes.push(NodeProto {
            name: output.clone(),
            op_type: op.into(),
            input: inputs,
            output: vec![output.clone()],
            attribute: attributes,
            ..Default::default()
        });
        Value { name: output, shape }
    }

    /// A trained parameter as an initializer named `module.field`.
    fn weight<const D: usize>(&mut self, module: &str, field: &str, param: &Param<Tensor<D>>) -> String {
        self.tensor(module, field, param.val())
    }

    fn tensor<const D: usize>(&mut self, module: &str, field: &str, tensor: Tensor<D>) -> String {
        let name = format!("{module}.{field}");
        let dims = tensor.dims().iter().map(|&d| d as i64).collect();
        let values = tensor.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 after convert");
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims,
            data_type: DataType::FLOAT as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }
}

/// The ONNX model of `model` (a `kind` network taking `channels`×`size`×`size` images) in
/// evaluation mode, with the class names and deepcnn's name for the network as metadata.
pub fn export_onnx(kind: ModelKind, model: &Network, channels: usize, size: usize, class_names: &[&str]) -> Vec<u8> {
    let mut graph = OnnxGraph::default();
    let input = Value { name: INPUT_NAME.into(), shape: vec![channels, size, size] };
    let logits = model.onnx(&mut graph, input.clone());
    // The last node's output takes the graph output's name.
    let last = graph.nodes.last_mut().expect("a network has layers");
    last.output = vec![OUTPUT_NAME.into()];
    let graph = GraphProto {
        name: kind.name().into(),
        node: graph.nodes,
        initializer: graph.initializers,
        input: vec![value_info(&input.name, &input.shape)],
        output: vec![value_info(OUTPUT_NAME, &logits.shape)],
        ..Default::default()
    };
    let entry = |key: &str, value: String| StringStringEntryProto { key: key.into(), value, ..Default::default() };
    let model = ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET, ..Default::default() }],
        producer_name: "deepcnn".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!("{kind} in evaluation mode: {channels}×{size}×{size} images in, class logits out"),
        graph: Some(graph).into(),
        metadata_props: vec![
            entry("model", kind.name().into()),
            entry("class_names", serde_json::to_string(class_names).expect("strings serialise")),
        ],
        ..Default::default()
    };
    model.write_to_bytes().expect("an in-memory ONNX model serialises")
}

/// A float tensor's type with the dynamic batch dimension first.
fn value_info(name: &str, shape: &[usize]) -> ValueInfoProto {
    let dim = |value| Dimension { value: Some(value), ..Default::default() };
    let mut dims = vec![dim(dimension::Value::DimParam(BATCH_DIM.into()))];
    dims.extend(shape.iter().map(|&d| dim(dimension::Value::DimValue(d as i64))));
    let tensor = type_proto::Tensor {
        elem_type: DataType::FLOAT as i32,
        shape: Some(TensorShapeProto { dim: dims, ..Default::default() }).into(),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.into(),
        type_: Some(TypeProto { value: Some(type_proto::Value::TensorType(tensor)), ..Default::default() }).into(),
        ..Default::default()
    }
}

fn maps(x: &Value) -> [usize; 3] {
    x.shape.as_slice().try_into().unwrap_or_else(|_| panic!("{} is not C×H×W but {:?}", x.name, x.shape))
}

fn ints(name: &str, values: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::INTS.into(),
        ints: values.iter().map(|&v| v as i64).collect(),
        ..Default::default()
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: name.into(), type_: AttributeType::INT.into(), i: value, ..Default::default() }
}

fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto { name: name.into(), type_: AttributeType::FLOAT.into(), f: value, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::CLASS_NAMES;

    fn exported(kind: ModelKind, size: usize) -> (ModelProto, Network) {
        let model = Network::seeded(kind, 1, &Device::flex());
        let bytes = export_onnx(kind, &model, 1, size, &CLASS_NAMES);
        (ModelProto::parse_from_bytes(&bytes).expect("the file parses as an ONNX model"), model)
    }

    fn count(model: &ModelProto, op: &str) -> usize {
        model.graph.node.iter().filter(|n| n.op_type == op).count()
    }

    #[test]
    fn every_network_exports_its_layers_weights_and_metadata() {
        // (kind, size, convolutions, batch normalizations, adds, concatenations, linear layers)
        let cases = [
            (ModelKind::LeNet, 28, 2, 0, 0, 0, 3),
            (ModelKind::LeNetBnScratch, 28, 2, 4, 0, 0, 3),
            (ModelKind::LeNetBn, 28, 2, 4, 0, 0, 3),
            // The stem, 8 residuals of two, and 3 shortcuts; the stem's BN and 16.
            (ModelKind::ResNet18, 28, 20, 17, 8, 0, 1),
            // The stem, 16 in the dense blocks, 3 transitions; BN before each and the last one.
            (ModelKind::DenseNet, 96, 20, 21, 0, 16, 1),
        ];
        for (kind, size, convs, norms, adds, concats, linears) in cases {
            let (onnx, model) = exported(kind, size);
            let got = [count(&onnx, "Conv"), count(&onnx, "BatchNormalization"), count(&onnx, "Add")];
            assert_eq!(got, [convs, norms, adds], "{kind}: Conv, BatchNormalization, Add");
            assert_eq!([count(&onnx, "Concat"), count(&onnx, "Gemm")], [concats, linears], "{kind}: Concat, Gemm");
            // Every weight and statistic of the network is an initializer, each once.
            let floats: usize = onnx.graph.initializer.iter().map(|t| t.raw_data.len() / 4).sum();
            assert_eq!(floats, model.num_params(), "{kind}");
            let names: std::collections::HashSet<_> = onnx.graph.initializer.iter().map(|t| &t.name).collect();
            assert_eq!(names.len(), onnx.graph.initializer.len(), "{kind}: an initializer name repeats");
            // Every node input is the graph input, an initializer or an earlier node's output.
            let mut known: std::collections::HashSet<String> = names.iter().map(|n| n.to_string()).collect();
            known.insert(INPUT_NAME.into());
            for node in &onnx.graph.node {
                for input in &node.input {
                    assert!(known.contains(input), "{kind}: {} reads {input}, which nothing wrote", node.name);
                }
                known.extend(node.output.iter().cloned());
            }
            assert_eq!(onnx.graph.node.last().unwrap().output, [OUTPUT_NAME]);
            let metadata: Vec<_> = onnx.metadata_props.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
            assert!(metadata.contains(&("model", kind.name())), "{metadata:?}");
            let classes = metadata.iter().find(|(k, _)| *k == "class_names").unwrap().1;
            assert_eq!(serde_json::from_str::<Vec<String>>(classes).unwrap(), CLASS_NAMES, "{kind}");
        }
    }

    #[test]
    fn the_batch_dimension_is_dynamic_and_the_rest_fixed() {
        let (onnx, _) = exported(ModelKind::ResNet18, 32);
        let dims = |v: &ValueInfoProto| -> Vec<dimension::Value> {
            let Some(type_proto::Value::TensorType(t)) = &v.type_.value else { panic!("not a tensor") };
            t.shape.dim.iter().map(|d| d.value.clone().unwrap()).collect()
        };
        let batch = dimension::Value::DimParam(BATCH_DIM.into());
        let fixed = |d: i64| dimension::Value::DimValue(d);
        assert_eq!(dims(&onnx.graph.input[0]), [batch.clone(), fixed(1), fixed(32), fixed(32)]);
        assert_eq!(dims(&onnx.graph.output[0]), [batch, fixed(10)]);
        assert_eq!(onnx.opset_import[0].version, OPSET);
    }

    #[test]
    fn padding_and_output_sizes_follow_the_layers() {
        let (onnx, _) = exported(ModelKind::ResNet18, 28);
        let attribute = |node: &str, name: &str| -> Vec<i64> {
            let node = onnx.graph.node.iter().find(|n| n.name == node).unwrap_or_else(|| panic!("no {node}"));
            node.attribute.iter().find(|a| a.name == name).unwrap().ints.clone()
        };
        assert_eq!(attribute("stem.conv:Conv", "pads"), [3, 3, 3, 3]);
        assert_eq!(attribute("stem.conv:Conv", "strides"), [2, 2]);
        assert_eq!(attribute("stem.pool:MaxPool", "pads"), [1, 1, 1, 1]);
        assert_eq!(attribute("stem.pool:MaxPool", "kernel_shape"), [3, 3]);
        assert_eq!(attribute("stages.1.residuals.0.conv3:Conv", "kernel_shape"), [1, 1]);
    }
}
