//! The embedded DNS server of a user network, listening on the network's gateway address
//! (port 53, UDP and TCP) in the daemon's network namespace; containers on the network get it
//! as their nameserver. It answers A and AAAA queries for the names in its [`Names`] (container
//! names, aliases, short ids; case-insensitive, with or without a trailing dot), and PTR
//! queries for their addresses; everything else is forwarded to the host's resolvers and the
//! answer relayed unchanged (SERVFAIL when none answers).
//!
//! Local answers carry a TTL of [`TTL`] (0): a restarted container usually comes back with
//! another address, and a cache in the container (nscd, systemd-resolved, dnsmasq, a JVM
//! honouring TTLs) would otherwise keep the old one for as long as the TTL says (dockerd's
//! 600 s, aardvark-dns's 60 s). Asking again costs one round trip to the gateway.
//!
//! A name the server knows but with no address of the asked family gets an empty NOERROR
//! answer, not NXDOMAIN, so that a resolver asking A and AAAA in parallel keeps the other.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

use crate::error::{Error, Result};

/// Names on one network and their addresses; the engine updates it as containers start,
/// stop, connect and disconnect.
pub type Names = Arc<RwLock<BTreeMap<String, Vec<IpAddr>>>>;

/// The TTL of local answers (see the module documentation for why 0).
pub const TTL: u32 = 0;

/// How long one upstream has to answer a forwarded query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a TCP client may stay silent before its connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Queries handled at once over UDP; more are dropped (the client retries).
const MAX_UDP_INFLIGHT: usize = 1024;
/// TCP connections served at once; more are closed at once.
const MAX_TCP_CONNECTIONS: usize = 256;
/// The largest UDP answer for a client that sent no EDNS (RFC 1035).
const CLASSIC_UDP_SIZE: usize = 512;
/// The UDP payload size advertised in the EDNS of local answers.
const EDNS_PAYLOAD: u16 = 1232;

