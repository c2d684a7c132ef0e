//! Depthwise 2-D convolution (one k×k filter per channel, `groups == channels`) on plain `f32`
//! slices, NCHW: forward, input gradient, weight gradient.
//!
//! Each (image, channel) plane is copied once into a zero-padded buffer, after which every
//! kernel tap is a branch-free `out_row += w · in_row` over whole output rows. Those loops are
//! compiled a second time with AVX-512 enabled and picked at run time (the default build targets
//! baseline x86-64), which is what makes the small planes of transfer learning (EfficientNet at
//! 64 px has 2×2 to 32×32 planes) fast: burn's depthwise kernel pays a dispatch per row.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::conv::ConvGeometry;
use super::transpose::transpose;

/// The padded plane: enough rows and columns for every tap of every output.
fn padded_hw(g: &ConvGeometry) -> (usize, usize) {
    let (oh, ow) = g.out_hw();
    let rows = (oh - 1) * g.stride[0] + (g.kh - 1) * g.dilation[0] + 1;
    let cols = (ow - 1) * g.stride[1] + (g.kw - 1) * g.dilation[1] + 1;
    (
        rows.max(g.padding[0].0 + g.h),
        cols.max(g.padding[1].0 + g.w),
    )
}

/// Copies `src` (h×w) into `pad` (hp×wp) at the top-left padding offset, zeros elsewhere.
fn pad_plane(g: &ConvGeometry, src: &[f32], pad: &mut Vec<f32>) {
    let (hp, wp) = padded_hw(g);
    pad.clear();
    pad.resize(hp * wp, 0.0);
    let (top, left) = (g.padding[0].0, g.padding[1].0);
    for (y, row) in src.chunks(g.w).enumerate() {
        pad[(top + y) * wp + left..][..g.w].copy_from_slice(row);
    }
}

/// `dst[o] += w · src[o · stride]` for every `o`.
#[inline(always)]
fn axpy_strided(dst: &mut [f32], w: f32, src: &[f32], stride: usize) {
    if stride == 1 {
        for (d, s) in dst.iter_mut().zip(src) {
            *d += w * s;
        }
    } else {
        for (o, d) in dst.iter_mut().enumerate() {
            *d += w * src[o * stride];
        }
    }
}

/// One output plane from one padded input plane and its k×k filter.
#[inline(always)]
fn forward_plane_body(g: &ConvGeometry, pad: &[f32], filter: &[f32], bias: f32, dst: &mut [f32]) {
    let (_, ow) = g.out_hw();
    let (_, wp) = padded_hw(g);
    dst.fill(bias);
    for (oy, out_row) in dst.chunks_mut(ow).enumerate() {
        for ky in 0..g.kh {
            let row = (oy * g.stride[0] + ky * g.dilation[0]) * wp;
            for kx in 0..g.kw {
                let src = &pad[row + kx * g.dilation[1]..];
                axpy_strided(out_row, filter[ky * g.kw + kx], src, g.stride[1]);
            }
        }
    }
}

wide_simd!(fn forward_plane(g: &ConvGeometry, pad: &[f32], filter: &[f32], bias: f32, dst: &mut [f32]) = forward_plane_body);

/// One image in channels-last order: `out[oy, ox, :] = bias + Σ w[tap, :] · in[iy, ix, :]` over
/// the valid taps, vectors as long as the channel count (for small planes this beats the
/// per-plane loops, whose rows are 2–16 pixels). Each block of channels keeps its sums in
/// registers across all taps: 64 channels (four independent AVX-512 accumulators, so the adds do
/// not wait on each other), then 16, then one at a time.
#[inline(always)]
pub(super) fn forward_image_nhwc_body(
    g: &ConvGeometry,
    x: &[f32],
    w_tc: &[f32],
    bias: &[f32],
    out: &mut [MaybeUninit<f32>],
) {
    let (oh, ow) = g.out_hw();
    let c = g.c_in;
    // (input offset, weight offset) of each valid tap of the current output pixel.
    let mut taps = Vec::with_capacity(g.kh * g.kw);
    for oy in 0..oh {
        for ox in 0..ow {
            taps.clear();
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    if let Some(at) = g.tap_source(oy, ox, ky, kx) {
                        taps.push((at * c, (ky * g.kw + kx) * c));
                    }
                }
            }
            let dst = &mut out[(oy * ow + ox) * c..][..c];
            let mut c0 = 0;
            c0 = channel_blocks::<64>(x, w_tc, bias, &taps, dst, c0);
            c0 = channel_blocks::<16>(x, w_tc, bias, &taps, dst, c0);
            channel_blocks::<1>(x, w_tc, bias, &taps, dst, c0);
        }
    }
}

