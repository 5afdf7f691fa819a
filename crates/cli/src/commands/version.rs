//! `berth version`: this binary's version, and the daemon's when one answers.

use std::time::Duration;

use crate::client::Client;
use crate::printer::Printer;

/// How long to wait for a daemon before showing only the client.
const SERVER_TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) async fn run(client: Option<&Client>, printer: &Printer) -> anyhow::Result<()> {
    printer.line(&format!("berth {}", env!("CARGO_PKG_VERSION")));
    let Some(client) = client else { return Ok(()) };
    match tokio::time::timeout(SERVER_TIMEOUT, client.get_json("/version")).await {
        Ok(Ok(v)) => printer.line(&format!(
            "server: berth {} (API {}, {}/{})",
            v["Version"].as_str().unwrap_or("?"),
            v["ApiVersion"].as_str().unwrap_or("?"),
            v["Os"].as_str().unwrap_or("?"),
            v["Arch"].as_str().unwrap_or("?"),
        )),
        Ok(Err(e)) => tracing::debug!("no server version: {e:#}"),
        Err(_) => tracing::debug!("no server version: the daemon did not answer in {SERVER_TIMEOUT:?}"),
    }
    Ok(())
}
