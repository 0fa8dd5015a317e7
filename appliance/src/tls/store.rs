//! The generated certificate's files in `<state dir>/tls/`: `cert.pem`, `key.pem` (mode
//! 0600) and `names` (what it was made for).
//!
//! - Written through a temporary file, `fsync`ed, renamed, and the directory `fsync`ed too,
//!   so a power cut leaves the old set or the new one, never an empty file.
//! - Read without following symlinks (`O_NOFOLLOW`), and the key's mode fixed through the open
//!   file, never through a path: a link placed in the directory cannot point keksbox at
//!   another file.
//! - The directory must belong to the user keksbox runs as; if others could write to it, its
//!   contents are not trusted (someone may have put their own key there): the set is moved
//!   aside and made anew.

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::error::{Hint, TlsError};
use super::identity::{CertSource, Identity};
use super::names::CertNames;

/// Largest file keksbox reads from the state directory: a certificate is a few KiB.
const MAX_FILE: u64 = 1 << 20;

/// The files of the generated certificate.
pub(super) struct Store {
    pub(super) dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    names: PathBuf,
    /// Why the directory's contents cannot be trusted, found when it was opened.
    tainted: Option<String>,
}

/// What the directory holds.
pub(super) enum StoredSet {
    /// Nothing yet.
    Missing,
    /// All three files (whether they are usable shows when they are read).
    Present,
    /// Something that cannot be used, and why.
    Unusable(String),
}

impl Store {
    pub(super) fn open(state_dir: &Path) -> Result<Self, TlsError> {
        let state_err = |reason: String| TlsError::StateDir {
            path: state_dir.to_owned(),
            reason,
        };
        match fs::metadata(state_dir) {
            Ok(meta) if !meta.is_dir() => return Err(state_err("it is not a directory".into())),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(state_dir).map_err(|e| state_err(format!("cannot create it: {e}")))?;
            }
            Err(e) => return Err(state_err(e.to_string())),
        }
        let dir = state_dir.join("tls");
        let mut tainted = None;
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_symlink() || !meta.is_dir() => {
                // Not ours to follow: put it aside and start a real directory.
                let aside = aside_name(state_dir, "tls");
                fs::rename(&dir, &aside).map_err(|e| state_err(format!("cannot move {} aside: {e}", dir.display())))?;
                log::error!(
                    "{} was not a directory (a symlink or a file); moved it to {}",
                    dir.display(),
                    aside.display()
                );
                create_private_dir(&dir).map_err(|e| state_err(format!("cannot create {}: {e}", dir.display())))?;
            }
            Ok(meta) => {
                let uid = rustix::process::geteuid().as_raw();
                if meta.uid() != uid {
                    return Err(TlsError::Owner {
                        path: dir,
                        owner: meta.uid(),
                        uid,
                    });
                }
                let mode = meta.mode() & 0o777;
                if mode & 0o077 != 0 {
                    log::warn!("{} had mode {mode:03o}; setting it to 700", dir.display());
                    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                        .map_err(|e| state_err(format!("cannot set the mode of {}: {e}", dir.display())))?;
                    if mode & 0o022 != 0 {
                        tainted = Some(format!("{} was writable by others (mode {mode:03o})", dir.display()));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_private_dir(&dir).map_err(|e| state_err(format!("cannot create {}: {e}", dir.display())))?;
            }
            Err(e) => return Err(state_err(format!("{}: {e}", dir.display()))),
        }
        Ok(Self {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            names: dir.join("names"),
            dir,
            tainted,
        })
    }

    /// What the directory holds, without reading the files yet.
    pub(super) fn state(&self) -> StoredSet {
        if let Some(why) = &self.tainted {
            return StoredSet::Unusable(why.clone());
        }
        let files = [&self.cert, &self.key, &self.names];
        // symlink_metadata: a link counts as present here and is refused when read.
        let present = files.map(|p| fs::symlink_metadata(p).is_ok());
        match present {
            [false, false, false] => StoredSet::Missing,
            [true, true, true] => StoredSet::Present,
            _ => {
                let missing: Vec<String> = files
                    .iter()
                    .zip(present)
                    .filter(|(_, p)| !p)
                    .map(|(path, _)| path.display().to_string())
                    .collect();
                StoredSet::Unusable(format!("{} missing", missing.join(", ")))
            }
        }
    }

    /// Reads the stored set and the names it was made for.
    pub(super) fn load(&self) -> Result<(Identity, CertNames), TlsError> {
        let names = CertNames::parse(&read_private(&self.names)?)?;
        let chain = read_chain(&read_private(&self.cert)?, &self.cert, Hint::Generated)?;
        let key_text = read_private(&self.key)?;
        let key = read_key(&key_text, &self.key, Hint::Generated)?;
        let identity = Identity::new(chain, key, CertSource::Generated(self.dir.clone()));
        identity.server_config()?;
        Ok((identity, names))
    }

