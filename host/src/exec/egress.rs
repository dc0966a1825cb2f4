//! Where HTTP jobs may connect: a worker's allow-list, checked against every
//! address a destination resolves to. Pure: no I/O, no DNS.
//!
//! The check runs on resolved addresses (in the HTTP client's resolver), not
//! on the URL's text, so a name that resolves to a forbidden address is
//! refused too, and the connection goes to the address that was checked.
//! Link-local and cloud-metadata addresses are refused unless an entry names
//! them by address: `public`, `private`, host names and `*` never reach them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A worker's HTTP egress policy: a list of [`Rule`]s, any of which may allow
/// a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPolicy {
    rules: Vec<Rule>,
}

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `public`: globally routable unicast addresses.
    Public,
    /// `private`: RFC 1918, shared address space (100.64.0.0/10) and IPv6 unique-local.
    Private,
    /// `loopback`: 127.0.0.0/8 and ::1.
    Loopback,
    /// `*`: any address except link-local, metadata and other special ones.
    Any,
    /// An address or CIDR block, e.g. `10.1.0.0/16` or `169.254.169.254`: the
    /// only kind of entry that can allow a sensitive address.
    Net(Cidr),
    /// A host name, matched exactly (case-insensitive).
    Host(String),
    /// `*.example.com`: any name below `example.com` (not the name itself).
    Suffix(String),
}

/// Why a destination was refused, in words for the run's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{address} ({class}) for {host:?} is not allowed by this worker's HTTP allow-list [{allow}]{hint}")]
pub struct Denied {
    pub host: String,
    pub address: IpAddr,
    pub class: AddressClass,
    allow: String,
    hint: &'static str,
}

/// What kind of address a destination is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    Private,
    Loopback,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// Cloud instance-metadata services outside link-local space.
    Metadata,
    /// Unspecified, multicast, broadcast, documentation and reserved blocks.
    Special,
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressClass::Public => "public",
            AddressClass::Private => "private",
            AddressClass::Loopback => "loopback",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Metadata => "cloud metadata",
            AddressClass::Special => "special-purpose",
        })
    }
}

impl AddressClass {
    /// Sensitive addresses are reachable only through an address entry.
    fn is_sensitive(self) -> bool {
        matches!(
            self,
            AddressClass::LinkLocal | AddressClass::Metadata | AddressClass::Special
        )
    }
}

impl EgressPolicy {
    /// The default of cluster workers: public addresses only.
    pub fn public_only() -> Self {
        Self {
            rules: vec![Rule::Public],
        }
    }

    /// The default of `sandcron dev` (the user's own machine): public,
    /// private and loopback addresses.
    pub fn local_machine() -> Self {
        Self {
            rules: vec![Rule::Public, Rule::Private, Rule::Loopback],
        }
    }

    /// Parses allow-list entries; the error names the bad entry.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let rules = entries
            .iter()
            .map(|entry| entry.as_ref().parse::<Rule>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { rules })
    }

    /// An empty list: HTTP jobs are not run at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether a connection to `address`, reached through the URL host
    /// `host` (a name or an address literal), is allowed.
    pub fn check(&self, host: &str, address: IpAddr) -> Result<(), Denied> {
        let address = canonical(address);
        let class = classify(address);
        if self
            .rules
            .iter()
            .any(|rule| matches!(rule, Rule::Net(net) if net.contains(address)))
        {
            return Ok(());
        }
        let denied = |hint| Denied {
            host: host.to_owned(),
            address,
            class,
            allow: self.to_string(),
            hint,
        };
        if class.is_sensitive() {
            return Err(denied("; list the address itself to allow it"));
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        let allowed = self.rules.iter().any(|rule| match rule {
            Rule::Public => class == AddressClass::Public,
            Rule::Private => class == AddressClass::Private,
            Rule::Loopback => class == AddressClass::Loopback,
            Rule::Any => true,
            Rule::Net(_) => false,
            Rule::Host(allowed) => *allowed == name,
            Rule::Suffix(suffix) => name.len() > suffix.len() + 1 && name.ends_with(&format!(".{suffix}")),
        });
        if allowed { Ok(()) } else { Err(denied("")) }
    }
}

