//! The netlink requests of the built-in bridge network (rtnetlink): the node's bridge,
//! one veth pair per pod, and the pod side's address and default route.
//!
//! Each call opens its own netlink sockets on a thread of its own with a small
//! current-thread runtime: a socket is bound to the network namespace of the thread that
//! opens it, so the pod-side socket is opened after the thread has entered the pod's
//! namespace, and the host-side one before.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{new_connection, Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::ipam::Subnet;
use super::{netns, NetworkError};

/// The pod side of every veth pair.
const POD_INTERFACE: &str = "eth0";

/// Creates `bridge` with each subnet's gateway address and brings it up; what already
/// exists is kept, so this is safe at every start.
pub fn ensure_bridge(bridge: &str, subnets: &[Subnet]) -> Result<(), NetworkError> {
    let bridge = bridge.to_string();
    let subnets = subnets.to_vec();
    on_netlink_thread(None, move |host, _| async move {
        let index = match link_index(&host, &bridge).await? {
            Some(index) => index,
            None => {
                let created = host
                    .link()
                    .add(LinkBridge::new(&bridge).build())
                    .execute()
                    .await;
                ignore_errno(created, Errno::EEXIST)
                    .map_err(netlink("create the bridge", &bridge))?;
                link_index(&host, &bridge)
                    .await?
                    .ok_or_else(|| NetworkError::Netlink {
                        what: format!("find the bridge {bridge} just created"),
                        source: rtnetlink::Error::RequestFailed,
                    })?
            }
        };
        for subnet in subnets {
            let added = add_address(&host, index, subnet.gateway(), subnet).await;
            ignore_errno(added, Errno::EEXIST).map_err(netlink("address the bridge", &bridge))?;
        }
        host.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(netlink("bring up the bridge", &bridge))
    })
}

/// Connects the namespace pinned at `netns` to `bridge` through a veth pair named
/// `host_veth` on the node's side and eth0 in the pod, with each of `addresses` (one per
/// subnet) and a default route per address family via the bridge. On failure the pair is
/// deleted again.
pub fn attach(
    bridge: &str,
    host_veth: &str,
    netns: &Path,
    addresses: &[(IpAddr, Subnet)],
) -> Result<(), NetworkError> {
    let (bridge, host_veth) = (bridge.to_string(), host_veth.to_string());
    let addresses = addresses.to_vec();
    let netns = netns.to_path_buf();
    let created = host_veth.clone();
    let result = on_netlink_thread(Some(netns.clone()), move |host, pod| async move {
        let Some(pod) = pod else {
            return Err(NetworkError::NotReady(
                "no netlink connection in the pod".to_string(),
            ));
        };
        let bridge_index = link_index(&host, &bridge)
            .await?
            .ok_or_else(|| NetworkError::NotReady(format!("the bridge {bridge} does not exist")))?;
        let namespace = std::fs::File::open(&netns)
            .map_err(|source| NetworkError::io("open", &netns, source))?;
        let peer = LinkUnspec::new_with_name(POD_INTERFACE)
            .setns_by_fd(std::os::fd::AsRawFd::as_raw_fd(&namespace))
            .build();
        let pair = LinkVeth::new(&host_veth, POD_INTERFACE)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        host.link()
            .add(pair)
            .execute()
            .await
            .map_err(netlink("create the veth pair", &host_veth))?;
        let host_index =
            link_index(&host, &host_veth)
                .await?
                .ok_or_else(|| NetworkError::Netlink {
                    what: format!("find the veth {host_veth} just created"),
                    source: rtnetlink::Error::RequestFailed,
                })?;
        host.link()
            .set(
                LinkUnspec::new_with_index(host_index)
                    .controller(bridge_index)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink("attach the veth to the bridge", &host_veth))?;

        let pod_index =
            link_index(&pod, POD_INTERFACE)
                .await?
                .ok_or_else(|| NetworkError::Netlink {
                    what: "find eth0 in the pod".to_string(),
                    source: rtnetlink::Error::RequestFailed,
                })?;
        for (address, subnet) in &addresses {
            add_address(&pod, pod_index, *address, *subnet)
                .await
                .map_err(netlink("address", POD_INTERFACE))?;
        }
        pod.link()
            .set(LinkUnspec::new_with_index(pod_index).up().build())
            .execute()
            .await
            .map_err(netlink("bring up", POD_INTERFACE))?;
        for (_, subnet) in &addresses {
            let default_route = match subnet.gateway() {
                IpAddr::V4(gateway) => RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(gateway)
                    .output_interface(pod_index)
                    .build(),
                IpAddr::V6(gateway) => RouteMessageBuilder::<Ipv6Addr>::new()
                    .gateway(gateway)
                    .output_interface(pod_index)
                    .build(),
            };
            pod.route()
                .add(default_route)
                .execute()
                .await
                .map_err(netlink("add the default route in", POD_INTERFACE))?;
        }
        Ok(())
    });
    if result.is_err() {
        let _ = delete_link(&created);
    }
    result
}

