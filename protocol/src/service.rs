//! A plan's services: the programs under test, which the runners of the
//! machines placed for a profile start natively (never in the sandbox).
//!
//! A service is a command (with placeholders the runner fills in: `{port}`,
//! `{port.NAME}`, `{host}`, `{dir}`, `{run}`), how to tell it is ready, and
//! its environment. The runner of each machine placed for the service's
//! profile starts one instance when the run starts, waits until it is ready,
//! reports its address, turns its output into log events and stops it when
//! the run ends. Entries reach it by the addresses the coordinator hands
//! them: environment variables in the Kubernetes convention
//! (`DB_SERVICE_HOST`, `DB_SERVICE_PORT`) and `service:NAME` net grants.
//!
//! Everything here is pure: `Plan::problems()` checks services with these
//! rules, the runner expands commands with them, the sandbox names the
//! variables with them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::units::HumanDuration;

/// The most services a plan may have.
pub const MAX_SERVICES: usize = 64;
/// The longest service name.
pub const MAX_SERVICE_NAME: usize = 63;
/// The most arguments of a command, and the longest one.
pub const MAX_ARGS: usize = 256;
pub const MAX_ARG: usize = 4096;
/// The most variables a service's `env` may set.
pub const MAX_ENV: usize = 256;
/// The most named ports (`{port.NAME}`) one service may take.
pub const MAX_PORTS: usize = 16;
/// The most a service's output may put on the run's timeline, per instance
/// (lines past it are counted, not kept).
pub const MAX_SERVICE_OUTPUT: u64 = 8 << 20;
/// What a line of output costs against [`MAX_SERVICE_OUTPUT`] besides its
/// text: the event around it (an empty line is not free).
pub const SERVICE_LINE_COST: u64 = 64;

/// A program under test, started by the runners of its profile's machines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// `[a-z][a-z0-9-]*`, unique in the plan.
    pub name: String,
    /// The profile whose machines run it (one instance on each).
    pub profile: String,
    /// The program (a name looked up on the machine's PATH, or an absolute
    /// path) and its arguments, with placeholders.
    pub command: Vec<String>,
    /// How the runner tells it is ready. None: as soon as it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Ready>,
    /// How long it may take to become ready before the run fails.
    #[serde(default = "ready_timeout")]
    pub ready_timeout: HumanDuration,
    /// How long it has after SIGTERM at the run's end before SIGKILL.
    #[serde(default = "stop_timeout")]
    pub stop_timeout: HumanDuration,
    /// Variables it sees (with placeholders), besides PATH, HOME, LANG and
    /// the like; nothing else of the runner's environment reaches it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

fn ready_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}

fn stop_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

/// One way to tell that a service is ready; exactly one is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Ready {
    /// A TCP port on this machine that accepts a connection (`"{port}"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// A path answered with a 2xx status over HTTP at `{host}:{port}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Text that appears in a line of its output (stdout or stderr).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

/// [`Ready`] as the one check it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Tcp(String),
    Http(String),
    Log(String),
    /// No check: ready once started.
    Started,
}

impl Service {
    /// The readiness check, once the plan is valid.
    pub fn readiness(&self) -> Readiness {
        match &self.ready {
            Some(Ready { tcp: Some(t), .. }) => Readiness::Tcp(t.clone()),
            Some(Ready { http: Some(h), .. }) => Readiness::Http(h.clone()),
            Some(Ready { log: Some(l), .. }) => Readiness::Log(l.clone()),
            _ => Readiness::Started,
        }
    }

    /// Every text of the service that may hold placeholders.
    fn texts(&self) -> impl Iterator<Item = &str> {
        let ready = self.ready.iter().flat_map(|r| [&r.tcp, &r.http, &r.log]).flatten();
        self.command.iter().chain(self.env.values()).chain(ready).map(String::as_str)
    }

