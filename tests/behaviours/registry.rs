//! Step 06 behaviours: images pulled from a real registry (Debian's
//! docker-registry, the reference implementation) that the test starts in
//! its network lab, behind a proxy of the test's that counts requests and
//! can serve what no honest registry would. Images are built by hand
//! (`ferry_tests::oci`), hostile layers included.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use ferry_tests::oci::{self, Compression, Format, Image};
use ferry_tests::registry_lab::{self, Auth, RegistryLab};
use ferry_tests::run::Outcome;
use ferry_tests::scratch::Scratch;
use serde_json::json;
use tar::EntryType;

use crate::check::{Ctx, Tree, expect_error, listing, same_tree, snapshot};
use crate::{Behaviour, Kind::Feature};

pub const BEHAVIOURS: &[Behaviour] = &[
    Behaviour {
        name: "runs_an_image_with_its_layers_stacked",
        hint: "run IMAGE pulls it, then stacks its layers as overlay lower directories: a whiteout hides a lower file, an opaque directory hides a lower directory's entries (book: Step 06 › Whiteouts)",
        since: 6,
        kind: Feature,
        check: runs_an_image_with_its_layers_stacked,
    },
    Behaviour {
        name: "reads_docker_v2s2_manifests",
        hint: "the Docker schema 2 manifest and its media types, as well as OCI's (book: Step 06 › What an image is)",
        since: 6,
        kind: Feature,
        check: reads_docker_v2s2_manifests,
    },
    Behaviour {
        name: "honours_the_image_config",
        hint: "Entrypoint + Cmd (COMMAND replaces Cmd, --entrypoint clears it), Env and -e, WorkingDir and -w, User (a name from the image's /etc/passwd) and -u (book: Step 06 › The image's config)",
        since: 6,
        kind: Feature,
        check: honours_the_image_config,
    },
    Behaviour {
        name: "chooses_the_platform_from_an_index",
        hint: "from an index, the manifest of this machine's platform; --platform picks another (book: Step 06 › Indexes and platforms)",
        since: 6,
        kind: Feature,
        check: chooses_the_platform_from_an_index,
    },
    Behaviour {
        name: "authenticates_with_a_token_for_the_scope",
        hint: "a 401's Bearer challenge: a token from the realm for repository:NAME:pull, then the request again with it; a repository the token does not cover is refused (book: Step 06 › The token dance)",
        since: 6,
        kind: Feature,
        check: authenticates_with_a_token_for_the_scope,
    },
    Behaviour {
        name: "logs_in_without_telling",
        hint: "credentials from $FERRY_AUTH or --username with --password-stdin go to the token service as Basic auth, and appear in no output and no file of the store (book: Step 06 › The token dance)",
        since: 6,
        kind: Feature,
        check: logs_in_without_telling,
    },
    Behaviour {
        name: "an_image_in_use_stays",
        hint: "rmi refuses an image whose layers a running container holds (a shared lock on each layer), and removes it once the container is gone (book: Step 06 › The store)",
        since: 6,
        kind: Feature,
        check: an_image_in_use_stays,
    },
    Behaviour {
        name: "refuses_a_tampered_blob",
        hint: "every blob is hashed as it streams in and checked against its digest; a mismatch fails the pull and leaves nothing of it in the store (book: Step 06 › Digests name content)",
        since: 6,
        kind: Feature,
        check: refuses_a_tampered_blob,
    },
    Behaviour {
        name: "refuses_schema_1",
        hint: "a schema 1 manifest (the format Bocker and Mocker read, retired by registries) is refused with a message that says so (book: Step 06 › What an image is)",
        since: 6,
        kind: Feature,
        check: refuses_schema_1,
    },
    Behaviour {
        name: "refuses_layers_that_write_outside",
        hint: "a layer's ../ and absolute names, symlinks and hardlinks that lead out, a symlinked '.', a whiteout through a symlink: refused, nothing written outside the layer, nothing left in the store (book: Step 06 › What goes wrong)",
        since: 6,
        kind: Feature,
        check: refuses_layers_that_write_outside,
    },
    Behaviour {
        name: "keeps_devices_and_setuid_files_inside",
        hint: "device nodes and setuid files in a layer are kept, as Docker keeps them, inside the layer (book: Step 06 › What goes wrong)",
        since: 6,
        kind: Feature,
        check: keeps_devices_and_setuid_files_inside,
    },
    Behaviour {
        name: "says_when_an_image_has_too_many_layers_to_mount",
        hint: "mount(2) takes its options in one page: an image whose lower directories do not fit gets a clear error, not a mount cut short (book: Step 06 › What ferry leaves out)",
        since: 6,
        kind: Feature,
        check: says_when_an_image_has_too_many_layers_to_mount,
    },
    Behaviour {
        name: "refuses_a_decompression_bomb",
        hint: "a layer that unpacks past the size limit is refused, and nothing of it stays (book: Step 06 › What goes wrong)",
        since: 6,
        kind: Feature,
        check: refuses_a_decompression_bomb,
    },
    Behaviour {
        name: "refuses_a_digest_that_is_a_path",
        hint: "a digest is checked to be sha256: and 64 hex digits before it names any file: sha256:../../x writes nothing (CVE-2024-3727) (book: Step 06 › Digests name content)",
        since: 6,
        kind: Feature,
        check: refuses_a_digest_that_is_a_path,
    },
    Behaviour {
        name: "a_second_pull_fetches_only_the_manifest",
        hint: "layers and configs already in the store are not downloaded again: a second pull asks for the manifest alone (book: Step 06 › The store)",
        since: 6,
        kind: Feature,
        check: a_second_pull_fetches_only_the_manifest,
    },
    Behaviour {
        name: "pulls_at_once_share_the_store",
        hint: "two pulls of one image at the same time both succeed and leave one copy of each layer, nothing half-written (book: Step 06 › The store)",
        since: 6,
        kind: Feature,
        check: pulls_at_once_share_the_store,
    },
    Behaviour {
        name: "rmi_keeps_layers_another_image_uses",
        hint: "images lists what is stored; rmi removes an image and the layers no other image uses; a shared layer stays until its last image goes (book: Step 06 › The store)",
        since: 6,
        kind: Feature,
        check: rmi_keeps_layers_another_image_uses,
    },
    Behaviour {
        name: "rejects_bad_references_offline",
        hint: "UPPER/case, a:b:c, name@sha256:short, an empty name: exit 125 with an \"invalid reference format\" error, before any request (book: Step 06 › Image references)",
        since: 6,
        kind: Feature,
        check: rejects_bad_references_offline,
    },
];

