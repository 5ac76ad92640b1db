//! What host access a suite's sandbox gets.
//!
//! By default nothing: no preopened directories (so no files), no sockets, no
//! host environment variables, no arguments. A plan entry's capabilities grant
//! TCP connections to `host:port` patterns (`net`) and named host environment
//! variables (`env`); everything else stays closed. Grants are parsed by
//! `protocol::grant`, the same rule `Plan::problems()` checks plans with.
//!
//! A machine's operator bounds what plans may grant there ([`HostPolicy`]:
//! `--allow-env`, `--allow-net`); a grant beyond that fails the shard with a
//! message naming the flag. Some addresses are never reachable whatever the
//! grants say (the coordinator's own), and `ENSEMBLE_*` variables are never
//! granted.

use std::sync::Arc;

use ensemble_protocol::Capabilities;
use ensemble_protocol::grant::{NetGrant, check_env_name};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

use super::output::Capture;

/// What a machine's operator lets plans grant on it.
#[derive(Clone, Debug, Default)]
pub struct HostPolicy {
    /// Variable names plans may grant (a trailing `*` matches a prefix);
    /// `None` allows any (a standalone run, whose plan is the operator's own).
    pub allow_env: Option<Vec<String>>,
    /// What `net` grants may reach; `None` allows any.
    pub allow_net: Option<Vec<NetGrant>>,
    /// Never reachable, whatever the grants (the coordinator's own address).
    pub deny_net: Vec<NetGrant>,
    /// The flag that widens the policy, for messages (`ensemble runner`).
    pub command: String,
}

impl HostPolicy {
    /// Anything a valid plan may grant: for `ensemble run` on one's own host.
    pub fn open() -> HostPolicy {
        HostPolicy { command: "ensemble run".into(), ..HostPolicy::default() }
    }

    /// What `command`'s `--allow-env` and `--allow-net` flags allow (nothing
    /// without them), with `deny_net` never reachable.
    pub fn allowing(
        command: &str,
        env: Vec<String>,
        net: Vec<NetGrant>,
        deny_net: Vec<NetGrant>,
    ) -> HostPolicy {
        HostPolicy { allow_env: Some(env), allow_net: Some(net), deny_net, command: command.into() }
    }

    /// Why the entry's grants go beyond this policy, if they do.
    fn check(&self, caps: &Capabilities, net: &[NetGrant]) -> Result<(), String> {
        if let Some(allowed) = &self.allow_env {
            let ok = |name: &str| {
                allowed.iter().any(|a| match a.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => a == name,
                })
            };
            if let Some(name) = caps.env.iter().find(|n| !ok(n)) {
                return Err(format!(
                    "the plan grants env {name}, which this machine does not allow \
                     (its operator can allow it with `{} --allow-env {name}`)",
                    self.command
                ));
            }
        }
        if let Some(allowed) = &self.allow_net
            && let Some(grant) = net.iter().find(|g| !allowed.iter().any(|a| g.within(a)))
        {
            return Err(format!(
                "the plan grants net {grant}, which this machine does not allow \
                     (its operator can allow it with `{} --allow-net {grant}`)",
                self.command
            ));
        }
        Ok(())
    }
}

/// Parsed capabilities, checked once per shard.
#[derive(Clone, Debug, Default)]
pub struct Grants {
    net: Arc<Vec<NetGrant>>,
    deny: Arc<Vec<NetGrant>>,
    env: Vec<(String, String)>,
}

impl Grants {
    /// [`Grants::within`] an open policy.
    pub fn new(caps: &Capabilities) -> Result<Grants, String> {
        Grants::within(caps, &HostPolicy::open())
    }

    /// Parses the entry's grants, checks them against the machine's policy,
    /// and reads the granted variables from this host's environment (unset
    /// variables are simply absent for the guest).
    pub fn within(caps: &Capabilities, policy: &HostPolicy) -> Result<Grants, String> {
        let net = caps.net.iter().map(|p| NetGrant::parse(p)).collect::<Result<Vec<_>, _>>()?;
        caps.env.iter().try_for_each(|name| check_env_name(name))?;
        policy.check(caps, &net)?;
        let env =
            caps.env.iter().filter_map(|name| std::env::var(name).ok().map(|v| (name.clone(), v))).collect();
        Ok(Grants { net: Arc::new(net), deny: Arc::new(policy.deny_net.clone()), env })
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
            let (rules, deny) = (self.net.clone(), self.deny.clone());
            b.allow_tcp(true);
            b.socket_addr_check(move |addr, usage| {
                let ok = match usage {
                    // connect() binds implicitly to the wildcard address first.
                    SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                    SocketAddrUse::TcpConnect => {
                        rules.iter().any(|r| r.allows(addr)) && !deny.iter().any(|d| d.allows(addr))
                    }
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

    fn caps(net: &[&str], env: &[&str]) -> Capabilities {
        Capabilities {
            net: net.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_machine_bounds_what_plans_may_grant_and_names_the_flag() {
        let policy = HostPolicy::allowing(
            "ensemble runner",
            vec!["HOME".into(), "APP_*".into()],
            vec![NetGrant::parse("127.0.0.1:*").unwrap()],
            vec![],
        );
        assert!(Grants::within(&caps(&["127.0.0.1:80"], &["HOME", "APP_KEY"]), &policy).is_ok());
        let env = Grants::within(&caps(&[], &["PATH"]), &policy).unwrap_err();
        assert!(env.contains("`ensemble runner --allow-env PATH`"), "{env}");
        let net = Grants::within(&caps(&["*:443"], &[]), &policy).unwrap_err();
        assert!(net.contains("`ensemble runner --allow-net *:443`"), "{net}");
        let closed = HostPolicy::allowing("ensemble runner", vec![], vec![], vec![]);
        assert!(Grants::within(&caps(&[], &[]), &closed).is_ok(), "no grants, nothing to allow");
        assert!(Grants::within(&caps(&[], &["HOME"]), &closed).is_err());
        let reserved = Grants::within(&caps(&[], &["ENSEMBLE_TOKEN"]), &HostPolicy::open()).unwrap_err();
        assert!(reserved.contains("reserved"), "{reserved}");
    }

    #[test]
    fn env_grants_take_only_named_variables() {
        // SAFETY-free: PATH is always set in test environments; HOME may be too.
        let grants = Grants::new(&Capabilities { net: vec![], env: vec!["PATH".into()] }).unwrap();
        assert_eq!(grants.env.len(), 1);
        assert_eq!(grants.env[0].0, "PATH");
    }
}
