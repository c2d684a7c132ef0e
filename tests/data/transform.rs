//! Transforms: torchvision's arithmetic (bilinear resize, crops, flips, normalisation).

use super::*;

#[test]
fn bilinear_resize_matches_torch_align_corners_false() {
    // [[0,1],[2,3]] scaled by 0.2 (51/255).
    let img = gray(2, 2, |x, y| ((x + 2 * y) * 51) as u8);
    let pipe = Pipeline::new(vec![Step::Resize { w: 4, h: 4 }]).unwrap();
    let (v, shape) = pipe.apply(&img, &mut rng(0)).unwrap();
    assert_eq!(shape, [1, 4, 4]);
    #[rustfmt::skip]
    let torch = [
        0.0, 0.25, 0.75, 1.0,
        0.5, 0.75, 1.25, 1.5,
        1.5, 1.75, 2.25, 2.5,
        2.0, 2.25, 2.75, 3.0f32,
    ];
    let want: Vec<f32> = torch.iter().map(|t| t * (51.0 / 255.0)).collect();
    close(&v, &want, 1e-6);

    // Downscale 5 -> 2 along x (scale 2.5: src 0.75 and 3.25), 3 -> 3 along y (identity).
    let img = gray(5, 3, |x, y| (x * 10 + y * 100) as u8);
    let pipe = Pipeline::new(vec![Step::Resize { w: 2, h: 3 }]).unwrap();
    let (v, shape) = pipe.apply(&img, &mut rng(0)).unwrap();
    assert_eq!(shape, [1, 3, 2]);
    let want: Vec<f32> = (0..3)
        .flat_map(|y| {
            let p = |x: usize| (x * 10 + y * 100) as f32 / 255.0;
            [p(0) * 0.25 + p(1) * 0.75, p(3) * 0.75 + p(4) * 0.25]
        })
        .collect();
    close(&v, &want, 1e-6);

    // Shorter side: 4 wide x 8 high -> 2 x 4.
    let pipe = Pipeline::new(vec![Step::ResizeShorter(2)]).unwrap();
    let (_, shape) = pipe
        .apply(&gray(4, 8, |x, _| x as u8), &mut rng(0))
        .unwrap();
    assert_eq!(shape, [1, 4, 2]);
}

/// PyTorch's `upsample_bilinear2d` (align_corners=False) written out per output pixel, as in
/// `aten/src/ATen/native/UpSample.h`.
fn torch_bilinear(src: &[f32], ih: usize, iw: usize, oh: usize, ow: usize) -> Vec<f32> {
    let index = |input: usize, output: usize, d: usize| {
        let scale = input as f32 / output as f32;
        let real = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (real.floor() as usize).min(input - 1);
        let i1 = i0 + usize::from(i0 < input - 1);
        let l1 = (real - i0 as f32).clamp(0.0, 1.0);
        (i0, i1, 1.0 - l1, l1)
    };
    let mut out = Vec::with_capacity(oh * ow);
    for y in 0..oh {
        let (y0, y1, h0, h1) = index(ih, oh, y);
        for x in 0..ow {
            let (x0, x1, w0, w1) = index(iw, ow, x);
            let top = src[y0 * iw + x0] * w0 + src[y0 * iw + x1] * w1;
            let bottom = src[y1 * iw + x0] * w0 + src[y1 * iw + x1] * w1;
            out.push(top * h0 + bottom * h1);
        }
    }
    out
}

#[test]
fn separable_resize_equals_the_direct_formula() {
    let img = rgb(13, 7, |x, y, c| ((x * 37 + y * 91 + c * 17) % 256) as u8);
    let (planes, _) = no_steps().apply(&img, &mut rng(0)).unwrap();
    for (ow, oh) in [(29, 16), (5, 3), (13, 20), (40, 7), (1, 1), (6, 11)] {
        let pipe = Pipeline::new(vec![Step::Resize { w: ow, h: oh }]).unwrap();
        let (v, shape) = pipe.apply(&img, &mut rng(0)).unwrap();
        assert_eq!(shape, [3, oh, ow]);
        for c in 0..3 {
            let want = torch_bilinear(&planes[c * 91..(c + 1) * 91], 7, 13, oh, ow);
            close(&v[c * oh * ow..(c + 1) * oh * ow], &want, 1e-6);
        }
    }
}

