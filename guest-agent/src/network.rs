//! The guest's network, as the host's interfaces it stands for are configured: each virtio-net
//! interface is found by its MAC and given the MTU, addresses and routes the host sent, and
//! the guest's loopback comes up. The container shares this network namespace.

use anyhow::{bail, Context, Result};
use strata_agent_protocol::GuestInterface;
use strata_linux::net::netlink::{Netlink, Route};

fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn configure(interfaces: &[GuestInterface]) -> Result<()> {
    let mut nl = Netlink::open()?;
    let links = nl.links()?;
    for lo in links.iter().filter(|l| l.loopback) {
        nl.set_up(lo.index)?;
    }
    for want in interfaces {
        let Some(link) = links.iter().find(|l| l.mac == Some(want.mac)) else {
            bail!(
                "the guest has no network interface with MAC {}",
                mac_text(&want.mac)
            );
        };
        let what = || format!("guest interface {} ({})", link.name, mac_text(&want.mac));
        if let Some(mtu) = want.mtu {
            nl.set_mtu(link.index, mtu).with_context(what)?;
        }
        for (ip, prefix) in &want.addresses {
            nl.add_address(link.index, *ip, *prefix)
                .with_context(what)?;
        }
        nl.set_up(link.index).with_context(what)?;
        // Routes to a gateway need the route to its subnet, which the addresses made: those
        // without a gateway go first.
        let mut routes: Vec<Route> = want
            .routes
            .iter()
            .map(|r| Route {
                destination: r.destination,
                gateway: r.gateway,
                kernel: false,
                metric: r.metric,
            })
            .collect();
        routes.sort_by_key(|r| r.gateway.is_some());
        for r in &routes {
            nl.add_route(link.index, r).with_context(what)?;
        }
    }
    Ok(())
}

/// Sets `net.*` sysctls in the guest's network namespace (the container's, when the host's
/// interfaces were carried in): a key of dotted words only, nothing that leaves /proc/sys/net.
pub fn set_sysctls(sysctls: &std::collections::BTreeMap<String, String>) -> Result<()> {
    for (key, value) in sysctls {
        let words: Vec<&str> = key.split('.').collect();
        let plain = |w: &&str| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if words.first() != Some(&"net") || !words.iter().all(plain) {
            bail!("bad network sysctl {key:?} from the host");
        }
        let path = format!("/proc/sys/{}", words.join("/"));
        std::fs::write(&path, value).with_context(|| format!("setting {key}"))?;
    }
    Ok(())
}
