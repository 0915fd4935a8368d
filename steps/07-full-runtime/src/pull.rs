//! `pull`: manifest, config, layers, each checked against its digest, into
//! the store.

use std::io::{IsTerminal, Read};
use std::sync::Mutex;
use std::thread;

use anyhow::{Context, Result, bail, ensure};
use flate2::read::MultiGzDecoder;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::digest::{Digest, Verifier};
use crate::distribution::{Credentials, Registry};
use crate::image::{self, ConfigFile, Descriptor, Fetched, Manifest, Platform};
use crate::layer;
use crate::reference::Reference;
use crate::store::{self, Entry, Store};

/// Docker downloads three layers at a time.
const PARALLEL_DOWNLOADS: usize = 3;

pub struct Options {
    pub platform: Option<Platform>,
    pub insecure: Vec<String>,
    pub credentials: Option<Credentials>,
    /// A layer that unpacks to more is refused (a decompression bomb).
    pub max_layer_size: u64,
    /// Where the progress goes: stdout for `pull`, whose output it is (as
    /// `docker pull`'s); stderr when `run` pulls, since its stdout is the
    /// container's.
    pub progress_on_stdout: bool,
}

impl Options {
    /// One line of progress.
    fn say(&self, line: &str) {
        if self.progress_on_stdout {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

// ANCHOR: pull
/// Pulls the image into the store and returns what its name now stands for.
pub fn pull(store: &Store, reference: &Reference, options: &Options) -> Result<Entry> {
    let _store = store.lock(false)?;
    store.remove_left_behind()?;
    let registry = Registry::new(reference, &options.insecure, options.credentials.clone());
    let platform = options.platform.clone().unwrap_or_else(Platform::host);
    options.say(&format!("{reference}: pulling from {}", reference.registry));
    let (manifest_digest, manifest_bytes, manifest) =
        fetch_manifest(&registry, reference, &platform)?;
    // Every digest the manifest names is checked before any is used.
    let config_digest = manifest.config.digest()?;
    for layer in &manifest.layers {
        layer.digest()?;
    }
    let config = fetch_config(store, &registry, &manifest.config)?;
    // An image of one platform, not an index: --platform can only check it.
    if let Some(wanted) = &options.platform {
        let offered = config.platform();
        ensure!(
            offered.os.is_empty() || wanted.matches(&offered),
            "{reference} is an image for {offered}, not {wanted}"
        );
    }
    let diff_ids = config.diff_ids(manifest.layers.len())?;
    let size = fetch_layers(store, &registry, &manifest.layers, &diff_ids, options)?;
    store.write_blob(&manifest_digest, &manifest_bytes)?;
    let entry = Entry {
        manifest: manifest_digest.clone(),
        config: config_digest,
        size,
        platform: Some(config.platform()),
    };
    store.update(|all| {
        all.insert(store::key(reference), entry.clone());
    })?;
    options.say(&format!("digest: {manifest_digest}"));
    options.say(&format!(
        "pulled {reference}: image {}",
        entry.config.short()
    ));
    Ok(entry)
}
// ANCHOR_END: pull

// ANCHOR: fetch_manifest
/// The image's manifest for this platform: through its index if the name
/// leads to one. Whatever is fetched by digest is checked against it.
fn fetch_manifest(
    registry: &Registry,
    reference: &Reference,
    platform: &Platform,
) -> Result<(Digest, Vec<u8>, Manifest)> {
    let (bytes, media_type) = registry.manifest(&reference.manifest_reference())?;
    let digest = Digest::of(&bytes);
    if let Some(wanted) = &reference.digest {
        ensure!(
            digest == *wanted,
            "the registry's manifest for {reference} has the digest {digest}: corrupted or tampered with"
        );
    }
    let index = match image::read_manifest(&bytes, &media_type)? {
        Fetched::Manifest(manifest) => return Ok((digest, bytes, manifest)),
        Fetched::Index(index) => index,
    };
    let chosen = image::choose(&index, platform)?;
    let chosen_digest = chosen.digest()?;
    let (bytes, media_type) = registry.manifest(&chosen_digest.to_string())?;
    let digest = Digest::of(&bytes);
    ensure!(
        digest == chosen_digest && bytes.len() as u64 == chosen.size,
        "the registry's manifest {chosen_digest} has the digest {digest}: corrupted or tampered with"
    );
    match image::read_manifest(&bytes, &media_type)? {
        Fetched::Manifest(manifest) => Ok((digest, bytes, manifest)),
        Fetched::Index(_) => bail!("the index for {platform} leads to another index"),
    }
}
// ANCHOR_END: fetch_manifest

/// The config blob: from the store if it is there, else from the registry.
fn fetch_config(store: &Store, registry: &Registry, descriptor: &Descriptor) -> Result<ConfigFile> {
    let digest = descriptor.digest()?;
    if let Ok(bytes) = store.read_blob(&digest) {
        return ConfigFile::parse(&bytes);
    }
    let mut verifier = Verifier::new(registry.blob(&digest)?, descriptor.size, "the config");
    let mut bytes = Vec::new();
    verifier
        .read_to_end(&mut bytes)
        .context("download the config")?;
    verifier.finish(&digest)?;
    let config = ConfigFile::parse(&bytes)?;
    store.write_blob(&digest, &bytes)?;
    Ok(config)
}

/// Downloads and unpacks the layers the store lacks, three at a time.
/// Returns the size of all the image's layers, unpacked.
fn fetch_layers(
    store: &Store,
    registry: &Registry,
    layers: &[Descriptor],
    diff_ids: &[Digest],
    options: &Options,
) -> Result<u64> {
    let progress = Progress::new(options);
    let jobs: Vec<(usize, &Descriptor, &Digest)> = layers
        .iter()
        .zip(diff_ids)
        .enumerate()
        .map(|(i, (layer, diff_id))| (i, layer, diff_id))
        .collect();
    let queue = Mutex::new(jobs.into_iter());
    let results: Mutex<Vec<(usize, Result<Option<u64>>)>> = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for _ in 0..PARALLEL_DOWNLOADS.min(layers.len()) {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().expect("no worker panics holding it").next();
                    let Some((i, layer, diff_id)) = next else {
                        break;
                    };
                    let bar = progress.bar(layer);
                    let result = fetch_layer(store, registry, layer, diff_id, options, &bar);
                    progress.done(&bar, layer, &result);
                    results
                        .lock()
                        .expect("no worker panics holding it")
                        .push((i, result));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("every worker ended");
    results.sort_by_key(|(i, _)| *i);
    let mut size = 0;
    for (i, result) in results {
        progress.line(&layers[i], &result);
        match result {
            Ok(Some(bytes)) => size += bytes,
            Ok(None) => size += crate::store::layer_size(&store.layer_path(&diff_ids[i])),
            Err(error) => {
                return Err(error.context(format!("layer {}", short(&layers[i]))));
            }
        }
    }
    Ok(size)
}

// ANCHOR: fetch_layer
/// One layer: streamed from the registry through two checks, the
/// compressed blob's digest and the unpacked tar's (the config's diff_id),
/// and unpacked as it arrives into a folder of its own in tmp/, which moves
/// into place only when both digests match. Returns the unpacked size, or
/// None if the store had the layer.
fn fetch_layer(
    store: &Store,
    registry: &Registry,
    descriptor: &Descriptor,
    diff_id: &Digest,
    options: &Options,
    bar: &ProgressBar,
) -> Result<Option<u64>> {
    if store.layer_path(diff_id).is_dir() {
        return Ok(None);
    }
    let digest = descriptor.digest()?;
    let temp = store.temp()?;
    let dest = temp.path.join("layer");
    std::fs::create_dir(&dest).with_context(|| format!("create {}", dest.display()))?;
    let download = bar.wrap_read(registry.blob(&digest)?);
    let mut compressed = Verifier::new(download, descriptor.size, "the layer");
    let unpacked = {
        let tar = decompress(&descriptor.media_type, &mut compressed)?;
        let mut tar = Verifier::new(tar, options.max_layer_size, "the unpacked layer");
        layer::apply(&mut tar, &dest).and_then(|unpacked| {
            tar.finish(diff_id)?;
            Ok(unpacked)
        })
    };
    // Whatever went wrong while unpacking, bytes that are not what their
    // digest says are the cause to report: a broken gzip stream is only
    // what tampering looks like from inside.
    compressed.finish(&digest)?;
    let unpacked = unpacked?;
    store.commit_layer(&dest, diff_id)?;
    Ok(Some(unpacked.bytes))
}
// ANCHOR_END: fetch_layer

// ANCHOR: decompress
/// The layer's tar, by its media type.
fn decompress<'a>(media_type: &str, blob: &'a mut impl Read) -> Result<Box<dyn Read + 'a>> {
    let compression = media_type.rsplit(['+', '.']).next().unwrap_or_default();
    Ok(match compression {
        "gzip" => Box::new(MultiGzDecoder::new(blob)),
        "zstd" => Box::new(zstd::Decoder::new(blob).context("start zstd")?),
        "tar" => Box::new(blob),
        _ => bail!("a layer of media type {media_type:?}, which this runtime cannot unpack"),
    })
}
// ANCHOR_END: decompress

fn short(layer: &Descriptor) -> &str {
    layer
        .digest
        .strip_prefix("sha256:")
        .and_then(|hex| hex.get(..12))
        .unwrap_or(&layer.digest)
}

/// A bar per layer on a terminal; a line per layer, in order, otherwise.
struct Progress<'a> {
    bars: Option<MultiProgress>,
    options: &'a Options,
}

impl<'a> Progress<'a> {
    fn new(options: &'a Options) -> Self {
        let (terminal, target) = if options.progress_on_stdout {
            (
                std::io::stdout().is_terminal(),
                ProgressDrawTarget::stdout(),
            )
        } else {
            (
                std::io::stderr().is_terminal(),
                ProgressDrawTarget::stderr(),
            )
        };
        let bars = terminal.then(|| MultiProgress::with_draw_target(target));
        Self { bars, options }
    }

