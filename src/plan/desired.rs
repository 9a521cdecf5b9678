//! Lowering the typed desired state to host objects: the bridge a network
//! wants, the domain definition an instance wants.
//!
//! Invariant: pure functions of the configuration (and of observed facts
//! passed in explicitly, such as whether KVM is usable); the same inputs
//! always give the same objects and the same spec hashes.

use crate::config::Configuration;
use crate::model::common::{sha, IpCidr};
use crate::model::disk::{Bus, DiskKind};
use crate::model::instance::{DomainType, Instance};
use crate::model::network::{NetType, Network};
use crate::model::port::Plug;
use crate::model::{Resource, Spec};
use crate::xml::domain::{self, CpuDef, DiskDef, DiskDevice, DomainDef, DomainKind, Marker, NicDef, NicSource};

/// Hex SHA-256 of a value's JSON form, cut to 16 characters. The JSON is
/// streamed into the hash, not built as a string first.
/// The DHCP range a nat or isolated network gets by default: the upper
/// half of its IPv4 subnet (without the broadcast address and the host's
/// own address); none for a subnet too small to halve.
pub fn default_dhcp_range(host: crate::model::common::IpCidr) -> Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)> {
    let std::net::IpAddr::V4(h) = host.addr else { return None };
    if host.prefix > 29 {
        return None;
    }
    let size = 1u32 << (32 - host.prefix);
    let net = u32::from(h) & !(size - 1);
    let (mut start, mut end) = (net + size / 2, net + size - 2);
    let hu = u32::from(h);
    if hu == start {
        start += 1;
    } else if hu == end {
        end -= 1;
    }
    Some((start.into(), end.into()))
}

pub fn spec_hash<T: serde::Serialize>(v: &T) -> String {
    use sha2::Digest;
    struct HashWriter(sha2::Sha256);
    impl std::io::Write for HashWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = std::io::BufWriter::with_capacity(4096, HashWriter(sha2::Sha256::new()));
    // Serializing our own types cannot fail; if it ever did, the hash of
    // the empty string (what `to_string(..).unwrap_or_default()` gave).
    let digest: [u8; 32] = match serde_json::to_writer(&mut w, v).map_err(std::io::Error::other).and_then(|()| w.into_inner().map_err(|e| e.into_error())) {
        Ok(h) => h.0.finalize().into(),
        Err(_) => sha(""),
    };
    crate::model::common::hex(&digest[..8])
}

/// A Linux bridge a `bridge` network wants.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DesiredBridge {
    pub name: String,
    pub mtu: Option<u32>,
    pub stp: bool,
    pub forward_delay_s: u32,
    pub address: Option<IpCidr>,
}

impl DesiredBridge {
    pub fn from_network(n: &Network) -> DesiredBridge {
        DesiredBridge {
            name: n.bridge_name().to_string(),
            mtu: n.mtu,
            stp: n.stp.unwrap_or(false),
            forward_delay_s: n.forward_delay.unwrap_or(0),
            address: n.address,
        }
    }

    pub fn hash(&self) -> String {
        spec_hash(self)
    }
}

/// The file a disk resource lives in, and what it should look like.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DesiredDisk {
    pub path: String,
    pub format: String,
    /// The cached base image (`<state>/images/<sha>`), for overlays and cdroms.
    pub base: Option<String>,
    pub size: Option<u64>,
    pub cdrom: bool,
}

/// The path of an image in the content-addressed cache.
pub fn image_cache_path(state_dir: &std::path::Path, image: &Resource, source_hashes: &std::collections::BTreeMap<String, String>) -> Option<String> {
    let Spec::Image(img) = &image.spec else { return None };
    let sha = img.sha256.clone().or_else(|| source_hashes.get(&img.source).cloned())?;
    Some(state_dir.join("images").join(sha).to_string_lossy().into_owned())
}

