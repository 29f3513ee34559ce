//! Public object identifiers: a type prefix and a ULID (`key_01j9…`), so ids
//! say what they name, sort by creation time (cursor pagination orders by
//! id) and are unguessable enough not to invite enumeration.

use std::sync::Mutex;

/// Ids made within one millisecond would otherwise sort at random; a
/// monotonic generator keeps them in creation order within this process (so
/// a workspace's environments list in the order they were given).
static GENERATOR: Mutex<ulid::Generator> = Mutex::new(ulid::Generator::new());

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", next_ulid().to_string().to_ascii_lowercase())
}

fn next_ulid() -> ulid::Ulid {
    let generated = match GENERATOR.lock() {
        Ok(mut generator) => generator.generate().ok(),
        Err(poisoned) => poisoned.into_inner().generate().ok(),
    };
    // `generate` fails only when 2^80 ids were made in one millisecond; a
    // random ULID is still a valid, unique id.
    generated.unwrap_or_else(ulid::Ulid::new)
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
}