/// A running server; stopped when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Binds `addr:53` (UDP and TCP) and serves `names`, forwarding other queries to
    /// `upstreams`. Must be called inside a tokio runtime.
    ///
    /// The sockets are bound before the first await point, so by the thread that polls the
    /// returned future first (the caller's, for `DnsServer::start(…).await`), in that
    /// thread's network namespace. The sockets of forwarded queries are opened by whichever
    /// runtime thread runs the query.
    pub async fn start(addr: IpAddr, names: Names, upstreams: Vec<SocketAddr>) -> Result<DnsServer> {
        Self::bind(SocketAddr::new(addr, 53), names, upstreams)
    }

    /// The synchronous part of [`DnsServer::start`], on any port.
    fn bind(addr: SocketAddr, names: Names, upstreams: Vec<SocketAddr>) -> Result<DnsServer> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Dns {
                addr: addr.to_string(),
                reason: "DnsServer::start must run inside a tokio runtime".into(),
            });
        }
        let bind_err = |proto: &'static str| move |source: io::Error| Error::DnsBind { addr, proto, source };
        let udp = std::net::UdpSocket::bind(addr).map_err(bind_err("UDP"))?;
        udp.set_nonblocking(true).map_err(bind_err("UDP"))?;
        let udp = UdpSocket::from_std(udp).map_err(bind_err("UDP"))?;
        // std sets SO_REUSEADDR on listeners, so a restarted server binds again at once.
        let tcp = std::net::TcpListener::bind(addr).map_err(bind_err("TCP"))?;
        tcp.set_nonblocking(true).map_err(bind_err("TCP"))?;
        let tcp = TcpListener::from_std(tcp).map_err(bind_err("TCP"))?;

        // Never forward to ourselves: a resolv.conf naming the gateway would loop.
        let upstreams = upstreams.into_iter().filter(|u| *u != addr).collect();
        let resolver = Arc::new(Resolver { names, upstreams });
        let tasks = vec![
            tokio::spawn(serve_udp(Arc::new(udp), resolver.clone())),
            tokio::spawn(serve_tcp(tcp, resolver)),
        ];
        tracing::debug!(%addr, "DNS server started");
        Ok(DnsServer { addr, tasks })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits until its sockets are closed, so that the address can be
    /// bound again as soon as this returns (dropping the server only asks the runtime to
    /// stop it).
    pub async fn stop(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            // A cancelled task's error is the expected outcome.
            let _ = task.await;
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The nameservers of a resolv.conf file, port 53; empty when it cannot be read.
///
/// IPv6 link-local servers with a zone (`fe80::1%eth0`) are left out: the zone names an
/// interface of the namespace the file was written for.
pub fn host_resolvers(resolv_conf: &Path) -> Vec<SocketAddr> {
    match std::fs::read_to_string(resolv_conf) {
        Ok(text) => parse_resolv_conf(&text),
        Err(e) => {
            tracing::debug!(path = %resolv_conf.display(), error = %e, "no resolv.conf to read");
            Vec::new()
        }
    }
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// How a query arrived, and so how it is forwarded and how large its answer may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

/// The names and the upstreams; shared by every query.
struct Resolver {
    names: Names,
    upstreams: Vec<SocketAddr>,
}

/// What the names say about one question.
#[derive(Debug, PartialEq)]
enum Local {
    /// Records to answer with (possibly none: the name is known, not with that type).
    Answer(Vec<Record>),
    /// Not a name (or address) of the network.
    Unknown,
}

impl Resolver {
    /// The answer to one message, `None` when none is due (an answer sent to us, garbage
    /// without even a header).
    async fn handle(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let request = match Message::from_vec(query) {
            Ok(request) => request,
            Err(_) => return format_error(query),
        };
        if request.message_type() != MessageType::Query {
            return None;
        }
        if request.op_code() != OpCode::Query {
            return encode(&response(&request, ResponseCode::NotImp), transport, &request);
        }
        if request.queries().len() != 1 {
            return encode(&response(&request, ResponseCode::FormErr), transport, &request);
        }
        match self.lookup(&request) {
            Local::Answer(records) => {
                let mut answer = response(&request, ResponseCode::NoError);
                answer.set_authoritative(true);
                answer.add_answers(records);
                encode(&answer, transport, &request)
            }
            Local::Unknown if self.upstreams.is_empty() => {
                let mut answer = response(&request, ResponseCode::NXDomain);
                answer.set_authoritative(true);
                encode(&answer, transport, &request)
            }
            Local::Unknown => match self.forward(query, transport).await {
                Some(reply) => Some(reply),
                None => encode(&response(&request, ResponseCode::ServFail), transport, &request),
            },
        }
    }

    /// The local answer to the one question of `request`.
    fn lookup(&self, request: &Message) -> Local {
        let Some(question) = request.query() else {
            return Local::Unknown;
        };
        if question.query_class() != DNSClass::IN {
            return Local::Unknown;
        }
        let names = match self.names.read() {
            Ok(names) => names,
            // A writer panicked mid-update; the map itself is still a map.
            Err(poisoned) => poisoned.into_inner(),
        };
        let qname = question.name();
        let qtype = question.query_type();
        if qtype == RecordType::PTR {
            return match ptr_address(qname) {
                Some(ip) => {
                    let records: Vec<Record> = names
                        .iter()
                        .filter(|(_, addrs)| addrs.contains(&ip))
                        .filter_map(|(name, _)| {
                            let mut target = Name::from_ascii(name).ok()?;
                            target.set_fqdn(true);
                            Some(Record::from_rdata(qname.clone(), TTL, RData::PTR(PTR(target))))
                        })
                        .collect();
                    if records.is_empty() {
                        Local::Unknown
                    } else {
                        Local::Answer(records)
                    }
                }
                None => Local::Unknown,
            };
        }
        let Some(addrs) = find(&names, &qname.to_ascii()) else {
            return Local::Unknown;
        };
        let records = addrs
            .iter()
            .filter_map(|ip| {
                let rdata = match (ip, qtype) {
                    (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(*v4)),
                    (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(*v6)),
                    _ => return None,
                };
                Some(Record::from_rdata(qname.clone(), TTL, rdata))
            })
            .collect();
        Local::Answer(records)
    }

    /// Sends `query` to each upstream in turn; the first answer, unchanged.
    async fn forward(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        for &upstream in &self.upstreams {
            let attempt = match transport {
                Transport::Udp => tokio::time::timeout(UPSTREAM_TIMEOUT, forward_udp(query, upstream)).await,
                Transport::Tcp => tokio::time::timeout(UPSTREAM_TIMEOUT, forward_tcp(query, upstream)).await,
            };
            match attempt {
                Ok(Ok(reply)) => return Some(reply),
                Ok(Err(e)) => tracing::debug!(%upstream, ?transport, error = %e, "upstream DNS server failed"),
                Err(_) => tracing::debug!(%upstream, ?transport, "upstream DNS server did not answer in time"),
            }
        }
        None
    }
}

/// The addresses of `name` (case-insensitive, trailing dots ignored on both sides).
fn find<'a>(names: &'a BTreeMap<String, Vec<IpAddr>>, name: &str) -> Option<&'a Vec<IpAddr>> {
    let name = name.trim_end_matches('.');
    if name.is_empty() {
        return None;
    }
    names.get(name).or_else(|| {
        names
            .iter()
            .find(|(key, _)| key.trim_end_matches('.').eq_ignore_ascii_case(name))
            .map(|(_, addrs)| addrs)
    })
}

