//! Mixup and CutMix as timm's `Mixup` applies them to a batch: each image is mixed with the
//! image at the mirrored position of the batch (the batch reversed), by a share λ drawn from
//! Beta(α, α); mixup blends whole images, CutMix pastes a box of about 1 − λ of the area (λ is
//! then set to the share the box leaves). The targets mix the same way (soft labels, smoothed
//! by the run's label smoothing), and the loss is the cross-entropy against them. With both
//! on, each batch takes one of the two at random. The draws come from the epoch's seeded
//! stream, so an epoch mixes the same way every time it is run (and resumed).

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Beta, Distribution};

/// How one batch is mixed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mix {
    /// `λ·x + (1 − λ)·x_reversed`.
    Mixup { lambda: f64 },
    /// `x` with the box (top, left, height, width) taken from `x_reversed`; λ is the share of
    /// the image outside the box.
    CutMix { lambda: f64, area: [usize; 4] },
}

impl Mix {
    /// The share of each image's own target.
    pub fn lambda(&self) -> f64 {
        match *self {
            Mix::Mixup { lambda } | Mix::CutMix { lambda, .. } => lambda,
        }
    }
}

/// The mix of one batch of `h`×`w` images: none where both α are 0, else mixup (α `mixup`) or
/// CutMix (α `cutmix`), one of the two with probability ½ each when both are on.
pub fn draw(mixup: f64, cutmix: f64, [h, w]: [usize; 2], rng: &mut StdRng) -> Option<Mix> {
    let use_cutmix = match (mixup > 0.0, cutmix > 0.0) {
        (false, false) => return None,
        (true, true) => rng.random_bool(0.5),
        (_, cutmix_only) => cutmix_only,
    };
    let alpha = if use_cutmix { cutmix } else { mixup };
    let lambda = Beta::new(alpha, alpha).expect("α was checked to be positive and finite").sample(rng);
    if !use_cutmix {
        return Some(Mix::Mixup { lambda });
    }
    // timm's rand_bbox: a box of sides √(1 − λ) of the image's, centred anywhere, clipped.
    let ratio = (1.0 - lambda).sqrt();
    let (cut_h, cut_w) = ((h as f64 * ratio) as usize, (w as f64 * ratio) as usize);
    let (cy, cx) = (rng.random_range(0..h), rng.random_range(0..w));
    let (top, bottom) = (cy.saturating_sub(cut_h / 2), (cy + cut_h / 2).min(h));
    let (left, right) = (cx.saturating_sub(cut_w / 2), (cx + cut_w / 2).min(w));
    let area = [top, left, bottom - top, right - left];
    let lambda = 1.0 - (area[2] * area[3]) as f64 / (h * w) as f64;
    Some(Mix::CutMix { lambda, area })
}

/// The mixed batch of N×C×H×W `images`.
pub fn mix_images(images: Tensor<4>, mix: Mix) -> Tensor<4> {
    let reversed = images.clone().flip([0]);
    match mix {
        Mix::Mixup { lambda } => images * lambda + reversed * (1.0 - lambda),
        Mix::CutMix { area: [top, left, height, width], .. } => {
            let [_, _, h, w] = images.dims();
            let mut mask = vec![0.0f32; h * w];
            for row in mask[top * w..(top + height) * w].chunks_exact_mut(w) {
                row[left..left + width].fill(1.0);
            }
            let mask = Tensor::<4>::from_data(TensorData::new(mask, [1, 1, h, w]), &images.device());
            images * (mask.clone().neg() + 1.0) + reversed * mask
        }
    }
}

/// The mixed soft targets of `labels` among `classes`, smoothed as PyTorch's label smoothing:
/// λ·t(y) + (1 − λ)·t(y_reversed), t(y) = (1 − α)·one-hot(y) + α/classes.
pub fn mixed_targets(labels: Tensor<1, Int>, classes: usize, lambda: f64, smoothing: f64) -> Tensor<2> {
    let target =
        |labels: Tensor<1, Int>| labels.one_hot::<2>(classes).float() * (1.0 - smoothing) + smoothing / classes as f64;
    target(labels.clone()) * lambda + target(labels.flip([0])) * (1.0 - lambda)
}

