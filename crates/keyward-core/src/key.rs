//! The credential format: generating keys, recognising presented keys and
//! deriving the only value that is ever stored about them.
//!
//! A key reads `<prefix>_<env tag>_<body><checksum>`, for example
//! `kw_live_` followed by 32 body characters and 6 checksum characters:
//!
//! * the **prefix** names the deployment (default `kw`) so that secret
//!   scanners and humans can tell at a glance whose credential leaked;
//! * the **env tag** (`live`, `stg`, `dev`, … or `mgmt` for management
//!   tokens) makes "a test key used in production" visible before any lookup;
//! * the **body** is 32 base62 characters drawn uniformly from a
//!   caller-supplied [`CryptoRng`], about 190 bits of entropy;
//! * the **checksum** is the CRC32 of everything before it, written as 6
//!   base62 digits. It is not a security feature: it lets [`KeyFormat::parse`]
//!   reject typos and truncations without touching storage, and lets secret
//!   scanners confirm a match offline with almost no false positives.
//!
//! Only the SHA-256 of the whole key ([`KeyHash`]) is persisted. The plaintext
//! exists exactly once, inside a [`Secret`], which is zeroized on drop and can
//! only be read through the deliberately greppable [`Secret::expose`].

use std::fmt;
use std::str::FromStr;

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::model::InvalidValue;

/// Number of random base62 characters in a key body (≈ 190.5 bits).
pub const BODY_LEN: usize = 32;
/// Number of base62 characters used to write the CRC32 checksum.
/// `62^6 > 2^32 > 62^5`, so six digits are the smallest fixed width that fits.
pub const CHECKSUM_LEN: usize = 6;
/// Longest permitted deployment prefix.
pub const MAX_PREFIX_LEN: usize = 16;
/// Longest permitted environment tag.
pub const MAX_TAG_LEN: usize = 12;
/// Longest string any [`KeyFormat`] can accept (68 bytes). Anything longer is
/// refused before any checksum or hashing work is spent on it.
pub const MAX_KEY_LEN: usize = MAX_PREFIX_LEN + 1 + MAX_TAG_LEN + 1 + BODY_LEN + CHECKSUM_LEN;

/// Number of body characters (and of trailing characters) shown in a hint.
const HINT_CHARS: usize = 4;

/// The base62 digits in value order: `0-9`, then `A-Z`, then `a-z`.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Random bytes at or above this bound are discarded. 248 = 4 × 62, so
/// `byte % 62` over the accepted range `0..248` hits every symbol exactly four
/// times: each body character is uniform, with no modulo bias.
const REJECTION_BOUND: u8 = 248;

/// Random bytes drawn per refill while generating a body. Each byte is kept
/// with probability 31/32, so one refill of 48 almost always suffices.
const RANDOM_POOL_LEN: usize = 48;

// ---------------------------------------------------------------------------
// Identifiers (prefix and env tag share one syntax)
// ---------------------------------------------------------------------------

/// `1..=max` bytes: a lower-case ASCII letter, then lower-case letters or
/// digits. No `_`, so the separators in a key are never ambiguous.
fn is_identifier(s: &str, max: usize) -> bool {
    let bytes = s.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            bytes.len() <= max
                && first.is_ascii_lowercase()
                && rest
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        }
        None => false,
    }
}

fn is_valid_tag(s: &str) -> bool {
    is_identifier(s, MAX_TAG_LEN)
}

// ---------------------------------------------------------------------------
// KeyFormat
// ---------------------------------------------------------------------------

/// The per-deployment key format: everything needed to mint and to recognise
/// keys. Holds only the prefix; it is cheap to clone and share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFormat {
    prefix: String,
}

impl Default for KeyFormat {
    fn default() -> Self {
        Self {
            prefix: Self::DEFAULT_PREFIX.to_owned(),
        }
    }
}

impl KeyFormat {
    pub const DEFAULT_PREFIX: &'static str = "kw";

