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

use std::net::ToSocketAddrs;
use std::sync::Arc;

use ensemble_protocol::Capabilities;
use ensemble_protocol::grant::{HostPattern, NetGrant, check_env_name};
use ensemble_protocol::service::{Addresses, ServiceAddr, granted_service};
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
    /// Services of a run whose `service:NAME` grants plans may give
    /// (`--allow-net service:NAME`, `service:*` for all); unused when
    /// `allow_net` is `None`.
    pub allow_services: Vec<String>,
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
        HostPolicy {
            allow_env: Some(env),
            allow_net: Some(net),
            allow_services: Vec::new(),
            deny_net,
            command: command.into(),
        }
    }

    /// Lets plans grant the run's services named here (`*`: all of them).
    pub fn with_services(mut self, services: Vec<String>) -> HostPolicy {
        self.allow_services = services;
        self
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
        if self.allow_net.is_some() {
            let allowed = |name: &str| self.allow_services.iter().any(|a| a == "*" || a == name);
            if let Some(grant) =
                caps.net.iter().find(|g| granted_service(g).is_some_and(|name| !allowed(name)))
            {
                return Err(format!(
                    "the plan grants net {grant}, which this machine does not allow \
                     (its operator can allow it with `{} --allow-net {grant}`, or `service:*` \
                     for every service of its runs)",
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
    /// [`Grants::within`] an open policy, without services.
    pub fn new(caps: &Capabilities) -> Result<Grants, String> {
        Grants::within(caps, &HostPolicy::open(), &Addresses::new())
    }

    /// Parses the entry's grants, checks them against the machine's policy,
    /// and reads the granted variables from this host's environment (unset
    /// variables are simply absent for the guest). `service:NAME` grants
    /// become the addresses the run's services reported (`services`), their
    /// host names resolved here, once: the guest reaches only those
    /// addresses. Every entry sees the services' variables
    /// (`DB_SERVICE_HOST`, …), granted or not.
    pub fn within(caps: &Capabilities, policy: &HostPolicy, services: &Addresses) -> Result<Grants, String> {
        // Plain grants are checked against `--allow-net` addresses; service
        // grants against `--allow-net service:…`, whatever address the
        // service landed on.
        let (mut net, mut reached) = (Vec::new(), Vec::new());
        for pattern in &caps.net {
            match granted_service(pattern) {
                Some(name) => reached.extend(service_grants(pattern, name, services)?),
                None => net.push(NetGrant::parse(pattern)?),
            }
        }
        caps.env.iter().try_for_each(|name| check_env_name(name))?;
        policy.check(caps, &net)?;
        net.append(&mut reached);
        let mut env: Vec<(String, String)> =
            caps.env.iter().filter_map(|name| std::env::var(name).ok().map(|v| (name.clone(), v))).collect();
        env.extend(ensemble_protocol::service::env_vars(services));
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

/// The addresses a `service:NAME` grant (`pattern`) stands for: every
/// port of every instance of the service (`*`: of every service), each host
/// resolved to its addresses.
fn service_grants(pattern: &str, name: &str, services: &Addresses) -> Result<Vec<NetGrant>, String> {
    let instances: Vec<&ServiceAddr> = match name {
        "*" => services.values().flatten().collect(),
        _ => match services.get(name) {
            Some(list) => list.iter().collect(),
            None => {
                return Err(format!(
                    "the plan grants net {pattern}, but the run has no service {name:?} with an address"
                ));
            }
        },
    };
    let mut out = Vec::new();
    for (host, port) in instances.iter().flat_map(|a| a.sockets()) {
        let ips: Vec<std::net::IpAddr> = match host.parse() {
            Ok(ip) => vec![ip],
            Err(_) => (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| format!("resolving {host} (service {name}): {e}"))?
                .map(|a| a.ip())
                .collect(),
        };
        out.extend(ips.into_iter().map(|ip| NetGrant { host: HostPattern::Ip(ip), port: Some(port) }));
    }
    Ok(out)
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
