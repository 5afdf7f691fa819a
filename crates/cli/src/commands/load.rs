//! `berth load -i FILE`: `POST /images/load` with a docker-archive (or OCI layout) tarball;
//! prints the daemon's `Loaded image…` lines.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use hyper::Method;

use crate::client::{Client, JsonLines, query, reader_body, stream_error};
use crate::printer::Printer;

#[derive(Args)]
pub(crate) struct LoadArgs {
    /// The tarball [default: stdin].
    #[arg(short, long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
}

pub(crate) async fn run(args: LoadArgs, client: &Client, printer: &Printer) -> anyhow::Result<()> {
    let what = args
        .input
        .as_ref()
        .map_or_else(|| "stdin".to_owned(), |p| p.display().to_string());
    let (reader, total): (Box<dyn tokio::io::AsyncRead + Send + Unpin>, Option<u64>) = match &args.input {
        None => (Box::new(tokio::io::stdin()), None),
        Some(path) => {
            let file = tokio::fs::File::open(path)
                .await
                .with_context(|| format!("failed to open {}", path.display()))?;
            let len = file.metadata().await.ok().map(|m| m.len());
            (Box::new(file), len)
        }
    };
    let bar = printer.bytes("loading", total);
    let sent = bar.clone();
    let body = reader_body(reader, move |n| sent.inc(n));
    let quiet = if args.quiet { "1" } else { "0" };
    let result = async {
        let resp = client
            .request(
                Method::POST,
                &format!("/images/load{}", query(&[("quiet", quiet)])),
                &[("Content-Type", "application/x-tar")],
                body,
            )
            .await?;
        let mut lines = JsonLines::new(resp);
        let mut loaded = String::new();
        while let Some(v) = lines.next().await? {
            if let Some(message) = stream_error(&v) {
                anyhow::bail!(message);
            }
            if let Some(s) = v["stream"].as_str() {
                loaded.push_str(s);
            }
        }
        Ok(loaded)
    }
    .await;
    bar.finish_and_clear();
    let loaded = result.with_context(|| format!("failed to load {what}"))?;
    if !args.quiet {
        printer.text(&loaded);
    }
    Ok(())
}