    /// A format with a deployment-specific prefix (1–16 characters: a
    /// lower-case ASCII letter followed by lower-case letters or digits).
    pub fn new(prefix: &str) -> Result<Self, InvalidValue> {
        if !is_identifier(prefix, MAX_PREFIX_LEN) {
            return Err(InvalidValue::new(
                "key prefix must be 1-16 characters: a lower-case ASCII letter \
                 followed by lower-case letters or digits",
            ));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Mints a new key for `tag`, drawing the body from `rng`.
    ///
    /// The string is built in a buffer allocated at its final size, so no
    /// reallocation leaves an un-zeroized partial copy on the heap.
    pub fn generate<R: CryptoRng + ?Sized>(&self, tag: &EnvTag, rng: &mut R) -> Secret {
        let len = self.prefix.len() + 1 + tag.as_str().len() + 1 + BODY_LEN + CHECKSUM_LEN;
        let mut key = Zeroizing::new(String::with_capacity(len));
        key.push_str(&self.prefix);
        key.push('_');
        key.push_str(tag.as_str());
        key.push('_');
        push_random_body(&mut key, rng);
        let checksum = encode_checksum(crc32fast::hash(key.as_bytes()));
        key.extend(checksum.iter().map(|&b| char::from(b)));
        debug_assert_eq!(key.len(), len);
        Secret(key)
    }

    /// Checks shape, prefix (must equal this format's prefix), tag syntax,
    /// body length/alphabet and checksum.
    ///
    /// Never touches storage; never includes the presented input in the
    /// error. The input is taken verbatim (no trimming): a pasted trailing
    /// newline is a malformed key, not a silently corrected one. Both
    /// environment keys and management (`mgmt`) tokens are accepted; the
    /// caller decides which it expects via [`ParsedKey::env_tag`].
    pub fn parse<'a>(&self, presented: &'a str) -> Result<ParsedKey<'a>, MalformedKey> {
        self.parse_shape(presented)?.check_checksum()
    }

    /// [`Self::parse`] but for the checksum, which the caller checks with
    /// [`ShapedKey::check_checksum`] when it still matters. A verifier that
    /// finds the key's hash in its cache needs no checksum: the hash is of a
    /// key that was issued, checksum and all. On a miss it must check the
    /// checksum before it asks the store, so that mistyped keys still never
    /// reach storage.
    pub fn parse_shape<'a>(&self, presented: &'a str) -> Result<ShapedKey<'a>, MalformedKey> {
        let tag = self
            .well_formed_tag(presented)
            .ok_or_else(|| self.shape_error(presented))?;
        Ok(ShapedKey(ParsedKey {
            raw: presented,
            tag,
        }))
    }

    /// The tag of a string shaped `<prefix>_<tag>_<38 base62>`, read from
    /// both ends without searching for separators (this runs on every
    /// verification). Neither the prefix, a valid tag nor the tail can hold
    /// a `_`, so these are exactly the strings [`Self::shape_error`] finds
    /// no fault with.
    fn well_formed_tag<'a>(&self, presented: &'a str) -> Option<&'a str> {
        let rest = presented
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('_')?;
        let tag_len = rest.len().checked_sub(1 + BODY_LEN + CHECKSUM_LEN)?;
        let tag = rest.get(..tag_len)?;
        let (separator, tail) = rest.as_bytes()[tag_len..].split_first()?;
        (*separator == b'_' && is_valid_tag(tag) && all_base62(tail)).then_some(tag)
    }

    /// Why a string failed [`Self::well_formed_tag`], the first fault in
    /// reading order. Off the fast path: only malformed input gets here.
    fn shape_error(&self, presented: &str) -> MalformedKey {
        if presented.len() > self.max_key_len() {
            return MalformedKey::BadShape;
        }
        match split_segments(presented) {
            None => MalformedKey::BadShape,
            Some((prefix, _, _)) if prefix != self.prefix => MalformedKey::WrongPrefix,
            Some((_, tag, _)) if !is_valid_tag(tag) => MalformedKey::BadTag,
            // Prefix and tag are fine, so the tail's length or alphabet is not.
            Some(_) => MalformedKey::BadBody,
        }
    }

    /// The longest key this format can produce: bounds the work `parse` will
    /// do on hostile input.
    fn max_key_len(&self) -> usize {
        self.prefix.len() + 1 + MAX_TAG_LEN + 1 + BODY_LEN + CHECKSUM_LEN
    }
}

/// Splits `prefix_tag_tail` into its three `_`-separated segments; `None` if
/// there are not exactly three.
fn split_segments(s: &str) -> Option<(&str, &str, &str)> {
    let bytes = s.as_bytes();
    if bytes.iter().filter(|&&b| b == b'_').count() != 2 {
        return None;
    }
    let first = bytes.iter().position(|&b| b == b'_')?;
    let second = first + 1 + bytes[first + 1..].iter().position(|&b| b == b'_')?;
    // `_` is ASCII, so both positions are character boundaries.
    Some((&s[..first], &s[first + 1..second], &s[second + 1..]))
}