    /// The ports it takes: `""` for `{port}`, and each `{port.NAME}`'s name.
    /// An HTTP readiness check takes the main port.
    pub fn port_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self
            .texts()
            .filter_map(|t| placeholders(t).ok())
            .flatten()
            .filter_map(|p| match p {
                Placeholder::Port(name) => Some(name),
                _ => None,
            })
            .collect();
        if matches!(self.readiness(), Readiness::Http(_)) {
            names.insert(String::new());
        }
        names
    }

    /// What is wrong with the service at `services[i]`, given the plan's
    /// profile names.
    pub fn problems(&self, i: usize, profiles: &BTreeSet<&str>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut bad = |field: &str, message: String| out.push((format!("services[{i}]{field}"), message));
        if let Err(m) = check_name(&self.name) {
            bad(".name", m);
        }
        if !profiles.contains(self.profile.as_str()) {
            let shown: Vec<&str> = profiles.iter().copied().take(10).collect();
            bad(".profile", format!("no profile named {:?} (profiles: {})", self.profile, shown.join(", ")));
        }
        match self.command.first() {
            None => bad(".command", "names no program: write [\"program\", \"arg\", …]".into()),
            Some(p) if p.trim().is_empty() => bad(".command[0]", "the program is empty".into()),
            Some(p) if p.contains('{') => {
                bad(".command[0]", "the program is a name or an absolute path, without placeholders".into())
            }
            Some(p) if p.contains('/') && !is_absolute(p) => bad(
                ".command[0]",
                format!("{p:?} is a relative path; name a program on PATH or give an absolute path"),
            ),
            Some(_) => {}
        }
        if self.command.len() > MAX_ARGS {
            bad(".command", format!("{} arguments; a command may have {MAX_ARGS}", self.command.len()));
        }
        for (j, arg) in self.command.iter().enumerate() {
            if arg.len() > MAX_ARG {
                bad(&format!(".command[{j}]"), format!("is {} bytes long; the most is {MAX_ARG}", arg.len()));
            } else if arg.contains('\0') {
                bad(&format!(".command[{j}]"), "holds a NUL character".into());
            } else if let Err(m) = placeholders(arg) {
                bad(&format!(".command[{j}]"), m);
            }
        }
        if self.env.len() > MAX_ENV {
            bad(".env", format!("{} variables; a service may set {MAX_ENV}", self.env.len()));
        }
        for (k, v) in &self.env {
            let ok = !k.is_empty()
                && k.len() <= 128
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                bad(
                    &format!(".env.{k}"),
                    "a variable name is letters, digits and '_', not first a digit".into(),
                );
            } else if v.len() > MAX_ARG || v.contains('\0') {
                bad(&format!(".env.{k}"), format!("the value is over {MAX_ARG} bytes or holds a NUL"));
            } else if let Err(m) = placeholders(v) {
                bad(&format!(".env.{k}"), m);
            }
        }
        if let Some(r) = &self.ready {
            let set = [&r.tcp, &r.http, &r.log].iter().filter(|x| x.is_some()).count();
            if set != 1 {
                bad(
                    ".ready",
                    "set exactly one of tcp (a port: \"{port}\"), http (a path: \"/healthz\") or \
                     log (text of a line: \"Ready to accept\")"
                        .into(),
                );
            }
            for (field, text) in [("tcp", &r.tcp), ("http", &r.http), ("log", &r.log)] {
                let Some(text) = text else { continue };
                let path = format!(".ready.{field}");
                if text.is_empty() || text.len() > MAX_ARG {
                    bad(&path, format!("must be 1 to {MAX_ARG} bytes"));
                } else if let Err(m) = placeholders(text) {
                    bad(&path, m);
                } else if field == "http" && !text.starts_with('/') {
                    bad(&path, format!("{text:?} is not a path; write one such as \"/healthz\""));
                } else if field == "tcp"
                    && placeholders(text).is_ok_and(|p| p.len() != 1 || !matches!(p[0], Placeholder::Port(_)))
                    && text.parse::<u16>().is_err()
                {
                    bad(
                        &path,
                        format!("{text:?} is not a port; write \"{{port}}\", \"{{port.NAME}}\" or a number"),
                    );
                }
            }
        }
        if self.port_names().len() > MAX_PORTS {
            bad(".command", format!("takes more than {MAX_PORTS} ports"));
        }
        if self.ready_timeout.0.is_zero() {
            bad(".ready_timeout", "must be longer than zero".into());
        }
        out
    }
}

