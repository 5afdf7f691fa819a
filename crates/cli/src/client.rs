//! A thin Docker Engine API client over the daemon's unix socket (hyper, one connection per
//! request): where the daemon is (`-H`, `BERTH_HOST`, `DOCKER_HOST`, the default socket), the
//! daemon's `{"message"}` as the error of a failed call, request bodies streamed from a reader
//! and JSON-lines answers read line by line.

use std::io;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use http_body_util::{BodyExt, Empty, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::AsyncRead;

use crate::env_vars;

/// The socket `berth daemon` listens on when told nothing else.
const DEFAULT_HOST: &str = "unix:///run/berth/berth.sock";

/// A request body: empty, or streamed from a file or stdin.
pub(crate) type Body = UnsyncBoxBody<Bytes, io::Error>;

/// The daemon one command talks to.
pub(crate) struct Client {
    /// As the user wrote it (`unix:///run/berth/berth.sock`), for messages.
    host: String,
    socket: PathBuf,
}

impl Client {
    /// The daemon named by `-H`, else `BERTH_HOST`, else `DOCKER_HOST`, else the default socket.
    pub(crate) fn new(flag: Option<&str>) -> anyhow::Result<Client> {
        let from_env = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        let host = flag
            .map(str::to_owned)
            .or_else(|| from_env(env_vars::BERTH_HOST))
            .or_else(|| from_env(env_vars::DOCKER_HOST))
            .unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let socket = match host.strip_prefix("unix://") {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            Some(_) => bail!("invalid daemon address {host:?}: expected unix://PATH"),
            None if host.starts_with('/') => PathBuf::from(&host),
            None => bail!("unsupported daemon address {host:?}: only unix://PATH sockets are supported"),
        };
        Ok(Client { host, socket })
    }

    /// Sends one request; a non-2xx answer becomes an error carrying the daemon's message.
    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> anyhow::Result<Response<Incoming>> {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.with_context(|| {
            format!(
                "cannot connect to the berth daemon at {} (is it running? start one with `berth daemon -H {}`)",
                self.host, self.host
            )
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("failed to talk HTTP to the daemon at {}", self.host))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "berth")
            .header(hyper::header::USER_AGENT, concat!("berth/", env!("CARGO_PKG_VERSION")));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body).context("failed to build the request")?;
        let resp = sender
            .send_request(req)
            .await
            .with_context(|| format!("the daemon at {} did not answer", self.host))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(daemon_error(resp).await)
    }

    /// A request that asks to take over the connection (`Upgrade: tcp`, as the docker CLI
    /// sends for attach and exec start): the raw stream once the daemon answers
    /// `101 Switching Protocols` (or 200, as older daemons do, with the stream as the body).
    pub(crate) async fn hijack(&self, method: Method, path: &str, json: Option<&Value>) -> anyhow::Result<Upgraded> {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.with_context(|| {
            format!(
                "cannot connect to the berth daemon at {} (is it running? start one with `berth daemon -H {}`)",
                self.host, self.host
            )
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("failed to talk HTTP to the daemon at {}", self.host))?;
        tokio::spawn(conn.with_upgrades());
        let body = json.map(json_request).unwrap_or_else(empty);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "berth")
            .header(hyper::header::USER_AGENT, concat!("berth/", env!("CARGO_PKG_VERSION")))
            .header(hyper::header::CONNECTION, "Upgrade")
            .header(hyper::header::UPGRADE, "tcp")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(body)
            .context("failed to build the request")?;
        let resp = sender
            .send_request(req)
            .await
            .with_context(|| format!("the daemon at {} did not answer", self.host))?;
        if resp.status() == hyper::StatusCode::SWITCHING_PROTOCOLS {
            let upgraded = hyper::upgrade::on(resp)
                .await
                .context("the daemon did not hand over the stream")?;
            return Ok(Upgraded::Raw(TokioIo::new(upgraded)));
        }
        if !resp.status().is_success() {
            return Err(daemon_error(resp).await);
        }
        Ok(Upgraded::Body(resp.into_body()))
    }

    /// `GET path`, the answer as JSON.
    pub(crate) async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self.request(Method::GET, path, &[], empty()).await?;
        json_body(resp).await
    }
}

/// The query of a listing (`/images/json`, `/containers/json`): `all=1` when `all`, and
/// docker's `-f KEY=VALUE` flags (plus `extra` ones) as the API's `filters` JSON
/// (`{"KEY":{"VALUE":true}}`).
pub(crate) fn list_query(all: bool, filters: &[String], extra: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut map: std::collections::BTreeMap<String, std::collections::BTreeMap<String, bool>> =
        std::collections::BTreeMap::new();
    for f in filters {
        let Some((k, v)) = f.split_once('=') else {
            bail!("invalid filter {f:?}: expected KEY=VALUE");
        };
        map.entry(k.to_owned()).or_default().insert(v.to_owned(), true);
    }
    for (k, v) in extra {
        map.entry((*k).to_owned()).or_default().insert((*v).to_owned(), true);
    }
    let filters = serde_json::json!(map).to_string();
    let mut pairs = vec![];
    if all {
        pairs.push(("all", "1"));
    }
    if !map.is_empty() {
        pairs.push(("filters", filters.as_str()));
    }
    Ok(query(&pairs))
}

