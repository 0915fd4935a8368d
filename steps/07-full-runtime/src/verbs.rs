//! `pull`, `images` and `rmi`: the store's commands.

use std::io::BufRead;

use anyhow::{Context, Result};

use crate::cli::{PullArgs, RegistryArgs, RmiArgs, StoreArgs};
use crate::distribution::Credentials;
use crate::reference::Reference;
use crate::store::{self, Store};
use crate::{pull, table};

/// The pull options from the command line: credentials from $FERRY_AUTH,
/// or a password read from standard input.
pub fn pull_options(args: RegistryArgs) -> Result<pull::Options> {
    let credentials = match (args.username, std::env::var("FERRY_AUTH")) {
        (Some(user), _) => {
            let mut password = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut password)
                .context("read the password from standard input")?;
            Some(Credentials(format!(
                "{user}:{}",
                password.trim_end_matches(['\n', '\r'])
            )))
        }
        (None, Ok(auth)) if !auth.is_empty() => Some(Credentials(auth)),
        (None, _) => None,
    };
    Ok(pull::Options {
        platform: args.platform,
        insecure: args.insecure_registry,
        credentials,
        max_layer_size: args.max_layer_size,
        progress_on_stdout: false,
    })
}

pub fn pull(args: PullArgs) -> Result<()> {
    // Checked before anything else: a typo never reaches the network.
    let reference = Reference::parse(&args.image)?;
    let options = pull::Options {
        progress_on_stdout: true,
        ..pull_options(args.registry)?
    };
    let store = Store::open(&args.store.root)?;
    pull::pull(&store, &reference, &options)?;
    Ok(())
}

/// The store's images, as `docker images` lists them.
pub fn images(args: StoreArgs) -> Result<()> {
    let store = Store::open(&args.root)?;
    let mut rows = vec![vec![
        "REPOSITORY".to_owned(),
        "TAG".into(),
        "IMAGE ID".into(),
        "SIZE".into(),
    ]];
    for (name, entry) in store.repositories()? {
        let (repository, tag) = match name.rsplit_once('@') {
            Some((repository, _)) => (repository.to_owned(), "<none>".to_owned()),
            None => match name.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')) {
                Some((repository, tag)) => (repository.to_owned(), tag.to_owned()),
                None => (name.clone(), "<none>".to_owned()),
            },
        };
        let repository = repository
            .strip_prefix("docker.io/library/")
            .or_else(|| repository.strip_prefix("docker.io/"))
            .unwrap_or(&repository)
            .to_owned();
        rows.push(vec![
            repository,
            tag,
            entry.config.short().to_owned(),
            store::show_size(entry.size),
        ]);
    }
    table::print(&rows)
}

pub fn rmi(args: RmiArgs) -> Result<()> {
    // Every name is checked before any is removed.
    let references: Vec<Reference> = args
        .images
        .iter()
        .map(|image| Reference::parse(image))
        .collect::<Result<_>>()?;
    let store = Store::open(&args.store.root)?;
    for reference in references {
        let id = store.remove(&reference)?;
        println!("untagged {reference} (image {})", id.short());
    }
    Ok(())
}