/// Resolves the typed refs of an instance and builds its libvirt definition.
pub struct Lowering<'a> {
    pub cfg: &'a Configuration,
    pub state_dir: &'a std::path::Path,
    pub kvm_usable: bool,
    pub source_hashes: &'a std::collections::BTreeMap<String, String>,
    /// Imported objects by address (the registry's and this plan's
    /// imports, see `Plan::imported`): their recorded name or path replaces
    /// the derived one.
    pub imported: &'a std::collections::BTreeMap<String, crate::observe::imports::Imported>,
}

impl Lowering<'_> {
    fn get(&self, addr: &str) -> Option<&Resource> {
        self.cfg.resource(addr)
    }

    fn ctx(&self) -> crate::model::Ctx<'_> {
        // A context only for path derivation; `built` is not consulted.
        static EMPTY: std::sync::OnceLock<std::collections::BTreeMap<String, Resource>> = std::sync::OnceLock::new();
        crate::model::Ctx { stack: &self.cfg.stack, state_dir: self.state_dir, config_dir: &self.cfg.dir, built: EMPTY.get_or_init(Default::default), data: None }
    }

    pub fn disk(&self, r: &Resource) -> Option<DesiredDisk> {
        let Spec::Disk(d) = &r.spec else { return None };
        let base = d.image.as_ref().and_then(|i| self.get(&i.0)).and_then(|img| image_cache_path(self.state_dir, img, self.source_hashes));
        Some(DesiredDisk {
            path: self.imported_path(r).unwrap_or_else(|| d.path(self.cfg.names_of(&r.address), &self.ctx())),
            format: if d.kind == DiskKind::Cdrom { "raw".into() } else { d.format.as_str().into() },
            base,
            size: d.size.map(|s| s.0),
            cdrom: d.kind == DiskKind::Cdrom,
        })
    }

    /// The file an imported disk or volume is, if it is one.
    fn imported_path(&self, r: &Resource) -> Option<String> {
        match self.imported.get(&r.address.to_string()) {
            Some(crate::observe::imports::Imported::File { path, .. }) => Some(path.clone()),
            _ => None,
        }
    }

    /// The file a volume lives in.
    pub fn volume(&self, r: &Resource) -> Option<DesiredDisk> {
        let Spec::Volume(v) = &r.spec else { return None };
        let base = v.image.as_ref().and_then(|i| self.get(&i.0)).and_then(|img| image_cache_path(self.state_dir, img, self.source_hashes));
        Some(DesiredDisk { path: self.imported_path(r).unwrap_or_else(|| v.path(self.cfg.names_of(&r.address), &self.ctx())), format: v.format.as_str().into(), base, size: v.size.map(|s| s.0), cdrom: false })
    }

    /// The libvirt network a nat/isolated network wants, with a DHCP host
    /// entry for every port on it that has a fixed IPv4 address.
    pub fn libvirt_network(&self, r: &Resource) -> Option<crate::xml::network::NetworkDef> {
        use crate::xml::network::{DhcpHost, Forward, NetworkDef};
        let Spec::Network(n) = &r.spec else { return None };
        if !n.net_type.is_libvirt() {
            return None;
        }
        let addr = r.address.to_string();
        let v4 = |ip: std::net::IpAddr| match ip {
            std::net::IpAddr::V4(a) => Some(a),
            std::net::IpAddr::V6(_) => None,
        };
        let mut hosts: Vec<DhcpHost> = self
            .cfg
            .resources
            .iter()
            .filter_map(|pr| match &pr.spec {
                Spec::Port(p) if p.network.0 == addr => Some(DhcpHost { mac: p.mac?, ip: v4(p.ip?.0)?, name: None }),
                _ => None,
            })
            .collect();
        hosts.sort_by_key(|h| h.mac);
        let (name, uuid) = match self.imported.get(&addr) {
            Some(crate::observe::imports::Imported::LibvirtNetwork { name, uuid }) => (name.clone(), uuid.clone()),
            _ => {
                let names = self.cfg.names_of_str(&addr);
                (libvirt_network_name(&self.cfg.stack, &names), libvirt_network_uuid(&self.cfg.stack, &names))
            }
        };
        Some(NetworkDef {
            name,
            uuid,
            bridge: n.bridge_name().to_string(),
            mtu: n.mtu,
            address: n.address.and_then(|a| Some((v4(a.addr)?, a.prefix))),
            forward: if n.net_type == NetType::Nat { Forward::Nat } else { Forward::None },
            dhcp_range: match &n.dhcp {
                Some(d) => v4(d.start.0).zip(v4(d.end.0)),
                // The documented default, the upper half of the subnet, as
                // soon as a port on the network has no fixed ip (it asks by
                // DHCP); a network whose ports all have one keeps its
                // static entries alone, as it always did.
                None if self.cfg.resources.iter().any(|pr| matches!(&pr.spec, Spec::Port(p) if p.network.0 == addr && p.ip.is_none())) => {
                    n.address.and_then(default_dhcp_range)
                }
                None => None,
            },
            hosts,
            stp: true,
            delay: 0,
        })
    }

    /// The instance (resource) that uses a port, if any.
    pub fn instance_of_port(&self, port_addr: &str) -> Option<&Resource> {
        self.cfg.resources.iter().find(|r| matches!(&r.spec, Spec::Instance(i) if i.ports.iter().any(|p| p.0 == port_addr)))
    }

    /// The hybrid plug a port wants (None unless `plug = "ovs_hybrid"`).
    pub fn hybrid(&self, r: &Resource) -> Option<DesiredHybrid> {
        let Spec::Port(p) = &r.spec else { return None };
        if p.plug != Some(Plug::OvsHybrid) {
            return None;
        }
        let Some(Spec::Network(net)) = self.get(&p.network.0).map(|n| &n.spec) else { return None };
        let vm_uuid = self.instance_of_port(&r.address.to_string()).map(|i| crate::model::common::derived_uuid(&self.ctx().seed(self.cfg.names_of(&i.address)))).unwrap_or_default();
        Some(DesiredHybrid {
            qbr: p.dev("qbr"),
            qvb: p.dev("qvb"),
            qvo: p.dev("qvo"),
            tap: p.dev("tap"),
            bridge: net.bridge_name().to_string(),
            mtu: p.mtu.or(net.mtu),
            iface_id: p.id().to_string(),
            mac: p.mac.map(|m| m.to_string()).unwrap_or_default(),
            vm_uuid,
        })
    }

    /// The cloud-init seed an instance wants: its file (named after the
    /// content, so a change of user-data is a new file and a restart) and
    /// the seed's input. None without `cloud_init`.
    pub fn seed(&self, r: &Resource) -> Option<(String, crate::seed::SeedInput)> {
        let Spec::Instance(inst) = &r.spec else { return None };
        let ci = inst.cloud_init.as_ref()?;
        let mut nics = Vec::new();
        for pref in &inst.ports {
            let Some(Spec::Port(p)) = self.get(&pref.0).map(|x| &x.spec) else { continue };
            let Some(Spec::Network(net)) = self.get(&p.network.0).map(|n| &n.spec) else { continue };
            let prefix = net.subnet().map(|a| a.prefix);
            nics.push(crate::seed::SeedNic {
                mac: p.mac.map(|m| m.to_string()).unwrap_or_default(),
                ip: p.ip.and_then(|ip| Some((ip.0, prefix?))),
                // `gateway`, else the host for nat networks (it NATs).
                gateway: net.guest_gateway(),
                dns: net.guest_dns(),
                mtu: p.mtu.or(net.mtu),
            });
        }
        // DNS joins the hash only when set, so seeds made before `dns`
        // existed keep their content hash (and their guests are not restarted).
        let mut content = if nics.iter().all(|n| n.dns.is_empty() || n.ip.is_none()) {
            spec_hash(&(ci, nics.iter().map(|n| (n.mac.clone(), n.ip, n.gateway, n.mtu)).collect::<Vec<_>>()))
        } else {
            spec_hash(&(ci, nics.iter().map(|n| (n.mac.clone(), n.ip, n.gateway, n.mtu, n.ip.map(|_| n.dns.clone()).unwrap_or_default())).collect::<Vec<_>>()))
        };
        // A connection authorizes its key and brings a host key (added by
        // the apply, the same for the instance's lifetime): it joins the
        // hash only when set, like `dns`.
        let mut keys = ci.ssh_authorized_keys.clone();
        if let Some(public) = inst.connection.as_ref().and_then(|c| crate::model::ssh_key::parse_private_key(c.private_key.expose()).ok()).map(|k| k.public) {
            content = spec_hash(&(&content, "ssh-host-key", &public));
            if !keys.contains(&public) {
                keys.push(public);
            }
        }
        let input = crate::seed::SeedInput {
            // A new instance-id when the content changes: cloud-init runs again.
            instance_id: format!("{}-{}", inst.domain_name(), &content[..8]),
            hostname: crate::model::instance::guest_hostname(inst.domain_name()),
            user_data: ci.user_data.clone(),
            meta_data: ci.meta_data.clone(),
            network_config: ci.network_config.clone(),
            ssh_authorized_keys: keys,
            nics,
            ssh_host_key: None,
        };
        let path = self.ctx().stack_dir().join("seeds").join(format!("{}-{}.iso", self.cfg.names_of(&r.address).file_stem(), &content[..12]));
        Some((path.to_string_lossy().into_owned(), input))
    }

    /// The domain definition an instance wants.
    pub fn domain(&self, r: &Resource) -> Option<DomainDef> {
        let Spec::Instance(inst) = &r.spec else { return None };
        let inst: &Instance = inst;
        let machine = inst.machine.clone().unwrap_or_else(|| "pc".into());
        let mut disks: Vec<(DiskDevice, Bus, String, String, Option<String>, bool)> = Vec::new();
        for dref in &inst.disks {
            let Some(res) = self.get(&dref.0) else { continue };
            let Spec::Disk(d) = &res.spec else { continue };
            let dd = self.disk(res)?;
            let device = if d.kind == DiskKind::Cdrom { DiskDevice::Cdrom } else { DiskDevice::Disk };
            let path = if d.kind == DiskKind::Cdrom { dd.base.clone().unwrap_or(dd.path.clone()) } else { dd.path.clone() };
            disks.push((device, domain::effective_bus(device, d.bus, &machine), path, dd.format.clone(), None, device == DiskDevice::Cdrom));
        }
        // The seed goes right after the instance's disks, before volumes, so
        // hot-plugging a volume never moves it.
        if let Some((path, _)) = self.seed(r) {
            disks.push((DiskDevice::Disk, Bus::Virtio, path, "raw".into(), Some("cidata".into()), true));
        }
        for vref in &inst.volumes {
            let Some(res) = self.get(&vref.0) else { continue };
            let Spec::Volume(v) = &res.spec else { continue };
            let bus = v.bus.unwrap_or(Bus::Virtio);
            let path = self.imported_path(res).unwrap_or_else(|| v.path(self.cfg.names_of(&res.address), &self.ctx()));
            disks.push((DiskDevice::Disk, bus, path, v.format.as_str().into(), v.serial.clone(), false));
        }
        let targets = domain::assign_targets(&disks.iter().map(|d| (d.0, d.1)).collect::<Vec<_>>(), &machine);
        let disk_defs = disks
            .into_iter()
            .zip(targets)
            .map(|((device, bus, path, format, serial, readonly), target)| DiskDef {
                path,
                format,
                device,
                bus,
                target,
                readonly,
                serial,
                boot_order: None,
            })
            .collect();
        let mut nics = Vec::new();
        for pref in &inst.ports {
            let Some(res) = self.get(&pref.0) else { continue };
            let Spec::Port(p) = &res.spec else { continue };
            let Some(Spec::Network(net)) = self.get(&p.network.0).map(|n| &n.spec) else { continue };
            let source = match (p.plug.unwrap_or(Plug::Bridge), net.net_type) {
                (Plug::OvsHybrid, _) => NicSource::Bridge { bridge: p.dev("qbr") },
                (Plug::Ovs, _) => NicSource::Ovs { bridge: net.bridge_name().to_string(), interface_id: p.id().to_string() },
                (Plug::Network, _) | (_, NetType::Nat | NetType::Isolated) => NicSource::Network { network: libvirt_name_of(&self.cfg.stack, &self.cfg.names_of_str(&p.network.0), net, self.imported) },
                (Plug::Bridge, _) => NicSource::Bridge { bridge: net.bridge_name().to_string() },
            };
            nics.push(NicDef { mac: p.mac.unwrap_or(crate::model::common::Mac([0x52, 0x54, 0, 0, 0, 0])), model: p.model, source, target_dev: Some(p.dev("tap")), mtu: p.mtu.or(net.mtu) });
        }
        let domain_type = match inst.domain_type {
            DomainType::Kvm => DomainKind::Kvm,
            DomainType::Qemu => DomainKind::Qemu,
            DomainType::Auto if self.kvm_usable => DomainKind::Kvm,
            DomainType::Auto => DomainKind::Qemu,
        };
        let mut def = DomainDef {
            name: inst.domain_name().to_string(),
            uuid: crate::model::common::derived_uuid(&self.ctx().seed(self.cfg.names_of(&r.address))),
            domain_type,
            memory_kib: inst.memory.0 / 1024,
            vcpus: inst.vcpus,
            cpu: inst.cpu.as_ref().map(|c| CpuDef { mode: c.mode, model: c.model.clone() }),
            machine,
            firmware: inst.firmware,
            loader: (inst.firmware == crate::model::instance::Firmware::Efi)
                .then(|| domain::LoaderDef::ovmf(inst.secure_boot, crate::model::instance::nvram_path(self.state_dir, &self.cfg.stack, self.cfg.names_of(&r.address)).to_string_lossy().into_owned())),
            kernel: inst.kernel.clone(),
            initrd: inst.initrd.clone(),
            cmdline: inst.cmdline.clone(),
            disks: disk_defs,
            nics,
            console_log: inst.console_log(self.cfg.names_of(&r.address), &self.ctx()),
            graphics: inst.graphics,
            guest_agent: inst.guest_agent,
            marker: Marker { stack: self.cfg.stack.clone(), address: r.address.to_string(), spec_hash: String::new() },
        };
        def.marker.spec_hash = spec_hash(&def);
        Some(def)
    }
}