fn is_absolute(p: &str) -> bool {
    p.starts_with('/') || (p.len() > 2 && p.as_bytes()[1] == b':' && (p.contains('\\') || p.contains('/')))
}

/// Checks a service name: `[a-z][a-z0-9-]*`, at most 63 characters, not
/// ending in `-`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= MAX_SERVICE_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        let shown: String = name.chars().take(MAX_SERVICE_NAME).collect();
        Err(format!(
            "{shown:?} is not a valid service name: a lowercase letter, then lowercase letters, digits \
             and '-' (at most {MAX_SERVICE_NAME}, not ending in '-')"
        ))
    }
}

/// A placeholder of a service's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placeholder {
    /// `{port}` (the name is empty) or `{port.NAME}`.
    Port(String),
    Host,
    Dir,
    Run,
}

/// The placeholders of `text`, in order; `{{` and `}}` stand for braces.
pub fn placeholders(text: &str) -> Result<Vec<Placeholder>, String> {
    let mut out = Vec::new();
    walk(text, |p| {
        out.push(p.clone());
        String::new()
    })?;
    Ok(out)
}

/// What the runner fills placeholders with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Values {
    pub ports: BTreeMap<String, u16>,
    pub host: String,
    pub dir: String,
    pub run: String,
}

/// `text` with its placeholders filled in from `values` (a port not in
/// `values` is an error: the runner takes every port [`Service::port_names`] lists).
pub fn expand(text: &str, values: &Values) -> Result<String, String> {
    let mut missing = None;
    let out = walk(text, |p| match p {
        Placeholder::Port(name) => match values.ports.get(name) {
            Some(port) => port.to_string(),
            None => {
                missing = Some(name.clone());
                String::new()
            }
        },
        Placeholder::Host => values.host.clone(),
        Placeholder::Dir => values.dir.clone(),
        Placeholder::Run => values.run.clone(),
    })?;
    match missing {
        Some(name) => Err(format!("no port named {name:?} was taken")),
        None => Ok(out),
    }
}

/// Walks `text`, copying it and replacing each placeholder by `fill`'s text.
fn walk(text: &str, mut fill: impl FnMut(&Placeholder) -> String) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(['{', '}']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err(format!("{text:?} has a '}}' with no '{{' (write '}}}}' for a brace)"));
        }
        let Some(end) = tail.find('}') else {
            return Err(format!("{text:?} has a '{{' with no '}}' (write '{{{{' for a brace)"));
        };
        let inner = &tail[1..end];
        let p = match inner {
            "port" => Placeholder::Port(String::new()),
            "host" => Placeholder::Host,
            "dir" => Placeholder::Dir,
            "run" => Placeholder::Run,
            _ => match inner.strip_prefix("port.") {
                Some(name) if check_name(name).is_ok() => Placeholder::Port(name.to_string()),
                _ => {
                    return Err(format!(
                        "{{{inner}}} is not a placeholder; use {{port}}, {{port.NAME}}, {{host}}, {{dir}} or {{run}}"
                    ));
                }
            },
        };
        out.push_str(&fill(&p));
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Where one instance of a service is reached, as its runner reports it once
/// the service is ready.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceAddr {
    /// The machine that runs it.
    pub machine: String,
    /// The address other machines reach that machine at (`--advertise`).
    pub host: String,
    /// Its `{port}`, if it takes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Its `{port.NAME}` ports.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u16>,
}

impl ServiceAddr {
    /// Every `host:port` the instance listens on.
    pub fn sockets(&self) -> Vec<(String, u16)> {
        self.port.iter().chain(self.ports.values()).map(|p| (self.host.clone(), *p)).collect()
    }
}

