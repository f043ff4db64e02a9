//! A blocking rtnetlink connection (netlink-packet-route messages over a netlink-sys socket),
//! with the few requests strata makes: read the interfaces of a network namespace with their
//! addresses and routes, bring interfaces up, give them addresses, routes and an MTU, and
//! redirect every frame between two interfaces with tc (an ingress qdisc and a u32 filter with
//! a mirred action, both ways). A socket serves the network namespace it was opened in.

use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirror, TcActionMirrorOption, TcActionOption,
    TcActionType, TcAttribute, TcFilterU32, TcFilterU32Option, TcHandle, TcMessage, TcMirror,
    TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Socket(std::io::Error),
    // Not named `source`: the message already says it, and a chained error would repeat it.
    #[error("netlink: {what}: {error}")]
    Request { what: String, error: std::io::Error },
    #[error("netlink: {what}: unreadable reply: {why}")]
    Reply { what: String, why: String },
}

/// An interface as read from its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub loopback: bool,
}

/// An address of an interface, with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub ip: IpAddr,
    pub prefix: u8,
    /// Link-local (fe80::/10, 169.254/16 scope link): the guest makes its own from the MAC.
    pub link_scope: bool,
}

/// A route of the main table through an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// None for the default route.
    pub destination: Option<(IpAddr, u8)>,
    pub gateway: Option<IpAddr>,
    /// Made by the kernel for an address's own subnet: it comes back with the address.
    pub kernel: bool,
    /// The route's priority (`metric`): two default routes differ by it.
    pub metric: Option<u32>,
}

pub struct Netlink {
    socket: Socket,
    sequence: u32,
}

