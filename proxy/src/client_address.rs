//! Who a caller is and where: its IP address (the peer's, or the one trusted reverse proxies
//! forwarded) and that address's country.
//!
//! `X-Forwarded-For` is honoured only when the peer is one of `[proxy].trusted_proxies`:
//! anyone else could write any address into it. The header is then read from the right,
//! skipping hops that are themselves trusted proxies; the first other address is the client
//! (the left part was written by the client or a proxy we do not know, and proves nothing).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::http::HeaderMap;
use ipnet::IpNet;
use warden_ingest::geo::GeoIp;

const FORWARDED_FOR: &str = "x-forwarded-for";

/// The caller's address and country, as recorded on its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientAddress {
    pub ip: Option<IpAddr>,
    pub country: Option<String>,
}

/// Resolves callers' addresses: trusted proxies and the GeoIP database.
#[derive(Debug, Clone, Default)]
pub struct ClientLocator {
    trusted_proxies: Vec<IpNet>,
    geoip: Option<Arc<GeoIp>>,
}

impl ClientLocator {
    pub fn new(trusted_proxies: Vec<IpNet>, geoip: Option<Arc<GeoIp>>) -> Self {
        Self {
            trusted_proxies,
            geoip,
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The caller of a connection from `peer` with `headers`.
    pub fn locate(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> ClientAddress {
        let ip = peer.map(|peer| self.client_ip(peer, headers));
        let country = ip.and_then(|ip| self.geoip.as_ref()?.country(ip));
        ClientAddress { ip, country }
    }

    fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all(FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                // Garbage: nothing further left can be believed.
                break;
            };
            client = ip;
            if !self.is_trusted(ip) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
}

/// Parses `[proxy].trusted_proxies`: CIDR networks or single addresses.
pub fn parse_trusted_proxies(entries: &[String]) -> Result<Vec<IpNet>, Vec<String>> {
    let mut nets = Vec::new();
    let mut errors = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        match entry
            .parse::<IpNet>()
            .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
        {
            Ok(net) => nets.push(net),
            Err(_) => errors.push(format!(
                "proxy.trusted_proxies[{index}]: {entry:?} is not a CIDR network or address"
            )),
        }
    }
    if errors.is_empty() {
        Ok(nets)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn locator(trusted: &[&str]) -> ClientLocator {
        let entries: Vec<String> = trusted.iter().map(|s| (*s).to_owned()).collect();
        ClientLocator::new(parse_trusted_proxies(&entries).expect("valid"), None)
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(FORWARDED_FOR, HeaderValue::from_str(value).expect("header"));
        }
        headers
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().expect("ip"))
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let locator = locator(&["10.0.0.0/8", "192.168.1.1"]);
        let spoofed = headers(&["6.6.6.6"]);
        // An untrusted peer's header is ignored.
        assert_eq!(
            locator.locate(ip("203.0.113.5"), &spoofed).ip,
            ip("203.0.113.5")
        );
        // Through a trusted load balancer: the rightmost untrusted hop is the client; what
        // the client wrote to the left of it proves nothing.
        let chain = headers(&["6.6.6.6, 198.51.100.7", "10.1.2.3"]);
        assert_eq!(
            locator.locate(ip("192.168.1.1"), &chain).ip,
            ip("198.51.100.7")
        );
        // Ports and garbage.
        let with_port = headers(&["198.51.100.7:5555"]);
        assert_eq!(
            locator.locate(ip("10.0.0.9"), &with_port).ip,
            ip("198.51.100.7")
        );
        let garbage = headers(&["not-an-ip, 10.0.0.5"]);
        assert_eq!(locator.locate(ip("10.0.0.9"), &garbage).ip, ip("10.0.0.5"));
        // A trusted peer without the header is the client itself.
        assert_eq!(
            locator.locate(ip("10.0.0.9"), &HeaderMap::new()).ip,
            ip("10.0.0.9")
        );
    }

    #[test]
    fn bad_entries_are_named() {
        let errors =
            parse_trusted_proxies(&["10.0.0.0/8".into(), "nope".into()]).expect_err("invalid");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("proxy.trusted_proxies[1]"), "{errors:?}");
    }
}
