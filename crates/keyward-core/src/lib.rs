//! Keyward's pure core: the credential format, the domain vocabulary, the
//! verification decision and the rate-limit decision.
//!
//! Nothing in this crate performs I/O, reads the clock or draws randomness on
//! its own: time is passed in as Unix milliseconds (the rate limit's, as ticks
//! of the caller's monotonic clock) and randomness as a
//! [`rand_core::CryptoRng`]. That keeps every rule here deterministic and
//! testable in isolation, and lets the store, the server and the embeddable
//! library share exactly one implementation of each rule.

pub mod credits;
pub mod gateway;
pub mod ip;
pub mod key;
pub mod model;
pub mod ratelimit;
pub mod scan;
pub mod verify;

pub use credits::{CreditRefill, Credits, RefillInterval};
pub use key::{EnvTag, KeyFormat, KeyHash, MalformedKey, ParsedKey, Secret, ShapedKey};
pub use model::*;
pub use ratelimit::{Gcra, GcraOutcome};
