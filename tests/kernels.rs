//! graft's kernels (dense and depthwise convolution, max-pool, ReLU6) against burn's stock `flex`
//! ops, through burn's public API: the same outputs and the same gradients (input, weight, bias) for
//! the geometries the backbones use. The kernels' own unit tests check them against their
//! definitions; `tests/parity.rs` checks whole models through them against PyTorch. The switch is process-wide, so the tests take turns (`SWITCH`).

use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use graft::kernels;
use std::sync::Mutex;

/// `y` and the gradient of `Σ y · probe` (a random probe) with respect to `x`, flattened.
fn output_and_input_grad(x: &Tensor<4>, y: &Tensor<4>, dev: &Device) -> [Vec<f32>; 2] {
    let probe = Tensor::<4>::random(y.dims(), Distribution::Normal(0.0, 1.0), dev);
    let grads = (y.clone() * probe).sum().backward();
    let flat = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
    [
        flat(y.clone().inner()),
        flat(x.grad(&grads).expect("input grad")),
    ]
}

/// Held by each test while it flips `kernels::set_enabled`.
static SWITCH: Mutex<()> = Mutex::new(());

struct Case {
    x: [usize; 4],
    c_out: usize,
    k: usize,
    stride: usize,
    padding: [(usize, usize); 2],
    bias: bool,
    groups: usize,
}

/// Output, input gradient, weight gradient, bias gradient, all flattened.
fn run(case: &Case, graft_kernels: bool) -> [Vec<f32>; 4] {
    kernels::set_enabled(graft_kernels);
    let dev = Device::flex().autodiff();
    // The same random numbers both times.
    dev.seed(7);
    let [n, c, h, w] = case.x;
    let x = Tensor::<4>::random(case.x, Distribution::Normal(0.0, 1.0), &dev).require_grad();
    let weight = Tensor::<4>::random(
        [case.c_out, c / case.groups, case.k, case.k],
        Distribution::Normal(0.0, 0.5),
        &dev,
    )
    .require_grad();
    let bias = case.bias.then(|| {
        Tensor::<1>::random([case.c_out], Distribution::Normal(0.0, 1.0), &dev).require_grad()
    });
    let options =
        ConvOptions::new_with_padding([case.stride; 2], case.padding, [1, 1], case.groups);
    let y = kernels::conv2d(x.clone(), weight.clone(), bias.clone(), options);
    let probe = Tensor::<4>::random(y.dims(), Distribution::Normal(0.0, 1.0), &dev);
    let grads = (y.clone() * probe).sum().backward();
    let flat = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
    let out = flat(y.inner());
    let dx = flat(x.grad(&grads).expect("input grad"));
    assert_eq!(dx.len(), n * c * h * w);
    let dw = flat(weight.grad(&grads).expect("weight grad"));
    let db = bias
        .map(|b| {
            b.grad(&grads)
                .expect("bias grad")
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        })
        .unwrap_or_default();
    [out, dx, dw, db]
}

