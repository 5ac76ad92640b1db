//! Suites' name lookups (`wasi:sockets/ip-name-lookup`), answered from the
//! names their entry is granted ([`super::caps::Grants::lookup`]): the
//! addresses the runner resolved when the shard started, and nothing else.
//! No resolver is asked for a name the plan does not grant (a lookup could
//! carry data out), and a name cannot be made to point elsewhere later
//! (DNS rebinding): connections are checked against the same addresses.
//!
//! `wasmtime-wasi`'s own lookups ask the system's resolver for any name, so
//! its definition of the interface is replaced by this one.

use std::net::IpAddr;

use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress};
use wasmtime_wasi::p2::{DynPollable, Network, Pollable};

use super::host::HostState;

/// The interface, at the version `wasmtime-wasi` defines it (guests
/// importing any 0.2 version are linked to it).
const IP_NAME_LOOKUP: &str = "wasi:sockets/ip-name-lookup@0.2.12";

/// The answer of one lookup, read address by address.
pub struct Lookup(std::vec::IntoIter<IpAddr>);

#[async_trait::async_trait]
impl Pollable for Lookup {
    /// Answers are known when the lookup is made: always ready.
    async fn ready(&mut self) {}
}

/// Replaces `wasmtime-wasi`'s lookups in `linker` with the granted ones.
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
    linker.allow_shadowing(false);
    Ok(())
}
