//! Node identity: each node holds an Ed25519 key pair beside the grid key
//! and signs every value it publishes in gossip; peers verify a value with
//! the public key they pinned for its node id before they believe it.
//!
//! A published value is `<signature>.<payload>`: the signature (64 bytes,
//! unpadded URL-safe base64, 86 characters) covers the node id, its
//! generation, the key, chitchat's version of the value and the payload,
//! so a value cannot be moved to another node, key, generation or version.
//! Every node publishes its public key under [`ID_KEY`] (signed with
//! itself): a peer pins the first key it sees for a node id (kept in
//! `<data_dir>/known_nodes`), or, with `[mesh] nodes_file`, believes only
//! the enrolled keys listed there.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// The gossip key under which a node publishes its public key.
pub const ID_KEY: &str = "id";
/// Length of an encoded signature.
const SIG_LEN: usize = 86;

/// A node's signing key.
pub struct NodeIdentity {
    key: SigningKey,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeIdentity({})", self.public())
    }
}

/// What a signature covers.
fn message(node: &str, generation: u64, key: &str, version: u64, payload: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(32 + node.len() + key.len() + payload.len());
    m.extend_from_slice(b"gemba-kv-1\0");
    m.extend_from_slice(node.as_bytes());
    m.push(0);
    m.extend_from_slice(&generation.to_be_bytes());
    m.extend_from_slice(key.as_bytes());
    m.push(0);
    m.extend_from_slice(&version.to_be_bytes());
    m.extend_from_slice(payload.as_bytes());
    m
}

