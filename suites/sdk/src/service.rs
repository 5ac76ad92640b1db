//! Where the run's services are: the programs under test that the plan's
//! `[[services]]` start on their machines.
//!
//! The runner hands every test the address of each service of its run as
//! environment variables in the Kubernetes convention (`DB_SERVICE_HOST`,
//! `DB_SERVICE_PORT`, `DB_SERVICE_PORT_ADMIN` for `{port.admin}`,
//! `DB_SERVICE_ADDRS` for every instance); [`service`] reads them. Reaching
//! the address still needs the plan entry's grant:
//! `capabilities.net = ["service:db"]`.

use crate::Failure;

/// One service's address, as the runner reported it ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAddress {
    /// The host other machines reach it at (an IP address unless the
    /// runner's operator advertised a name).
    pub host: String,
    /// Its `{port}`.
    pub port: u16,
}

impl ServiceAddress {
    /// `host:port`, ready for `TcpStream::connect` (an IPv6 host in brackets).
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `http://host:port` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }
}

/// The variables' prefix for a service: `db` → `DB_SERVICE`, `kv-store` → `KV_STORE_SERVICE`.
fn prefix(name: &str) -> String {
    format!("{}_SERVICE", name.to_ascii_uppercase().replace('-', "_"))
}

/// The address of the run's service `name` (its first instance), or a
/// failure saying what is missing.
pub fn service(name: &str) -> Result<ServiceAddress, Failure> {
    let prefix = prefix(name);
    let host = std::env::var(format!("{prefix}_HOST")).map_err(|_| {
        Failure::fail(format!(
            "the run has no service {name:?} (no ${prefix}_HOST): is it in the plan's [[services]], and ready?"
        ))
    })?;
    let port = service_port(name, "")?;
    Ok(ServiceAddress { host, port })
}

/// The port `{port.PORT}` of service `name` (`""` for its `{port}`).
pub fn service_port(name: &str, port: &str) -> Result<u16, Failure> {
    let var = match port {
        "" => format!("{}_PORT", prefix(name)),
        p => format!("{}_PORT_{}", prefix(name), p.to_ascii_uppercase().replace('-', "_")),
    };
    let value = std::env::var(&var)
        .map_err(|_| Failure::fail(format!("service {name:?} has no such port (no ${var})")))?;
    value.parse().map_err(|_| Failure::fail(format!("${var} is {value:?}, not a port")))
}

/// Every instance's `host:port` of service `name`, in instance order.
pub fn service_addrs(name: &str) -> Vec<String> {
    std::env::var(format!("{}_ADDRS", prefix(name)))
        .map(|v| v.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}
