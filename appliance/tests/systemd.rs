//! The keksbox binary under (a stand-in for) systemd: readiness, watchdog and stopping
//! notifications on a `NOTIFY_SOCKET` the test owns, and socket activation through
//! `systemd-socket-activate`, which passes listening sockets exactly as systemd does.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_keksbox");

/// Stops the child with SIGTERM when dropped (also on a failed assertion).
struct Running(Child);

impl Running {
    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        self.0.wait().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.terminate();
        }
    }
}

/// Reads notifications until one contains `want` (or 15 s pass); returns all seen.
fn wait_for(socket: &UnixDatagram, want: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = msg.lines().any(|l| l == want);
                seen.push(msg);
                if done {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("notify socket: {e}"),
        }
    }
    panic!("no {want:?} from keksbox; got {seen:?}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn ready_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let config = dir.path().join("keksbox.toml");
    std::fs::write(&config, "[server]\nbind = \"127.0.0.1:0\"\n[tls]\nredirect = false\n").unwrap();

    let child = Command::new(BIN)
        .args([
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            dir.path().to_str().unwrap(),
        ])
        .env("NOTIFY_SOCKET", &socket_path)
        // 400 ms: keksbox must ping every 200 ms.
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let mut seen = Vec::new();
    wait_for(&socket, "READY=1", &mut seen);
    let ready = seen.last().unwrap();
    assert!(ready.contains("STATUS=serving https://127.0.0.1:"), "{ready}");
    // Two pings in a row prove the loop, not one stray message.
    wait_for(&socket, "WATCHDOG=1", &mut seen);
    wait_for(&socket, "WATCHDOG=1", &mut seen);
    let _ = Command::new("kill")
        .args(["-TERM", &running.0.id().to_string()])
        .status();
    wait_for(&socket, "STOPPING=1", &mut seen);
    assert!(running.terminate().success());
}

#[test]
fn socket_activation_serves_https_on_the_first_socket_and_redirects_on_the_second() {
    if Command::new("systemd-socket-activate")
        .arg("--help")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("skipped: systemd-socket-activate is not installed (package systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (https, http) = (free_port(), free_port());
    // The config's addresses are deliberately different: the passed sockets must win.
    let config = dir.path().join("keksbox.toml");
    std::fs::write(
        &config,
        "[server]\nbind = \"127.0.0.1:1\"\n[tls]\nredirect_bind = \"127.0.0.1:2\"\n",
    )
    .unwrap();
    let child = Command::new("systemd-socket-activate")
        .args(["-l", &format!("127.0.0.1:{https}"), "-l", &format!("127.0.0.1:{http}")])
        .args([
            BIN,
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            dir.path().to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _running = Running(child);

    // systemd-socket-activate starts keksbox on the first connection: this one.
    let mut tcp = connect(http);
    tcp.write_all(b"GET /room HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 308"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains(&format!("location: https://localhost:{https}/room")),
        "{response}"
    );
    // And the first socket speaks TLS: a ClientHello gets a handshake record back.
    let mut tls = connect(https);
    tls.write_all(&client_hello()).unwrap();
    let mut head = [0u8; 1];
    tls.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x16, "expected a TLS handshake record");
}

fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
                return s;
            }
            Err(e) if Instant::now() > deadline => panic!("connect {port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A minimal TLS 1.2 ClientHello offering ECDHE-ECDSA-AES128-GCM-SHA256.
fn client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend([7u8; 32]); // random
    body.push(0); // session id
    body.extend([0x00, 0x02, 0xc0, 0x2b]); // cipher suites
    body.extend([0x01, 0x00]); // compression: null
    let mut ext = Vec::new();
    ext.extend([0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17]); // supported_groups: P-256
    ext.extend([0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]); // ec_point_formats: uncompressed
    ext.extend([0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03]); // signature_algorithms: ecdsa_secp256r1_sha256
    body.extend(u16::try_from(ext.len()).unwrap().to_be_bytes());
    body.extend(ext);
    let mut handshake = vec![0x01];
    handshake.extend(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend(u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend(handshake);
    record
}

#[test]
fn under_systemd_logs_go_to_the_journal_with_structured_fields() {
    use std::os::unix::fs::MetadataExt;
    // A private /run in a private mount namespace, with our socket where journald's would be:
    // the machine's own /run is never touched.
    let probe = Command::new("unshare").args(["-m", "true"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: needs `unshare -m` (root, util-linux)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let journal_dir = dir.path().join("journal");
    std::fs::create_dir(&journal_dir).unwrap();
    let journal = UnixDatagram::bind(journal_dir.join("socket")).unwrap();
    journal.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    // systemd sets JOURNAL_STREAM to the device and inode of the stream it gave as stderr.
    let stderr_path = dir.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let config = dir.path().join("keksbox.toml");
    std::fs::write(&config, "[server]\nbind = \"127.0.0.1:0\"\n[tls]\nredirect = false\n").unwrap();
    let script = r#"mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && mount --bind "$1" /run/systemd/journal && shift && exec "$@""#;
    let child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&journal_dir)
        .args([
            BIN,
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            dir.path().to_str().unwrap(),
        ])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(stderr)
        .spawn()
        .unwrap();
    let _running = Running(child);

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = vec![0u8; 65536];
    let mut seen = Vec::new();
    let serving = loop {
        assert!(
            Instant::now() < deadline,
            "no start-up line in the journal; got {seen:?}"
        );
        if let Ok(n) = journal.recv(&mut buf) {
            let entry = String::from_utf8_lossy(&buf[..n]).into_owned();
            if entry.contains("serving https://") {
                break entry;
            }
            seen.push(entry);
        }
    };
    // systemd-journal-logger maps info to NOTICE (5).
    for field in [
        "PRIORITY=5",
        "SYSLOG_IDENTIFIER=keksbox",
        "KEKSBOX_VERSION=",
        "TARGET=keksbox::platform",
        "CODE_FILE=",
    ] {
        assert!(
            serving.contains(field),
            "{field} missing from journal entry {serving:?}"
        );
    }
    let terminal = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        !terminal.contains("serving https://"),
        "logged to stderr too: {terminal}"
    );
}

/// The unit's resource ceilings fit the default config, and it does not pull in the socket
/// unit (which would override `server.bind` on every start).
#[test]
fn the_unit_bounds_memory_and_files_and_does_not_force_socket_activation() {
    let unit = include_str!("../../systemd/keksbox.service");
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .unwrap_or_else(|| panic!("no {key}= in keksbox.service"))
            .trim()
            .to_owned()
    };
    assert!(
        !unit.lines().any(|l| l.starts_with("Wants=keksbox.socket")),
        "Wants=keksbox.socket starts the socket unit even when server.bind is meant"
    );
    let limits = keksbox::config::Config::embedded().unwrap().limits;
    let files: u64 = value("LimitNOFILE").parse().unwrap();
    assert!(files >= limits.max_connections as u64 + keksbox::admission::RESERVED_FILES);
    let memory = value("MemoryMax");
    let mib: usize = memory.strip_suffix('M').unwrap().parse().unwrap();
    assert!(
        mib >= 256 + 64,
        "MemoryMax={memory} leaves no room above the 256 MiB the limits allow"
    );
    assert!(mib <= 512, "MemoryMax={memory} is no ceiling on a 1 GiB board");
}