#[test]
fn graft_conv_matches_burn_conv_forward_and_backward() {
    let _turn = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let cases = [
        // ResNet stem: 7x7 stride 2 pad 3
        Case {
            x: [2, 3, 33, 31],
            c_out: 8,
            k: 7,
            stride: 2,
            padding: [(3, 3), (3, 3)],
            bias: false,
            groups: 1,
        },
        // 3x3 blocks, stride 1 and 2
        Case {
            x: [3, 6, 9, 9],
            c_out: 5,
            k: 3,
            stride: 1,
            padding: [(1, 1), (1, 1)],
            bias: true,
            groups: 1,
        },
        Case {
            x: [3, 6, 9, 8],
            c_out: 5,
            k: 3,
            stride: 2,
            padding: [(1, 1), (1, 1)],
            bias: false,
            groups: 1,
        },
        // ResNet's last stage at 32 px: 3x3 on 1x1 planes (only the centre tap is live, run as
        // a 1x1 convolution), with and without bias
        Case {
            x: [4, 6, 1, 1],
            c_out: 5,
            k: 3,
            stride: 1,
            padding: [(1, 1), (1, 1)],
            bias: true,
            groups: 1,
        },
        Case {
            x: [4, 6, 1, 1],
            c_out: 5,
            k: 3,
            stride: 2,
            padding: [(1, 1), (1, 1)],
            bias: false,
            groups: 1,
        },
        // downsample 1x1 stride 2, and pointwise 1x1 (EfficientNet)
        Case {
            x: [4, 6, 7, 7],
            c_out: 9,
            k: 1,
            stride: 2,
            padding: [(0, 0), (0, 0)],
            bias: false,
            groups: 1,
        },
        Case {
            x: [4, 6, 5, 5],
            c_out: 9,
            k: 1,
            stride: 1,
            padding: [(0, 0), (0, 0)],
            bias: true,
            groups: 1,
        },
        // TensorFlow SAME padding (asymmetric), as in EfficientNet-Lite
        Case {
            x: [2, 3, 10, 10],
            c_out: 4,
            k: 3,
            stride: 2,
            padding: [(0, 1), (0, 1)],
            bias: false,
            groups: 1,
        },
        // many small images: the last ResNet stage on CIFAR
        Case {
            x: [70, 4, 2, 2],
            c_out: 6,
            k: 3,
            stride: 2,
            padding: [(1, 1), (1, 1)],
            bias: true,
            groups: 1,
        },
        // depthwise (EfficientNet): a small plane (channels-last path) and a large one (per-plane
        // path), TF SAME padding
        Case {
            x: [3, 16, 8, 8],
            c_out: 16,
            k: 3,
            stride: 1,
            padding: [(1, 1), (1, 1)],
            bias: true,
            groups: 16,
        },
        Case {
            x: [2, 8, 40, 40],
            c_out: 8,
            k: 5,
            stride: 2,
            padding: [(1, 2), (1, 2)],
            bias: false,
            groups: 8,
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let ours = run(case, true);
        let burns = run(case, false);
        for (what, (a, b)) in ["output", "input grad", "weight grad", "bias grad"]
            .iter()
            .zip(ours.iter().zip(&burns))
        {
            assert_eq!(a.len(), b.len(), "case {i} {what}: length");
            let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let worst = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst <= 1e-5 * scale,
                "case {i} {what}: max abs diff {worst} (scale {scale})"
            );
        }
    }
    kernels::set_enabled(true);
}

/// Pooled output and input gradient.
fn run_pool(
    x: [usize; 4],
    kernel: usize,
    stride: usize,
    padding: usize,
    graft_kernels: bool,
) -> [Vec<f32>; 2] {
    kernels::set_enabled(graft_kernels);
    let dev = Device::flex().autodiff();
    dev.seed(11);
    let x = Tensor::<4>::random(x, Distribution::Normal(0.0, 1.0), &dev).require_grad();
    let y = kernels::max_pool2d(x.clone(), [kernel; 2], [stride; 2], [padding; 2]);
    output_and_input_grad(&x, &y, &dev)
}

#[test]
fn graft_max_pool_matches_burn_max_pool_forward_and_backward() {
    let _turn = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    for (x, k, s, p) in [
        ([2, 3, 9, 8], 3, 2, 1),
        ([3, 2, 6, 6], 2, 2, 0),
        ([1, 4, 5, 7], 3, 1, 1),
    ] {
        let ours = run_pool(x, k, s, p, true);
        let burns = run_pool(x, k, s, p, false);
        assert_eq!(ours[0], burns[0], "{x:?} k{k} s{s} p{p}: output");
        assert_eq!(ours[1], burns[1], "{x:?} k{k} s{s} p{p}: input grad");
    }
    kernels::set_enabled(true);
}

/// ReLU6 (or ReLU) output and input gradient.
fn run_clamp(six: bool, graft_kernels: bool) -> [Vec<f32>; 2] {
    kernels::set_enabled(graft_kernels);
    let dev = Device::flex().autodiff();
    dev.seed(13);
    let x = Tensor::<4>::random([3, 5, 7, 6], Distribution::Normal(2.0, 4.0), &dev).require_grad();
    let y = if six {
        kernels::relu6(x.clone())
    } else {
        kernels::relu(x.clone())
    };
    output_and_input_grad(&x, &y, &dev)
}

#[test]
fn graft_relu6_and_relu_match_burn_forward_and_backward() {
    let _turn = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let relu6 = [run_clamp(true, true), run_clamp(true, false)];
    let relu = [run_clamp(false, true), run_clamp(false, false)];
    kernels::set_enabled(true);
    assert!(
        relu6[0][0].contains(&0.0) && relu6[0][0].contains(&6.0),
        "both clamps exercised"
    );
    assert!(
        relu[0][0].iter().any(|v| *v > 6.0),
        "ReLU has no upper clamp"
    );
    for (name, [ours, burns]) in [("relu6", relu6), ("relu", relu)] {
        assert_eq!(ours[0], burns[0], "{name} output");
        assert_eq!(ours[1], burns[1], "{name} input grad");
    }
}

