//! The loader: complete, ordered, reproducible batches and clear errors.

use super::split::in_memory;
use super::*;

fn to_rgb_only() -> Pipeline {
    Pipeline::new(vec![Step::ToRgb]).unwrap()
}

#[test]
fn loader_visits_every_index_once() {
    let labels: Vec<usize> = (0..23).map(|i| usize::from(i >= 20)).collect();
    let subset = Subset::all(in_memory(&labels));
    for sampler in [Sampler::Sequential, Sampler::Shuffle] {
        let loader = Loader::new(subset.clone(), to_rgb_only(), 5, sampler, 9, 0);
        assert_eq!(loader.num_batches(), 5);
        let batches: Vec<Batch> = loader.map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 5);
        let mut all = Vec::new();
        for (i, b) in batches.iter().enumerate() {
            let n = if i == 4 { 3 } else { 5 };
            assert_eq!(b.shape, [n, 3, 2, 2]);
            assert_eq!(b.images.len(), n * 12);
            for (j, &idx) in b.indices.iter().enumerate() {
                // Pixel value = index, on all three channels.
                assert!(
                    b.images[j * 12..(j + 1) * 12]
                        .iter()
                        .all(|&v| v == idx as f32 / 255.0)
                );
                assert_eq!(b.labels[j], labels[idx]);
            }
            all.extend_from_slice(&b.indices);
        }
        if sampler == Sampler::Sequential {
            assert_eq!(all, (0..23).collect::<Vec<_>>());
        } else {
            assert_ne!(all, (0..23).collect::<Vec<_>>());
            all.sort();
            assert_eq!(all, (0..23).collect::<Vec<_>>());
        }
    }

    // Same (seed, epoch) → same order; another epoch → another order.
    let order =
        |epoch| Loader::new(subset.clone(), to_rgb_only(), 5, Sampler::Shuffle, 9, epoch).order();
    assert_eq!(order(1), order(1));
    assert_ne!(order(1), order(2));

    // drop_last, and indices are source indices of a non-trivial subset.
    let sub = subset.select(&[3, 5, 7, 9, 11, 13, 15]);
    let batches: Vec<Batch> = Loader::new(sub, to_rgb_only(), 3, Sampler::Sequential, 0, 0)
        .drop_last(true)
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[1].indices, vec![9, 11, 13]);

    assert!(
        Loader::new(subset, to_rgb_only(), 0, Sampler::Sequential, 0, 0)
            .next()
            .unwrap()
            .is_err()
    );
}

#[test]
fn loader_is_reproducible_with_augmentation() {
    let images: Vec<Image> = (0..40)
        .map(|i| {
            rgb(8, 8, |x, y, c| {
                ((i * 11 + x * 29 + y * 3 + c * 50) % 256) as u8
            })
        })
        .collect();
    let labels: Vec<usize> = (0..40).map(|i| i % 4).collect();
    let source: Arc<dyn Source> = Arc::new(InMemory::new("aug", images, labels).unwrap());
    let pipe = Pipeline::train(
        8,
        [0.5; 3],
        [0.25; 3],
        Augment {
            crop: true,
            flip: true,
        },
        2,
    )
    .unwrap();
    let run = |epoch| -> Vec<Batch> {
        Loader::new(
            Subset::all(source.clone()),
            pipe.clone(),
            6,
            Sampler::Shuffle,
            42,
            epoch,
        )
        .prefetch(1)
        .map(|b| b.unwrap())
        .collect()
    };
    let a = run(3);
    assert_eq!(a, run(3));
    assert_ne!(a, run(4));
    assert_eq!(a[0].shape, [6, 3, 8, 8]);

    // Stopping early is fine (the worker is shut down on drop).
    let mut l = Loader::new(Subset::all(source), pipe, 2, Sampler::Shuffle, 0, 0);
    assert!(l.next().unwrap().is_ok());
    drop(l);
}

#[test]
fn balanced_sampler_equalises_classes() {
    let labels: Vec<usize> = (0..400).map(|i| usize::from(i % 20 == 0)).collect(); // 380 vs 20
    let subset = Subset::all(in_memory(&labels));
    let mut counts = [0usize; 2];
    let mut total = 0;
    for batch in Loader::new(subset.clone(), to_rgb_only(), 64, Sampler::Balanced, 1, 0) {
        let batch = batch.unwrap();
        for &l in &batch.labels {
            counts[l] += 1;
        }
        total += batch.len();
    }
    assert_eq!(total, 400, "the epoch keeps its length");
    assert!((150..=250).contains(&counts[1]), "{counts:?}");
    let o = epoch_order(&labels, Sampler::Balanced, 1, 0);
    assert_eq!(o, epoch_order(&labels, Sampler::Balanced, 1, 0));
    assert_ne!(o, epoch_order(&labels, Sampler::Balanced, 1, 1));
}
