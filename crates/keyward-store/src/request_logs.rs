//! Request logs and the change feed the server's verification caches listen
//! to.
//!
//! Logs are stored in *blocks* (`sql/request_logs.rs` says why and how they
//! are read): the entries of one flush that share an account, key,
//! workspace and environment, at most [`BLOCK_ENTRIES`] of them, as one
//! JSON array of [`StoredEntry`]s. A flush hands the store a
//! [`RequestLogBatch`], which encodes each entry into its block as it is
//! pushed, from borrowed [`LogEntry`]s: no owned copy of an entry is made
//! between the verify path's buffer and the block's JSON.

use serde::ser::{Serialize, SerializeTuple, Serializer};
use std::hash::BuildHasher;
use std::net::IpAddr;

/// One verification outcome, owned: what a listing reads back, and what
/// tests write (through [`RequestLogBatch`]'s `FromIterator`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequestLog {
    pub account_id: String,
    pub at: i64,
    /// `None` when no key of the account had the presented hash.
    pub key_id: Option<String>,
    pub workspace_id: Option<String>,
    /// The key's environment when it was found, else the one asked for.
    pub environment: Option<String>,
    pub client_ip: Option<IpAddr>,
    pub permissions: Vec<String>,
    /// The verification code (`valid`, `unknown_key`, …).
    pub code: String,
    pub latency_us: i64,
    /// In gateway mode, the request's method and path (without its query,
    /// which may carry secrets); `None` for `POST /v1/verify`.
    pub method: Option<String>,
    pub path: Option<String>,
}

impl NewRequestLog {
    /// This entry, borrowed.
    pub fn as_entry(&self) -> LogEntry<'_, impl Iterator<Item = &str> + Clone> {
        LogEntry {
            account_id: &self.account_id,
            at: self.at,
            key_id: self.key_id.as_deref(),
            workspace_id: self.workspace_id.as_deref(),
            environment: self.environment.as_deref(),
            client_ip: self.client_ip,
            permissions: self.permissions.iter().map(String::as_str),
            code: &self.code,
            latency_us: self.latency_us,
            method: self.method.as_deref(),
            path: self.path.as_deref(),
        }
    }
}

/// One outcome to log, borrowed from wherever its caller keeps it (the
/// server: its buffered outcome and the cached key it points at).
/// `permissions` yields the names asked for, in order.
#[derive(Debug, Clone)]
pub struct LogEntry<'a, P> {
    pub account_id: &'a str,
    pub at: i64,
    pub key_id: Option<&'a str>,
    pub workspace_id: Option<&'a str>,
    pub environment: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub permissions: P,
    pub code: &'a str,
    pub latency_us: i64,
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLog {
    /// `log_<ulid>`: ids sort by the time they were written.
    pub id: String,
    pub entry: NewRequestLog,
}

/// Which logs to list; every field narrows. Times are Unix milliseconds,
/// `from` inclusive and `to` exclusive.
#[derive(Debug, Clone, Default)]
pub struct RequestLogFilter {
    pub key_id: Option<String>,
    pub workspace_id: Option<String>,
    pub code: Option<String>,
    pub environment: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

/// What the store tells the caches of this node about changes another node
/// (or anything else) committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Something an account's keys or tokens depend on changed, committed
    /// at about `committed_at` (Unix ms) by the database's clock.
    Account {
        account_id: String,
        committed_at: Option<i64>,
    },
    /// Keys were added and nothing else changed (a key's insert is marked
    /// in its notification): no cached key is affected, but a hash cached
    /// as unknown may be known now.
    AddedKeys { committed_at: Option<i64> },
    /// One key's row changed (updated or deleted) and nothing else in its
    /// notification: only what is cached for that key is affected.
    Key {
        key_id: String,
        committed_at: Option<i64>,
    },
    /// Notifications may have been lost (the listening connection dropped
    /// and is back): everything cached must be dropped.
    Resync,
}