/// The addresses of a run's services: name → its instances, in order.
pub type Addresses = BTreeMap<String, Vec<ServiceAddr>>;

/// The prefix of a service's variables: `db` → `DB_SERVICE`, `kv-store` → `KV_STORE_SERVICE`.
pub fn env_prefix(name: &str) -> String {
    format!("{}_SERVICE", name.to_ascii_uppercase().replace('-', "_"))
}

/// The variables an entry sees for the run's services, in the Kubernetes
/// convention: `DB_SERVICE_HOST` and `DB_SERVICE_PORT` (the first instance),
/// `DB_SERVICE_PORT_ADMIN` for `{port.admin}`, and `DB_SERVICE_ADDRS` with
/// every instance's `host:port`, comma-separated.
pub fn env_vars(addresses: &Addresses) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, instances) in addresses {
        let prefix = env_prefix(name);
        let Some(first) = instances.first() else { continue };
        out.push((format!("{prefix}_HOST"), first.host.clone()));
        if let Some(port) = first.port {
            out.push((format!("{prefix}_PORT"), port.to_string()));
        }
        for (pname, port) in &first.ports {
            out.push((
                format!("{prefix}_PORT_{}", pname.to_ascii_uppercase().replace('-', "_")),
                port.to_string(),
            ));
        }
        let all: Vec<String> =
            instances.iter().filter_map(|a| a.port.map(|p| join_host_port(&a.host, p))).collect();
        if !all.is_empty() {
            out.push((format!("{prefix}_ADDRS"), all.join(",")));
        }
    }
    out
}

/// `host:port`, with an IPv6 address in brackets.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// The prefix of a net grant that names a service: `service:db`.
pub const GRANT_PREFIX: &str = "service:";

/// The service a net grant names (`service:db` → `db`; `service:*` → `*`).
pub fn granted_service(grant: &str) -> Option<&str> {
    grant.strip_prefix(GRANT_PREFIX)
}

/// Whether a machine whose operator allows `allowed` (`--allow-exec`) may
/// start `program`: the same name, the same absolute path, an entry
/// `DIR/*` for any absolute path directly in DIR, or `*` for anything. The
/// runner checks again where it resolves the names on its PATH.
pub fn exec_allowed(allowed: &[String], program: &str) -> bool {
    allowed.iter().any(|a| {
        if a == "*" || a == program {
            return true;
        }
        match a.strip_suffix('*') {
            Some(dir) if dir.ends_with('/') => {
                program.strip_prefix(dir).is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
            }
            _ => {
                // `--allow-exec redis-server` allows `/usr/bin/redis-server`
                // only where the runner finds that path on its PATH: the
                // coordinator cannot tell, so it lets the runner decide.
                !a.contains('/') && program.rsplit('/').next() == Some(a.as_str()) && program.starts_with('/')
            }
        }
    })
}

