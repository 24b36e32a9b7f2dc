//! Recording each top-level layer's output shape during a forward pass, to print a network
//! the way the book does (`for name, layer in net.named_children(): X = layer(X); print(...)`).

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;

/// One printed line: a layer's name, its output shape and its trainable parameter count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRow {
    pub name: String,
    pub shape: Vec<usize>,
    pub params: usize,
}

/// Collects [`LayerRow`]s when enabled; a disabled trace records (and counts) nothing.
#[derive(Debug, Default)]
pub struct Trace {
    rows: Option<Vec<LayerRow>>,
}

impl Trace {
    /// A trace that records nothing (the normal forward pass).
    pub fn off() -> Self {
        Self { rows: None }
    }

    /// A trace that records every layer.
    pub fn on() -> Self {
        Self { rows: Some(Vec::new()) }
    }

    /// Records the output `x` of `layer`, named by its position as in a PyTorch `Sequential`.
    pub fn layer<const D: usize, M: Module>(&mut self, x: &Tensor<D>, layer: &M) {
        self.push(None, x, || trainable_params(layer));
    }

    /// Records the output `x` of a layer without parameters (activation, pooling, flatten).
    pub fn stateless<const D: usize>(&mut self, x: &Tensor<D>) {
        self.push(None, x, || 0);
    }

    /// Records the output `x` of `layer` under `name`.
    pub fn named<const D: usize, M: Module>(&mut self, name: &str, x: &Tensor<D>, layer: &M) {
        self.push(Some(name), x, || trainable_params(layer));
    }

    /// Records the output `x` of a parameter-free layer under `name`.
    pub fn named_stateless<const D: usize>(&mut self, name: &str, x: &Tensor<D>) {
        self.push(Some(name), x, || 0);
    }

    /// Counting parameters walks the module, so it only happens when recording.
    fn push<const D: usize>(&mut self, name: Option<&str>, x: &Tensor<D>, params: impl FnOnce() -> usize) {
        if let Some(rows) = &mut self.rows {
            let name = name.map_or_else(|| rows.len().to_string(), str::to_string);
            rows.push(LayerRow { name, shape: x.dims().to_vec(), params: params() });
        }
    }

    pub fn rows(self) -> Vec<LayerRow> {
        self.rows.unwrap_or_default()
    }
}

/// Number of trained values in `module`, PyTorch's `sum(p.numel() for p in m.parameters())`.
/// burn's `num_params` also counts saved-but-untrained state (BN moving statistics); those
/// never require a gradient, so on an autodiff device they are told apart by that.
pub fn trainable_params<M: Module>(module: &M) -> usize {
    struct Count(usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.val().is_require_grad() {
                self.0 += param.shape().num_elements();
            }
        }
    }
    let mut count = Count(0);
    module.visit(&mut count);
    count.0
}
