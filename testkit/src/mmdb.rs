//! Writes small MaxMind DB files for tests: IPv4 networks mapped to countries, in the format
//! GeoLite2-Country uses (`country.iso_code`), so the real reader (`maxminddb`) reads them as
//! it reads MaxMind's files. Format: <https://maxmind.github.io/MaxMind-DB/>, record size 24.

use std::net::Ipv4Addr;

/// Where a record of the search tree points.
#[derive(Debug, Clone, Copy)]
enum Record {
    Empty,
    Node(usize),
    /// Offset in the data section.
    Data(usize),
}

/// A MaxMind DB with `networks` ("203.0.113.0/24", "DE") as its only entries.
pub fn country_database(networks: &[(&str, &str)]) -> Vec<u8> {
    let mut nodes: Vec<[Record; 2]> = vec![[Record::Empty; 2]];
    let mut data = Vec::new();
    for (network, country) in networks {
        let (address, prefix) = network.split_once('/').expect("a CIDR network");
        let address: Ipv4Addr = address.parse().expect("an IPv4 address");
        let prefix: u32 = prefix.parse().expect("a prefix length");
        assert!((1..=32).contains(&prefix), "prefix length 1 to 32");
        let offset = data.len();
        data.extend(map(&[("country", map(&[("iso_code", string(country))]))]));
        let bits = u32::from(address);
        let mut node = 0;
        for depth in 0..prefix {
            let bit = ((bits >> (31 - depth)) & 1) as usize;
            if depth == prefix - 1 {
                nodes[node][bit] = Record::Data(offset);
                break;
            }
            node = match nodes[node][bit] {
                Record::Node(next) => next,
                _ => {
                    nodes.push([Record::Empty; 2]);
                    let next = nodes.len() - 1;
                    nodes[node][bit] = Record::Node(next);
                    next
                }
            };
        }
    }
    let node_count = nodes.len();
    let mut file = Vec::new();
    for node in &nodes {
        for record in node {
            let value = match *record {
                Record::Empty => node_count,
                Record::Node(next) => next,
                Record::Data(offset) => node_count + 16 + offset,
            };
            let value = u32::try_from(value).expect("fits 24 bits");
            file.extend(&value.to_be_bytes()[1..]);
        }
    }
    file.extend([0u8; 16]);
    file.extend(data);
    file.extend(b"\xAB\xCD\xEFMaxMind.com");
    file.extend(map(&[
        ("binary_format_major_version", uint(5, 2)),
        ("binary_format_minor_version", uint(5, 0)),
        ("build_epoch", uint(9, 1_800_000_000)),
        ("database_type", string("Warden-Test-Country")),
        (
            "description",
            map(&[("en", string("Warden test networks"))]),
        ),
        ("ip_version", uint(5, 4)),
        ("languages", array(&[string("en")])),
        ("node_count", uint(6, node_count as u64)),
        ("record_size", uint(5, 24)),
    ]));
    file
}

/// A control byte (and extension bytes) for a value of `kind` and `size`.
fn control(kind: u8, size: usize) -> Vec<u8> {
    assert!(size < 29 + 256, "small values only");
    let (size_bits, extra) = if size < 29 {
        (size as u8, None)
    } else {
        (29, Some((size - 29) as u8))
    };
    let mut bytes = if kind <= 7 {
        vec![(kind << 5) | size_bits]
    } else {
        vec![size_bits, kind - 7]
    };
    bytes.extend(extra);
    bytes
}

fn string(text: &str) -> Vec<u8> {
    let mut bytes = control(2, text.len());
    bytes.extend(text.as_bytes());
    bytes
}

/// An unsigned integer of MaxMind type `kind` (5: uint16, 6: uint32, 9: uint64).
fn uint(kind: u8, value: u64) -> Vec<u8> {
    let significant: Vec<u8> = value
        .to_be_bytes()
        .into_iter()
        .skip_while(|byte| *byte == 0)
        .collect();
    let mut bytes = control(kind, significant.len());
    bytes.extend(significant);
    bytes
}

fn map(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut bytes = control(7, entries.len());
    for (key, value) in entries {
        bytes.extend(string(key));
        bytes.extend(value);
    }
    bytes
}

fn array(items: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = control(11, items.len());
    for item in items {
        bytes.extend(item);
    }
    bytes
}