/// Entries at most in one block. A page of a key's logs decodes whole
/// blocks, so they are kept small enough to decode in well under a
/// millisecond (~150 KB of JSON), and large enough that a busy key's second
/// of logs is a few rows.
const BLOCK_ENTRIES: u32 = 1_024;

/// One entry as a block's JSON holds it: its offset in the batch, `at`,
/// client IP, permissions asked for, code, latency, method and path.
pub(crate) type StoredEntry = (
    u32,
    i64,
    Option<IpAddr>,
    Vec<String>,
    String,
    i64,
    Option<String>,
    Option<String>,
);

/// What every entry of a block shares: the block's own columns, which the
/// listing's indexes use.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub account_id: String,
    pub key_id: Option<String>,
    pub workspace_id: Option<String>,
    pub environment: Option<String>,
}

impl Group {
    fn is<P>(&self, entry: &LogEntry<'_, P>) -> bool {
        self.account_id == entry.account_id
            && self.key_id.as_deref() == entry.key_id
            && self.workspace_id.as_deref() == entry.workspace_id
            && self.environment.as_deref() == entry.environment
    }
}

/// One block being filled: a future row of `request_log_blocks`.
#[derive(Debug)]
pub(crate) struct Block {
    pub group: Group,
    /// Offsets in the batch of the first and last entries.
    pub first: u32,
    pub last: u32,
    pub entry_count: u32,
    pub first_at: i64,
    pub last_at: i64,
    /// One bit per code among the entries ([`code_bit`]).
    pub codes: i64,
    /// The entries so far, always a whole JSON array.
    pub entries: Vec<u8>,
}

/// A flush's entries, grouped into blocks and encoded as they are pushed,
/// in the order they were answered (their ids will increase in that order).
/// It can be written again if a write fails: the store reserves the ids
/// when it writes.
#[derive(Default)]
pub struct RequestLogBatch {
    blocks: Vec<Block>,
    /// Each group's block being filled, by the group's hash.
    open: hashbrown::HashTable<(u64, usize)>,
    hasher: foldhash::fast::RandomState,
    len: u32,
}

impl std::fmt::Debug for RequestLogBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLogBatch")
            .field("entries", &self.len)
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

impl RequestLogBatch {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The blocks holding entries (one opened for an entry that then
    /// failed to encode holds none).
    pub(crate) fn blocks(&self) -> impl Iterator<Item = &Block> {
        self.blocks.iter().filter(|block| block.entry_count > 0)
    }

    /// Appends `entry` to its group's block (a new block when the group
    /// has none yet or its block is full). An entry that cannot be encoded
    /// is refused and the batch left as it was.
    pub fn push<'a, P>(&mut self, entry: LogEntry<'a, P>) -> Result<(), NotAdded>
    where
        P: Iterator<Item = &'a str> + Clone,
    {
        let offset = self.len;
        let next = offset.checked_add(1).ok_or(NotAdded)?;
        let at = self.open_block(&entry);
        let block = &mut self.blocks[at];
        let before = block.entries.len();
        // The array's closing `]` is taken off and put back after the entry.
        block.entries.pop();
        if block.entry_count > 0 {
            block.entries.push(b',');
        }
        let stored = EncodedEntry {
            offset,
            entry: &entry,
        };
        if serde_json::to_writer(&mut block.entries, &stored).is_err() {
            block.entries.truncate(before - 1);
            block.entries.push(b']');
            return Err(NotAdded);
        }
        block.entries.push(b']');
        if block.entry_count == 0 {
            (block.first, block.first_at, block.last_at) = (offset, entry.at, entry.at);
        }
        block.last = offset;
        block.entry_count += 1;
        block.first_at = block.first_at.min(entry.at);
        block.last_at = block.last_at.max(entry.at);
        block.codes |= code_bit(entry.code);
        self.len = next;
        Ok(())
    }