/// The libvirt network name for a nat/isolated network: `vf-<stack>-<name>`
/// (`vf-<stack>-<name>@<key>` under count/for_each). Names of different
/// stacks can collide (`a` + `b-c`, `a-b` + `c`); the derived UUID tells them apart.
pub fn libvirt_network_name(stack: &str, network_addr: &str) -> String {
    let stem = crate::model::Address::parse(network_addr).map(|a| a.file_stem()).unwrap_or_else(|| network_addr.trim_start_matches("network.").to_string());
    format!("vf-{stack}-{stem}")
}

/// The libvirt network a port on `net` (at `network_addr`) joins: the one a
/// `data "network"` names, the one an import took over, else the one
/// virtform derives.
pub fn libvirt_name_of(stack: &str, network_addr: &str, net: &Network, imported: &std::collections::BTreeMap<String, crate::observe::imports::Imported>) -> String {
    match (net.existing.as_ref().map(|e| &e.selector), imported.get(network_addr)) {
        (Some(crate::model::data::Selector::LibvirtNetwork(n)), _) => n.clone(),
        (_, Some(crate::observe::imports::Imported::LibvirtNetwork { name, .. })) => name.clone(),
        _ => libvirt_network_name(stack, network_addr),
    }
}

/// The stack and address a libvirt network named `vf-<stack>-<stem>` was
/// made for, if its UUID is the one virtform derives for one of the ways
/// to read its name (another stack's network, or this one's).
pub fn derived_network_owner(name: &str, uuid: &str) -> Option<(String, String)> {
    let rest = name.strip_prefix("vf-")?;
    rest.match_indices('-').find_map(|(i, _)| {
        let (stack, stem) = (&rest[..i], &rest[i + 1..]);
        let addr = crate::model::Address::from_stem(crate::model::Kind::Network, stem)?.to_string();
        (libvirt_network_uuid(stack, &addr) == uuid).then(|| (stack.to_string(), addr))
    })
}

