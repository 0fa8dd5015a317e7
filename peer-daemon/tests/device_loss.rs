//! The daemon's main loop when a device goes away and comes back: the resource is withdrawn
//! (`provide_stop`), the daemon stays in the room, and the returning device is provided again
//! under a new id. The device threads' own detection (Unplugged, Missing) is exercised with
//! real drivers by `make vm-test`; here device events are fed to `daemon::run` directly, and
//! another member (a keks-client room) watches what the daemon announces through a relay
//! built from keks-proto's registry, all on 127.0.0.1.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use keks_client::room::IceOptions;
use keks_client::{Codec, Room, RoomEvent, RoomOptions, TrackFeed, Trust};
use keks_proto::packets::{ClientId, ResourceId, ServerboundPacket, TrackKind};
use keks_proto::room::{Limits, Registry};
use keksbox_peer::config::Config;
use keksbox_peer::daemon::{self, Device, DeviceEvent, Inputs, Invitation};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

type Clients = Arc<Mutex<(Registry, HashMap<ClientId, mpsc::UnboundedSender<String>>)>>;

/// A relay on 127.0.0.1: keks-proto's registry behind WebSockets. Returns its port.
async fn relay() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let clients: Clients = Arc::new(Mutex::new((Registry::new("test", Limits::default()), HashMap::new())));
    tokio::spawn(async move {
        let mut next = 1u64;
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let id = ClientId(next);
            next += 1;
            let clients = clients.clone();
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let (mut write, mut read) = ws.split();
                let (tx, mut rx) = mpsc::unbounded_channel::<String>();
                tokio::spawn(async move {
                    while let Some(text) = rx.recv().await {
                        if write.send(Message::text(text)).await.is_err() {
                            break;
                        }
                    }
                });
                let deliver = |outputs: Vec<keks_proto::room::Output>,
                               c: &HashMap<ClientId, mpsc::UnboundedSender<String>>| {
                    for o in outputs {
                        let text = serde_json::to_string(&o.packet).unwrap();
                        for to in o.to {
                            if let Some(tx) = c.get(&to) {
                                let _ = tx.send(text.clone());
                            }
                        }
                    }
                };
                {
                    let mut g = clients.lock().unwrap();
                    g.1.insert(id, tx);
                    let out = g.0.connect(id).unwrap();
                    deliver(out, &g.1);
                }
                while let Some(Ok(msg)) = read.next().await {
                    let Message::Text(text) = msg else { continue };
                    let Ok(packet) = serde_json::from_str::<ServerboundPacket>(&text) else {
                        continue;
                    };
                    let mut g = clients.lock().unwrap();
                    if let Ok(out) = g.0.handle(id, packet) {
                        deliver(out, &g.1);
                    }
                }
                let mut g = clients.lock().unwrap();
                g.1.remove(&id);
                let out = g.0.disconnect(id);
                deliver(out, &g.1);
            });
        }
    });
    port
}

/// The next `Provided` or `ProvideStopped` the watcher sees.
async fn next_resource_event(events: &mut mpsc::Receiver<RoomEvent>) -> RoomEvent {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("an event within 20 s")
            .expect("the watcher's room is open");
        if matches!(e, RoomEvent::Provided { .. } | RoomEvent::ProvideStopped { .. }) {
            return e;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_camera_is_withdrawn_and_provided_again_under_a_new_id() {
    let port = relay().await;
    let server = format!("ws://127.0.0.1:{port}");
    let config = Config::parse(&format!(
        "[room]\nserver = \"{server}\"\nname = \"Room 2 camera\"\n[video]\ndevice = \"synthetic\"\n[audio]\nenabled = false\n"
    ))
    .unwrap();
    let (devices_tx, devices) = mpsc::channel(4);
    let (_invite_tx, invitations) = mpsc::channel(1);
    let secret = "device-loss-room".to_owned();
    let inputs = Inputs {
        room: Some(Invitation {
            secret: secret.clone(),
            summoned: false,
        }),
        invitations,
        devices,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(daemon::run(config, inputs, async {
        let _ = stop_rx.await;
    }));

    let (_watcher, mut events) = Room::join(RoomOptions {
        server: server.parse().unwrap(),
        trust: Trust::FirstUse(keks_client::KnownServers::at(
            std::env::temp_dir().join("keksbox-peer-test-known"),
        )),
        secret,
        username: "watcher".into(),
        ice: IceOptions {
            skip_server_config: true,
            ..Default::default()
        },
    })
    .await;

    devices_tx
        .send(DeviceEvent::Up(Device::Camera, TrackFeed::new(Codec::H264)))
        .await
        .unwrap();
    let RoomEvent::Provided { info: first, .. } = next_resource_event(&mut events).await else {
        panic!("the camera is provided first")
    };
    assert_eq!(first.track_kind, Some(TrackKind::Video));
    assert_eq!(first.label.as_deref(), Some("Camera"));

    devices_tx.send(DeviceEvent::Lost(Device::Camera)).await.unwrap();
    let RoomEvent::ProvideStopped { id, .. } = next_resource_event(&mut events).await else {
        panic!("a lost camera is withdrawn")
    };
    assert_eq!(id, first.id);

    devices_tx
        .send(DeviceEvent::Up(Device::Camera, TrackFeed::new(Codec::H264)))
        .await
        .unwrap();
    let RoomEvent::Provided { info: again, .. } = next_resource_event(&mut events).await else {
        panic!("the returning camera is provided again")
    };
    assert_ne!(again.id, first.id, "ids are never reused");
    assert_eq!(again.track_kind, Some(TrackKind::Video));
    let _: &ResourceId = &again.id;

    assert!(!daemon.is_finished(), "a device never ends the daemon");
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), daemon)
        .await
        .expect("stops on shutdown")
        .unwrap()
        .unwrap();
}
