//! The embedded DNS server of a user network, listening on the network's gateway address
//! (port 53, UDP and TCP) in the daemon's network namespace; containers on the network get it
//! as their nameserver. It answers A and AAAA queries for the names in its [`Names`] (container
//! names, aliases, short ids; case-insensitive, with or without a trailing dot), and PTR
//! queries for their addresses; everything else is forwarded to the host's resolvers and the
//! answer relayed unchanged (SERVFAIL when none answers).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// Names on one network and their addresses; the engine updates it as containers start,
/// stop, connect and disconnect. Keys are lower-case, without a trailing dot.
pub type Names = Arc<RwLock<BTreeMap<String, Vec<IpAddr>>>>;

/// How long the answers may be cached: not at all, so a restarted container's new address
/// (or a stopped one's absence) is seen at once. dockerd says 600 s, and a client that caches
/// that long keeps reaching a container that is gone.
const TTL: u32 = 0;
/// How long one upstream resolver gets to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an idle TCP client is kept.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// A running server; stopped when dropped.
pub struct DnsServer {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Shared {
    names: Names,
    upstreams: Vec<SocketAddr>,
}

impl DnsServer {
    /// Binds `addr:53` (UDP and TCP) in the calling thread's network namespace and serves
    /// `names`, forwarding other queries to `upstreams`. Must be called inside a tokio
    /// runtime.
    pub async fn start(addr: IpAddr, names: Names, upstreams: Vec<SocketAddr>) -> Result<DnsServer> {
        Self::start_on(SocketAddr::new(addr, 53), names, upstreams).await
    }

    /// [`start`](Self::start) on any port (tests, and a resolver beside another on 53).
    pub async fn start_on(at: SocketAddr, names: Names, upstreams: Vec<SocketAddr>) -> Result<DnsServer> {
        let fail = |e: std::io::Error| Error::Dns {
            addr: at.to_string(),
            reason: e.to_string(),
        };
        let udp = std::net::UdpSocket::bind(at).map_err(fail)?;
        udp.set_nonblocking(true).map_err(fail)?;
        let udp = Arc::new(tokio::net::UdpSocket::from_std(udp).map_err(fail)?);
        let tcp = std::net::TcpListener::bind(at).map_err(fail)?;
        tcp.set_nonblocking(true).map_err(fail)?;
        let tcp = tokio::net::TcpListener::from_std(tcp).map_err(fail)?;
        // Upstreams that are this server would loop.
        let upstreams = upstreams.into_iter().filter(|u| *u != at).collect();
        let shared = Arc::new(Shared { names, upstreams });
        let s = shared.clone();
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                let query = buf[..n].to_vec();
                let (s, udp) = (s.clone(), udp.clone());
                tokio::spawn(async move {
                    if let Some(answer) = s.answer(&query, false).await {
                        let _ = udp.send_to(&answer, peer).await;
                    }
                });
            }
        });
        let tcp_task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = tcp.accept().await else { continue };
                let s = shared.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(TCP_IDLE * 6, s.serve_tcp(conn)).await;
                });
            }
        });
        Ok(DnsServer {
            tasks: vec![udp_task, tcp_task],
        })
    }
}

impl Shared {
    /// One TCP client: length-prefixed queries until it closes or idles.
    async fn serve_tcp(&self, mut conn: tokio::net::TcpStream) -> std::io::Result<()> {
        loop {
            let mut len = [0u8; 2];
            match tokio::time::timeout(TCP_IDLE, conn.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                _ => return Ok(()),
            }
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            conn.read_exact(&mut query).await?;
            if let Some(answer) = self.answer(&query, true).await {
                let n = u16::try_from(answer.len()).unwrap_or(u16::MAX);
                conn.write_all(&n.to_be_bytes()).await?;
                conn.write_all(&answer[..usize::from(n)]).await?;
            }
        }
    }

    /// The answer to one query, from `names` or an upstream; `None` for garbage.
    async fn answer(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let msg = Message::from_vec(query).ok()?;
        if msg.message_type() != MessageType::Query {
            return None;
        }
        if let Some(reply) = self.local(&msg) {
            return reply.to_vec().ok();
        }
        if msg.op_code() != OpCode::Query || self.upstreams.is_empty() {
            let code = if msg.op_code() == OpCode::Query {
                ResponseCode::NXDomain
            } else {
                ResponseCode::NotImp
            };
            return reply_to(&msg, code).to_vec().ok();
        }
        for up in &self.upstreams {
            let answer = if tcp {
                forward_tcp(*up, query).await
            } else {
                forward_udp(*up, query).await
            };
            if let Some(a) = answer {
                return Some(a);
            }
        }
        reply_to(&msg, ResponseCode::ServFail).to_vec().ok()
    }