    fn bar(&self, layer: &Descriptor) -> ProgressBar {
        let Some(bars) = &self.bars else {
            return ProgressBar::hidden();
        };
        let bar = bars.add(ProgressBar::new(layer.size));
        bar.set_style(
            ProgressStyle::with_template("{prefix}: {bar:30} {binary_bytes}/{binary_total_bytes}")
                .expect("a valid template"),
        );
        bar.set_prefix(short(layer).to_owned());
        bar
    }

    fn done(&self, bar: &ProgressBar, layer: &Descriptor, result: &Result<Option<u64>>) {
        if self.bars.is_some() {
            bar.set_style(
                ProgressStyle::with_template("{prefix}: {msg}").expect("a valid template"),
            );
            bar.finish_with_message(status(layer, result));
        }
    }

    fn line(&self, layer: &Descriptor, result: &Result<Option<u64>>) {
        if self.bars.is_none() && result.is_ok() {
            self.options
                .say(&format!("{}: {}", short(layer), status(layer, result)));
        }
    }
}

fn status(layer: &Descriptor, result: &Result<Option<u64>>) -> String {
    match result {
        Ok(None) => "already here".to_owned(),
        Ok(Some(_)) => format!("pulled ({})", crate::store::show_size(layer.size)),
        Err(_) => "failed".to_owned(),
    }
}
