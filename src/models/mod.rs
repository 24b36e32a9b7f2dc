//! The book's networks, and [`Network`], the one type the training loop and CLI work with.

pub mod densenet;
pub mod head;
pub mod lenet;
pub mod resnet;
pub mod stem;

use std::fmt;
use std::str::FromStr;

use burn::prelude::*;

pub use densenet::{conv_block, transition_block, DenseBlock, DenseNet};
pub use lenet::LeNet;
pub use resnet::{ResNet18, Residual, ResnetBlock};

use crate::nn::norm::NormKind;
use crate::nn::{LayerRow, Trace};

/// The networks deepcnn can build, by their command-line names (also their name in run files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum ModelKind {
    /// LeNet with sigmoid and max-pooling (§5.5).
    LeNet,
    /// LeNet with deepcnn's from-scratch batch normalization (§5.10.3).
    LeNetBnScratch,
    /// LeNet with burn's built-in batch normalization (§5.10.4).
    LeNetBn,
    /// ResNet-18 (§5.11).
    ResNet18,
    /// DenseNet (§5.12).
    DenseNet,
}

impl ModelKind {
    pub const ALL: [ModelKind; 5] =
        [ModelKind::LeNet, ModelKind::LeNetBnScratch, ModelKind::LeNetBn, ModelKind::ResNet18, ModelKind::DenseNet];

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::LeNet => "lenet",
            ModelKind::LeNetBnScratch => "lenet-bn-scratch",
            ModelKind::LeNetBn => "lenet-bn",
            ModelKind::ResNet18 => "resnet18",
            ModelKind::DenseNet => "densenet",
        }
    }

    /// The image size trained on when no `--resize` is given: 28 (Fashion-MNIST's own), except
    /// DenseNet, which cannot take 28×28 and is trained at the book's 96×96.
    pub fn default_train_size(self) -> usize {
        match self {
            ModelKind::DenseNet => 96,
            _ => 28,
        }
    }

    /// The input size `summary` uses by default: the one the book prints the network at.
    pub fn default_summary_size(self) -> usize {
        match self {
            ModelKind::ResNet18 => 224,
            ModelKind::DenseNet => 96,
            _ => lenet::LENET_INPUT,
        }
    }

    /// Whether the network has batch normalization (all but plain LeNet).
    pub fn has_batch_norm(self) -> bool {
        self != ModelKind::LeNet
    }

    /// Checks that the network can take `size`×`size` images (at most [`MAX_IMAGE_SIZE`]).
    pub fn check_input(self, size: usize) -> Result<(), InputSizeError> {
        let ok = match self {
            ModelKind::LeNet | ModelKind::LeNetBnScratch | ModelKind::LeNetBn => size == lenet::LENET_INPUT,
            ModelKind::ResNet18 => (ResNet18::min_input()..=MAX_IMAGE_SIZE).contains(&size),
            ModelKind::DenseNet => (DenseNet::min_input()..=MAX_IMAGE_SIZE).contains(&size),
        };
        if ok {
            return Ok(());
        }
        let needs = match self {
            ModelKind::ResNet18 | ModelKind::DenseNet if size > MAX_IMAGE_SIZE => {
                format!("at most {MAX_IMAGE_SIZE}×{MAX_IMAGE_SIZE}")
            }
            ModelKind::ResNet18 => format!("at least {0}×{0}", ResNet18::min_input()),
            ModelKind::DenseNet => format!("at least {0}×{0}", DenseNet::min_input()),
            _ => format!("exactly {0}×{0}", lenet::LENET_INPUT),
        };
        Err(InputSizeError { model: self, size, needs, flag: Some("--resize") })
    }

    /// About how many bytes a training step of `batch` images of `size`×`size` needs: the
    /// layer outputs kept for the backward pass, their gradients and the convolutions'
    /// buffers, plus weights, gradients and Adam's two moments. `size` must be one the network
    /// takes ([`check_input`](Self::check_input)).
    pub fn training_memory(self, batch: usize, size: usize) -> u64 {
        let (floats, params) = self.output_floats(size);
        (batch as u64)
            .saturating_mul(floats)
            .saturating_mul(TRAINING_BYTES_PER_OUTPUT_FLOAT)
            .saturating_add(params * 4 * 4)
    }

    /// About how many bytes an evaluation-mode forward pass of `batch` images needs: oneDNN's
    /// copies of every convolution's input and output, plus the weights.
    pub fn inference_memory(self, batch: usize, size: usize) -> u64 {
        let (floats, params) = self.output_floats(size);
        (batch as u64)
            .saturating_mul(floats)
            .saturating_mul(INFERENCE_BYTES_PER_OUTPUT_FLOAT)
            .saturating_add(params * 4)
    }

    /// Bytes of all the network's values as f32: weights and batch-normalization statistics.
    /// Counted once per network (it builds one), however many files are checked against it.
    pub fn parameter_bytes(self) -> u64 {
        static COUNTED: [std::sync::OnceLock<u64>; ModelKind::ALL.len()] = [const { std::sync::OnceLock::new() }; 5];
        let index = ModelKind::ALL.iter().position(|&k| k == self).expect("every kind is in ALL");
        *COUNTED[index].get_or_init(|| Network::new(self, &Device::flex()).num_params() as u64 * 4)
    }

    /// Floats of one image's layer outputs at `size` (the summary's rows), and the number of
    /// trainable parameters.
    fn output_floats(self, size: usize) -> (u64, u64) {
        let rows = Network::new(self, &Device::flex().autodiff()).summary(size);
        let floats = rows.iter().map(|r| r.shape.iter().product::<usize>() as u64).sum();
        let params = rows.iter().map(|r| r.params as u64).sum();
        (floats, params)
    }
}

