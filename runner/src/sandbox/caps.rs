//! What host access a suite's sandbox gets.
//!
//! By default nothing: no preopened directories (so no files), no sockets, no
//! host environment variables, no arguments. A plan entry's capabilities grant
//! TCP connections to `host:port` patterns (`net`) and named host environment
//! variables (`env`); everything else stays closed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ensemble_protocol::Capabilities;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

use super::output::Capture;

/// One `net` grant, parsed: `None` stands for `*`.
#[derive(Clone, Debug, PartialEq)]
struct NetRule {
    hosts: Option<Vec<IpAddr>>,
    port: Option<u16>,
}

impl NetRule {
    fn parse(pattern: &str) -> Result<NetRule, String> {
        let (host, port) =
            pattern.rsplit_once(':').ok_or_else(|| format!("net grant {pattern:?} is not host:port"))?;
        let port = match port {
            "*" => None,
            p => Some(p.parse().map_err(|_| format!("net grant {pattern:?} has an invalid port"))?),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let hosts = match host {
            "*" => None,
            "localhost" => {
                Some(vec![IpAddr::from([127, 0, 0, 1]), IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])])
            }
            h => Some(vec![h.parse().map_err(|_| {
                format!("net grant {pattern:?}: the host must be an IP address, \"localhost\" or \"*\"")
            })?]),
        };
        Ok(NetRule { hosts, port })
    }

    fn allows(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        self.port.is_none_or(|p| p == addr.port())
            && self.hosts.as_ref().is_none_or(|hosts| hosts.iter().any(|h| h.to_canonical() == ip))
    }
}

/// Parsed capabilities, checked once per shard.
#[derive(Clone, Debug, Default)]
pub struct Grants {
    net: Arc<Vec<NetRule>>,
    env: Vec<(String, String)>,
}

impl Grants {
    /// Parses the entry's grants and reads the granted variables from this
    /// host's environment (unset variables are simply absent for the guest).
    pub fn new(caps: &Capabilities) -> Result<Grants, String> {
        let net = caps.net.iter().map(|p| NetRule::parse(p)).collect::<Result<Vec<_>, _>>()?;
        let env =
            caps.env.iter().filter_map(|name| std::env::var(name).ok().map(|v| (name.clone(), v))).collect();
        Ok(Grants { net: Arc::new(net), env })
    }

    /// The WASI context of one instance: the granted access plus captured stdio.
    pub fn wasi_ctx(&self, capture: &Capture, args: &[String]) -> WasiCtx {
        let mut b = WasiCtxBuilder::new();
        b.stdout(capture.stream(false)).stderr(capture.stream(true));
        b.args(args);
        b.envs(&self.env);
        b.allow_udp(false).allow_ip_name_lookup(false);
        if self.net.is_empty() {
            b.allow_tcp(false);
        } else {
            let rules = self.net.clone();
            b.allow_tcp(true);
            b.socket_addr_check(move |addr, usage| {
                let ok = match usage {
                    // connect() binds implicitly to the wildcard address first.
                    SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                    SocketAddrUse::TcpConnect => rules.iter().any(|r| r.allows(addr)),
                    _ => false,
                };
                Box::pin(async move { ok })
            });
        }
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn net_patterns_match_host_and_port() {
        let exact = NetRule::parse("127.0.0.1:8080").unwrap();
        assert!(exact.allows(addr("127.0.0.1:8080")));
        assert!(!exact.allows(addr("127.0.0.1:8081")));
        assert!(!exact.allows(addr("10.0.0.1:8080")));
        let any_port = NetRule::parse("localhost:*").unwrap();
        assert!(any_port.allows(addr("[::1]:9")));
        assert!(any_port.allows(addr("127.0.0.1:1")));
        let any_host = NetRule::parse("*:443").unwrap();
        assert!(any_host.allows(addr("192.0.2.1:443")));
        assert!(!any_host.allows(addr("192.0.2.1:80")));
        assert!(NetRule::parse("example.com:80").unwrap_err().contains("IP address"));
    }

    #[test]
    fn env_grants_take_only_named_variables() {
        // SAFETY-free: PATH is always set in test environments; HOME may be too.
        let grants = Grants::new(&Capabilities { net: vec![], env: vec!["PATH".into()] }).unwrap();
        assert_eq!(grants.env.len(), 1);
        assert_eq!(grants.env[0].0, "PATH");
    }
}