fn family(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn route_ip(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

impl Netlink {
    /// A connection to the kernel for the calling thread's network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        socket.bind_auto().map_err(NetlinkError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Socket)?;
        Ok(Netlink {
            socket,
            sequence: 0,
        })
    }

    /// Sends one request and collects the messages of its reply up to the ACK (or DONE for a
    /// dump); a NACK is the error.
    fn request(
        &mut self,
        what: &str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let req_err = |error| NetlinkError::Request {
            what: what.to_string(),
            error,
        };
        let bad = |why: String| NetlinkError::Reply {
            what: what.to_string(),
            why,
        };
        self.sequence = self.sequence.wrapping_add(1);
        let mut packet =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(message));
        packet.header.flags = NLM_F_REQUEST | flags;
        packet.header.sequence_number = self.sequence;
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(req_err)?;
        let mut out = Vec::new();
        let mut rx = vec![0u8; 64 * 1024];
        loop {
            let size = self.socket.recv(&mut &mut rx[..], 0).map_err(req_err)?;
            let mut offset = 0;
            while offset < size {
                let msg: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&rx[offset..size])
                        .map_err(|e| bad(e.to_string()))?;
                let len = msg.header.length as usize;
                if msg.header.sequence_number == self.sequence {
                    match msg.payload {
                        NetlinkPayload::Done(_) => return Ok(out),
                        NetlinkPayload::Error(e) => {
                            return match e.code {
                                None => Ok(out),
                                Some(_) => Err(req_err(e.to_io())),
                            }
                        }
                        NetlinkPayload::InnerMessage(m) => {
                            out.push(m);
                            if flags & NLM_F_DUMP == 0 && flags & NLM_F_ACK == 0 {
                                return Ok(out);
                            }
                        }
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }

    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let replies = self.request(
            "listing interfaces",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .map(|l| {
                let mut link = Link {
                    index: l.header.index,
                    name: String::new(),
                    mac: None,
                    mtu: None,
                    loopback: l.header.flags.contains(LinkFlags::Loopback),
                };
                for a in l.attributes {
                    match a {
                        LinkAttribute::IfName(n) => link.name = n,
                        LinkAttribute::Address(m) => link.mac = <[u8; 6]>::try_from(m).ok(),
                        LinkAttribute::Mtu(m) => link.mtu = Some(m),
                        _ => {}
                    }
                }
                link
            })
            .collect())
    }

    pub fn addresses(&mut self, index: u32) -> Result<Vec<Address>, NetlinkError> {
        let replies = self.request(
            "listing addresses",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => Some(a),
                _ => None,
            })
            .filter_map(|a| {
                let ip = a.attributes.iter().find_map(|attr| match attr {
                    // On a point-to-point link Address is the peer's; Local is ours.
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                });
                let ip = ip.or_else(|| {
                    a.attributes.iter().find_map(|attr| match attr {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                })?;
                Some(Address {
                    ip,
                    prefix: a.header.prefix_len,
                    link_scope: a.header.scope == AddressScope::Link,
                })
            })
            .collect())
    }

    /// Routes of the main table that leave through `index`.
    pub fn routes(&mut self, index: u32) -> Result<Vec<Route>, NetlinkError> {
        let mut routes = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = fam;
            let replies = self.request(
                "listing routes",
                RouteNetlinkMessage::GetRoute(msg),
                NLM_F_DUMP,
            )?;
            for m in replies {
                let RouteNetlinkMessage::NewRoute(r) = m else {
                    continue;
                };
                let table = r
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        RouteAttribute::Table(t) => Some(*t),
                        _ => None,
                    })
                    .unwrap_or(u32::from(r.header.table));
                let oif = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                });
                if table != u32::from(RouteHeader::RT_TABLE_MAIN)
                    || oif != Some(index)
                    || r.header.kind != RouteType::Unicast
                {
                    continue;
                }
                let dest = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(d) => route_ip(d),
                    _ => None,
                });
                let gateway = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(g) => route_ip(g),
                    _ => None,
                });
                let metric = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Priority(p) => Some(*p),
                    _ => None,
                });
                routes.push(Route {
                    destination: dest.map(|d| (d, r.header.destination_prefix_length)),
                    gateway,
                    kernel: r.header.protocol == RouteProtocol::Kernel,
                    metric,
                });
            }
        }
        Ok(routes)
    }

    fn link_change(
        &mut self,
        what: &str,
        index: u32,
        f: impl FnOnce(&mut LinkMessage),
    ) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        f(&mut msg);
        self.request(what, RouteNetlinkMessage::SetLink(msg), NLM_F_ACK)
            .map(drop)
    }

    pub fn set_up(&mut self, index: u32) -> Result<(), NetlinkError> {
        self.link_change("bringing an interface up", index, |m| {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        })
    }

    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        self.link_change(&format!("setting MTU {mtu}"), index, |m| {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        })
    }

    pub fn add_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> Result<(), NetlinkError> {
        let mut msg = AddressMessage::default();
        msg.header.family = family(&ip);
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(ip));
        msg.attributes.push(AddressAttribute::Address(ip));
        self.request(
            &format!("adding address {ip}/{prefix}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    pub fn add_route(&mut self, index: u32, route: &Route) -> Result<(), NetlinkError> {
        let ip = route
            .destination
            .map(|d| d.0)
            .or(route.gateway)
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(&ip);
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = if route.gateway.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        if let Some((dest, prefix)) = route.destination {
            msg.header.destination_prefix_length = prefix;
            msg.attributes
                .push(RouteAttribute::Destination(dest.into()));
        }
        if let Some(gw) = route.gateway {
            msg.attributes.push(RouteAttribute::Gateway(gw.into()));
        }
        msg.attributes.push(RouteAttribute::Oif(index));
        if let Some(metric) = route.metric {
            msg.attributes.push(RouteAttribute::Priority(metric));
        }
        let what = match route.destination {
            Some((d, p)) => format!("adding the route to {d}/{p}"),
            None => "adding the default route".to_string(),
        };
        self.request(
            &what,
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    fn qdisc_message(index: u32) -> TcMessage {
        let mut msg = TcMessage::with_index(index as i32);
        msg.header.parent = TcHandle::INGRESS;
        msg.header.handle = TcHandle {
            major: 0xffff,
            minor: 0,
        };
        msg.attributes.push(TcAttribute::Kind("ingress".into()));
        msg
    }

    /// Whether `index` has an ingress (or clsact) qdisc, which would be another tool's.
    pub fn has_ingress_qdisc(&mut self, index: u32) -> Result<bool, NetlinkError> {
        let replies = self.request(
            "listing qdiscs",
            RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies.into_iter().any(|m| match m {
            RouteNetlinkMessage::NewQueueDiscipline(q) => {
                q.header.index == index as i32 && q.header.parent == TcHandle::INGRESS
            }
            _ => false,
        }))
    }

    pub fn add_ingress_qdisc(&mut self, index: u32) -> Result<(), NetlinkError> {
        self.request(
            "adding an ingress qdisc",
            RouteNetlinkMessage::NewQueueDiscipline(Self::qdisc_message(index)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Removes the ingress qdisc of `index`, and with it its filters.
    pub fn del_ingress_qdisc(&mut self, index: u32) -> Result<(), NetlinkError> {
        self.request(
            "removing an ingress qdisc",
            RouteNetlinkMessage::DelQueueDiscipline(Self::qdisc_message(index)),
            NLM_F_ACK,
        )
        .map(drop)
    }

    /// Every frame arriving on `from` leaves by `to` (`tc filter add dev FROM parent ffff:
    /// protocol all u32 match u8 0 0 action mirred egress redirect dev TO`). `from` needs an
    /// ingress qdisc.
    pub fn add_redirect(&mut self, from: u32, to: u32) -> Result<(), NetlinkError> {
        const ETH_P_ALL: u16 = 0x0003;
        let mut msg = TcMessage::with_index(from as i32);
        msg.header.parent = TcHandle {
            major: 0xffff,
            minor: 0,
        };
        // priority in the upper half, protocol (network order) in the lower.
        msg.header.info = (1u32 << 16) | u32::from(ETH_P_ALL.to_be());
        let mut selector = TcU32Selector::default();
        selector.flags = TcU32SelectorFlags::Terminal;
        selector.nkeys = 1;
        selector.keys = vec![TcU32Key::default()];
        let mut mirror = TcMirror::default();
        mirror.generic.action = TcActionType::Stolen;
        mirror.eaction = TcMirrorActionType::EgressRedir;
        mirror.ifindex = to;
        let mut action = TcAction::default();
        action.attributes = vec![
            TcActionAttribute::Kind(TcActionMirror::KIND.into()),
            TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
                mirror,
            ))]),
        ];
        msg.attributes
            .push(TcAttribute::Kind(TcFilterU32::KIND.into()));
        msg.attributes.push(TcAttribute::Options(vec![
            TcOption::U32(TcFilterU32Option::Selector(selector)),
            TcOption::U32(TcFilterU32Option::Action(vec![action])),
        ]));
        self.request(
            "adding a redirect filter",
            RouteNetlinkMessage::NewTrafficFilter(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tap;
    use std::io::{Read, Write};
    use std::net::Ipv4Addr;

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// In a network namespace of its own: two taps, one configured and read back, frames
    /// arriving on one redirected out of the other, the redirect gone with the qdisc.
    #[test]
    fn configures_interfaces_and_redirects_frames_between_them() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        std::thread::spawn(|| {
            // SAFETY: unshare(CLONE_NEWNET) changes only this thread's namespace; it takes
            // no pointers.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let a = tap::open("strata-t0").unwrap();
            let b = tap::open("strata-t1").unwrap();
            let mut nl = Netlink::open().unwrap();
            let links = nl.links().unwrap();
            let find = |name: &str| links.iter().find(|l| l.name == name).unwrap().clone();
            let (t0, t1) = (find("strata-t0"), find("strata-t1"));
            assert!(find("lo").loopback && !t0.loopback);
            assert!(t0.mac.is_some());
            for l in [&t0, &t1] {
                nl.set_up(l.index).unwrap();
            }
            nl.set_mtu(t0.index, 1400).unwrap();
            let ip = IpAddr::V4(Ipv4Addr::new(10, 9, 0, 2));
            nl.add_address(t0.index, ip, 24).unwrap();
            let gw = IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1));
            let default = Route {
                destination: None,
                gateway: Some(gw),
                kernel: false,
                metric: Some(100),
            };
            nl.add_route(t0.index, &default).unwrap();
            // A second default route, told apart by its metric.
            let backup = Route {
                metric: Some(200),
                ..default
            };
            nl.add_route(t0.index, &backup).unwrap();
            let other = Route {
                destination: Some((IpAddr::V4(Ipv4Addr::new(192, 168, 77, 0)), 24)),
                gateway: Some(gw),
                kernel: false,
                metric: None,
            };
            nl.add_route(t0.index, &other).unwrap();
            assert_eq!(
                nl.links()
                    .unwrap()
                    .iter()
                    .find(|l| l.index == t0.index)
                    .unwrap()
                    .mtu,
                Some(1400)
            );
            let addrs = nl.addresses(t0.index).unwrap();
            assert!(
                addrs.contains(&Address {
                    ip,
                    prefix: 24,
                    link_scope: false
                }),
                "{addrs:?}"
            );
            let routes = nl.routes(t0.index).unwrap();
            assert!(
                routes.contains(&default) && routes.contains(&backup),
                "{routes:?}"
            );
            // The kernel reports an IPv4 route added without a metric as metric 0.
            assert!(
                routes.iter().any(|r| r.destination == other.destination
                    && r.gateway == other.gateway
                    && r.metric.unwrap_or(0) == 0),
                "{routes:?}"
            );
            assert!(
                routes.iter().any(|r| r.kernel
                    && r.destination == Some((IpAddr::V4(Ipv4Addr::new(10, 9, 0, 0)), 24))),
                "{routes:?}"
            );
            assert!(
                nl.add_address(t0.index, ip, 24).is_err(),
                "an existing address"
            );

            assert!(!nl.has_ingress_qdisc(t0.index).unwrap());
            nl.add_ingress_qdisc(t0.index).unwrap();
            assert!(nl.has_ingress_qdisc(t0.index).unwrap());
            assert!(!nl.has_ingress_qdisc(t1.index).unwrap());
            nl.add_redirect(t0.index, t1.index).unwrap();
            // A frame written to t0's fd arrives on t0 and must leave by t1.
            let mut frame = vec![0xffu8; 6];
            frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 9]);
            frame.extend_from_slice(&[0x88, 0xb5]); // local experimental ethertype
            frame.extend_from_slice(b"strata redirect test payload................");
            let (mut a, mut b) = (std::fs::File::from(a), std::fs::File::from(b));
            let got = read_frame_like(&mut a, &mut b, &frame);
            assert!(got, "the frame did not come out of the other tap");
            nl.del_ingress_qdisc(t0.index).unwrap();
            assert!(!nl.has_ingress_qdisc(t0.index).unwrap());
            assert!(
                !read_frame_like(&mut a, &mut b, &frame),
                "redirected after the qdisc went"
            );
        })
        .join()
        .unwrap();
    }

    /// Writes `frame` into `from` and looks for it on `to` for a second (the kernel may send
    /// its own frames, IPv6 router solicitations, out of `to` too).
    fn read_frame_like(from: &mut std::fs::File, to: &mut std::fs::File, frame: &[u8]) -> bool {
        use std::os::fd::AsRawFd;
        from.write_all(frame).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        let mut buf = vec![0u8; 4096];
        while std::time::Instant::now() < deadline {
            let mut pfd = libc::pollfd {
                fd: to.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd that lives across the call.
            if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
                continue;
            }
            let n = to.read(&mut buf).unwrap();
            if buf[..n] == *frame {
                return true;
            }
        }
        false
    }
}
