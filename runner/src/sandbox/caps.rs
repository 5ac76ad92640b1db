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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

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
    /// Host names resolved to these addresses here rather than by the
    /// system's resolver (`--add-host NAME=ADDRESS`).
    pub hosts: Vec<(String, IpAddr)>,
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
            hosts: Vec::new(),
            command: command.into(),
        }
    }

    /// Resolves host names granted to suites to these addresses here
    /// (`--add-host`), before the system's resolver.
    pub fn with_hosts(mut self, hosts: Vec<(String, IpAddr)>) -> HostPolicy {
        self.hosts = hosts;
        self
    }

    /// The addresses granted name `name` stands for on this machine:
    /// `--add-host`'s, or else what the system resolves it to, once.
    fn resolve(&self, name: &str, port: u16) -> Result<Vec<IpAddr>, String> {
        let given: Vec<IpAddr> = self.hosts.iter().filter(|(n, _)| n == name).map(|(_, ip)| *ip).collect();
        if !given.is_empty() {
            return Ok(given);
        }
        let found = (name, port).to_socket_addrs().map_err(|e| {
            format!("the plan grants net {name}:{port}, but {name} does not resolve on this machine: {e}")
        })?;
        let mut ips: Vec<IpAddr> = found.map(|a| a.ip().to_canonical()).collect();
        ips.sort();
        ips.dedup();
        Ok(ips)
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
    /// The services the entry may inject faults into (`*`: every one). The
    /// coordinator checks again: it alone routes faults.
    faults: Vec<String>,
    /// Where the run's services are, host names resolved (`services.addresses`).
    services: Arc<Addresses>,
    /// The host names the entry is granted, with the addresses they were
    /// resolved to when its shard started: the guest's lookups are answered
    /// from here alone, and its connections checked against these addresses.
    names: Arc<std::collections::BTreeMap<String, Vec<IpAddr>>>,
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
        // A runner may advertise a name (`--advertise db.lan`): suites see,
        // and are granted, what it resolves to here, once.
        let services = &resolved(services)?;
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
        // Granted names: resolved here, once, to grants of their addresses
        // (a name that resolves elsewhere later gains nothing).
        let mut names = std::collections::BTreeMap::new();
        for grant in &net {
            match &grant.host {
                HostPattern::Name(name) => {
                    let ips = policy.resolve(name, grant.port.unwrap_or(0))?;
                    reached.extend(
                        ips.iter().map(|ip| NetGrant { host: HostPattern::Ip(*ip), port: grant.port }),
                    );
                    names.entry(name.clone()).or_insert_with(Vec::new).extend(ips);
                }
                HostPattern::Localhost => {
                    names.insert(
                        "localhost".to_string(),
                        vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()],
                    );
                }
                HostPattern::Any | HostPattern::Ip(_) => {}
            }
        }
        for ips in names.values_mut() {
            ips.sort();
            ips.dedup();
        }
        net.retain(|g| !matches!(g.host, HostPattern::Name(_)));
        net.append(&mut reached);
        let mut env: Vec<(String, String)> =
            caps.env.iter().filter_map(|name| std::env::var(name).ok().map(|v| (name.clone(), v))).collect();
        env.extend(ensemble_protocol::service::env_vars(services));
        Ok(Grants {
            net: Arc::new(net),
            deny: Arc::new(policy.deny_net.clone()),
            env,
            faults: caps.faults.clone(),
            services: Arc::new(services.clone()),
            names: Arc::new(names),
        })
    }

    /// What a guest's lookup of `name` answers: an address as itself, a
    /// granted name as the addresses it was resolved to when the shard
    /// started; any other name is refused, without asking any resolver
    /// (lookups could carry data out), with the grant that would allow it.
    pub fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        lookup_in(&self.names, name)
    }

    /// Where service `name`'s instances are, in instance order.
    pub fn service_addresses(&self, name: &str) -> &[ensemble_protocol::service::ServiceAddr] {
        self.services.get(name).map_or(&[], Vec::as_slice)
    }

    /// Whether the entry may inject faults into `service`.
    pub fn may_fault(&self, service: &str) -> bool {
        ensemble_protocol::plan::faults_granted(&self.faults, service)
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

/// What decides the `wasi:http` requests of one instance: each goes out only
/// to an address its entry's `net` grants cover (scheme aside: `http` and
/// `https` alike), and a refused one fails that request (`HTTP request
/// denied`) with a note in the test's stderr naming the address and the
/// grant to add; the runner and the run go on.
pub struct HttpGate {
    net: Arc<Vec<NetGrant>>,
    deny: Arc<Vec<NetGrant>>,
    names: Arc<std::collections::BTreeMap<String, Vec<IpAddr>>>,
    capture: Capture,
    /// The test's HTTP connections open now, at most
    /// [`super::net::MAX_SOCKETS`]: each is a socket of the runner's, held
    /// until its response is read or dropped.
    connections: Arc<tokio::sync::Semaphore>,
    max_connections: u32,
}

impl HttpGate {
    /// Notes `text` in the test's stderr (a refusal, and why).
    pub fn note(&self, text: &str) {
        self.capture.note(text);
    }
}

impl Grants {
    /// The HTTP gate of one instance, whose refusals `capture` records.
    pub fn http_gate(&self, capture: &Capture) -> HttpGate {
        HttpGate {
            net: self.net.clone(),
            deny: self.deny.clone(),
            names: self.names.clone(),
            capture: capture.clone(),
            connections: Arc::new(tokio::sync::Semaphore::new(super::net::MAX_SOCKETS as usize)),
            max_connections: super::net::MAX_SOCKETS,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn std::future::Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        drop(fut);
        let (net, deny, names, capture) =
            (self.net.clone(), self.deny.clone(), self.names.clone(), self.capture.clone());
        let connection = self.connections.clone().try_acquire_owned();
        let max = self.max_connections;
        Box::new(async move {
            let Ok(connection) = connection else {
                capture.note(&format!(
                    "ensemble: an HTTP request was refused: the test has {} connections open already, the \
                     most a test may (each is open until its response is read or dropped)\n",
                    max
                ));
                return Err(wasmtime_wasi_http::Error::ConnectionLimitReached);
            };
            use http_body_util::BodyExt;
            let uri = request.uri().clone();
            let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
            let Some(host) = uri.host().map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
            else {
                return Err(wasmtime_wasi_http::Error::HttpRequestUriInvalid);
            };
            let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
            let shown = ensemble_protocol::service::join_host_port(&host, port);
            // Names resolve only as granted (no resolver is asked for any
            // other), to the addresses found when the shard started.
            let addrs: Vec<std::net::SocketAddr> = match lookup_in(&names, &host) {
                Ok(ips) => ips.into_iter().map(|ip| std::net::SocketAddr::new(ip, port)).collect(),
                Err(_) => Vec::new(),
            };
            let allowed = |a: &std::net::SocketAddr| {
                net.iter().any(|g| g.allows(*a)) && !deny.iter().any(|d| d.allows(*a))
            };
            let Some(pinned) = addrs.iter().copied().find(allowed) else {
                capture.note(&format!(
                    "ensemble: the HTTP request to {uri} was denied: no net grant of this plan entry covers \
                     {shown} (grant it in capabilities.net, e.g. \"service:NAME\" or \"{shown}\")\n"
                ));
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            };
            // The request goes to the address just checked, whatever the
            // name resolves to now (the Host header, and TLS, keep the name).
            let (response, io) = send_pinned(request, pinned, &host, tls, options, connection).await?;
            Ok((
                response.map(|body| body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync()),
                Box::new(io)
                    as Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
            ))
        })
    }
}

/// Sends `request` over a connection to `addr` (TLS for `host` when `tls`),
/// whatever its URI's host resolves to: the response, and the connection's
/// work to drive until its body is read.
async fn send_pinned(
    request: http::Request<wasmtime_wasi_http::WasiBody>,
    addr: std::net::SocketAddr,
    host: &str,
    tls: bool,
    options: Option<wasmtime_wasi_http::RequestOptions>,
    connection: tokio::sync::OwnedSemaphorePermit,
) -> Result<
    (
        http::Response<hyper::body::Incoming>,
        impl std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send + use<>,
    ),
    wasmtime_wasi_http::Error,
> {
    use wasmtime_wasi_http::Error;
    let limit = |d: Option<Duration>| d.unwrap_or(Duration::from_secs(600));
    let connect = limit(options.and_then(|o| o.connect_timeout));
    let first_byte = limit(options.and_then(|o| o.first_byte_timeout));
    let tcp = match tokio::time::timeout(connect, tokio::net::TcpStream::connect(addr)).await {
        Ok(stream) => stream.map_err(Error::Connect)?,
        Err(_) => return Err(Error::ConnectionTimeout),
    };
    let stream: Box<dyn Stream> = if tls {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
        let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        Box::new(connector.connect(name, tcp).await.map_err(Error::Tls)?)
    } else {
        Box::new(tcp)
    };
    let mut request = request.map(|body| Drained(Some(body)));
    let handshake =
        hyper::client::conn::http1::Builder::new().handshake(wasmtime_wasi_http::io::TokioIo::new(stream));
    let (mut sender, conn) =
        tokio::time::timeout(connect, handshake).await.map_err(|_| Error::ConnectionTimeout)??;
    // The request line carries the path alone (the authority is the Host header).
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    *request.uri_mut() =
        http::Uri::builder().path_and_query(path).build().map_err(|_| Error::HttpRequestUriInvalid)?;
    // The connection counts as the test's until it closes.
    let conn = tokio::spawn(async move {
        let _counted = connection;
        conn.await
    });
    let response = tokio::time::timeout(first_byte, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)??;
    Ok((response, async move {
        match conn.await {
            Ok(done) => done.map_err(Error::from),
            Err(_) => Ok(()),
        }
    }))
}

/// A request's body, read to its end and discarded in the background when
/// the connection lets go of it first. A server may answer before the
/// request's body ends (a `GET` whose empty body the guest is still
/// finishing) and close the connection: the guest's last write or flush
/// then met a closed stream, and the request failed ("connection reset")
/// although its answer had come. Bounded: at most [`DRAINED`] bytes, and
/// no longer than the guest keeps its body open (its test's time).
struct Drained(Option<wasmtime_wasi_http::WasiBody>);

/// The most bytes of a request body read and discarded after its
/// connection let go of it; past it the guest's writes fail.
const DRAINED: usize = 16 << 20;

impl hyper::body::Body for Drained {
    type Data = bytes::Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.get_mut().0.as_mut() {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(hyper::body::Body::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.0.as_ref().map_or_else(|| hyper::body::SizeHint::with_exact(0), hyper::body::Body::size_hint)
    }
}

impl Drop for Drained {
    fn drop(&mut self) {
        use http_body_util::BodyExt;
        let Some(mut body) = self.0.take().filter(|b| !hyper::body::Body::is_end_stream(b)) else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let mut read = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                read = read.saturating_add(frame.data_ref().map_or(0, bytes::Bytes::len));
                if read > DRAINED {
                    return;
                }
            }
        });
    }
}