/// Adds `address` in `subnet` to link `index`. IPv6 addresses skip duplicate address
/// detection: the addresses come from our own allocation, and DAD would keep them
/// unusable ("tentative") for the first seconds of the pod's life.
async fn add_address(
    handle: &Handle,
    index: u32,
    address: IpAddr,
    subnet: Subnet,
) -> Result<(), rtnetlink::Error> {
    let mut request = handle.address().add(index, address, subnet.prefix());
    if address.is_ipv6() {
        let message = request.message_mut();
        message
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    request.execute().await
}

/// Deletes the link `name` (for a veth, both ends); deleting what is gone succeeds.
pub fn delete_link(name: &str) -> Result<(), NetworkError> {
    let name = name.to_string();
    on_netlink_thread(None, move |host, _| async move {
        let Some(index) = link_index(&host, &name).await? else {
            return Ok(());
        };
        let deleted = host.link().del(index).execute().await;
        ignore_errno(deleted, Errno::ENODEV).map_err(netlink("delete", &name))
    })
}

/// Runs `work` with a netlink connection in the node's namespace and, when `netns` is
/// given, one in that namespace, on a thread of its own.
fn on_netlink_thread<F, Fut>(netns: Option<PathBuf>, work: F) -> Result<(), NetworkError>
where
    F: FnOnce(Handle, Option<Handle>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), NetworkError>>,
{
    netns::on_own_thread(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|source| {
                NetworkError::io("start a runtime for", Path::new("netlink"), source)
            })?;
        runtime.block_on(async move {
            let host = connect()?;
            let pod = match &netns {
                Some(path) => {
                    netns::enter(path)?;
                    Some(connect()?)
                }
                None => None,
            };
            work(host, pod).await
        })
    })
}

fn connect() -> Result<Handle, NetworkError> {
    let (connection, handle, _) = new_connection()
        .map_err(|source| NetworkError::io("open", Path::new("a netlink socket"), source))?;
    tokio::spawn(connection);
    Ok(handle)
}

async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, NetworkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|link| link.header.index)),
        Err(err) if errno(&err) == Some(Errno::ENODEV) => Ok(None),
        Err(source) => Err(NetworkError::Netlink {
            what: format!("look up the link {name}"),
            source,
        }),
    }
}

fn errno(err: &rtnetlink::Error) -> Option<Errno> {
    match err {
        rtnetlink::Error::NetlinkError(message) => {
            message.to_io().raw_os_error().map(Errno::from_raw)
        }
        _ => None,
    }
}

/// `result`, with the error `tolerated` counted as success.
fn ignore_errno(
    result: Result<(), rtnetlink::Error>,
    tolerated: Errno,
) -> Result<(), rtnetlink::Error> {
    match result {
        Err(err) if errno(&err) == Some(tolerated) => Ok(()),
        other => other,
    }
}

fn netlink(what: &'static str, object: &str) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let what = format!("{what} {object}");
    move |source| NetworkError::Netlink { what, source }
}
