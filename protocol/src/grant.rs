//! Host access a plan entry may grant its suite: the one parser and matcher.
//!
//! `Plan::problems()` (so the CLI, the server and the browser editor) and the
//! runner's sandbox both use [`NetGrant::parse`] and [`check_env_name`], so a
//! plan that validates never fails later, on a machine, for a grant.
//!
//! A `net` grant is `host:port`: the host is an IP address (IPv6 in brackets
//! or bare), `localhost` (127.0.0.1 and ::1), a host name
//! (`api.example.com`) or `*`; the port is 1–65535 or `*`. A name admits no
//! address by itself: the runner resolves the names an entry is granted
//! (and only those) when its shard starts, the guest's lookups of them get
//! those addresses, and its connections are checked against them — so a
//! name that resolves elsewhere later (DNS rebinding) gains nothing.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which hosts a [`NetGrant`] admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`: any address.
    Any,
    /// `localhost`: the IPv4 and IPv6 loopback addresses.
    Localhost,
    Ip(IpAddr),
    /// A host name, lowercase, without a trailing dot.
    Name(String),
}

/// The longest host name (RFC 1035).
const MAX_NAME: usize = 253;

/// `host` as a host name of a grant: lowercase, no trailing dot; labels
/// of letters, digits and `-` (1–63 bytes, not starting or ending with
/// `-`), at least one letter in the last.
pub fn host_name(host: &str) -> Option<String> {
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let last_ok = labels.last().is_some_and(|l| l.bytes().any(|b| b.is_ascii_alphabetic()));
    (name.len() <= MAX_NAME && labels.iter().all(label_ok) && last_ok).then_some(name)
}

/// One parsed `net` grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetGrant {
    pub host: HostPattern,
    /// `None` stands for `*`.
    pub port: Option<u16>,
}

impl NetGrant {
    /// Parses a `host:port` grant; the error says what is wrong and how to
    /// write it.
    pub fn parse(pattern: &str) -> Result<NetGrant, String> {
        let Some((host, port)) = pattern.rsplit_once(':') else {
            return Err(format!("{pattern:?} is not host:port (e.g. \"127.0.0.1:8080\" or \"*:443\")"));
        };
        let port = match port {
            "*" => None,
            p => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(format!("{pattern:?} has no valid port (1-65535 or \"*\")")),
            },
        };
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let host = match bare {
            "" => return Err(format!("{pattern:?} has no host; use \"*\" for any host")),
            "*" => HostPattern::Any,
            "localhost" => HostPattern::Localhost,
            h => match (h.parse::<IpAddr>(), host_name(h)) {
                (Ok(ip), _) => HostPattern::Ip(ip),
                (_, Some(name)) if name == "localhost" => HostPattern::Localhost,
                (_, Some(name)) => HostPattern::Name(name),
                _ => {
                    return Err(format!(
                        "{pattern:?}: the host must be an IP address, a host name (letters, digits, \
                         '-' and '.'), \"localhost\" or \"*\""
                    ));
                }
            },
        };
        Ok(NetGrant { host, port })
    }

    /// Whether a connection to `addr` is within this grant (a name admits
    /// only the addresses it was resolved to, as grants of their own).
    pub fn allows(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Localhost => {
                ip == IpAddr::V4(Ipv4Addr::LOCALHOST) || ip == IpAddr::V6(Ipv6Addr::LOCALHOST)
            }
            HostPattern::Ip(h) => h.to_canonical() == ip,
            HostPattern::Name(_) => false,
        };
        host_ok && self.port.is_none_or(|p| p == addr.port())
    }
}

impl NetGrant {
    /// Whether every connection this grant admits is admitted by `wider`
    /// too (a plan's grant against what a machine's operator allows).
    pub fn within(&self, wider: &NetGrant) -> bool {
        let loopback = |ip: &IpAddr| {
            let ip = ip.to_canonical();
            ip == IpAddr::V4(Ipv4Addr::LOCALHOST) || ip == IpAddr::V6(Ipv6Addr::LOCALHOST)
        };
        let host = match (&wider.host, &self.host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Localhost, HostPattern::Localhost) => true,
            (HostPattern::Localhost, HostPattern::Ip(ip)) => loopback(ip),
            (HostPattern::Ip(a), HostPattern::Ip(b)) => a.to_canonical() == b.to_canonical(),
            (HostPattern::Name(a), HostPattern::Name(b)) => a == b,
            _ => false,
        };
        host && wider.port.is_none_or(|p| self.port == Some(p))
    }
}

impl fmt::Display for NetGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostPattern::Any => f.write_str("*")?,
            HostPattern::Localhost => f.write_str("localhost")?,
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            HostPattern::Ip(ip) => write!(f, "{ip}")?,
            HostPattern::Name(name) => f.write_str(name)?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => f.write_str(":*"),
        }
    }
}

