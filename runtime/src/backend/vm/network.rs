//! The VM's network, from the network namespace the bundle names (made by CNI for a
//! Kubernetes pod, by netavark or CNI for podman, by `ip netns add`): for each of its
//! interfaces but loopback, a tap device in that namespace, with tc redirecting every frame
//! between the interface and the tap both ways (Kata's "tcfilter" model), handed to the VM as
//! a virtio-net device with the interface's MAC; the guest gets the interface's MTU, addresses
//! and routes.
//!
//! In three steps, so that nothing is ever left that `delete` does not know of: [`survey`]
//! reads the namespace and refuses what cannot be taken over, changing nothing; the caller
//! records it (the namespace's identity and its interfaces); [`attach`] makes the taps and
//! redirects. The taps go away with the VM (their last fd closes); [`detach`] removes the
//! redirects, and only in the namespace recorded, whatever the path names by then.

use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::{bail, Context, Result};
use oci_spec::runtime::LinuxNamespaceType;
use serde::{Deserialize, Serialize};
use strata_agent_protocol::{GuestInterface, GuestRoute};
use strata_linux::net::netlink::Netlink;
use strata_linux::net::tap;

/// A tap the VM gets, for the guest interface with this MAC.
pub struct Nic {
    pub tap: OwnedFd,
    pub mac: [u8; 6],
    pub mtu: Option<u32>,
}

/// Which namespace a path named when it was surveyed (its nsfs inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsId {
    pub dev: u64,
    pub ino: u64,
}

/// An interface to take over, as it was read.
struct Planned {
    index: u32,
    name: String,
    guest: GuestInterface,
}

/// What [`survey`] found; nothing is changed yet.
pub struct Survey {
    ns: OwnedFd,
    pub id: NsId,
    planned: Vec<Planned>,
}

impl Survey {
    /// The interfaces [`attach`] will redirect (what the caller records for [`detach`]).
    pub fn links(&self) -> Vec<u32> {
        self.planned.iter().map(|p| p.index).collect()
    }
}

pub struct HostNetwork {
    pub nics: Vec<Nic>,
    pub guest: Vec<GuestInterface>,
    pub redirects: Redirects,
}

/// The redirects made in one namespace, held by its fd: the VM's monitor removes them when
/// the VM has ended, in that namespace whatever its path names by then.
pub struct Redirects {
    ns: OwnedFd,
    links: Vec<u32>,
}

impl Redirects {
    pub fn remove(&self) {
        if !self.links.is_empty() {
            let _ = tap::in_netns(&self.ns, || remove_redirects(&self.links));
        }
    }
}

const TAP_PREFIX: &str = "strata-tap";
/// QEMU's microvm has eight virtio-mmio slots, two of which are the rootfs and vsock.
pub const MAX_INTERFACES: usize = 6;

fn ns_id(file: &std::fs::File) -> Option<NsId> {
    use std::os::unix::fs::MetadataExt;
    file.metadata().ok().map(|m| NsId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

fn id_of_path(path: &str) -> Option<NsId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| NsId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// Whether `id` is the host's network namespace: the runtime's own, or the initial one
/// (init's, or kthreadd's where init's cannot be read, as on machines whose init is not
/// dumpable). When the initial namespace cannot be told at all, the answer is yes.
fn is_hosts(id: NsId, entered: bool) -> bool {
    // The runtime's own namespace is the host's, unless the caller entered the container's
    // (the monitor, after host hooks made it).
    if !entered && id_of_path("/proc/self/ns/net") == Some(id) {
        return true;
    }
    let initial: Vec<NsId> = ["/proc/1/ns/net", "/proc/2/ns/net"]
        .iter()
        .filter_map(|p| id_of_path(p))
        .collect();
    initial.is_empty() || initial.contains(&id)
}

fn open(netns: &Path) -> Result<(OwnedFd, NsId)> {
    let ns = strata_linux::namespaces::open_ns(LinuxNamespaceType::Network, netns)?;
    let id = ns_id(&ns.file).context("reading the network namespace's inode")?;
    Ok((OwnedFd::from(ns.file), id))
}

/// Reads the namespace `netns` names and what its interfaces would become in the guest;
/// refuses the host's namespace, one another VM (or tool) already redirects, and interfaces
/// the guest could not tell apart.
pub fn survey(netns: &Path) -> Result<Survey> {
    survey_with(netns, false)
}

/// [`survey`] of the namespace the caller is in (it left the runtime's for the container's).
pub fn survey_entered() -> Result<Survey> {
    survey_with(Path::new("/proc/self/ns/net"), true)
}

fn survey_with(netns: &Path, entered: bool) -> Result<Survey> {
    let what = || format!("vm backend: the network namespace {}", netns.display());
    let (ns, id) = open(netns).with_context(what)?;
    if is_hosts(id, entered) {
        bail!(
            "vm backend: linux.namespaces: {} is the host's own network namespace; a VM can \
             only take over the interfaces of a namespace made for the container",
            netns.display()
        );
    }
    let planned = tap::in_netns(&ns, read_planned)
        .context("entering the network namespace")
        .and_then(|r| r)
        .with_context(what)?;
    Ok(Survey { ns, id, planned })
}

fn read_planned() -> Result<Vec<Planned>> {
    let mut nl = Netlink::open()?;
    let links = nl.links()?;
    if let Some(t) = links.iter().find(|l| l.name.starts_with(TAP_PREFIX)) {
        bail!("another VM already uses it (it has {})", t.name);
    }
    let mut planned: Vec<Planned> = Vec::new();
    for link in links.iter().filter(|l| !l.loopback) {
        // Without a MAC (tun, ipip) there is no Ethernet to carry.
        let Some(mac) = link.mac else { continue };
        if planned.iter().any(|p| p.guest.mac == mac) {
            bail!(
                "interfaces {} and {} have the same MAC; the guest finds its interfaces by MAC",
                planned
                    .iter()
                    .find(|p| p.guest.mac == mac)
                    .map_or("?", |p| p.name.as_str()),
                link.name
            );
        }
        if nl.has_ingress_qdisc(link.index)? {
            bail!(
                "interface {} already has an ingress qdisc (another tool redirects it)",
                link.name
            );
        }
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
                metric: r.metric,
            })
            .collect();
        planned.push(Planned {
            index: link.index,
            name: link.name.clone(),
            guest: GuestInterface {
                mac,
                mtu: link.mtu,
                addresses,
                routes,
            },
        });
    }
    if planned.len() > MAX_INTERFACES {
        bail!(
            "{} interfaces; a VM takes at most {MAX_INTERFACES}",
            planned.len()
        );
    }
    Ok(planned)
}

