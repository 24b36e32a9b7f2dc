//! [`NetworkSpec`], what a network file tells the rest of deepcnn about its network, and
//! [`ModelKind`], a network of the registry ([`super::NETWORKS`]) as the command line, run
//! files and the training loop name it.

use std::fmt;
use std::str::FromStr;

use burn::prelude::*;

use super::torch_names::{split_path, TorchName};
use super::{Network, NETWORKS};

/// A network's facts, declared in its own file: adding a network is that file and one line in
/// [`super::NETWORKS`].
#[derive(Debug)]
pub struct NetworkSpec {
    /// The command-line name, also the network's name in run files.
    pub name: &'static str,
    /// The image sizes it takes.
    pub inputs: InputSizes,
    /// The image size trained on when no `--resize` is given.
    pub train_size: usize,
    /// The input size `summary` uses by default: the one the book prints the network at.
    pub summary_size: usize,
    /// Whether it has batch normalization.
    pub has_batch_norm: bool,
    /// Builds it with freshly initialised weights for images and classes of `shape`.
    pub build: fn(&Device, NetworkShape) -> Network,
    /// The PyTorch name of a tensor, from its burn module path below the network (`["stem",
    /// "conv"]`) and its name (`weight`); `None` for a path the network does not have.
    pub torch_name: fn(&[&str], &'static str) -> Option<TorchName>,
}

/// What a network's ends are sized for: the input images' channels (its first layer) and the
/// classes (its last). Fashion-MNIST's is the book's: 1 channel, 10 classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkShape {
    pub channels: usize,
    pub classes: usize,
}

impl Default for NetworkShape {
    fn default() -> Self {
        Self { channels: 1, classes: crate::data::NUM_CLASSES }
    }
}

/// The image sizes (height = width) a network takes.
#[derive(Debug, Clone, Copy)]
pub enum InputSizes {
    /// Only this size (LeNet's 28×28: its first linear layer is sized for it).
    Exactly(usize),
    /// This size or more, up to [`MAX_IMAGE_SIZE`]: a function, as the smallest size is
    /// computed from the network's layers.
    AtLeast(fn() -> usize),
}

/// One of the networks of the registry ([`super::NETWORKS`]).
#[derive(Clone, Copy)]
pub struct ModelKind(&'static NetworkSpec);

#[allow(non_upper_case_globals)]
impl ModelKind {
    /// Every network deepcnn can build, in the registry's order.
    pub const ALL: [ModelKind; NETWORKS.len()] = {
        let mut all = [ModelKind(NETWORKS[0]); NETWORKS.len()];
        let mut i = 1;
        while i < NETWORKS.len() {
            all[i] = ModelKind(NETWORKS[i]);
            i += 1;
        }
        all
    };

    // The book's networks by name, for code and tests that pick one.
    pub const LeNet: ModelKind = ModelKind(&super::lenet::PLAIN);
    pub const LeNetBnScratch: ModelKind = ModelKind(&super::lenet::BN_SCRATCH);
    pub const LeNetBn: ModelKind = ModelKind(&super::lenet::BN);
    pub const ResNet18: ModelKind = ModelKind(&super::resnet::SPEC);
    pub const DenseNet: ModelKind = ModelKind(&super::densenet::SPEC);

    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// The image size trained on when no `--resize` is given: 28 (Fashion-MNIST's own), except
    /// where the network cannot take 28×28 (DenseNet is trained at the book's 96×96).
    pub fn default_train_size(self) -> usize {
        self.0.train_size
    }

    /// The input size `summary` uses by default: the one the book prints the network at.
    pub fn default_summary_size(self) -> usize {
        self.0.summary_size
    }

    /// Whether the network has batch normalization (all but plain LeNet).
    pub fn has_batch_norm(self) -> bool {
        self.0.has_batch_norm
    }

    /// A new network of this kind, for Fashion-MNIST ([`NetworkShape::default`]).
    pub fn build(self, device: &Device) -> Network {
        self.build_for(NetworkShape::default(), device)
    }

    /// A new network of this kind for images and classes of `shape`.
    pub fn build_for(self, shape: NetworkShape, device: &Device) -> Network {
        (self.0.build)(device, shape)
    }

    /// The PyTorch key and layout of the tensor at burn path `path` (`LeNet.norm1.Builtin.gamma`)
    /// of this network.
    pub fn torch_name(self, path: &str) -> Option<TorchName> {
        let (module, tensor) = split_path(path)?;
        (self.0.torch_name)(&module, tensor)
    }

    /// Each top-level layer's output shape and trainable parameters at `size`×`size`
    /// ([`Network::summary`] of a fresh network: the counts do not depend on the weights).
    pub fn layers(self, shape: NetworkShape, size: usize) -> Vec<crate::nn::LayerRow> {
        self.build_for(shape, &Device::flex().autodiff()).summary(size)
    }

    /// Checks that the network can take `size`×`size` images (at most [`MAX_IMAGE_SIZE`]).
    pub fn check_input(self, size: usize) -> Result<(), InputSizeError> {
        let needs = match self.0.inputs {
            InputSizes::Exactly(only) if size != only => format!("exactly {only}×{only}"),
            InputSizes::AtLeast(_) if size > MAX_IMAGE_SIZE => format!("at most {MAX_IMAGE_SIZE}×{MAX_IMAGE_SIZE}"),
            InputSizes::AtLeast(min) if size < min() => format!("at least {0}×{0}", min()),
            _ => return Ok(()),
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
        static COUNTED: [std::sync::OnceLock<u64>; NETWORKS.len()] = [const { std::sync::OnceLock::new() }; _];
        let index = ModelKind::ALL.iter().position(|&k| k == self).expect("every kind is in ALL");
        *COUNTED[index].get_or_init(|| self.build(&Device::flex()).num_params() as u64 * 4)
    }

    /// Floats of one image's layer outputs at `size` (the summary's rows), and the number of
    /// trainable parameters.
    fn output_floats(self, size: usize) -> (u64, u64) {
        let rows = self.build(&Device::flex().autodiff()).summary(size);
        let floats = rows.iter().map(|r| r.shape.iter().product::<usize>() as u64).sum();
        let params = rows.iter().map(|r| r.params as u64).sum();
        (floats, params)
    }
}

/// Kinds are the same when their names are (each name is in the registry once).
impl PartialEq for ModelKind {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for ModelKind {}

impl std::hash::Hash for ModelKind {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.name.hash(state);
    }
}

impl fmt::Debug for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelKind({})", self.0.name)
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

impl serde::Serialize for ModelKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for ModelKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
