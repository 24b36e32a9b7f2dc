//! A network as the book prints it: a list of named top-level stages. `forward` folds the
//! input through them; `summary` runs them one by one and records each output's shape, as the
//! book's `for name, layer in net.named_children(): X = layer(X); print(...)` does.

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;

/// What flows from stage to stage: feature maps (N×C×H×W), or feature vectors (N×F) once a
/// network has flattened them.
#[derive(Debug, Clone)]
pub enum Activations {
    Maps(Tensor<4>),
    Features(Tensor<2>),
}

impl Activations {
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Activations::Maps(x) => x.dims().to_vec(),
            Activations::Features(x) => x.dims().to_vec(),
        }
    }
}

impl From<Tensor<4>> for Activations {
    fn from(x: Tensor<4>) -> Self {
        Activations::Maps(x)
    }
}

impl From<Tensor<2>> for Activations {
    fn from(x: Tensor<2>) -> Self {
        Activations::Features(x)
    }
}

/// A stage's input: the rank it takes.
pub trait StageInput: Sized {
    fn from_activations(a: Activations) -> Option<Self>;
}

impl StageInput for Tensor<4> {
    fn from_activations(a: Activations) -> Option<Self> {
        match a {
            Activations::Maps(x) => Some(x),
            Activations::Features(_) => None,
        }
    }
}

impl StageInput for Tensor<2> {
    fn from_activations(a: Activations) -> Option<Self> {
        match a {
            Activations::Features(x) => Some(x),
            Activations::Maps(_) => None,
        }
    }
}

/// Counts a module's trained values, behind `dyn` so that stages of any layer type share one
/// list.
trait Trainable {
    fn trainable_params(&self) -> usize;
}

impl<M: Module> Trainable for M {
    fn trainable_params(&self) -> usize {
        trainable_params(self)
    }
}

type Run<'a> = Box<dyn Fn(Activations) -> Activations + 'a>;

/// One named top-level stage of a network.
pub struct Stage<'a> {
    name: String,
    layer: Option<&'a dyn Trainable>,
    run: Run<'a>,
}

impl<'a> Stage<'a> {
    /// `layer`'s stage under `name`, computing `run` (its forward, or more where deepcnn fuses
    /// the next operation into it).
    pub fn layer<M: Module, I: StageInput, O: Into<Activations>>(
        name: impl Into<String>,
        layer: &'a M,
        run: impl Fn(I) -> O + 'a,
    ) -> Self {
        Self { name: name.into(), layer: Some(layer), run: wrap(run) }
    }

    /// A stage without parameters (an activation, a pooling, flattening).
    pub fn stateless<I: StageInput, O: Into<Activations>>(name: impl Into<String>, run: impl Fn(I) -> O + 'a) -> Self {
        Self { name: name.into(), layer: None, run: wrap(run) }
    }

    /// A stage the book prints that deepcnn computes inside the stage before it (the ReLU
    /// after a batch normalization, in one pass with it): its output is its input.
    pub fn fused_into_previous(name: impl Into<String>) -> Self {
        Self { name: name.into(), layer: None, run: Box::new(|x| x) }
    }

    pub fn run(&self, x: Activations) -> Activations {
        (self.run)(x)
    }

    /// The trained values of the stage's layer (0 without one).
    pub fn trainable_params(&self) -> usize {
        self.layer.map_or(0, |l| l.trainable_params())
    }
}

fn wrap<'a, I: StageInput, O: Into<Activations>>(run: impl Fn(I) -> O + 'a) -> Run<'a> {
    Box::new(move |x: Activations| {
        // The stages' ranks are fixed where each network lists them, so a mismatch is a
        // mistake in that list, which every network's tests would meet at once.
        let x = I::from_activations(x).expect("a stage received activations of the wrong rank");
        run(x).into()
    })
}

/// The stages' names in order: those of the layers, or, for unnamed ones, their position, as
/// in a PyTorch `Sequential`.
pub fn numbered<'a>(stages: impl IntoIterator<Item = Stage<'a>>) -> Vec<Stage<'a>> {
    stages.into_iter().enumerate().map(|(i, s)| Stage { name: i.to_string(), ..s }).collect()
}

/// Runs `x` through `stages` in order.
fn fold(stages: &[Stage<'_>], x: Activations) -> Activations {
    stages.iter().fold(x, |x, stage| stage.run(x))
}

/// One printed line: a layer's name, its output shape and its trainable parameter count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRow {
    pub name: String,
    pub shape: Vec<usize>,
    pub params: usize,
}

/// Runs `x` through `stages` one at a time, recording each one's output shape.
pub fn rows(stages: &[Stage<'_>], x: Activations) -> Vec<LayerRow> {
    let mut rows = Vec::with_capacity(stages.len());
    stages.iter().fold(x, |x, stage| {
        let y = stage.run(x);
        rows.push(LayerRow { name: stage.name.clone(), shape: y.dims(), params: stage.trainable_params() });
        y
    });
    rows
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

/// The class scores of `x` through `stages`, which must end in feature vectors.
pub fn logits(stages: &[Stage<'_>], x: Tensor<4>) -> Tensor<2> {
    let out = fold(stages, x.into());
    <Tensor<2> as StageInput>::from_activations(out).expect("a network's last stage gives class scores")
}