#[test]
fn center_crop_rounds_like_torchvision_and_pads() {
    let img = gray(5, 5, |x, y| (x + 5 * y) as u8);
    // (5 - 2) / 2 = 1.5 rounds to 2 (half to even).
    let (v, _) = Pipeline::new(vec![Step::CenterCrop(2)])
        .unwrap()
        .apply(&img, &mut rng(0))
        .unwrap();
    let want: Vec<f32> = [12u8, 13, 17, 18]
        .iter()
        .map(|&p| p as f32 / 255.0)
        .collect();
    assert_eq!(v, want);
    // Smaller than the crop: zero padding, (4 - 2) / 2 = 1 on each side.
    let img = gray(2, 2, |_, _| 255);
    let (v, shape) = Pipeline::new(vec![Step::CenterCrop(4)])
        .unwrap()
        .apply(&img, &mut rng(0))
        .unwrap();
    assert_eq!(shape, [1, 4, 4]);
    #[rustfmt::skip]
    let want = vec![0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0f32];
    assert_eq!(v, want);
}

#[test]
fn random_crop_pads_with_zeros_and_keeps_size() {
    let img = gray(4, 4, |_, _| 255);
    let pipe = Pipeline::new(vec![Step::RandomCrop {
        size: 4,
        padding: 2,
    }])
    .unwrap();
    let mut offsets = BTreeSet::new();
    for seed in 0..400 {
        let (v, shape) = pipe.apply(&img, &mut rng(seed)).unwrap();
        assert_eq!(shape, [1, 4, 4]);
        // The ones form a rectangle; its position gives the offset (pad 2: offset in 0..=4).
        let ones: Vec<(usize, usize)> = (0..16)
            .filter(|&i| v[i] == 1.0)
            .map(|i| (i / 4, i % 4))
            .collect();
        assert!(v.iter().all(|&x| x == 0.0 || x == 1.0));
        let (y0, x0) = (
            ones.iter().map(|p| p.0).min().unwrap(),
            ones.iter().map(|p| p.1).min().unwrap(),
        );
        let (y1, x1) = (
            ones.iter().map(|p| p.0).max().unwrap(),
            ones.iter().map(|p| p.1).max().unwrap(),
        );
        assert_eq!(
            ones.len(),
            (y1 - y0 + 1) * (x1 - x0 + 1),
            "ones form a rectangle"
        );
        // Offset (top, left) in the padded image: rows above the image are zeros.
        let top = if y0 > 0 {
            2 - y0 as i64
        } else {
            2 + (3 - y1 as i64)
        };
        let left = if x0 > 0 {
            2 - x0 as i64
        } else {
            2 + (3 - x1 as i64)
        };
        offsets.insert((top, left));
    }
    assert_eq!(
        offsets.len(),
        25,
        "every offset in [0, 4]^2 occurs: {offsets:?}"
    );
}

