//! The book's networks, and [`Network`], the one type the training loop and CLI work with.

pub mod head;
mod kind;
pub mod stem;
pub mod torch_names;

use std::sync::Mutex;

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;

pub use densenet::{conv_block, transition_block, DenseBlock, DenseNet};
pub use kind::{InputSizeError, InputSizes, ModelKind, NetworkShape, NetworkSpec, MAX_IMAGE_SIZE};
pub use lenet::LeNet;
pub use resnet::{ResNet18, Residual, ResnetBlock};

use crate::interop::onnx::{OnnxGraph, Value as OnnxValue};
use crate::nn::{stage, LayerRow, Stage};

/// The registry, one line a network: its file (a module of `models/`), its [`Network`]
/// variant and type, and the [`NetworkSpec`]s the file declares (LeNet's declares the book's
/// three variants). Adding a network is its file and a line here.
macro_rules! networks {
    ($($module:ident: $variant:ident($network:ident) => [$($spec:ident),+],)+) => {
        $(pub mod $module;)+

        /// Every network deepcnn can build, in the order the command line lists them.
        pub const NETWORKS: &[&NetworkSpec] = &[$($(&$module::$spec),+),+];

        /// Any of deepcnn's networks: N×1×S×S images in, N×10 logits out.
        // Moved once per training step, so its size is immaterial next to a forward pass.
        #[allow(clippy::large_enum_variant)]
        #[derive(Module, Debug)]
        pub enum Network {
            $($variant($module::$network),)+
        }

        impl Network {
            /// The network's named top-level stages, as the book prints them.
            pub fn named_stages(&self) -> Vec<Stage<'_>> {
                match self {
                    $(Network::$variant(net) => net.named_stages(),)+
                }
            }

            /// Adds the network's evaluation-mode graph on input `x` to `graph`; returns the logits.
            pub fn onnx(&self, graph: &mut OnnxGraph, x: OnnxValue) -> OnnxValue {
                match self {
                    $(Network::$variant(net) => net.onnx(graph, x),)+
                }
            }
        }
    };
}

networks! {
    lenet: LeNet(LeNet) => [PLAIN, BN_SCRATCH, BN],
    resnet: ResNet18(ResNet18) => [SPEC],
    densenet: DenseNet(DenseNet) => [SPEC],
}

impl Network {
    pub fn new(kind: ModelKind, device: &Device) -> Self {
        kind.build(device)
    }

    /// A `kind` network initialised from `seed`, on `device`.
    ///
    /// burn draws initial weights from the backend's process-wide random generator, and only when
    /// a parameter is first used. So the weights are drawn here, right after seeding and under a
    /// lock: a seeded network then does not depend on random numbers drawn later, or by other
    /// threads building networks at the same time. They are always drawn on the CPU and then moved
    /// to `device`, because each backend has its own generator: a seed gives the same network on
    /// every device.
    pub fn seeded(kind: ModelKind, seed: u64, device: &Device) -> Self {
        Self::seeded_for(kind, NetworkShape::default(), seed, device)
    }

