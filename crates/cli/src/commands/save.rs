//! `berth save -o FILE NAME...`: `GET /images/get?names=…`, the docker-archive tarball
//! written to FILE (or to stdout when it is not a terminal).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use http_body_util::BodyExt;
use hyper::Method;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::client::{Client, empty, query};
use crate::printer::Printer;

#[derive(Args)]
pub(crate) struct SaveArgs {
    /// Where to write the tarball [default: stdout, unless it is a terminal].
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Images to save.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
}

pub(crate) async fn run(args: SaveArgs, client: &Client, printer: &Printer) -> anyhow::Result<()> {
    if args.output.is_none() && printer.stdout_is_terminal() {
        bail!("refusing to write a tarball to a terminal; use -o FILE or redirect stdout");
    }
    let pairs: Vec<(&str, &str)> = args.names.iter().map(|n| ("names", n.as_str())).collect();
    let what = args.names.join(", ");
    let resp = client
        .request(Method::GET, &format!("/images/get{}", query(&pairs)), &[], empty())
        .await
        .with_context(|| format!("failed to save {what}"))?;
    let (mut out, tmp): (Box<dyn AsyncWrite + Unpin>, Option<(PathBuf, PathBuf)>) = match &args.output {
        Some(path) => {
            let mut tmp = path.clone().into_os_string();
            tmp.push(".berth-partial");
            let tmp = PathBuf::from(tmp);
            let file = tokio::fs::File::create(&tmp)
                .await
                .with_context(|| format!("failed to create {}", tmp.display()))?;
            (Box::new(file), Some((tmp, path.clone())))
        }
        None => (Box::new(tokio::io::stdout()), None),
    };
    let bar = printer.bytes("saving", None);
    let result = async {
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.context("the daemon's tarball broke off")?;
            if let Ok(data) = frame.into_data() {
                out.write_all(&data).await.context("failed to write the tarball")?;
                bar.inc(data.len() as u64);
            }
        }
        out.flush().await.context("failed to write the tarball")?;
        if let Some((tmp, path)) = &tmp {
            tokio::fs::rename(tmp, path)
                .await
                .with_context(|| format!("failed to rename {} to {}", tmp.display(), path.display()))?;
        }
        anyhow::Ok(())
    }
    .await;
    bar.finish_and_clear();
    if result.is_err()
        && let Some((tmp, _)) = &tmp
    {
        let _ = tokio::fs::remove_file(tmp).await;
    }
    result.with_context(|| format!("failed to save {what}"))
}