/// The address a `*.in-addr.arpa.`/`*.ip6.arpa.` name stands for, when it names one address.
fn ptr_address(name: &Name) -> Option<IpAddr> {
    let mut fqdn = name.clone();
    fqdn.set_fqdn(true);
    let net = fqdn.parse_arpa_name().ok()?;
    (net.prefix_len() == net.max_prefix_len()).then(|| net.addr())
}

/// An empty answer to `request`: same id, question, RD and CD bits; EDNS when it had EDNS.
fn response(request: &Message, code: ResponseCode) -> Message {
    let mut answer = Message::new();
    answer
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .set_checking_disabled(request.checking_disabled())
        .set_response_code(code);
    answer.add_queries(request.queries().iter().cloned());
    if request.extensions().is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        answer.set_edns(edns);
    }
    answer
}

/// `answer` on the wire; over UDP, emptied and marked truncated when it is larger than the
/// client takes (then it asks again over TCP).
fn encode(answer: &Message, transport: Transport, request: &Message) -> Option<Vec<u8>> {
    let bytes = match answer.to_vec() {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(error = %e, "failed to encode a DNS answer");
            return None;
        }
    };
    let limit = match (transport, request.extensions()) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, Some(edns)) => usize::from(edns.max_payload()).max(CLASSIC_UDP_SIZE),
        (Transport::Udp, None) => CLASSIC_UDP_SIZE,
    };
    if bytes.len() <= limit {
        return Some(bytes);
    }
    let mut truncated = answer.clone();
    truncated.take_answers();
    truncated.set_truncated(true);
    truncated.to_vec().ok()
}

/// FORMERR for a message that does not parse but has a header to answer to.
fn format_error(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([query[0], query[1]]);
    Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
        .to_vec()
        .ok()
}

async fn forward_udp(query: &[u8], upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected: only the upstream's datagrams come in, and an ICMP "port unreachable" ends
    // the wait at once (ECONNREFUSED) instead of after the timeout.
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let len = socket.recv(&mut buf).await?;
        // The answer to this query: same id, QR set.
        if len >= 12 && buf[..2] == query[..2] && buf[2] & 0x80 != 0 {
            buf.truncate(len);
            return Ok(buf);
        }
    }
}

async fn forward_tcp(query: &[u8], upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    write_framed(&mut stream, query).await?;
    let len = stream.read_u16().await?;
    let mut reply = vec![0u8; usize::from(len)];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}

/// One DNS message over TCP: its length (two bytes, big-endian), then the message, in one
/// write.
async fn write_framed(stream: &mut TcpStream, message: &[u8]) -> io::Result<()> {
    let len =
        u16::try_from(message.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "message too long"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}

async fn serve_udp(socket: Arc<UdpSocket>, resolver: Arc<Resolver>) {
    // The queries in flight belong to this task: aborting it drops the set, which aborts them.
    let mut inflight = JoinSet::new();
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, peer)) => {
                    if inflight.len() >= MAX_UDP_INFLIGHT {
                        tracing::debug!(%peer, "too many DNS queries in flight, dropping one");
                        continue;
                    }
                    let query = buf[..len].to_vec();
                    let socket = socket.clone();
                    let resolver = resolver.clone();
                    inflight.spawn(async move {
                        let Some(reply) = resolver.handle(&query, Transport::Udp).await else {
                            return;
                        };
                        if let Err(e) = socket.send_to(&reply, peer).await {
                            tracing::debug!(%peer, error = %e, "failed to send a DNS answer");
                        }
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "DNS UDP receive failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
        }
    }
}