impl fmt::Display for EgressPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, rule) in self.rules.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{rule}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Public => f.write_str("public"),
            Rule::Private => f.write_str("private"),
            Rule::Loopback => f.write_str("loopback"),
            Rule::Any => f.write_str("*"),
            Rule::Net(net) => write!(f, "{net}"),
            Rule::Host(host) => f.write_str(host),
            Rule::Suffix(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

impl FromStr for Rule {
    type Err = String;

    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let entry = entry.trim();
        match entry {
            "public" => return Ok(Rule::Public),
            "private" => return Ok(Rule::Private),
            "loopback" => return Ok(Rule::Loopback),
            "*" => return Ok(Rule::Any),
            _ => {}
        }
        if let Ok(net) = entry.parse::<Cidr>() {
            return Ok(Rule::Net(net));
        }
        if entry.contains('/') || entry.parse::<IpAddr>().is_ok() {
            return Err(format!("{entry:?} is not a valid address or CIDR block"));
        }
        let (suffix, name) = match entry.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let valid = crate::job::is_host_name(&name)
            // A name whose last label is all digits is a mistyped address.
            && !name.rsplit('.').next().is_some_and(|last| last.chars().all(|c| c.is_ascii_digit()));
        if !valid {
            return Err(format!(
                "{entry:?} is not an allow-list entry: use public, private, loopback, *, an address, a CIDR block, a host name or *.domain"
            ));
        }
        Ok(if suffix { Rule::Suffix(name) } else { Rule::Host(name) })
    }
}

/// An IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, canonical(address)) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network = canonical(
            address
                .parse::<IpAddr>()
                .map_err(|_| format!("{text:?} is not an address"))?,
        );
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { network, prefix })
    }
}

/// IPv4-mapped and IPv4-compatible IPv6 addresses are their IPv4 address, so
/// `::ffff:169.254.169.254` is judged as `169.254.169.254`.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let segments = v6.segments();
                // ::a.b.c.d (deprecated IPv4-compatible), but not :: or ::1.
                if segments[..6].iter().all(|s| *s == 0) && u128::from(v6) > 1 {
                    IpAddr::V4(Ipv4Addr::from((u128::from(v6) & 0xffff_ffff) as u32))
                } else {
                    IpAddr::V6(v6)
                }
            }
        },
        v4 => v4,
    }
}

/// The class of an address (already canonical).
pub fn classify(address: IpAddr) -> AddressClass {
    match canonical(address) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(v4: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = v4.octets();
    if v4.is_loopback() {
        AddressClass::Loopback
    } else if v4.is_link_local() {
        AddressClass::LinkLocal
    } else if v4 == Ipv4Addr::new(100, 100, 100, 200) {
        // Alibaba Cloud's metadata service, inside the shared address space.
        AddressClass::Metadata
    } else if v4.is_private() || (a == 100 && (64..128).contains(&b)) {
        AddressClass::Private
    } else if a == 0
        || v4.is_multicast()
        || v4.is_broadcast()
        || a >= 240
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 0 && c == 2)
        || (a == 198 && (b == 18 || b == 19))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
    {
        AddressClass::Special
    } else {
        AddressClass::Public
    }
}