/// A frozen network's kernels on channels-last activations (convolutions with their fused
/// bias and activation, max-pool, residual add) give what burn's ops give on NCHW.
#[test]
fn channels_last_inference_matches_burn() {
    use burn::tensor::module;
    use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
    use kernels::Activation;
    let _turn = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let dev = Device::flex();
    dev.seed(21);
    let normal =
        |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &dev);
    let x = normal([2, 6, 9, 8]);
    let (w1, b1) = (
        normal([8, 6, 3, 3]),
        Tensor::<1>::random([8], Distribution::Normal(0.0, 1.0), &dev),
    );
    let (w2, b2) = (
        normal([8, 1, 3, 3]),
        Tensor::<1>::random([8], Distribution::Normal(0.0, 1.0), &dev),
    );
    let (w3, b3) = (
        normal([8, 8, 1, 1]),
        Tensor::<1>::random([8], Distribution::Normal(0.0, 1.0), &dev),
    );
    let dense = ConvOptions::new_with_padding([2, 2], [(0, 1), (1, 1)], [1, 1], 1);
    let depthwise = ConvOptions::new([1, 1], [1, 1], [1, 1], 8);
    let pointwise = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
    let ours = {
        let h = kernels::to_channels_last(x.clone());
        let h = kernels::conv2d_act(h, w1.clone(), b1.clone(), dense.clone(), Activation::Relu);
        let p = kernels::max_pool2d(h.clone(), [3, 3], [1, 1], [1, 1]);
        let d = kernels::conv2d_act(
            p.clone(),
            w2.clone(),
            b2.clone(),
            depthwise.clone(),
            Activation::Relu6,
        );
        let o = kernels::conv2d_act(
            d,
            w3.clone(),
            b3.clone(),
            pointwise.clone(),
            Activation::Identity,
        );
        kernels::relu(kernels::add(o, p))
    };
    let burns = {
        let h = burn::tensor::activation::relu(module::conv2d(x, w1, Some(b1), dense));
        let p = module::max_pool2d(
            h,
            MaxPoolOptions::new([3, 3])
                .with_stride([1, 1])
                .with_padding([1, 1]),
        );
        let d = module::conv2d(p.clone(), w2, Some(b2), depthwise).clamp(0.0, 6.0);
        let o = module::conv2d(d, w3, Some(b3), pointwise);
        burn::tensor::activation::relu(o + p)
    };
    let (ours, burns) = (
        ours.into_data().try_to_vec::<f32>().unwrap(),
        burns.into_data().try_to_vec::<f32>().unwrap(),
    );
    assert_eq!(ours.len(), burns.len());
    for (i, (a, b)) in ours.iter().zip(&burns).enumerate() {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "[{i}]: {a} vs {b}");
    }
}

/// Training-mode BatchNorm: output, batch statistics and the three gradients.
fn run_batch_norm(graft_kernels: bool) -> [Vec<f32>; 6] {
    kernels::set_enabled(graft_kernels);
    let dev = Device::flex().autodiff();
    dev.seed(17);
    let x = Tensor::<4>::random([3, 4, 5, 6], Distribution::Normal(1.0, 2.0), &dev).require_grad();
    let gamma = Tensor::<1>::random([4], Distribution::Normal(1.0, 0.5), &dev).require_grad();
    let beta = Tensor::<1>::random([4], Distribution::Normal(0.0, 0.5), &dev).require_grad();
    let out = kernels::batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5);
    let probe = Tensor::<4>::random(out.output.dims(), Distribution::Normal(0.0, 1.0), &dev);
    let grads = (out.output.clone() * probe).sum().backward();
    let flat4 = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
    let flat1 = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
    [
        flat4(out.output.inner()),
        flat1(out.mean.inner()),
        flat1(out.variance.inner()),
        flat4(x.grad(&grads).expect("input grad")),
        flat1(gamma.grad(&grads).expect("gamma grad")),
        flat1(beta.grad(&grads).expect("beta grad")),
    ]
}

#[test]
fn graft_batch_norm_matches_burn_forward_statistics_and_backward() {
    let _turn = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let ours = run_batch_norm(true);
    let burns = run_batch_norm(false);
    kernels::set_enabled(true);
    let names = [
        "output",
        "mean",
        "variance",
        "input grad",
        "gamma grad",
        "beta grad",
    ];
    for ((name, a), b) in names.iter().zip(&ours).zip(&burns) {
        assert_eq!(a.len(), b.len(), "{name}");
        for (i, (a, b)) in a.iter().zip(b).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{name}[{i}]: {a} vs {b}"
            );
        }
    }
}