async fn serve_tcp(listener: TcpListener, resolver: Arc<Resolver>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= MAX_TCP_CONNECTIONS {
                        tracing::debug!(%peer, "too many DNS TCP connections, closing one");
                        continue;
                    }
                    connections.spawn(serve_connection(stream, resolver.clone()));
                }
                Err(e) => {
                    // EMFILE and the like: wait instead of spinning on the error.
                    tracing::warn!(error = %e, "DNS TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Queries one after the other on one connection, until the client closes it or stays
/// silent for [`TCP_IDLE`].
async fn serve_connection(mut stream: TcpStream, resolver: Arc<Resolver>) {
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
            return;
        };
        let mut query = vec![0u8; usize::from(len)];
        let Ok(Ok(_)) = tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query)).await else {
            return;
        };
        let Some(reply) = resolver.handle(&query, Transport::Tcp).await else {
            continue;
        };
        if write_framed(&mut stream, &reply).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    fn resolver(entries: &[(&str, &[&str])], upstreams: Vec<SocketAddr>) -> Resolver {
        let map = entries
            .iter()
            .map(|(name, addrs)| (name.to_string(), addrs.iter().map(|a| a.parse().unwrap()).collect()))
            .collect();
        Resolver {
            names: Arc::new(RwLock::new(map)),
            upstreams,
        }
    }

    fn ask(name: &str, qtype: RecordType) -> Message {
        let mut m = Message::new();
        m.set_id(0x1234).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        m
    }

    async fn answer(r: &Resolver, q: &Message) -> Message {
        let bytes = r.handle(&q.to_vec().unwrap(), Transport::Udp).await.unwrap();
        Message::from_vec(&bytes).unwrap()
    }

    fn addrs(m: &Message) -> Vec<String> {
        m.answers().iter().map(|r| r.data().to_string()).collect()
    }

    #[test]
    fn resolv_conf() {
        let text = "# comment\nnameserver 192.0.2.1\nnameserver  2001:db8::1 \nsearch example\n\
                    nameserver fe80::1%eth0\nnameserver bogus\n;nameserver 192.0.2.9\n";
        let got = parse_resolv_conf(text);
        assert_eq!(
            got,
            vec!["192.0.2.1:53".parse().unwrap(), "[2001:db8::1]:53".parse().unwrap()]
        );
        assert!(host_resolvers(Path::new("/nonexistent/resolv.conf")).is_empty());
    }

    #[tokio::test]
    async fn local_names() {
        let r = resolver(&[("web", &["10.0.0.2", "fd00::2"]), ("Db.", &["10.0.0.3"])], vec![]);
        let a = answer(&r, &ask("WEB.", RecordType::A)).await;
        assert_eq!(a.id(), 0x1234);
        assert_eq!(a.response_code(), ResponseCode::NoError);
        assert_eq!(addrs(&a), vec!["10.0.0.2"]);
        assert_eq!(a.answers()[0].ttl(), TTL);
        assert_eq!(a.queries()[0].name().to_ascii(), "WEB.");
        assert!(a.recursion_desired());
        assert_eq!(addrs(&answer(&r, &ask("web", RecordType::AAAA)).await), vec!["fd00::2"]);
        assert_eq!(addrs(&answer(&r, &ask("db", RecordType::A)).await), vec!["10.0.0.3"]);
        // Known name, no address of that family: NOERROR, no answer.
        let none = answer(&r, &ask("db", RecordType::AAAA)).await;
        assert_eq!(none.response_code(), ResponseCode::NoError);
        assert!(none.answers().is_empty());
        let nx = answer(&r, &ask("nope", RecordType::A)).await;
        assert_eq!(nx.response_code(), ResponseCode::NXDomain);
        let ptr = answer(&r, &ask("2.0.0.10.in-addr.arpa.", RecordType::PTR)).await;
        assert_eq!(addrs(&ptr), vec!["web."]);
        let ptr6 = Name::from(IpAddr::from("fd00::2".parse::<Ipv6Addr>().unwrap()));
        assert_eq!(
            addrs(&answer(&r, &ask(&ptr6.to_ascii(), RecordType::PTR)).await),
            vec!["web."]
        );
    }

    #[tokio::test]
    async fn garbage_and_edges() {
        let r = resolver(&[], vec![]);
        // A header with garbage after it: FORMERR with the same id.
        let mut junk = vec![0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        junk.extend_from_slice(&[0xff; 5]);
        let reply = Message::from_vec(&r.handle(&junk, Transport::Udp).await.unwrap()).unwrap();
        assert_eq!(reply.id(), 0xabcd);
        assert_eq!(reply.response_code(), ResponseCode::FormErr);
        assert!(r.handle(&[1, 2, 3], Transport::Udp).await.is_none());
        // An answer sent to us is not answered.
        let mut resp = ask("x", RecordType::A);
        resp.set_message_type(MessageType::Response);
        assert!(r.handle(&resp.to_vec().unwrap(), Transport::Udp).await.is_none());
    }

    #[tokio::test]
    async fn large_answers_are_truncated_over_udp() {
        let many: Vec<String> = (1..=60).map(|i| format!("10.0.1.{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let r = resolver(&[("a-rather-long-name-for-many-addresses", &many)], vec![]);
        let q = ask("a-rather-long-name-for-many-addresses", RecordType::A);
        let udp = answer(&r, &q).await;
        assert!(udp.truncated());
        assert!(udp.answers().is_empty());
        let tcp = r.handle(&q.to_vec().unwrap(), Transport::Tcp).await.unwrap();
        assert_eq!(Message::from_vec(&tcp).unwrap().answers().len(), 60);
    }
}