/// A failed answer as an error: the daemon's `{"message"}`, else the status and the body.
async fn daemon_error(resp: Response<Incoming>) -> anyhow::Error {
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{status}: {}", String::from_utf8_lossy(&bytes).trim()));
    anyhow!(message)
}

/// A hijacked connection: both directions raw, or (from a daemon that does not upgrade) the
/// answer's body only.
pub(crate) enum Upgraded {
    Raw(TokioIo<hyper::upgrade::Upgraded>),
    Body(Incoming),
}

/// The whole answer as JSON.
pub(crate) async fn json_body(resp: Response<Incoming>) -> anyhow::Result<Value> {
    let bytes = resp
        .into_body()
        .collect()
        .await
        .context("failed to read the daemon's answer")?
        .to_bytes();
    serde_json::from_slice(&bytes).context("the daemon's answer is not JSON")
}

/// A JSON request body.
pub(crate) fn json_request(v: &Value) -> Body {
    http_body_util::Full::new(Bytes::from(v.to_string()))
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body streamed from `reader`; `sent` is told the size of every chunk as it goes.
pub(crate) fn reader_body<R>(reader: R, sent: impl Fn(u64) + Send + 'static) -> Body
where
    R: AsyncRead + Send + 'static,
{
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, 256 << 10).map_ok(move |chunk| {
        sent(chunk.len() as u64);
        Frame::data(chunk)
    });
    StreamBody::new(stream).boxed_unsync()
}

/// A JSON-lines (or `\r\n`-separated JSON) answer, one value at a time.
pub(crate) struct JsonLines {
    body: Incoming,
    buf: BytesMut,
}

impl JsonLines {
    pub(crate) fn new(resp: Response<Incoming>) -> JsonLines {
        JsonLines {
            body: resp.into_body(),
            buf: BytesMut::new(),
        }
    }

    /// The next message, `None` at the end of the stream.
    pub(crate) async fn next(&mut self) -> anyhow::Result<Option<Value>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(i + 1);
                if let Some(v) = parse_line(&line)? {
                    return Ok(Some(v));
                }
                continue;
            }
            match self.body.frame().await {
                Some(frame) => {
                    let frame = frame.context("the daemon's answer broke off")?;
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                None => {
                    let rest = std::mem::take(&mut self.buf);
                    return parse_line(&rest);
                }
            }
        }
    }
}

fn parse_line(line: &[u8]) -> anyhow::Result<Option<Value>> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text)
        .map(Some)
        .with_context(|| format!("the daemon sent a line that is not JSON: {text}"))
}

/// The error a stream message carries (`errorDetail.message`, else `error`), if any.
pub(crate) fn stream_error(v: &Value) -> Option<String> {
    v["errorDetail"]["message"]
        .as_str()
        .or_else(|| v["error"].as_str())
        .map(str::to_owned)
}

/// `?a=1&b=2`, percent-encoded (empty when there are no pairs).
pub(crate) fn query(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(&encode(k, false));
        out.push('=');
        out.push_str(&encode(v, false));
    }
    out
}

/// An image name as a path part: `/`, `:` and `@` stay as they are (the daemon's routes expect
/// `myreg:5000/sl6/wn:v1`), everything else not unreserved is escaped.
pub(crate) fn path_name(name: &str) -> String {
    encode(name, true)
}

fn encode(s: &str, in_path: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (in_path && matches!(b, b'/' | b':' | b'@'));
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `NAME[:TAG]` split as docker does: a colon after the last slash starts the tag.
pub(crate) fn split_tag(name: &str) -> (&str, Option<&str>) {
    if name.contains('@') {
        return (name, None);
    }
    match name.rfind(':') {
        Some(i) if !name[i + 1..].contains('/') => (&name[..i], Some(&name[i + 1..])),
        _ => (name, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_names_and_tags() {
        assert_eq!(
            query(&[("a", "x y"), ("changes", "CMD [\"sh\"]")]),
            "?a=x%20y&changes=CMD%20%5B%22sh%22%5D"
        );
        assert_eq!(query(&[]), "");
        assert_eq!(path_name("myreg:5000/sl6/wn:v1"), "myreg:5000/sl6/wn:v1");
        assert_eq!(path_name("a b"), "a%20b");
        assert_eq!(split_tag("busybox"), ("busybox", None));
        assert_eq!(split_tag("busybox:1"), ("busybox", Some("1")));
        assert_eq!(split_tag("myreg:5000/sl6/wn"), ("myreg:5000/sl6/wn", None));
        assert_eq!(split_tag("myreg:5000/sl6/wn:v1"), ("myreg:5000/sl6/wn", Some("v1")));
        assert_eq!(split_tag("x@sha256:ab"), ("x@sha256:ab", None));
    }

    #[test]
    fn hosts() {
        assert_eq!(
            Client::new(Some("unix:///tmp/a.sock")).unwrap().socket,
            PathBuf::from("/tmp/a.sock")
        );
        assert!(Client::new(Some("tcp://1.2.3.4:2375")).is_err());
    }
}
