//! The harness against a real nats-server: it speaks NATS with JetStream on the
//! promised port, keeps port and store across a restart, and runs old servers
//! on request. Talks raw NATS protocol so the harness is tested without a client
//! library.

#![allow(clippy::expect_used)] // a test fails loudly on any unexpected error

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use testkit::{parse_version, NatsServer, MAX_PAYLOAD, MIN_SERVER_VERSION};

/// A minimal NATS client over the text protocol.
struct Raw {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    info: String,
    next_sid: u32,
}

impl Raw {
    /// The INFO line a server sends before any authentication.
    fn info_only(port: u16) -> String {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).expect("INFO");
        assert!(line.starts_with("INFO {"), "{line:?}");
        line
    }

    fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let writer = stream.try_clone().expect("clone");
        let mut raw = Raw {
            reader: BufReader::new(stream),
            writer,
            info: String::new(),
            next_sid: 1,
        };
        raw.info = raw.line();
        assert!(raw.info.starts_with("INFO {"), "{:?}", raw.info);
        raw.send("CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true}\r\nPING\r\n");
        assert_eq!(raw.line(), "PONG");
        raw
    }

    fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).expect("write");
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read");
        line.trim_end().to_owned()
    }

    /// Publishes `payload` to `subject` and returns the first reply.
    fn request(&mut self, subject: &str, payload: &str) -> String {
        let sid = self.next_sid;
        self.next_sid += 1;
        let inbox = format!("_INBOX.testkit.{sid}");
        self.send(&format!(
            "SUB {inbox} {sid}\r\nPUB {subject} {inbox} {}\r\n{payload}\r\n",
            payload.len()
        ));
        loop {
            let line = self.line();
            if line == "PING" {
                self.send("PONG\r\n");
                continue;
            }
            assert!(!line.starts_with("-ERR"), "{line}");
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.first() == Some(&"MSG") && fields.get(1) == Some(&inbox.as_str()) {
                let len: usize = fields.last().and_then(|n| n.parse().ok()).expect("len");
                let mut body = vec![0; len + 2];
                self.reader.read_exact(&mut body).expect("body");
                body.truncate(len);
                return String::from_utf8(body).expect("utf8");
            }
        }
    }
}

#[test]
fn start_serves_nats_with_jetstream_on_its_port() {
    let nats = NatsServer::start().expect("start");
    let port = nats.port();
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));
    let version = parse_version(&nats.version()).expect("version");
    assert!(version >= MIN_SERVER_VERSION, "{}", nats.version());

    let raw = Raw::connect(port);
    for expected in [
        format!("\"port\":{port}"),
        format!("\"version\":\"{}\"", nats.version()),
        format!("\"max_payload\":{MAX_PAYLOAD}"),
        "\"jetstream\":true".to_owned(),
    ] {
        assert!(
            raw.info.contains(&expected),
            "{expected} not in {}",
            raw.info
        );
    }
    assert!(nats.store_dir().join("jetstream").is_dir());
}

#[test]
fn restart_keeps_port_and_jetstream_store() {
    let mut nats = NatsServer::start().expect("start");
    let port = nats.port();
    {
        let mut raw = Raw::connect(port);
        let created = raw.request(
            "$JS.API.STREAM.CREATE.TESTKIT",
            r#"{"name":"TESTKIT","subjects":["testkit.>"],"storage":"file"}"#,
        );
        assert!(created.contains("stream_create_response"), "{created}");
        assert!(!created.contains("\"error\""), "{created}");
        let ack = raw.request("testkit.hello", "hello");
        assert!(
            ack.contains(r#""stream":"TESTKIT""#) && ack.contains(r#""seq":1"#),
            "{ack}"
        );
    }

    nats.stop();
    assert!(
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err(),
        "port {port} still answers after stop"
    );
    nats.stop(); // stopping twice is harmless

    nats.restart().expect("restart");
    assert_eq!(nats.port(), port);
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));
    let info = Raw::connect(port).request("$JS.API.STREAM.INFO.TESTKIT", "");
    assert!(info.contains(r#""messages":1"#), "{info}");

    nats.restart().expect("restart while running");
    assert_eq!(nats.port(), port);
}

#[test]
fn restart_waits_while_another_process_briefly_holds_the_port() {
    let mut nats = NatsServer::start().expect("start");
    let port = nats.port();
    nats.stop();
    let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("take the port");
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        drop(squatter);
    });
    let started = Instant::now();
    nats.restart().expect("restart once the port is free");
    release.join().expect("join");
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert_eq!(nats.port(), port);
    assert!(Raw::connect(port).info.contains("\"jetstream\":true"));
    let log = std::fs::read_to_string(nats.log_file()).expect("log");
    assert!(log.contains("address already in use"), "{log}");
}

