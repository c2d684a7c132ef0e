//! `graft weights`: the published weights graft fetches by name, whether each is in the cache,
//! and `--fetch` to download some ahead of time (before going offline, or to warm a CI cache).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use graft::weights::hub::{self, WeightsSpec};

#[derive(Args, Debug)]
pub struct WeightsArgs {
    /// Download these now (ids from the list, or `imagenet` with --model), checking each.
    #[arg(long, value_name = "ID", value_delimiter = ',')]
    fetch: Vec<String>,
    /// The model `--fetch imagenet` is for.
    #[arg(long, default_value = "resnet18")]
    model: String,
    /// graft's cache folder [default: $GRAFT_CACHE_DIR or ~/.cache/graft].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

pub fn run(args: WeightsArgs) -> Result<()> {
    let root = graft::files::cache_root(args.cache_dir.as_deref());
    if !args.fetch.is_empty() {
        for spec in &args.fetch {
            match hub::classify(spec, &args.model)? {
                WeightsSpec::Published(p) => {
                    let path = hub::fetch(&p, &root, false)?;
                    println!("{} {}", p.id, path.display());
                }
                WeightsSpec::NoImagenet { model, available } => bail!(
                    "{model} has no published ImageNet weights (these have: {})",
                    available.join(", ")
                ),
                _ => bail!("`{spec}` is not a published id (run `graft weights` for the list)"),
            }
        }
        return Ok(());
    }
    println!(
        "{:<26} {:<20} {:<9} {:<7} source",
        "id", "model", "imagenet", "cached"
    );
    for p in hub::index()? {
        let cached = hub::cached_path(&p, &root).exists();
        println!(
            "{:<26} {:<20} {:<9} {:<7} {}",
            p.id,
            p.model,
            if p.imagenet { "default" } else { "" },
            if cached { "yes" } else { "no" },
            p.source
        );
    }
    println!(
        "cache: {} (`--weights imagenet` is the default for the models marked `default`)",
        hub::weights_dir(&root).display()
    );
    Ok(())
}
