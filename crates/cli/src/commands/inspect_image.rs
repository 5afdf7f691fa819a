//! `berth inspect-image NAME...` (also `berth image inspect`): `GET /images/{name}/json`,
//! printed as docker does, a pretty JSON array.

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use crate::client::{Client, path_name};
use crate::printer::Printer;

#[derive(Args)]
pub(crate) struct InspectArgs {
    /// Images to inspect: NAME[:TAG] or ID.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
}

pub(crate) async fn run(args: InspectArgs, client: &Client, printer: &Printer) -> anyhow::Result<()> {
    let mut out = Vec::new();
    for name in &args.names {
        let v = client
            .get_json(&format!("/images/{}/json", path_name(name)))
            .await
            .with_context(|| format!("failed to inspect {name}"))?;
        out.push(v);
    }
    let text = serde_json::to_string_pretty(&Value::Array(out)).context("failed to format the answer")?;
    printer.line(&text);
    Ok(())
}
