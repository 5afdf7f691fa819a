//! `berth tag SOURCE TARGET`: `POST /images/{source}/tag?repo=&tag=`.

use anyhow::Context;
use clap::Args;
use hyper::Method;

use crate::client::{Client, empty, path_name, query, split_tag};
use crate::printer::Printer;

#[derive(Args)]
pub(crate) struct TagArgs {
    /// The image to tag: NAME[:TAG] or ID.
    source: String,
    /// The new name: NAME[:TAG].
    target: String,
}

pub(crate) async fn run(args: TagArgs, client: &Client, _printer: &Printer) -> anyhow::Result<()> {
    let (repo, tag) = split_tag(&args.target);
    let mut pairs = vec![("repo", repo)];
    if let Some(t) = tag {
        pairs.push(("tag", t));
    }
    let path = format!("/images/{}/tag{}", path_name(&args.source), query(&pairs));
    client
        .request(Method::POST, &path, &[], empty())
        .await
        .with_context(|| format!("failed to tag {} as {}", args.source, args.target))?;
    Ok(())
}
