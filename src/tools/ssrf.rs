//! The `web_fetch` SSRF guard (gateway.md §5.6 step 2): which addresses a fetch may connect to,
//! and the resolver it asks. Both are injectable so tests can prove refusals with no traffic.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;

use futures_util::future::LocalBoxFuture;

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockedRange {
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// `100.64/10`.
    Cgnat,
    /// `127/8`, `::1`.
    Loopback,
    /// `169.254/16` (with the `169.254.169.254` metadata address), `fe80::/10`.
    LinkLocal,
    /// `192.0.0/24` (IETF protocol assignments).
    ProtocolAssignments,
    /// `198.18/15`.
    Benchmarking,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `240/4` (with broadcast).
    Reserved,
    /// `fc00::/7`.
    UniqueLocal,
}

impl fmt::Display for BlockedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unspecified => "unspecified",
            Self::Private => "private",
            Self::Cgnat => "carrier-grade NAT",
            Self::Loopback => "loopback",
            Self::LinkLocal => "link-local",
            Self::ProtocolAssignments => "IETF protocol assignments",
            Self::Benchmarking => "benchmarking",
            Self::Multicast => "multicast",
            Self::Reserved => "reserved",
            Self::UniqueLocal => "unique local",
        })
    }
}

/// The range `ip` falls in, if a fetch must not reach it. IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`) and NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`) addresses are
/// judged by the IPv4 address they carry.
pub fn blocked_range(ip: IpAddr) -> Option<BlockedRange> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn blocked_v4(ip: Ipv4Addr) -> Option<BlockedRange> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => BlockedRange::Unspecified,
        (10, _, _) => BlockedRange::Private,
        (100, 64..=127, _) => BlockedRange::Cgnat,
        (127, _, _) => BlockedRange::Loopback,
        (169, 254, _) => BlockedRange::LinkLocal,
        (172, 16..=31, _) => BlockedRange::Private,
        (192, 0, 0) => BlockedRange::ProtocolAssignments,
        (192, 168, _) => BlockedRange::Private,
        (198, 18..=19, _) => BlockedRange::Benchmarking,
        (224..=239, _, _) => BlockedRange::Multicast,
        (240..=255, _, _) => BlockedRange::Reserved,
        _ => return None,
    })
}

fn blocked_v6(ip: Ipv6Addr) -> Option<BlockedRange> {
    if ip.is_unspecified() {
        return Some(BlockedRange::Unspecified);
    }
    if ip.is_loopback() {
        return Some(BlockedRange::Loopback);
    }
    let s = ip.segments();
    // Addresses that carry an IPv4 address are judged by it.
    let embedded = if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible).
        Some(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ))
    } else if (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0])
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
    {
        // NAT64: the well-known prefix and the local-use prefix carry IPv4 in the last 32 bits.
        Some(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ))
    } else {
        None
    };
    if let Some(v4) = embedded {
        return blocked_v4(v4);
    }
    match s[0] {
        x if x & 0xfe00 == 0xfc00 => Some(BlockedRange::UniqueLocal),
        x if x & 0xffc0 == 0xfe80 => Some(BlockedRange::LinkLocal),
        x if x & 0xff00 == 0xff00 => Some(BlockedRange::Multicast),
        _ => None,
    }
}

/// Which socket addresses a fetch may connect to.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    /// `tools.web_fetch.allow_private_networks`: disables the range check only.
    pub allow_private_networks: bool,
    /// TEST ONLY: one exact socket address treated as public, so a test can serve an allowed
    /// first hop on loopback (e.g. to redirect into a blocked range). Production never sets it.
    pub treat_as_public: Option<SocketAddr>,
}

impl AddressPolicy {
    pub fn from_config(allow_private_networks: bool) -> Self {
        Self {
            allow_private_networks,
            treat_as_public: None,
        }
    }

    pub fn check(&self, addr: SocketAddr) -> Result<(), BlockedRange> {
        if self.allow_private_networks || self.treat_as_public == Some(addr) {
            return Ok(());
        }
        match blocked_range(addr.ip()) {
            Some(range) => Err(range),
            None => Ok(()),
        }
    }
}

/// Name resolution for `web_fetch`: the only lookup a fetch makes.
pub trait Resolve {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> LocalBoxFuture<'a, std::io::Result<Vec<SocketAddr>>>;
}

/// The system resolver (`getaddrinfo` on tokio's blocking pool).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> LocalBoxFuture<'a, std::io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// What the fetch executor connects through: its resolver and its address policy.
#[derive(Clone)]
pub struct FetchNet {
    pub resolver: Rc<dyn Resolve>,
    pub policy: AddressPolicy,
}

impl FetchNet {
    pub fn system(allow_private_networks: bool) -> Self {
        Self {
            resolver: Rc::new(SystemResolver),
            policy: AddressPolicy::from_config(allow_private_networks),
        }
    }
}

/// Why a host cannot be fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An address in a blocked range (→ `url_not_allowed`).
    Blocked(IpAddr, BlockedRange),
    /// No address, or the lookup failed (→ `url_not_accessible`).
    Unresolvable(String),
}

