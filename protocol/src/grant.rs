//! Host access a plan entry may grant its suite: the one parser and matcher.
//!
//! `Plan::problems()` (so the CLI, the server and the browser editor) and the
//! runner's sandbox both use [`NetGrant::parse`] and [`check_env_name`], so a
//! plan that validates never fails later, on a machine, for a grant.
//!
//! A `net` grant is `host:port`: the host is an IP address (IPv6 in brackets
//! or bare), `localhost` (127.0.0.1 and ::1) or `*`; the port is 1–65535 or
//! `*`. Host *names* are refused: the sandbox checks the address a guest
//! connects to, and guests get no name lookups, so a name could never match.

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
            h => match h.parse::<IpAddr>() {
                Ok(ip) => HostPattern::Ip(ip),
                Err(_) => {
                    return Err(format!(
                        "{pattern:?}: the host must be an IP address, \"localhost\" or \"*\" \
                         (suites connect by address and get no name lookups)"
                    ));
                }
            },
        };
        Ok(NetGrant { host, port })
    }

    /// Whether a connection to `addr` is within this grant.
    pub fn allows(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Localhost => {
                ip == IpAddr::V4(Ipv4Addr::LOCALHOST) || ip == IpAddr::V6(Ipv6Addr::LOCALHOST)
            }
            HostPattern::Ip(h) => h.to_canonical() == ip,
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
        assert!(NetGrant::parse("example.com:80").unwrap_err().contains("IP address"));
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
    }

    #[test]
    fn grants_print_as_they_parse() {
        for g in ["127.0.0.1:8080", "*:443", "localhost:*", "[::1]:80"] {
            assert_eq!(NetGrant::parse(g).unwrap().to_string(), g);
        }
    }
}
