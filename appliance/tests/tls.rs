//! The appliance's TLS side, black-box: `platform::run_appliance` in-process on 127.0.0.1:0 with a
//! temporary state directory, spoken to by a rustls client and a plain TCP client.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keks_proto::advert::Fingerprint;
use keksbox::config::Config;
use keksbox::platform::{self, Listeners};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(10);

struct Box_ {
    https: SocketAddr,
    http: Option<SocketAddr>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

fn test_config() -> Config {
    let mut config = Config::default();
    config.mdns.enabled = false;
    config
}

async fn start(config: Config, state_dir: &Path) -> anyhow::Result<Box_> {
    let main = TcpListener::bind("127.0.0.1:0").await?;
    let redirect = TcpListener::bind("127.0.0.1:0").await?;
    let https = main.local_addr()?;
    let http = redirect.local_addr()?;
    let with_redirect = config.tls.enabled && config.tls.redirect;
    let listeners = Listeners {
        main,
        redirect: with_redirect.then_some(redirect),
    };
    // Load (or make) the certificate as `run` will, so it is on disk before the client reads
    // it to trust it; `run` then finds it and reuses it.
    if config.tls.enabled {
        platform::load_identity(&config, state_dir, keksbox::tls::Regenerate::IfNamesChanged)?;
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(platform::run_appliance(
        config,
        listeners,
        Some(state_dir.to_owned()),
        async {
            let _ = stopped.await;
        },
    ));
    Ok(Box_ {
        https,
        http: with_redirect.then_some(http),
        stop,
        task,
    })
}

impl Box_ {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task).await.unwrap().unwrap().unwrap();
    }
}