    /// An answer from the network's own names: A, AAAA and PTR of a known name or address.
    fn local(&self, msg: &Message) -> Option<Message> {
        let [q] = msg.queries() else { return None };
        let names = self.names.read().unwrap_or_else(|p| p.into_inner());
        let key = q.name().to_lowercase().to_utf8();
        let key = key.trim_end_matches('.');
        let mut reply = reply_to(msg, ResponseCode::NoError);
        reply.set_authoritative(true);
        match q.query_type() {
            RecordType::A | RecordType::AAAA => {
                let ips = names.get(key)?;
                for ip in ips {
                    let rdata = match (ip, q.query_type()) {
                        (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                        (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                        _ => continue,
                    };
                    reply.add_answer(Record::from_rdata(q.name().clone(), TTL, rdata));
                }
                Some(reply)
            }
            RecordType::PTR => {
                let ip = reverse_ip(key)?;
                let name = names
                    .iter()
                    .filter(|(_, ips)| ips.contains(&ip))
                    .map(|(n, _)| n)
                    // The container's name before its short id and aliases: the longest.
                    .max_by_key(|n| n.len())?;
                let target = Name::from_ascii(format!("{name}.")).ok()?;
                reply.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::PTR(PTR(target))));
                Some(reply)
            }
            _ => None,
        }
    }
}

fn reply_to(msg: &Message, code: ResponseCode) -> Message {
    let mut reply = Message::new();
    reply
        .set_id(msg.id())
        .set_message_type(MessageType::Response)
        .set_op_code(msg.op_code())
        .set_recursion_desired(msg.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(code);
    for q in msg.queries() {
        reply.add_query(q.clone());
    }
    reply
}

/// `4.3.2.1.in-addr.arpa` / the nibbles of `ip6.arpa` -> the address.
fn reverse_ip(name: &str) -> Option<IpAddr> {
    if let Some(v4) = name.strip_suffix(".in-addr.arpa") {
        let mut octets: Vec<u8> = v4.split('.').map(|o| o.parse().ok()).collect::<Option<_>>()?;
        if octets.len() != 4 {
            return None;
        }
        octets.reverse();
        return Some(IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3])));
    }
    let v6 = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = v6
        .split('.')
        .map(|n| u8::from_str_radix(n, 16).ok().filter(|_| n.len() == 1))
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let v = nibbles.iter().rev().fold(0u128, |acc, n| (acc << 4) | u128::from(*n));
    Some(IpAddr::V6(Ipv6Addr::from(v)))
}

async fn forward_udp(up: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let local: SocketAddr = if up.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(local).await.ok()?;
    sock.connect(up).await.ok()?;
    sock.send(query).await.ok()?;
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    // Only the answer to this query (same id).
    (n >= 2 && query.len() >= 2 && buf[..2] == query[..2]).then(|| buf[..n].to_vec())
}

async fn forward_tcp(up: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let work = async {
        let mut conn = tokio::net::TcpStream::connect(up).await.ok()?;
        let n = u16::try_from(query.len()).ok()?;
        conn.write_all(&n.to_be_bytes()).await.ok()?;
        conn.write_all(query).await.ok()?;
        let mut len = [0u8; 2];
        conn.read_exact(&mut len).await.ok()?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        conn.read_exact(&mut answer).await.ok()?;
        Some(answer)
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, work).await.ok()?
}

