//! rift against a peer written from docs/PROTOCOL.md alone (a raw WebSocket, keks-proto's
//! session for sealing): hostile file names, unknown message kinds, previews and garbage
//! in the room while a real transfer runs.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{bytes, join, rift, serve, setup, text, wait};
use futures_util::SinkExt as _;
use keks_proto::crypto::RoomKey;
use keks_proto::packets::{ProvideInfo, ResourceId, ResourceKind, ServerboundPacket};
use tokio_tungstenite::tungstenite::Message;

fn file(id: &str, label: &str) -> ProvideInfo {
    ProvideInfo {
        id: ResourceId(id.into()),
        kind: ResourceKind::File,
        track_kind: None,
        label: Some(label.into()),
        size: Some(5),
    }
}

#[test]
fn receive_refuses_hostile_names_and_writes_nothing_outside() {
    let Some((dir, relay)) = setup(
        "receive_refuses_hostile_names_and_writes_nothing_outside",
        8080,
        &["--no-tls"],
    ) else {
        return;
    };
    let d = dir.path();
    let out = d.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("exists.txt"), b"mine\n").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut ws, mut session) = rt.block_on(join(relay.port, "hostile names"));
    let hostile = [
        "../escape.txt",
        "/tmp/absolute.txt",
        "a/../../up.txt",
        "NUL",
        "sub/COM1.log",
        "bell\u{7}.txt",
        "back\\slash",
        "exists.txt",
        "",
    ];
    for (i, label) in hostile.iter().enumerate() {
        let packet = session.provide(file(&format!("h{i}"), label)).unwrap();
        rt.block_on(ws.send(Message::text(serde_json::to_string(&packet).unwrap())))
            .unwrap();
    }
    let receiver = rift(d, &format!("http://127.0.0.1:{}", relay.port), "hostile names")
        .args(["receive"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stay in the room (greeting the receiver with the provides) until it has decided.
    let mut receiver = receiver;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while receiver.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        rt.block_on(serve(&mut ws, &mut session, Duration::from_millis(500)));
    }
    let r = wait(receiver, Duration::from_secs(10), "rift receive");
    assert_eq!(r.status.code(), Some(1), "all refused means exit 1: {}", text(&r));
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(err.matches("refused: ").count(), hostile.len(), "{err}");
    assert!(
        err.contains("points outside") && err.contains("device name") && err.contains("exists (use --force"),
        "{err}"
    );
    assert!(
        !err.contains('\u{7}'),
        "control characters are not echoed to the terminal: {err:?}"
    );
    assert_eq!(std::fs::read(out.join("exists.txt")).unwrap(), b"mine\n");
    let mut left: Vec<String> = walk(d);
    left.sort();
    let expected_tree = vec!["out/exists.txt".to_owned()];
    left.retain(|p| !p.starts_with("keksbox"));
    assert_eq!(left, expected_tree, "nothing else was written");
    assert!(!Path::new("/tmp/absolute.txt").exists());
}

fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out
}

#[test]
fn unknown_kinds_previews_and_garbage_do_not_disturb_a_transfer() {
    let Some((dir, relay)) = setup(
        "unknown_kinds_previews_and_garbage_do_not_disturb_a_transfer",
        8080,
        &["--no-tls"],
    ) else {
        return;
    };
    let d = dir.path();
    let server = format!("http://127.0.0.1:{}", relay.port);
    std::fs::write(d.join("payload.bin"), bytes(20_000_000, 7)).unwrap();
    let secret = "noisy room";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut ws, mut session) = rt.block_on(join(relay.port, secret));
    let key = RoomKey::derive(secret);
    let me = session.id().unwrap();
    let sender = rift(d, &server, secret)
        .current_dir(d)
        .args(["send", "payload.bin"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let receiver = rift(d, &server, secret)
        .args(["receive"])
        .arg(d.join("out"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Broadcast noise for the length of the transfer: a kind from the future, a preview
    // (keks-meet's own native client panics on it), a provide of an unknown resource kind,
    // a request for nothing, ciphertext that does not open, a forged sender, and plain junk.
    let noise = [
        format!(r#"{{"sender":{me},"inner":{{"hologram":{{"fps":90}}}}}}"#),
        format!(r#"{{"sender":{me},"inner":{{"preview":{{"id":"x1","data":"data:image/webp;base64,AAAA"}}}}}}"#),
        format!(r#"{{"sender":{me},"inner":{{"provide":{{"id":"v1","kind":"vr_scene","label":"?"}}}}}}"#),
        format!(r#"{{"sender":{me},"inner":{{"request":{{"id":"nothing"}}}}}}"#),
        format!(r#"{{"sender":{},"inner":{{"chat":{{"text":"forged"}}}}}}"#, me.0 + 1),
        r#"{"not":"a wrapper"}"#.to_owned(),
    ];
    rt.block_on(async {
        for round in 0..40 {
            for n in &noise {
                let sealed = key.seal(n.as_bytes()).unwrap();
                let packet = ServerboundPacket::Relay {
                    recipient: None,
                    message: sealed,
                };
                ws.send(Message::text(serde_json::to_string(&packet).unwrap()))
                    .await
                    .unwrap();
            }
            let junk = ServerboundPacket::Relay {
                recipient: None,
                message: format!("bm90IHNlYWxlZA{round}=="),
            };
            ws.send(Message::text(serde_json::to_string(&junk).unwrap()))
                .await
                .unwrap();
            serve(&mut ws, &mut session, Duration::from_millis(100)).await;
        }
    });
    let r = wait(receiver, Duration::from_secs(120), "rift receive");
    let s = wait(sender, Duration::from_secs(60), "rift send");
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    assert_eq!(s.status.code(), Some(0), "{}", text(&s));
    assert!(std::fs::read(d.join("payload.bin")).unwrap() == std::fs::read(d.join("out/payload.bin")).unwrap());
}