#[test]
fn flip_mirrors_and_randomness_is_seeded() {
    let img = rgb(3, 2, |x, y, c| (x * 50 + y * 7 + c) as u8);
    let flip = Pipeline::new(vec![Step::RandomHorizontalFlip]).unwrap();
    let (plain, _) = no_steps().apply(&img, &mut rng(0)).unwrap();
    let mirrored: Vec<f32> = plain
        .chunks(3)
        .flat_map(|row| row.iter().rev().copied())
        .collect();
    let mut seen = [false; 2];
    for seed in 0..40 {
        let (v, _) = flip.apply(&img, &mut rng(seed)).unwrap();
        if v == plain {
            seen[0] = true;
        } else {
            assert_eq!(v, mirrored);
            seen[1] = true;
        }
    }
    assert_eq!(seen, [true, true]);

    let img = rgb(16, 12, |x, y, c| ((x * 31 + y * 17 + c * 5) % 256) as u8);
    let pipe = Pipeline::train(
        16,
        [0.4; 3],
        [0.2; 3],
        Augment {
            crop: true,
            flip: true,
        },
        4,
    )
    .unwrap();
    let a = pipe.apply(&img, &mut rng(11)).unwrap();
    let b = pipe.apply(&img, &mut rng(11)).unwrap();
    let c = pipe.apply(&img, &mut rng(12)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
    assert_eq!(a.1, [3, 16, 16]);
}

#[test]
fn pipelines_describe_and_validate() {
    let mean = [0.485, 0.456, 0.406];
    let std = [0.229, 0.224, 0.225];
    let eval = Pipeline::eval(224, mean, std, Resize::ShorterCrop).unwrap();
    assert_eq!(
        eval.steps(),
        &[
            Step::ToRgb,
            Step::ResizeShorter(256),
            Step::CenterCrop(224),
            Step::Normalize { mean, std }
        ]
    );
    let exact = Pipeline::eval(224, mean, std, Resize::Exact).unwrap();
    assert_ne!(eval.describe(), exact.describe());
    assert!(eval.describe().contains("0.485"), "{}", eval.describe());
    let other_std = Pipeline::eval(224, mean, [0.229, 0.224, 0.2251], Resize::ShorterCrop).unwrap();
    assert_ne!(eval.describe(), other_std.describe());
    assert!(err_text("squash".parse::<Resize>()).contains("squash"));
    assert!(Pipeline::eval(224, mean, [0.0, 1.0, 1.0], Resize::Exact).is_err());

    // `none` insists on the size.
    let none = Pipeline::eval(4, mean, std, Resize::None).unwrap();
    assert!(none.apply(&gray(4, 4, |_, _| 0), &mut rng(0)).is_ok());
    let e = err_text(none.apply(&gray(5, 4, |_, _| 0), &mut rng(0)));
    assert!(e.contains("5x4"), "{e}");

    // Shorter-crop on a landscape image: 8x4 -> shorter side 4 / 0.875 = 4 -> 8x4 -> crop 4x4.
    let (v, shape) = Pipeline::eval(4, [0.0; 3], [1.0; 3], Resize::ShorterCrop)
        .unwrap()
        .apply(&rgb(8, 4, |x, _, _| x as u8), &mut rng(0))
        .unwrap();
    assert_eq!(shape, [3, 4, 4]);
    assert_eq!(
        &v[..4],
        &[2.0 / 255.0, 3.0 / 255.0, 4.0 / 255.0, 5.0 / 255.0]
    );

    // output_shape predicts apply's shape; apply_into writes the same values.
    let pipes = [
        Pipeline::eval(6, mean, std, Resize::ShorterCrop).unwrap(),
        Pipeline::eval(5, mean, std, Resize::Exact).unwrap(),
        Pipeline::train(
            7,
            mean,
            std,
            Augment {
                crop: true,
                flip: true,
            },
            2,
        )
        .unwrap(),
        Pipeline::new(vec![Step::ResizeShorter(3)]).unwrap(),
    ];
    for pipe in &pipes {
        for img in [
            gray(9, 4, |x, y| (x * y) as u8),
            rgb(3, 11, |x, y, c| (x + y + c) as u8),
        ] {
            let (v, shape) = pipe.apply(&img, &mut rng(5)).unwrap();
            let predicted = pipe.output_shape(
                img.width as usize,
                img.height as usize,
                img.channels as usize,
            );
            assert_eq!(predicted.unwrap(), shape, "{}", pipe.describe());
            let mut out = vec![f32::NAN; v.len()];
            assert_eq!(pipe.apply_into(&img, &mut rng(5), &mut out).unwrap(), shape);
            assert_eq!(out, v);
            assert!(
                pipe.apply_into(&img, &mut rng(5), &mut vec![0.0; v.len() + 1])
                    .is_err()
            );
        }
    }

    // Random crop that cannot fit is an error, not a panic.
    let p = Pipeline::new(vec![Step::RandomCrop {
        size: 10,
        padding: 1,
    }])
    .unwrap();
    assert!(p.apply(&gray(4, 4, |_, _| 0), &mut rng(0)).is_err());
}

#[test]
fn auto_resize_keeps_small_images_whole() {
    let (mean, std) = ([0.0; 3], [1.0; 3]);
    let auto = Pipeline::eval(64, mean, std, Resize::Auto).unwrap();
    // A 28 px image at 64: brought to 64 whole, exactly as the exact stretch does (shorter-crop
    // would upscale to 73 and cut 4-5 px of each border).
    let small = gray(28, 28, |x, y| (x * 9 + y * 3) as u8);
    let exact = Pipeline::eval(64, mean, std, Resize::Exact).unwrap();
    let shorter = Pipeline::eval(64, mean, std, Resize::ShorterCrop).unwrap();
    let a = auto.apply(&small, &mut rng(0)).unwrap();
    assert_eq!(a, exact.apply(&small, &mut rng(0)).unwrap());
    assert_ne!(a, shorter.apply(&small, &mut rng(0)).unwrap());
    // A small landscape image keeps its aspect: shorter side to 64, the longer side cropped.
    let wide = rgb(40, 20, |x, _, _| x as u8);
    assert_eq!(auto.apply(&wide, &mut rng(0)).unwrap().1, [3, 64, 64]);
    assert_eq!(auto.output_shape(40, 20, 3).unwrap(), [3, 64, 64]);
    // An image at least the input size: the ImageNet shorter-crop, unchanged.
    let big = rgb(300, 200, |x, y, c| (x + y + c) as u8);
    assert_eq!(
        auto.apply(&big, &mut rng(0)).unwrap(),
        shorter.apply(&big, &mut rng(0)).unwrap()
    );
    assert_ne!(auto.describe(), shorter.describe());
    assert_eq!("auto".parse::<Resize>().unwrap(), Resize::Auto);
}
