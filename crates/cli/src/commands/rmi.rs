//! `berth rmi [-f] NAME...`: `DELETE /images/{name}`, printing what was untagged and deleted.
//! Every name is tried; the command fails if any failed.

use anyhow::{Context, bail};
use clap::Args;
use hyper::Method;

use crate::client::{Client, empty, json_body, path_name, query};
use crate::printer::Printer;

#[derive(Args)]
pub(crate) struct RmiArgs {
    /// Remove the image even when it has several tags.
    #[arg(short, long)]
    force: bool,
    /// Images to remove: NAME[:TAG] or ID.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
}

pub(crate) async fn run(args: RmiArgs, client: &Client, printer: &Printer) -> anyhow::Result<()> {
    let mut failed = 0;
    for name in &args.names {
        let force = if args.force { "1" } else { "0" };
        let path = format!("/images/{}{}", path_name(name), query(&[("force", force)]));
        let result = async {
            let resp = client.request(Method::DELETE, &path, &[], empty()).await?;
            json_body(resp).await
        }
        .await
        .with_context(|| format!("failed to remove {name}"));
        match result {
            Ok(v) => {
                for item in v.as_array().map(Vec::as_slice).unwrap_or_default() {
                    if let Some(t) = item["Untagged"].as_str() {
                        printer.line(&format!("Untagged: {t}"));
                    }
                    if let Some(d) = item["Deleted"].as_str() {
                        printer.line(&format!("Deleted: {d}"));
                    }
                }
            }
            Err(e) => {
                printer.error(&e);
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} images not removed", args.names.len());
    }
    Ok(())
}