/// The channels `from..` of one output pixel in blocks of `V` while a whole block fits;
/// returns where it stopped.
#[inline(always)]
fn channel_blocks<const V: usize>(
    x: &[f32],
    w_tc: &[f32],
    bias: &[f32],
    taps: &[(usize, usize)],
    dst: &mut [MaybeUninit<f32>],
    from: usize,
) -> usize {
    let mut c0 = from;
    while c0 + V <= dst.len() {
        let mut acc: [f32; V] = bias[c0..c0 + V].try_into().expect("block");
        for &(src, w) in taps {
            let (s, w) = (&x[src + c0..][..V], &w_tc[w + c0..][..V]);
            for j in 0..V {
                acc[j] += w[j] * s[j];
            }
        }
        for (d, &v) in dst[c0..c0 + V].iter_mut().zip(&acc) {
            d.write(v);
        }
        c0 += V;
    }
    c0
}

wide_simd!(pub(super) fn forward_image_nhwc(g: &ConvGeometry, x: &[f32], w_tc: &[f32], bias: &[f32], out: &mut [MaybeUninit<f32>]) = forward_image_nhwc_body);

/// Backward of [`forward_image_nhwc_body`] for one image, channels-last: adds the input
/// gradient to `dx` and the weight gradient (tap-major, `[tap, channel]`) to `dw_tc`.
#[inline(always)]
fn backward_image_nhwc_body(
    g: &ConvGeometry,
    x: &[f32],
    w_tc: &[f32],
    d_out: &[f32],
    dx: &mut [f32],
    dw_tc: &mut [f32],
) {
    let (oh, ow) = g.out_hw();
    let c = g.c_in;
    for oy in 0..oh {
        for ox in 0..ow {
            let grad = &d_out[(oy * ow + ox) * c..][..c];
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let Some(at) = g.tap_source(oy, ox, ky, kx) else {
                        continue;
                    };
                    let t = (ky * g.kw + kx) * c;
                    let (w, dw) = (&w_tc[t..][..c], &mut dw_tc[t..][..c]);
                    let (dx, x) = (&mut dx[at * c..][..c], &x[at * c..][..c]);
                    for i in 0..c {
                        dx[i] += w[i] * grad[i];
                        dw[i] += grad[i] * x[i];
                    }
                }
            }
        }
    }
}

wide_simd!(fn backward_image_nhwc(g: &ConvGeometry, x: &[f32], w_tc: &[f32], d_out: &[f32], dx: &mut [f32], dw_tc: &mut [f32]) = backward_image_nhwc_body);

/// Images per task of [`backward_small_planes`]: each group's weight gradient is summed
/// separately and the groups' sums are added in order, so the result does not depend on how
/// rayon happened to schedule the tasks (a fold/reduce would, by float rounding, and training
/// runs would not repeat exactly).
const IMAGES_PER_GROUP: usize = 4;

