//! `rift receive`: download every file offered in the room into a directory.
//!
//! Each file goes to `NAME.part` first and is renamed when its size checks out; a transfer
//! that breaks leaves the `.part` file and says so. Existing files are never overwritten
//! without `--force`, and names that would land outside the directory are refused.
//! rift is done once something was offered and every offer has been handled, with no new
//! offer for a moment (offers arrive one message each, right after joining).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use keks_client::room::{Progress, Sink, TransferKey};
use keks_client::{Room, RoomEvent, RoomOptions};
use keks_proto::packets::{ClientId, ProvideInfo, ResourceKind};
use tokio::time::Instant;

use crate::names::{part_path, relative_path};
use crate::progress::{Bar, bytes};
use crate::{EXIT_CANCELLED, EXIT_DONE, EXIT_ERROR, interrupted};

/// Downloads running at once; more offers wait their turn. One: the sender serves one
/// channel at a time per member anyway (see keks-client's room), and one file at a time
/// fills the link as well as several.
pub const PARALLEL: usize = 1;
/// Quiet time after the last offer before rift decides the sender has offered everything.
const SETTLE: Duration = Duration::from_millis(1500);

struct Pending {
    key: TransferKey,
    target: PathBuf,
    name: String,
    size: Option<u64>,
}

struct Running {
    target: PathBuf,
    name: String,
    size: Option<u64>,
    bar: Option<Bar>,
}

#[derive(Default)]
struct Tally {
    received: usize,
    refused: usize,
    failed: usize,
}

/// Runs `rift receive`.
pub async fn run(options: RoomOptions, out: Option<PathBuf>, force: bool) -> anyhow::Result<i32> {
    let out = out.unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let (room, mut events) = Room::join(options).await;
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut running: HashMap<TransferKey, Running> = HashMap::new();
    let mut tally = Tally::default();
    let mut seen_offer = false;
    let mut last_offer = Instant::now();
    let mut names: HashMap<ClientId, String> = HashMap::new();
    loop {
        let settle = tokio::time::sleep_until(last_offer + SETTLE);
        let idle = seen_offer && queue.is_empty() && running.is_empty();
        let event = tokio::select! {
            e = events.recv() => e,
            _ = settle, if idle => break,
            _ = interrupted() => {
                eprintln!("cancelled");
                for (key, r) in &running {
                    eprintln!("{}: incomplete, kept as {}", r.name, part_path(&r.target).display());
                    let _ = room.cancel_download(key.clone()).await;
                }
                return Ok(EXIT_CANCELLED);
            }
        };
        let Some(event) = crate::connection_event(event)? else {
            continue;
        };
        match event {
            RoomEvent::Ready { .. } => eprintln!("waiting for files..."),
            RoomEvent::Identified { id, username } => {
                names.insert(id, username);
            }
            RoomEvent::Provided { from, info } => {
                if info.kind != ResourceKind::File {
                    continue;
                }
                seen_offer = true;
                last_offer = Instant::now();
                match accept(&out, &info, force) {
                    Ok(target) => queue.push_back(Pending {
                        key: TransferKey {
                            peer: from,
                            id: info.id.clone(),
                        },
                        name: target.strip_prefix(&out).unwrap_or(&target).display().to_string(),
                        target,
                        size: info.size,
                    }),
                    Err(why) => {
                        eprintln!("refused: {why}");
                        tally.refused += 1;
                    }
                }
            }
            RoomEvent::ProvideStopped { from, id } => {
                queue.retain(|p| !(p.key.peer == from && p.key.id == id));
            }
            RoomEvent::Left(id) => {
                queue.retain(|p| p.key.peer != id);
                names.remove(&id);
            }
            RoomEvent::Download(key, progress) => {
                let Some(r) = running.get_mut(&key) else { continue };
                match progress {
                    Progress::Started => r.bar = Some(Bar::new(r.name.clone(), r.size)),
                    Progress::Bytes(n) => {
                        if let Some(bar) = &mut r.bar {
                            bar.update(n);
                        }
                    }
                    Progress::Done(n) => {
                        let Some(mut r) = running.remove(&key) else { continue };
                        let msg = match finish(&r.target, r.size, force) {
                            Ok(()) => {
                                tally.received += 1;
                                format!("received {} ({})", r.name, bytes(n))
                            }
                            Err(why) => {
                                tally.failed += 1;
                                format!("{}: {why}", r.name)
                            }
                        };
                        match &mut r.bar {
                            Some(bar) => bar.finish(&msg),
                            None => eprintln!("{msg}"),
                        }
                    }
                    Progress::Failed(why) => {
                        let Some(mut r) = running.remove(&key) else { continue };
                        tally.failed += 1;
                        let msg = format!(
                            "{} failed: {why}; the partial file is kept as {}",
                            r.name,
                            part_path(&r.target).display()
                        );
                        match &mut r.bar {
                            Some(bar) => bar.finish(&msg),
                            None => eprintln!("{msg}"),
                        }
                    }
                }
            }
            _ => {}
        }
        while running.len() < PARALLEL {
            let Some(p) = queue.pop_front() else { break };
            match start(&room, &p).await {
                Ok(()) => {
                    running.insert(
                        p.key,
                        Running {
                            target: p.target,
                            name: p.name,
                            size: p.size,
                            bar: None,
                        },
                    );
                }
                Err(e) => {
                    eprintln!("{}: {e:#}", p.name);
                    tally.failed += 1;
                }
            }
        }
    }
    let Tally {
        received,
        refused,
        failed,
    } = tally;
    eprintln!("{received} received, {refused} refused, {failed} failed");
    Ok(if failed > 0 {
        EXIT_ERROR
    } else if refused > 0 {
        EXIT_CANCELLED
    } else {
        EXIT_DONE
    })
}

/// Where an offered file goes, or why not.
fn accept(out: &Path, info: &ProvideInfo, force: bool) -> Result<PathBuf, String> {
    let label = info.label.as_deref().unwrap_or("");
    let rel = relative_path(label).map_err(|e| e.to_string())?;
    let target = out.join(rel);
    if !force && std::fs::symlink_metadata(&target).is_ok() {
        return Err(format!("{} exists (use --force to overwrite)", target.display()));
    }
    if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
        return Err(format!("{} is a directory", target.display()));
    }
    Ok(target)
}

async fn start(room: &Room, p: &Pending) -> anyhow::Result<()> {
    if let Some(dir) = p.target.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let part = part_path(&p.target);
    let file = tokio::fs::File::create(&part)
        .await
        .with_context(|| format!("cannot create {}", part.display()))?;
    let sink = Sink {
        writer: Box::new(file),
        expected: p.size,
    };
    room.download(p.key.clone(), sink).await?;
    Ok(())
}

/// Checks the `.part` file's size and renames it into place.
pub(crate) fn finish(target: &Path, size: Option<u64>, force: bool) -> Result<(), String> {
    let part = part_path(target);
    let len = std::fs::metadata(&part)
        .map_err(|e| format!("cannot read {}: {e}", part.display()))?
        .len();
    if let Some(size) = size.filter(|s| *s != len) {
        return Err(format!(
            "{len} bytes arrived but {size} were announced; kept as {}",
            part.display()
        ));
    }
    if !force && std::fs::symlink_metadata(target).is_ok() {
        return Err(format!(
            "{} appeared meanwhile; kept as {}",
            target.display(),
            part.display()
        ));
    }
    std::fs::rename(&part, target).map_err(|e| format!("cannot rename {} into place: {e}", part.display()))
}