/// The UUID virtform gives the libvirt network of a stack's network address:
/// its ownership marker.
pub fn libvirt_network_uuid(stack: &str, network_addr: &str) -> String {
    crate::model::common::derived_uuid(&format!("virtform:{stack}:{network_addr}"))
}

/// The network address a libvirt network name of this stack stands for, if
/// its UUID is the one virtform derives for it.
pub fn libvirt_network_owner(stack: &str, name: &str, uuid: &str) -> Option<String> {
    let stem = name.strip_prefix(&format!("vf-{stack}-"))?;
    let addr = crate::model::Address::from_stem(crate::model::Kind::Network, stem)?.to_string();
    (libvirt_network_uuid(stack, &addr) == uuid).then_some(addr)
}

/// What an `overlay` network wants on one of its hosts: a Linux bridge, a
/// VXLAN device enslaved to it, and one head-end replication entry per
/// other host. Both links carry the network's marker (with this hash, so a
/// changed peer list is an update, a peer removed by hand drift).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DesiredOverlay {
    pub bridge: DesiredBridge,
    pub vxlan: String,
    pub vni: u32,
    pub port: u16,
    pub local: std::net::IpAddr,
    pub peers: Vec<std::net::IpAddr>,
}

impl DesiredOverlay {
    /// `None` when the network is not a Linux overlay with a tunnel on this host.
    pub fn from_network(n: &Network) -> Option<DesiredOverlay> {
        if n.ovs_overlay() {
            return None;
        }
        let t = n.tunnel.as_ref()?;
        Some(DesiredOverlay {
            bridge: DesiredBridge::from_network(n),
            vxlan: n.vxlan_device()?,
            vni: n.vni?,
            port: crate::model::network::VXLAN_PORT,
            local: t.local,
            peers: t.peers.clone(),
        })
    }

