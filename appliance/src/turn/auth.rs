//! TURN credentials that expire: the time-limited scheme coturn calls the "REST API".
//!
//! The user name is `<expiry in unix seconds>:<random hex>`, the password
//! `base64(HMAC-SHA1(secret, user name))`. `/config.json` hands a fresh pair to each request;
//! the server recomputes the password from the user name, so it keeps no list of issued
//! credentials, and refuses a user name whose expiry has passed. The secret is 32 random bytes
//! in `<state dir>/turn-secret` (mode 0600), made once and kept, written like the TLS key:
//! through a temporary file, synced, renamed, the directory synced.

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use sha1::Sha1;

use super::policy::Stats;

/// Longest user name accepted (ours are about 30 characters).
const MAX_USER: usize = 128;

/// The shared secret behind every credential.
#[derive(Clone)]
pub struct Secret(Arc<[u8; 32]>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// One issued credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Secret {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Secret(Arc::new(bytes))
    }

    pub fn random() -> io::Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(io::Error::other)?;
        Ok(Secret::from_bytes(bytes))
    }

    /// Reads `<state_dir>/turn-secret`, or makes and stores a new one when it is missing, is
    /// not 64 hex digits, or others could read it (then they could make credentials too).
    pub fn load_or_create(state_dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(state_dir)?;
        let path = state_dir.join("turn-secret");
        match read_secret(&path) {
            Ok(secret) => return Ok(secret),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!(
                "{}: {e}; making a new TURN secret (issued credentials end)",
                path.display()
            ),
        }
        let secret = Secret::random()?;
        write_atomically(&path, hex::encode(&secret.0[..]).as_bytes())?;
        Ok(secret)
    }

    /// The password of `username`.
    pub fn password(&self, username: &str) -> String {
        // HMAC takes a key of any length: new_from_slice cannot fail.
        let mut mac = <Hmac<Sha1>>::new_from_slice(&self.0[..]).unwrap_or_else(|_| unreachable!());
        mac.update(username.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    /// A fresh credential valid for `ttl` from `now`.
    pub fn issue(&self, now: SystemTime, ttl: Duration) -> io::Result<Credentials> {
        let expiry = now.duration_since(UNIX_EPOCH).unwrap_or_default() + ttl;
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(io::Error::other)?;
        let username = format!("{}:{}", expiry.as_secs(), hex::encode(nonce));
        let password = self.password(&username);
        Ok(Credentials { username, password })
    }
}

/// The expiry (unix seconds) of a user name of ours, `None` for anything else.
pub fn expiry_of(username: &str) -> Option<u64> {
    if username.len() > MAX_USER {
        return None;
    }
    let (expiry, random) = username.split_once(':')?;
    if random.is_empty() || !random.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    expiry.parse().ok()
}

/// Checks user names for the TURN server and gives it the key of a valid one; the server
/// then checks the request's MESSAGE-INTEGRITY with it, so a forged password fails there.
pub(super) struct AuthHandler {
    pub(super) secret: Secret,
    pub(super) stats: Arc<Stats>,
    /// The expiry of the user name last accepted on this listener: the allocation that the
    /// same request makes next (the listener handles one request at a time) ends then.
    pub(super) last_expiry: Arc<std::sync::Mutex<Option<u64>>>,
}

impl webrtc_turn::auth::AuthHandler for AuthHandler {
    fn auth_handle(&self, username: &str, realm: &str, src: SocketAddr) -> Result<Vec<u8>, webrtc_turn::Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let refuse = |why: &str| {
            Stats::bump(&self.stats.refused_credentials);
            log::debug!("TURN: refusing {src}: {why}");
            Err(webrtc_turn::Error::Other(why.to_owned()))
        };
        let Some(expiry) = expiry_of(username) else {
            return refuse("a user name keksbox did not issue");
        };
        if expiry <= now {
            return refuse("expired credentials");
        }
        *self.last_expiry.lock().unwrap_or_else(|e| e.into_inner()) = Some(expiry);
        Ok(webrtc_turn::auth::generate_auth_key(
            username,
            realm,
            &self.secret.password(username),
        ))
    }
}

fn read_secret(path: &Path) -> io::Result<Secret> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(io::Error::other(format!(
            "mode {:03o}: others could read it",
            meta.mode() & 0o777
        )));
    }
    let mut text = String::new();
    file.take(256).read_to_string(&mut text)?;
    let bytes = hex::decode(text.trim()).map_err(|e| io::Error::other(format!("not hex: {e}")))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| io::Error::other("not 32 bytes"))?;
    Ok(Secret::from_bytes(bytes))
}

/// Through a temporary file created 0600, synced and renamed; then the directory synced.
fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn password_is_base64_hmac_sha1_of_the_user_name() {
        // Computed independently: printf %s 1700000000:abcdef | openssl dgst -sha1 -mac HMAC
        //   -macopt hexkey:0102..20 -binary | base64
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        let secret = Secret::from_bytes(key);
        let password = secret.password("1700000000:abcdef");
        assert_eq!(password, "r5WlB0tI6un1dA+0gjxTeZHw1QU=");
        assert_eq!(password, secret.password("1700000000:abcdef"));
        assert_ne!(password, secret.password("1700000001:abcdef"));
    }

    #[test]
    fn issued_names_carry_their_expiry() {
        let secret = Secret::random().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = secret.issue(now, Duration::from_secs(60)).unwrap();
        assert_eq!(expiry_of(&c.username), Some(1_000_060));
        assert_eq!(c.password, secret.password(&c.username));
        assert_ne!(
            c,
            secret.issue(now, Duration::from_secs(60)).unwrap(),
            "fresh each time"
        );
    }

    #[test]
    fn foreign_user_names() {
        for name in [
            "",
            "alice",
            "123",
            "123:",
            "x:abc",
            "123:a b",
            &format!("1:{}", "a".repeat(200)),
        ] {
            assert_eq!(expiry_of(name), None, "{name}");
        }
    }

    #[test]
    fn the_secret_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Secret::load_or_create(dir.path()).unwrap();
        let path = dir.path().join("turn-secret");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let b = Secret::load_or_create(dir.path()).unwrap();
        assert_eq!(a.password("1:a"), b.password("1:a"));
        // Readable by others: not trusted, replaced.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let c = Secret::load_or_create(dir.path()).unwrap();
        assert_ne!(a.password("1:a"), c.password("1:a"));
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        // Garbage: replaced.
        fs::write(&path, "not hex").unwrap();
        let d = Secret::load_or_create(dir.path()).unwrap();
        assert_ne!(c.password("1:a"), d.password("1:a"));
    }
}