/// Variables of this prefix hold Ensemble's own settings and secrets (the
/// token): no plan may grant them.
pub const RESERVED_ENV_PREFIX: &str = "ENSEMBLE_";

/// Checks an `env` grant: the name of one host environment variable, not
/// one of Ensemble's own.
pub fn check_env_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        return Err(format!("{name:?} is not a variable name"));
    }
    if name.to_ascii_uppercase().starts_with(RESERVED_ENV_PREFIX) {
        return Err(format!(
            "{name:?} is reserved: {RESERVED_ENV_PREFIX}* variables hold Ensemble's own settings"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn grants_match_host_and_port() {
        let exact = NetGrant::parse("127.0.0.1:8080").unwrap();
        assert!(exact.allows(addr("127.0.0.1:8080")));
        assert!(!exact.allows(addr("127.0.0.1:8081")));
        assert!(!exact.allows(addr("10.0.0.1:8080")));
        let any_port = NetGrant::parse("localhost:*").unwrap();
        assert!(any_port.allows(addr("[::1]:9")));
        assert!(any_port.allows(addr("127.0.0.1:1")));
        assert!(!any_port.allows(addr("127.0.0.2:1")));
        let any_host = NetGrant::parse("*:443").unwrap();
        assert!(any_host.allows(addr("192.0.2.1:443")));
        assert!(!any_host.allows(addr("192.0.2.1:80")));
        let v6 = NetGrant::parse("[::1]:80").unwrap();
        assert!(v6.allows(addr("[::1]:80")));
        // An IPv4-mapped IPv6 address is the IPv4 address.
        assert!(exact.allows(addr("[::ffff:127.0.0.1]:8080")));
    }

    #[test]
    fn bad_grants_say_what_is_wrong() {
        assert!(NetGrant::parse("exa mple.com:80").unwrap_err().contains("host name"));
        assert!(NetGrant::parse("-bad.example:80").is_err());
        assert!(NetGrant::parse("example.123:80").is_err(), "a last label of digits is no name");
        assert!(NetGrant::parse(&format!("{}.com:80", "a".repeat(64))).is_err());
        assert!(NetGrant::parse("127.0.0.1").unwrap_err().contains("host:port"));
        assert!(NetGrant::parse(":80").unwrap_err().contains("no host"));
        assert!(NetGrant::parse("127.0.0.1:0").unwrap_err().contains("port"));
        assert!(NetGrant::parse("127.0.0.1:http").unwrap_err().contains("port"));
        assert!(check_env_name("A=B").is_err());
        assert!(check_env_name("").is_err());
        assert!(check_env_name("HOME").is_ok());
        assert!(check_env_name("ENSEMBLE_TOKEN").unwrap_err().contains("reserved"));
        assert!(check_env_name("ensemble_token").unwrap_err().contains("reserved"));
    }

    #[test]
    fn a_grant_is_within_a_wider_one() {
        let g = |s: &str| NetGrant::parse(s).unwrap();
        assert!(g("127.0.0.1:80").within(&g("127.0.0.1:*")));
        assert!(g("127.0.0.1:80").within(&g("localhost:80")));
        assert!(g("[::1]:80").within(&g("localhost:*")));
        assert!(g("10.0.0.1:80").within(&g("*:80")));
        assert!(!g("127.0.0.1:*").within(&g("127.0.0.1:80")), "any port is wider than one");
        assert!(!g("*:80").within(&g("127.0.0.1:80")));
        assert!(!g("10.0.0.1:80").within(&g("localhost:*")));
        assert!(g("api.example.com:443").within(&g("API.example.com.:*")));
        assert!(g("api.example.com:443").within(&g("*:443")));
        assert!(!g("api.example.com:443").within(&g("other.example.com:443")));
        assert!(!g("api.example.com:443").within(&g("10.0.0.1:443")), "a name is not an address");
    }

    #[test]
    fn names_are_grants_that_admit_no_address_by_themselves() {
        let g = NetGrant::parse("Api.Example.COM.:443").unwrap();
        assert_eq!(g.host, HostPattern::Name("api.example.com".into()));
        assert!(!g.allows(addr("93.184.216.34:443")));
        assert_eq!(NetGrant::parse("LOCALHOST:80").unwrap().host, HostPattern::Localhost);
        assert_eq!(host_name("db-1.internal").as_deref(), Some("db-1.internal"));
    }

    #[test]
    fn grants_print_as_they_parse() {
        for g in ["127.0.0.1:8080", "*:443", "localhost:*", "[::1]:80", "api.example.com:443"] {
            assert_eq!(NetGrant::parse(g).unwrap().to_string(), g);
        }
    }
}
