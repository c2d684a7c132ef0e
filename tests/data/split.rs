//! Splits: stratified, disjoint, complete; subsets, k-fold, limits and the validation split.

use super::*;

/// Class 0: 50, class 1: 30, class 2: 20, class 3: 1, class 4: 2, interleaved.
fn skewed_labels() -> Vec<usize> {
    let mut labels = Vec::new();
    for (c, n) in [(0, 50), (1, 30), (2, 20), (3, 1), (4, 2)] {
        labels.extend(std::iter::repeat_n(c, n));
    }
    // Interleave deterministically so classes are not contiguous.
    let mut out = vec![0; labels.len()];
    for (i, l) in labels.into_iter().enumerate() {
        out[(i * 37) % 103] = l;
    }
    out
}

fn per_class(labels: &[usize], idx: &[usize]) -> BTreeMap<usize, usize> {
    let mut m = BTreeMap::new();
    for &i in idx {
        *m.entry(labels[i]).or_default() += 1;
    }
    m
}

#[test]
fn stratified_split_is_disjoint_complete_and_proportional() {
    let labels = skewed_labels();
    let (keep, held) = stratified_split(&labels, 0.2, 7);
    let k: BTreeSet<usize> = keep.iter().copied().collect();
    let h: BTreeSet<usize> = held.iter().copied().collect();
    assert!(k.is_disjoint(&h));
    assert_eq!(k.len() + h.len(), labels.len());
    assert_eq!(k.union(&h).count(), labels.len());
    assert!(keep.windows(2).all(|w| w[0] < w[1]) && held.windows(2).all(|w| w[0] < w[1]));
    // round(0.2 * n), at least 1 when n >= 2, never the whole class.
    assert_eq!(
        per_class(&labels, &held),
        BTreeMap::from([(0, 10), (1, 6), (2, 4), (4, 1)])
    );
    assert_eq!(per_class(&labels, &keep)[&3], 1);

    assert_eq!(
        stratified_split(&labels, 0.2, 7),
        (keep.clone(), held.clone())
    );
    assert_ne!(stratified_split(&labels, 0.2, 8).1, held);
    assert_eq!(stratified_split(&labels, 0.0, 7).1, Vec::<usize>::new());
}

#[test]
fn stratified_kfold_covers_everything_evenly() {
    let labels = skewed_labels();
    let folds = stratified_kfold(&labels, 5, 3);
    assert_eq!(folds.len(), 5);
    let mut seen = vec![0; labels.len()];
    for f in &folds {
        for &i in f {
            seen[i] += 1;
        }
    }
    assert!(
        seen.iter().all(|&s| s == 1),
        "every index in exactly one fold"
    );
    let sizes: Vec<usize> = folds.iter().map(Vec::len).collect();
    assert!(
        sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
        "{sizes:?}"
    );
    for (c, n) in [(0, 50), (1, 30), (2, 20), (3, 1), (4, 2)] {
        for f in &folds {
            let got = per_class(&labels, f).get(&c).copied().unwrap_or(0);
            assert!(
                got == n / 5 || got == n / 5 + 1,
                "class {c}: {got} in a fold"
            );
        }
    }
    assert_eq!(stratified_kfold(&labels, 5, 3), folds);
    assert_ne!(stratified_kfold(&labels, 5, 4), folds);
}

#[test]
fn stratified_subset_is_proportional_and_deterministic() {
    let labels = skewed_labels();
    let sub = stratified_subset(&labels, 20, 1);
    assert_eq!(sub.len(), 20);
    assert_eq!(sub.iter().collect::<BTreeSet<_>>().len(), 20);
    let counts = per_class(&labels, &sub);
    // Quotas 9.7, 5.8, 3.9, 0.2, 0.4: every class present, the big ones within one of theirs.
    assert_eq!(counts.len(), 5, "{counts:?}");
    assert!(
        (8..=10).contains(&counts[&0])
            && (5..=6).contains(&counts[&1])
            && (3..=4).contains(&counts[&2])
    );
    assert_eq!(stratified_subset(&labels, 20, 1), sub);
    assert_ne!(stratified_subset(&labels, 20, 2), sub);
    assert_eq!(stratified_subset(&labels, 500, 1).len(), labels.len());
}

pub(super) fn in_memory(labels: &[usize]) -> Arc<dyn Source> {
    // Each image is 2x2 gray with every pixel = sample index.
    let images = (0..labels.len())
        .map(|i| gray(2, 2, |_, _| i as u8))
        .collect();
    Arc::new(InMemory::new("mem", images, labels.to_vec()).unwrap())
}

#[test]
fn dataset_limits_and_val_split() {
    let labels = skewed_labels();
    let test_labels: Vec<usize> = (0..40).map(|i| i % 5).collect();
    let ds = Dataset {
        name: "mem".into(),
        class_names: (0..5).map(|c| format!("class{c}")).collect(),
        train: Subset::all(in_memory(&labels)),
        val: None,
        test: Subset::all(in_memory(&test_labels)),
    };
    let d = ds.clone().with_val_split(0.2, 5);
    let val = d.val.as_ref().unwrap();
    assert_eq!(d.class_counts(val), vec![10, 6, 4, 0, 1]);
    assert_eq!(d.class_counts(&d.train), vec![40, 24, 16, 1, 1]);
    let t: BTreeSet<usize> = d.train.indices.iter().copied().collect();
    assert!(val.indices.iter().all(|i| !t.contains(i)));
    // A second request keeps the existing validation split.
    let again = d.clone().with_val_split(0.5, 1);
    assert_eq!(again.val.as_ref().unwrap().indices, val.indices);

    let d = ds.clone().limit_train(20, 0).limit_test(10, 0);
    assert_eq!(d.train.len(), 20);
    assert_eq!(d.class_counts(&d.test), vec![2, 2, 2, 2, 2]);
    assert!(d.class_counts(&d.train).iter().all(|&c| c >= 1));
    assert_eq!(ds.clone().limit_train(20, 0).train.indices, d.train.indices);

    let s = d.summary();
    assert!(
        s.contains("class4") && s.contains("train 20") && s.contains("test 10"),
        "{s}"
    );
    close(
        &class_weights_auto(&[10, 30, 0]),
        &[40.0 / 30.0, 40.0 / 90.0, 0.0],
        1e-6,
    );
}
