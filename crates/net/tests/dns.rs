//! The embedded DNS server on port 53 inside a throwaway namespace, with a fake upstream on
//! another address of the same namespace:
//!
//! ```text
//! lo  10.90.0.1/32  the server under test
//!     10.90.0.2/32  a fake upstream (answers, or stays silent)
//!     10.90.0.3/32  nobody listens (ICMP port unreachable)
//! ```
//!
//! Each test runs a current-thread tokio runtime on a thread inside the namespace, so every
//! socket (server, upstream, client) is created there.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use berth_net::dns::{self, DnsServer, Names};
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType, rdata::A};
use support::Netns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 90, 0, 1));
const UPSTREAM: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 90, 0, 2)), 53);
const NOBODY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 90, 0, 3)), 53);

fn require() -> bool {
    berth_testkit::require(&[berth_testkit::Prereq::Root, berth_testkit::Prereq::Netns])
}

/// Runs `test` in a fresh namespace with the addresses above.
fn in_netns<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F + Send) {
    let ns = Netns::new();
    for addr in ["10.90.0.1/32", "10.90.0.2/32", "10.90.0.3/32"] {
        ns.ip(&format!("addr add {addr} dev lo"));
    }
    ns.run(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(test());
    });
}

fn names(entries: &[(&str, &[&str])]) -> Names {
    let map: BTreeMap<String, Vec<IpAddr>> = entries
        .iter()
        .map(|(name, addrs)| (name.to_string(), addrs.iter().map(|a| a.parse().unwrap()).collect()))
        .collect();
    Arc::new(RwLock::new(map))
}

fn question(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(rand::random()).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.to_vec().unwrap()
}

async fn udp_raw(query: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("0.0.0.0:0").await.unwrap();
    socket.connect(SocketAddr::new(SERVER, 53)).await.unwrap();
    socket.send(query).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let len = tokio::time::timeout(Duration::from_secs(6), socket.recv(&mut buf))
        .await
        .expect("the DNS server answers")
        .unwrap();
    buf.truncate(len);
    buf
}

async fn tcp_raw(query: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(SocketAddr::new(SERVER, 53)).await.unwrap();
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).await.unwrap();
    let len = tokio::time::timeout(Duration::from_secs(6), stream.read_u16())
        .await
        .expect("the DNS server answers")
        .unwrap();
    let mut reply = vec![0u8; usize::from(len)];
    stream.read_exact(&mut reply).await.unwrap();
    reply
}

async fn ask(name: &str, qtype: RecordType) -> Message {
    let query = question(name, qtype);
    let reply = Message::from_vec(&udp_raw(&query).await).unwrap();
    assert_eq!(reply.id(), u16::from_be_bytes([query[0], query[1]]));
    reply
}

fn data(m: &Message) -> Vec<String> {
    m.answers().iter().map(|r| r.data().to_string()).collect()
}

/// A fake upstream on [`UPSTREAM`], UDP and TCP: answers every question with A 192.0.2.55,
/// TTL 1234, and keeps the bytes it sent.
struct Upstream {
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

fn upstream_answer(query: &[u8]) -> Vec<u8> {
    let request = Message::from_vec(query).unwrap();
    let mut reply = Message::new();
    reply
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_recursion_desired(true)
        .set_recursion_available(true);
    reply.add_queries(request.queries().iter().cloned());
    let name = request.queries()[0].name().clone();
    reply.add_answer(Record::from_rdata(name, 1234, RData::A(A::new(192, 0, 2, 55))));
    reply.to_vec().unwrap()
}

async fn upstream() -> Upstream {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let udp = UdpSocket::bind(UPSTREAM).await.unwrap();
    let tcp = TcpListener::bind(UPSTREAM).await.unwrap();
    let log = sent.clone();
    let udp_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((len, peer)) = udp.recv_from(&mut buf).await {
            let reply = upstream_answer(&buf[..len]);
            log.lock().unwrap().push(reply.clone());
            let _ = udp.send_to(&reply, peer).await;
        }
    });
    let log = sent.clone();
    let tcp_task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            let len = stream.read_u16().await.unwrap();
            let mut query = vec![0u8; usize::from(len)];
            stream.read_exact(&mut query).await.unwrap();
            let reply = upstream_answer(&query);
            log.lock().unwrap().push(reply.clone());
            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&reply);
            stream.write_all(&framed).await.unwrap();
        }
    });
    Upstream {
        sent,
        tasks: vec![udp_task, tcp_task],
    }
}

