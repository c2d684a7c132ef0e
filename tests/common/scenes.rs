//! Small generated segmentation scenes (shapes on noise) for the segmentation tests.

use std::path::Path;

/// Side of the generated scenes.
pub const SIDE: u32 = 32;
/// Their classes, by index.
pub const CLASSES: [&str; 3] = ["background", "square", "disc"];

/// A scene on noise: a reddish square (class 1) and a greenish disc (class 2), at positions
/// drawn from `seed`; background 0. Returns (RGB pixels, mask).
pub fn scene(seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move |n: u32| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % n as u64) as u32
    };
    let (sx, sy, s) = (next(14), next(14), 10 + next(6));
    let (cx, cy, r) = (6 + next(20), 6 + next(20), 5 + next(3));
    let mut rgb = Vec::new();
    let mut mask = Vec::new();
    for y in 0..SIDE {
        for x in 0..SIDE {
            let noise = next(60) as u8;
            let in_disc =
                (x as i32 - cx as i32).pow(2) + (y as i32 - cy as i32).pow(2) <= (r * r) as i32;
            let in_square = x >= sx && x < sx + s && y >= sy && y < sy + s;
            let (px, class) = if in_disc {
                ([40 + noise / 2, 200 + noise / 2, 40], 2)
            } else if in_square {
                ([200 + noise / 2, 40 + noise / 2, 40], 1)
            } else {
                ([noise + 40, noise + 40, noise + 40], 0)
            };
            rgb.extend(px);
            mask.push(class);
        }
    }
    (rgb, mask)
}

/// `DIR/{train,test}/{images,masks}` of generated scenes and `classes.txt`.
pub fn write_scenes(dir: &Path, train: usize, test: usize) {
    for (split, n, offset) in [("train", train, 0), ("test", test, 10_000)] {
        std::fs::create_dir_all(dir.join(split).join("images")).unwrap();
        std::fs::create_dir_all(dir.join(split).join("masks")).unwrap();
        for i in 0..n {
            let (rgb, mask) = scene((offset + i) as u64);
            let name = format!("{i:04}.png");
            image::RgbImage::from_raw(SIDE, SIDE, rgb)
                .unwrap()
                .save(dir.join(split).join("images").join(&name))
                .unwrap();
            image::GrayImage::from_raw(SIDE, SIDE, mask)
                .unwrap()
                .save(dir.join(split).join("masks").join(&name))
                .unwrap();
        }
    }
    std::fs::write(dir.join("classes.txt"), CLASSES.join("\n") + "\n").unwrap();
}
