//! The names the book's PyTorch modules give the networks' tensors: what each network file
//! declares (its `torch_name` in [`super::NetworkSpec`]) and [`crate::interop::pytorch`]
//! reads and writes `state_dict`s with.
//!
//! Every tensor of a deepcnn network has a burn path (`LeNet.norm1.Builtin.gamma`,
//! `ResNet18.stages.0.residuals.1.conv2.weight`); the book's PyTorch module stores it under
//! another key (`1.weight`, `resnet_block1.1.conv2.weight`). Two layouts differ: `nn.Linear`
//! keeps its weight out×in where burn keeps in×out, and the book's from-scratch BN keeps γ, β
//! and the moving statistics as 1×C (after a linear layer) or 1×C×1×1 (after a conv) where
//! deepcnn keeps C values.

/// How a tensor's PyTorch layout differs from deepcnn's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchLayout {
    Same,
    /// Linear weight: transposed.
    Transposed,
    /// From-scratch BN tensor: PyTorch adds unit dimensions around the channels.
    Channels {
        rank: usize,
    },
}

impl TorchLayout {
    /// PyTorch's shape of a tensor deepcnn holds with `shape`.
    pub fn torch_shape(self, shape: &[usize]) -> Vec<usize> {
        match self {
            TorchLayout::Same => shape.to_vec(),
            TorchLayout::Transposed => vec![shape[1], shape[0]],
            TorchLayout::Channels { rank: 2 } => vec![1, shape[0]],
            TorchLayout::Channels { .. } => vec![1, shape[0], 1, 1],
        }
    }
}

/// A tensor's PyTorch key and layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorchName {
    pub key: String,
    pub layout: TorchLayout,
}

impl TorchName {
    /// A key whose tensor has deepcnn's layout.
    pub fn same(key: String) -> Self {
        Self { key, layout: TorchLayout::Same }
    }

    /// A linear layer's tensor under `key`: its weight is transposed, its bias is not.
    pub fn linear(key: String, tensor: &str) -> Self {
        let layout = if tensor == "weight" { TorchLayout::Transposed } else { TorchLayout::Same };
        Self { key, layout }
    }
}

/// The names of the tensors a network holds: a network's `torch_name` is only asked about
/// these, so it can build its keys from `&'static str`s.
const TENSORS: [&str; 8] =
    ["weight", "bias", "gamma", "beta", "running_mean", "running_var", "moving_mean", "moving_var"];

/// The module path (below the network's own name) and the tensor name of burn path `path`
/// (`LeNet.norm1.Builtin.gamma` → `["norm1", "Builtin"]`, `gamma`); `None` for a tensor no
/// network holds.
pub fn split_path(path: &str) -> Option<(Vec<&str>, &'static str)> {
    let (_network, rest) = path.split_once('.')?;
    let (module, tensor) = rest.rsplit_once('.')?;
    let tensor = TENSORS.into_iter().find(|&t| t == tensor)?;
    Some((module.split('.').collect(), tensor))
}

/// The PyTorch name of a tensor of burn's built-in batch normalization: burn calls PyTorch's
/// weight and bias γ and β; the running statistics have the same names.
pub fn builtin_bn(tensor: &str) -> &str {
    match tensor {
        "gamma" => "weight",
        "beta" => "bias",
        other => other,
    }
}

/// `tensor`'s name in a module whose field is called `module`: a built-in batch
/// normalization's (`bn`, `bn1`, …) as [`builtin_bn`] has it, any other layer's as it is.
pub fn layer_tensor<'a>(module: &str, tensor: &'a str) -> &'a str {
    if module.starts_with("bn") {
        builtin_bn(tensor)
    } else {
        tensor
    }
}