fn client_trusting(
    cert_pem: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// GETs `path` over TLS as `name`; returns the response text and the server's fingerprint.
async fn get_tls(
    addr: SocketAddr,
    cert_pem: &Path,
    name: &str,
    path: &str,
) -> Result<(String, Fingerprint), std::io::Error> {
    get_tls_with(
        addr,
        cert_pem,
        name,
        path,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )
    .await
}

async fn get_tls_with(
    addr: SocketAddr,
    cert_pem: &Path,
    name: &str,
    path: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<(String, Fingerprint), std::io::Error> {
    let connector = client_trusting(cert_pem, versions);
    let tcp = TcpStream::connect(addr).await?;
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let mut tls = tokio::time::timeout(WAIT, connector.connect(server_name, tcp)).await??;
    let fingerprint = Fingerprint::of_der(tls.get_ref().1.peer_certificates().unwrap()[0].as_ref());
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    tokio::time::timeout(WAIT, tls.read_to_string(&mut response)).await??;
    Ok((response, fingerprint))
}

fn generated_cert(state: &Path) -> PathBuf {
    state.join("tls/cert.pem")
}

#[tokio::test]
async fn a_restart_keeps_the_fingerprint_and_the_key_is_0600() {
    let state = tempfile::tempdir().unwrap();
    let first = start(test_config(), state.path()).await.unwrap();
    let (resp, fp1) = get_tls(first.https, &generated_cert(state.path()), "localhost", "/version")
        .await
        .unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("keksbox "), "{resp}");
    // The start page gets the same fingerprint from /config.json.
    let (config_json, _) = get_tls(first.https, &generated_cert(state.path()), "localhost", "/config.json")
        .await
        .unwrap();
    assert!(
        config_json.contains(&format!("\"fingerprint_sha256\":\"{fp1}\"")),
        "{config_json}"
    );
    first.stop().await;

    let key_mode = std::fs::metadata(state.path().join("tls/key.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600, "key mode {key_mode:o}");
    let dir_mode = std::fs::metadata(state.path().join("tls"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700, "tls dir mode {dir_mode:o}");

    let second = start(test_config(), state.path()).await.unwrap();
    let (_, fp2) = get_tls(second.https, &generated_cert(state.path()), "localhost", "/version")
        .await
        .unwrap();
    assert_eq!(fp1, fp2, "the fingerprint changed across a restart");
    second.stop().await;
}

#[tokio::test]
async fn a_widened_key_mode_is_set_back_to_0600() {
    let state = tempfile::tempdir().unwrap();
    start(test_config(), state.path()).await.unwrap().stop().await;
    let key = state.path().join("tls/key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    start(test_config(), state.path()).await.unwrap().stop().await;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn a_rustls_client_sees_the_expected_names() {
    let state = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.tls.extra_names = vec!["room2.example".into()];
    let running = start(config, state.path()).await.unwrap();
    let cert = generated_cert(state.path());
    let mut expected = vec!["keksbox.local", "localhost", "127.0.0.1", "::1", "room2.example"];
    let host = keksbox::tls::system_hostname().map(|h| format!("{}.local", h.split('.').next().unwrap_or_default()));
    if let Some(host) = host.as_deref().filter(|h| *h != "localhost.local") {
        expected.push(host);
    }
    for name in expected {
        let (resp, _) = get_tls(running.https, &cert, name, "/version")
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(resp.starts_with("HTTP/1.1 200"), "{name}: {resp}");
    }
    for name in ["other.example", "keksbox.lan", "10.99.99.99"] {
        let err = get_tls(running.https, &cert, name, "/version").await.expect_err(name);
        assert!(err.to_string().contains("not valid for name"), "{name}: {err}");
    }
    running.stop().await;
}

#[tokio::test]
async fn tls12_and_tls13_both_work() {
    let state = tempfile::tempdir().unwrap();
    let running = start(test_config(), state.path()).await.unwrap();
    let cert = generated_cert(state.path());
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let (resp, _) = get_tls_with(running.https, &cert, "localhost", "/", &[version])
            .await
            .unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{version:?}: {resp}");
    }
    running.stop().await;
}

#[tokio::test]
async fn the_http_port_redirects_to_https() {
    let state = tempfile::tempdir().unwrap();
    let running = start(test_config(), state.path()).await.unwrap();
    let resp = plain_request(
        running.http.unwrap(),
        "GET /room?x=1 HTTP/1.1\r\nHost: keksbox.local:8080",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 308"), "{resp}");
    let want = format!("location: https://keksbox.local:{}/room?x=1\r\n", running.https.port());
    assert!(resp.to_ascii_lowercase().contains(&want), "{resp}");
    // A Host the box does not answer to is not reflected: the configured name is used.
    let resp = plain_request(running.http.unwrap(), "GET /x HTTP/1.1\r\nHost: evil.example").await;
    let want = format!("location: https://keksbox.local:{}/x\r\n", running.https.port());
    assert!(resp.to_ascii_lowercase().contains(&want), "{resp}");
    running.stop().await;
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_no_page() {
    let state = tempfile::tempdir().unwrap();
    let running = start(test_config(), state.path()).await.unwrap();
    let mut tcp = TcpStream::connect(running.https).await.unwrap();
    tcp.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut resp)).await.unwrap();
    assert!(
        !String::from_utf8_lossy(&resp).contains("keksbox"),
        "served a page without TLS"
    );
    // And the box keeps serving TLS clients afterwards.
    get_tls(running.https, &generated_cert(state.path()), "localhost", "/version")
        .await
        .unwrap();
    running.stop().await;
}

#[tokio::test]
async fn a_stalled_handshake_is_dropped() {
    let state = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.tls.handshake_timeout_secs = 1;
    let running = start(config, state.path()).await.unwrap();
    let mut tcp = TcpStream::connect(running.https).await.unwrap();
    let mut buf = [0u8; 16];
    // The server closes the silent connection after 1 s; without the timeout this would hang.
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("not dropped")
        .unwrap_or(0);
    assert_eq!(n, 0);
    running.stop().await;
}

#[tokio::test]
async fn tls_off_serves_plain_http_and_no_redirect() {
    let state = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.tls.enabled = false;
    let running = start(config, state.path()).await.unwrap();
    assert!(running.http.is_none());
    let resp = plain_request(running.https, "GET /config.json HTTP/1.1\r\nHost: x").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(!resp.contains("fingerprint"), "{resp}");
    assert!(
        !state.path().join("tls").exists(),
        "no certificate is made with TLS off"
    );
    running.stop().await;
}

/// A certificate and key made by the test, as a user would bring them.
fn user_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf, Fingerprint) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path, Fingerprint::of_der(cert.der().as_ref()))
}

#[tokio::test]
async fn a_user_certificate_is_used_when_set() {
    let state = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let (cert, key, fingerprint) = user_cert(files.path(), "box.example");
    let mut config = test_config();
    config.tls.cert_file = Some(cert.clone());
    config.tls.key_file = Some(key);
    let running = start(config, state.path()).await.unwrap();
    let (resp, seen) = get_tls(running.https, &cert, "box.example", "/config.json")
        .await
        .unwrap();
    assert_eq!(seen, fingerprint);
    assert!(resp.contains(&fingerprint.to_string()), "{resp}");
    assert!(
        !state.path().join("tls").exists(),
        "nothing is generated with a user certificate"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_new_required_name_makes_a_new_certificate_and_a_dropped_one_does_not() {
    let state = tempfile::tempdir().unwrap();
    let fingerprint = |config: Config| {
        let dir = state.path().to_owned();
        async move {
            let running = start(config, &dir).await.unwrap();
            let (_, fp) = get_tls(running.https, &generated_cert(&dir), "localhost", "/version")
                .await
                .unwrap();
            running.stop().await;
            fp
        }
    };
    let plain = fingerprint(test_config()).await;
    let mut extended = test_config();
    extended.tls.extra_names = vec!["new.example".into()];
    let with_new_name = fingerprint(extended).await;
    assert_ne!(plain, with_new_name, "a new name must be covered");
    // A name that is no longer required does not force a new fingerprint on people.
    assert_eq!(fingerprint(test_config()).await, with_new_name);
}

#[tokio::test]
async fn regenerate_cert_makes_a_new_fingerprint() {
    let state = tempfile::tempdir().unwrap();
    let config = test_config();
    let before = platform::load_identity(&config, state.path(), keksbox::tls::Regenerate::IfNamesChanged).unwrap();
    let again = platform::load_identity(&config, state.path(), keksbox::tls::Regenerate::IfNamesChanged).unwrap();
    assert_eq!(before.fingerprint(), again.fingerprint());
    let after = platform::regenerate_cert(&config, state.path()).unwrap();
    assert_ne!(before.fingerprint(), after.fingerprint());
    let running = start(config, state.path()).await.unwrap();
    let (_, served) = get_tls(running.https, &generated_cert(state.path()), "localhost", "/")
        .await
        .unwrap();
    assert_eq!(served, after.fingerprint());
    running.stop().await;
}

#[test]
fn regenerate_cert_refuses_with_a_user_certificate() {
    let mut config = test_config();
    config.tls.cert_file = Some("/etc/c.pem".into());
    config.tls.key_file = Some("/etc/k.pem".into());
    let err = platform::regenerate_cert(&config, Path::new("/nonexistent")).unwrap_err();
    assert!(err.to_string().contains("tls.cert_file"), "{err}");
}

// Bad input: every case is a clear error that names the file and says what to do.

/// Runs the appliance with bad input; it must refuse to start, and this is its error.
async fn start_err(config: Config, state: &Path) -> String {
    let listeners = Listeners {
        main: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        redirect: None,
    };
    let run = platform::run_appliance(config, listeners, Some(state.to_owned()), std::future::pending());
    match tokio::time::timeout(WAIT, run).await {
        Ok(Err(e)) => format!("{e:#}"),
        Ok(Ok(())) => panic!("ran despite bad input"),
        Err(_) => panic!("started despite bad input"),
    }
}

#[tokio::test]
async fn a_missing_user_certificate_is_a_clear_error() {
    let state = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.tls.cert_file = Some("/nonexistent/cert.pem".into());
    config.tls.key_file = Some("/nonexistent/key.pem".into());
    let err = start_err(config, state.path()).await;
    assert!(err.contains("cannot read /nonexistent/cert.pem"), "{err}");
    assert!(err.contains("tls.cert_file"), "{err}");
}

#[tokio::test]
async fn a_corrupt_user_certificate_or_key_is_a_clear_error() {
    let state = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let (cert, key, _) = user_cert(files.path(), "box.example");
    let junk = files.path().join("junk.pem");
    std::fs::write(&junk, "this is not PEM\n").unwrap();
    let damaged = files.path().join("damaged.pem");
    std::fs::write(
        &damaged,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();

    for (c, k, want) in [
        (&junk, &key, "holds no usable certificate"),
        (&cert, &junk, "holds no usable private key"),
        (&damaged, &key, "cannot use the certificate and key"),
    ] {
        let mut config = test_config();
        config.tls.cert_file = Some(c.clone());
        config.tls.key_file = Some(k.clone());
        let err = start_err(config, state.path()).await;
        assert!(err.contains(want), "{err}");
        assert!(err.contains("tls.cert_file"), "{err}");
    }
}

#[tokio::test]
async fn a_key_that_does_not_match_the_certificate_is_a_clear_error() {
    let state = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let (cert, _, _) = user_cert(files.path(), "a.example");
    let (_, other_key, _) = user_cert(files.path(), "b.example");
    let mut config = test_config();
    config.tls.cert_file = Some(cert);
    config.tls.key_file = Some(other_key);
    let err = start_err(config, state.path()).await;
    assert!(err.contains("cannot use the certificate and key"), "{err}");
    assert!(err.to_lowercase().contains("key"), "{err}");
}

/// Starts and stops a box on `state`, returning the fingerprint it served.
async fn served_fingerprint(state: &Path) -> Fingerprint {
    let running = start(test_config(), state).await.unwrap();
    let (_, fp) = get_tls(running.https, &generated_cert(state), "localhost", "/version")
        .await
        .unwrap();
    running.stop().await;
    fp
}

/// The `broken-*` directories a start left in `tls/`, with the files each holds.
fn moved_aside(state: &Path) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(state.join("tls")).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("broken-") {
            let mut files: Vec<String> = std::fs::read_dir(entry.path())
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            out.push(files);
        }
    }
    out
}

#[tokio::test]
async fn a_truncated_generated_certificate_is_moved_aside_and_made_anew() {
    // A power cut during generation used to leave a set that failed every start.
    let state = tempfile::tempdir().unwrap();
    let first = served_fingerprint(state.path()).await;
    std::fs::write(generated_cert(state.path()), "").unwrap();
    let second = served_fingerprint(state.path()).await;
    assert_ne!(first, second, "a new certificate");
    assert_eq!(moved_aside(state.path()), [["cert.pem", "key.pem", "names"]]);
    // The new one is reused from then on.
    assert_eq!(served_fingerprint(state.path()).await, second);
}

#[tokio::test]
async fn a_missing_generated_key_is_moved_aside_and_made_anew() {
    let state = tempfile::tempdir().unwrap();
    let first = served_fingerprint(state.path()).await;
    std::fs::remove_file(state.path().join("tls/key.pem")).unwrap();
    assert_ne!(served_fingerprint(state.path()).await, first);
    assert_eq!(moved_aside(state.path()), [["cert.pem", "names"]]);
}

#[tokio::test]
async fn a_generated_key_behind_a_symlink_is_not_followed() {
    let state = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let first = served_fingerprint(state.path()).await;
    // Someone swaps the key for a link to a file of theirs, readable by all.
    let outside = elsewhere.path().join("their-key.pem");
    std::fs::copy(state.path().join("tls/key.pem"), &outside).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::remove_file(state.path().join("tls/key.pem")).unwrap();
    std::os::unix::fs::symlink(&outside, state.path().join("tls/key.pem")).unwrap();
    assert_ne!(
        served_fingerprint(state.path()).await,
        first,
        "the linked key is not used"
    );
    assert_eq!(
        std::fs::metadata(&outside).unwrap().permissions().mode() & 0o777,
        0o644,
        "the link's target was not touched"
    );
    let key = std::fs::symlink_metadata(state.path().join("tls/key.pem")).unwrap();
    assert!(key.is_file() && key.permissions().mode() & 0o777 == 0o600);
}

#[tokio::test]
async fn a_tls_directory_others_can_write_is_not_trusted() {
    let state = tempfile::tempdir().unwrap();
    let first = served_fingerprint(state.path()).await;
    let dir = state.path().join("tls");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_ne!(
        served_fingerprint(state.path()).await,
        first,
        "anybody could have put a key there"
    );
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(moved_aside(state.path()).len(), 1);
}

#[tokio::test]
async fn a_tls_directory_of_another_user_is_a_clear_error() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("tls");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let other = if rustix::process::geteuid().as_raw() == 4242 {
        4243
    } else {
        4242
    };
    if std::process::Command::new("chown")
        .arg(other.to_string())
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success())
    {
        let err = start_err(test_config(), state.path()).await;
        assert!(err.contains(&format!("belongs to uid {other}")), "{err}");
    } else {
        eprintln!("skipped: chown needs root");
    }
}