/// Appends [`BODY_LEN`] uniformly random base62 characters to `out`.
fn push_random_body<R: CryptoRng + ?Sized>(out: &mut String, rng: &mut R) {
    let mut pool = Zeroizing::new([0u8; RANDOM_POOL_LEN]);
    let mut produced = 0;
    while produced < BODY_LEN {
        rng.fill_bytes(pool.as_mut());
        for symbol in pool.iter().filter_map(|&b| base62_symbol(b)) {
            if produced == BODY_LEN {
                break;
            }
            out.push(symbol);
            produced += 1;
        }
    }
}

/// Maps a random byte to a base62 symbol, or `None` if it must be rejected.
fn base62_symbol(byte: u8) -> Option<char> {
    (byte < REJECTION_BOUND).then(|| char::from(BASE62[usize::from(byte % 62)]))
}

/// Marks a byte that is not a base62 digit in [`BASE62_VALUES`].
const NOT_BASE62: u8 = 0x80;

/// Each byte's value as a [`BASE62`] digit, or [`NOT_BASE62`]: one table
/// lookup per byte on the parse path, for both the alphabet check and the
/// checksum's decoding.
static BASE62_VALUES: [u8; 256] = base62_values();

const fn base62_values() -> [u8; 256] {
    let mut table = [NOT_BASE62; 256];
    let mut value = 0;
    while value < BASE62.len() {
        table[BASE62[value] as usize] = value as u8;
        value += 1;
    }
    table
}

/// Whether every byte is a base62 digit (`[0-9A-Za-z]`, see [`BASE62`]),
/// without an early exit: range compares, which the compiler runs 16 bytes
/// at a time, where a table lookup per byte cannot be vectorised.
fn all_base62(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .fold(true, |all, byte| all & byte.is_ascii_alphanumeric())
}

/// Writes `value` as exactly [`CHECKSUM_LEN`] base62 digits, most significant
/// first, left-padded with `0`. A fixed width keeps every key of a format the
/// same length, which is what secret scanners' patterns rely on.
fn encode_checksum(value: u32) -> [u8; CHECKSUM_LEN] {
    let mut digits = [b'0'; CHECKSUM_LEN];
    let mut rest = value;
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(rest % 62) as usize];
        rest /= 62;
    }
    digits
}

/// Compares the trailing checksum with the CRC32 of everything before it,
/// by decoding the digits (cheaper than encoding the CRC). That is the same
/// test as comparing encodings: a fixed-width base62 spelling is unique, so
/// only the canonical one decodes to the CRC. Timing here is harmless: both
/// sides derive only from the attacker's own input.
fn verify_checksum(presented: &str) -> Result<(), MalformedKey> {
    let (signed, checksum) = presented.split_at(presented.len() - CHECKSUM_LEN);
    // 62^6 < 2^64: six digits never overflow.
    let decoded = checksum.bytes().try_fold(0u64, |value, digit| {
        base62_value(digit).map(|d| value * 62 + u64::from(d))
    });
    if decoded == Some(u64::from(crc32fast::hash(signed.as_bytes()))) {
        Ok(())
    } else {
        Err(MalformedKey::BadChecksum)
    }
}

/// The value of a [`BASE62`] symbol.
fn base62_value(symbol: u8) -> Option<u8> {
    let value = BASE62_VALUES[usize::from(symbol)];
    (value != NOT_BASE62).then_some(value)
}

/// `<prefix>_<tag>_` + first four body characters + `…` + last four
/// characters of the key. Revealing 8 of 38 characters (four of them checksum
/// digits) leaves well over 128 bits unknown, while being enough for a human to
/// tell keys apart in a list or a log line.
///
/// `key` must be well formed (generated or successfully parsed).
fn hint_of(key: &str) -> String {
    let body_start = key.rfind('_').map_or(0, |i| i + 1);
    let head = &key[..body_start];
    let tail = &key[body_start..];
    let first = &tail[..HINT_CHARS];
    let last = &tail[tail.len() - HINT_CHARS..];
    format!("{head}{first}\u{2026}{last}")
}

// ---------------------------------------------------------------------------
// EnvTag
// ---------------------------------------------------------------------------

/// An environment's short tag (`live`, `stg`, `dev` or operator-defined), or
/// the reserved [`EnvTag::MANAGEMENT`] tag carried by management tokens.
///
/// Serialized as a plain string; deserialization applies [`EnvTag::parse`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvTag(String);

impl EnvTag {
    /// The tag reserved for management tokens (`kw_mgmt_…`). No environment
    /// may use it, so a management token can never be mistaken for an API key.
    pub const MANAGEMENT: &'static str = "mgmt";