    pub fn hash(&self) -> String {
        spec_hash(self)
    }
}

/// What an overlay with `backend = "ovs"` wants on one of its hosts: an
/// Open vSwitch bridge (its datapath, its MTU) and one VXLAN port per other
/// host. The bridge carries the network's marker with this hash; the
/// tunnel ports carry the marker without one (they are the network's).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DesiredOvsOverlay {
    pub bridge: String,
    /// `netdev` or `system`; None leaves OVS's default (system).
    pub datapath_type: Option<String>,
    pub mtu: Option<u32>,
    pub vni: u32,
    pub port: u16,
    pub local: std::net::IpAddr,
    /// (port name, peer's underlay address), sorted by address.
    pub tunnels: Vec<(String, std::net::IpAddr)>,
}

impl DesiredOvsOverlay {
    /// `None` when the network is not an `ovs` overlay with a tunnel on this host.
    pub fn from_network(n: &Network) -> Option<DesiredOvsOverlay> {
        if !n.ovs_overlay() {
            return None;
        }
        let t = n.tunnel.as_ref()?;
        let vni = n.vni?;
        Some(DesiredOvsOverlay {
            bridge: n.bridge_name().to_string(),
            datapath_type: n.datapath_type.map(|d| d.as_str().to_string()),
            mtu: n.mtu,
            vni,
            port: crate::model::network::VXLAN_PORT,
            local: t.local,
            tunnels: t.peers.iter().map(|p| (crate::model::network::ovs_tunnel_port(vni, *p), *p)).collect(),
        })
    }