const ADDRESS: &str = RegistryLab::ADDRESS;

impl Ctx {
    /// A registry of the test's own in its network lab.
    fn registry(&self, auth: Auth) -> Result<RegistryLab> {
        RegistryLab::start(self.net()?, auth)
    }

    /// A registry in the lab holding one demo image: the lab, what was
    /// pushed, and the image's reference.
    fn registry_with(
        &self,
        name_tag: &str,
        build: registry_lab::Build,
    ) -> Result<(RegistryLab, oci::LayoutDigests, String)> {
        let lab = self.registry(Auth::Anonymous)?;
        let digests = lab.push(name_tag, &build(&self.rootfs)?, Format::Oci)?;
        Ok((lab, digests, reference(name_tag)))
    }

    /// `stepNN rmi --root STATE IMAGE`.
    fn rmi(&self, image: &str) -> Result<Outcome> {
        self.runtime()
            .args(["rmi", "--root"])
            .args([self.state.path()])
            .args([image])
            .output()
    }

    /// `stepNN pull --root STATE ARGS...`.
    fn pull(&self, args: &[&str]) -> Result<Outcome> {
        self.runtime()
            .args(["pull", "--root"])
            .args([self.state.path()])
            .args(args)
            .output()
    }

    /// `stepNN run OPTIONS IMAGE COMMAND...`.
    fn run_image(&self, image: &str, options: &[&str], command: &[&str]) -> Result<Outcome> {
        self.run_with_rootfs(Path::new(image), options, command)
            .output()
    }

    /// What `images` prints.
    fn images(&self) -> Result<String> {
        let outcome = self
            .runtime()
            .args(["images", "--root"])
            .args([self.state.path()])
            .output()?;
        ensure!(outcome.status == 0, "images failed:\n{outcome}");
        Ok(outcome.stdout)
    }

    /// Nothing a container made is left under --root: only the store.
    fn nothing_under_root_but_images(&self) -> Result<()> {
        let left = listing(self.state.path())?;
        ensure!(left == "images\n", "left under --root: {left}");
        Ok(())
    }

    /// The unpacked layers in the store, by diff_id hex.
    fn stored_layers(&self) -> Result<String> {
        listing(&self.state.join("images/layers"))
    }

    /// Nothing half-made in the store's tmp/, and no name that stands for an image.
    fn store_holds_no_image(&self) -> Result<()> {
        let tmp = listing(&self.state.join("images/tmp"))?;
        ensure!(tmp.is_empty(), "left in the store's tmp/: {tmp}");
        let images = self.images()?;
        ensure!(
            images.lines().count() == 1,
            "the store names images:\n{images}"
        );
        Ok(())
    }
}