    /// [`Network::seeded`] for images and classes of `shape`.
    pub fn seeded_for(kind: ModelKind, shape: NetworkShape, seed: u64, device: &Device) -> Self {
        struct Materialize;
        impl ModuleVisitor for Materialize {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let _ = param.val();
            }
        }
        static INIT: Mutex<()> = Mutex::new(());
        let _guard = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let cpu = if device.is_autodiff() { Device::flex().autodiff() } else { Device::flex() };
        cpu.seed(seed);
        let model = kind.build_for(shape, &cpu);
        model.visit(&mut Materialize);
        if &cpu == device {
            model
        } else {
            // `fork`, not `to_device`: a moved module keeps the move in its autodiff graph and
            // cannot be trained (its first backward pass consumes the graph the next one needs).
            model.fork(device)
        }
    }

    /// Class scores: `x` folded through the stages.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        stage::logits(&self.named_stages(), x)
    }

    /// The first weight (or batch-normalization statistic) that is NaN or ±∞, if any: a
    /// network that diverged, which must neither be saved as trained nor evaluated.
    pub fn first_non_finite(&self) -> Option<f32> {
        struct Find(Option<f32>);
        impl burn::module::ModuleVisitor for Find {
            fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
                if self.0.is_none() {
                    let data = param.val().into_data().convert::<f32>();
                    self.0 = data.iter::<f32>().find(|v| !v.is_finite());
                }
            }
        }
        let mut find = Find(None);
        self.visit(&mut find);
        find.0
    }

    /// The channels of the images the network takes (its first convolution's inputs).
    pub fn input_channels(&self) -> usize {
        match self {
            Network::LeNet(net) => net.conv1.weight.dims()[1],
            Network::ResNet18(net) => net.stem.conv.weight.dims()[1],
            Network::DenseNet(net) => net.stem.conv.weight.dims()[1],
        }
    }

    /// Each top-level layer's output shape and trainable parameter count for one
    /// 1×C×`size`×`size` input, as the book prints them. The network should live on an
    /// autodiff device, where trainable parameters can be told from BN's moving statistics.
    ///
    /// The shapes come from a forward pass of an empty batch (0×1×S×S), which computes and
    /// allocates nothing, so any size the network can take is summarised at no cost.
    pub fn summary(&self, size: usize) -> Vec<LayerRow> {
        let device = self.devices().into_iter().next().unwrap_or_default();
        let input = Tensor::<4>::zeros([0, self.input_channels(), size, size], &device);
        let mut rows = stage::rows(&self.named_stages(), input.into());
        for row in &mut rows {
            row.shape[0] = 1;
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer_shapes(kind: ModelKind, size: usize) -> (Vec<(String, Vec<usize>)>, usize) {
        let rows = Network::new(kind, &Device::flex().autodiff()).summary(size);
        let params = rows.iter().map(|r| r.params).sum();
        (rows.into_iter().map(|r| (r.name, r.shape)).collect(), params)
    }

    fn expected(rows: &[(&str, &[usize])]) -> Vec<(String, Vec<usize>)> {
        rows.iter().map(|(n, s)| (n.to_string(), s.to_vec())).collect()
    }

    #[test]
    fn resnet18_layer_shapes_at_224_match_the_book() {
        let (got, params) = layer_shapes(ModelKind::ResNet18, 224);
        let want = expected(&[
            ("0", &[1, 64, 112, 112]),
            ("1", &[1, 64, 112, 112]),
            ("2", &[1, 64, 112, 112]),
            ("3", &[1, 64, 56, 56]),
            ("resnet_block1", &[1, 64, 56, 56]),
            ("resnet_block2", &[1, 128, 28, 28]),
            ("resnet_block3", &[1, 256, 14, 14]),
            ("resnet_block4", &[1, 512, 7, 7]),
            ("global_avg_pool", &[1, 512, 1, 1]),
            ("fc", &[1, 10]),
        ]);
        assert_eq!(got, want);
        // What PyTorch counts for the book's ResNet-18 (1 input channel, 10 classes): BN's
        // moving statistics are buffers, not parameters.
        assert_eq!(params, 11_178_378);
    }

    #[test]
    fn densenet_layer_shapes_at_96_match_the_book() {
        let (got, params) = layer_shapes(ModelKind::DenseNet, 96);
        let want = expected(&[
            ("0", &[1, 64, 48, 48]),
            ("1", &[1, 64, 48, 48]),
            ("2", &[1, 64, 48, 48]),
            ("3", &[1, 64, 24, 24]),
            ("DenseBlock_0", &[1, 192, 24, 24]),
            ("transition_block_0", &[1, 96, 12, 12]),
            ("DenseBlock_1", &[1, 224, 12, 12]),
            ("transition_block_1", &[1, 112, 6, 6]),
            ("DenseBlock_2", &[1, 240, 6, 6]),
            ("transition_block_2", &[1, 120, 3, 3]),
            ("DenseBlock_3", &[1, 248, 3, 3]),
            ("BN", &[1, 248, 3, 3]),
            ("relu", &[1, 248, 3, 3]),
            ("global_avg_pool", &[1, 248, 1, 1]),
            ("fc", &[1, 10]),
        ]);
        assert_eq!(got, want);
        assert_eq!(params, 758_226);
    }

    #[test]
    fn lenet_bn_layers_match_the_books_sequential() {
        let (got, params) = layer_shapes(ModelKind::LeNetBnScratch, 28);
        let shapes: Vec<Vec<usize>> = got.iter().map(|(_, s)| s.clone()).collect();
        let want: Vec<Vec<usize>> = [
            &[1, 6, 24, 24][..],
            &[1, 6, 24, 24],
            &[1, 6, 24, 24],
            &[1, 6, 12, 12],
            &[1, 16, 8, 8],
            &[1, 16, 8, 8],
            &[1, 16, 8, 8],
            &[1, 16, 4, 4],
            &[1, 256],
            &[1, 120],
            &[1, 120],
            &[1, 120],
            &[1, 84],
            &[1, 84],
            &[1, 84],
            &[1, 10],
        ]
        .iter()
        .map(|s| s.to_vec())
        .collect();
        assert_eq!(shapes, want);
        assert_eq!(got.last().unwrap().0, "15");
        // 44,426 weights and biases + 2 × (6 + 16 + 120 + 84) for γ and β.
        assert_eq!(params, 44_426 + 452);
        // Both BN variants have the same trainable parameters; plain LeNet lacks γ and β.
        assert_eq!(layer_shapes(ModelKind::LeNetBn, 28).1, params);
        assert_eq!(layer_shapes(ModelKind::LeNet, 28).1, 44_426);
    }
}