/// Input and weight gradients at once, channels-last, for small planes: per image, transpose
/// in, accumulate, transpose the input gradient back; weight gradients summed per image group.
fn backward_small_planes(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    d_out: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let (oh, ow) = g.out_hw();
    let c = g.c_in;
    let (plane_in, plane_out) = (g.h * g.w, oh * ow);
    let (image_in, image_out) = (c * plane_in, c * plane_out);
    backward_by_image_groups(g, x, weight, d_out, || {
        let [mut x_hwc, mut grad_hwc, mut dx_hwc] =
            [image_in, image_out, image_in].map(|n| vec![0.0f32; n]);
        move |x_img: &[f32],
              grad_img: &[f32],
              w_tc: &[f32],
              dx_img: &mut [f32],
              dw_tc: &mut [f32]| {
            transpose(x_img, c, plane_in, &mut x_hwc);
            transpose(grad_img, c, plane_out, &mut grad_hwc);
            dx_hwc.fill(0.0);
            backward_image_nhwc(g, &x_hwc, w_tc, &grad_hwc, &mut dx_hwc, dw_tc);
            transpose(&dx_hwc, plane_in, c, dx_img);
        }
    })
}

/// Input and weight gradients of the depthwise convolution on channels-last activations (`x`
/// and `d_out` NHWC; the input gradient is returned NHWC): the per-image kernel of the small
/// planes without their transposes, whatever the plane size.
pub fn depthwise_backward_nhwc(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    d_out: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    check(g);
    backward_by_image_groups(g, x, weight, d_out, || {
        |x_img: &[f32], grad_img: &[f32], w_tc: &[f32], dx_img: &mut [f32], dw_tc: &mut [f32]| {
            backward_image_nhwc(g, x_img, w_tc, grad_img, dx_img, dw_tc)
        }
    })
}

/// Runs `per_image` (made once per task by `make`) over every image: (input, output gradient,
/// tap-major weight, input gradient to fill, tap-major weight gradient to add to). Images are
/// taken [`IMAGES_PER_GROUP`] per task, each group's weight gradient summed on its own and the
/// groups' sums added in order. Returns (input gradient, weight gradient `(c, 1, kh, kw)`).
fn backward_by_image_groups<F>(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    d_out: &[f32],
    make: impl Fn() -> F + Sync,
) -> (Vec<f32>, Vec<f32>)
where
    F: FnMut(&[f32], &[f32], &[f32], &mut [f32], &mut [f32]),
{
    let (oh, ow) = g.out_hw();
    let (c, taps) = (g.c_in, g.kh * g.kw);
    let (image_in, image_out) = (c * g.h * g.w, c * oh * ow);
    let mut w_tc = vec![0.0f32; taps * c];
    transpose(weight, c, taps, &mut w_tc);
    let mut dx = super::buffers::zeros(g.batch * image_in);
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(IMAGES_PER_GROUP * image_in)
        .zip(
            x.par_chunks(IMAGES_PER_GROUP * image_in)
                .zip(d_out.par_chunks(IMAGES_PER_GROUP * image_out)),
        )
        .map(|(dx_group, (x_group, grad_group))| {
            let mut dw_tc = vec![0.0f32; taps * c];
            let mut per_image = make();
            for (dx_img, (x_img, grad_img)) in dx_group
                .chunks_mut(image_in)
                .zip(x_group.chunks(image_in).zip(grad_group.chunks(image_out)))
            {
                per_image(x_img, grad_img, &w_tc, dx_img, &mut dw_tc);
            }
            dw_tc
        })
        .collect();
    let mut dw_tc = vec![0.0f32; taps * c];
    for partial in partials {
        dw_tc.iter_mut().zip(&partial).for_each(|(a, b)| *a += b);
    }
    let mut dw = vec![0.0f32; c * taps];
    transpose(&dw_tc, taps, c, &mut dw);
    (dx, dw)
}

/// Gradients with respect to the input and the weight (c, 1, kh, kw).
pub fn depthwise_backward(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    d_out: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    check(g);
    let (oh, ow) = g.out_hw();
    if oh * ow <= SMALL_PLANE {
        return backward_small_planes(g, x, weight, d_out);
    }
    (
        depthwise_backward_input(g, weight, d_out),
        depthwise_backward_weight(g, x, d_out),
    )
}