    /// The options of the VXLAN port to `peer`: what is set, and what an
    /// observed port is compared with.
    pub fn options(&self, peer: std::net::IpAddr) -> std::collections::BTreeMap<String, String> {
        [("remote_ip", peer.to_string()), ("local_ip", self.local.to_string()), ("key", self.vni.to_string()), ("dst_port", self.port.to_string())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    pub fn hash(&self) -> String {
        spec_hash(self)
    }
}

/// The Open vSwitch bridge an `ovs` network wants.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DesiredOvsBridge {
    pub name: String,
    /// `netdev` or `system`; None leaves OVS's default (system).
    pub datapath_type: Option<String>,
    pub mtu: Option<u32>,
}

impl DesiredOvsBridge {
    pub fn from_network(n: &Network) -> DesiredOvsBridge {
        DesiredOvsBridge {
            name: n.bridge_name().to_string(),
            datapath_type: n.datapath_type.map(|d| d.as_str().to_string()),
            mtu: n.mtu,
        }
    }

    pub fn hash(&self) -> String {
        spec_hash(self)
    }
}

/// What Nova's hybrid plug of one port wants on the host.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DesiredHybrid {
    pub qbr: String,
    pub qvb: String,
    pub qvo: String,
    pub tap: String,
    /// The OVS (integration) bridge qvo goes on.
    pub bridge: String,
    pub mtu: Option<u32>,
    pub iface_id: String,
    pub mac: String,
    /// The UUID of the instance using the port ("" when none does).
    pub vm_uuid: String,
}

