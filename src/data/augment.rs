//! Training-time data augmentation on the raw pixels (before any resize), like torchvision's
//! `RandomCrop(28, padding=p)`, `RandomHorizontalFlip()` and `RandomErasing(p)` (in that order).

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Augment {
    /// Random crop back to the original size after zero-padding each side by this many pixels;
    /// 0 turns it off.
    pub crop_padding: usize,
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
    /// With this probability, set a random rectangle to 0 (black), as torchvision's
    /// `RandomErasing(p, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0)`; 0 turns it off (and
    /// is what runs saved before it read as).
    #[serde(default)]
    pub erasing: f64,
}

/// The share of the image an erased rectangle covers, and its range of aspect ratios
/// (torchvision's defaults).
const ERASING_SCALE: (f64, f64) = (0.02, 0.33);
const ERASING_RATIO: (f64, f64) = (0.3, 3.3);

impl Augment {
    /// Crop and flip only: the augmentations before random erasing existed.
    pub fn crop_flip(crop_padding: usize, flip: bool) -> Self {
        Self { crop_padding, flip, erasing: 0.0 }
    }

    pub fn is_off(&self) -> bool {
        self.crop_padding == 0 && !self.flip && self.erasing == 0.0
    }

    /// One randomly cropped and/or flipped copy of the `h`×`w` image `pixels`, of `channels`
    /// planes (one draw for all of them).
    pub fn apply(&self, pixels: &[u8], [channels, h, w]: [usize; 3], rng: &mut StdRng) -> Vec<u8> {
        let p = self.crop_padding as i64;
        // Offsets of the crop window inside the padded image, relative to the original.
        let (dy, dx) = if p > 0 { (rng.random_range(-p..=p), rng.random_range(-p..=p)) } else { (0, 0) };
        let flip = self.flip && rng.random_bool(0.5);
        let mut out = vec![0u8; channels * h * w];
        // Output columns x0..x1 read source columns x0 + dx..x1 + dx; the rest is padding.
        let (x0, x1) = ((-dx).clamp(0, w as i64) as usize, (w as i64 - dx).clamp(0, w as i64) as usize);
        for (plane, out) in pixels.chunks_exact(h * w).zip(out.chunks_exact_mut(h * w)) {
            for (y, out_row) in out.chunks_exact_mut(w).enumerate() {
                let sy = y as i64 + dy;
                if !(0..h as i64).contains(&sy) || x0 >= x1 {
                    continue;
                }
                let source = &plane[sy as usize * w..][(x0 as i64 + dx) as usize..(x1 as i64 + dx) as usize];
                match flip {
                    // Column x lands at w - 1 - x.
                    true => out_row[w - x1..w - x0].iter_mut().rev().zip(source).for_each(|(o, &s)| *o = s),
                    false => out_row[x0..x1].copy_from_slice(source),
                }
            }
        }
        // Drawn only when erasing is on, so that crop and flip draw as they did before it.
        if self.erasing > 0.0 && rng.random_bool(self.erasing) {
            if let Some((top, left, eh, ew)) = erased_rectangle(h, w, rng) {
                for plane in out.chunks_exact_mut(h * w) {
                    for row in plane[top * w..(top + eh) * w].chunks_exact_mut(w) {
                        row[left..left + ew].fill(0);
                    }
                }
            }
        }
        out
    }
}

