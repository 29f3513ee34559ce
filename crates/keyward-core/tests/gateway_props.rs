//! Property tests for the gateway's request-path check and route table
//! (`keyward_core::gateway`).

use keyward_core::gateway::{
    CustomerSource, RouteMatch, RouteTable, check_request_path, customer_in_header,
};
use proptest::prelude::*;

/// Decodes every `%XX` escape once, as an upstream server would.
fn percent_decode(path: &str) -> Vec<u8> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// Paths built from the characters that matter to the check: separators,
/// dots and the pieces of their percent-encodings.
fn tricky_path() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "/", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "\\", "a", "%41", "%", "2", "e",
    ]);
    prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

proptest! {
    /// Whatever the check accepts, an upstream that decodes it once sees
    /// the same segments: no dot segment, no separator the router did not
    /// see, no empty segment but a trailing one.
    #[test]
    fn accepted_paths_decode_to_the_segments_that_were_routed(path in tricky_path()) {
        if check_request_path(&path).is_ok() {
            let decoded = percent_decode(&path);
            prop_assert!(!decoded.contains(&b'\\'));
            let slashes = |s: &[u8]| s.iter().filter(|&&b| b == b'/').count();
            prop_assert_eq!(slashes(&decoded), slashes(path.as_bytes()));
            let segments: Vec<&[u8]> = decoded[1..].split(|&b| b == b'/').collect();
            for (i, segment) in segments.iter().enumerate() {
                prop_assert!(*segment != b"." && *segment != b"..", "{path}");
                prop_assert!(!segment.is_empty() || i == segments.len() - 1, "{path}");
            }
        }
    }

    /// Ordinary paths are never refused.
    #[test]
    fn ordinary_paths_pass(segments in prop::collection::vec("[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,8}", 0..6)) {
        let path = format!("/{}", segments.join("/"));
        prop_assert_eq!(check_request_path(&path), Ok(()));
    }

    /// Any route table answers any request without panicking, and a request
    /// equal to a static route's path finds that route.
    #[test]
    fn tables_answer_every_request(
        paths in prop::collection::vec("(/[a-z]{1,3}){1,3}", 1..6),
        request in "(/[a-z{}*]{0,4}){0,4}",
    ) {
        let text: String = paths
            .iter()
            .map(|p| format!("[[route]]\nmethod = \"GET\"\npath = \"{p}\"\n"))
            .collect();
        if let Ok(table) = RouteTable::from_toml(&text) {
            let _ = table.find("GET", &request);
            for path in &paths {
                let found = matches!(table.find("GET", path), RouteMatch::Found { route: r, .. } if &r.path == path);
                prop_assert!(found, "{path} in {paths:?}");
            }
        }
    }
}

/// The client address behind trusted proxies (`keyward_core::ip`).
mod client_address {
    use ipnet::IpNet;
    use keyward_core::ip::{client_address, parse_rule};
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn trusted() -> Vec<IpNet> {
        vec![parse_rule("10.0.0.0/8").unwrap()]
    }

    /// Addresses half inside the trusted range, half outside it, and now
    /// and then an entry that is not an address at all.
    fn entry() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => (any::<bool>(), any::<u32>()).prop_map(|(inside, bits)| {
                let bits = if inside { 0x0a00_0000 | (bits & 0x00ff_ffff) } else { bits | 0x8000_0000 };
                Ipv4Addr::from(bits).to_string()
            }),
            1 => "[a-z:. ]{0,6}",
        ]
    }

    fn is_trusted(ip: IpAddr) -> bool {
        trusted().iter().any(|net| net.contains(&ip))
    }

    proptest! {
        /// Whatever the header says, the answer is the peer (untrusted
        /// peer), or an address that every hop to its right vouched for:
        /// everything between it and the peer is trusted.
        #[test]
        fn only_trusted_hops_are_believed(
            peer_inside in any::<bool>(),
            peer_bits in any::<u32>(),
            lines in prop::collection::vec(prop::collection::vec(entry(), 0..4), 0..3),
        ) {
            let peer = IpAddr::V4(Ipv4Addr::from(if peer_inside { 0x0a00_0001 } else { peer_bits | 0x8000_0000 }));
            let lines: Vec<String> = lines.iter().map(|l| l.join(",")).collect();
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            let client = client_address(peer, &refs, &trusted());
            if !is_trusted(peer) {
                prop_assert_eq!(client, peer);
            } else {
                // Walk from the right as written: the answer must be
                // reached through trusted addresses only.
                let mut hops = vec![peer];
                for entry in refs.iter().rev().flat_map(|l| l.rsplit(',')) {
                    match entry.trim().parse::<IpAddr>() {
                        Ok(ip) => hops.push(ip),
                        Err(_) => break,
                    }
                }
                let at = if is_trusted(client) {
                    // Every hop was trusted: the walk went to its end.
                    prop_assert_eq!(hops.last(), Some(&client));
                    hops.len() - 1
                } else {
                    let at = hops.iter().position(|&h| h == client);
                    prop_assert!(at.is_some(), "{client} is not in {hops:?}");
                    at.unwrap()
                };
                prop_assert!(hops[..at].iter().all(|&h| is_trusted(h)), "{hops:?} → {client}");
            }
        }
    }
}