/// Makes the taps and the redirects the survey planned. On failure the redirects made so far
/// are removed again, and the taps close.
pub fn attach(s: Survey) -> Result<HostNetwork> {
    let mut done = Vec::new();
    let result = tap::in_netns(&s.ns, || attach_here(&s.planned, &mut done))
        .context("entering the network namespace")
        .and_then(|r| r);
    if result.is_err() && !done.is_empty() {
        let _ = tap::in_netns(&s.ns, || remove_redirects(&done));
    }
    let (nics, guest) = result.context("vm backend: the container's network")?;
    Ok(HostNetwork {
        nics,
        guest,
        redirects: Redirects {
            ns: s.ns,
            links: done,
        },
    })
}

fn attach_here(
    planned: &[Planned],
    done: &mut Vec<u32>,
) -> Result<(Vec<Nic>, Vec<GuestInterface>)> {
    let mut nl = Netlink::open()?;
    let taps = (0..planned.len())
        .map(|i| tap::open(&format!("{TAP_PREFIX}{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    // One listing for every tap's index.
    let links = nl.links()?;
    let (mut nics, mut guest) = (Vec::new(), Vec::new());
    for (i, (p, tap)) in planned.iter().zip(taps).enumerate() {
        let name = format!("{TAP_PREFIX}{i}");
        let tap_index = links
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.index)
            .with_context(|| format!("the tap {name} vanished"))?;
        if let Some(mtu) = p.guest.mtu {
            nl.set_mtu(tap_index, mtu)?;
        }
        nl.set_up(tap_index)?;
        nl.add_ingress_qdisc(p.index)
            .with_context(|| format!("interface {}", p.name))?;
        done.push(p.index);
        nl.add_redirect(p.index, tap_index)?;
        nl.add_ingress_qdisc(tap_index)?;
        nl.add_redirect(tap_index, p.index)?;
        nics.push(Nic {
            tap,
            mac: p.guest.mac,
            mtu: p.guest.mtu,
        });
        guest.push(p.guest.clone());
    }
    Ok((nics, guest))
}

fn remove_redirects(links: &[u32]) -> Result<()> {
    let mut nl = Netlink::open()?;
    for index in links {
        let _ = nl.del_ingress_qdisc(*index);
    }
    Ok(())
}

/// Removes the redirects of `links` in the namespace `netns` names, if it still is the one
/// surveyed (`id`): a path re-pointed since, or a namespace deleted and made again, is left
/// alone. A namespace that is gone took the redirects with it.
pub fn detach(netns: &Path, id: NsId, links: &[u32]) {
    if links.is_empty() {
        return;
    }
    let Ok((ns, now)) = open(netns) else { return };
    if now != id || is_hosts(now, false) {
        tracing::debug!(
            "{} names another network namespace now; its interfaces are left alone",
            netns.display()
        );
        return;
    }
    let _ = tap::in_netns(&ns, || remove_redirects(links));
}

/// `aa:bb:cc:dd:ee:ff`, as strata-vmm and QEMU take a MAC.
pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