fn reference(name: &str) -> String {
    format!("{ADDRESS}/{name}")
}

/// A pull failed: 125, and one line `error: …mention…` on stderr (its
/// stdout has the progress lines from before the failure, as `docker
/// pull`'s has).
fn expect_pull_error(outcome: &Outcome, mention: &str) -> Result<()> {
    let line = outcome.stderr.strip_suffix('\n').unwrap_or(&outcome.stderr);
    ensure!(
        outcome.status == 125
            && line.starts_with("error: ")
            && !line.contains('\n')
            && line.contains(mention),
        "expected status 125 and one line \"error: …{mention}…\" on stderr; got\n{outcome}"
    );
    Ok(())
}

/// The run succeeded with exactly this on stdout (stderr has the pull's lines).
fn expect_stdout(outcome: &Outcome, stdout: &str) -> Result<()> {
    ensure!(
        outcome.status == 0 && outcome.stdout == stdout,
        "expected status 0 and stdout {stdout:?}; got\n{outcome}"
    );
    Ok(())
}

fn runs_an_image_with_its_layers_stacked(ctx: &Ctx) -> Result<()> {
    let (_lab, _, image) = ctx.registry_with(registry_lab::LAYERED, registry_lab::layered)?;
    let script = "test -e /etc/motd && echo motd is there; ls /srv/data; cat /srv/keep";
    // Not in the store: run pulls it first.
    expect_stdout(
        &ctx.run_image(&image, &[], &["sh", "-c", script])?,
        "c\nkept\n",
    )?;
    // The container's writes land in its own layer, never in the image's.
    expect_stdout(
        &ctx.run_image(
            &image,
            &[],
            &["sh", "-c", "echo new > /srv/keep; rm /srv/data/c"],
        )?,
        "",
    )?;
    expect_stdout(
        &ctx.run_image(&image, &[], &["sh", "-c", script])?,
        "c\nkept\n",
    )
}

fn reads_docker_v2s2_manifests(ctx: &Ctx) -> Result<()> {
    let lab = ctx.registry(Auth::Anonymous)?;
    lab.push(
        "ferry/layers-v2s2:latest",
        &registry_lab::layered(&ctx.rootfs)?,
        Format::DockerV2s2,
    )?;
    expect_stdout(
        &ctx.run_image(
            &reference("ferry/layers-v2s2:latest"),
            &[],
            &[
                "sh",
                "-c",
                "test -e /etc/motd && echo motd is there; ls /srv/data",
            ],
        )?,
        "c\n",
    )
}

fn honours_the_image_config(ctx: &Ctx) -> Result<()> {
    let (_lab, _, image) = ctx.registry_with(registry_lab::CONFIGURED, registry_lab::configured)?;
    // Entrypoint then Cmd; a COMMAND replaces Cmd only.
    expect_stdout(&ctx.run_image(&image, &[], &[])?, "entrypoint: from cmd\n")?;
    expect_stdout(
        &ctx.run_image(&image, &[], &["given", "here"])?,
        "entrypoint: given here\n",
    )?;
    let probe = "id -u; id -g; pwd; echo $GREETING; echo $HOME";
    // --entrypoint replaces the entrypoint and drops Cmd; the rest of the
    // config holds: user app (from the image's /etc/passwd), its home,
    // the working directory, the image's Env.
    expect_stdout(
        &ctx.run_image(&image, &["--entrypoint", "/bin/sh"], &["-c", probe])?,
        "1000\n1000\n/home/app\nhello from the image\n/home/app\n",
    )?;
    // And each option overrides its part of the config.
    expect_stdout(
        &ctx.run_image(
            &image,
            &[
                "--entrypoint",
                "/bin/sh",
                "-e",
                "GREETING=from -e",
                "-w",
                "/tmp/made",
                "-u",
                "0:0",
            ],
            &["-c", probe],
        )?,
        "0\n0\n/tmp/made\nfrom -e\n/root\n",
    )?;
    expect_error(
        &ctx.run_image(&image, &["-u", "nobody-here"], &[])?,
        125,
        "nobody-here",
    )
}