/// What happened to a service instance; the runner reports each as an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum ServiceState {
    /// The process started.
    Started { pid: u32, command: Vec<String> },
    /// Its readiness check passed; entries may reach it at `address`.
    Ready { address: ServiceAddr, after_ms: u64 },
    /// The runner is stopping it (the run ended, or a fault stops it).
    Stopping,
    /// The process ended. `expected`: the runner stopped it (the run's end,
    /// or a fault); otherwise it exited by itself and the run fails.
    Exited {
        status: String,
        expected: bool,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        last_output: String,
    },
    /// It could not start or never became ready.
    Failed { message: String },
    /// A fault paused it (SIGSTOP to its process group).
    Paused,
    /// A fault resumed it (SIGCONT).
    Resumed,
    /// A fault sent it a signal.
    Signalled { signal: crate::fault::Signal },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(command: &[&str]) -> Service {
        Service {
            name: "db".into(),
            profile: "box".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            ready: None,
            ready_timeout: ready_timeout(),
            stop_timeout: stop_timeout(),
            env: BTreeMap::new(),
        }
    }

    #[test]
    fn placeholders_are_found_filled_and_escaped() {
        let values = Values {
            ports: [(String::new(), 7000), ("admin".to_string(), 7001)].into(),
            host: "10.0.0.2".into(),
            dir: "/tmp/x".into(),
            run: "r1".into(),
        };
        assert_eq!(
            expand("--listen={host}:{port} --admin {port.admin} {dir}/{run} {{x}}", &values).unwrap(),
            "--listen=10.0.0.2:7000 --admin 7001 /tmp/x/r1 {x}"
        );
        assert!(expand("{port.other}", &values).unwrap_err().contains("other"));
        assert!(placeholders("{nope}").unwrap_err().contains("not a placeholder"));
        assert!(placeholders("a{port").unwrap_err().contains("no '}'"));
        assert!(placeholders("a}b").unwrap_err().contains("no '{'"));
        let s = Service {
            ready: Some(Ready { http: Some("/health".into()), ..Ready::default() }),
            ..service(&["srv", "--admin", "{port.admin}"])
        };
        assert_eq!(s.port_names(), ["".to_string(), "admin".to_string()].into());
    }

    #[test]
    fn bad_services_are_told_at_their_fields() {
        let profiles: BTreeSet<&str> = ["box"].into();
        assert!(service(&["redis-server", "--port", "{port}"]).problems(0, &profiles).is_empty());
        let mut s = service(&["bin/srv", "{prt}"]);
        s.name = "Db".into();
        s.profile = "nope".into();
        s.ready = Some(Ready { tcp: Some("x".into()), log: Some("y".into()), ..Ready::default() });
        let paths: Vec<String> = s.problems(3, &profiles).into_iter().map(|(p, _)| p).collect();
        for want in [
            "services[3].name",
            "services[3].profile",
            "services[3].command[0]",
            "services[3].command[1]",
            "services[3].ready",
            "services[3].ready.tcp",
        ] {
            assert!(paths.iter().any(|p| p == want), "{want} missing from {paths:?}");
        }
        assert!(service(&[]).problems(0, &profiles)[0].1.contains("no program"));
    }

    #[test]
    fn variables_follow_the_kubernetes_convention() {
        let addr = |host: &str, port| ServiceAddr {
            machine: "m".into(),
            host: host.into(),
            port: Some(port),
            ports: [("admin-api".to_string(), 9)].into(),
        };
        let addresses: Addresses =
            [("kv-store".to_string(), vec![addr("10.0.0.1", 5), addr("::1", 6)])].into();
        let vars: BTreeMap<String, String> = env_vars(&addresses).into_iter().collect();
        assert_eq!(vars["KV_STORE_SERVICE_HOST"], "10.0.0.1");
        assert_eq!(vars["KV_STORE_SERVICE_PORT"], "5");
        assert_eq!(vars["KV_STORE_SERVICE_PORT_ADMIN_API"], "9");
        assert_eq!(vars["KV_STORE_SERVICE_ADDRS"], "10.0.0.1:5,[::1]:6");
    }

    #[test]
    fn exec_is_allowed_by_name_path_or_directory() {
        let allowed =
            vec!["redis-server".to_string(), "/opt/srv/*".to_string(), "/usr/sbin/nginx".to_string()];
        assert!(exec_allowed(&allowed, "redis-server"));
        assert!(exec_allowed(&allowed, "/usr/bin/redis-server"));
        assert!(exec_allowed(&allowed, "/opt/srv/api"));
        assert!(!exec_allowed(&allowed, "/opt/srv/sub/api"));
        assert!(exec_allowed(&allowed, "/usr/sbin/nginx"));
        assert!(!exec_allowed(&allowed, "nginx-debug"));
        assert!(!exec_allowed(&allowed, "sh"));
        assert!(!exec_allowed(&[], "sh"));
        assert!(exec_allowed(&["*".to_string()], "sh"));
    }
}
