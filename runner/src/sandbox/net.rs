//! The guest's network, where it differs from `wasmtime-wasi`'s.
//!
//! Suites' name lookups (`wasi:sockets/ip-name-lookup`) are answered from the
//! names their entry is granted ([`super::caps::Grants::lookup`]): the
//! addresses the runner resolved when the shard started, and nothing else.
//! No resolver is asked for a name the plan does not grant (a lookup could
//! carry data out), and a name cannot be made to point elsewhere later
//! (DNS rebinding): connections are checked against the same addresses.
//!
//! `wasmtime-wasi`'s own lookups ask the system's resolver for any name, so
//! its definition of the interface is replaced by this one.
//!
//! A test holds at most [`MAX_SOCKETS`] TCP sockets at once: each is a file
//! descriptor of the runner, whose other tests (and its link to the
//! coordinator) need some too. Past it, creating one fails with
//! `new-socket-limit`, and the test's output says why.

use std::net::IpAddr;

use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress, IpAddressFamily};
use wasmtime_wasi::p2::bindings::sockets::tcp::HostTcpSocket;
use wasmtime_wasi::p2::bindings::sockets::tcp_create_socket::Host as _;
use wasmtime_wasi::p2::{DynPollable, Network, Pollable, TcpSocket};
use wasmtime_wasi::sockets::WasiSocketsView;

use super::host::HostState;

/// The interface, at the version `wasmtime-wasi` defines it (guests
/// importing any 0.2 version are linked to it).
const IP_NAME_LOOKUP: &str = "wasi:sockets/ip-name-lookup@0.2.12";
const TCP_CREATE_SOCKET: &str = "wasi:sockets/tcp-create-socket@0.2.12";
const TCP: &str = "wasi:sockets/tcp@0.2.12";

/// The most TCP sockets one test holds at once.
pub const MAX_SOCKETS: u32 = 1024;

/// The answer of one lookup, read address by address.
pub struct Lookup(std::vec::IntoIter<IpAddr>);

#[async_trait::async_trait]
impl Pollable for Lookup {
    /// Answers are known when the lookup is made: always ready.
    async fn ready(&mut self) {}
}

/// The note a test's output gets when a socket is refused.
fn refused() -> String {
    format!(
        "ensemble: a socket was refused: the test holds {MAX_SOCKETS} already, the most a test may hold\n"
    )
}

/// Replaces `wasmtime-wasi`'s lookups in `linker` with the granted ones,
/// and its sockets with counted ones.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut lookup = linker.instance(IP_NAME_LOOKUP)?;
    lookup.resource("resolve-address-stream", ResourceType::host::<Lookup>(), |mut store, rep| {
        store.data_mut().table.delete(Resource::<Lookup>::new_own(rep))?;
        Ok(())
    })?;
    lookup.func_wrap("resolve-addresses", |mut store, (network, name): (Resource<Network>, String)| {
        let state = store.data_mut();
        state.table.get(&network)?;
        let answer = match state.env.grants.lookup(&name) {
            Ok(ips) => Ok(state.table.push(Lookup(ips.into_iter()))?),
            Err(why) => {
                state.http_gate.note(&why);
                Err(ErrorCode::AccessDenied)
            }
        };
        Ok((answer,))
    })?;
    lookup.func_wrap(
        "[method]resolve-address-stream.resolve-next-address",
        |mut store, (this,): (Resource<Lookup>,)| {
            let next = store.data_mut().table.get_mut(&this)?.0.next();
            Ok((Ok::<Option<IpAddress>, ErrorCode>(next.map(IpAddress::from)),))
        },
    )?;
    lookup.func_wrap(
        "[method]resolve-address-stream.subscribe",
        |mut store, (this,): (Resource<Lookup>,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
            Ok((wasmtime_wasi::p2::subscribe(&mut store.data_mut().table, this)?,))
        },
    )?;
    // Sockets, counted as they are made and dropped.
    let mut create = linker.instance(TCP_CREATE_SOCKET)?;
    create.func_wrap("create-tcp-socket", |mut store, (family,): (IpAddressFamily,)| {
        let state = store.data_mut();
        if state.sockets >= MAX_SOCKETS {
            state.http_gate.note(&refused());
            return Ok((Err(ErrorCode::NewSocketLimit),));
        }
        match state.sockets().create_tcp_socket(family) {
            Ok(socket) => {
                state.sockets += 1;
                Ok((Ok(socket),))
            }
            Err(e) => Ok((Err(e.downcast()?),)),
        }
    })?;
    let mut tcp = linker.instance(TCP)?;
    tcp.resource("tcp-socket", ResourceType::host::<TcpSocket>(), |mut store, rep| {
        let state = store.data_mut();
        state.sockets = state.sockets.saturating_sub(1);
        HostTcpSocket::drop(&mut state.sockets(), Resource::new_own(rep))
    })?;
    // A connection a listening socket accepts is a socket of the test's too.
    tcp.func_wrap("[method]tcp-socket.accept", |mut store, (this,): (Resource<TcpSocket>,)| {
        let state = store.data_mut();
        if state.sockets >= MAX_SOCKETS {
            state.http_gate.note(&refused());
            return Ok((Err(ErrorCode::NewSocketLimit),));
        }
        match HostTcpSocket::accept(&mut state.sockets(), this) {
            Ok(accepted) => {
                state.sockets += 1;
                Ok((Ok(accepted),))
            }
            Err(e) => Ok((Err(e.downcast()?),)),
        }
    })?;
    linker.allow_shadowing(false);
    Ok(())
}