/// A customer id as a client may write it in a path segment: each byte
/// plainly, or percent-encoded (either case of hex digit). `/` is always
/// encoded, as a segment cannot hold it plainly.
fn written_as_segment(customer: &str, encode: &[bool]) -> String {
    customer
        .bytes()
        .zip(encode.iter().cycle())
        .map(|(byte, &encoded)| match byte {
            b'/' | b'%' => format!("%{byte:02x}"),
            _ if encoded => format!("%{byte:02X}"),
            _ => (byte as char).to_string(),
        })
        .collect()
}

proptest! {
    /// A route naming its customer parameter reads back exactly the
    /// customer id the client wrote, however it was percent-encoded.
    #[test]
    fn the_customer_parameter_reads_back_the_customer(
        customer in "[!-~]{1,40}",
        encode in prop::collection::vec(any::<bool>(), 1..8),
    ) {
        let table = RouteTable::from_toml(
            "[[route]]\nmethod = \"GET\"\npath = \"/customers/{customer}/orders\"\ncustomer = \"customer\"",
        )
        .unwrap();
        let path = format!("/customers/{}/orders", written_as_segment(&customer, &encode));
        match table.find("GET", &path) {
            RouteMatch::Found { customer_id, .. } => {
                prop_assert_eq!(customer_id.as_deref(), Some(customer.as_str()), "{}", path);
            }
            other => prop_assert!(false, "{path}: {other:?}"),
        }
    }
}

/// A `customer_header` value for the routes file.
fn header_route(name: &str) -> Result<RouteTable, String> {
    let name = name.replace('\\', "\\\\").replace('"', "\\\"");
    RouteTable::from_toml(&format!(
        "[[route]]\nmethod = \"GET\"\npath = \"/invoices\"\ncustomer_header = \"{name}\""
    ))
    .map_err(|e| e.to_string())
}

proptest! {
    /// Any HTTP token names the customer, compared without case, unless it
    /// is a header the gateway does not forward as sent (refused for that
    /// reason alone); anything else is refused at load, naming the field.
    #[test]
    fn customer_headers_are_tokens_read_without_case(
        name in "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,40}",
        junk in "[ :@\"(),/;<=>?{}é]",
        at in any::<prop::sample::Index>(),
    ) {
        match header_route(&name) {
            Ok(table) => {
                let RouteMatch::Found { route, .. } = table.find("GET", "/invoices") else {
                    return Err(TestCaseError::fail("routed"));
                };
                prop_assert_eq!(
                    &route.customer,
                    &Some(CustomerSource::Header(name.to_ascii_lowercase()))
                );
            }
            Err(refusal) => {
                prop_assert!(refusal.starts_with("route 1, customer_header:"), "{}", refusal);
                prop_assert!(refusal.contains("removed before forwarding"), "{name}: {refusal}");
            }
        }
        let mut broken = name.clone();
        broken.insert_str(at.index(name.len() + 1), &junk);
        let refusal = header_route(&broken).expect_err("not a token");
        prop_assert!(refusal.starts_with("route 1, customer_header:"), "{}", refusal);
    }

    /// A header names a customer only when it holds exactly one UTF-8 value,
    /// and then exactly that value.
    #[test]
    fn a_customer_header_reads_back_its_one_value(
        values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 0..3),
    ) {
        let read = customer_in_header(values.iter().map(Vec::as_slice));
        match values.as_slice() {
            [only] => prop_assert_eq!(read, std::str::from_utf8(only).unwrap_or("")),
            _ => prop_assert_eq!(read, ""),
        }
    }
}
