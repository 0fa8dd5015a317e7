//! Being summoned: keksbox hands the daemon a room to join over a local unix socket.
//!
//! A person in the meeting room opens the appliance's start page and presses "Use this room's
//! camera and microphone"; the browser sends its room secret and the room code (printed on the
//! box) over TLS to keksbox, which checks the code and writes one line to this socket:
//! `{"secret":"..."}`. The daemon answers `ok` and joins that room, and leaves it by itself
//! when no human has been in it for `[summon] leave_after_s`.
//!
//! The socket is the only gate on this side: whoever can write to it can switch the camera on,
//! so it is created 0660 (keksbox and keksbox-peer share a group) and is off unless configured.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::config::SummonConfig;
use crate::daemon::Invitation;

/// Longest invitation line; a room secret is short.
const MAX_LINE: u64 = 4096;
/// Invitations waiting for the main loop; more are refused until it caught up.
const QUEUE: usize = 4;

/// One invitation as keksbox writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The room secret. Never logged.
    pub secret: String,
}

/// Listens on the configured socket; with summoning off, a receiver that never yields.
pub fn listen(config: &SummonConfig) -> anyhow::Result<mpsc::Receiver<Invitation>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    if config.socket.is_empty() {
        // Keep the sender alive so the receiver just waits.
        tokio::spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        return Ok(rx);
    }
    let path = Path::new(&config.socket);
    // A socket left by an earlier run would make bind fail.
    if path.exists() {
        std::fs::remove_file(path)
            .map_err(|e| anyhow::anyhow!("cannot remove the old summon socket {}: {e}", path.display()))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on the summon socket {}: {e} (check [summon] socket and that its directory exists)",
            path.display()
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| anyhow::anyhow!("cannot restrict {}: {e}", path.display()))?;
    log::info!("summoning is on: listening on {}", path.display());
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve(stream, tx).await {
                            log::warn!("summon socket: {e}");
                        }
                    });
                }
                Err(e) => {
                    log::error!("summon socket: {e}");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    });
    Ok(rx)
}

async fn serve(stream: UnixStream, tx: mpsc::Sender<Invitation>) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        BufReader::new(read.take(MAX_LINE)).read_line(&mut line),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no invitation within 5 s"))??;
    let answer = match parse(&line[..n]) {
        Ok(request) => match tx.try_send(Invitation {
            secret: request.secret,
            summoned: true,
        }) {
            Ok(()) => {
                log::info!("summoned into a room by keksbox");
                "ok\n".to_owned()
            }
            Err(_) => "error: busy, try again\n".to_owned(),
        },
        Err(e) => format!("error: {e}\n"),
    };
    write.write_all(answer.as_bytes()).await?;
    Ok(())
}

/// Parses one invitation line.
pub fn parse(line: &str) -> Result<Request, String> {
    let request: Request = serde_json::from_str(line.trim()).map_err(|e| format!("not an invitation: {e}"))?;
    if request.secret.trim().is_empty() || request.secret.len() > MAX_LINE as usize {
        return Err("the room secret is empty or too long".into());
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invitations_parse_and_junk_is_refused() {
        assert_eq!(parse("{\"secret\":\"abc def\"}\n").expect("ok").secret, "abc def");
        assert!(parse("").is_err());
        assert!(parse("{\"secret\":\"\"}").is_err());
        assert!(parse("{\"secret\":\"x\",\"extra\":1}").is_err());
        assert!(parse("secret=x").is_err());
    }

    #[tokio::test]
    async fn the_socket_hands_an_invitation_to_the_daemon() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("summon.sock");
        let config = SummonConfig {
            socket: socket.display().to_string(),
            leave_after_s: 60,
        };
        let mut rx = listen(&config).expect("listen");
        let mode = std::fs::metadata(&socket).expect("socket").permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let mut s = UnixStream::connect(&socket).await.expect("connect");
        s.write_all(b"{\"secret\":\"room-1\"}\n").await.expect("write");
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.expect("read");
        assert_eq!(answer, "ok\n");
        let inv = rx.recv().await.expect("invitation");
        assert_eq!(inv.secret, "room-1");
        assert!(inv.summoned);

        let mut s = UnixStream::connect(&socket).await.expect("connect");
        s.write_all(b"hello\n").await.expect("write");
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("error: not an invitation"), "{answer}");
    }
}