/// The largest image side any network takes: far beyond real images, and small enough that
/// no tensor size computed from it can overflow.
pub const MAX_IMAGE_SIZE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[error("{model} cannot take {size}×{size} images: it needs {needs}{}", .flag.map(|f| format!(" (see {f})")).unwrap_or_default())]
pub struct InputSizeError {
    pub model: ModelKind,
    pub size: usize,
    pub needs: String,
    /// The flag that sets the size (`--resize` for training, `--input` for summary and bench),
    /// or `None` where the size does not come from a flag (a saved run's `run.json`).
    pub flag: Option<&'static str>,
}

impl InputSizeError {
    /// The same error, pointing to `flag`, or to no flag.
    pub fn for_flag(self, flag: Option<&'static str>) -> Self {
        Self { flag, ..self }
    }
}

/// How many bytes a training step and an evaluation pass need per float of one image's layer
/// outputs (as `summary` lists them), measured as peak memory less weights and Adam's state
/// (2026-12-01, with oneDNN's convolutions, which keep blocked copies of each layer's input
/// and output between calls): training 20–27 bytes a float (resnet18 b256 at 64×64, densenet
/// b64 at 96×96), evaluation 7 (resnet18, eval with batch 2000). Rounded down, so that the
/// estimate errs on the side of running.
const TRAINING_BYTES_PER_OUTPUT_FLOAT: u64 = 20;
const INFERENCE_BYTES_PER_OUTPUT_FLOAT: u64 = 6;

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<_> = ModelKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown model '{s}' (choose one of: {})", names.join(", "))
        })
    }
}

impl From<ModelKind> for String {
    fn from(kind: ModelKind) -> String {
        kind.name().to_string()
    }
}

impl TryFrom<String> for ModelKind {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// Any of the book's networks: N×1×S×S images in, N×10 logits out.
// Moved once per training step, so its 2 KB size is immaterial next to a forward pass.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Network {
    LeNet(LeNet),
    ResNet18(ResNet18),
    DenseNet(DenseNet),
}

impl Network {
    pub fn new(kind: ModelKind, device: &Device) -> Self {
        match kind {
            ModelKind::LeNet => Network::LeNet(LeNet::new(None, device)),
            ModelKind::LeNetBnScratch => Network::LeNet(LeNet::new(Some(NormKind::Scratch), device)),
            ModelKind::LeNetBn => Network::LeNet(LeNet::new(Some(NormKind::Builtin), device)),
            ModelKind::ResNet18 => Network::ResNet18(ResNet18::new(device)),
            ModelKind::DenseNet => Network::DenseNet(DenseNet::new(device)),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_traced(x, &mut Trace::off())
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

    /// Each top-level layer's output shape and trainable parameter count for one
    /// 1×1×`size`×`size` input, as the book prints them. The network should live on an
    /// autodiff device, where trainable parameters can be told from BN's moving statistics.
    ///
    /// The shapes come from a forward pass of an empty batch (0×1×S×S), which computes and
    /// allocates nothing, so any size the network can take is summarised at no cost.
    pub fn summary(&self, size: usize) -> Vec<LayerRow> {
        let device = self.devices().into_iter().next().unwrap_or_default();
        let mut trace = Trace::on();
        self.forward_traced(Tensor::zeros([0, 1, size, size], &device), &mut trace);
        let mut rows = trace.rows();
        for row in &mut rows {
            row.shape[0] = 1;
        }
        rows
    }

    fn forward_traced(&self, x: Tensor<4>, t: &mut Trace) -> Tensor<2> {
        match self {
            Network::LeNet(net) => net.forward(x, t),
            Network::ResNet18(net) => net.forward(x, t),
            Network::DenseNet(net) => net.forward(x, t),
        }
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

    #[test]
    fn input_sizes_are_checked() {
        assert!(ModelKind::LeNetBn.check_input(28).is_ok());
        assert!(ModelKind::ResNet18.check_input(28).is_ok());
        assert!(ModelKind::DenseNet.check_input(96).is_ok());
        let err = ModelKind::DenseNet.check_input(28).unwrap_err().to_string();
        assert_eq!(err, "densenet cannot take 28×28 images: it needs at least 29×29 (see --resize)");
        let err = ModelKind::LeNet.check_input(96).unwrap_err().to_string();
        assert!(err.contains("exactly 28×28"), "{err}");
        let err = ModelKind::ResNet18.check_input(MAX_IMAGE_SIZE + 1).unwrap_err().for_flag(None).to_string();
        assert_eq!(err, "resnet18 cannot take 1048577×1048577 images: it needs at most 1048576×1048576");
    }

    #[test]
    fn model_names_round_trip() {
        for kind in ModelKind::ALL {
            assert_eq!(kind.name().parse::<ModelKind>(), Ok(kind));
        }
        let err = "resnet50".parse::<ModelKind>().unwrap_err();
        assert!(err.contains("lenet-bn-scratch") && err.contains("densenet"), "{err}");
    }
}