#[test]
fn by_default_the_certificate_covers_names_not_lan_addresses() {
    // An address in the certificate made a new one (and a new fingerprint) on every new
    // DHCP lease.
    let config = test_config();
    assert!(!config.tls.include_ip_addresses);
    let names = platform::required_names(&config).unwrap();
    for name in names.iter() {
        if let Ok(ip) = name.parse::<std::net::IpAddr>() {
            assert!(ip.is_loopback(), "{name} is in the certificate");
        }
    }
    assert!(names.contains("keksbox.local") && names.contains("localhost"));
}

#[tokio::test]
async fn a_state_dir_that_is_a_file_is_a_clear_error() {
    let files = tempfile::tempdir().unwrap();
    let not_a_dir = files.path().join("state");
    std::fs::write(&not_a_dir, "").unwrap();
    let err = start_err(test_config(), &not_a_dir).await;
    assert!(err.contains("not a directory"), "{err}");
    assert!(err.contains("--state-dir"), "{err}");
}

#[tokio::test]
async fn a_state_dir_that_cannot_be_created_is_a_clear_error() {
    let files = tempfile::tempdir().unwrap();
    let blocker = files.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    let err = start_err(test_config(), &blocker.join("state")).await;
    assert!(err.contains("cannot use state directory"), "{err}");
    assert!(err.contains("Not a directory"), "{err}");
}