fn chooses_the_platform_from_an_index(ctx: &Ctx) -> Result<()> {
    ensure!(
        std::env::consts::ARCH == "x86_64",
        "this check's index offers amd64 as the host's platform; this machine is {}",
        std::env::consts::ARCH
    );
    let (lab, _, image) =
        ctx.registry_with(registry_lab::TWO_PLATFORMS, registry_lab::two_platforms)?;
    expect_stdout(
        &ctx.run_image(&image, &[], &["cat", "/platform"])?,
        "linux/amd64\n",
    )?;
    // The image's other platform (its busybox is this machine's, so it runs).
    let pulled = ctx.pull(&["--platform", "linux/arm64", &image])?;
    ensure!(pulled.status == 0, "pull --platform failed:\n{pulled}");
    expect_stdout(
        &ctx.run_image(&image, &[], &["cat", "/platform"])?,
        "linux/arm64/v8\n",
    )?;
    // run --platform with the other one stored: pulled again, as Docker does.
    expect_stdout(
        &ctx.run_image(
            &image,
            &["--platform", "linux/amd64"],
            &["cat", "/platform"],
        )?,
        "linux/amd64\n",
    )?;
    expect_pull_error(
        &ctx.pull(&["--platform", "linux/s390x", &image])?,
        "linux/s390x",
    )?;
    // An image of one platform, no index: --platform checks it.
    lab.push(
        registry_lab::WORKSHOP,
        &registry_lab::workshop(&ctx.rootfs)?,
        Format::Oci,
    )?;
    expect_pull_error(
        &ctx.pull(&[
            "--platform",
            "linux/s390x",
            &reference(registry_lab::WORKSHOP),
        ])?,
        "not linux/s390x",
    )
}

fn authenticates_with_a_token_for_the_scope(ctx: &Ctx) -> Result<()> {
    let lab = ctx.registry(Auth::Token {
        anonymous_pull: &["ferry/busybox"],
    })?;
    let workshop = registry_lab::workshop(&ctx.rootfs)?;
    lab.push(registry_lab::WORKSHOP, &workshop, Format::Oci)?;
    lab.push("ferry/private:latest", &workshop, Format::Oci)?;
    let pulled = ctx.pull(&[&reference(registry_lab::WORKSHOP)])?;
    ensure!(pulled.status == 0, "pull with a token failed:\n{pulled}");
    let issuer = lab.issuer().context("a token registry has an issuer")?;
    ensure!(
        issuer.saw_scope("repository:ferry/busybox:pull"),
        "the issuer was never asked for repository:ferry/busybox:pull; it saw {:?}",
        issuer.requests()
    );
    expect_pull_error(
        &ctx.pull(&[&reference("ferry/private:latest")])?,
        "ferry/private",
    )
}

fn logs_in_without_telling(ctx: &Ctx) -> Result<()> {
    let lab = ctx.registry(Auth::Token {
        anonymous_pull: &[],
    })?;
    lab.push(
        "ferry/private:latest",
        &registry_lab::workshop(&ctx.rootfs)?,
        Format::Oci,
    )?;
    let image = reference("ferry/private:latest");
    expect_pull_error(&ctx.pull(&[&image])?, "ferry/private")?;
    let (user, password) = ferry_tests::registry::PUSHER
        .split_once(':')
        .context("user:password")?;
    let with_env = ctx
        .runtime()
        .env("FERRY_AUTH", ferry_tests::registry::PUSHER)
        .args(["pull", "--root"])
        .args([ctx.state.path()])
        .args([&image])
        .output()?;
    let with_stdin = ctx
        .runtime()
        .args(["pull", "--username", user, "--password-stdin", "--root"])
        .args([ctx.state.path()])
        .args([&image])
        .stdin(format!("{password}\n"))
        .output()?;
    for outcome in [&with_env, &with_stdin] {
        ensure!(
            outcome.status == 0,
            "a pull with credentials failed:\n{outcome}"
        );
        ensure!(
            !outcome.stdout.contains(password) && !outcome.stderr.contains(password),
            "the password was printed:\n{outcome}"
        );
    }
    let issuer = lab.issuer().context("a token registry has an issuer")?;
    ensure!(
        issuer
            .requests()
            .iter()
            .any(|request| request.authorization),
        "the issuer never saw credentials: {:?}",
        issuer.requests()
    );
    let grep = std::process::Command::new("grep")
        // Not in the layers: "secret" is a word busybox's binary holds.
        .args(["-rl", "--exclude-dir=layers", password])
        .arg(ctx.state.path())
        .output()?;
    ensure!(
        grep.stdout.is_empty(),
        "the password is in the store: {}",
        String::from_utf8_lossy(&grep.stdout)
    );
    Ok(())
}