/// The nameservers of a resolv.conf file, port 53; empty when it cannot be read.
pub fn host_resolvers(resolv_conf: &Path) -> Vec<SocketAddr> {
    let Ok(text) = std::fs::read_to_string(resolv_conf) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|s| s.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, t: RecordType, id: u16) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id)
            .set_message_type(MessageType::Query)
            .set_recursion_desired(true);
        m.add_query(hickory_proto::op::Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    fn answers(bytes: &[u8]) -> (ResponseCode, Vec<String>) {
        let m = Message::from_vec(bytes).unwrap();
        (
            m.response_code(),
            m.answers().iter().map(|r| r.data().to_string()).collect(),
        )
    }

    async fn udp_ask(at: SocketAddr, q: &[u8]) -> Vec<u8> {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(q, at).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        buf[..n].to_vec()
    }

    fn free_port() -> SocketAddr {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = s.local_addr().unwrap();
        // TCP on the same port must be free as well.
        if std::net::TcpListener::bind(a).is_err() {
            return free_port();
        }
        a
    }

    #[tokio::test]
    async fn answers_names_forwards_the_rest_and_fails_cleanly() {
        let names: Names = Arc::default();
        names.write().unwrap().insert(
            "web".into(),
            vec!["172.18.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
        );
        // The upstream: a second server with its own names.
        let up_names: Names = Arc::default();
        up_names
            .write()
            .unwrap()
            .insert("elsewhere.site".into(), vec!["192.0.2.7".parse().unwrap()]);
        let up_at = free_port();
        let _up = DnsServer::start_on(up_at, up_names, vec![]).await.unwrap();
        let at = free_port();
        let _server = DnsServer::start_on(at, names.clone(), vec![up_at]).await.unwrap();

        let (code, a) = answers(&udp_ask(at, &query("WEB.", RecordType::A, 1)).await);
        assert_eq!((code, a), (ResponseCode::NoError, vec!["172.18.0.2".to_owned()]));
        let (_, a) = answers(&udp_ask(at, &query("web.", RecordType::AAAA, 2)).await);
        assert_eq!(a, ["fd00::2"]);
        let (_, a) = answers(&udp_ask(at, &query("2.0.18.172.in-addr.arpa.", RecordType::PTR, 3)).await);
        assert_eq!(a, ["web."]);
        // Forwarded, answer relayed.
        let (code, a) = answers(&udp_ask(at, &query("elsewhere.site.", RecordType::A, 4)).await);
        assert_eq!((code, a), (ResponseCode::NoError, vec!["192.0.2.7".to_owned()]));
        // The upstream does not know it: its NXDOMAIN comes back.
        let (code, _) = answers(&udp_ask(at, &query("nowhere.", RecordType::A, 5)).await);
        assert_eq!(code, ResponseCode::NXDomain);
        // An update is seen at once.
        names
            .write()
            .unwrap()
            .insert("db".into(), vec!["172.18.0.3".parse().unwrap()]);
        let (_, a) = answers(&udp_ask(at, &query("db.", RecordType::A, 6)).await);
        assert_eq!(a, ["172.18.0.3"]);
        // TCP.
        let mut c = tokio::net::TcpStream::connect(at).await.unwrap();
        let q = query("web.", RecordType::A, 7);
        c.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
        c.write_all(&q).await.unwrap();
        let mut len = [0u8; 2];
        c.read_exact(&mut len).await.unwrap();
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(answers(&buf).1, ["172.18.0.2"]);

        // An upstream that does not answer: SERVFAIL after its timeout.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let at2 = free_port();
        let _s2 = DnsServer::start_on(at2, names.clone(), vec![silent.local_addr().unwrap()])
            .await
            .unwrap();
        let (code, _) = answers(&udp_ask(at2, &query("nowhere.", RecordType::A, 8)).await);
        assert_eq!(code, ResponseCode::ServFail);
        // Garbage is dropped, the server keeps serving.
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(b"\x00\x01garbage", at).await.unwrap();
        let (_, a) = answers(&udp_ask(at, &query("web.", RecordType::A, 9)).await);
        assert_eq!(a, ["172.18.0.2"]);
    }

    #[test]
    fn reverse_names_and_resolv_conf() {
        assert_eq!(reverse_ip("9.0.5.10.in-addr.arpa"), Some("10.5.0.9".parse().unwrap()));
        let v6 = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
        assert_eq!(reverse_ip(v6), Some("fd00::2".parse().unwrap()));
        assert_eq!(reverse_ip("x.in-addr.arpa"), None);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("resolv.conf");
        std::fs::write(
            &p,
            "search x\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver bogus\n",
        )
        .unwrap();
        assert_eq!(
            host_resolvers(&p),
            ["10.0.0.2:53".parse().unwrap(), "[fe80::1]:53".parse().unwrap()]
        );
        assert!(host_resolvers(&d.path().join("none")).is_empty());
    }
}