#[test]
fn the_installed_config_parses_and_serves_the_lan_on_443_and_80() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/appliance.toml")).unwrap();
    let config = Config::parse(&text).unwrap();
    assert_eq!(config.server.bind, "0.0.0.0:443".parse().unwrap());
    assert_eq!(config.tls.redirect_bind, "0.0.0.0:80".parse().unwrap());
    assert!(config.tls.enabled && config.tls.redirect && config.mdns.enabled);
}

#[test]
fn the_regenerate_cert_command_prints_the_new_fingerprint() {
    let state = tempfile::tempdir().unwrap();
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keksbox"))
            .args(["regenerate-cert", "--state-dir", state.path().to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = run();
    let on_disk = Fingerprint::of_der(
        CertificateDer::from_pem_file(generated_cert(state.path()))
            .unwrap()
            .as_ref(),
    );
    assert!(first.contains(&format!("SHA-256 {on_disk}")), "{first}");
    let second = run();
    assert!(
        !second.contains(&on_disk.to_string()),
        "the fingerprint did not change: {second}"
    );
}

#[test]
fn the_regenerate_cert_command_fails_clearly_on_a_bad_state_dir() {
    let files = tempfile::tempdir().unwrap();
    let not_a_dir = files.path().join("f");
    std::fs::write(&not_a_dir, "").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keksbox"))
        .args(["regenerate-cert", "--state-dir", not_a_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a directory") && err.contains("--state-dir"), "{err}");
}

/// Sends one plain-HTTP request (head without the final blank line) and reads the whole answer.
async fn plain_request(addr: std::net::SocketAddr, head: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut resp = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut resp))
        .await
        .unwrap()
        .unwrap();
    resp
}
