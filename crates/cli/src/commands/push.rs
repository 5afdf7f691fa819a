//! `berth push NAME[:TAG]`: `POST /images/{name}/push`, the progress stream shown like a pull's.

use anyhow::Context;
use clap::Args;
use hyper::Method;

use crate::client::{Client, empty, path_name, query, split_tag};
use crate::printer::Printer;

#[derive(Args)]
pub(crate) struct PushArgs {
    /// The image: NAME[:TAG].
    name: String,
}

pub(crate) async fn run(args: PushArgs, client: &Client, printer: &Printer) -> anyhow::Result<()> {
    let (repo, tag) = split_tag(&args.name);
    let pairs: Vec<(&str, &str)> = tag.map(|t| ("tag", t)).into_iter().collect();
    let path = format!("/images/{}/push{}", path_name(repo), query(&pairs));
    // Anonymous: base64url of `{}`, as docker sends without stored credentials.
    let resp = client
        .request(Method::POST, &path, &[("X-Registry-Auth", "e30")], empty())
        .await
        .with_context(|| format!("failed to push {}", args.name))?;
    super::pull::show_stream(resp, printer)
        .await
        .with_context(|| format!("failed to push {}", args.name))
}