fn an_image_in_use_stays(ctx: &Ctx) -> Result<()> {
    let (_lab, _, image) = ctx.registry_with(registry_lab::WORKSHOP, registry_lab::workshop)?;
    let pulled = ctx.pull(&[&image])?;
    ensure!(pulled.status == 0, "pull failed:\n{pulled}");

    let mut running = ctx
        .run_with_rootfs(
            Path::new(&image),
            &[],
            &["sh", "-c", "echo ready; read line || true"],
        )
        .hold_stdin()
        .spawn()?;
    running.wait_for_line("ready")?;
    let refused = ctx.rmi(&image)?;
    running.close_stdin();
    let ended = running.finish()?;
    ensure!(ended.status == 0, "the container failed:\n{ended}");
    expect_error(&refused, 125, "in use")?;
    let removed = ctx.rmi(&image)?;
    ensure!(
        removed.status == 0,
        "rmi after the container ended failed:\n{removed}"
    );
    ctx.store_holds_no_image()
}

fn refuses_a_tampered_blob(ctx: &Ctx) -> Result<()> {
    let (lab, digests, _) = ctx.registry_with(registry_lab::WORKSHOP, registry_lab::workshop)?;
    // A manifest asked for by digest must be the one the digest names.
    let manifest = &digests.images[0].manifest;
    let by_digest = format!("{}@{manifest}", reference("ferry/busybox"));
    let path = format!("/v2/ferry/busybox/manifests/{manifest}");
    // Well-formed, naming the image's own blobs, but not those bytes.
    let altered = json!({
        "schemaVersion": 2,
        "mediaType": oci::MANIFEST,
        "config": { "mediaType": oci::CONFIG, "digest": digests.images[0].config, "size": 1 },
        "layers": [{ "mediaType": oci::LAYER_GZIP, "digest": digests.images[0].layers[0], "size": 1 }],
    });
    lab.proxy().serve(
        &path,
        200,
        &[("Content-Type", oci::MANIFEST)],
        serde_json::to_vec(&altered)?,
    );
    expect_pull_error(&ctx.pull(&[&by_digest])?, "digest")?;
    ctx.store_holds_no_image()?;
    // A layer whose bytes are not its digest's.
    let layer = &digests.images[0].layers[0];
    lab.registry().tamper_blob(layer)?;
    expect_pull_error(&ctx.pull(&[&reference(registry_lab::WORKSHOP)])?, "digest")?;
    ctx.store_holds_no_image()?;
    let layers = ctx.stored_layers()?;
    ensure!(layers.is_empty(), "the store kept layers: {layers}");
    Ok(())
}

fn refuses_schema_1(ctx: &Ctx) -> Result<()> {
    let lab = ctx.registry(Auth::Anonymous)?;
    let manifest = json!({
        "schemaVersion": 1,
        "name": "ferry/old",
        "tag": "latest",
        "architecture": "amd64",
        "fsLayers": [],
        "history": [],
    });
    lab.proxy().serve(
        "/v2/ferry/old/manifests/latest",
        200,
        &[(
            "Content-Type",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
        )],
        serde_json::to_vec(&manifest)?,
    );
    expect_pull_error(&ctx.pull(&[&reference("ferry/old:latest")])?, "schema 1")?;
    ctx.store_holds_no_image()
}

/// A directory beside the store, standing for the host: hostile layers aim
/// at it, and it must not change.
struct Sentinel {
    scratch: Scratch,
    before: Tree,
}

impl Sentinel {
    fn new() -> Result<Self> {
        let scratch = Scratch::new("sentinel")?;
        std::fs::write(scratch.join("victim"), "the host's\n")?;
        std::fs::create_dir(scratch.join("dir"))?;
        let before = snapshot(scratch.path())?;
        Ok(Self { scratch, before })
    }

    /// Its absolute path, as bytes for a tar header.
    fn path(&self) -> Vec<u8> {
        self.scratch.path().as_os_str().as_encoded_bytes().to_vec()
    }

    fn untouched(&self) -> Result<()> {
        same_tree(&self.before, &snapshot(self.scratch.path())?)
            .context("the directory beside the store changed")
    }
}

/// One entry of a hand-made layer, with any name at all.
fn entry(
    builder: &mut tar::Builder<Vec<u8>>,
    kind: EntryType,
    path: &[u8],
    link: Option<&[u8]>,
    mode: u32,
) -> Result<()> {
    let data: &[u8] = if kind == EntryType::Regular {
        b"pwned\n"
    } else {
        b""
    };
    oci::raw_entry(builder, kind, path, link, mode, data)
}

/// An entry to write: kind, name, link target, mode.
type Entry<'a> = (EntryType, &'a [u8], Option<&'a [u8]>, u32);