/// The mean cross-entropy of `logits` against soft `targets`: −Σ_c t_c·log softmax(z)_c.
pub fn soft_cross_entropy(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    (log_softmax(logits, 1) * targets).sum_dim(1).mean().neg()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::test_util::values;

    fn batch(device: &Device) -> Tensor<4> {
        let data: Vec<f32> = (0..3 * 16).map(|i| i as f32).collect();
        Tensor::from_data(TensorData::new(data, [3, 1, 4, 4]), device)
    }

    #[test]
    fn mixup_blends_each_image_with_the_reversed_batch() {
        let device = Device::flex();
        let mixed = values(mix_images(batch(&device), Mix::Mixup { lambda: 0.75 }));
        for (i, &v) in mixed.iter().enumerate() {
            let (n, p) = (i / 16, i % 16);
            let want = 0.75 * (n * 16 + p) as f32 + 0.25 * ((2 - n) * 16 + p) as f32;
            assert!((v - want).abs() < 1e-4, "{i}: {v} against {want}");
        }
    }

    /// CutMix replaces exactly its box by the reversed batch's pixels, and its λ is the share
    /// of the image left; draws repeat with the seed and stay in range.
    #[test]
    fn cutmix_pastes_its_box_and_lambda_is_what_is_left() {
        let device = Device::flex();
        let mix = Mix::CutMix { lambda: 0.75, area: [1, 2, 2, 2] };
        let mixed = values(mix_images(batch(&device), mix));
        for (i, &v) in mixed.iter().enumerate() {
            let (n, p) = (i / 16, i % 16);
            let inside = (1..3).contains(&(p / 4)) && (2..4).contains(&(p % 4));
            let from = if inside { 2 - n } else { n };
            assert_eq!(v, (from * 16 + p) as f32, "{i}");
        }
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let Some(Mix::CutMix { lambda, area: [t, l, h, w] }) = draw(0.0, 1.0, [28, 28], &mut rng) else {
                panic!("CutMix alone draws CutMix")
            };
            assert!(t + h <= 28 && l + w <= 28);
            assert!((lambda - (1.0 - (h * w) as f64 / 784.0)).abs() < 1e-12);
        }
        let draws =
            |seed| (0..5).map(|_| draw(0.4, 1.0, [28, 28], &mut StdRng::seed_from_u64(seed))).collect::<Vec<_>>();
        assert_eq!(draws(3), draws(3));
        assert_eq!(draw(0.0, 0.0, [28, 28], &mut StdRng::seed_from_u64(1)), None);
        let mut rng = StdRng::seed_from_u64(9);
        let kinds: Vec<bool> =
            (0..100).map(|_| matches!(draw(0.4, 1.0, [28, 28], &mut rng), Some(Mix::CutMix { .. }))).collect();
        assert!(kinds.iter().any(|&c| c) && kinds.iter().any(|&c| !c), "both on: both occur");
    }

    /// Soft targets sum to 1 per example and mix the two labels; against one-hot targets the
    /// soft cross-entropy is the plain one.
    #[test]
    fn targets_and_loss_are_timms() {
        let device = Device::flex();
        let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 2, 1], [3]), &device);
        let t = values(mixed_targets(labels.clone(), 4, 0.7, 0.1));
        for row in t.chunks(4) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        // Example 0: label 0 with 0.7, the reversed batch's label 1 with 0.3, smoothed by 0.1.
        let want = [0.7 * 0.925 + 0.3 * 0.025, 0.7 * 0.025 + 0.3 * 0.925, 0.025, 0.025];
        for (got, want) in t[..4].iter().zip(want) {
            assert!((got - want as f32).abs() < 1e-6, "{t:?}");
        }
        let logits =
            Tensor::<2>::from_floats([[1.0, -0.5, 2.0, 0.0], [0.3, 0.2, -1.0, 0.5], [2.0, 1.0, 0.0, -1.0]], &device);
        let plain = super::super::training_loss(logits.clone(), labels.clone(), 0.0);
        let soft = soft_cross_entropy(logits, mixed_targets(labels, 4, 1.0, 0.0));
        assert!((values(plain)[0] - values(soft)[0]).abs() < 1e-5);
    }
}
