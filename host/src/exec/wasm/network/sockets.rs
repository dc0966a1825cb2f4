//! `wasi:sockets` for a run: TCP client connections only, to what the job
//! lists as `tcp://host:port`, and name lookups only of those hosts.
//!
//! The guest never asks the system resolver: `wasi:sockets/ip-name-lookup`
//! is this module's own implementation (shadowing wasmtime-wasi's), which
//! resolves a name only if a `tcp://` entry names it, keeps the addresses
//! the worker's policy allows, and remembers which name each address came
//! from. A connect is then allowed only to an address this run's own lookup
//! returned for a listed name and port (or to an address the job lists
//! literally): a guest cannot make the host connect anywhere else, and a
//! name cannot be rebound between the check and the connection. Binding,
//! listening, accepting and UDP are refused. Every lookup and connect lands
//! in the ledger; bytes over TCP are not seen by the host and not counted.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::SocketError;
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{self, ResolveAddressStream};
use wasmtime_wasi::p2::bindings::sockets::network::{self, ErrorCode, IpAddress, Network};
use wasmtime_wasi::runtime::{AbortOnDropJoinHandle, spawn};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi_io::poll::{DynPollable, Pollable, subscribe};

use super::connect::allowed_addresses;
use super::{Call, Refusal, RunNetwork};
use crate::job::EgressScheme;
use crate::run::EgressKind;

/// Names this run's lookups resolved, by address.
pub(in crate::exec::wasm) type Resolved = Arc<Mutex<HashMap<IpAddr, HashSet<String>>>>;

/// The `socket_addr_check` of a run's WASI context: implicit binds (the
/// wildcard address a connect binds to) pass, connects are checked, the rest
/// is refused.
pub(in crate::exec::wasm) fn tcp_connect_check(
    network: Arc<RunNetwork>,
    resolved: Resolved,
) -> impl Fn(SocketAddr, SocketAddrUse) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + Sync>> + Send + Sync + 'static
{
    move |address, use_| {
        let allowed = match use_ {
            SocketAddrUse::TcpBind => address.ip().is_unspecified() && address.port() == 0,
            SocketAddrUse::TcpConnect => connect_allowed(&network, &resolved, address),
            _ => false,
        };
        Box::pin(std::future::ready(allowed))
    }
}

/// Decides one TCP connect and writes its ledger entry.
fn connect_allowed(network: &Arc<RunNetwork>, resolved: &Resolved, address: SocketAddr) -> bool {
    let names: Vec<String> = crate::sync::lock(resolved)
        .get(&address.ip())
        .map(|names| names.iter().cloned().collect())
        .unwrap_or_default();
    let literal = address.ip().to_string();
    // A listed name this run resolved to this address, or a listed literal.
    let host = names
        .iter()
        .find(|name| network.grant().lists(EgressScheme::Tcp, name, address.port()))
        .cloned()
        .or_else(|| {
            network
                .grant()
                .lists(EgressScheme::Tcp, &literal, address.port())
                .then(|| literal.clone())
        });
    let target = format!("tcp://{}:{}", host.as_deref().unwrap_or(&literal), address.port());
    let mut call = Call::start(network, EgressKind::Tcp, target);
    call.entry().address = Some(address.to_string());
    let Some(host) = host else {
        call.refuse(&Refusal::NotListed(format!(
            "{address} is not the address of a tcp:// entry of the job's egress (names are looked up through the host)"
        )));
        return false;
    };
    // A literal entry still meets the worker's address policy.
    if let Err(reason) = network.grant().policy.check(&host, address.ip()) {
        call.refuse(&Refusal::Address(reason.to_string()));
        return false;
    }
    match network.admit() {
        Ok(_permit) => {
            call.finish();
            true
        }
        Err(refusal) => {
            call.refuse(&refusal);
            false
        }
    }
}

/// The store data `wasi:sockets/ip-name-lookup` works on.
pub(in crate::exec::wasm) struct NameLookupView<'a> {
    pub(in crate::exec::wasm) table: &'a mut ResourceTable,
    pub(in crate::exec::wasm) network: &'a Arc<RunNetwork>,
    pub(in crate::exec::wasm) resolved: &'a Resolved,
}

/// Marks [`NameLookupView`] as the data of the lookup bindings.
pub(in crate::exec::wasm) struct NameLookup;

impl HasData for NameLookup {
    type Data<'a> = NameLookupView<'a>;
}

/// Replaces wasmtime-wasi's `wasi:sockets/ip-name-lookup` in `linker`.
pub(in crate::exec::wasm) fn add_name_lookup_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> NameLookupView<'_>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let added = ip_name_lookup::add_to_linker::<T, NameLookup>(linker, view);
    linker.allow_shadowing(false);
    added
}

