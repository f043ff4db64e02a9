//! The VM's network, from the network namespace the bundle names (made by CNI for a
//! Kubernetes pod, by netavark for podman, by Docker's hook): for each of its interfaces but
//! loopback, a tap device in that namespace, with tc redirecting every frame between the
//! interface and the tap both ways (Kata's "tcfilter" model), handed to the VM as a virtio-net
//! device with the interface's MAC; the guest gets the interface's MTU, addresses and routes.
//! The taps go away with the VM (the last fd closes); `detach` removes the redirects.

use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::{Context, Result};
use oci_spec::runtime::LinuxNamespaceType;
use strata_agent_protocol::{GuestInterface, GuestRoute};
use strata_linux::net::netlink::{Link, Netlink};
use strata_linux::net::tap;

/// A tap the VM gets, for the guest interface with this MAC.
pub struct Nic {
    pub tap: OwnedFd,
    pub mac: [u8; 6],
    pub mtu: Option<u32>,
}

pub struct HostNetwork {
    pub nics: Vec<Nic>,
    pub guest: Vec<GuestInterface>,
    /// Indexes of the namespace's interfaces that redirect to a tap (for `detach`).
    pub links: Vec<u32>,
}

const TAP_PREFIX: &str = "strata-tap";

/// Sets up the taps and redirects in `netns`; on failure nothing of it is left.
pub fn attach(netns: &Path) -> Result<HostNetwork> {
    let ns = strata_linux::namespaces::open_ns(LinuxNamespaceType::Network, netns)?;
    // The host's interfaces are never taken over: not the runtime's namespace, nor init's
    // (the host's, should strata itself run in another).
    if ns.is_runtimes || same_namespace(&ns.file, "/proc/1/ns/net") {
        anyhow::bail!(
            "vm backend: linux.namespaces: {} is the host's own network namespace; a VM can \
             only take over the interfaces of a namespace made for the container",
            netns.display()
        );
    }
    let file = OwnedFd::from(ns.file);
    let mut done = Vec::new();
    let result = tap::in_netns(&file, || attach_here(&mut done))
        .context("entering the container's network namespace")
        .and_then(|r| r);
    if result.is_err() && !done.is_empty() {
        let _ = tap::in_netns(&file, || remove_redirects(&done));
    }
    result.with_context(|| format!("vm backend: the network of {}", netns.display()))
}

fn same_namespace(file: &std::fs::File, path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        // Unreadable (podman runs the runtime without ptrace access to init): only the
        // runtime's own namespace, checked beside this, is known to be the host's.
        _ => false,
    }
}

fn attach_here(done: &mut Vec<u32>) -> Result<HostNetwork> {
    let mut nl = Netlink::open()?;
    let links: Vec<Link> = nl
        .links()?
        .into_iter()
        .filter(|l| !l.loopback && l.mac.is_some() && !l.name.starts_with(TAP_PREFIX))
        .collect();
    let mut net = HostNetwork {
        nics: Vec::new(),
        guest: Vec::new(),
        links: Vec::new(),
    };
    for (i, link) in links.iter().enumerate() {
        let Some(mac) = link.mac else { continue };
        let addresses = nl
            .addresses(link.index)?
            .into_iter()
            .filter(|a| !a.link_scope)
            .map(|a| (a.ip, a.prefix))
            .collect();
        let routes = nl
            .routes(link.index)?
            .into_iter()
            .filter(|r| !r.kernel)
            .map(|r| GuestRoute {
                destination: r.destination,
                gateway: r.gateway,
            })
            .collect();
        let name = format!("{TAP_PREFIX}{i}");
        let tap = tap::open(&name)?;
        let tap_index = nl
            .links()?
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.index)
            .with_context(|| format!("the tap {name} vanished"))?;
        if let Some(mtu) = link.mtu {
            nl.set_mtu(tap_index, mtu)?;
        }
        nl.set_up(tap_index)?;
        nl.add_ingress_qdisc(link.index).with_context(|| {
            format!(
                "interface {}: its ingress qdisc (is another VM or tool already redirecting it?)",
                link.name
            )
        })?;
        done.push(link.index);
        nl.add_redirect(link.index, tap_index)?;
        nl.add_ingress_qdisc(tap_index)?;
        nl.add_redirect(tap_index, link.index)?;
        net.links.push(link.index);
        net.nics.push(Nic {
            tap,
            mac,
            mtu: link.mtu,
        });
        net.guest.push(GuestInterface {
            mac,
            mtu: link.mtu,
            addresses,
            routes,
        });
    }
    Ok(net)
}

fn remove_redirects(links: &[u32]) -> Result<()> {
    let mut nl = Netlink::open()?;
    for index in links {
        let _ = nl.del_ingress_qdisc(*index);
    }
    Ok(())
}

/// Removes the redirects `attach` made (the taps went with the VM). A namespace that is gone
/// took them with it.
pub fn detach(netns: &Path, links: &[u32]) {
    if links.is_empty() {
        return;
    }
    let Ok(ns) = strata_linux::namespaces::open_ns(LinuxNamespaceType::Network, netns) else {
        return;
    };
    let file = OwnedFd::from(ns.file);
    let _ = tap::in_netns(&file, || remove_redirects(links));
}

/// `aa:bb:cc:dd:ee:ff`, as strata-vmm and QEMU take a MAC.
pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
