//! IP allowlist rules (seed 001): an entry is one address or a CIDR range.
//! A list with no entries leaves access unrestricted; a list with entries
//! denies every address not on it — including requests whose address is
//! unknown, because "no address" must never be a way around the list.

use crate::model::InvalidValue;
use ipnet::IpNet;
use std::net::IpAddr;

/// Parses `203.0.113.7`, `2001:db8::1`, `10.0.0.0/8` or `2001:db8::/32`.
/// A range with host bits set (`10.0.0.1/8`) is refused rather than silently
/// widened or narrowed, since either reading could surprise its author.
pub fn parse_rule(s: &str) -> Result<IpNet, InvalidValue> {
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(addr.to_canonical()));
    }
    let net: IpNet = s.parse().map_err(|_| {
        InvalidValue::new(format!(
            "{s:?} is not an IP address or CIDR range (examples: 203.0.113.7, 10.0.0.0/8, 2001:db8::/32)"
        ))
    })?;
    if net.trunc() != net {
        return Err(InvalidValue::new(format!(
            "{s:?} has host bits set; did you mean {}?",
            net.trunc()
        )));
    }
    Ok(net)
}

/// Whether `client` may pass a list of rules. IPv4-mapped IPv6 addresses
/// (`::ffff:203.0.113.7`, as dual-stack sockets report them) match IPv4 rules.
pub fn allows(rules: &[IpNet], client: Option<IpAddr>) -> bool {
    if rules.is_empty() {
        return true;
    }
    let Some(client) = client.map(|c| c.to_canonical()) else {
        return false;
    };
    rules.iter().any(|rule| contains(rule, client))
}

/// Whether `client` is in `rule`: the bits under the rule's mask agree.
/// `IpNet::contains` builds the network and broadcast addresses on every
/// call; this runs per rule on every verification.
fn contains(rule: &IpNet, client: IpAddr) -> bool {
    match (rule, client) {
        (IpNet::V4(net), IpAddr::V4(ip)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(net.prefix_len()))
                .unwrap_or(0);
            (u32::from(ip) ^ u32::from(net.addr())) & mask == 0
        }
        (IpNet::V6(net), IpAddr::V6(ip)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(net.prefix_len()))
                .unwrap_or(0);
            (u128::from(ip) ^ u128::from(net.addr())) & mask == 0
        }
        _ => false,
    }
}

/// The client's address when the peer may be a proxy of the operator's
/// own (a load balancer terminating TLS): the peer's address, unless it is
/// in `trusted`; then, walking `X-Forwarded-For` (its header lines in
/// order, `forwarded_for`) from the right — the entries the trusted proxies
/// appended — the first address that is not itself trusted. Entries left of
/// it were written by whoever sent the request and are never believed. An
/// unreadable entry ends the walk at the last trusted hop, so a client
/// cannot talk its way past an allowlist with one.
pub fn client_address(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| contains(net, ip));
    let mut client = peer.to_canonical();
    let entries = forwarded_for.iter().rev().flat_map(|line| line.rsplit(','));
    for entry in entries {
        if !is_trusted(client) {
            break;
        }
        match entry.trim().parse::<IpAddr>() {
            Ok(ip) => client = ip.to_canonical(),
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_first_untrusted_address_from_the_right() {
        let trusted = [parse_rule("10.0.0.0/8").unwrap()];
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let at = |xff: &[&str]| client_address(peer, xff, &trusted).to_string();
        assert_eq!(at(&[]), "10.0.0.2");
        assert_eq!(at(&["203.0.113.7"]), "203.0.113.7");
        assert_eq!(at(&["198.51.100.1, 203.0.113.7, 10.0.0.1"]), "203.0.113.7");
        assert_eq!(
            at(&["198.51.100.1", "203.0.113.7 , 10.0.0.1"]),
            "203.0.113.7"
        );
        assert_eq!(at(&["203.0.113.7, junk"]), "10.0.0.2");
        assert_eq!(at(&["::ffff:203.0.113.7"]), "203.0.113.7");
        assert_eq!(
            at(&["10.0.0.9, 10.0.0.1"]),
            "10.0.0.9",
            "all trusted: the last hop"
        );
        let untrusted_peer: IpAddr = "198.51.100.9".parse().unwrap();
        assert_eq!(
            client_address(untrusted_peer, &["203.0.113.7"], &trusted).to_string(),
            "198.51.100.9",
            "a client's own X-Forwarded-For is ignored"
        );
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn empty_list_is_unrestricted_even_without_an_address() {
        assert!(allows(&[], None));
        assert!(allows(&[], ip("198.51.100.1")));
    }

    #[test]
    fn ranges_and_single_addresses() {
        let rules = [
            parse_rule("10.0.0.0/8").unwrap(),
            parse_rule("203.0.113.7").unwrap(),
        ];
        assert!(allows(&rules, ip("10.200.3.4")));
        assert!(allows(&rules, ip("203.0.113.7")));
        assert!(!allows(&rules, ip("203.0.113.8")));
        assert!(
            !allows(&rules, None),
            "an unknown address never passes a list"
        );
    }

    #[test]
    fn mapped_ipv6_matches_ipv4_rules() {
        let rules = [parse_rule("203.0.113.0/24").unwrap()];
        assert!(allows(&rules, ip("::ffff:203.0.113.9")));
        let rules = [parse_rule("::ffff:203.0.113.9").unwrap()];
        assert!(allows(&rules, ip("203.0.113.9")));
    }

    #[test]
    fn ipv6_ranges() {
        let rules = [parse_rule("2001:db8::/32").unwrap()];
        assert!(allows(&rules, ip("2001:db8:1::5")));
        assert!(!allows(&rules, ip("2001:db9::5")));
    }

    proptest::proptest! {
        /// The mask arithmetic agrees with `ipnet`'s own test, for either
        /// family, any prefix length (host bits set or not) and addresses
        /// near the rule.
        #[test]
        fn contains_agrees_with_ipnet(
            v4 in proptest::bool::ANY,
            rule_bits in proptest::num::u128::ANY,
            flipped in 0u32..128,
            prefix in 0u8..=128,
            client_v4 in proptest::bool::ANY,
        ) {
            let (rule, client) = if v4 {
                let prefix = prefix % 33;
                let rule = IpNet::from(ipnet::Ipv4Net::new((rule_bits as u32).into(), prefix).unwrap());
                let near = (rule_bits as u32) ^ (1u32 << (flipped % 32));
                (rule, if client_v4 { IpAddr::from(std::net::Ipv4Addr::from(near)) } else { IpAddr::from(std::net::Ipv6Addr::from(rule_bits)) })
            } else {
                let rule = IpNet::from(ipnet::Ipv6Net::new(rule_bits.into(), prefix).unwrap());
                let near = rule_bits ^ (1u128 << flipped);
                (rule, if client_v4 { IpAddr::from(std::net::Ipv4Addr::from(rule_bits as u32)) } else { IpAddr::from(std::net::Ipv6Addr::from(near)) })
            };
            proptest::prop_assert_eq!(contains(&rule, client), rule.contains(&client));
        }
    }

    #[test]
    fn malformed_and_non_canonical_rules_are_refused() {
        for bad in [
            "",
            "10.0.0",
            "10.0.0.0/33",
            "example.com",
            "10.0.0.1/8",
            "::1/129",
        ] {
            assert!(parse_rule(bad).is_err(), "{bad} accepted");
        }
        assert!(
            parse_rule("10.0.0.1/8")
                .unwrap_err()
                .message
                .contains("10.0.0.0/8")
        );
    }
}
