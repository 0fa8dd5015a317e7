//! Test harness: a relay in-process on 127.0.0.1:0 and WebSocket clients that speak to it.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use keksbox::config::Config;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Relay {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Relay {
    pub async fn start(config: Config) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(keksbox::serve_plain_http(config, listener, async {
            let _ = stopped.await;
        }));
        Relay {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn default() -> Relay {
        Relay::start(Config::default()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// Stops the relay and waits for `run` to return.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.task.take().unwrap())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Client {
    pub ws: Ws,
    pub id: u64,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/signaling"))
            .await
            .unwrap();
        Client::from_ws(ws).await
    }

    pub async fn from_ws(ws: Ws) -> Client {
        let mut c = Client { ws, id: 0 };
        let init = c.recv().await;
        c.id = init["init"]["your_id"].as_u64().expect("init with your_id");
        assert!(init["init"]["version"].as_str().unwrap().starts_with("keksbox "));
        c
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::Text(v.to_string().into())).await.unwrap();
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// The next text packet as JSON (panics after WAIT).
    pub async fn recv(&mut self) -> Value {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a packet in time");
            match m.expect("connection open").expect("no error") {
                Message::Text(t) => return serde_json::from_str(&t).expect("JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected text, got {other:?}"),
            }
        }
    }

    /// Asserts nothing arrives within `d`.
    pub async fn silent(&mut self, d: Duration) {
        if let Ok(Some(m)) = tokio::time::timeout(d, self.ws.next()).await {
            panic!("expected silence, got {m:?}");
        }
    }

    /// Reads until the server closes; returns its close frame.
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("closed in time")
            {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    pub async fn join(&mut self, hash: &str) {
        self.send(json!({"join": {"hash": hash}})).await;
    }

    pub async fn relay(&mut self, recipient: Option<u64>, message: &str) {
        match recipient {
            Some(r) => self.send(json!({"relay": {"recipient": r, "message": message}})).await,
            None => self.send(json!({"relay": {"message": message}})).await,
        }
    }
}

pub fn hash(c: char) -> String {
    c.to_string().repeat(64)
}

pub fn join_packet(id: u64) -> Value {
    json!({"client_join": {"id": id}})
}

pub fn leave_packet(id: u64) -> Value {
    json!({"client_leave": {"id": id}})
}

pub fn message_packet(sender: u64, message: &str) -> Value {
    json!({"message": {"sender": sender, "message": message}})
}

pub fn text(s: &str) -> Message {
    Message::Text(Utf8Bytes::from(s.to_owned()))
}
