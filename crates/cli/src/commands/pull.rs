//! `berth pull NAME[:TAG]`: `POST /images/create?fromImage=`, the progress stream shown as it
//! comes.

use anyhow::Context;
use clap::Args;
use hyper::Method;

use crate::client::{Client, JsonLines, empty, query};
use crate::printer::Printer;

#[derive(Args)]
pub(crate) struct PullArgs {
    /// The image: NAME[:TAG] or NAME@DIGEST.
    name: String,
}

pub(crate) async fn run(args: PullArgs, client: &Client, printer: &Printer) -> anyhow::Result<()> {
    let path = format!("/images/create{}", query(&[("fromImage", &args.name)]));
    let resp = client
        .request(Method::POST, &path, &[], empty())
        .await
        .with_context(|| format!("failed to pull {}", args.name))?;
    show_stream(resp, printer)
        .await
        .with_context(|| format!("failed to pull {}", args.name))
}

/// Shows a pull's or push's JSON-lines progress to the end; an error in it fails.
pub(crate) async fn show_stream(resp: hyper::Response<hyper::body::Incoming>, printer: &Printer) -> anyhow::Result<()> {
    let mut lines = JsonLines::new(resp);
    let mut display = printer.stream();
    while let Some(v) = lines.next().await? {
        display.show(&v)?;
    }
    display.finish();
    Ok(())
}