/// torchvision's `RandomErasing.get_params`: up to 10 tries at a rectangle of a random share of
/// the area and a log-uniform aspect ratio that fits the image; its top, left, height and
/// width, or `None` when no try fits.
fn erased_rectangle(h: usize, w: usize, rng: &mut StdRng) -> Option<(usize, usize, usize, usize)> {
    let area = (h * w) as f64;
    let (log_lo, log_hi) = (ERASING_RATIO.0.ln(), ERASING_RATIO.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(ERASING_SCALE.0..ERASING_SCALE.1);
        let aspect = rng.random_range(log_lo..log_hi).exp();
        let (eh, ew) = ((target * aspect).sqrt().round() as usize, (target / aspect).sqrt().round() as usize);
        if eh == 0 || ew == 0 || eh >= h || ew >= w {
            continue;
        }
        return Some((rng.random_range(0..=h - eh), rng.random_range(0..=w - ew), eh, ew));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn off_is_the_identity_and_flip_mirrors() {
        let img: Vec<u8> = (0..12).collect();
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(Augment::default().apply(&img, [1, 3, 4], &mut rng), img);
        let flip = Augment::crop_flip(0, true);
        let outs: Vec<Vec<u8>> = (0..32).map(|_| flip.apply(&img, [1, 3, 4], &mut rng)).collect();
        let mirrored: Vec<u8> = vec![3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8];
        assert!(outs.iter().all(|o| *o == img || *o == mirrored));
        assert!(outs.contains(&img) && outs.contains(&mirrored), "both outcomes occur in 32 draws");
    }

    #[test]
    fn crop_shifts_the_image_and_fills_with_zeros() {
        let img = vec![1u8; 16];
        let crop = Augment::crop_flip(2, false);
        let mut rng = StdRng::seed_from_u64(1);
        let mut saw_shift = false;
        for _ in 0..50 {
            let out = crop.apply(&img, [1, 4, 4], &mut rng);
            let ones = out.iter().filter(|&&v| v == 1).count();
            // A shift of at most 2 in each direction keeps at least a 2×2 corner.
            assert!((4..=16).contains(&ones), "{out:?}");
            assert!(out.iter().all(|&v| v == 0 || v == 1));
            saw_shift |= ones < 16;
        }
        assert!(saw_shift);
    }

    /// Erasing with p = 1 zeroes one rectangle of 2–33% of the image (ratios 0.3–3.3, so some
    /// tries fail and leave the image whole), the rest untouched; with p = 0.5 about half the
    /// images; the same seed erases the same rectangles.
    #[test]
    fn erasing_zeroes_one_rectangle_of_the_image() {
        let (h, w) = (28, 28);
        let img = vec![200u8; h * w];
        let always = Augment { erasing: 1.0, ..Augment::default() };
        let mut rng = StdRng::seed_from_u64(3);
        let mut erased = 0;
        for _ in 0..200 {
            let out = always.apply(&img, [1, h, w], &mut rng);
            let zeros: Vec<usize> = (0..h * w).filter(|&i| out[i] == 0).collect();
            assert!(out.iter().all(|&v| v == 0 || v == 200));
            if zeros.is_empty() {
                continue;
            }
            erased += 1;
            let (rows, cols): (Vec<usize>, Vec<usize>) = zeros.iter().map(|&i| (i / w, i % w)).unzip();
            let (r0, r1) = (*rows.iter().min().unwrap(), *rows.iter().max().unwrap());
            let (c0, c1) = (*cols.iter().min().unwrap(), *cols.iter().max().unwrap());
            assert_eq!(zeros.len(), (r1 - r0 + 1) * (c1 - c0 + 1), "not one rectangle");
            let share = zeros.len() as f64 / (h * w) as f64;
            assert!((0.01..=0.36).contains(&share), "{share}");
        }
        assert!(erased > 150, "only {erased} of 200 erased");
        let half = Augment { erasing: 0.5, ..Augment::default() };
        let mut rng = StdRng::seed_from_u64(4);
        let touched = (0..400).filter(|_| half.apply(&img, [1, h, w], &mut rng) != img).count();
        assert!((140..=260).contains(&touched), "{touched} of 400");
        let draw = |seed| always.apply(&img, [1, h, w], &mut StdRng::seed_from_u64(seed));
        assert_eq!(draw(9), draw(9));
    }

    /// The crop and flip pixel by pixel, as torchvision defines them: what `apply`'s row copies
    /// must equal.
    fn crop_flip_by_pixel(pixels: &[u8], [channels, h, w]: [usize; 3], dy: i64, dx: i64, flip: bool) -> Vec<u8> {
        let mut out = vec![0u8; channels * h * w];
        for c in 0..channels {
            for y in 0..h {
                for x in 0..w {
                    let (sy, sx) = (y as i64 + dy, x as i64 + dx);
                    if (0..h as i64).contains(&sy) && (0..w as i64).contains(&sx) {
                        let x_out = if flip { w - 1 - x } else { x };
                        out[(c * h + y) * w + x_out] = pixels[(c * h + sy as usize) * w + sx as usize];
                    }
                }
            }
        }
        out
    }

    #[test]
    fn crop_and_flip_move_every_pixel_where_the_definition_puts_it() {
        let shape = [3, 5, 7];
        let img: Vec<u8> = (0..105).map(|v| v as u8 + 1).collect();
        for (padding, flip) in [(0, true), (2, false), (2, true), (8, true), (8, false)] {
            let augment = Augment::crop_flip(padding, flip);
            for seed in 0..40 {
                // The draws apply makes, in its order.
                let mut rng = StdRng::seed_from_u64(seed);
                let p = padding as i64;
                let (dy, dx) = if p > 0 { (rng.random_range(-p..=p), rng.random_range(-p..=p)) } else { (0, 0) };
                let flipped = flip && rng.random_bool(0.5);
                let got = augment.apply(&img, shape, &mut StdRng::seed_from_u64(seed));
                assert_eq!(got, crop_flip_by_pixel(&img, shape, dy, dx, flipped), "shift {dy},{dx} flip {flipped}");
            }
        }
    }
}