    /// Moves whatever is in the directory into `broken-<time>/` beside it, so a new set can
    /// be made and the old one is still there to look at.
    pub(super) fn replace_unusable(&self, problem: &str) -> Result<(), TlsError> {
        let aside = aside_name(&self.dir, "broken");
        let write_err = |source| TlsError::Write {
            path: aside.clone(),
            source,
        };
        create_private_dir(&aside).map_err(write_err)?;
        let entries = fs::read_dir(&self.dir).map_err(write_err)?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with("broken-") {
                continue;
            }
            fs::rename(entry.path(), aside.join(&name)).map_err(write_err)?;
        }
        sync_dir(&self.dir).map_err(write_err)?;
        log::error!(
            "the generated TLS certificate in {} is unusable ({problem}); moved it to {}",
            self.dir.display(),
            aside.display()
        );
        Ok(())
    }

    pub(super) fn generate(&self, names: &CertNames) -> Result<Identity, TlsError> {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(names.iter().map(str::to_owned).collect::<Vec<_>>())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, "keksbox");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "keksbox appliance");
        let cert = params.self_signed(&key_pair)?;
        // Key first: a crash part-way leaves a set that is incomplete, which the next start
        // moves aside, rather than a certificate without its key silently in use.
        write_atomically(&self.key, key_pair.serialize_pem().as_bytes(), 0o600)?;
        write_atomically(&self.cert, cert.pem().as_bytes(), 0o644)?;
        write_atomically(&self.names, names.render().as_bytes(), 0o644)?;
        let key = PrivateKeyDer::try_from(key_pair.serialize_der()).map_err(|detail| TlsError::BadPem {
            path: self.key.clone(),
            what: "private key",
            detail: detail.to_owned(),
            hint: Hint::Generated,
        })?;
        Ok(Identity::new(
            vec![cert.der().clone()],
            key,
            CertSource::Generated(self.dir.clone()),
        ))
    }
}

/// A file the user configured: symlinks are fine there (certbot's `live/` is made of them).
pub(super) fn read_user_file(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
        hint: Hint::UserFile,
    })
}

/// A file in the state directory: never through a symlink, at most [`MAX_FILE`] bytes; a key
/// that others can read is set back to 0600 through the open file.
fn read_private(path: &Path) -> Result<String, TlsError> {
    let read_err = |source| TlsError::Read {
        path: path.to_owned(),
        source,
        hint: Hint::Generated,
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(io::Error::other("not a regular file")));
    }
    let mode = meta.mode() & 0o777;
    if path.file_name().is_some_and(|n| n == "key.pem") && mode & 0o077 != 0 {
        log::warn!("{} had mode {mode:03o}; setting it to 600", path.display());
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|source| TlsError::Write {
                path: path.to_owned(),
                source,
            })?;
    }
    let mut text = String::new();
    file.take(MAX_FILE).read_to_string(&mut text).map_err(read_err)?;
    Ok(text)
}

pub(super) fn read_chain(text: &str, path: &Path, hint: Hint) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |detail: String| TlsError::BadPem {
        path: path.to_owned(),
        what: "certificate",
        detail,
        hint,
    };
    let chain = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if chain.is_empty() {
        return Err(bad("no \"BEGIN CERTIFICATE\" section found".into()));
    }
    Ok(chain)
}

pub(super) fn read_key(text: &str, path: &Path, hint: Hint) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| TlsError::BadPem {
        path: path.to_owned(),
        what: "private key",
        detail: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no \"BEGIN ... PRIVATE KEY\" section found".into(),
            e => e.to_string(),
        },
        hint,
    })
}

/// Writes `path` through a temporary file and a rename, so a crash never leaves half a file,
/// with `mode` set at creation (a key is never readable by others, not even for a moment),
/// then syncs the directory so the rename itself survives a power cut.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let write_err = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    // A leftover from a crash may have another mode; start afresh. (remove_file removes a
    // symlink itself, and create_new refuses to follow one.)
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(write_err(e)),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(write_err)?;
    file.write_all(contents).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(write_err)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir).map_err(write_err)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(0o700).create(dir)
}

/// `<dir>/<prefix>-<unix seconds>`, with a counter if that exists already.
fn aside_name(dir: &Path, prefix: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut candidate = dir.join(format!("{prefix}-{secs}"));
    let mut n = 1;
    while fs::symlink_metadata(&candidate).is_ok() {
        candidate = dir.join(format!("{prefix}-{secs}.{n}"));
        n += 1;
    }
    candidate
}