/// Output planes up to this many pixels go through the channels-last path.
const SMALL_PLANE: usize = 256;

pub(super) fn check(g: &ConvGeometry) {
    assert_eq!(g.c_in, g.c_out, "depthwise: channels in and out must match");
}

/// Forward: `x` (batch, c, h, w), `weight` (c, 1, kh, kw), optional `bias` (c).
pub fn depthwise_forward(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    check(g);
    let (oh, ow) = g.out_hw();
    let (plane_in, plane_out, taps) = (g.h * g.w, oh * ow, g.kh * g.kw);
    let mut out = vec![0.0f32; g.batch * g.c_out * plane_out];
    if plane_out <= SMALL_PLANE {
        let c = g.c_in;
        let mut w_tc = vec![0.0f32; taps * c];
        transpose(weight, c, taps, &mut w_tc);
        let zeros = vec![0.0f32; c];
        let bias = bias.unwrap_or(&zeros);
        out.par_chunks_mut(c * plane_out)
            .zip(x.par_chunks(c * plane_in))
            .for_each_init(
                || (vec![0.0f32; c * plane_in], vec![0.0f32; c * plane_out]),
                |(x_hwc, out_hwc), (dst, src)| {
                    transpose(src, c, plane_in, x_hwc);
                    // SAFETY: the kernel writes only finished values.
                    let dst_hwc = unsafe { super::buffers::as_uninit(out_hwc) };
                    forward_image_nhwc(g, x_hwc, &w_tc, bias, dst_hwc);
                    transpose(out_hwc, plane_out, c, dst);
                },
            );
        return out;
    }
    out.par_chunks_mut(plane_out)
        .zip(x.par_chunks(plane_in))
        .enumerate()
        .for_each_init(Vec::new, |pad, (bc, (dst, src))| {
            let c = bc % g.c_in;
            let b = bias.map_or(0.0, |b| b[c]);
            pad_plane(g, src, pad);
            forward_plane(g, pad, &weight[c * taps..][..taps], b, dst);
        });
    out
}

/// Gradient with respect to the input, per plane.
fn depthwise_backward_input(g: &ConvGeometry, weight: &[f32], d_out: &[f32]) -> Vec<f32> {
    check(g);
    let (oh, ow) = g.out_hw();
    let (hp, wp) = padded_hw(g);
    let (plane_in, plane_out, taps) = (g.h * g.w, oh * ow, g.kh * g.kw);
    let (top, left) = (g.padding[0].0, g.padding[1].0);
    let mut dx = vec![0.0f32; g.batch * g.c_in * plane_in];
    dx.par_chunks_mut(plane_in)
        .zip(d_out.par_chunks(plane_out))
        .enumerate()
        .for_each_init(Vec::new, |d_pad: &mut Vec<f32>, (bc, (dst, grad))| {
            let filter = &weight[(bc % g.c_in) * taps..][..taps];
            {
                d_pad.clear();
                d_pad.resize(hp * wp, 0.0);
                for (oy, grad_row) in grad.chunks(ow).enumerate() {
                    for ky in 0..g.kh {
                        let row = (oy * g.stride[0] + ky * g.dilation[0]) * wp;
                        for kx in 0..g.kw {
                            let w = filter[ky * g.kw + kx];
                            let base = row + kx * g.dilation[1];
                            if g.stride[1] == 1 {
                                for (d, s) in d_pad[base..base + ow].iter_mut().zip(grad_row) {
                                    *d += w * s;
                                }
                            } else {
                                for (o, s) in grad_row.iter().enumerate() {
                                    d_pad[base + o * g.stride[1]] += w * s;
                                }
                            }
                        }
                    }
                }
                for (y, row) in dst.chunks_mut(g.w).enumerate() {
                    row.copy_from_slice(&d_pad[(top + y) * wp + left..][..g.w]);
                }
            }
        });
    dx
}

