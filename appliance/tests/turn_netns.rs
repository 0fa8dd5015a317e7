//! The box's addresses change after start (a DHCP lease, a link that comes up late), for
//! real: network namespaces "box" and "b" joined by a veth pair that this test creates, box
//! on 10.79.0.1/24 and b on 10.79.0.2/24. keksbox runs in box. b also has 10.79.1.2, which box
//! reaches through a route but not as its own network: a TURN allocation may not relay there.
//! Then box gets 10.79.1.1/24: `/config.json` asked on the new address names a TURN server
//! there, an allocation through it relays to 10.79.1.2, and so does one through the old
//! address. Nothing reaches the machine's own interfaces; the namespaces are deleted
//! afterwards even when the test fails.
//!
//! The TURN client must run inside b, and a thread cannot enter a namespace without unsafe
//! code: the test runs its own binary there ([`relay_in_namespace`], ignored on its own).
//!
//! Needs root and `ip netns` (iproute2); prints why and passes without them.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use webrtc_turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

mod netns;

use netns::{VethPair, can_run, ip};

const BIN: &str = env!("CARGO_BIN_EXE_keksbox");
/// Set (to "SERVER USER PASSWORD PEER_IP") when this binary runs as the client inside b.
const HELPER: &str = "KEKSBOX_TURN_NETNS_HELPER";

/// The namespaces: A is the box, B the other host.
struct Netns(VethPair);

impl Netns {
    fn create() -> Result<Netns, String> {
        VethPair::create("t", "10.79.0.1/24", "10.79.0.2/24").map(Netns)
    }

    /// `/config.json` from `url`, asked from inside b; `None` until it answers.
    fn config_json(&self, url: &str) -> Option<serde_json::Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0.b, "curl", "-sf", "--max-time", "2", url])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// Runs the TURN client inside b: an allocation at `server` with the credentials of
    /// `config`, one datagram to a peer on `peer_ip`. What it printed.
    fn relay_from_b(&self, server: &str, config: &serde_json::Value, peer_ip: &str) -> String {
        let w = &config["webrtc"];
        let args = format!(
            "{server} {} {} {peer_ip}",
            w["turn_user"].as_str().unwrap(),
            w["turn_cred"].as_str().unwrap()
        );
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0.b])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "relay_in_namespace",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HELPER, args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The keksbox process in box; dropping it kills it.
struct Running(Option<Child>);

impl Running {
    /// SIGTERM, then what it logged.
    fn stop(mut self) -> String {
        let child = self.0.take().unwrap();
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Asks `f` every 100 ms until it gives something, for at most `limit`.
fn until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn listeners_config_json_and_allowed_networks_follow_an_address_added_after_start() {
    if let Err(why) = can_run(&["curl"]) {
        eprintln!("skipped: the TURN namespace test needs root, `ip netns` and curl ({why})");
        return;
    }
    let ns = Netns::create().unwrap();
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("keksbox.toml");
    std::fs::write(&config, "[mdns]\nenabled = false\n").unwrap();
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0.a,
            BIN,
            "--no-tls",
            "--bind",
            "0.0.0.0:8080",
            "--config",
        ])
        .arg(&config)
        .arg("--state-dir")
        .arg(state.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let running = Running(Some(child));
    let old = until("keksbox in box", Duration::from_secs(20), || {
        ns.config_json("http://10.79.0.1:8080/config.json")
    });
    assert_eq!(old["webrtc"]["turn"], "turn:10.79.0.1:3478", "{old}");

    // b has 10.79.1.2 too, and box a route to it: reachable, but not box's network.
    ip(&["-n", &ns.0.b, "addr", "add", "10.79.1.2/24", "dev", &ns.0.dev_b]).unwrap();
    ip(&["-n", &ns.0.a, "route", "add", "10.79.1.0/24", "via", "10.79.0.2"]).unwrap();
    let refused = ns.relay_from_b("10.79.0.1:3478", &old, "10.79.1.2");
    assert!(refused.contains("relay: nothing arrived"), "{refused}");

    // box gets an address in that network after start.
    ip(&["-n", &ns.0.a, "route", "del", "10.79.1.0/24", "via", "10.79.0.2"]).unwrap();
    ip(&["-n", &ns.0.a, "addr", "add", "10.79.1.1/24", "dev", &ns.0.dev_a]).unwrap();
    let started = Instant::now();
    let new = until(
        "/config.json on the new address to name TURN there",
        Duration::from_secs(20),
        || {
            ns.config_json("http://10.79.1.1:8080/config.json")
                .filter(|c| c["webrtc"]["turn"] == "turn:10.79.1.1:3478")
        },
    );
    println!(
        "# TURN followed the new address after {} ms",
        started.elapsed().as_millis()
    );
    let ice = &new["webrtc"]["ice_servers"];
    assert!(
        ice.as_array()
            .unwrap()
            .iter()
            .any(|s| s["urls"][0] == "turn:10.79.1.1:3478"),
        "{new}"
    );
    let through_new = ns.relay_from_b("10.79.1.1:3478", &new, "10.79.1.2");
    assert!(
        through_new.contains("relay: delivered from 10.79.1.1:"),
        "{through_new}"
    );
    let through_old = ns.relay_from_b("10.79.0.1:3478", &old, "10.79.1.2");
    assert!(
        through_old.contains("relay: delivered from 10.79.0.1:"),
        "{through_old}"
    );

    let log = running.stop();
    assert!(log.contains("now also on UDP and TCP 10.79.1.1:3478"), "{log}");
    assert!(log.contains("now relaying to 10.79.0.0/24, 10.79.1.0/24"), "{log}");
}

/// The client half of the test above, run by it inside namespace b (hence ignored in a plain
/// run); it prints what happened and the test above judges it.
#[test]
#[ignore = "the client half of listeners_config_json_and_allowed_networks_follow_an_address_added_after_start, run by it"]
fn relay_in_namespace() {
    let args = std::env::var(HELPER).expect("run by the namespace test, which sets the arguments");
    let [server, user, password, peer_ip] = args.split(' ').collect::<Vec<_>>()[..] else {
        panic!("{HELPER}: want SERVER USER PASSWORD PEER_IP, got {args:?}");
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = Client::new(ClientConfig {
            stun_serv_addr: server.to_owned(),
            turn_serv_addr: server.to_owned(),
            username: user.to_owned(),
            password: password.to_owned(),
            realm: keksbox::turn::REALM.to_owned(),
            software: String::new(),
            rto_in_ms: 0,
            conn: Arc::new(UdpSocket::bind("0.0.0.0:0").await.unwrap()),
            vnet: None,
        })
        .await
        .unwrap();
        client.listen().await.unwrap();
        let relay = tokio::time::timeout(Duration::from_secs(10), client.allocate())
            .await
            .expect("an allocation within 10 s")
            .unwrap();
        let peer = UdpSocket::bind(format!("{peer_ip}:0")).await.unwrap();
        let _ = relay.send_to(b"across", peer.local_addr().unwrap()).await;
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(2), peer.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) if &buf[..n] == b"across" => println!("relay: delivered from {from}"),
            other => println!("relay: nothing arrived ({other:?})"),
        }
        client.close().await.unwrap();
    });
}
