//! What host access a suite's sandbox gets.
//!
//! By default nothing: no preopened directories (so no files), no sockets, no
//! host environment variables, no arguments. A plan entry's capabilities grant
//! TCP connections to `host:port` patterns (`net`) and named host environment
//! variables (`env`); everything else stays closed. Grants are parsed by
//! `protocol::grant`, the same rule `Plan::problems()` checks plans with.

use std::sync::Arc;

use ensemble_protocol::Capabilities;
use ensemble_protocol::grant::{NetGrant, check_env_name};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

use super::output::Capture;

/// Parsed capabilities, checked once per shard.
#[derive(Clone, Debug, Default)]
pub struct Grants {
    net: Arc<Vec<NetGrant>>,
    env: Vec<(String, String)>,
}

impl Grants {
    /// Parses the entry's grants and reads the granted variables from this
    /// host's environment (unset variables are simply absent for the guest).
    pub fn new(caps: &Capabilities) -> Result<Grants, String> {
        let net = caps.net.iter().map(|p| NetGrant::parse(p)).collect::<Result<Vec<_>, _>>()?;
        caps.env.iter().try_for_each(|name| check_env_name(name))?;
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

    #[test]
    fn env_grants_take_only_named_variables() {
        // SAFETY-free: PATH is always set in test environments; HOME may be too.
        let grants = Grants::new(&Capabilities { net: vec![], env: vec!["PATH".into()] }).unwrap();
        assert_eq!(grants.env.len(), 1);
        assert_eq!(grants.env[0].0, "PATH");
    }
}