/// What the signature of an agent's samples covers: the node, when they
/// were sent and the body, so they cannot be passed off as another node's
/// or another moment's.
fn samples_message(node: &str, unix_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(24 + node.len() + body.len());
    m.extend_from_slice(b"gemba-samples-1\0");
    m.extend_from_slice(node.as_bytes());
    m.push(0);
    m.extend_from_slice(&unix_ms.to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Bytes before the body of signed samples: the signature and the time.
pub const SAMPLES_HEADER: usize = 64 + 8;

/// The body of signed samples, if `key` signed them for `node`, with the
/// time they were signed at.
pub fn open_samples<'a>(
    key: &VerifyingKey,
    node: &str,
    signed: &'a [u8],
) -> Option<(u64, &'a [u8])> {
    if signed.len() < SAMPLES_HEADER {
        return None;
    }
    let sig: [u8; 64] = signed[..64].try_into().ok()?;
    let unix_ms = u64::from_be_bytes(signed[64..72].try_into().ok()?);
    let body = &signed[SAMPLES_HEADER..];
    key.verify_strict(
        &samples_message(node, unix_ms, body),
        &Signature::from_bytes(&sig),
    )
    .ok()?;
    Some((unix_ms, body))
}

impl NodeIdentity {
    /// `body` signed for sending to servers: signature, time, body.
    pub fn sign_samples(&self, node: &str, unix_ms: u64, body: &[u8]) -> Vec<u8> {
        let sig = self.key.sign(&samples_message(node, unix_ms, body));
        let mut out = Vec::with_capacity(SAMPLES_HEADER + body.len());
        out.extend_from_slice(&sig.to_bytes());
        out.extend_from_slice(&unix_ms.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    /// A fresh identity that lives as long as the process (tests, demo).
    pub fn ephemeral() -> NodeIdentity {
        let raw = gemba_core::secret::random32().expect("/dev/urandom is readable");
        NodeIdentity {
            key: SigningKey::from_bytes(&raw),
        }
    }

    /// Reads `<data_dir>/node.key`, creating it (mode 0600) on first
    /// start. Returns the identity and whether it was created.
    pub fn load_or_create(data_dir: &Path) -> Result<(NodeIdentity, bool), String> {
        let path = data_dir.join("node.key");
        if path.exists() {
            gemba_core::secret::check_private(&path)?;
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let raw = URL_SAFE_NO_PAD
                .decode(text.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| format!("{} does not hold a node key", path.display()))?;
            return Ok((
                NodeIdentity {
                    key: SigningKey::from_bytes(&raw),
                },
                false,
            ));
        }
        let create = |e: std::io::Error| format!("cannot create {}: {e}", path.display());
        let raw = gemba_core::secret::random32().map_err(create)?;
        gemba_core::secret::create_private(&path, &URL_SAFE_NO_PAD.encode(raw)).map_err(create)?;
        Ok((
            NodeIdentity {
                key: SigningKey::from_bytes(&raw),
            },
            true,
        ))
    }

    /// The public key, as published and enrolled.
    pub fn public(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes())
    }

    /// The value to publish for `payload` at `version`.
    pub fn sign_value(
        &self,
        node: &str,
        generation: u64,
        key: &str,
        version: u64,
        payload: &str,
    ) -> String {
        let sig = self
            .key
            .sign(&message(node, generation, key, version, payload));
        let mut v = URL_SAFE_NO_PAD.encode(sig.to_bytes());
        v.push('.');
        v.push_str(payload);
        v
    }
}

/// A public key from its text form.
pub fn parse_public(text: &str) -> Option<VerifyingKey> {
    let raw: [u8; 32] = URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&raw).ok()
}

/// The payload of a published value; `None` when it is not signed.
pub fn payload(value: &str) -> Option<&str> {
    if value.len() > SIG_LEN && value.as_bytes()[SIG_LEN] == b'.' {
        value.get(SIG_LEN + 1..)
    } else {
        None
    }
}

/// Whether `value` was signed by `key` for this node, generation, key and
/// version.
pub fn verify(
    key: &VerifyingKey,
    node: &str,
    generation: u64,
    gossip_key: &str,
    version: u64,
    value: &str,
) -> bool {
    let Some(body) = payload(value) else {
        return false;
    };
    let Some(sig) = URL_SAFE_NO_PAD
        .decode(&value[..SIG_LEN])
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
    else {
        return false;
    };
    key.verify_strict(
        &message(node, generation, gossip_key, version, body),
        &Signature::from_bytes(&sig),
    )
    .is_ok()
}

/// Who is who: the public key believed for each node id.
#[derive(Default)]
pub struct Pins {
    inner: RwLock<PinsInner>,
    /// Counts the times a believed key was replaced or dropped: what was
    /// verified with the old keys is verified again.
    epoch: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct PinsInner {
    keys: HashMap<String, VerifyingKey>,
    /// Tiers of enrolled nodes, from the nodes file.
    tags: HashMap<String, Vec<String>>,
    /// With an enrolled list, only its keys are believed.
    enrolled_only: bool,
    /// Where first-seen keys are kept across restarts.
    known_file: Option<PathBuf>,
}

/// How a node id's key was decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Pinned {
    /// Already pinned, or now pinned (first seen).
    Key(VerifyingKey),
    /// Not enrolled, and only enrolled nodes are believed.
    NotEnrolled,
    /// Not pinned yet, and nothing to pin it with.
    Unknown,
}

/// A list of node keys, as a nodes file (enrolled) or `known_nodes`
/// (first seen) holds it: `node-id key [tags]` lines.
#[derive(Clone, Debug, Default)]
pub struct NodeList {
    pub keys: HashMap<String, VerifyingKey>,
    /// The tiers an enrolled node is in (`app,db`), as the administrator
    /// wrote them: servers take a node's tiers from here, not from what
    /// the node says about itself.
    pub tags: HashMap<String, Vec<String>>,
}

/// Reads `node-id key` lines (`#` starts a comment).
pub fn read_list(path: &Path) -> Result<HashMap<String, VerifyingKey>, String> {
    read_node_list(path).map(|l| l.keys)
}

/// Reads `node-id key [tag,tag...]` lines (`#` starts a comment).
pub fn read_node_list(path: &Path) -> Result<NodeList, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(NodeList::default()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut out = NodeList::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let mut words = line.split_whitespace();
        let (Some(id), Some(key), tags, None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(format!("{}: expected `node-id public-key [tags]`", at()));
        };
        if !gemba_core::ids::is_name(id) {
            return Err(format!("{}: {id:?} is not a node id", at()));
        }
        let key =
            parse_public(key).ok_or_else(|| format!("{}: {key:?} is not a node key", at()))?;
        if let Some(tags) = tags {
            let tags: Vec<String> = tags.split(',').map(str::to_string).collect();
            if let Some(bad) = tags.iter().find(|t| !gemba_core::ids::is_name(t)) {
                return Err(format!("{}: {bad:?} is not a tier name", at()));
            }
            out.tags.insert(id.to_string(), tags);
        }
        out.keys.insert(id.to_string(), key);
    }
    Ok(out)
}