/// A layer of these entries.
fn layer(entries: &[Entry]) -> Result<Vec<u8>> {
    oci::tar_layer(|builder| {
        for (kind, path, link, mode) in entries {
            entry(builder, *kind, path, *link, *mode)?;
        }
        Ok(())
    })
}

/// The hostile layers: (what, the tar).
fn hostile_layers(sentinel: &Sentinel) -> Result<Vec<(&'static str, Vec<u8>)>> {
    use EntryType::{Directory, Link, Regular, Symlink};
    let abs = sentinel.path();
    let join = |a: &[u8], b: &[u8]| [a, b].concat();
    // From a layer's folder (STORE/images/tmp/ID/layer) up to the folder
    // that holds the scratch folders: five levels.
    let sentinel_name = sentinel
        .scratch
        .path()
        .file_name()
        .expect("a scratch has a name")
        .as_encoded_bytes()
        .to_vec();
    let climb = join(b"../../../../../", &sentinel_name);
    let (climb_victim, abs_victim) = (join(&climb, b"/victim"), join(&abs, b"/victim"));
    let through_root = join(b"root", &join(&abs, b"/dir/new"));
    Ok(vec![
        (
            "a ../ name",
            layer(&[(Regular, &climb_victim, None, 0o644)])?,
        ),
        (
            "an absolute name",
            layer(&[(Regular, &abs_victim, None, 0o644)])?,
        ),
        (
            "a symlink, then a file through it",
            layer(&[
                (Symlink, b"link", Some(&abs), 0o777),
                (Regular, b"link/victim", None, 0o644),
            ])?,
        ),
        (
            "a symlink to /, then a directory through it",
            layer(&[
                (Symlink, b"root", Some(b"/"), 0o777),
                (Directory, &through_root, None, 0o4777),
            ])?,
        ),
        (
            "a hardlink to a file outside",
            layer(&[(Link, b"stolen", Some(&abs_victim), 0o644)])?,
        ),
        (
            "a hardlink up and out",
            layer(&[(Link, b"stolen", Some(&climb_victim), 0o644)])?,
        ),
        (
            "a hardlink to what is not there yet",
            layer(&[
                (Link, b"early", Some(b"later"), 0o644),
                (Regular, b"later", None, 0o644),
            ])?,
        ),
        (
            "a '.' that is a symlink",
            layer(&[
                (Symlink, b".", Some(&abs), 0o777),
                (Regular, b"victim", None, 0o644),
            ])?,
        ),
        (
            "a whiteout through a symlink",
            layer(&[
                (Symlink, b"link", Some(&abs), 0o777),
                (Regular, b"link/.wh.victim", None, 0o644),
            ])?,
        ),
    ])
}

