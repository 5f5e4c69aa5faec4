//! No server-side request forgery through webhooks: a target that resolves to an address inside
//! the service's own networks (loopback, private, link-local with the cloud metadata service,
//! carrier-grade NAT, ...) is refused unless WEBHOOK_ALLOW_CIDRS allows it.
//!
//! The check runs on the addresses actually connected to: [`GuardedResolver`] is the HTTP
//! client's resolver, so a name that resolved to a public address when the upload was checked
//! and to 127.0.0.1 at delivery time (DNS rebinding) is still refused. IP-literal hosts never
//! reach a resolver; the dispatcher checks them with [`check`] before sending.
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Why an address is not a webhook target, or `None` when it is a public unicast address. Pure.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "unspecified (this network)"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "carrier-grade NAT (shared)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local (cloud metadata)"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "IETF protocol assignment"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 88, 99, 0], 24, "6to4 relay anycast"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([255, 255, 255, 255], 32, "broadcast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, reason)| *reason)
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    (u128::from(ip) & mask) == (u128::from(net) & mask)
}

/// The IPv4 address an IPv6 address carries, for the forms that reach an IPv4 host:
/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low = Ipv4Addr::from(bits as u32);
    if in_v6(ip, Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96)
        || in_v6(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96)
        || (in_v6(ip, Ipv6Addr::UNSPECIFIED, 96) && bits > 1)
    {
        return Some(low);
    }
    if in_v6(ip, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip == Ipv6Addr::UNSPECIFIED {
        return Some("unspecified");
    }
    if ip == Ipv6Addr::LOCALHOST {
        return Some("loopback");
    }
    if let Some(v4) = embedded_v4(ip) {
        return forbidden_v4(v4);
    }
    const RANGES: &[(Ipv6Addr, u32, &str)] = &[
        (
            Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
            7,
            "unique local (private)",
        ),
        (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
        (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, "site-local"),
        (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
        (
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
            32,
            "documentation",
        ),
        (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20, "documentation"),
        (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64, "discard-only"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
        .map(|(_, _, reason)| *reason)
}

/// One network of WEBHOOK_ALLOW_CIDRS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u32,
}

impl Network {
    /// `a.b.c.d/n`, `x::y/n`, or a single address.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (addr, prefix) = match raw.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (raw, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("'{raw}': not an IP network (e.g. 10.0.0.0/8 or fd00::/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u32>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("'{raw}': the prefix length must be 0 to {max}"))?,
        };
        Ok(Network { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => in_v4(ip, net.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => in_v6(ip, net, self.prefix),
            _ => false,
        }
    }
}

/// WEBHOOK_ALLOW_CIDRS: networks allowed although [`forbidden_reason`] refuses them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Network>);

impl AllowList {
    /// Comma- or space-separated networks; empty allows nothing.
    pub fn parse(raw: &str) -> Result<Self, String> {
        raw.split([',', ' '])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Network::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(AllowList)
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }
}

/// A target refused by the SSRF rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused: {host} is {addr}, a {reason} address (not allowed by WEBHOOK_ALLOW_CIDRS)")]
pub struct Refused {
    pub host: String,
    pub addr: IpAddr,
    pub reason: &'static str,
}

/// Whether `ip` (of `host`) may be connected to. Pure.
pub fn check(host: &str, ip: IpAddr, allow: &AllowList) -> Result<(), Refused> {
    if allow.allows(ip) {
        return Ok(());
    }
    match forbidden_reason(ip.to_canonical()).or_else(|| forbidden_reason(ip)) {
        Some(reason) => Err(Refused {
            host: host.to_owned(),
            addr: ip,
            reason,
        }),
        None => Ok(()),
    }
}

/// Of the addresses `host` resolved to, those that may be connected to; the first refusal when
/// none may. Pure.
pub fn permitted(host: &str, addrs: Vec<SocketAddr>, allow: &AllowList) -> Result<Vec<SocketAddr>, Refused> {
    let mut first_refusal = None;
    let mut ok = Vec::new();
    for addr in addrs {
        match check(host, addr.ip(), allow) {
            Ok(()) => ok.push(addr),
            Err(refused) => {
                first_refusal.get_or_insert(refused);
            }
        }
    }
    match (ok.is_empty(), first_refusal) {
        (true, Some(refused)) => Err(refused),
        _ => Ok(ok),
    }
}

/// The webhook client's resolver: the system's, keeping only permitted addresses.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub allow: Arc<AllowList>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ok = permitted(&host, addrs, &allow)?;
            let addrs: Addrs = Box::new(ok.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused() {
        for (addr, reason) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local (cloud metadata)"),
            ("100.64.0.1", "carrier-grade NAT (shared)"),
            ("100.127.255.254", "carrier-grade NAT (shared)"),
            ("0.0.0.0", "unspecified (this network)"),
            ("224.0.0.251", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("192.0.2.10", "documentation"),
            ("198.51.100.1", "documentation"),
            ("203.0.113.5", "documentation"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fc00::1", "unique local (private)"),
            ("fd12:3456::1", "unique local (private)"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            // IPv4 in IPv6 clothing reaches the IPv4 host.
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local (cloud metadata)"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::a00:1", "private"),
            ("2002:7f00:1::", "loopback"),
        ] {
            assert_eq!(forbidden_reason(ip(addr)), Some(reason), "{addr}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "169.255.0.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(forbidden_reason(ip(addr)), None, "{addr}");
            assert!(check("example.com", ip(addr), &AllowList::default()).is_ok());
        }
    }

    #[test]
    fn the_allow_list_opens_networks() {
        let allow = AllowList::parse("127.0.0.0/8, 10.1.0.0/16 fd00::/8").unwrap();
        assert!(check("h", ip("127.0.0.1"), &allow).is_ok());
        assert!(check("h", ip("::ffff:127.0.0.1"), &allow).is_ok());
        assert!(check("h", ip("10.1.200.3"), &allow).is_ok());
        assert!(check("h", ip("fd00::5"), &allow).is_ok());
        let refused = check("h", ip("10.2.0.1"), &allow).unwrap_err();
        assert_eq!(refused.reason, "private");
        assert_eq!(
            refused.to_string(),
            "refused: h is 10.2.0.1, a private address (not allowed by WEBHOOK_ALLOW_CIDRS)"
        );
        assert!(check("h", ip("::1"), &allow).is_err());
        assert_eq!(AllowList::parse("").unwrap(), AllowList::default());
        assert!(AllowList::parse("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(
            AllowList::parse("intranet")
                .unwrap_err()
                .contains("not an IP network")
        );
    }

    #[test]
    fn only_permitted_addresses_are_connected() {
        let allow = AllowList::default();
        let public: SocketAddr = "93.184.216.34:0".parse().unwrap();
        let private: SocketAddr = "10.0.0.1:0".parse().unwrap();
        assert_eq!(permitted("h", vec![private, public], &allow), Ok(vec![public]));
        assert_eq!(
            permitted("h", vec![private], &allow).unwrap_err().reason,
            "private"
        );
    }
}
