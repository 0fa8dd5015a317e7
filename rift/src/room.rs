//! `rift room`: a long-running prompt in a room.
//!
//! One line, one command (`help` lists them). Whatever happens in the room (members, offers,
//! chat, transfers) is printed as it happens, one line each. Others' resources get a short
//! number in the order they are announced; a command takes that number, or the resource's
//! id when no two members use it, or `MEMBER/ID`.
//!
//! `expose PORT` offers a local TCP port as a `port` resource (docs/PROTOCOL.md, "Ports");
//! `forward ID [PORT]` listens on 127.0.0.1 and carries each connection to the member's
//! exposed port over a data channel of its own.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use keks_client::room::{Progress, Sink, Source, TransferKey};
use keks_client::{Room, RoomEvent, RoomOptions};
use keks_proto::packets::{ChatMessage, ClientId, ProvideInfo, ResourceId, ResourceKind, TrackKind};
use tokio::io::AsyncBufReadExt as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::names::{part_path, relative_path};
use crate::progress::bytes;
use crate::{EXIT_DONE, interrupted};

/// Longest command line read; a longer one is refused (chat has its own limit in browsers).
const MAX_LINE: usize = 16 << 10;

const HELP: &str = "\
commands:
  list                      members and what they offer (numbers in [brackets])
  provide PATH [ID]         offer a file (ID: the resource id, default a random one)
  download N|ID [PATH]      download an offered file (default: its name, here)
  stop [ID...]              stop offering (default: everything)
  chat TEXT                 send a chat message
  expose PORT [ID]          offer the local TCP port 127.0.0.1:PORT
  forward N|ID [PORT]       listen on 127.0.0.1:PORT (default: any free port) and carry each
                            connection to the member's exposed port
  help                      this text
  quit                      leave the room (also Ctrl-D, Ctrl-C)";

/// Another member's resource, by its short number.
struct Remote {
    from: ClientId,
    info: ProvideInfo,
}

/// What we offer.
enum Own {
    File { path: PathBuf, label: String },
    Port(u16),
}

/// A download running, by its transfer.
struct Download {
    target: PathBuf,
    label: String,
    size: Option<u64>,
}

/// Everything the prompt knows.
#[derive(Default)]
struct State {
    me: Option<ClientId>,
    names: HashMap<ClientId, String>,
    remote: BTreeMap<u32, Remote>,
    next_number: u32,
    own: BTreeMap<ResourceId, Own>,
    downloads: HashMap<TransferKey, Download>,
    forwards: HashMap<TransferKey, JoinHandle<()>>,
}

/// Runs `rift room`.
pub async fn run(options: RoomOptions, show_secret: bool) -> anyhow::Result<i32> {
    let link = options.server.room_link(&options.secret);
    let secret = options.secret.clone();
    let (room, mut events) = Room::join(options).await;
    let mut lines = spawn_stdin();
    let mut state = State::default();
    if show_secret {
        println!("The room's secret: {secret}\n(others join with `RIFT_SECRET=... rift room` or in a browser)");
    }
    println!("Browser link: {link}\nType `help` for the commands.");
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = crate::connection_event(event)? else { continue };
                state.on_event(event);
            }
            line = lines.recv() => {
                let Some(line) = line else { break };
                match line {
                    Ok(line) => {
                        let line = line.trim();
                        if line.is_empty() {
                            continue;
                        }
                        match state.command(&room, line).await {
                            Ok(true) => {}
                            Ok(false) => break,
                            Err(e) => println!("error: {e:#}"),
                        }
                    }
                    Err(e) => println!("error: {e}"),
                }
            }
            _ = interrupted() => break,
        }
    }
    for (_, task) in state.forwards.drain() {
        task.abort();
    }
    println!("leaving the room");
    Ok(EXIT_DONE)
}

