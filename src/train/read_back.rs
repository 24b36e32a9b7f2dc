//! Reading results back from the device in groups. Each read makes the host wait for the
//! device; on a GPU a read per step (or per evaluation batch) would stall every one of them,
//! since the host could not queue the next while the GPU works. The training loop and
//! evaluation keep their results on the device and read [`READ_BACK_EVERY`] at a time.

use burn::prelude::*;

/// How many steps (or evaluation batches) are read back together.
pub(crate) const READ_BACK_EVERY: usize = 16;

/// Results still on the device: per step, a float tensor (a mean loss; in evaluation followed
/// by the batch's confidences) and an int tensor (a count, or a batch's predictions), each of
/// any length.
pub(crate) type Unread = Vec<(Tensor<1>, Tensor<1, Int>)>;

/// The values of `unread`, in order, with one wait for the device per kind of tensor; empties
/// `unread`.
pub(crate) fn read_back(unread: &mut Unread) -> Vec<(Vec<f64>, Vec<i64>)> {
    if unread.is_empty() {
        return Vec::new();
    }
    let lens: Vec<[usize; 2]> = unread.iter().map(|(floats, ints)| [floats.dims()[0], ints.dims()[0]]).collect();
    let (floats, ints): (Vec<_>, Vec<_>) = std::mem::take(unread).into_iter().unzip();
    let floats = Tensor::cat(floats, 0).into_data().convert::<f64>();
    let mut floats = floats.try_to_vec::<f64>().expect("float tensor converted to f64").into_iter();
    let ints = Tensor::cat(ints, 0).into_data().convert::<i64>();
    let mut ints = ints.try_to_vec::<i64>().expect("int tensor converted to i64").into_iter();
    lens.into_iter().map(|[f, i]| (floats.by_ref().take(f).collect(), ints.by_ref().take(i).collect())).collect()
}