#[test]
fn answers_its_names() {
    if !require() {
        return;
    }
    in_netns(|| async {
        let names = names(&[("web", &["10.90.0.10", "fd90::10"]), ("db", &["10.90.0.11"])]);
        let server = DnsServer::start(SERVER, names.clone(), vec![]).await.unwrap();
        assert_eq!(server.local_addr(), SocketAddr::new(SERVER, 53));

        let a = ask("web", RecordType::A).await;
        assert_eq!(a.response_code(), ResponseCode::NoError);
        assert!(a.authoritative());
        assert_eq!(data(&a), vec!["10.90.0.10"]);
        assert_eq!(a.answers()[0].ttl(), dns::TTL);
        // Case-insensitive, with or without the trailing dot; the question is echoed as asked.
        let upper = ask("WeB.", RecordType::A).await;
        assert_eq!(data(&upper), vec!["10.90.0.10"]);
        assert_eq!(upper.queries()[0].name().to_ascii(), "WeB.");
        assert_eq!(data(&ask("web", RecordType::AAAA).await), vec!["fd90::10"]);
        // A known name without an IPv6 address: an empty NOERROR, not NXDOMAIN.
        let none = ask("db", RecordType::AAAA).await;
        assert_eq!(none.response_code(), ResponseCode::NoError);
        assert!(none.answers().is_empty());
        assert_eq!(
            data(&ask("11.0.90.10.in-addr.arpa.", RecordType::PTR).await),
            vec!["db."]
        );
        let v6 = Name::from("fd90::10".parse::<IpAddr>().unwrap()).to_ascii();
        assert_eq!(data(&ask(&v6, RecordType::PTR).await), vec!["web."]);
        // Unknown, and no upstream to ask.
        assert_eq!(ask("nope", RecordType::A).await.response_code(), ResponseCode::NXDomain);
        assert_eq!(
            ask("99.0.90.10.in-addr.arpa.", RecordType::PTR).await.response_code(),
            ResponseCode::NXDomain
        );

        // Over TCP.
        let tcp = Message::from_vec(&tcp_raw(&question("DB", RecordType::A)).await).unwrap();
        assert_eq!(data(&tcp), vec!["10.90.0.11"]);

        // Changes to the names are seen at once.
        names
            .write()
            .unwrap()
            .insert("cache".into(), vec!["10.90.0.12".parse().unwrap()]);
        assert_eq!(data(&ask("cache", RecordType::A).await), vec!["10.90.0.12"]);
        names
            .write()
            .unwrap()
            .insert("web".into(), vec!["10.90.0.20".parse().unwrap()]);
        assert_eq!(data(&ask("web", RecordType::A).await), vec!["10.90.0.20"]);
        names.write().unwrap().remove("db");
        assert_eq!(ask("db", RecordType::A).await.response_code(), ResponseCode::NXDomain);

        server.stop().await;
    });
}

#[test]
fn forwards_what_it_does_not_know() {
    if !require() {
        return;
    }
    in_netns(|| async {
        let upstream = upstream().await;
        let names = names(&[("web", &["10.90.0.10"])]);
        // The first upstream refuses (nobody listens), the second answers.
        let server = DnsServer::start(SERVER, names, vec![NOBODY, UPSTREAM]).await.unwrap();

        let reply = udp_raw(&question("Example.Test.", RecordType::A)).await;
        assert_eq!(
            upstream.sent.lock().unwrap().as_slice(),
            std::slice::from_ref(&reply),
            "relayed unchanged"
        );
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(data(&reply), vec!["192.0.2.55"]);
        assert_eq!(reply.answers()[0].ttl(), 1234);

        let reply = tcp_raw(&question("over.tcp.test", RecordType::A)).await;
        assert_eq!(upstream.sent.lock().unwrap().last(), Some(&reply), "forwarded over TCP");

        // Its own names are not forwarded.
        let before = upstream.sent.lock().unwrap().len();
        assert_eq!(data(&ask("web", RecordType::A).await), vec!["10.90.0.10"]);
        assert_eq!(upstream.sent.lock().unwrap().len(), before);
        server.stop().await;
    });
}

#[test]
fn servfail_when_no_upstream_answers() {
    if !require() {
        return;
    }
    in_netns(|| async {
        // Bound but silent: the server waits its 2 s, then gives up.
        let silent = UdpSocket::bind(UPSTREAM).await.unwrap();
        let server = DnsServer::start(SERVER, names(&[]), vec![NOBODY, UPSTREAM])
            .await
            .unwrap();
        let reply = ask("example.test", RecordType::A).await;
        assert_eq!(reply.response_code(), ResponseCode::ServFail);
        assert!(reply.answers().is_empty());
        drop(silent);
        server.stop().await;
    });
}

#[test]
fn stop_and_drop_free_the_port() {
    if !require() {
        return;
    }
    in_netns(|| async {
        let server = DnsServer::start(SERVER, names(&[("a", &["10.90.0.10"])]), vec![])
            .await
            .unwrap();
        // Taken while it runs.
        let err = DnsServer::start(SERVER, names(&[]), vec![]).await.err().unwrap();
        assert!(err.to_string().contains("10.90.0.1:53"), "{err}");
        server.stop().await;
        let again = DnsServer::start(SERVER, names(&[("b", &["10.90.0.11"])]), vec![])
            .await
            .unwrap();
        assert_eq!(data(&ask("b", RecordType::A).await), vec!["10.90.0.11"]);
        drop(again);
        // Dropped: the runtime closes the sockets when it next polls the aborted tasks.
        let mut socket = UdpSocket::bind(SocketAddr::new(SERVER, 53)).await;
        for _ in 0..100 {
            if socket.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            socket = UdpSocket::bind(SocketAddr::new(SERVER, 53)).await;
        }
        assert!(socket.is_ok(), "the port is free after drop: {socket:?}");
        // An address that is not on any link.
        let err = DnsServer::start("10.90.0.99".parse().unwrap(), names(&[]), vec![])
            .await
            .err()
            .unwrap();
        assert!(matches!(err, berth_net::Error::DnsBind { .. }), "{err}");
    });
}