/// Writes `list` as a node list (sorted by id).
pub fn write_list(path: &Path, list: &NodeList) -> Result<(), String> {
    let mut ids: Vec<&String> = list.keys.keys().collect();
    ids.sort();
    let mut text = String::from("# node-id public-key [tiers] (gemba node key prints a node's)\n");
    for id in ids {
        text.push_str(&format!(
            "{id} {}",
            URL_SAFE_NO_PAD.encode(list.keys[id].as_bytes())
        ));
        if let Some(tags) = list.tags.get(id).filter(|t| !t.is_empty()) {
            text.push(' ');
            text.push_str(&tags.join(","));
        }
        text.push('\n');
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

impl std::fmt::Debug for Pins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.inner.read().map(|p| p.keys.len()).unwrap_or(0);
        write!(f, "Pins({n} nodes)")
    }
}

impl Pins {
    /// First seen wins; first-seen keys are kept in `known_file`.
    pub fn first_seen(known_file: Option<PathBuf>) -> Result<Pins, String> {
        let keys = match &known_file {
            Some(p) => read_list(p)?,
            None => HashMap::new(),
        };
        Ok(Pins {
            inner: RwLock::new(PinsInner {
                keys,
                tags: HashMap::new(),
                enrolled_only: false,
                known_file,
            }),
            epoch: Default::default(),
        })
    }

    /// Only the keys in `nodes_file` are believed.
    pub fn enrolled(nodes_file: &Path) -> Result<Pins, String> {
        let list = read_node_list(nodes_file)?;
        Ok(Pins {
            inner: RwLock::new(PinsInner {
                keys: list.keys,
                tags: list.tags,
                enrolled_only: true,
                known_file: None,
            }),
            epoch: Default::default(),
        })
    }

    /// Replaces the enrolled keys and tiers (the nodes file changed).
    pub fn reload(&self, list: NodeList) {
        if let Ok(mut p) = self.inner.write() {
            p.keys = list.keys;
            p.tags = list.tags;
        }
        self.bump();
    }

    /// The tiers the nodes file gives `id` (none if it gives none), when
    /// nodes are enrolled; `None` in first-seen mode, where a node's tiers
    /// are only what it declares.
    pub fn enrolled_tags(&self, id: &str) -> Option<Vec<String>> {
        let p = self.inner.read().ok()?;
        p.enrolled_only
            .then(|| p.tags.get(id).cloned().unwrap_or_default())
    }

    /// Forgets a node id's key (revoked); it is pinned anew when seen.
    pub fn forget(&self, id: &str) {
        if let Ok(mut p) = self.inner.write() {
            p.keys.remove(id);
        }
        self.bump();
    }

