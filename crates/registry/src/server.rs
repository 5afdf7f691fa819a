//! Serving: bind (so "listening" is logged only once the socket is bound), optional TLS,
//! graceful shutdown, periodic GC.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::registry::Registry;

/// A registry bound to its address, ready to serve.
pub struct Server {
    registry: Registry,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
}

/// Upload bodies pass through megabyte buffers that are freed and allocated again all the
/// time. glibc hands allocations that large to fresh `mmap`s and trims freed heap tops, so
/// every buffer costs page faults and zeroing; past the uploads' sizes it keeps them instead.
fn keep_buffers_mapped() {
    // SAFETY: mallopt only changes allocator tunables; it is called before the server's
    // threads allocate anything large.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 32 << 20);
        nix::libc::mallopt(nix::libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

impl Server {
    /// Opens storage and index, loads auth and TLS, binds the address.
    pub async fn bind(config: Config) -> Result<Server> {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(c), Some(k)) => Some(tls_acceptor(c, k)?),
            (None, None) => None,
            _ => {
                return Err(Error::Tls {
                    reason: "--tls-cert and --tls-key go together".to_owned(),
                });
            }
        };
        let addr = config.addr;
        keep_buffers_mapped();
        let registry = Registry::open(config, false).await?;
        let listener = TcpListener::bind(addr).await.map_err(|source| Error::Io {
            op: "bind",
            path: addr.to_string(),
            source,
        })?;
        Ok(Server {
            registry,
            listener,
            tls,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Serves until `shutdown` resolves, then lets open requests finish (10 s at most).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let cfg = self.registry.config().clone();
        let auth = match &cfg.htpasswd {
            Some(p) => format!("htpasswd {}", p.display()),
            None => "anonymous pull and push".to_owned(),
        };
        tracing::info!(
            addr = %self.local_addr(),
            tls = self.tls.is_some(),
            auth = %auth,
            root = %cfg.root.display(),
            read_only = cfg.read_only,
            "registry listening"
        );
        if cfg.gc_interval_secs > 0 && !cfg.read_only {
            self.registry
                .spawn_periodic_gc(Duration::from_secs(cfg.gc_interval_secs));
        }
        let app = crate::routes::router(self.registry.clone());
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(app.clone());
            let builder = auto::Builder::new(TokioExecutor::new());
            match &self.tls {
                None => {
                    let io = TokioIo::new(crate::zerocopy::ZeroCopyTcp(stream));
                    let conn = builder.serve_connection(io, service).into_owned();
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => return tracing::debug!(peer = %peer, error = %e, "TLS handshake failed"),
                            Err(_) => return tracing::debug!(peer = %peer, "TLS handshake timed out"),
                        };
                        let conn = builder.serve_connection(TokioIo::new(tls), service).into_owned();
                        if let Err(e) = watcher.watch(conn).await {
                            tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                        }
                    });
                }
            }
        }
        tracing::info!("shutting down: finishing open requests");
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("open requests cut off after 10 s"),
        }
        Ok(())
    }
}

fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|source| Error::Io {
            op: "read",
            path: p.display().to_string(),
            source,
        })
    };
    let certs: Vec<_> = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Tls {
            reason: format!("{}: {e}", cert.display()),
        })?;
    if certs.is_empty() {
        return Err(Error::Tls {
            reason: format!("{}: no certificate in it", cert.display()),
        });
    }
    let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| Error::Tls {
            reason: format!("{}: {e}", key.display()),
        })?
        .ok_or_else(|| Error::Tls {
            reason: format!("{}: no private key in it", key.display()),
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls { reason: e.to_string() })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls {
            reason: format!("certificate and key do not fit together: {e}"),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