    /// Any syntactically valid tag, including [`EnvTag::MANAGEMENT`]: 1–12
    /// characters, a lower-case ASCII letter followed by lower-case letters or
    /// digits.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        if !is_valid_tag(s) {
            return Err(InvalidValue::new(
                "environment tag must be 1-12 characters: a lower-case ASCII letter \
                 followed by lower-case letters or digits",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// A tag an operator may give to an environment: [`EnvTag::parse`] minus
    /// the reserved [`EnvTag::MANAGEMENT`] tag.
    pub fn parse_environment_tag(s: &str) -> Result<Self, InvalidValue> {
        let tag = Self::parse(s)?;
        if tag.is_management() {
            return Err(InvalidValue::new(
                "environment tag `mgmt` is reserved for management tokens",
            ));
        }
        Ok(tag)
    }

    /// The tag carried by management tokens.
    pub fn management() -> Self {
        Self(Self::MANAGEMENT.to_owned())
    }

    pub fn is_management(&self) -> bool {
        self.0 == Self::MANAGEMENT
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EnvTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for EnvTag {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for EnvTag {
    type Error = InvalidValue;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<EnvTag> for String {
    fn from(tag: EnvTag) -> Self {
        tag.0
    }
}

// ---------------------------------------------------------------------------
// Secret
// ---------------------------------------------------------------------------

/// A freshly generated credential, shown to its owner once and then dropped.
///
/// Zeroized on drop. Deliberately not `Clone` (no stray copies), not
/// `Display` and not `Serialize` (it cannot reach a log line or a response
/// body by accident); `Debug` prints only the hint.
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// The plaintext key: the only way to read it. Named so that a grep for
    /// `expose(` finds every place the plaintext leaves this type.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The value to store for this key.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self.expose())
    }

    /// A non-secret reminder of the key, e.g. `kw_live_AbCd…wxyz`.
    pub fn hint(&self) -> String {
        hint_of(self.expose())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Secret").field(&self.hint()).finish()
    }
}

// ---------------------------------------------------------------------------
// ParsedKey
// ---------------------------------------------------------------------------

/// A presented key that passed the format and checksum checks. It proves
/// nothing about validity: that takes a lookup of [`ParsedKey::hash`].
///
/// Borrows the presented string, whose zeroization stays the caller's concern.
pub struct ParsedKey<'a> {
    raw: &'a str,
    tag: &'a str,
}

impl ParsedKey<'_> {
    /// The env tag the key claims (may be [`EnvTag::MANAGEMENT`]).
    pub fn env_tag(&self) -> &str {
        self.tag
    }

    /// The lookup key for this credential.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self.raw)
    }

    /// A non-secret reminder of the key, e.g. `kw_live_AbCd…wxyz`.
    pub fn hint(&self) -> String {
        hint_of(self.raw)
    }
}

/// A presented key whose shape passed [`KeyFormat::parse_shape`]; its
/// checksum is not checked yet.
pub struct ShapedKey<'a>(ParsedKey<'a>);

impl<'a> ShapedKey<'a> {
    /// The env tag the key claims (may be [`EnvTag::MANAGEMENT`]).
    pub fn env_tag(&self) -> &'a str {
        self.0.tag
    }

    /// The lookup key for this credential.
    pub fn hash(&self) -> KeyHash {
        self.0.hash()
    }

    pub fn check_checksum(self) -> Result<ParsedKey<'a>, MalformedKey> {
        verify_checksum(self.0.raw)?;
        Ok(self.0)
    }
}

impl fmt::Debug for ShapedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ShapedKey").field(&self.0).finish()
    }
}

impl fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedKey")
            .field("env_tag", &self.tag)
            .field("hint", &self.hint())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// MalformedKey
// ---------------------------------------------------------------------------

/// Why a presented string is not a key of this format. The messages never
/// echo the input: it may be a real credential pasted into the wrong place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedKey {
    #[error("key does not carry this deployment's prefix")]
    WrongPrefix,
    #[error("key is not of the form <prefix>_<env>_<body><checksum>")]
    BadShape,
    #[error("key has an invalid environment tag")]
    BadTag,
    #[error("key body is not 38 base62 characters")]
    BadBody,
    #[error("key checksum does not match (mistyped or truncated key)")]
    BadChecksum,
}

// ---------------------------------------------------------------------------
// KeyHash
// ---------------------------------------------------------------------------