/// Standard input as lines, read on a task of its own. Lines longer than [`MAX_LINE`] are
/// errors rather than memory.
fn spawn_stdin() -> tokio::sync::mpsc::Receiver<Result<String, String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(tokio::io::stdin());
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let line = match read_line_bounded(&mut reader, &mut buf).await {
                Ok(None) => break,
                Ok(Some(())) => {
                    String::from_utf8(std::mem::take(&mut buf)).map_err(|_| "the line is not UTF-8".to_owned())
                }
                Err(e) => Err(e),
            };
            if tx.send(line).await.is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads one line into `buf` (without its newline); `None` at the end of input.
async fn read_line_bounded<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Option<()>, String> {
    let mut too_long = false;
    loop {
        let chunk = reader
            .fill_buf()
            .await
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        if chunk.is_empty() {
            if too_long {
                return Err(format!("the line is longer than {MAX_LINE} bytes"));
            }
            return Ok((!buf.is_empty()).then_some(()));
        }
        let (part, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        if buf.len() + part.len() > MAX_LINE {
            too_long = true;
        } else {
            buf.extend_from_slice(part);
        }
        let used = done.unwrap_or(chunk.len());
        reader.consume(used);
        if done.is_some() {
            if too_long {
                return Err(format!("the line is longer than {MAX_LINE} bytes"));
            }
            return Ok(Some(()));
        }
    }
}

/// `s` with control characters (terminal escapes from a hostile member) made visible.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

impl State {
    fn name(&self, id: ClientId) -> String {
        match self.names.get(&id) {
            Some(n) => printable(n),
            None => format!("member {id}"),
        }
    }

    fn describe(&self, info: &ProvideInfo) -> String {
        let label = printable(info.label.as_deref().unwrap_or("(no name)"));
        match info.kind {
            ResourceKind::File => match info.size {
                Some(n) => format!("file {label} ({})", bytes(n)),
                None => format!("file {label}"),
            },
            ResourceKind::Track => {
                let kind = match info.track_kind {
                    Some(TrackKind::Audio) => "audio",
                    _ => "video",
                };
                format!("{kind} {label}")
            }
            ResourceKind::Port => format!("port {label}"),
            ResourceKind::Unknown => format!("something new: {label}"),
        }
    }

    fn number_of(&self, from: ClientId, id: &ResourceId) -> Option<u32> {
        self.remote
            .iter()
            .find(|(_, r)| r.from == from && r.info.id == *id)
            .map(|(n, _)| *n)
    }

    fn on_event(&mut self, event: RoomEvent) {
        match event {
            RoomEvent::Ready { id } => {
                self.me = Some(id);
                println!("in the room as member {id}");
            }
            RoomEvent::Connected => {}
            RoomEvent::Identified { id, username } => {
                let known = self.names.insert(id, username).is_some();
                if !known {
                    println!("{} joined", self.name(id));
                }
            }
            RoomEvent::Left(id) => {
                println!("{} left", self.name(id));
                self.names.remove(&id);
                self.remote.retain(|_, r| r.from != id);
                self.forwards.retain(|k, task| {
                    let gone = k.peer == id;
                    if gone {
                        task.abort();
                    }
                    !gone
                });
            }
            RoomEvent::Provided { from, info } => {
                self.next_number += 1;
                let n = self.next_number;
                println!("[{n}] {} offers {}", self.name(from), self.describe(&info));
                self.remote.insert(n, Remote { from, info });
            }
            RoomEvent::ProvideUpdated { from, info } => {
                if let Some(n) = self.number_of(from, &info.id) {
                    println!("[{n}] is now {}", self.describe(&info));
                    if let Some(r) = self.remote.get_mut(&n) {
                        r.info = info;
                    }
                }
            }
            RoomEvent::ProvideStopped { from, id } => {
                if let Some(n) = self.number_of(from, &id) {
                    println!("[{n}] withdrawn");
                    self.remote.remove(&n);
                }
                let key = TransferKey { peer: from, id };
                if let Some(task) = self.forwards.remove(&key) {
                    task.abort();
                    println!("stopped forwarding to {}: the port was withdrawn", printable(&key.id.0));
                }
            }
            RoomEvent::Chat { from, message } => match message {
                ChatMessage::Text(text) => println!("<{}> {}", self.name(from), printable(&text)),
                ChatMessage::Image(url) => println!("<{}> [an image, {}]", self.name(from), bytes(url.len() as u64)),
            },
            RoomEvent::Upload(key, progress) => {
                let what = match self.own.get(&key.id) {
                    Some(Own::File { label, .. }) => printable(label),
                    _ => return,
                };
                let who = self.name(key.peer);
                match progress {
                    Progress::Started => println!("sending {what} to {who}"),
                    Progress::Done(n) => println!("sent {what} to {who} ({})", bytes(n)),
                    Progress::Failed(why) => println!("sending {what} to {who} failed: {why}"),
                    Progress::Bytes(_) => {}
                }
            }
            RoomEvent::Download(key, progress) => self.on_download(key, progress),
            RoomEvent::Stream {
                key,
                outgoing,
                progress,
            } => {
                let who = self.name(key.transfer.peer);
                let port = printable(&key.transfer.id.0);
                match progress {
                    Progress::Failed(why) if outgoing => println!("a connection from {who} to {port} failed: {why}"),
                    Progress::Failed(why) => println!("a connection to {who}'s {port} failed: {why}"),
                    other => log::info!("connection {} with {who} ({port}): {other:?}", key.serial),
                }
            }
            RoomEvent::PeerConnection { peer, state } => log::info!("connection to {peer}: {state}"),
            other => log::debug!("{other:?}"),
        }
    }

    fn on_download(&mut self, key: TransferKey, progress: Progress) {
        let Some(d) = self.downloads.get(&key) else { return };
        let label = printable(&d.label);
        match progress {
            Progress::Started => println!("receiving {label}"),
            Progress::Bytes(_) => {}
            Progress::Done(n) => {
                let Some(d) = self.downloads.remove(&key) else { return };
                match crate::receive::finish(&d.target, d.size, false) {
                    Ok(()) => println!("received {label} ({}) as {}", bytes(n), d.target.display()),
                    Err(why) => println!("{label}: {why}"),
                }
            }
            Progress::Failed(why) => {
                let Some(d) = self.downloads.remove(&key) else { return };
                println!(
                    "{label} failed: {why}; the partial file is kept as {}",
                    part_path(&d.target).display()
                );
            }
        }
    }

    /// Resolves a number, an id or `MEMBER/ID` to another member's resource.
    fn resolve(&self, what: &str) -> anyhow::Result<(u32, &Remote)> {
        if let Ok(n) = what.parse::<u32>() {
            if let Some(r) = self.remote.get(&n) {
                return Ok((n, r));
            }
        }
        let (member, id) = match what.split_once('/') {
            Some((m, id)) => (m.parse::<u64>().ok(), id),
            None => (None, what),
        };
        let found: Vec<(u32, &Remote)> = self
            .remote
            .iter()
            .filter(|(_, r)| r.info.id.0 == id && member.is_none_or(|m| r.from.0 == m))
            .map(|(n, r)| (*n, r))
            .collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => bail!("nothing offered as {what:?}: `list` shows the numbers"),
            _ => bail!("several members offer {what:?}: use its number from `list`"),
        }
    }

    /// Performs one command line; false to leave.
    async fn command(&mut self, room: &Room, line: &str) -> anyhow::Result<bool> {
        let (verb, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        let args: Vec<&str> = rest.split_whitespace().collect();
        match verb {
            "help" | "?" => println!("{HELP}"),
            "quit" | "exit" => return Ok(false),
            "list" | "ls" => self.list(),
            "chat" | "say" => {
                if rest.is_empty() {
                    bail!("chat what? (chat TEXT)");
                }
                room.chat(ChatMessage::Text(rest.to_owned())).await?;
            }
            "provide" => {
                let [path, id @ ..] = args.as_slice() else {
                    bail!("provide what? (provide PATH [ID])");
                };
                self.provide(room, Path::new(path), id.first().copied()).await?;
            }
            "download" | "get" => {
                let [what, target @ ..] = args.as_slice() else {
                    bail!("download what? (download N|ID [PATH])");
                };
                self.download(room, what, target.first().copied()).await?;
            }
            "stop" => {
                let ids: Vec<ResourceId> = if args.is_empty() {
                    self.own.keys().cloned().collect()
                } else {
                    args.iter().map(|a| ResourceId((*a).to_owned())).collect()
                };
                for id in ids {
                    if self.own.remove(&id).is_none() {
                        println!("you offer nothing as {}", printable(&id.0));
                        continue;
                    }
                    room.stop_providing(id.clone()).await?;
                    println!("stopped offering {}", printable(&id.0));
                }
            }
            "expose" => {
                let [port, id @ ..] = args.as_slice() else {
                    bail!("expose which port? (expose PORT [ID])");
                };
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .with_context(|| format!("{port:?} is not a TCP port (1-65535)"))?;
                self.expose(room, port, id.first().copied()).await?;
            }
            "forward" => {
                let [what, port @ ..] = args.as_slice() else {
                    bail!("forward what? (forward N|ID [PORT])");
                };
                let port: u16 = match port.first() {
                    Some(p) => p.parse().with_context(|| format!("{p:?} is not a TCP port"))?,
                    None => 0,
                };
                self.forward(room, what, port).await?;
            }
            other => bail!("unknown command {:?}; `help` lists them", printable(other)),
        }
        Ok(true)
    }

    fn list(&self) {
        match self.me {
            Some(id) => println!("you: member {id}"),
            None => println!("you: not in the room yet"),
        }
        let mut members: Vec<&ClientId> = self.names.keys().collect();
        members.sort();
        if members.is_empty() {
            println!("nobody else is here");
        }
        for id in members {
            println!("{} (member {id})", self.name(*id));
            for (n, r) in self.remote.iter().filter(|(_, r)| r.from == *id) {
                println!("  [{n}] {} (id {})", self.describe(&r.info), printable(&r.info.id.0));
            }
        }
        for (id, own) in &self.own {
            match own {
                Own::File { path, .. } => println!("you offer {} as {}", path.display(), id.0),
                Own::Port(p) => println!("you expose port {p} as {}", id.0),
            }
        }
        for (key, _) in self.forwards.iter() {
            println!("you forward to {}'s {}", self.name(key.peer), printable(&key.id.0));
        }
    }

    fn own_id(&self, given: Option<&str>) -> anyhow::Result<ResourceId> {
        let id = match given {
            Some(id) => ResourceId(id.to_owned()),
            None => crate::send::new_id()?,
        };
        if id.0.contains('/') || id.0.chars().any(char::is_control) {
            bail!("an id cannot contain '/' or control characters");
        }
        if self.own.contains_key(&id) {
            bail!("you already offer something as {}", id.0);
        }
        Ok(id)
    }

    async fn provide(&mut self, room: &Room, path: &Path, id: Option<&str>) -> anyhow::Result<()> {
        let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if !meta.is_file() {
            bail!(
                "{} is not a file (offer a directory's files one by one, or use `rift send`)",
                path.display()
            );
        }
        let label = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} has no usable name (names must be UTF-8)", path.display()))?
            .to_owned();
        let id = self.own_id(id)?;
        let info = ProvideInfo {
            id: id.clone(),
            kind: ResourceKind::File,
            track_kind: None,
            label: Some(label.clone()),
            size: Some(meta.len()),
        };
        room.provide(info, Source::Path(path.to_owned())).await?;
        println!("offering {label} ({}) as {}", bytes(meta.len()), id.0);
        self.own.insert(
            id,
            Own::File {
                path: path.to_owned(),
                label,
            },
        );
        Ok(())
    }

    async fn expose(&mut self, room: &Room, port: u16, id: Option<&str>) -> anyhow::Result<()> {
        let id = self.own_id(id)?;
        let info = ProvideInfo {
            id: id.clone(),
            kind: ResourceKind::Port,
            track_kind: None,
            label: Some(format!("tcp {port}")),
            size: None,
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        room.provide(info, Source::Port(addr)).await?;
        println!("exposing 127.0.0.1:{port} as {}", id.0);
        self.own.insert(id, Own::Port(port));
        Ok(())
    }

    async fn download(&mut self, room: &Room, what: &str, target: Option<&str>) -> anyhow::Result<()> {
        let (n, r) = self.resolve(what)?;
        if r.info.kind != ResourceKind::File {
            bail!("[{n}] is not a file");
        }
        let label = r.info.label.clone().unwrap_or_default();
        let name = relative_path(&label).map_err(|e| anyhow!("[{n}]: {e}"))?;
        let target = match target {
            Some(t) if Path::new(t).is_dir() => Path::new(t).join(name),
            Some(t) => PathBuf::from(t),
            None => name,
        };
        if std::fs::symlink_metadata(&target).is_ok() {
            bail!("{} exists; give another PATH", target.display());
        }
        let key = TransferKey {
            peer: r.from,
            id: r.info.id.clone(),
        };
        if self.downloads.contains_key(&key) {
            bail!("[{n}] is already being downloaded");
        }
        let size = r.info.size;
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let part = part_path(&target);
        let file = tokio::fs::File::create(&part)
            .await
            .with_context(|| format!("cannot create {}", part.display()))?;
        room.download(
            key.clone(),
            Sink {
                writer: Box::new(file),
                expected: size,
            },
        )
        .await?;
        self.downloads.insert(key, Download { target, label, size });
        Ok(())
    }

    async fn forward(&mut self, room: &Room, what: &str, port: u16) -> anyhow::Result<()> {
        let (n, r) = self.resolve(what)?;
        if r.info.kind != ResourceKind::Port {
            bail!("[{n}] is not a port");
        }
        let key = TransferKey {
            peer: r.from,
            id: r.info.id.clone(),
        };
        if self.forwards.contains_key(&key) {
            bail!("[{n}] is already forwarded");
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
        let local = listener.local_addr()?;
        println!(
            "forwarding {local} to {}'s {}",
            self.name(r.from),
            self.describe(&r.info)
        );
        let room = room.clone();
        let task_key = key.clone();
        let task = tokio::spawn(async move {
            loop {
                let (tcp, from) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        log::warn!("accept on {local}: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                log::info!("connection from {from} for {}", task_key.id);
                if let Err(e) = room.forward(task_key.clone(), Box::new(tcp)).await {
                    println!("cannot forward a connection: {e}");
                }
            }
        });
        self.forwards.insert(key, task);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(printable("a\x1b[2Jb\n"), "a\\u{1b}[2Jb\\u{a}");
        assert_eq!(printable("grüße"), "grüße");
    }

    #[tokio::test]
    async fn a_line_longer_than_the_limit_is_an_error_and_the_next_line_reads() {
        let mut input = vec![b'x'; MAX_LINE + 10];
        input.extend_from_slice(b"\nlist\n");
        let mut reader = tokio::io::BufReader::with_capacity(1000, input.as_slice());
        let mut buf = Vec::new();
        assert!(read_line_bounded(&mut reader, &mut buf).await.is_err());
        buf.clear();
        assert_eq!(read_line_bounded(&mut reader, &mut buf).await, Ok(Some(())));
        assert_eq!(buf, b"list");
        buf.clear();
        assert_eq!(read_line_bounded(&mut reader, &mut buf).await, Ok(None));
    }
}
