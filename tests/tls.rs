//! TLS listeners (`SSL://`), with real clients: confluent-kafka
//! (librdkafka) and kafka-python produce, consume in a group and use the
//! admin API over TLS; `ssl.client.auth=required` admits a certificate the
//! truststore's CA signed and refuses none or a stranger's; the listener
//! closes plaintext and silent connections and stays up; changed
//! certificate files are served to new connections without a restart.
//!
//! Certificates come from the `openssl` command (tests/common/pki.rs).
//! The Python clients: `make deps` (pip confluent-kafka, kafka-python).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::pki::{Ca, Issued};
use common::{free_port, Node, RawConn};
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/tls_clients.py");

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A node with PLAINTEXT and an SSL listener on `ssl_port`, serving
/// `server`, with `more` settings.
fn ssl_node(ssl_port: u16, server: &Issued, more: &[(&str, &str)]) -> Node {
    let mut settings = vec![("ssl.keystore.location", path(&server.keystore))];
    settings.extend_from_slice(more);
    Node::start_with_listeners(&[("SSL", ssl_port)], &settings)
}

/// Runs the Python client script; (passed, stdout+stderr).
fn clients(
    client: &str,
    mode: &str,
    bootstrap: &str,
    ca: &Path,
    cert: Option<&Issued>,
) -> (bool, String) {
    let mut cmd = Command::new("python3");
    cmd.arg(SCRIPT)
        .args([client, mode, bootstrap, path(ca)])
        .env("PYTHONDONTWRITEBYTECODE", "1");
    if let Some(c) = cert {
        cmd.args([path(&c.cert), path(&c.key)]);
    }
    step!("python3 tls_clients.py {client} {mode} {bootstrap}");
    let out = cmd
        .output()
        .expect("run python3 (make deps installs its clients)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for line in text
        .lines()
        .filter(|l| l.starts_with("PASS") || l.starts_with("FAIL"))
    {
        step!("  {client}: {line}");
    }
    (out.status.success(), text)
}

fn assert_clients(client: &str, mode: &str, bootstrap: &str, ca: &Path, cert: Option<&Issued>) {
    let (ok, text) = clients(client, mode, bootstrap, ca, cert);
    assert!(ok, "{client} {mode} over TLS failed:\n{text}");
}

/// A rustls client trusting `ca` only: the TLS session to
/// 127.0.0.1:`port`, or the handshake's error.
fn tls_connect(
    port: u16,
    ca: &Path,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("read CA") {
        roots.add(c.expect("CA cert")).expect("add CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| e.to_string())?;
    }
    Ok(tls)
}

/// ApiVersions over a TLS session: the number of API keys listed.
fn api_versions_over(tls: &mut impl ReadWrite) -> usize {
    tls.write_all(&common::encode_request(
        3,
        7,
        &ApiVersionsRequest::default(),
    ))
    .expect("send ApiVersions");
    let mut len = [0u8; 4];
    tls.read_exact(&mut len).expect("response length");
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    tls.read_exact(&mut body).expect("response body");
    let (cid, resp): (i32, ApiVersionsResponse) =
        common::decode_response::<ApiVersionsRequest>(3, Bytes::from(body)).expect("decode");
    assert_eq!(cid, 7);
    assert_eq!(resp.error_code, 0);
    resp.api_keys.len()
}

/// What the broker sends before it closes the connection; panics if it
/// is still open after `within`.
fn read_until_closed(s: &mut TcpStream, within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "still open after {within:?}; got {got:02x?}"
        );
        s.set_read_timeout(Some(left)).expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A directory with a test CA and a server certificate it signed, and a
/// free port for the SSL listener.
fn pki() -> (tempfile::TempDir, Ca, Issued, u16) {
    let dir = tempfile::tempdir().expect("pki dir");
    let ca = Ca::new(dir.path(), "ca", "/CN=Runnel test CA");
    let server = ca.server("server");
    (dir, ca, server, free_port())
}

#[test]
fn librdkafka_and_kafka_python_produce_consume_and_administer_over_ssl() {
    let (dir, ca, server, port) = pki();
    let node = ssl_node(port, &server, &[]);
    let bootstrap = format!("127.0.0.1:{port}");
    assert_clients("confluent", "roundtrip", &bootstrap, &ca.pem(), None);
    assert_clients("kafka-python", "roundtrip", &bootstrap, &ca.pem(), None);
    // A client that does not trust the server's CA gets nowhere.
    let other = Ca::new(dir.path(), "other", "/CN=Some other CA");
    assert_clients("confluent", "refused", &bootstrap, &other.pem(), None);
    assert!(node
        .log_since_start()
        .contains("listening for Kafka clients listener=SSL"));
}

#[test]
fn required_client_auth_admits_a_signed_certificate_and_refuses_others() {
    let (dir, ca, server, port) = pki();
    let alice = ca.client("alice", "/O=Acme/OU=eng/CN=alice");
    let stranger_ca = Ca::new(dir.path(), "stranger-ca", "/CN=Stranger CA");
    let mallory = stranger_ca.client("mallory", "/CN=mallory");
    let mut node = ssl_node(
        port,
        &server,
        &[
            ("ssl.client.auth", "required"),
            ("ssl.truststore.location", path(&ca.pem())),
        ],
    );
    let bootstrap = format!("127.0.0.1:{port}");
    assert_clients(
        "confluent",
        "roundtrip",
        &bootstrap,
        &ca.pem(),
        Some(&alice),
    );
    assert_clients(
        "kafka-python",
        "roundtrip",
        &bootstrap,
        &ca.pem(),
        Some(&alice),
    );
    assert_clients("confluent", "refused", &bootstrap, &ca.pem(), None);
    assert_clients("kafka-python", "refused", &bootstrap, &ca.pem(), None);
    assert_clients(
        "confluent",
        "refused",
        &bootstrap,
        &ca.pem(),
        Some(&mallory),
    );
    node.assert_alive("after refused clients");
    // The principal the broker makes of alice's certificate: the subject
    // as Kafka writes it (RFC 2253, last RDN first), then mapped by
    // ssl.principal.mapping.rules.
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(&alice.cert).expect("alice's cert");
    let of = |rules: &str| {
        let rules = runnel::config::security::PrincipalRules::parse(rules).expect("rules");
        runnel::security::principal::of_certificate(&der, &rules)
    };
    assert_eq!(of("DEFAULT").as_deref(), Ok("User:CN=alice,OU=eng,O=Acme"));
    assert_eq!(
        of("RULE:^CN=(.*?),OU=(.*?),.*$/$1@$2/U").as_deref(),
        Ok("User:ALICE@ENG")
    );
    assert!(
        of("RULE:^CN=bob.*$/bob/").is_err(),
        "no rule applies: refused"
    );
}

#[test]
fn the_tls_listener_closes_plaintext_and_silent_connections_and_stays_up() {
    let (_dir, ca, server, port) = pki();
    let mut node = ssl_node(port, &server, &[]);
    let addr = format!("127.0.0.1:{port}");

    step!("a plaintext ApiVersions to the TLS listener");
    let mut plain = RawConn::connect(&addr).expect("connect");
    plain
        .stream
        .write_all(&common::encode_request(
            3,
            1,
            &ApiVersionsRequest::default(),
        ))
        .expect("send");
    let answer = read_until_closed(&mut plain.stream, Duration::from_secs(10));
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "closed with at most a TLS alert, got {answer:02x?}"
    );

    step!("a connection that never starts its handshake");
    let started = Instant::now();
    let mut silent = RawConn::connect(&addr).expect("connect");
    silent
        .expect_closed(Duration::from_secs(20))
        .expect("closed after the handshake timeout");
    step!("closed after {:?}", started.elapsed());

    step!("half a ClientHello, then nothing");
    let mut slow = RawConn::connect(&addr).expect("connect");
    slow.stream
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .expect("send");
    let answer = read_until_closed(&mut slow.stream, Duration::from_secs(20));
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "closed with at most a TLS alert, got {answer:02x?}"
    );

    node.assert_alive("after hostile TLS connections");
    let mut tls = tls_connect(port, &ca.pem()).expect("a real client still gets in");
    assert!(api_versions_over(&mut tls) > 10, "ApiVersions over TLS");
    common::assert_serving(&mut node, "on PLAINTEXT beside the TLS listener");
}

