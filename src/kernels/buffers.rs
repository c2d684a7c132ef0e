//! Output buffers for the kernels: zeroed by all threads, filled without zeroing, or reused.

/// `n` zeros, written by all threads: `vec![0.0; n]` zeroes on one core (a `memset` when the
/// allocator reuses memory), which left the other idle for ~7% of a training step.
pub(crate) fn zeros(n: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let mut v: Vec<f32> = Vec::with_capacity(n);
    v.spare_capacity_mut()
        .par_chunks_mut(1 << 16)
        .for_each(|c| c.iter_mut().for_each(|x| _ = x.write(0.0)));
    // SAFETY: every element of the first `n` was written above.
    unsafe { v.set_len(n) };
    v
}

/// `n` floats, each written once by `fill` (in parallel, `chunk` elements per task): for outputs
/// that an element-wise kernel writes entirely, so that they are not zeroed first (a pass over
/// every activation that [`zeros`] would cost).
///
/// # Safety
/// `fill(first, dst)` must initialise every element of `dst` (the chunk starting at element
/// `first` of the result).
pub(crate) unsafe fn par_fill(
    n: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    use rayon::prelude::*;
    let mut v: Vec<f32> = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, dst)| fill(i * chunk.max(1), dst));
    // SAFETY: the caller's `fill` initialised every chunk, and the chunks cover 0..n.
    unsafe { v.set_len(n) };
    v
}

/// Initialised floats viewed as possibly-uninitialised ones: for an initialised buffer handed to
/// a kernel that writes into fresh memory (every element, with finished values).
///
/// # Safety
/// Only initialised values may be written through the view (never `MaybeUninit::uninit()`).
pub(crate) unsafe fn as_uninit(s: &mut [f32]) -> &mut [std::mem::MaybeUninit<f32>] {
    // SAFETY: same size and alignment; the caller writes only initialised values.
    unsafe { &mut *(s as *mut [f32] as *mut [std::mem::MaybeUninit<f32>]) }
}

/// The first `n` floats of a scratch buffer reused across the classes or chunks of one call:
/// grown (and zeroed) only when too small, so each call zeroes it at most once.
pub(crate) fn scratch(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        *buf = zeros(n);
    }
    &mut buf[..n]
}
