//! Finding this deployment's keys in arbitrary bytes (files, diffs), for
//! `keyward scan`. A match must have the key's whole shape, stand apart
//! from the text around it, and carry a correct checksum, so a random
//! string that merely looks like a key is almost never reported.

use crate::key::{BODY_LEN, CHECKSUM_LEN, KeyFormat, MAX_TAG_LEN, ParsedKey};

/// A key found in a haystack, and where it starts (in bytes).
#[derive(Debug)]
pub struct FoundKey<'a> {
    pub offset: usize,
    pub key: ParsedKey<'a>,
}

/// Bytes that may continue a token: a key glued to one of them is part of
/// some longer string, not a key.
fn continues_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

impl KeyFormat {
    /// Every key of this format in `haystack`, in order. Keys of other
    /// prefixes, keys run together with the text around them, and strings
    /// whose checksum is wrong are not reported.
    pub fn find_keys<'a>(&'a self, haystack: &'a [u8]) -> impl Iterator<Item = FoundKey<'a>> + 'a {
        let head = format!("{}_", self.prefix());
        let mut from = 0;
        std::iter::from_fn(move || {
            while let Some(at) = find(&haystack[from..], head.as_bytes()).map(|i| from + i) {
                from = at + 1;
                if at > 0 && continues_token(haystack[at - 1]) {
                    continue;
                }
                if let Some(key) = self.key_at(haystack, at, head.len()) {
                    from = at + key.len();
                    let key = std::str::from_utf8(key).ok()?;
                    if let Ok(key) = self.parse(key) {
                        return Some(FoundKey { offset: at, key });
                    }
                }
            }
            None
        })
    }

    /// The bytes of a key-shaped token starting at `at` (whose first
    /// `head_len` bytes are `<prefix>_`), if the token ends where a key does.
    fn key_at<'a>(&self, haystack: &'a [u8], at: usize, head_len: usize) -> Option<&'a [u8]> {
        let rest = &haystack[at + head_len..];
        let tag_len = rest.iter().take(MAX_TAG_LEN + 1).position(|&b| b == b'_')?;
        let len = head_len + tag_len + 1 + BODY_LEN + CHECKSUM_LEN;
        let token = haystack.get(at..at + len)?;
        let ends_here = haystack
            .get(at + len)
            .is_none_or(|&next| !continues_token(next));
        ends_here.then_some(token)
    }
}

/// The first position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    let mut from = 0;
    while let Some(i) = haystack[from..].iter().position(|&b| b == first) {
        let at = from + i;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::EnvTag;
    use rand_core::TryRngCore;

    fn key(tag: &str) -> String {
        let tag = EnvTag::parse(tag).unwrap();
        KeyFormat::default()
            .generate(&tag, &mut rand_core::OsRng.unwrap_err())
            .expose()
            .to_owned()
    }

    fn found(text: &str) -> Vec<(usize, String)> {
        KeyFormat::default()
            .find_keys(text.as_bytes())
            .map(|f| (f.offset, f.key.hint()))
            .collect()
    }

    #[test]
    fn keys_in_ordinary_settings_are_found() {
        let (live, token) = (key("live"), key("mgmt"));
        let text = format!("API_KEY={live}\nheaders: {{\"Authorization\": \"Bearer {token}\"}}\n");
        let offsets: Vec<usize> = found(&text).into_iter().map(|(at, _)| at).collect();
        assert_eq!(
            offsets,
            [text.find(&live).unwrap(), text.find(&token).unwrap()]
        );
    }

    #[test]
    fn look_alikes_are_not_reported() {
        let live = key("live");
        let mut typo = live.clone().into_bytes();
        let last = typo.len() - 1;
        typo[last] = if typo[last] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).unwrap();
        for text in [
            format!("x{live}"),
            format!("{live}x"),
            format!("{live}_"),
            typo,
            live.replacen("kw_", "zz_", 1),
            live[..live.len() - 1].to_owned(),
            "kw_live_".to_owned(),
            "kw_".to_owned(),
        ] {
            assert!(found(&text).is_empty(), "reported in {text:?}");
        }
    }

    #[test]
    fn a_look_alike_does_not_hide_the_key_after_it() {
        let live = key("live");
        let text = format!("kw_live_nothing kw_{live}");
        assert!(found(&text).is_empty(), "a key glued to text was reported");
        let text = format!("kw_live_short {live}");
        assert_eq!(found(&text).len(), 1);
    }
}