/// A connection an HTTP request goes over: TCP, or TLS over it.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

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
        let ip: std::net::IpAddr = host.parse().map_err(|_| {
            format!("service {name} was advertised at {host:?}, which does not resolve on this machine")
        })?;
        out.push(NetGrant { host: HostPattern::Ip(ip), port: Some(port) });
    }
    Ok(out)
}

/// [`Grants::lookup`] in `names`.
fn lookup_in(
    names: &std::collections::BTreeMap<String, Vec<IpAddr>>,
    name: &str,
) -> Result<Vec<IpAddr>, String> {
    let bare = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let key = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    names.get(&key).cloned().ok_or_else(|| {
        format!(
            "ensemble: the name lookup of {name:?} was denied: no net grant of this plan entry names it \
             (grant it in capabilities.net, e.g. \"{key}:PORT\")\n"
        )
    })
}

/// `services` with every host that is a name replaced by the address it
/// resolves to here (an IPv4 one first). A name that does not resolve is
/// left as it is: only an entry that is granted that service fails, naming it.
fn resolved(services: &Addresses) -> Result<Addresses, String> {
    let mut out = services.clone();
    for a in out.values_mut().flatten() {
        if a.host.parse::<std::net::IpAddr>().is_ok() {
            continue;
        }
        let Ok(found) = (a.host.as_str(), 0).to_socket_addrs() else { continue };
        let mut ips: Vec<std::net::IpAddr> = found.map(|s| s.ip()).collect();
        ips.sort_by_key(|ip| !ip.is_ipv4());
        if let Some(ip) = ips.first() {
            a.host = ip.to_string();
        }
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
            faults: Vec::new(),
        }
    }

    /// A test's HTTP connections are counted while they are open, and a
    /// request past the bound is refused at once, saying why.
    #[tokio::test]
    async fn a_tests_http_connections_are_bounded_and_counted_until_they_close() {
        use http_body_util::BodyExt;
        use wasmtime_wasi_http::WasiHttpHooks;
        // A server that takes connections, answers none, and closes them
        // all when told.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (took, mut taken) = tokio::sync::mpsc::unbounded_channel();
        let close = Arc::new(tokio::sync::Notify::new());
        tokio::spawn({
            let close = close.clone();
            async move {
                let mut held = Vec::new();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            held.push(accepted.unwrap().0);
                            took.send(()).unwrap();
                        }
                        _ = close.notified() => held.clear(),
                    }
                }
            }
        });
        let grants = Grants::within(
            &caps(&[&format!("127.0.0.1:{port}")], &[]),
            &HostPolicy::open(),
            &Addresses::new(),
        )
        .unwrap();
        let capture = Capture::new(1 << 20);
        let mut gate = grants.http_gate(&capture);
        (gate.connections, gate.max_connections) = (Arc::new(tokio::sync::Semaphore::new(2)), 2);
        let mut send = || {
            let body = http_body_util::Empty::<bytes::Bytes>::new().map_err(|e| match e {}).boxed_unsync();
            let request = http::Request::get(format!("http://127.0.0.1:{port}/")).body(body).unwrap();
            Box::into_pin(gate.send_request(request, None, Box::new(async { Ok(()) })))
        };
        let open: Vec<_> = (0..2).map(|_| tokio::spawn(send())).collect();
        for _ in 0..2 {
            taken.recv().await.unwrap();
        }
        // Both are open (no answer yet): a third is refused without a connection.
        match send().await {
            Err(wasmtime_wasi_http::Error::ConnectionLimitReached) => {}
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert!(capture.text().contains("the test has 2 connections open already"), "{}", capture.text());
        // Closed, they are given back.
        close.notify_one();
        for request in open {
            assert!(request.await.unwrap().is_err(), "the server closed without an answer");
        }
        let all =
            tokio::time::timeout(std::time::Duration::from_secs(30), gate.connections.acquire_many(2)).await;
        assert!(all.is_ok(), "the closed connections are no longer counted");
    }

    #[test]
    fn a_machine_bounds_what_plans_may_grant_and_names_the_flag() {
        let policy = HostPolicy::allowing(
            "ensemble runner",
            vec!["HOME".into(), "APP_*".into()],
            vec![NetGrant::parse("127.0.0.1:*").unwrap()],
            vec![],
        );
        assert!(
            Grants::within(&caps(&["127.0.0.1:80"], &["HOME", "APP_KEY"]), &policy, &Addresses::new())
                .is_ok()
        );
        let env = Grants::within(&caps(&[], &["PATH"]), &policy, &Addresses::new()).unwrap_err();
        assert!(env.contains("`ensemble runner --allow-env PATH`"), "{env}");
        let net = Grants::within(&caps(&["*:443"], &[]), &policy, &Addresses::new()).unwrap_err();
        assert!(net.contains("`ensemble runner --allow-net *:443`"), "{net}");
        let closed = HostPolicy::allowing("ensemble runner", vec![], vec![], vec![]);
        assert!(
            Grants::within(&caps(&[], &[]), &closed, &Addresses::new()).is_ok(),
            "no grants, nothing to allow"
        );
        assert!(Grants::within(&caps(&[], &["HOME"]), &closed, &Addresses::new()).is_err());
        let reserved =
            Grants::within(&caps(&[], &["ENSEMBLE_TOKEN"]), &HostPolicy::open(), &Addresses::new())
                .unwrap_err();
        assert!(reserved.contains("reserved"), "{reserved}");
    }

    #[test]
    fn service_grants_reach_exactly_the_services_addresses_when_the_operator_allows_them() {
        let addr = ServiceAddr {
            machine: "db".into(),
            host: "10.0.0.7".into(),
            port: Some(6379),
            ports: [("admin".to_string(), 7000)].into(),
        };
        let services: Addresses = [("db".to_string(), vec![addr])].into();
        let open = HostPolicy::open();
        let grants = Grants::within(&caps(&["service:db"], &[]), &open, &services).unwrap();
        // A name is granted, and shown, as what it resolves to.
        let named: Addresses = [(
            "web".to_string(),
            vec![ServiceAddr {
                machine: "w".into(),
                host: "localhost".into(),
                port: Some(80),
                ports: Default::default(),
            }],
        )]
        .into();
        let web = Grants::within(&caps(&["service:web"], &[]), &open, &named).unwrap();
        assert!(
            web.env.contains(&("WEB_SERVICE_HOST".to_string(), "127.0.0.1".to_string())),
            "{:?}",
            web.env
        );
        assert!(web.net.iter().any(|g| g.allows("127.0.0.1:80".parse().unwrap())));
        let reach =
            |ip: &str, port| grants.net.iter().any(|g| g.allows(format!("{ip}:{port}").parse().unwrap()));
        assert!(reach("10.0.0.7", 6379) && reach("10.0.0.7", 7000));
        assert!(!reach("10.0.0.7", 6380) && !reach("10.0.0.8", 6379));
        assert!(grants.env.contains(&("DB_SERVICE_HOST".to_string(), "10.0.0.7".to_string())));
        assert!(grants.env.contains(&("DB_SERVICE_PORT_ADMIN".to_string(), "7000".to_string())));
        // A runner allows the run's services by name, not by the address
        // they land on.
        let closed = HostPolicy::allowing("ensemble runner", vec![], vec![], vec![]);
        let why = Grants::within(&caps(&["service:db"], &[]), &closed, &services).unwrap_err();
        assert!(why.contains("--allow-net service:db"), "{why}");
        let allowed = closed.clone().with_services(vec!["*".into()]);
        assert!(Grants::within(&caps(&["service:db"], &[]), &allowed, &services).is_ok());
        let missing = Grants::within(&caps(&["service:cache"], &[]), &allowed, &services).unwrap_err();
        assert!(missing.contains("no service \"cache\""), "{missing}");
    }

    #[test]
    fn granted_names_resolve_once_and_only_they_are_looked_up() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let policy = HostPolicy::allowing(
            "ensemble runner",
            vec![],
            vec![NetGrant::parse("api.test:443").unwrap(), NetGrant::parse("localhost:*").unwrap()],
            vec![],
        )
        .with_hosts(vec![("api.test".into(), ip("10.0.0.5")), ("api.test".into(), ip("10.0.0.6"))]);
        let grants =
            Grants::within(&caps(&["API.test:443", "localhost:8080"], &[]), &policy, &Addresses::new())
                .unwrap();
        assert_eq!(grants.lookup("api.test.").unwrap(), [ip("10.0.0.5"), ip("10.0.0.6")]);
        assert_eq!(grants.lookup("localhost").unwrap(), [ip("127.0.0.1"), ip("::1")]);
        assert_eq!(grants.lookup("[::1]").unwrap(), [ip("::1")], "an address is itself");
        let denied = grants.lookup("other.test").unwrap_err();
        assert!(denied.contains("\"other.test:PORT\""), "{denied}");
        // Connections: the addresses the name resolved to, at its port.
        let reach = |a: &str| grants.net.iter().any(|g| g.allows(a.parse().unwrap()));
        assert!(reach("10.0.0.6:443") && !reach("10.0.0.6:80") && !reach("10.0.0.7:443"));
        // A name the machine does not allow is refused, naming the flag.
        let why = Grants::within(&caps(&["other.test:443"], &[]), &policy, &Addresses::new()).unwrap_err();
        assert!(why.contains("--allow-net other.test:443"), "{why}");
    }

    #[test]
    fn env_grants_take_only_named_variables() {
        // SAFETY-free: PATH is always set in test environments; HOME may be too.
        let grants = Grants::new(&Capabilities { env: vec!["PATH".into()], ..Default::default() }).unwrap();
        assert_eq!(grants.env.len(), 1);
        assert_eq!(grants.env[0].0, "PATH");
    }
}