/// The lengths an imported key's secret may have (keys issued elsewhere,
/// moved in by their hash): shorter ones are too weak to be credentials,
/// longer ones are not worth hashing.
pub const IMPORTED_SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;

/// Whether `presented` could be the secret of a key imported from another
/// system: printable ASCII without spaces, of a length in
/// [`IMPORTED_SECRET_LEN`]. Anything else is malformed without a lookup.
pub fn could_be_imported_secret(presented: &str) -> bool {
    IMPORTED_SECRET_LEN.contains(&presented.len())
        && presented.bytes().all(|b| b.is_ascii_graphic())
}

/// SHA-256 of the full key string: the only thing stored.
///
/// Why a fast hash and not Argon2/bcrypt: those exist to stretch
/// low-entropy passwords. A key body carries ~190 bits from a CSPRNG, so
/// brute-forcing a leaked hash is infeasible at any hash speed, and a slow
/// hash on the verification hot path would only hand attackers a cheap DoS
/// lever (each bogus key would cost the server tens of milliseconds of CPU).
/// A deterministic hash is also what makes an indexed lookup possible.
///
/// `==` is constant-time (it delegates to [`KeyHash::ct_eq`]), so using it
/// after a lookup leaks nothing; `Hash` is consistent with it, so `KeyHash`
/// works as a `HashMap` key.
#[derive(Clone, Copy, Eq)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    pub fn of(presented_secret: &str) -> Self {
        Self(Sha256::digest(presented_secret.as_bytes()).into())
    }

    /// Lower-case hex, 64 characters: the storage encoding.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        out
    }

    /// Inverse of [`KeyHash::to_hex`]. Only the canonical lower-case form is
    /// accepted, so one hash has exactly one stored spelling.
    pub fn from_hex(s: &str) -> Result<Self, InvalidValue> {
        let invalid = || InvalidValue::new("key hash must be 64 lower-case hex characters");
        if s.len() != 64 {
            return Err(invalid());
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
            let hi = hex_value(pair[0]).ok_or_else(invalid)?;
            let lo = hex_value(pair[1]).ok_or_else(invalid)?;
            *byte = (hi << 4) | lo;
        }
        Ok(Self(bytes))
    }

    /// A digest computed elsewhere (an imported key's).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time equality (`subtle`).
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

impl PartialEq for KeyHash {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other)
    }
}

impl std::hash::Hash for KeyHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for KeyHash {
    /// Short form, e.g. `KeyHash(3fa4c0d1…)`: enough to correlate log lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        write!(f, "KeyHash({}\u{2026})", &hex[..8])
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::RngCore;

    /// Test-only RNG that replays a fixed byte script forever. Not random at
    /// all; the `CryptoRng` marker exists only so tests can drive `generate`.
    struct Scripted {
        script: Vec<u8>,
        pos: usize,
    }

    impl Scripted {
        fn new(script: &[u8]) -> Self {
            Self {
                script: script.to_vec(),
                pos: 0,
            }
        }

        /// A script that yields every byte value in turn, so bodies vary.
        fn counting() -> Self {
            Self::new(&(0..=255).collect::<Vec<u8>>())
        }
    }

    impl RngCore for Scripted {
        fn next_u32(&mut self) -> u32 {
            let mut buf = [0u8; 4];
            self.fill_bytes(&mut buf);
            u32::from_le_bytes(buf)
        }

        fn next_u64(&mut self) -> u64 {
            let mut buf = [0u8; 8];
            self.fill_bytes(&mut buf);
            u64::from_le_bytes(buf)
        }

        fn fill_bytes(&mut self, dst: &mut [u8]) {
            for byte in dst {
                *byte = self.script[self.pos % self.script.len()];
                self.pos += 1;
            }
        }
    }

    impl CryptoRng for Scripted {}

    fn live() -> EnvTag {
        EnvTag::parse("live").unwrap()
    }

    fn sample_key() -> Secret {
        KeyFormat::default().generate(&live(), &mut Scripted::counting())
    }

    fn body_of(key: &str) -> &str {
        let tail = &key[key.rfind('_').unwrap() + 1..];
        &tail[..BODY_LEN]
    }

