//! The sealing behind anonymous ballots: tokens and their hashes, slots
//! sealed to a participant's link (X25519), votes sealed to the voting key
//! (X25519 and ChaCha20-Poly1305), and the fillers and scrubs that keep
//! every stored ballot row one length.

use super::*;

pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub(super) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

pub(super) fn digest(label: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// A token as it travels: 64 lowercase hex digits (32 random bytes).
pub(super) fn token_bytes(token: &str) -> Option<[u8; 32]> {
    if token.len() != 64 || token.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    unhex(token)?.try_into().ok()
}

pub(super) fn new_token() -> Result<[u8; 32], PmError> {
    gemba_core::secret::random32()
        .map_err(|e| PmError::Store(StoreError::Task(format!("/dev/urandom: {e}"))))
}

/// What the store knows a participant link by.
pub(super) fn link_hash(token: &[u8; 32]) -> String {
    hex(&digest("gemba post-mortem link", &[token]))
}

/// What the store knows a ballot by.
pub(super) fn ballot_hash(token: &[u8; 32]) -> String {
    hex(&digest("gemba post-mortem ballot", &[token]))
}

pub(super) fn seal_secret(link: &[u8; 32]) -> x25519_dalek::StaticSecret {
    x25519_dalek::StaticSecret::from(digest("gemba post-mortem seal", &[link]))
}

pub(super) fn pad(shared: &[u8; 32], ephemeral: &[u8; 32]) -> [u8; 32] {
    digest("gemba post-mortem pad", &[shared, ephemeral])
}

/// Seals a ballot token to a participant's public key: an ephemeral
/// key's public half and the token under a pad from the shared secret.
pub(super) fn seal(ballot: &[u8; 32], to: &[u8; 32]) -> Result<String, PmError> {
    let eph = x25519_dalek::StaticSecret::from(new_token()?);
    let eph_pub = x25519_dalek::PublicKey::from(&eph).to_bytes();
    let shared = eph.diffie_hellman(&x25519_dalek::PublicKey::from(*to));
    let k = pad(shared.as_bytes(), &eph_pub);
    let mut ct = [0u8; 32];
    for i in 0..32 {
        ct[i] = ballot[i] ^ k[i];
    }
    Ok(format!("{}{}", hex(&eph_pub), hex(&ct)))
}

/// Opens a slot with the participant's link token.
pub(super) fn open_slot(slot: &str, link: &[u8; 32]) -> Option<String> {
    let raw = unhex(slot).filter(|r| r.len() == 64)?;
    let eph_pub: [u8; 32] = raw[..32].try_into().ok()?;
    let shared = seal_secret(link).diffie_hellman(&x25519_dalek::PublicKey::from(eph_pub));
    let k = pad(shared.as_bytes(), &eph_pub);
    let ballot: Vec<u8> = raw[32..].iter().zip(k).map(|(c, k)| c ^ k).collect();
    Some(hex(&ballot))
}

/// A vote's content is padded to this many bytes before it is sealed, so
/// that every sealed ballot has the same length.
pub(super) const VOTE_PLAIN: usize = 256;
/// A sealed ballot's bytes: the ephemeral public key, the ciphertext and
/// its tag.
pub(super) const VOTE_SEALED: usize = 32 + VOTE_PLAIN + 16;

pub(super) fn vote_cipher(
    shared: &[u8; 32],
    eph_pub: &[u8; 32],
) -> chacha20poly1305::ChaCha20Poly1305 {
    use chacha20poly1305::KeyInit;
    let key = digest("gemba post-mortem vote", &[shared, eph_pub]);
    chacha20poly1305::ChaCha20Poly1305::new(&key.into())
}

/// A vote sealed to the voting key: `s` and the sealed bytes in hex. Each
/// vote has a key of its own (a fresh ephemeral key), so the nonce is 0.
pub(super) fn seal_vote(content: &str, to: &[u8; 32]) -> Result<String, PmError> {
    use chacha20poly1305::aead::Aead;
    if content.len() >= VOTE_PLAIN {
        return Err(invalid("the vote is too long"));
    }
    let mut plain = content.as_bytes().to_vec();
    plain.resize(VOTE_PLAIN, 0);
    let eph = x25519_dalek::StaticSecret::from(new_token()?);
    let eph_pub = x25519_dalek::PublicKey::from(&eph).to_bytes();
    let shared = eph.diffie_hellman(&x25519_dalek::PublicKey::from(*to));
    let ct = vote_cipher(shared.as_bytes(), &eph_pub)
        .encrypt(&Default::default(), plain.as_slice())
        .map_err(|_| invalid("the vote could not be sealed"))?;
    Ok(format!("s{}{}", hex(&eph_pub), hex(&ct)))
}

/// A sealed vote's content, with the voting key's secret half.
pub(super) fn open_vote(sealed: &str, secret: &x25519_dalek::StaticSecret) -> Option<String> {
    use chacha20poly1305::aead::Aead;
    let raw = unhex(sealed.strip_prefix('s')?).filter(|r| r.len() == VOTE_SEALED)?;
    let eph_pub: [u8; 32] = raw[..32].try_into().ok()?;
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(eph_pub));
    let plain = vote_cipher(shared.as_bytes(), &eph_pub)
        .decrypt(&Default::default(), &raw[32..])
        .ok()?;
    let end = plain.iter().position(|b| *b == 0).unwrap_or(plain.len());
    String::from_utf8(plain[..end].to_vec()).ok()
}

/// What a ballot row holds before it is cast (random, `u` first) and after
/// voting closes (`u` or `x` first, then zeros): always a sealed ballot's
/// length, so that no write moves a row.
pub(super) fn ballot_filler() -> Result<String, PmError> {
    let mut bytes = Vec::with_capacity(VOTE_SEALED + 32);
    while bytes.len() < VOTE_SEALED {
        bytes.extend_from_slice(&new_token()?);
    }
    bytes.truncate(VOTE_SEALED);
    Ok(format!("u{}", hex(&bytes)))
}

pub(super) fn ballot_scrub(mark: char) -> String {
    format!("{mark}{}", "0".repeat(2 * VOTE_SEALED))
}
