//! Matrix transpose for the channels-first ↔ channels-last conversions of the depthwise kernels.
//!
//! A plain double loop writes with a stride of `rows` floats and runs at ~0.5–1.6 ns per element
//! here; the AVX version moves 8×8 blocks through registers (unpack/shuffle/permute) at
//! ~0.1–0.3 ns. Measured on the depthwise shapes of EfficientNet-Lite0 at 64 px.

/// `src` (rows × cols, row-major) transposed into `dst` (cols × rows, row-major).
pub fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    transpose_strided(src, cols, rows, cols, dst, rows);
}

/// The `rows × cols` block of `src` (rows `src_stride` apart) transposed into the `cols × rows`
/// block of `dst` (rows `dst_stride` apart).
pub fn transpose_strided(
    src: &[f32],
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    dst_stride: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        src_stride >= cols && dst_stride >= rows,
        "transpose: strides"
    );
    assert!(
        src.len() >= (rows - 1) * src_stride + cols,
        "transpose: src too small"
    );
    assert!(
        dst.len() >= (cols - 1) * dst_stride + rows,
        "transpose: dst too small"
    );
    let b = Block {
        src_stride,
        rows,
        cols,
        dst_stride,
    };
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the feature was detected; bounds were checked above.
        unsafe { transpose_avx(src, &b, dst) };
        return;
    }
    transpose_edges(src, &b, dst, 0, 0);
}

/// The shape and strides of one transposition.
struct Block {
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst_stride: usize,
}

/// The scalar transpose of the part the 8×8 blocks left: rows `from_row..` (all columns) and,
/// above them, columns `from_col..`. `(0, 0)` transposes everything.
fn transpose_edges(src: &[f32], b: &Block, dst: &mut [f32], from_row: usize, from_col: usize) {
    for r in 0..b.rows {
        let first_col = if r < from_row { from_col } else { 0 };
        for c in first_col..b.cols {
            dst[c * b.dst_stride + r] = src[r * b.src_stride + c];
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose_avx(src: &[f32], b: &Block, dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let (rows, cols) = (b.rows, b.cols);
    let (full_rows, full_cols) = (rows / 8 * 8, cols / 8 * 8);
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    for r0 in (0..full_rows).step_by(8) {
        for c0 in (0..full_cols).step_by(8) {
            // SAFETY (loads and stores): r0 + 8 <= rows and c0 + 8 <= cols, so every 8-float
            // row read at (r0 + i) * src_stride + c0 and written at (c0 + j) * dst_stride + r0
            // lies within the extents `transpose_strided` checked.
            unsafe {
                let ld = |i: usize| _mm256_loadu_ps(sp.add((r0 + i) * b.src_stride + c0));
                let (a0, a1, a2, a3) = (ld(0), ld(1), ld(2), ld(3));
                let (a4, a5, a6, a7) = (ld(4), ld(5), ld(6), ld(7));
                let t0 = _mm256_unpacklo_ps(a0, a1);
                let t1 = _mm256_unpackhi_ps(a0, a1);
                let t2 = _mm256_unpacklo_ps(a2, a3);
                let t3 = _mm256_unpackhi_ps(a2, a3);
                let t4 = _mm256_unpacklo_ps(a4, a5);
                let t5 = _mm256_unpackhi_ps(a4, a5);
                let t6 = _mm256_unpacklo_ps(a6, a7);
                let t7 = _mm256_unpackhi_ps(a6, a7);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let st =
                    |j: usize, v: __m256| _mm256_storeu_ps(dp.add((c0 + j) * b.dst_stride + r0), v);
                st(0, _mm256_permute2f128_ps::<0x20>(u0, u4));
                st(1, _mm256_permute2f128_ps::<0x20>(u1, u5));
                st(2, _mm256_permute2f128_ps::<0x20>(u2, u6));
                st(3, _mm256_permute2f128_ps::<0x20>(u3, u7));
                st(4, _mm256_permute2f128_ps::<0x31>(u0, u4));
                st(5, _mm256_permute2f128_ps::<0x31>(u1, u5));
                st(6, _mm256_permute2f128_ps::<0x31>(u2, u6));
                st(7, _mm256_permute2f128_ps::<0x31>(u3, u7));
            }
        }
    }
    transpose_edges(src, b, dst, full_rows, full_cols);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_blocks_transpose_in_place_of_their_window() {
        // The 5×11 block at (2, 3) of a 9×20 matrix into the block at (1, 4) of a 14×12 one.
        let src: Vec<f32> = (0..9 * 20).map(|i| i as f32).collect();
        let mut dst = vec![-1.0f32; 14 * 12];
        transpose_strided(&src[2 * 20 + 3..], 20, 5, 11, &mut dst[12 + 4..], 12);
        for r in 0..14 {
            for c in 0..12 {
                let inside = (1..12).contains(&r) && (4..9).contains(&c);
                let want = if inside {
                    src[(2 + c - 4) * 20 + 3 + r - 1]
                } else {
                    -1.0
                };
                assert_eq!(dst[r * 12 + c], want, "({r}, {c})");
            }
        }
    }

    #[test]
    fn transpose_matches_the_definition_on_every_edge_case() {
        for (rows, cols) in [
            (1, 1),
            (1, 40),
            (40, 1),
            (37, 19),
            (8, 8),
            (16, 32),
            (1024, 24),
        ] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut dst = vec![f32::NAN; rows * cols];
            transpose(&src, rows, cols, &mut dst);
            let mut scalar = vec![f32::NAN; rows * cols];
            let whole = Block {
                src_stride: cols,
                rows,
                cols,
                dst_stride: rows,
            };
            transpose_edges(&src, &whole, &mut scalar, 0, 0);
            for r in 0..rows {
                for c in 0..cols {
                    let want = src[r * cols + c];
                    assert_eq!(dst[c * rows + r], want, "{rows}x{cols} at ({r}, {c})");
                    assert_eq!(
                        scalar[c * rows + r],
                        want,
                        "scalar {rows}x{cols} at ({r}, {c})"
                    );
                }
            }
        }
    }
}