#[test]
fn changed_certificate_files_are_reloaded_without_a_restart() {
    let dir = tempfile::tempdir().expect("pki dir");
    let first = Ca::new(dir.path(), "first", "/CN=First CA");
    let second = Ca::new(dir.path(), "second", "/CN=Second CA");
    let old = first.server("old");
    let new = second.server("new");
    // The broker's keystore: a copy it reads, overwritten below.
    let live = Issued {
        cert: dir.path().join("live.pem"),
        key: dir.path().join("live.key"),
        keystore: dir.path().join("live-keystore.pem"),
    };
    std::fs::copy(&old.keystore, &live.keystore).expect("copy keystore");
    let port = free_port();
    let node = ssl_node(port, &live, &[]);
    let pid = node.pid().expect("running");

    let mut tls = tls_connect(port, &first.pem()).expect("the first CA's certificate is served");
    assert!(api_versions_over(&mut tls) > 10);
    let refused = tls_connect(port, &second.pem()).err();
    assert!(refused.is_some(), "not yet the second CA's");

    step!("replace the keystore file with one the second CA signed");
    let tmp = dir.path().join("live-keystore.pem.tmp");
    std::fs::copy(&new.keystore, &tmp).expect("copy");
    std::fs::rename(&tmp, &live.keystore).expect("rename");
    let served = common::eventually(
        Duration::from_secs(30),
        "the new certificate served",
        || tls_connect(port, &second.pem()).ok(),
    );
    let mut served = served;
    assert!(
        api_versions_over(&mut served) > 10,
        "ApiVersions with the new certificate"
    );
    // The session opened before the change still works.
    assert!(api_versions_over(&mut tls) > 10, "the old session goes on");
    assert_eq!(node.pid(), Some(pid), "no restart");
    assert!(node
        .log_since_start()
        .contains("TLS certificates changed on disk: reloaded"));

    step!("a broken keystore is not taken: the new certificate stays");
    std::fs::write(&tmp, "not a pem file").expect("write");
    std::fs::rename(&tmp, &live.keystore).expect("rename");
    common::eventually(Duration::from_secs(30), "the failed reload logged", || {
        node.log_since_start()
            .contains("cannot be loaded; keeping the ones in use")
            .then_some(())
    });
    let mut still = tls_connect(port, &second.pem()).expect("still the second CA's certificate");
    assert!(api_versions_over(&mut still) > 10);
}