/// One lookup in progress or done. Stored in the resource table under the
/// handle the guest holds as a `resolve-address-stream`.
struct Lookup {
    state: LookupState,
}

enum LookupState {
    Pending(AbortOnDropJoinHandle<Result<Vec<IpAddr>, ErrorCode>>),
    Ready(Result<std::vec::IntoIter<IpAddr>, ErrorCode>),
}

impl Lookup {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let LookupState::Pending(handle) = &mut self.state {
            match std::pin::Pin::new(handle).poll(cx) {
                Poll::Ready(result) => self.state = LookupState::Ready(result.map(Vec::into_iter)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(())
    }
}

#[async_trait::async_trait]
impl Pollable for Lookup {
    async fn ready(&mut self) {
        std::future::poll_fn(|cx| self.poll(cx)).await;
    }
}

/// The guest's handle type for a lookup, over this module's own state.
fn own(handle: &Resource<ResolveAddressStream>) -> Resource<Lookup> {
    if handle.owned() {
        Resource::new_own(handle.rep())
    } else {
        Resource::new_borrow(handle.rep())
    }
}

/// Needed by the lookup bindings for their error type; the same as
/// wasmtime-wasi's own (errors that are not a code trap).
impl network::Host for NameLookupView<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        error.downcast()
    }

    fn network_error_code(
        &mut self,
        err: Resource<wasmtime_wasi_io::streams::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        let err = self.table.get(&err)?;
        Ok(err.downcast_ref::<std::io::Error>().map(ErrorCode::from))
    }
}

impl network::HostNetwork for NameLookupView<'_> {
    fn drop(&mut self, network: Resource<Network>) -> wasmtime::Result<()> {
        self.table.delete(network)?;
        Ok(())
    }
}

impl ip_name_lookup::Host for NameLookupView<'_> {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> Result<Resource<ResolveAddressStream>, SocketError> {
        // The network resource is the capability to look names up at all.
        self.table.get(&network)?;
        let mut call = Call::start(self.network, EgressKind::Lookup, name.clone());
        let grant = self.network.grant();
        let listed = grant.targets.iter().any(|target| target.names_host(&name));
        if !listed {
            call.refuse(&Refusal::NotListed(format!(
                "{name} is not the host of a tcp:// entry of the job's egress"
            )));
            return Err(ErrorCode::NameUnresolvable.into());
        }
        let policy = grant.policy.clone();
        let resolved = Arc::clone(self.resolved);
        let handle = spawn(async move {
            // The port does not matter to the lookup; the connect is checked
            // with its own.
            match allowed_addresses(&policy, &name, 0).await {
                Ok(addresses) => {
                    let addresses: Vec<IpAddr> = addresses.iter().map(SocketAddr::ip).collect();
                    let mut known = crate::sync::lock(&resolved);
                    for address in &addresses {
                        known.entry(*address).or_default().insert(name.to_ascii_lowercase());
                    }
                    call.entry().address =
                        Some(addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "));
                    call.finish();
                    Ok(addresses)
                }
                Err(refusal) => {
                    let code = match refusal {
                        Refusal::Unresolvable(_) => ErrorCode::NameUnresolvable,
                        _ => ErrorCode::PermanentResolverFailure,
                    };
                    call.refuse(&refusal);
                    Err(code)
                }
            }
        });
        let lookup = self.table.push(Lookup {
            state: LookupState::Pending(handle),
        })?;
        Ok(Resource::new_own(lookup.rep()))
    }
}

impl ip_name_lookup::HostResolveAddressStream for NameLookupView<'_> {
    fn resolve_next_address(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> Result<Option<IpAddress>, SocketError> {
        let lookup = self.table.get_mut(&own(&stream))?;
        if lookup.poll(&mut Context::from_waker(Waker::noop())).is_pending() {
            return Err(ErrorCode::WouldBlock.into());
        }
        match &mut lookup.state {
            LookupState::Ready(Ok(addresses)) => Ok(addresses.next().map(IpAddress::from)),
            LookupState::Ready(Err(code)) => Err((*code).into()),
            LookupState::Pending(_) => Err(ErrorCode::WouldBlock.into()),
        }
    }

    fn subscribe(&mut self, stream: Resource<ResolveAddressStream>) -> wasmtime::Result<Resource<DynPollable>> {
        subscribe(self.table, own(&stream))
    }

    fn drop(&mut self, stream: Resource<ResolveAddressStream>) -> wasmtime::Result<()> {
        self.table.delete(own(&stream))?;
        Ok(())
    }
}
