//! `berth image …`: docker's management-command spelling of the image commands.

use clap::Subcommand;

use super::inspect_image::InspectArgs;
use crate::client::Client;
use crate::printer::Printer;

#[derive(Subcommand)]
pub(crate) enum ImageCommand {
    /// Show images in detail (pretty JSON).
    Inspect(InspectArgs),
    /// List images.
    #[command(alias = "list")]
    Ls(super::images::ImagesArgs),
    /// Remove images.
    Rm(super::rmi::RmiArgs),
}

pub(crate) async fn run(cmd: ImageCommand, client: &Client, printer: &Printer) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Inspect(args) => super::inspect_image::run(args, client, printer).await,
        ImageCommand::Ls(args) => super::images::run(args, client, printer).await,
        ImageCommand::Rm(args) => super::rmi::run(args, client, printer).await,
    }
}
