//! mDNS between two "hosts": network namespaces A and B joined by a veth pair that this test
//! creates (10.77.0.1/24 in A, 10.77.0.2/24 in B). keksbox runs in A; `keksbox discover` runs
//! in B, finds `_keksmeet._tcp`, resolves the address, reads the fingerprint TXT and resolves
//! the host name; an address added later is announced too. Nothing reaches the machine's own interfaces: both ends live in namespaces,
//! which are deleted afterwards even when the test fails.
//!
//! Needs root and `ip netns` (iproute2); prints why and passes without them.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use keks_proto::advert::Fingerprint;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

mod netns;

use netns::{VethPair, can_run};

const BIN: &str = env!("CARGO_BIN_EXE_keksbox");

/// The keksbox process in A; dropping it stops it (SIGTERM, then SIGKILL).
struct Running(Child);

impl Running {
    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        for _ in 0..100 {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        self.0.wait().ok()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.terminate();
        }
    }
}

fn fingerprint_of(cert_pem: &Path) -> Fingerprint {
    Fingerprint::of_der(CertificateDer::from_pem_file(cert_pem).unwrap().as_ref())
}

#[test]
fn a_browse_from_another_namespace_finds_the_box_its_fingerprint_and_host_name() {
    if let Err(why) = can_run(&[]) {
        eprintln!("skipped: the mDNS namespace test needs root and `ip netns` ({why})");
        return;
    }
    let ns = VethPair::create("m", "10.77.0.1/24", "10.77.0.2/24").unwrap();
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("keksbox.toml");
    std::fs::write(
        &config,
        "[server]\nbind = \"0.0.0.0:8443\"\n[mdns]\nhost_name = \"roombox\"\ninstance_name = \"Meeting room 2\"\n",
    )
    .unwrap();

    let mut child = ns
        .exec(
            &ns.a,
            &[
                BIN,
                "--config",
                config.to_str().unwrap(),
                "--state-dir",
                state.path().to_str().unwrap(),
            ],
        )
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut server = Running(child);

    // Wait until keksbox says it announces (it logs that after registering the services).
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut log = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => {
                let done = line.contains("mDNS: announcing roombox.local");
                log.push(line);
                if done {
                    break;
                }
            }
            Err(e) => panic!("keksbox did not announce ({e}); its log:\n{}", log.join("\n")),
        }
    }

    let out = ns.exec(&ns.b, &[BIN, "discover", "--timeout", "15"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "discover failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("Meeting room 2"))
        .unwrap_or_else(|| panic!("not found: {stdout}"));
    let fingerprint = fingerprint_of(&state.path().join("tls/cert.pem"));
    for want in [
        "https://roombox.local:8443/".to_owned(),
        "10.77.0.1".to_owned(),
        format!("protocol {}", keks_proto::PROTOCOL_VERSION),
        format!("fingerprint sha-256 {fingerprint}"),
        // The A record on its own: the host name resolves, not only the service.
        "host-resolves-to 10.77.0.1".to_owned(),
    ] {
        assert!(line.contains(&want), "{want:?} missing from {line:?}");
    }

    // Browsers' service lists see the box as an HTTPS service under the same name.
    let out = ns
        .exec(&ns.b, &[BIN, "discover", "--service", "_https._tcp", "--timeout", "15"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("\"Meeting room 2\": https://roombox.local:8443/")),
        "no _https._tcp: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Interfaces are followed: an address added in A after start is announced too.
    netns::ip(&["-n", &ns.a, "addr", "add", "10.77.0.3/24", "dev", &ns.dev_a]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let out = ns.exec(&ns.b, &[BIN, "discover", "--timeout", "10"]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if stdout.contains("10.77.0.3") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "10.77.0.3 never announced: {stdout}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }

    // Goodbyes on shutdown: a browser in B that has the box sees it removed at once, not when
    // its records expire minutes later. The watcher is this test binary, re-run inside B.
    let mut watcher = ns
        .exec(&ns.b, &[std::env::current_exe().unwrap().to_str().unwrap()])
        .args([
            "--exact",
            "goodbye_watcher",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WATCH_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (watch_tx, watched) = mpsc::channel();
    let watch_out = watcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(watch_out).lines().map_while(Result::ok) {
            let _ = watch_tx.send(line);
        }
    });
    let _watcher = Running(watcher);
    let seen = |marker: &str, within: Duration| {
        let deadline = std::time::Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match watched.recv_timeout(left) {
                // libtest prints "test goodbye_watcher ... " before the first line: search, not prefix.
                Ok(line) if line.contains(marker) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    };
    assert!(
        seen("KB-RESOLVED", Duration::from_secs(20)),
        "the watcher never saw the box"
    );

    let status = server.terminate().unwrap();
    assert!(status.success(), "keksbox exited with {status}");
    assert!(
        seen("KB-REMOVED", Duration::from_secs(5)),
        "no goodbye reached the browser in B within 5 s of SIGTERM"
    );
    // The reader thread ends at the closed pipe; wait for what it still has.
    let rest: Vec<String> = std::iter::from_fn(|| lines.recv_timeout(Duration::from_secs(5)).ok()).collect();
    assert!(
        rest.iter().any(|l| l.contains("mDNS: announcement withdrawn")),
        "no goodbye in {rest:?}"
    );
}

const WATCH_ENV: &str = "KEKSBOX_TEST_MDNS_WATCH";

/// Not a test by itself: the test above runs it inside namespace B. Browses `_keksmeet._tcp`,
/// prints `KB-RESOLVED` when the box is resolved and `KB-REMOVED` when it says goodbye.
#[test]
#[ignore = "helper, run inside a network namespace by the namespace test"]
fn goodbye_watcher() {
    use mdns_sd::{ServiceDaemon, ServiceEvent};
    if std::env::var_os(WATCH_ENV).is_none() {
        return;
    }
    let daemon = ServiceDaemon::new().unwrap();
    let events = daemon.browse(keksbox::mdns::KEKSMEET_SERVICE).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match events.recv_timeout(left) {
            Ok(ServiceEvent::ServiceResolved(s)) => println!("KB-RESOLVED {}", s.get_fullname()),
            Ok(ServiceEvent::ServiceRemoved(_, name)) => {
                println!("KB-REMOVED {name}");
                return;
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}