    /// The index of the block `entry` goes into.
    fn open_block<P>(&mut self, entry: &LogEntry<'_, P>) -> usize {
        let hash = self.hasher.hash_one((
            entry.account_id,
            entry.key_id,
            entry.workspace_id,
            entry.environment,
        ));
        let blocks = &mut self.blocks;
        let found = self
            .open
            .find_mut(hash, |&(_, at)| blocks[at].group.is(entry));
        match found {
            Some((_, at)) if blocks[*at].entry_count < BLOCK_ENTRIES => *at,
            Some((_, at)) => {
                let group = blocks[*at].group.clone();
                *at = blocks.len();
                blocks.push(Block::new(group));
                *at
            }
            None => {
                let group = Group {
                    account_id: entry.account_id.to_owned(),
                    key_id: entry.key_id.map(str::to_owned),
                    workspace_id: entry.workspace_id.map(str::to_owned),
                    environment: entry.environment.map(str::to_owned),
                };
                let at = blocks.len();
                blocks.push(Block::new(group));
                self.open.insert_unique(hash, (hash, at), |&(hash, _)| hash);
                at
            }
        }
    }
}

impl<'e> FromIterator<&'e NewRequestLog> for RequestLogBatch {
    /// A batch of owned entries, for tests and benchmarks. Panics past
    /// 2^32 − 1 entries.
    fn from_iter<I: IntoIterator<Item = &'e NewRequestLog>>(entries: I) -> Self {
        let mut batch = Self::default();
        for entry in entries {
            batch
                .push(entry.as_entry())
                .expect("a test batch fits in a block's encoding");
        }
        batch
    }
}

/// An entry [`RequestLogBatch::push`] did not add: the batch holds 2^32 − 1
/// entries already (offsets are `u32`), or the entry could not be encoded
/// (no entry of these types fails to; the batch is left whole if one did).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAdded;

impl Block {
    fn new(group: Group) -> Self {
        Self {
            group,
            first: 0,
            last: 0,
            entry_count: 0,
            first_at: 0,
            last_at: 0,
            codes: 0,
            entries: b"[]".to_vec(),
        }
    }
}

/// [`LogEntry`] serialized as a [`StoredEntry`], without copying it.
struct EncodedEntry<'e, 'a, P> {
    offset: u32,
    entry: &'e LogEntry<'a, P>,
}

impl<'a, P> Serialize for EncodedEntry<'_, 'a, P>
where
    P: Iterator<Item = &'a str> + Clone,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let entry = self.entry;
        let mut tuple = serializer.serialize_tuple(8)?;
        tuple.serialize_element(&self.offset)?;
        tuple.serialize_element(&entry.at)?;
        tuple.serialize_element(&entry.client_ip)?;
        tuple.serialize_element(&Names(entry.permissions.clone()))?;
        tuple.serialize_element(entry.code)?;
        tuple.serialize_element(&entry.latency_us)?;
        tuple.serialize_element(&entry.method)?;
        tuple.serialize_element(&entry.path)?;
        tuple.end()
    }
}

/// Names serialized as a JSON array straight from their iterator.
struct Names<P>(P);

impl<'a, P: Iterator<Item = &'a str> + Clone> Serialize for Names<P> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.clone())
    }
}

/// Each code's bit in a block's `codes`, by position. Append only: stored
/// blocks hold these bits.
const CODE_BITS: [&str; 12] = [
    "valid",
    "malformed_key",
    "unknown_key",
    "key_inactive",
    "key_revoked",
    "key_expired",
    "wrong_environment",
    "ip_not_allowed",
    "origin_not_allowed",
    "insufficient_permissions",
    "customer_mismatch",
    "rate_limited",
];

/// The bit of any code not in [`CODE_BITS`]. Blocks moved from the table of
/// one row per log have every bit set (`-1`): they may hold any code.
const OTHER_CODE: i64 = 1 << 62;

