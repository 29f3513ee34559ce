//! Public object identifiers: a type prefix and a ULID (`key_01j9…`), so ids
//! say what they name, sort by creation time (cursor pagination orders by
//! id) and are unguessable enough not to invite enumeration.

use std::sync::Mutex;
use std::time::SystemTime;
use ulid::Ulid;

/// The last ULID this process handed out. Ids made within one millisecond
/// would otherwise sort at random; counting up from the last one (as a
/// monotonic ULID generator does) keeps them in creation order within this
/// process, so a workspace's environments list in the order they were given.
static LAST: Mutex<Ulid> = Mutex::new(Ulid::nil());

/// The largest random part of a ULID (80 bits).
const MAX_RANDOM: u128 = (1 << 80) - 1;

pub fn new_id(prefix: &str) -> String {
    IdRange::reserve(1).id(prefix, 0)
}

/// `count` consecutive ULIDs, reserved at once: the first is made as
/// [`new_id`] would make it and the others count up from it, exactly as
/// `count` calls within one millisecond would. The store gives each request
/// log of a batch the id `first + offset` and keeps only `first` and the
/// offsets (`sql/request_logs.rs`), so ids no longer cost a string each to
/// make or store.
///
/// A range never leaves its millisecond (the ULID's time part): one whose
/// random part would overflow starts at the next millisecond's zero
/// instead, still after every id made before. The request-log listing
/// relies on it to find the blocks around a cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    first: Ulid,
}

impl IdRange {
    pub fn reserve(count: u32) -> Self {
        let fresh = Ulid::from_datetime(SystemTime::now());
        let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let range = Self::after(*last, fresh, count);
        *last = Ulid(range.first.0 + u128::from(count.max(1)) - 1);
        range
    }

    /// The range of `count` that follows `last`, starting at `fresh` when
    /// that is a later millisecond.
    fn after(last: Ulid, fresh: Ulid, count: u32) -> Self {
        // A clock that stepped back, or ids already made up to this
        // millisecond, continue from the last id instead.
        let first = if fresh.timestamp_ms() > last.timestamp_ms() {
            fresh
        } else {
            Ulid(last.0 + 1)
        };
        match first.random() + u128::from(count.max(1)) - 1 > MAX_RANDOM {
            true => Self {
                first: Ulid::from_parts(first.timestamp_ms() + 1, 0),
            },
            false => Self { first },
        }
    }

    /// The range that starts at `id` (`<prefix>_<ulid>`), if it is one.
    pub fn starting_at(id: &str) -> Option<Self> {
        let (_, ulid) = id.split_once('_')?;
        Ulid::from_string(ulid).ok().map(|first| Self { first })
    }

    /// The id at `offset` in this range, as `<prefix>_<lower-case ulid>`.
    pub fn id(&self, prefix: &str, offset: u32) -> String {
        let ulid = Ulid(self.first.0.wrapping_add(u128::from(offset)));
        let mut buffer = [0u8; ulid::ULID_LEN];
        let encoded = ulid.array_to_str(&mut buffer);
        encoded.make_ascii_lowercase();
        let mut id = String::with_capacity(prefix.len() + 1 + ulid::ULID_LEN);
        id.push_str(prefix);
        id.push('_');
        id.push_str(encoded);
        id
    }
}

pub fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_lower_case_and_increasing() {
        let ids: Vec<String> = (0..1000).map(|_| new_id("env")).collect();
        assert!(ids[0].starts_with("env_"));
        assert_eq!(ids[0].len(), "env_".len() + 26);
        assert_eq!(ids[0], ids[0].to_ascii_lowercase());
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_range_looks_like_single_ids_and_what_follows_sorts_after_it() {
        let before = new_id("log");
        let range = IdRange::reserve(1000);
        let after = new_id("log");
        let batch: Vec<String> = (0..1000).map(|n| range.id("log", n)).collect();
        for id in &batch {
            assert!(id.starts_with("log_"), "{id}");
            assert_eq!(id.len(), before.len());
            assert_eq!(*id, id.to_ascii_lowercase());
            assert!(Ulid::from_string(&id["log_".len()..]).is_ok(), "{id}");
        }
        assert!(before < batch[0]);
        assert!(batch.windows(2).all(|w| w[0] < w[1]));
        assert!(batch[999] < after);
        assert_eq!(IdRange::starting_at(&batch[0]), Some(range));
        assert_eq!(IdRange::starting_at("log_not-a-ulid"), None);
    }

    #[test]
    fn a_range_stays_in_one_millisecond() {
        let range = IdRange::reserve(100_000);
        let (first, last) = (range.id("log", 0), range.id("log", 99_999));
        assert_eq!(first[..14], last[..14], "{first} {last}");
        // One that would overflow the random part moves to the next
        // millisecond, after the last id made; one that fits does not.
        let last = Ulid::from_parts(1_700_000_000_005, MAX_RANDOM - 20);
        let earlier = Ulid::from_parts(1_700_000_000_000, 7);
        let next = IdRange::after(last, earlier, 10);
        assert_eq!(next.first, Ulid(last.0 + 1));
        let moved = IdRange::after(last, earlier, 30);
        assert_eq!(moved.first, Ulid::from_parts(1_700_000_000_006, 0));
        assert!(moved.id("log", 29)[..14] == moved.id("log", 0)[..14]);
        let later = Ulid::from_parts(1_700_000_000_009, 3);
        assert_eq!(IdRange::after(last, later, 30).first, later);
    }
}