fn refuses_layers_that_write_outside(ctx: &Ctx) -> Result<()> {
    let lab = ctx.registry(Auth::Anonymous)?;
    let sentinel = Sentinel::new()?;
    let mut failures = Vec::new();
    for (i, (what, layer)) in hostile_layers(&sentinel)?.into_iter().enumerate() {
        let name = format!("ferry/hostile-{i}:latest");
        let mut image = Image::new(vec![layer]);
        image.layers[0].1 = Compression::None;
        lab.push(&name, &[image], Format::Oci)?;
        let outcome = ctx.pull(&[&reference(&name)])?;
        let checks = expect_pull_error(&outcome, "layer")
            .and_then(|()| sentinel.untouched())
            .and_then(|()| ctx.store_holds_no_image())
            .and_then(|()| {
                let layers = ctx.stored_layers()?;
                ensure!(layers.is_empty(), "the store kept layers: {layers}");
                Ok(())
            });
        if let Err(error) = checks {
            failures.push(format!("{what}: {error:#}"));
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

fn keeps_devices_and_setuid_files_inside(ctx: &Ctx) -> Result<()> {
    let lab = ctx.registry(Auth::Anonymous)?;
    let special = oci::tar_layer(|b| {
        let mut null = oci::raw_header(EntryType::Char, b"srv/null-from-layer", None, 0o666, 0)?;
        null.set_device_major(1)?;
        null.set_device_minor(3)?;
        null.set_cksum();
        b.append(&null, &b""[..])?;
        entry(b, EntryType::Regular, b"bin/setuid-program", None, 0o4755)
    })?;
    let mut image = Image::new(vec![oci::dir_layer(&ctx.rootfs)?, special]);
    image.config = json!({ "Env": [oci::PATH], "Cmd": ["/bin/sh"] });
    lab.push("ferry/special:latest", &[image], Format::Oci)?;
    expect_stdout(
        &ctx.run_image(
            &reference("ferry/special:latest"),
            &[],
            &[
                "stat",
                "-c",
                "%F %t:%T %a",
                "/srv/null-from-layer",
                "/bin/setuid-program",
            ],
        )?,
        "character special file 1:3 666\nregular file 0:0 4755\n",
    )
}

fn says_when_an_image_has_too_many_layers_to_mount(ctx: &Ctx) -> Result<()> {
    let lab = ctx.registry(Auth::Anonymous)?;
    // Each lower directory is --root's path and 64 hex digits: some 150
    // bytes here, so 40 of them overflow the page.
    let mut layers = vec![oci::dir_layer(&ctx.rootfs)?];
    for i in 1..40 {
        let name = format!("layer-{i}");
        layers.push(oci::tar_layer(|b| {
            oci::raw_entry(b, EntryType::Regular, name.as_bytes(), None, 0o644, b"")
        })?);
    }
    let mut image = Image::new(layers);
    image.config = json!({ "Env": [oci::PATH], "Cmd": ["/bin/sh"] });
    lab.push("ferry/tall:latest", &[image], Format::Oci)?;
    let image = reference("ferry/tall:latest");
    let pulled = ctx.pull(&[&image])?;
    ensure!(pulled.status == 0, "pull failed:\n{pulled}");
    expect_error(
        &ctx.run_image(&image, &[], &["true"])?,
        125,
        "more than the 4096",
    )?;
    ctx.nothing_under_root_but_images()
}

fn refuses_a_decompression_bomb(ctx: &Ctx) -> Result<()> {
    let lab = ctx.registry(Auth::Anonymous)?;
    // 32 MiB of zeros: a few kilobytes gzipped.
    let zeros = vec![0u8; 32 << 20];
    let bomb =
        oci::tar_layer(|b| oci::raw_entry(b, EntryType::Regular, b"zeros", None, 0o644, &zeros))?;
    lab.push("ferry/bomb:latest", &[Image::new(vec![bomb])], Format::Oci)?;
    let outcome = ctx
        .runtime()
        .env("FERRY_MAX_LAYER_SIZE", (16u64 << 20).to_string())
        .args(["pull", "--root"])
        .args([ctx.state.path()])
        .args([reference("ferry/bomb:latest")])
        .output()?;
    expect_pull_error(&outcome, "larger than")?;
    ctx.store_holds_no_image()?;
    let layers = ctx.stored_layers()?;
    ensure!(layers.is_empty(), "the store kept layers: {layers}");
    Ok(())
}

fn refuses_a_digest_that_is_a_path(ctx: &Ctx) -> Result<()> {
    let (lab, digests, _) = ctx.registry_with(registry_lab::WORKSHOP, registry_lab::workshop)?;
    // The config and layer of an honest image, in the repository the
    // hostile manifest is served for.
    lab.push(
        "ferry/evil:latest",
        &registry_lab::workshop(&ctx.rootfs)?,
        Format::Oci,
    )?;
    let sentinel = Sentinel::new()?;
    let config = &digests.images[0].config;
    // A manifest no registry would store: the proxy serves it.
    for (config_digest, layer_digest) in [
        (config.clone(), "sha256:../../../../../x".to_owned()),
        (
            "sha256:../../x".to_owned(),
            digests.images[0].layers[0].clone(),
        ),
    ] {
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": oci::MANIFEST,
            "config": { "mediaType": oci::CONFIG, "digest": config_digest, "size": 10 },
            "layers": [{ "mediaType": oci::LAYER_GZIP, "digest": layer_digest, "size": 10 }],
        });
        lab.proxy().serve(
            "/v2/ferry/evil/manifests/latest",
            200,
            &[("Content-Type", oci::MANIFEST)],
            serde_json::to_vec(&manifest)?,
        );
        expect_pull_error(
            &ctx.pull(&[&reference("ferry/evil:latest")])?,
            "invalid digest",
        )?;
        sentinel.untouched()?;
        ctx.store_holds_no_image()?;
    }
    Ok(())
}

fn a_second_pull_fetches_only_the_manifest(ctx: &Ctx) -> Result<()> {
    let (lab, _, image) = ctx.registry_with(registry_lab::LAYERED, registry_lab::layered)?;
    let first = ctx.pull(&[&image])?;
    ensure!(first.status == 0, "the first pull failed:\n{first}");
    let blobs = lab
        .proxy()
        .requests()
        .iter()
        .filter(|request| request.contains("/blobs/"))
        .count();
    ensure!(
        blobs == 4,
        "the first pull asked for {blobs} blobs, not the config and 3 layers: {:?}",
        lab.proxy().requests()
    );
    lab.proxy().clear();
    let second = ctx.pull(&[&image])?;
    ensure!(second.status == 0, "the second pull failed:\n{second}");
    let requests = lab.proxy().requests();
    ensure!(
        requests == ["GET /v2/ferry/layers/manifests/latest"],
        "a second pull asked for {requests:?}"
    );
    Ok(())
}

fn pulls_at_once_share_the_store(ctx: &Ctx) -> Result<()> {
    let (_lab, digests, image) = ctx.registry_with(registry_lab::LAYERED, registry_lab::layered)?;
    let pull = || {
        ctx.runtime()
            .args(["pull", "--root"])
            .args([ctx.state.path()])
            .args([&image])
            .spawn()
    };
    let (first, second) = (pull()?, pull()?);
    for outcome in [first.finish()?, second.finish()?] {
        ensure!(outcome.status == 0, "a pull failed:\n{outcome}");
    }
    let mut expected: Vec<String> = digests.images[0]
        .diff_ids
        .iter()
        .map(|d| format!("{}\n", d.trim_start_matches("sha256:")))
        .collect();
    expected.sort();
    ensure!(
        ctx.stored_layers()? == expected.concat(),
        "the store's layers: {}",
        ctx.stored_layers()?
    );
    let tmp = listing(&ctx.state.join("images/tmp"))?;
    ensure!(tmp.is_empty(), "left in tmp/: {tmp}");
    expect_stdout(&ctx.run_image(&image, &[], &["ls", "/srv/data"])?, "c\n")
}

fn rmi_keeps_layers_another_image_uses(ctx: &Ctx) -> Result<()> {
    let (lab, workshop, _) = ctx.registry_with(registry_lab::WORKSHOP, registry_lab::workshop)?;
    let layered = lab.push(
        registry_lab::LAYERED,
        &registry_lab::layered(&ctx.rootfs)?,
        Format::Oci,
    )?;
    let shared = &workshop.images[0].diff_ids[0];
    ensure!(
        layered.images[0].diff_ids[0] == *shared,
        "the demo images should share their first layer"
    );
    let hex = |digest: &str| digest.trim_start_matches("sha256:").to_owned();
    for name in [registry_lab::WORKSHOP, registry_lab::LAYERED] {
        let pulled = ctx.pull(&[&reference(name)])?;
        ensure!(pulled.status == 0, "pull {name} failed:\n{pulled}");
    }
    let id = |digests: &oci::LayoutDigests| hex(&digests.images[0].config)[..12].to_owned();
    let listed = ctx.images()?;
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    ensure!(
        rows.len() == 3
            && rows[0] == ["REPOSITORY", "TAG", "IMAGE", "ID", "SIZE"]
            && rows[1][..3]
                == [
                    &format!("{ADDRESS}/ferry/busybox"),
                    "latest",
                    &id(&workshop)
                ]
            && rows[2][..3] == [&format!("{ADDRESS}/ferry/layers"), "latest", &id(&layered)],
        "images printed:\n{listed}"
    );

    let removed = ctx.rmi(&reference(registry_lab::LAYERED))?;
    ensure!(removed.status == 0, "rmi failed:\n{removed}");
    ensure!(
        ctx.stored_layers()? == format!("{}\n", hex(shared)),
        "after rmi of the layered image the store holds {}",
        ctx.stored_layers()?
    );
    let removed = ctx.rmi(&reference(registry_lab::WORKSHOP))?;
    ensure!(removed.status == 0, "rmi failed:\n{removed}");
    ctx.store_holds_no_image()?;
    ensure!(
        ctx.stored_layers()?.is_empty(),
        "layers left: {}",
        ctx.stored_layers()?
    );
    let blobs = listing(&ctx.state.join("images/blobs/sha256"))?;
    ensure!(blobs.is_empty(), "blobs left: {blobs}");
    expect_error(
        &ctx.rmi(&reference(registry_lab::WORKSHOP))?,
        125,
        "no such image",
    )
}

fn rejects_bad_references_offline(ctx: &Ctx) -> Result<()> {
    let lab = ctx.registry(Auth::Anonymous)?;
    for bad in [
        "UPPER/case".to_owned(),
        format!("{ADDRESS}/UPPER/case"),
        format!("{ADDRESS}/a:b:c"),
        format!("{ADDRESS}/name@sha256:short"),
        String::new(),
    ] {
        expect_pull_error(&ctx.pull(&[&bad])?, "invalid reference format")
            .with_context(|| format!("pull {bad:?}"))?;
    }
    let requests = lab.proxy().requests();
    ensure!(
        requests.is_empty(),
        "bad references reached the registry: {requests:?}"
    );
    Ok(())
}