    fn bump(&self) {
        self.epoch
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Changes whenever a believed key is replaced or dropped (pinning a
    /// new node id leaves it as it is).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn get(&self, id: &str) -> Option<VerifyingKey> {
        self.inner.read().ok()?.keys.get(id).copied()
    }

    /// The key to verify `id`'s values with. `offered` is the public key
    /// the node published (already checked to be self-signed), pinned when
    /// the id has none and first-seen pinning is on.
    pub fn decide(&self, id: &str, offered: Option<VerifyingKey>) -> Pinned {
        // Every node delta asks; nearly always the id is pinned already.
        if let Some(k) = self.get(id) {
            return Pinned::Key(k);
        }
        let Ok(mut p) = self.inner.write() else {
            return Pinned::Unknown;
        };
        if let Some(k) = p.keys.get(id) {
            return Pinned::Key(*k);
        }
        if p.enrolled_only {
            return Pinned::NotEnrolled;
        }
        let Some(k) = offered else {
            return Pinned::Unknown;
        };
        p.keys.insert(id.to_string(), k);
        if let Some(file) = &p.known_file {
            let line = format!("{id} {}\n", URL_SAFE_NO_PAD.encode(k.as_bytes()));
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .and_then(|mut f| f.write_all(line.as_bytes()));
            if let Err(e) = written {
                tracing::warn!(file = %file.display(), error = %e, "cannot keep a first-seen node key");
            }
        }
        tracing::info!(node = id, "pinned the node's key on first sight");
        Pinned::Key(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_verifies_only_where_and_when_it_was_signed() {
        let me = NodeIdentity::ephemeral();
        let pk = parse_public(&me.public()).unwrap();
        let v = me.sign_value("web-1", 7, "c:web", 12, "{\"state\":\"failing\"}");
        assert_eq!(payload(&v), Some("{\"state\":\"failing\"}"));
        assert!(verify(&pk, "web-1", 7, "c:web", 12, &v));
        // Another node, generation, key, version or payload: no.
        assert!(!verify(&pk, "db-1", 7, "c:web", 12, &v));
        assert!(!verify(&pk, "web-1", 8, "c:web", 12, &v));
        assert!(!verify(&pk, "web-1", 7, "c:db", 12, &v));
        assert!(!verify(&pk, "web-1", 7, "c:web", 13, &v));
        let forged = format!("{}{{\"state\":\"passing\"}}", &v[..SIG_LEN + 1]);
        assert!(!verify(&pk, "web-1", 7, "c:web", 12, &forged));
        let other = NodeIdentity::ephemeral();
        assert!(!verify(
            &parse_public(&other.public()).unwrap(),
            "web-1",
            7,
            "c:web",
            12,
            &v
        ));
        assert_eq!(payload("unsigned"), None);
    }

    #[test]
    fn samples_open_only_for_their_node_and_body() {
        let me = NodeIdentity::ephemeral();
        let pk = parse_public(&me.public()).unwrap();
        let signed = me.sign_samples("web-1", 1_800_000_000_000, b"host 1 up=1");
        assert_eq!(
            open_samples(&pk, "web-1", &signed),
            Some((1_800_000_000_000, &b"host 1 up=1"[..]))
        );
        assert_eq!(open_samples(&pk, "db-1", &signed), None);
        let mut tampered = signed.clone();
        *tampered.last_mut().unwrap() = b'2';
        assert_eq!(open_samples(&pk, "web-1", &tampered), None);
        assert_eq!(open_samples(&pk, "web-1", &signed[..10]), None);
    }

    #[test]
    fn a_node_key_is_kept_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("gemba-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (a, created) = NodeIdentity::load_or_create(&dir).unwrap();
        assert!(created);
        let (b, created) = NodeIdentity::load_or_create(&dir).unwrap();
        assert!(!created);
        assert_eq!(a.public(), b.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("node.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn first_seen_pins_hold_and_enrolled_lists_are_closed() {
        let dir = std::env::temp_dir().join(format!("gemba-pins-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let known = dir.join("known_nodes");
        let a = parse_public(&NodeIdentity::ephemeral().public()).unwrap();
        let b = parse_public(&NodeIdentity::ephemeral().public()).unwrap();
        let pins = Pins::first_seen(Some(known.clone())).unwrap();
        assert_eq!(pins.decide("db-1", None), Pinned::Unknown);
        assert_eq!(pins.decide("db-1", Some(a)), Pinned::Key(a));
        // A second key for the same id does not replace the first.
        assert_eq!(pins.decide("db-1", Some(b)), Pinned::Key(a));
        // The pin survives a restart.
        let again = Pins::first_seen(Some(known.clone())).unwrap();
        assert_eq!(again.get("db-1"), Some(a));
        let enrolled = Pins::enrolled(&known).unwrap();
        assert_eq!(enrolled.decide("web-1", Some(b)), Pinned::NotEnrolled);
        assert_eq!(enrolled.decide("db-1", Some(b)), Pinned::Key(a));
        std::fs::write(&known, "db-1 not-a-key\n").unwrap();
        assert!(read_list(&known).unwrap_err().contains("not a node key"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
