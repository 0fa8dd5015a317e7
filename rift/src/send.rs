//! `rift send`: offer files until each has been downloaded once (or until Ctrl-C with
//! `--keep`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use keks_client::room::{Progress, Source, TransferKey};
use keks_client::{Room, RoomEvent, RoomOptions};
use keks_proto::packets::{ClientId, ProvideInfo, ResourceId, ResourceKind};

use crate::progress::{Bar, bytes};
use crate::{EXIT_CANCELLED, EXIT_DONE, interrupted};

/// Most files offered at once: each is announced to every member that joins.
pub const MAX_FILES: usize = 10_000;

/// A file to offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The name receivers see: relative, `/`-separated (`photos/a.jpg`).
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// Its size when collected.
    pub size: u64,
}

/// The files under `paths`: a file as its name, a directory as its files with names relative
/// to the directory's parent. Symbolic links and special files inside directories are
/// skipped with a warning.
pub fn collect(paths: &[PathBuf]) -> anyhow::Result<Vec<Offer>> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        let base = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
            .or_else(|| {
                std::fs::canonicalize(path)
                    .ok()
                    .and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            })
            .with_context(|| format!("{} has no usable name (names must be UTF-8)", path.display()))?;
        if meta.is_dir() {
            walk(path, &base, &mut out)?;
        } else if meta.is_file() {
            out.push(Offer {
                name: base,
                path: path.clone(),
                size: meta.len(),
            });
        } else {
            bail!("{} is not a file or directory", path.display());
        }
        if out.len() > MAX_FILES {
            bail!("more than {MAX_FILES} files: send an archive instead");
        }
    }
    let mut seen = BTreeSet::new();
    for o in &out {
        if !seen.insert(o.name.clone()) {
            bail!("two files would arrive as {:?}; send them separately", o.name);
        }
    }
    if out.is_empty() {
        bail!("nothing to send: the directories are empty");
    }
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<Offer>) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            log::warn!("skipping {}: its name is not UTF-8", path.display());
            continue;
        };
        let name = format!("{prefix}/{name}");
        let kind = entry
            .file_type()
            .with_context(|| format!("cannot read {}", path.display()))?;
        if kind.is_dir() {
            walk(&path, &name, out)?;
        } else if kind.is_file() {
            let size = entry
                .metadata()
                .with_context(|| format!("cannot read {}", path.display()))?
                .len();
            out.push(Offer { name, path, size });
        } else {
            log::warn!("skipping {}: not a regular file", path.display());
        }
        if out.len() > MAX_FILES {
            bail!("more than {MAX_FILES} files: send an archive instead");
        }
    }
    Ok(())
}

pub(crate) fn new_id() -> anyhow::Result<ResourceId> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).context("no random numbers from the operating system")?;
    Ok(ResourceId(format!(
        "rift-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )))
}

/// Runs `rift send`.
pub async fn run(options: RoomOptions, files: Vec<Offer>, keep: bool, show_secret: bool) -> anyhow::Result<i32> {
    let link = options.server.room_link(&options.secret);
    let secret = options.secret.clone();
    let (room, mut events) = Room::join(options).await;
    let mut offers: BTreeMap<ResourceId, Offer> = BTreeMap::new();
    let mut names: HashMap<ClientId, String> = HashMap::new();
    let mut bars: HashMap<TransferKey, Bar> = HashMap::new();
    let mut complete: BTreeSet<ResourceId> = BTreeSet::new();
    let mut provided = false;
    // Members that received a file; once all is sent, rift waits for them to leave (or for
    // LINGER) so the last bytes are read before the connection closes.
    let mut receivers: BTreeSet<ClientId> = BTreeSet::new();
    let mut linger_until: Option<tokio::time::Instant> = None;
    let total: u64 = files.iter().map(|f| f.size).sum();
    loop {
        let linger = async {
            match linger_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            e = events.recv() => e,
            _ = linger => return Ok(EXIT_DONE),
            _ = interrupted() => {
                eprintln!("cancelled");
                return Ok(EXIT_CANCELLED);
            }
        };
        let Some(event) = crate::connection_event(event)? else {
            continue;
        };
        match event {
            RoomEvent::Ready { .. } if !provided => {
                provided = true;
                for file in &files {
                    let id = new_id()?;
                    let info = ProvideInfo {
                        id: id.clone(),
                        kind: ResourceKind::File,
                        track_kind: None,
                        label: Some(file.name.clone()),
                        size: Some(file.size),
                    };
                    room.provide(info, Source::Path(file.path.clone())).await?;
                    offers.insert(id, file.clone());
                }
                let what = match files.as_slice() {
                    [one] => format!("{} ({})", one.name, bytes(one.size)),
                    many => format!("{} files ({})", many.len(), bytes(total)),
                };
                println!("Offering {what}.");
                if show_secret {
                    println!("On the other machine run:\n\n    rift receive\n\nand enter the secret\n\n    {secret}\n");
                }
                println!("Or open this link in a browser:\n\n    {link}\n");
                if let Some(qr) = crate::qr::render(&link) {
                    println!("{qr}");
                }
            }
            RoomEvent::Ready { .. } => eprintln!("back in the room"),
            RoomEvent::Identified { id, username } => {
                names.insert(id, username);
            }
            RoomEvent::Left(id) => {
                if let Some(name) = names.remove(&id) {
                    log::info!("{name} left");
                }
                receivers.remove(&id);
                if linger_until.is_some() && receivers.is_empty() {
                    return Ok(EXIT_DONE);
                }
            }
            RoomEvent::Upload(key, progress) => {
                let Some(offer) = offers.get(&key.id) else { continue };
                let who = names
                    .get(&key.peer)
                    .cloned()
                    .unwrap_or_else(|| format!("member {}", key.peer));
                match progress {
                    Progress::Started => {
                        bars.insert(
                            key.clone(),
                            Bar::new(format!("{} -> {who}", offer.name), Some(offer.size)),
                        );
                    }
                    Progress::Bytes(n) => {
                        if let Some(bar) = bars.get_mut(&key) {
                            bar.update(n);
                        }
                    }
                    Progress::Done(n) => {
                        let msg = format!("sent {} ({}) to {who}", offer.name, bytes(n));
                        match bars.remove(&key) {
                            Some(mut bar) => bar.finish(&msg),
                            None => eprintln!("{msg}"),
                        }
                        complete.insert(key.id.clone());
                        receivers.insert(key.peer);
                    }
                    Progress::Failed(why) => {
                        let msg = format!("sending {} to {who} failed: {why}", offer.name);
                        match bars.remove(&key) {
                            Some(mut bar) => bar.finish(&msg),
                            None => eprintln!("{msg}"),
                        }
                    }
                }
                if !keep && linger_until.is_none() && complete.len() == offers.len() && bars.is_empty() {
                    for id in offers.keys() {
                        let _ = room.stop_providing(id.clone()).await;
                    }
                    linger_until = Some(tokio::time::Instant::now() + keks_client::room::LINGER);
                }
            }
            _ => {}
        }
    }
}