    /// Replaces the byte at `index` with `replacement` (ASCII keys only).
    fn with_byte(key: &str, index: usize, replacement: u8) -> String {
        let mut bytes = key.as_bytes().to_vec();
        bytes[index] = replacement;
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn max_key_len_is_computed_from_limits() {
        assert_eq!(MAX_KEY_LEN, 68);
    }

    #[test]
    fn base62_values_invert_the_alphabet() {
        for (value, &symbol) in BASE62.iter().enumerate() {
            assert_eq!(base62_value(symbol), Some(value as u8));
        }
        assert_eq!(base62_value(b'_'), None);
        for value in [0, 1, 61, 62, 0xCBF4_3926, u32::MAX] {
            let decoded = encode_checksum(value).iter().fold(0u64, |acc, &d| {
                acc * 62 + u64::from(base62_value(d).unwrap())
            });
            assert_eq!(decoded, u64::from(value));
        }
    }

    #[test]
    fn split_segments_wants_exactly_three() {
        assert_eq!(split_segments("kw_live_abc"), Some(("kw", "live", "abc")));
        assert_eq!(split_segments("__"), Some(("", "", "")));
        assert_eq!(split_segments("kw_live"), None);
        assert_eq!(split_segments("kw_live_a_b"), None);
        assert_eq!(split_segments(""), None);
    }

    #[test]
    fn checksum_encoding_known_answers() {
        assert_eq!(&encode_checksum(0), b"000000");
        assert_eq!(&encode_checksum(1), b"000001");
        assert_eq!(&encode_checksum(61), b"00000z");
        assert_eq!(&encode_checksum(62), b"000010");
        assert_eq!(&encode_checksum(u32::MAX), b"4gfFC3");
        // The CRC-32 check value: crc32("123456789") = 0xCBF43926.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(&encode_checksum(0xCBF4_3926), b"3jZRME");
    }

    #[test]
    fn generated_key_known_answer() {
        // Byte 0 maps to '0' every time: the checksum is then fixed.
        let key = KeyFormat::default().generate(&live(), &mut Scripted::new(&[0]));
        let expected = format!("kw_live_{}3lNZlx", "0".repeat(32));
        assert_eq!(key.expose(), expected);
    }

    #[test]
    fn generated_key_has_the_documented_layout() {
        let key = sample_key();
        let s = key.expose();
        assert_eq!(s.len(), "kw_live_".len() + BODY_LEN + CHECKSUM_LEN);
        assert!(s.starts_with("kw_live_"));
        assert!(all_base62(&s.as_bytes()["kw_live_".len()..]));
    }

    #[test]
    fn the_base62_check_is_the_alphabet_for_every_byte() {
        for byte in 0..=u8::MAX {
            let in_alphabet = BASE62.contains(&byte);
            assert_eq!(all_base62(&[byte]), in_alphabet, "byte {byte}");
            // In any position of a longer run, too.
            let mut run = *b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH";
            run[byte as usize % run.len()] = byte;
            assert_eq!(all_base62(&run), in_alphabet, "byte {byte} in a run");
        }
    }

    #[test]
    fn rejection_sampling_skips_biased_bytes() {
        // 255 and 248 must be skipped; 247 % 62 = 61 -> 'z'.
        let key = KeyFormat::default().generate(&live(), &mut Scripted::new(&[255, 248, 247]));
        assert_eq!(body_of(key.expose()), "z".repeat(BODY_LEN));
    }

    #[test]
    fn generation_refills_when_a_pool_is_mostly_rejected() {
        let mut script = vec![255u8; RANDOM_POOL_LEN * 3 + 5];
        script.push(62); // 62 % 62 = 0 -> '0'
        let key = KeyFormat::default().generate(&live(), &mut Scripted::new(&script));
        assert_eq!(body_of(key.expose()), "0".repeat(BODY_LEN));
    }

    #[test]
    fn every_accepted_byte_maps_to_its_residue() {
        for byte in 0..REJECTION_BOUND {
            let symbol = base62_symbol(byte).unwrap();
            assert_eq!(symbol as u8, BASE62[usize::from(byte % 62)]);
        }
        for byte in REJECTION_BOUND..=255 {
            assert_eq!(base62_symbol(byte), None);
        }
    }

    #[test]
    fn generate_then_parse_round_trips() {
        let format = KeyFormat::new("acme2").unwrap();
        let key = format.generate(&EnvTag::management(), &mut Scripted::counting());
        let parsed = format.parse(key.expose()).unwrap();
        assert_eq!(parsed.env_tag(), "mgmt");
        assert_eq!(parsed.hash(), key.hash());
        assert_eq!(parsed.hint(), key.hint());
    }

    #[test]
    fn parse_rejects_wrong_prefix() {
        let key = sample_key();
        let other = KeyFormat::new("acme").unwrap();
        assert_eq!(
            other.parse(key.expose()).err(),
            Some(MalformedKey::WrongPrefix)
        );
        let renamed = format!("kx{}", &key.expose()[2..]);
        assert_eq!(
            KeyFormat::default().parse(&renamed).err(),
            Some(MalformedKey::WrongPrefix)
        );
    }

    #[test]
    fn parse_rejects_bad_tag() {
        let key = sample_key();
        let upper = key.expose().replacen("live", "Live", 1);
        assert_eq!(
            KeyFormat::default().parse(&upper).err(),
            Some(MalformedKey::BadTag)
        );
        let empty = key.expose().replacen("_live_", "__", 1);
        assert_eq!(
            KeyFormat::default().parse(&empty).err(),
            Some(MalformedKey::BadTag)
        );
    }

    #[test]
    fn parse_rejects_bad_body_character() {
        let key = sample_key();
        let index = "kw_live_".len() + 3;
        for bad in [b'-', b'+', b'/', b'=', b' ', b'.'] {
            let mangled = with_byte(key.expose(), index, bad);
            assert_eq!(
                KeyFormat::default().parse(&mangled).err(),
                Some(MalformedKey::BadBody)
            );
        }
        let non_ascii = format!("{}é", &key.expose()[..key.expose().len() - 2]);
        assert_eq!(
            KeyFormat::default().parse(&non_ascii).err(),
            Some(MalformedKey::BadBody)
        );
    }

    #[test]
    fn parse_rejects_wrong_length() {
        let key = sample_key();
        let s = key.expose();
        let format = KeyFormat::default();
        assert_eq!(
            format.parse(&s[..s.len() - 1]).err(),
            Some(MalformedKey::BadBody)
        );
        assert_eq!(
            format.parse(&format!("{s}0")).err(),
            Some(MalformedKey::BadBody)
        );
        assert_eq!(
            format.parse(&format!("{s}\n")).err(),
            Some(MalformedKey::BadBody)
        );
        assert_eq!(format.parse("").err(), Some(MalformedKey::BadShape));
        assert_eq!(format.parse("kw_live").err(), Some(MalformedKey::BadShape));
        assert_eq!(
            format.parse(&format!("{s}_extra")).err(),
            Some(MalformedKey::BadShape)
        );
        assert_eq!(
            format.parse(&"a".repeat(10_000)).err(),
            Some(MalformedKey::BadShape)
        );
    }

    #[test]
    fn parse_rejects_bad_checksum() {
        let key = sample_key();
        let s = key.expose();
        let last = s.len() - 1;
        let flipped = if s.as_bytes()[last] == b'A' {
            b'B'
        } else {
            b'A'
        };
        assert_eq!(
            KeyFormat::default()
                .parse(&with_byte(s, last, flipped))
                .err(),
            Some(MalformedKey::BadChecksum)
        );
        let body_index = "kw_live_".len();
        let flipped = if s.as_bytes()[body_index] == b'A' {
            b'B'
        } else {
            b'A'
        };
        assert_eq!(
            KeyFormat::default()
                .parse(&with_byte(s, body_index, flipped))
                .err(),
            Some(MalformedKey::BadChecksum)
        );
        // The checksum covers the tag as well.
        let retagged = s.replacen("_live_", "_liv3_", 1);
        assert_eq!(
            KeyFormat::default().parse(&retagged).err(),
            Some(MalformedKey::BadChecksum)
        );
    }

    #[test]
    fn the_shape_alone_leaves_the_checksum_to_the_caller() {
        let key = sample_key();
        let s = key.expose();
        let last = s.len() - 1;
        let mistyped = with_byte(
            s,
            last,
            if s.as_bytes()[last] == b'A' {
                b'B'
            } else {
                b'A'
            },
        );
        let format = KeyFormat::default();
        let shaped = format.parse_shape(&mistyped).expect("the shape is right");
        assert_eq!(shaped.env_tag(), "live");
        assert_eq!(shaped.hash(), KeyHash::of(&mistyped));
        assert_eq!(
            shaped.check_checksum().err(),
            Some(MalformedKey::BadChecksum)
        );
        assert!(format.parse_shape(s).unwrap().check_checksum().is_ok());
        assert_eq!(
            format.parse_shape("kw_live_short").err(),
            Some(MalformedKey::BadBody)
        );
    }

    #[test]
    fn errors_never_echo_the_input() {
        let key = sample_key();
        let body = body_of(key.expose()).to_owned();
        for error in [
            MalformedKey::WrongPrefix,
            MalformedKey::BadShape,
            MalformedKey::BadTag,
            MalformedKey::BadBody,
            MalformedKey::BadChecksum,
        ] {
            let message = error.to_string();
            assert!(!message.contains(&body[..HINT_CHARS]));
            assert!(!message.contains("live"));
        }
    }

    #[test]
    fn debug_never_shows_the_body() {
        let key = sample_key();
        let body = body_of(key.expose()).to_owned();
        let parsed_debug = format!("{:?}", KeyFormat::default().parse(key.expose()).unwrap());
        let secret_debug = format!("{key:?}");
        for debug in [&parsed_debug, &secret_debug] {
            assert!(!debug.contains(&body), "{debug}");
            assert!(
                !debug.contains(&body[HINT_CHARS..HINT_CHARS * 2]),
                "{debug}"
            );
        }
        assert_eq!(secret_debug, format!("Secret({:?})", key.hint()));
        assert_eq!(
            parsed_debug,
            format!("ParsedKey {{ env_tag: \"live\", hint: {:?} }}", key.hint())
        );
    }

    #[test]
    fn hint_format() {
        let key = sample_key();
        let s = key.expose();
        let body = body_of(s);
        let expected = format!("kw_live_{}\u{2026}{}", &body[..4], &s[s.len() - 4..]);
        assert_eq!(key.hint(), expected);
        assert_eq!(key.hint().chars().count(), "kw_live_".len() + 9);
    }

    #[test]
    fn key_hash_hex_round_trip() {
        let hash = KeyHash::of("kw_live_example");
        let hex = hash.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(KeyHash::from_hex(&hex), Ok(hash));
        assert!(KeyHash::from_hex(&hex.to_uppercase()).is_err());
        assert!(KeyHash::from_hex(&hex[..63]).is_err());
        assert!(KeyHash::from_hex(&format!("{}g", &hex[..63])).is_err());
        assert!(KeyHash::from_hex(&format!("{}é", &hex[..62])).is_err());
    }

    #[test]
    fn key_hash_is_sha256_of_the_whole_key() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            KeyHash::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            format!("{:?}", KeyHash::of("abc")),
            "KeyHash(ba7816bf\u{2026})"
        );
    }

    #[test]
    fn key_hash_equality() {
        let a = KeyHash::of("a");
        let b = KeyHash::of("b");
        assert!(a.ct_eq(&KeyHash::of("a")));
        assert!(!a.ct_eq(&b));
        assert_eq!(a, KeyHash::of("a"));
        assert_ne!(a, b);
        let set: std::collections::HashSet<KeyHash> = [a, b, a].into_iter().collect();
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn prefix_validation() {
        for ok in ["kw", "a", "acme2", "abcdefghijklmnop"] {
            assert_eq!(KeyFormat::new(ok).unwrap().prefix(), ok);
        }
        for bad in ["", "Kw", "2kw", "k_w", "k-w", "abcdefghijklmnopq", "kw "] {
            assert!(KeyFormat::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(KeyFormat::default().prefix(), KeyFormat::DEFAULT_PREFIX);
    }

    #[test]
    fn tag_validation() {
        for ok in ["live", "stg", "dev", "a", "eu1", "abcdefghijkl"] {
            assert_eq!(EnvTag::parse(ok).unwrap().as_str(), ok);
            assert_eq!(EnvTag::parse_environment_tag(ok).unwrap().to_string(), ok);
        }
        for bad in ["", "Live", "1live", "li_ve", "li-ve", "abcdefghijklm", "é"] {
            assert!(EnvTag::parse(bad).is_err(), "{bad:?}");
            assert!(EnvTag::parse_environment_tag(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mgmt_is_reserved_for_management_tokens() {
        assert_eq!(EnvTag::parse("mgmt"), Ok(EnvTag::management()));
        assert!(EnvTag::management().is_management());
        assert!(!live().is_management());
        assert!(EnvTag::parse_environment_tag("mgmt").is_err());
        assert_eq!(EnvTag::management().as_str(), EnvTag::MANAGEMENT);
    }

    #[test]
    fn env_tag_serde_is_a_validated_string() {
        use serde::de::IntoDeserializer;
        use serde::de::value::{Error as DeError, StrDeserializer};

        let de: StrDeserializer<'_, DeError> = "live".into_deserializer();
        assert_eq!(EnvTag::deserialize(de), Ok(live()));
        let de: StrDeserializer<'_, DeError> = "Not A Tag".into_deserializer();
        assert!(EnvTag::deserialize(de).is_err());
        assert_eq!(String::from(live()), "live");
    }
}