impl DesiredHybrid {
    pub fn hash(&self) -> String {
        spec_hash(self)
    }

    /// The names of a hybrid plug from its qbr name (for orphans: the port's
    /// configuration is gone, its devices are named after its id).
    pub fn names_from_qbr(qbr: &str) -> Option<(String, String, String)> {
        let id = qbr.strip_prefix("qbr")?;
        Some((format!("qvb{id}"), format!("qvo{id}"), format!("tap{id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec hashes are stored in every domain's marker: streaming the JSON
    /// into the hash must give what hashing the JSON string gave, or every
    /// existing domain would look edited outside virtform.
    #[test]
    fn spec_hash_is_the_hash_of_the_json_text() {
        let b = DesiredBridge { name: "br-\"x\"".into(), mtu: Some(1450), stp: true, forward_delay_s: 2, address: None };
        let old = |v: &DesiredBridge| crate::model::common::hex(&sha(&serde_json::to_string(v).unwrap())[..8]);
        assert_eq!(spec_hash(&b), old(&b));
        assert_eq!(spec_hash(&b), "151f0fa99874e0e5");
        // Longer than the writer's 4 KiB buffer.
        let long = DesiredBridge { name: "n".repeat(10_000), ..b };
        assert_eq!(spec_hash(&long), old(&long));
    }

    #[test]
    fn default_dhcp_range_is_the_upper_half_without_the_host() {
        let r = |c: &str| default_dhcp_range(crate::model::common::IpCidr::parse(c).unwrap()).map(|(a, b)| format!("{a}-{b}"));
        assert_eq!(r("10.97.0.1/24").as_deref(), Some("10.97.0.128-10.97.0.254"));
        assert_eq!(r("10.97.0.254/24").as_deref(), Some("10.97.0.128-10.97.0.253"));
        assert_eq!(r("10.97.0.128/24").as_deref(), Some("10.97.0.129-10.97.0.254"));
        assert_eq!(r("172.16.0.1/16").as_deref(), Some("172.16.128.0-172.16.255.254"));
        assert_eq!(r("10.0.0.1/29").as_deref(), Some("10.0.0.4-10.0.0.6"));
        assert_eq!(r("10.0.0.1/30"), None);
    }
}