#[test]
fn drop_kills_the_server() {
    let nats = NatsServer::start().expect("start");
    let port = nats.port();
    let store = nats.store_dir();
    drop(nats);
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
    assert!(!store.exists(), "store {} left behind", store.display());
}

#[test]
fn legacy_server_starts_when_asked_for_explicitly() {
    let Some(legacy) =
        testkit::legacy_server_or_skip("legacy_server_starts_when_asked_for_explicitly")
    else {
        return;
    };
    let nats = NatsServer::start_with_binary(&legacy).expect("start 2.9");
    assert!(nats.version().starts_with("2.9."), "{}", nats.version());
    let raw = Raw::connect(nats.port());
    assert!(raw.info.contains("\"version\":\"2.9."), "{}", raw.info);
    assert!(raw.info.contains("\"jetstream\":true"), "{}", raw.info);
}

/// The shipped single-node file, started the way deploy/run.sh does (`-c FILE -sd DIR`,
/// passwords in the environment): flags override its ports, it gives 8 MB payloads, and
/// it asks every client for credentials.
#[test]
fn deploy_config_works_with_the_pinned_server() {
    let conf = testkit::workspace_root().join("deploy/nats-server.conf");
    let env = [
        ("BSKY_NATS_INGEST_PASSWORD", "pIngest1"),
        ("BSKY_NATS_CHARTS_PASSWORD", "pCharts1"),
        ("BSKY_NATS_FEEDGEN_PASSWORD", "pFeedgen1"),
        ("BSKY_NATS_GATEWAY_PASSWORD", "pGateway1"),
        ("BSKY_NATS_ARCHIVE_PASSWORD", "pArchive1"),
        ("BSKY_NATS_OPERATOR_PASSWORD", "pOperator1"),
        ("BSKY_NATS_SYS_PASSWORD", "pSys1"),
    ];
    let nats = NatsServer::start_with_config(&conf, &env).expect("deploy/nats-server.conf");
    let info = Raw::info_only(nats.port());
    assert!(
        info.contains(&format!("\"max_payload\":{MAX_PAYLOAD}")),
        "{info}"
    );
    assert!(info.contains("\"jetstream\":true"), "{info}");
    assert!(info.contains("\"auth_required\":true"), "{info}");
    assert!(nats.store_dir().join("jetstream").is_dir());
}

/// Without the passwords in its environment the server does not start, and says which
/// variable is missing.
#[test]
fn deploy_config_without_passwords_names_the_missing_variable() {
    let conf = testkit::workspace_root().join("deploy/nats-server.conf");
    let err = NatsServer::start_with_config(&conf, &[]).expect_err("must not start");
    assert!(err.to_string().contains("BSKY_NATS_"), "{err}");
}

/// Three nodes routed into one JetStream cluster; a killed node stays down, the others run.
#[test]
fn cluster_of_three_is_healthy_and_a_node_can_be_killed() {
    let mut cluster = testkit::Cluster::start(3).expect("cluster");
    assert_eq!(cluster.len(), 3);
    for i in 0..3 {
        let info = Raw::info_only(port_of(&cluster.url(i)));
        assert!(
            info.contains(&format!("\"server_name\":\"{}\"", cluster.name(i))),
            "{info}"
        );
        assert!(info.contains("\"cluster\":"), "{info}");
    }
    assert_eq!(cluster.index_of(cluster.name(1)), Some(1));
    cluster.kill(1);
    assert!(!cluster.is_running(1));
    assert!(cluster.is_running(0) && cluster.is_running(2));
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port_of(&cluster.url(1)))).is_err());
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .expect("port")
        .parse()
        .expect("port number")
}
