//! `docker exec`: `POST /containers/{id}/exec`, `POST /exec/{id}/start` (hijacked, 8-byte
//! frames), `GET /exec/{id}/json`. Each start runs `berth shim-exec`, whose stdio pipes the
//! daemon relays.

use std::process::Stdio;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path as PathExtractor, Request, State as StateExtractor};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::State;
use super::containers::{multiplexed, terminal_size, upgraded};
use crate::containers::Exec;
use crate::error::Error;

type AppState = StateExtractor<Arc<State>>;

/// `POST /containers/{id}/exec`.
pub(super) async fn create(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
    body: Bytes,
) -> Result<Response, Error> {
    let body: Value = serde_json::from_slice(&body).map_err(|e| Error::InvalidContainerConfig {
        reason: format!("invalid JSON in the request body: {e}"),
    })?;
    let entry = state.containers.get(&id)?;
    let exec_id = state.containers.exec_create(&entry, &id, &body)?;
    Ok((StatusCode::CREATED, Json(json!({"Id": exec_id}))).into_response())
}

/// Relays one output of the exec's shim: as 8-byte frames of stream `kind`, or raw for a
/// terminal (`kind` 0).
async fn pump(mut from: impl tokio::io::AsyncRead + Unpin, kind: u8, tx: mpsc::Sender<Bytes>, wanted: bool) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) if wanted => {
                let chunk = if kind == 0 {
                    Bytes::copy_from_slice(&buf[..n])
                } else {
                    multiplexed(kind, &buf[..n])
                };
                if tx.send(chunk).await.is_err() {
                    // The client is gone; keep draining so the process does not block.
                    continue;
                }
            }
            Ok(_) => {}
        }
    }
}

/// `POST /exec/{id}/start` with `{"Detach": bool, "Tty": bool}`.
pub(super) async fn start(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
    mut req: Request,
) -> Result<Response, Error> {
    let exec = state.containers.exec_get(&id)?;
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let body = axum::body::to_bytes(req.into_body(), 64 << 10)
        .await
        .map_err(|e| Error::InvalidContainerConfig {
            reason: format!("failed to read the request body: {e}"),
        })?;
    let opts: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
    // The terminal was asked for at create (the CLI repeats it here).
    let tty = exec.config.tty;
    let detach = opts.get("Detach").and_then(Value::as_bool).unwrap_or(false);
    {
        let mut st = exec.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.0 {
            return Err(Error::InvalidContainerConfig {
                reason: format!("Exec {} has already been started", exec.id),
            });
        }
        *st = (true, true, None);
    }
    let entry = state.containers.get(&exec.container)?;
    let rec = entry.record();
    if !rec.running() {
        return Err(Error::NotRunning {
            id: exec.container.clone(),
        });
    }
    if rec.paused() {
        return Err(Error::ExecPaused {
            name: exec.container.clone(),
        });
    }
    let keys = super::containers::detach_keys(Some(&exec.detach_keys))?;
    let mut cmd = state.containers.exec_command(&exec)?;
    let attach_stdin = exec.attach_stdin && !detach;
    cmd.stdin(if attach_stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| Error::Io {
        op: "start exec shim",
        path: "berth shim-exec".into(),
        source,
    })?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(64);
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let pumps = tokio::spawn({
        let (tx1, tx2) = (tx.clone(), tx);
        let (w_out, w_err) = (exec.attach_stdout && !detach, exec.attach_stderr && !detach);
        // A terminal's output is one raw stream, as docker shows it; 0 marks "no frame".
        let (s_out, s_err) = if tty { (0, 0) } else { (1, 2) };
        async move {
            tokio::join!(pump(out, s_out, tx1, w_out), pump(err, s_err, tx2, w_err || tty));
        }
    });
    state.containers.emit_exec(&exec, "exec_start", None);
    let stdin = child.stdin.take();
    let finish = {
        let exec = exec.clone();
        let containers = Arc::clone(&state.containers);
        async move {
            let status = child.wait().await;
            let _ = pumps.await;
            let code = match status {
                Ok(s) => s.code().map_or(137, i64::from),
                Err(_) => 126,
            };
            *exec.state.lock().unwrap_or_else(|p| p.into_inner()) = (true, false, Some(code));
            exec.finished();
            containers.emit_exec(&exec, "exec_die", Some(code));
        }
    };
    if detach {
        tokio::spawn(async move {
            let drain = async { while rx.recv().await.is_some() {} };
            tokio::join!(finish, drain);
        });
        return Ok(StatusCode::OK.into_response());
    }
    let Some(on_upgrade) = on_upgrade else {
        // No hijack: the output is the body.
        tokio::spawn(finish);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
        });
        let mut resp = Response::new(Body::from_stream(stream));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.docker.multiplexed-stream"),
        );
        return Ok(resp);
    };
    let exec_id = exec.id.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(exec = %exec_id, error = %e, "exec upgrade failed");
                finish.await;
                return;
            }
        };
        let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
        // On the detach keys the process keeps its stdin, and runs on; the session ends.
        let (detached_tx, detached_rx) = tokio::sync::oneshot::channel();
        let detached = super::containers::fired(detached_rx);
        tokio::pin!(detached);
        let input = stdin.map(|mut stdin| {
            tokio::spawn(async move {
                if let Ok(true) = super::containers::copy_until_detach(&mut reader, &mut stdin, &keys).await {
                    let _ = detached_tx.send(stdin);
                }
                // Otherwise dropping stdin is the process's EOF.
            })
        });
        let finish = tokio::spawn(finish);
        let kept = loop {
            tokio::select! {
                b = rx.recv() => match b {
                    Some(b) if writer.write_all(&b).await.is_ok() => {}
                    _ => break None,
                },
                stdin = &mut detached => break Some(stdin),
            }
        };
        match kept {
            // Its output still has to be read, or the process blocks on a full pipe.
            Some(stdin) => {
                tokio::spawn(async move {
                    let drain = async { while rx.recv().await.is_some() {} };
                    let _ = tokio::join!(finish, drain);
                    drop(stdin);
                });
            }
            None => {
                let _ = finish.await;
            }
        }
        let _ = writer.flush().await;
        let _ = writer.shutdown().await;
        if let Some(input) = input {
            input.abort();
        }
    });
    Ok(upgraded(HeaderValue::from_static(if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    })))
}

fn inspect_json(exec: &Exec) -> Value {
    let (_, running, code) = *exec.state.lock().unwrap_or_else(|p| p.into_inner());
    json!({
        "ID": exec.id,
        "Running": running,
        "ExitCode": code,
        "ProcessConfig": {
            "tty": exec.config.tty,
            "entrypoint": exec.config.args.first(),
            "arguments": exec.config.args.iter().skip(1).collect::<Vec<_>>(),
            "privileged": false,
            "user": exec.user,
        },
        "OpenStdin": exec.attach_stdin,
        "OpenStderr": exec.attach_stderr,
        "OpenStdout": exec.attach_stdout,
        "CanRemove": false,
        "ContainerID": exec.container,
        "DetachKeys": exec.detach_keys,
        "Pid": 0,
    })
}

/// `GET /exec/{id}/json`.
pub(super) async fn inspect(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
) -> Result<Json<Value>, Error> {
    let exec = state.containers.exec_get(&id)?;
    Ok(Json(inspect_json(&exec)))
}

/// `POST /exec/{id}/resize?h=&w=`.
pub(super) async fn resize(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<StatusCode, Error> {
    let (h, w) = terminal_size(&super::images::Query::new(raw))?;
    state.containers.exec_get(&id)?.resize(h, w)?;
    Ok(StatusCode::OK)
}