pub(crate) fn code_bit(code: &str) -> i64 {
    CODE_BITS
        .iter()
        .position(|known| *known == code)
        .map_or(OTHER_CODE, |bit| 1 << bit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: Option<&str>, at: i64) -> NewRequestLog {
        NewRequestLog {
            account_id: "acct_1".into(),
            at,
            key_id: key.map(str::to_owned),
            workspace_id: key.map(|_| "ws_1".to_owned()),
            environment: Some("production".into()),
            client_ip: None,
            permissions: vec![],
            code: "valid".into(),
            latency_us: 1,
            method: None,
            path: None,
        }
    }

    fn stored(block: &Block) -> Vec<StoredEntry> {
        serde_json::from_slice(&block.entries).unwrap()
    }

    /// Entries are grouped by what they share, each group cut into blocks of
    /// at most `BLOCK_ENTRIES` in entry order (a block opens when its first
    /// entry comes); every block knows its span of offsets and times.
    #[test]
    fn a_batch_becomes_one_block_per_group_and_size() {
        let entries: Vec<_> = (0..2 * i64::from(BLOCK_ENTRIES) + 10)
            .map(|n| entry([Some("key_a"), None][(n % 2) as usize], 1_000 - n))
            .collect();
        let batch: RequestLogBatch = entries.iter().collect();
        assert_eq!(batch.len(), entries.len());
        let blocks: Vec<_> = batch.blocks().collect();
        let counts: Vec<_> = blocks.iter().map(|b| b.entry_count).collect();
        assert_eq!(counts, [1_024, 1_024, 5, 5]);
        let keys: Vec<_> = blocks.iter().map(|b| b.group.key_id.as_deref()).collect();
        assert_eq!(keys, [Some("key_a"), None, Some("key_a"), None]);
        let spans: Vec<_> = blocks.iter().map(|b| (b.first, b.last)).collect();
        assert_eq!(
            spans,
            [(0, 2_046), (1, 2_047), (2_048, 2_056), (2_049, 2_057)]
        );
        assert_eq!(
            (blocks[0].first_at, blocks[0].last_at),
            (1_000 - 2_046, 1_000)
        );
        assert_eq!(blocks[0].codes, code_bit("valid"));
        let offsets: Vec<_> = stored(blocks[3]).iter().map(|e| e.0).collect();
        assert_eq!(offsets, [2_049, 2_051, 2_053, 2_055, 2_057]);
    }

    /// What a block holds of an entry is what a listing gives back.
    #[test]
    fn an_entry_is_stored_whole() {
        let full = NewRequestLog {
            client_ip: Some("203.0.113.7".parse().unwrap()),
            permissions: vec!["customers:read".into(), "orders:write".into()],
            code: "rate_limited".into(),
            latency_us: 42,
            method: Some("GET".into()),
            path: Some("/orders/\"quoted\"\n".into()),
            ..entry(Some("key_a"), 7)
        };
        let empty = entry(None, 8);
        let batch: RequestLogBatch = [&full, &empty, &full].into_iter().collect();
        let blocks: Vec<_> = batch.blocks().collect();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].codes, code_bit("rate_limited"));
        let decoded = stored(blocks[0]);
        let expected = |offset| {
            (
                offset,
                7,
                full.client_ip,
                full.permissions.clone(),
                full.code.clone(),
                42,
                full.method.clone(),
                full.path.clone(),
            )
        };
        assert_eq!(decoded, [expected(0), expected(2)]);
        let (_, _, ip, permissions, code, ..) = &stored(blocks[1])[0];
        assert_eq!((ip, permissions.len(), code.as_str()), (&None, 0, "valid"));
    }

    /// Every code the verifier answers has a bit of its own, below the one
    /// that anything else shares.
    #[test]
    fn every_code_has_its_own_bit() {
        let bits: Vec<_> = keyward_core::verify::Code::ALL
            .iter()
            .map(|code| code_bit(code.as_str()))
            .collect();
        assert!(bits.iter().all(|&bit| bit != OTHER_CODE));
        let distinct: std::collections::BTreeSet<_> = bits.iter().collect();
        assert_eq!(distinct.len(), bits.len());
        assert_eq!(code_bit("not_a_code"), OTHER_CODE);
        assert!(bits.iter().all(|&bit| bit > 0 && bit < OTHER_CODE));
    }
}
