//! Prediction: class probabilities for single images.

use burn::prelude::*;
use burn::tensor::activation::softmax;

use crate::data::batcher::resize;
use crate::models::Network;

/// One of an image's most likely classes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Guess {
    pub class: String,
    pub index: usize,
    pub probability: f64,
}

/// The `k` most likely of `classes` for each image (`images`, u8 pixels in the network's
/// channel planes, each row-major, all `rows`×`cols`), most likely first. `model` is in
/// evaluation mode; `size` is the input size it was trained at, which the images are resized to.
pub fn top_k(
    model: &Network,
    images: &[Vec<u8>],
    [rows, cols]: [usize; 2],
    size: usize,
    k: usize,
    classes: &[String],
    device: &Device,
) -> Vec<Vec<Guess>> {
    if images.is_empty() {
        return Vec::new();
    }
    let pixels: Vec<f32> = images.iter().flatten().map(|&p| p as f32 / 255.0).collect();
    let shape = [images.len(), model.input_channels(), rows, cols];
    let x = Tensor::<4>::from_data(TensorData::new(pixels, shape), device);
    let x = if [rows, cols] == [size, size] { x } else { resize(x, size) };
    let probs =
        softmax(model.forward(x), 1).into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 probabilities");
    probs
        .chunks_exact(classes.len())
        .map(|row| {
            let mut order: Vec<usize> = (0..classes.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            order
                .into_iter()
                .take(k.clamp(1, classes.len()))
                .map(|i| Guess { class: classes[i].clone(), index: i, probability: row[i] as f64 })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::CLASS_NAMES;
    use crate::models::ModelKind;

    #[test]
    fn probabilities_are_sorted_and_sum_to_at_most_one() {
        let d = Device::flex();
        let model = Network::new(ModelKind::LeNetBn, &d);
        let classes: Vec<String> = CLASS_NAMES.iter().map(|c| c.to_string()).collect();
        let guesses = top_k(&model, &[vec![0; 784], vec![200; 784]], [28, 28], 28, 10, &classes, &d);
        assert_eq!(guesses.len(), 2);
        for g in &guesses {
            assert_eq!(g.len(), 10);
            assert!(g.windows(2).all(|w| w[0].probability >= w[1].probability));
            let total: f64 = g.iter().map(|x| x.probability).sum();
            assert!((total - 1.0).abs() < 1e-5, "{total}");
            assert_eq!(g[0].class, CLASS_NAMES[g[0].index]);
        }
        assert_eq!(top_k(&model, &[vec![0; 784]], [28, 28], 28, 3, &classes, &d)[0].len(), 3);
    }
}
