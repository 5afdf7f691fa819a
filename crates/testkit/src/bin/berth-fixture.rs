//! `berth-fixture`: writes the busybox-static test image for benchmark scripts and prints
//! `<manifest digest> <total size in bytes>` on one line.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use anyhow::Result;
use berth_testkit::ImageBuilder;
use clap::{Args, Parser, Subcommand};

/// Write Berth's busybox-static test image, then print `<manifest digest> <total bytes>`.
///
/// The total is the sum of the image's blobs (manifest, config, layers). For a docker archive
/// the digest is that of the OCI manifest in the archive's index.json (skopeo's
/// `docker-archive:` transport makes up a different, Docker schema 2 manifest).
#[derive(Parser)]
#[command(name = "berth-fixture")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write an OCI image layout directory (other tags already in it are kept).
    OciLayout {
        /// The layout directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// The tag (`org.opencontainers.image.ref.name`).
        #[arg(long)]
        tag: String,
        #[command(flatten)]
        image: ImageArgs,
    },
    /// Write a `docker save` archive (layers uncompressed, as docker writes them).
    DockerArchive {
        /// The archive file.
        #[arg(long)]
        out: PathBuf,
        /// The name it loads as, `REPO[:TAG]`.
        #[arg(long = "ref")]
        reference: String,
        #[command(flatten)]
        image: ImageArgs,
    },
}

#[derive(Args)]
struct ImageArgs {
    /// Extra layers of incompressible random bytes.
    #[arg(long, default_value_t = 0)]
    random_layers: usize,
    /// Size of each random layer in MiB.
    #[arg(long, default_value_t = 55)]
    layer_mb: u64,
    /// Store layers as plain tar instead of gzip (oci-layout only).
    #[arg(long)]
    uncompressed: bool,
}

impl ImageArgs {
    fn builder(&self) -> ImageBuilder {
        let builder = ImageBuilder::new().extra_random_layers(self.random_layers, self.layer_mb << 20);
        if self.uncompressed {
            builder.uncompressed()
        } else {
            builder
        }
    }
}

fn main() -> Result<()> {
    let info = match Cli::parse().command {
        Command::OciLayout { out, tag, image } => image.builder().write_oci_layout(&out, &tag)?,
        Command::DockerArchive { out, reference, image } => image.builder().write_docker_archive(&out, &reference)?,
    };
    println!("{} {}", info.manifest_digest, info.total_size());
    Ok(())
}