/// Gradient with respect to the weight (c, 1, kh, kw), per channel.
fn depthwise_backward_weight(g: &ConvGeometry, x: &[f32], d_out: &[f32]) -> Vec<f32> {
    check(g);
    let (oh, ow) = g.out_hw();
    let (_, wp) = padded_hw(g);
    let (plane_in, plane_out, taps) = (g.h * g.w, oh * ow, g.kh * g.kw);
    let mut dw = vec![0.0f32; g.c_in * taps];
    dw.par_chunks_mut(taps)
        .enumerate()
        .for_each_init(Vec::new, |pad, (c, acc)| {
            for b in 0..g.batch {
                let bc = b * g.c_in + c;
                pad_plane(g, &x[bc * plane_in..][..plane_in], pad);
                let grad = &d_out[bc * plane_out..][..plane_out];
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let mut sum = 0.0f32;
                        for (oy, grad_row) in grad.chunks(ow).enumerate() {
                            let base =
                                (oy * g.stride[0] + ky * g.dilation[0]) * wp + kx * g.dilation[1];
                            for (o, s) in grad_row.iter().enumerate() {
                                sum += s * pad[base + o * g.stride[1]];
                            }
                        }
                        acc[ky * g.kw + kx] += sum;
                    }
                }
            }
        });
    dw
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::tests::{assert_adjoint, values};

    /// The definition, in f64.
    fn reference(g: &ConvGeometry, x: &[f32], w: &[f32]) -> Vec<f64> {
        let (oh, ow) = g.out_hw();
        let mut out = vec![0.0; g.batch * g.c_in * oh * ow];
        for b in 0..g.batch {
            for c in 0..g.c_in {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0.0f64;
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                if let Some(at) = g.tap_source(oy, ox, ky, kx) {
                                    acc += x[(b * g.c_in + c) * g.h * g.w + at] as f64
                                        * w[(c * g.kh + ky) * g.kw + kx] as f64;
                                }
                            }
                        }
                        out[((b * g.c_in + c) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn depthwise_matches_the_definition_and_its_adjoints() {
        let base = ConvGeometry {
            batch: 2,
            c_in: 3,
            h: 9,
            w: 8,
            c_out: 3,
            kh: 3,
            kw: 3,
            stride: [1, 1],
            padding: [(1, 1), (1, 1)],
            dilation: [1, 1],
        };
        for g in [
            base,
            ConvGeometry {
                stride: [2, 2],
                ..base
            },
            // TensorFlow SAME, as in EfficientNet-Lite: the odd pixel at the end
            ConvGeometry {
                kh: 5,
                kw: 5,
                stride: [2, 2],
                padding: [(1, 2), (1, 2)],
                ..base
            },
            ConvGeometry { h: 2, w: 2, ..base },
            // planes above SMALL_PLANE: the per-plane path
            ConvGeometry {
                h: 20,
                w: 18,
                ..base
            },
            ConvGeometry {
                h: 40,
                w: 37,
                stride: [2, 2],
                padding: [(1, 2), (1, 2)],
                ..base
            },
            ConvGeometry {
                dilation: [2, 1],
                padding: [(2, 2), (1, 1)],
                ..base
            },
        ] {
            let x = values(g.batch * g.c_in * g.h * g.w, 1);
            let w = values(g.c_in * g.kh * g.kw, 2);
            let bias = values(g.c_in, 3);
            let got = depthwise_forward(&g, &x, &w, Some(&bias));
            let want = reference(&g, &x, &w);
            let (oh, ow) = g.out_hw();
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                let b = b + bias[(i / (oh * ow)) % g.c_in] as f64;
                assert!((*a as f64 - b).abs() < 1e-5, "{g:?} at {i}: {a} vs {b}");
            }
            let d_out = values(want.len(), 4);
            let (dx, dw) = depthwise_backward(&g, &x, &w, &d_out);
            assert_adjoint(&g, &want, &d_out, (&x, &dx), (&w, &dw));
        }
    }
}