fn classify_v6(v6: Ipv6Addr) -> AddressClass {
    let first = v6.segments()[0];
    if v6.is_loopback() {
        AddressClass::Loopback
    } else if v6 == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        // AWS's IPv6 metadata endpoint, inside unique-local space.
        AddressClass::Metadata
    } else if first & 0xffc0 == 0xfe80 {
        AddressClass::LinkLocal
    } else if first & 0xfe00 == 0xfc00 {
        AddressClass::Private
    } else if v6.is_unspecified() || v6.is_multicast() || first == 0x2001 && v6.segments()[1] == 0x0db8 {
        AddressClass::Special
    } else if first == 0x2002 || (first == 0x2001 && v6.segments()[1] == 0) {
        // 6to4 (2002::/16) and Teredo (2001::/32) carry an IPv4 address
        // inside: through a relay they could reach any IPv4 address,
        // private ones included, so they are not "public".
        AddressClass::Special
    } else if first & 0xe000 == 0x2000 {
        AddressClass::Public
    } else {
        // Everything outside 2000::/3 is reserved or special-purpose
        // (NAT64 64:ff9b::/96 included: it could reach any IPv4 address).
        AddressClass::Special
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    fn policy(entries: &[&str]) -> EgressPolicy {
        EgressPolicy::parse(entries).expect("policy")
    }

    #[test]
    fn classes_of_well_known_addresses() {
        let cases = [
            ("8.8.8.8", AddressClass::Public),
            ("2606:4700::1111", AddressClass::Public),
            ("2002:a00:1::1", AddressClass::Special),
            ("2001:0:4136:e378::1", AddressClass::Special),
            ("2001:4860:4860::8888", AddressClass::Public),
            ("10.1.2.3", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("192.168.1.1", AddressClass::Private),
            ("100.64.0.1", AddressClass::Private),
            ("fd12::1", AddressClass::Private),
            ("127.0.0.1", AddressClass::Loopback),
            ("127.9.9.9", AddressClass::Loopback),
            ("::1", AddressClass::Loopback),
            ("169.254.169.254", AddressClass::LinkLocal),
            ("fe80::1", AddressClass::LinkLocal),
            ("100.100.100.200", AddressClass::Metadata),
            ("fd00:ec2::254", AddressClass::Metadata),
            ("0.0.0.0", AddressClass::Special),
            ("::", AddressClass::Special),
            ("224.0.0.1", AddressClass::Special),
            ("255.255.255.255", AddressClass::Special),
            ("64:ff9b::a9fe:a9fe", AddressClass::Special),
            ("2001:db8::1", AddressClass::Special),
        ];
        for (address, class) in cases {
            assert_eq!(classify(ip(address)), class, "{address}");
        }
    }

    #[test]
    fn mapped_ipv6_is_judged_as_its_ipv4_address() {
        assert_eq!(classify(ip("::ffff:169.254.169.254")), AddressClass::LinkLocal);
        assert_eq!(classify(ip("::ffff:127.0.0.1")), AddressClass::Loopback);
        assert_eq!(classify(ip("::10.0.0.1")), AddressClass::Private);
        let public = EgressPolicy::public_only();
        assert!(public.check("x", ip("::ffff:8.8.8.8")).is_ok());
        assert!(public.check("x", ip("::ffff:10.0.0.1")).is_err());
    }

    #[test]
    fn public_only_refuses_internal_destinations() {
        let public = EgressPolicy::public_only();
        assert!(public.check("example.com", ip("93.184.215.14")).is_ok());
        for address in [
            "127.0.0.1",
            "10.0.0.5",
            "192.168.0.1",
            "169.254.169.254",
            "fd00:ec2::254",
            "0.0.0.0",
        ] {
            let err = public.check("internal", ip(address)).expect_err(address);
            assert!(err.to_string().contains("allow-list [public]"), "{err}");
        }
    }

    #[test]
    fn metadata_and_link_local_need_an_address_entry() {
        let broad = policy(&["*", "public", "private", "loopback", "metadata.internal"]);
        for address in ["169.254.169.254", "fe80::1", "100.100.100.200", "fd00:ec2::254"] {
            let err = broad.check("metadata.internal", ip(address)).expect_err(address);
            assert!(err.to_string().contains("list the address itself"), "{err}");
        }
        let listed = policy(&["169.254.169.254"]);
        assert!(listed.check("169.254.169.254", ip("169.254.169.254")).is_ok());
        assert!(listed.check("x", ip("169.254.169.253")).is_err());
        let block = policy(&["169.254.0.0/16"]);
        assert!(block.check("x", ip("169.254.1.2")).is_ok());
    }

    #[test]
    fn names_and_suffixes_allow_what_they_resolve_to() {
        let names = policy(&["hooks.example.com", "*.corp.example"]);
        assert!(names.check("hooks.example.com", ip("10.0.0.7")).is_ok());
        assert!(names.check("HOOKS.example.com.", ip("10.0.0.7")).is_ok());
        assert!(names.check("a.b.corp.example", ip("10.0.0.8")).is_ok());
        assert!(names.check("corp.example", ip("10.0.0.8")).is_err());
        assert!(names.check("evilcorp.example", ip("10.0.0.8")).is_err());
        assert!(names.check("other.example.com", ip("10.0.0.7")).is_err());
    }

    #[test]
    fn cidr_blocks_match_by_prefix() {
        let net: Cidr = "10.1.0.0/16".parse().expect("cidr");
        assert!(net.contains(ip("10.1.255.1")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")));
        let all: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains(ip("1.2.3.4")));
        assert!(!all.contains(ip("2001::1")));
        let v6: Cidr = "fd00::/8".parse().expect("cidr");
        assert!(v6.contains(ip("fd12:3456::1")));
        assert!(!v6.contains(ip("fe80::1")));
    }

    #[test]
    fn bad_entries_are_named() {
        for entry in ["10.0.0.0/33", "300.1.1.1", "bad host", "-x.com", "*.", "", "fe80::/129"] {
            let err = EgressPolicy::parse(&[entry]).expect_err(entry);
            assert!(err.contains(&format!("{:?}", entry.trim())), "{entry}: {err}");
        }
        assert!(EgressPolicy::parse::<&str>(&[]).expect("empty").is_empty());
    }

    #[test]
    fn the_policy_prints_as_written() {
        let written = [
            "public",
            "loopback",
            "10.0.0.0/8",
            "api.example.com",
            "*.corp.example",
            "*",
        ];
        assert_eq!(policy(&written).to_string(), written.join(", "));
    }
}
