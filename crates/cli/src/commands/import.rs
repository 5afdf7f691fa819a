//! `berth import FILE|- [REPO[:TAG]]`: `POST /images/create?fromSrc=-` with the root
//! filesystem tarball as the body; prints the new image's ID.

use anyhow::Context;
use clap::Args;
use hyper::Method;

use crate::client::{Client, JsonLines, query, reader_body, split_tag, stream_error};
use crate::printer::Printer;

#[derive(Args)]
pub(crate) struct ImportArgs {
    /// The tarball (plain, gzip, zstd), or `-` for stdin.
    file: String,
    /// Name for the new image.
    #[arg(value_name = "REPOSITORY[:TAG]")]
    reference: Option<String>,
    /// Commit message of the image's history entry.
    #[arg(short, long)]
    message: Option<String>,
    /// Dockerfile instruction applied to the image (CMD, ENV, LABEL …); repeatable.
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    changes: Vec<String>,
}

pub(crate) async fn run(args: ImportArgs, client: &Client, printer: &Printer) -> anyhow::Result<()> {
    let (reader, total): (Box<dyn tokio::io::AsyncRead + Send + Unpin>, Option<u64>) = if args.file == "-" {
        (Box::new(tokio::io::stdin()), None)
    } else {
        let file = tokio::fs::File::open(&args.file)
            .await
            .with_context(|| format!("failed to open {}", args.file))?;
        let len = file.metadata().await.ok().map(|m| m.len());
        (Box::new(file), len)
    };
    let bar = printer.bytes("importing", total);
    let sent = bar.clone();
    let body = reader_body(reader, move |n| sent.inc(n));
    let mut pairs = vec![("fromSrc", "-")];
    if let Some(r) = &args.reference {
        let (repo, tag) = split_tag(r);
        pairs.push(("repo", repo));
        if let Some(t) = tag {
            pairs.push(("tag", t));
        }
    }
    if let Some(m) = &args.message {
        pairs.push(("message", m));
    }
    for c in &args.changes {
        pairs.push(("changes", c));
    }
    let result = async {
        let resp = client
            .request(Method::POST, &format!("/images/create{}", query(&pairs)), &[], body)
            .await?;
        let mut lines = JsonLines::new(resp);
        let mut id = None;
        while let Some(v) = lines.next().await? {
            if let Some(message) = stream_error(&v) {
                anyhow::bail!(message);
            }
            if v["id"].is_null()
                && let Some(s) = v["status"].as_str()
            {
                id = Some(s.to_owned());
            }
        }
        id.context("the daemon did not say which image it made")
    }
    .await;
    bar.finish_and_clear();
    let id = result.with_context(|| format!("failed to import {}", args.file))?;
    printer.line(&id);
    Ok(())
}