/// Resolves `host` (an IP literal is used as is) and vets every address: one blocked address
/// refuses the host. Returns the address to connect to.
pub async fn vet_host(net: &FetchNet, host: &str, port: u16) -> Result<SocketAddr, Refusal> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = match literal.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => net
            .resolver
            .lookup(host, port)
            .await
            .map_err(|e| Refusal::Unresolvable(e.to_string()))?,
    };
    if addrs.is_empty() {
        return Err(Refusal::Unresolvable("no address".into()));
    }
    for a in &addrs {
        net.policy
            .check(*a)
            .map_err(|range| Refusal::Blocked(a.ip(), range))?;
    }
    Ok(addrs[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use BlockedRange::*;

    #[test]
    fn classification_table() {
        let cases: &[(&str, Option<BlockedRange>)] = &[
            // IPv4, each range with its edges.
            ("0.0.0.0", Some(Unspecified)),
            ("0.255.255.255", Some(Unspecified)),
            ("1.0.0.0", None),
            ("9.255.255.255", None),
            ("10.0.0.0", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("11.0.0.0", None),
            ("100.63.255.255", None),
            ("100.64.0.0", Some(Cgnat)),
            ("100.127.255.255", Some(Cgnat)),
            ("100.128.0.0", None),
            ("126.255.255.255", None),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.255", Some(Loopback)),
            ("128.0.0.0", None),
            ("169.253.255.255", None),
            ("169.254.0.0", Some(LinkLocal)),
            ("169.254.169.254", Some(LinkLocal)),
            ("169.254.255.255", Some(LinkLocal)),
            ("169.255.0.0", None),
            ("172.15.255.255", None),
            ("172.16.0.0", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.0", None),
            ("191.255.255.255", None),
            ("192.0.0.0", Some(ProtocolAssignments)),
            ("192.0.0.255", Some(ProtocolAssignments)),
            ("192.0.1.0", None),
            ("192.167.255.255", None),
            ("192.168.0.0", Some(Private)),
            ("192.168.255.255", Some(Private)),
            ("192.169.0.0", None),
            ("198.17.255.255", None),
            ("198.18.0.0", Some(Benchmarking)),
            ("198.19.255.255", Some(Benchmarking)),
            ("198.20.0.0", None),
            ("223.255.255.255", None),
            ("224.0.0.0", Some(Multicast)),
            ("239.255.255.255", Some(Multicast)),
            ("240.0.0.0", Some(Reserved)),
            ("255.255.255.255", Some(Reserved)),
            ("8.8.8.8", None),
            ("93.184.216.34", None),
            // IPv6.
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("fbff:ffff::1", None),
            ("fc00::", Some(UniqueLocal)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd00:ec2::254", Some(UniqueLocal)),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(UniqueLocal)),
            ("fe00::1", None),
            ("fe7f:ffff::1", None),
            ("fe80::", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(LinkLocal)),
            ("fec0::1", None),
            ("ff00::", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Multicast)),
            ("2001:4860:4860::8888", None),
            ("2606:4700::1111", None),
            // IPv4 carried in IPv6.
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::ffff:100.64.0.1", Some(Cgnat)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(Loopback)),
            ("64:ff9b::7f00:1", Some(Loopback)),
            ("64:ff9b::a9fe:a9fe", Some(LinkLocal)),
            ("64:ff9b::c0a8:101", Some(Private)),
            ("64:ff9b::808:808", None),
            ("64:ff9b:1::a00:1", Some(Private)),
        ];
        for (ip, want) in cases {
            let got = blocked_range(ip.parse().unwrap());
            assert_eq!(got, *want, "{ip}");
        }
    }

    #[test]
    fn policy_switches() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        assert_eq!(AddressPolicy::default().check(lo), Err(Loopback));
        assert!(AddressPolicy::from_config(true).check(lo).is_ok());
        let p = AddressPolicy {
            allow_private_networks: false,
            treat_as_public: Some(lo),
        };
        assert!(p.check(lo).is_ok());
        assert_eq!(p.check(other), Err(Loopback));
        assert!(AddressPolicy::default()
            .check("93.184.216.34:443".parse().unwrap())
            .is_ok());
    }

    struct Fixed(Vec<SocketAddr>);
    impl Resolve for Fixed {
        fn lookup<'a>(
            &'a self,
            _: &'a str,
            _: u16,
        ) -> LocalBoxFuture<'a, std::io::Result<Vec<SocketAddr>>> {
            let v = self.0.clone();
            Box::pin(async move { Ok(v) })
        }
    }

    #[actix_rt::test]
    async fn one_blocked_address_refuses_the_host() {
        let net = |addrs: &[&str]| FetchNet {
            resolver: Rc::new(Fixed(addrs.iter().map(|a| a.parse().unwrap()).collect())),
            policy: AddressPolicy::default(),
        };
        let n = net(&["93.184.216.34:80", "10.0.0.5:80"]);
        assert_eq!(
            vet_host(&n, "mixed.test", 80).await,
            Err(Refusal::Blocked("10.0.0.5".parse().unwrap(), Private))
        );
        let n = net(&["93.184.216.34:80"]);
        assert_eq!(
            vet_host(&n, "ok.test", 80).await,
            Ok("93.184.216.34:80".parse().unwrap())
        );
        assert!(matches!(
            vet_host(&net(&[]), "none.test", 80).await,
            Err(Refusal::Unresolvable(_))
        ));
        // Literals skip the resolver.
        assert_eq!(
            vet_host(&n, "[::1]", 80).await,
            Err(Refusal::Blocked("::1".parse().unwrap(), Loopback))
        );
        assert_eq!(
            vet_host(&n, "169.254.169.254", 80).await,
            Err(Refusal::Blocked(
                "169.254.169.254".parse().unwrap(),
                LinkLocal
            ))
        );
    }
}
