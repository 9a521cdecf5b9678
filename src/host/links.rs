//! Linux links: observe and change bridges, veth pairs, taps and addresses
//! with iproute2's `ip`, the way Nova/os-vif plug ports.
//!
//! - [`LinkHost::list`] reads every link with its addresses in one process
//!   (`ip -json -details addr show`), plus one `/proc` read per link for
//!   `disable_ipv6` (no `ip` output carries it).
//! - [`LinkHost::apply`] turns a list of [`LinkOp`]s into as few processes as
//!   possible: consecutive ops become one `ip -batch -`; an IPv6 sysctl write
//!   (done directly, no process) splits the batch, since later ops may depend
//!   on it.
//! - [`hybrid_plug_ops`]/[`hybrid_unplug_ops`] compute the ops Nova's hybrid
//!   plug still needs, given the observed links.
//!
//! Invariants:
//! - Every interface name in an op is checked before anything runs
//!   ([`check_name`]): a name that could escape `/proc/sys/net/ipv6/conf/`,
//!   be read by `ip` as an option, or be split/cut by `ip -batch`'s tokenizer
//!   is refused with a [`HostError`] and no process is started.
//! - `ip -batch` reads each line with its own tokenizer: words split on
//!   blanks, a word may be wrapped in `'…'` or `"…"` (no escapes), and `#`
//!   starts a comment anywhere on the line, even inside quotes. Aliases are
//!   therefore always quoted, with the quote character they do not contain;
//!   an alias that cannot be quoted that way (it has both quote characters,
//!   a `#` or a line break) is set with a separate `ip link set dev X alias Y`
//!   argument-vector call instead.
//! - The kernel ignores IFLA_IFALIAS on link creation (`ip link add … alias X`
//!   succeeds but sets nothing), so a create op is rendered as `link add`
//!   followed by `link set … alias`.
//! - Units are the kernel's: bridge `forward_delay` is in centiseconds
//!   (USER_HZ), both when set and when read back.

use std::ffi::OsStr;

use serde::{Deserialize, Serialize};

use super::exec::{Executor, Input};
use super::{HostError, parse_marker};
use crate::model::common::{IfName, IpCidr, Mac};

/// The kind of a link, from the kernel's `IFLA_INFO_KIND`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LinkKind {
    Bridge,
    Veth,
    /// A tun or tap device (also what Open vSwitch's userspace `netdev`
    /// datapath uses for its bridges and internal ports).
    Tun,
    /// An Open vSwitch internal port of the kernel datapath.
    OpenvswitchInternal,
    /// Any other kind as the kernel names it (`vlan`, `dummy`, `ifb`, …);
    /// empty for devices without a kind (physical NICs, `lo`).
    Other(String),
}

impl LinkKind {
    fn from_info_kind(kind: Option<&str>) -> LinkKind {
        match kind {
            Some("bridge") => LinkKind::Bridge,
            Some("veth") => LinkKind::Veth,
            Some("tun") => LinkKind::Tun,
            Some("openvswitch") => LinkKind::OpenvswitchInternal,
            Some(other) => LinkKind::Other(other.to_string()),
            None => LinkKind::Other(String::new()),
        }
    }
}

/// Bridge options virtform manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BridgeInfo {
    pub stp: bool,
    /// Forward delay in centiseconds (the kernel's unit; `ip` shows and takes
    /// it as is: 1500 = 15 s, the kernel default). The kernel stores jiffies,
    /// so a value that is not a whole number of jiffies reads back rounded
    /// down (1501 → 1500, 333 → 332 here): keep desired values to whole
    /// seconds (multiples of 100), which round-trip exactly.
    pub forward_delay_cs: u32,
    pub mcast_snooping: bool,
}

/// A VXLAN device's settings virtform manages, and its head-end
/// replication list: the destinations of its all-zeros FDB entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanInfo {
    pub id: u32,
    pub local: Option<std::net::IpAddr>,
    pub port: u16,
    /// Where broadcast, unknown-unicast and multicast frames are sent
    /// (`bridge fdb … 00:00:00:00:00:00 dst IP`), sorted.
    pub peers: Vec<std::net::IpAddr>,
}

/// One observed link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub name: String,
    pub ifindex: u32,
    pub kind: LinkKind,
    /// IFLA_IFALIAS, where virtform keeps its ownership marker. `None` when unset or empty.
    pub alias: Option<String>,
    pub mtu: u32,
    /// Administratively up (IFF_UP), whatever the carrier.
    pub up: bool,
    /// Promiscuous mode as *requested* (IFF_PROMISC in the reported flags).
    /// A bridge port is promiscuous through the bridge without this flag.
    pub promisc: bool,
    /// The bridge (or `ovs-system`) this link is enslaved to.
    pub master: Option<String>,
    /// Ethernet address; `None` for non-Ethernet links (`lo`, tunnels).
    pub mac: Option<Mac>,
    /// Addresses of global scope (no link-local, no host-scope).
    pub addrs: Vec<IpCidr>,
    /// Set for bridges.
    pub bridge: Option<BridgeInfo>,
    /// For a veth: the peer's name when the peer is in this network namespace.
    pub veth_peer: Option<String>,
    /// Set for VXLAN devices.
    pub vxlan: Option<VxlanInfo>,
    /// `/proc/sys/net/ipv6/conf/<name>/disable_ipv6`; `None` when unreadable
    /// (IPv6 off kernel-wide, or the link vanished while listing).
    pub ipv6_disabled: Option<bool>,
}

impl Link {
    /// The (stack, address) of the ownership marker in the alias, if any.
    pub fn owner(&self) -> Option<(&str, &str)> {
        self.alias.as_deref().and_then(parse_marker)
    }
}

/// One change to the host's links. Apply runs them in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkOp {
    CreateBridge { name: String, alias: String, mtu: Option<u32>, stp: bool, forward_delay_cs: u32, mcast_snooping: bool },
    CreateVeth { name: String, peer: String, alias: String, peer_alias: String, mtu: Option<u32> },
    /// A VXLAN device (`local` its underlay address, learning on), down.
    CreateVxlan { name: String, alias: String, id: u32, local: std::net::IpAddr, port: u16, mtu: Option<u32> },
    /// Head-end replication: one all-zeros FDB entry sending flooded frames to `dst` (`bridge fdb append`).
    AddPeer { name: String, dst: std::net::IpAddr },
    DelPeer { name: String, dst: std::net::IpAddr },
    SetMtu { name: String, mtu: u32 },
    SetAlias { name: String, alias: String },
    SetUp { name: String },
    SetDown { name: String },
    SetPromisc { name: String, on: bool },
    SetMaster { name: String, master: String },
    NoMaster { name: String },
    SetBridgeOpts { name: String, stp: bool, forward_delay_cs: u32, mcast_snooping: bool },
    AddAddr { name: String, addr: IpCidr },
    DelAddr { name: String, addr: IpCidr },
    /// Writes 1 to `/proc/sys/net/ipv6/conf/<name>/disable_ipv6`.
    DisableIpv6 { name: String },
    Delete { name: String },
}

impl LinkOp {
    /// The link this op acts on (for a veth pair: the first end).
    pub fn name(&self) -> &str {
        match self {
            LinkOp::CreateBridge { name, .. }
            | LinkOp::CreateVeth { name, .. }
            | LinkOp::CreateVxlan { name, .. }
            | LinkOp::AddPeer { name, .. }
            | LinkOp::DelPeer { name, .. }
            | LinkOp::SetMtu { name, .. }
            | LinkOp::SetAlias { name, .. }
            | LinkOp::SetUp { name }
            | LinkOp::SetDown { name }
            | LinkOp::SetPromisc { name, .. }
            | LinkOp::SetMaster { name, .. }
            | LinkOp::NoMaster { name }
            | LinkOp::SetBridgeOpts { name, .. }
            | LinkOp::AddAddr { name, .. }
            | LinkOp::DelAddr { name, .. }
            | LinkOp::DisableIpv6 { name }
            | LinkOp::Delete { name } => name,
        }
    }

    /// What the op does, for errors and progress lines ("set mtu 1400").
    pub fn describe(&self) -> String {
        match self {
            LinkOp::CreateBridge { .. } => "create bridge".into(),
            LinkOp::CreateVeth { peer, .. } => format!("create veth pair with {peer}"),
            LinkOp::CreateVxlan { id, local, .. } => format!("create VXLAN device (VNI {id}, local {local})"),
            LinkOp::AddPeer { dst, .. } => format!("add tunnel peer {dst}"),
            LinkOp::DelPeer { dst, .. } => format!("remove tunnel peer {dst}"),
            LinkOp::SetMtu { mtu, .. } => format!("set mtu {mtu}"),
            LinkOp::SetAlias { .. } => "set alias".into(),
            LinkOp::SetUp { .. } => "set up".into(),
            LinkOp::SetDown { .. } => "set down".into(),
            LinkOp::SetPromisc { on, .. } => format!("set promisc {}", if *on { "on" } else { "off" }),
            LinkOp::SetMaster { master, .. } => format!("enslave to {master}"),
            LinkOp::NoMaster { .. } => "release from master".into(),
            LinkOp::SetBridgeOpts { .. } => "set bridge options".into(),
            LinkOp::AddAddr { addr, .. } => format!("add address {addr}"),
            LinkOp::DelAddr { addr, .. } => format!("delete address {addr}"),
            LinkOp::DisableIpv6 { .. } => "disable IPv6".into(),
            LinkOp::Delete { .. } => "delete link".into(),
        }
    }

    /// Every interface name the op mentions.
    fn names(&self) -> Vec<&str> {
        match self {
            LinkOp::CreateVeth { name, peer, .. } => vec![name, peer],
            LinkOp::SetMaster { name, master } => vec![name, master],
            other => vec![other.name()],
        }
    }

    /// Checks names, aliases and option ranges; nothing runs when this fails.
    fn check(&self) -> Result<(), HostError> {
        for n in self.names() {
            check_name(n).map_err(|m| HostError::new(self.describe(), n, m))?;
        }
        let aliases: Vec<&str> = match self {
            LinkOp::CreateBridge { alias, .. } | LinkOp::SetAlias { alias, .. } | LinkOp::CreateVxlan { alias, .. } => vec![alias],
            LinkOp::CreateVeth { alias, peer_alias, .. } => vec![alias, peer_alias],
            _ => vec![],
        };
        for a in aliases {
            check_alias(a).map_err(|m| HostError::new(self.describe(), self.name(), m))?;
        }
        if let LinkOp::CreateBridge { stp: true, forward_delay_cs, .. } | LinkOp::SetBridgeOpts { stp: true, forward_delay_cs, .. } = self
            && !(STP_FORWARD_DELAY_CS.0..=STP_FORWARD_DELAY_CS.1).contains(forward_delay_cs)
        {
            return Err(HostError::new(
                self.describe(),
                self.name(),
                format!("forward delay {forward_delay_cs} cs is outside 200..=3000 cs (2 to 30 s), which the kernel requires while STP is on"),
            )
            .hint("use a forward delay of 2 to 30 seconds, or turn STP off"));
        }
        Ok(())
    }
}

/// The forward delays (centiseconds) the kernel accepts while STP is on.
pub const STP_FORWARD_DELAY_CS: (u32, u32) = (200, 3000);

/// The longest alias the kernel stores (IFALIASZ - 1 bytes).
pub const MAX_ALIAS: usize = 255;

/// Checks an interface name for use in an `ip` command line, an `ip -batch`
/// line and a `/proc/sys` path: a name [`IfName::parse`] accepts (letters,
/// digits, `_`, `-`, `.`, not starting with `-`), so nothing `ip -batch`
/// would read as an option, a comment or a quote. Kept as the host layer's
/// own guard: names also come from the host and from derived values.
pub fn check_name(name: &str) -> Result<(), String> {
    IfName::parse(name).map(|_| ())
}

fn check_alias(alias: &str) -> Result<(), String> {
    if alias.len() > MAX_ALIAS {
        return Err(format!("alias is {} bytes long; the kernel keeps at most {MAX_ALIAS}", alias.len()));
    }
    if alias.contains('\0') {
        return Err("alias contains a NUL character".into());
    }
    Ok(())
}

/// The alias as one `ip -batch` word, or `None` when the batch tokenizer
/// cannot carry it (then it is set with an argument vector).
fn batch_quote(alias: &str) -> Option<String> {
    if alias.contains(['#', '\n', '\r']) {
        return None;
    }
    match (alias.contains('\''), alias.contains('"')) {
        (false, _) => Some(format!("'{alias}'")),
        (true, false) => Some(format!("\"{alias}\"")),
        (true, true) => None,
    }
}

/// One host invocation that [`IpLinks::apply`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// `ip -batch -` with this input; `ops[i]` is the index (into the op
    /// list) of the op that produced line `i + 1`.
    Batch { text: String, ops: Vec<usize> },
    /// `ip <args…>` (an alias the batch tokenizer cannot carry).
    Ip { args: Vec<String>, op: usize },
    /// Write 1 to `/proc/sys/net/ipv6/conf/<name>/disable_ipv6`.
    DisableIpv6 { name: String, op: usize },
    /// `bridge <args…>` (an FDB entry).
    Bridge { args: Vec<String>, op: usize },
}

enum Step {
    Line(String),
    Argv(Vec<String>),
    Bridge(Vec<String>),
    Ipv6Off(String),
}

fn alias_step(name: &str, alias: &str) -> Step {
    match batch_quote(alias) {
        Some(q) => Step::Line(format!("link set dev {name} alias {q}")),
        None => Step::Argv(vec!["link".into(), "set".into(), "dev".into(), name.into(), "alias".into(), alias.into()]),
    }
}

fn mtu_arg(mtu: Option<u32>) -> String {
    mtu.map(|m| format!(" mtu {m}")).unwrap_or_default()
}

fn b01(b: bool) -> u8 {
    u8::from(b)
}

fn steps(op: &LinkOp) -> Vec<Step> {
    match op {
        LinkOp::CreateBridge { name, alias, mtu, stp, forward_delay_cs, mcast_snooping } => {
            // Within one request the kernel applies forward_delay before
            // stp_state, so a valid STP delay is accepted on a new bridge.
            let mut v = vec![Step::Line(format!(
                "link add name {name}{} type bridge stp_state {} forward_delay {forward_delay_cs} mcast_snooping {}",
                mtu_arg(*mtu),
                b01(*stp),
                b01(*mcast_snooping)
            ))];
            if !alias.is_empty() {
                v.push(alias_step(name, alias));
            }
            v
        }
        LinkOp::CreateVeth { name, peer, alias, peer_alias, mtu } => {
            let m = mtu_arg(*mtu);
            let mut v = vec![Step::Line(format!("link add name {name}{m} type veth peer name {peer}{m}"))];
            if !alias.is_empty() {
                v.push(alias_step(name, alias));
            }
            if !peer_alias.is_empty() {
                v.push(alias_step(peer, peer_alias));
            }
            v
        }
        LinkOp::CreateVxlan { name, alias, id, local, port, mtu } => {
            let mut v = vec![Step::Line(format!("link add name {name}{} type vxlan id {id} local {local} dstport {port}", mtu_arg(*mtu)))];
            if !alias.is_empty() {
                v.push(alias_step(name, alias));
            }
            v
        }
        LinkOp::AddPeer { name, dst } | LinkOp::DelPeer { name, dst } => {
            let verb = if matches!(op, LinkOp::AddPeer { .. }) { "append" } else { "del" };
            vec![Step::Bridge(["fdb", verb, HER_MAC, "dev", name, "dst", &dst.to_string()].map(str::to_string).to_vec())]
        }
        LinkOp::SetMtu { name, mtu } => vec![Step::Line(format!("link set dev {name} mtu {mtu}"))],
        LinkOp::SetAlias { name, alias } => vec![alias_step(name, alias)],
        LinkOp::SetUp { name } => vec![Step::Line(format!("link set dev {name} up"))],
        LinkOp::SetDown { name } => vec![Step::Line(format!("link set dev {name} down"))],
        LinkOp::SetPromisc { name, on } => {
            vec![Step::Line(format!("link set dev {name} promisc {}", if *on { "on" } else { "off" }))]
        }
        LinkOp::SetMaster { name, master } => vec![Step::Line(format!("link set dev {name} master {master}"))],
        LinkOp::NoMaster { name } => vec![Step::Line(format!("link set dev {name} nomaster"))],
        LinkOp::SetBridgeOpts { name, stp, forward_delay_cs, mcast_snooping } => {
            let rest = format!("forward_delay {forward_delay_cs} mcast_snooping {}", b01(*mcast_snooping));
            if *stp {
                // Delay first (valid while STP is on or off), then STP on.
                vec![Step::Line(format!("link set dev {name} type bridge {rest} stp_state 1"))]
            } else {
                // STP off first: the kernel checks forward_delay before
                // stp_state, and refuses a delay under 2 s while STP is on.
                vec![
                    Step::Line(format!("link set dev {name} type bridge stp_state 0")),
                    Step::Line(format!("link set dev {name} type bridge {rest}")),
                ]
            }
        }
        LinkOp::AddAddr { name, addr } => {
            // IPv4: set the broadcast address too, as libvirt does.
            let brd = if addr.addr.is_ipv4() && addr.prefix <= 30 { " broadcast +" } else { "" };
            vec![Step::Line(format!("addr add {addr}{brd} dev {name}"))]
        }
        LinkOp::DelAddr { name, addr } => vec![Step::Line(format!("addr del {addr} dev {name}"))],
        LinkOp::DisableIpv6 { name } => vec![Step::Ipv6Off(name.clone())],
        LinkOp::Delete { name } => vec![Step::Line(format!("link del dev {name}"))],
    }
}

/// Checks every op, then lowers them to the invocations [`IpLinks::apply`]
/// runs, in order. Fails (naming the op and link) before anything runs.
pub fn invocations(ops: &[LinkOp]) -> Result<Vec<Invocation>, HostError> {
    for op in ops {
        op.check()?;
    }
    let mut out = Vec::new();
    let mut text = String::new();
    let mut lines: Vec<usize> = Vec::new();
    fn flush(out: &mut Vec<Invocation>, text: &mut String, lines: &mut Vec<usize>) {
        if !lines.is_empty() {
            out.push(Invocation::Batch { text: std::mem::take(text), ops: std::mem::take(lines) });
        }
    }
    for (i, op) in ops.iter().enumerate() {
        for step in steps(op) {
            match step {
                Step::Line(l) => {
                    text.push_str(&l);
                    text.push('\n');
                    lines.push(i);
                }
                Step::Argv(args) => {
                    flush(&mut out, &mut text, &mut lines);
                    out.push(Invocation::Ip { args, op: i });
                }
                Step::Ipv6Off(name) => {
                    flush(&mut out, &mut text, &mut lines);
                    out.push(Invocation::DisableIpv6 { name, op: i });
                }
                Step::Bridge(args) => {
                    flush(&mut out, &mut text, &mut lines);
                    out.push(Invocation::Bridge { args, op: i });
                }
            }
        }
    }
    flush(&mut out, &mut text, &mut lines);
    Ok(out)
}

/// Observes and changes the host's links.
pub trait LinkHost: Send + Sync {
    /// Every link with its addresses, in ONE process
    /// (`ip -json -details addr show`).
    fn list(&self) -> Result<Vec<Link>, HostError>;
    /// Applies ops in order, as one `ip -batch -` process where possible
    /// (sysctl writes done directly). Nothing runs when an op is invalid. On
    /// failure the error names the op (its number and line) and the link;
    /// the ops before it were applied, the ones after it were not.
    fn apply(&self, ops: &[LinkOp]) -> Result<(), HostError>;
}

/// The real implementation, with `ip` from iproute2, on the host of its
/// executor (local, or remote over SSH: the same code).
#[derive(Debug, Clone, Default)]
pub struct IpLinks {
    exec: Executor,
}

impl IpLinks {
    /// The local host's links.
    pub fn local() -> IpLinks {
        IpLinks { exec: Executor::Local }
    }

    /// The links of the executor's host.
    pub fn on(exec: &Executor) -> IpLinks {
        IpLinks { exec: exec.clone() }
    }

    pub fn executor(&self) -> &Executor {
        &self.exec
    }
}

const IP: &str = "ip";
const BRIDGE: &str = "bridge";
/// The MAC of a head-end replication entry: flooded frames go to its `dst`.
const HER_MAC: &str = "00:00:00:00:00:00";

impl LinkHost for IpLinks {
    fn list(&self) -> Result<Vec<Link>, HostError> {
        let mut links = self.list_links()?;
        // One `bridge fdb` read per VXLAN device (hosts have few).
        for l in links.iter_mut() {
            if let Some(v) = l.vxlan.as_mut()
                && check_name(&l.name).is_ok()
            {
                let json = self.exec.run("list tunnel peers", &l.name, BRIDGE, &["-json", "fdb", "show", "dev", &l.name], None)?;
                v.peers = parse_peers(&json).map_err(|e| HostError::new(format!("list tunnel peers{}", on_host(&self.exec)), &l.name, format!("cannot parse `bridge -json fdb show`: {e}")))?;
            }
        }
        Ok(links)
    }

    fn apply(&self, ops: &[LinkOp]) -> Result<(), HostError> {
        self.apply_ops(ops)
    }
}

impl IpLinks {
    fn list_links(&self) -> Result<Vec<Link>, HostError> {
        let json = self.exec.run("list links", "all links", IP, &["-json", "-details", "addr", "show"], None)?;
        let parse_error = |e: String| HostError::new(format!("list links{}", on_host(&self.exec)), "all links", format!("cannot parse `ip -json -details addr show`: {e}"));
        match &self.exec {
            // One file read per link, in-process.
            Executor::Local => parse_links(&json, read_ipv6_disabled).map_err(parse_error),
            // One remote command for all of them.
            Executor::Ssh(_) => {
                let names: Vec<String> = serde_json::from_str::<Vec<IfNameOnly>>(&json).map_err(|e| parse_error(e.to_string()))?.into_iter().map(|l| l.ifname).collect();
                let flags = read_ipv6_disabled_on(&self.exec, &names)?;
                parse_links(&json, |n| flags.get(n).copied()).map_err(parse_error)
            }
        }
    }

    fn apply_ops(&self, ops: &[LinkOp]) -> Result<(), HostError> {
        let invs = invocations(ops)?;
        let n = ops.len();
        let failed = |i: usize, message: String| -> HostError {
            let op = &ops[i];
            let applied = if i == 0 { "no op was applied".to_string() } else { format!("ops 1-{i} were applied") };
            HostError::new(format!("{} (op {} of {n})", op.describe(), i + 1), op.name(), message)
                .hint(format!("{applied}, the rest were not; list the links and plan again"))
        };
        for inv in invs {
            match inv {
                Invocation::Batch { text, ops: line_ops } => {
                    tracing::debug!(lines = line_ops.len(), %text, "ip -batch");
                    if let Err(e) = run_batch(&self.exec, &text) {
                        let (line, message) = match e {
                            BatchError::Spawn(h) => return Err(h),
                            BatchError::Failed { line, message } => (line, message),
                        };
                        let Some(l) = line.filter(|l| *l >= 1 && *l <= line_ops.len()) else {
                            // ip did not say which line; blame the first op of the batch.
                            return Err(failed(line_ops[0], format!("{message} (somewhere in an `ip -batch` of {} lines)", line_ops.len())));
                        };
                        let cmd = text.lines().nth(l - 1).unwrap_or("");
                        return Err(failed(line_ops[l - 1], format!("{message} [`ip -batch` line {l}: {cmd}]")));
                    }
                }
                Invocation::Ip { args, op } => {
                    let a: Vec<&str> = args.iter().map(String::as_str).collect();
                    self.exec.run("ip", ops[op].name(), IP, &a, None).map_err(|e| failed(op, format!("{} [ip {}]", e.message, args.join(" "))))?;
                }
                Invocation::DisableIpv6 { name, op } => {
                    write_disable_ipv6(&self.exec, &name).map_err(|m| failed(op, m))?;
                }
                Invocation::Bridge { args, op } => {
                    let a: Vec<&str> = args.iter().map(String::as_str).collect();
                    self.exec.run("bridge", ops[op].name(), BRIDGE, &a, None).map_err(|e| failed(op, format!("{} [bridge {}]", e.message, args.join(" "))))?;
                }
            }
        }
        Ok(())
    }
}

enum BatchError {
    Spawn(HostError),
    Failed { line: Option<usize>, message: String },
}

/// Runs `ip -batch -` with `text` on its standard input (written from a
/// thread by the executor, so a batch larger than the pipe buffer cannot
/// deadlock, and an early exit of `ip` still reports ip's own error).
fn run_batch(exec: &Executor, text: &str) -> Result<(), BatchError> {
    let argv = [OsStr::new(IP), OsStr::new("-batch"), OsStr::new("-")];
    let out = exec.output("apply link changes", "ip -batch", &argv, Input::Bytes(text.as_bytes())).map_err(BatchError::Spawn)?;
    if out.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (line, message) = parse_batch_error(&stderr);
    let message = if message.is_empty() { format!("{IP} -batch exited with {:?}{}", out.code, on_host(exec)) } else { format!("{message}{}", on_host(exec)) };
    Err(BatchError::Failed { line, message })
}

/// `" on HOST"` for a remote executor, nothing for the local host.
fn on_host(exec: &Executor) -> String {
    if exec.is_local() { String::new() } else { format!(" on {}", exec.host_name()) }
}

#[derive(Deserialize)]
struct RawFdb {
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    dst: Option<String>,
}

/// The destinations of the all-zeros entries in `bridge -json fdb show dev X`, sorted.
pub fn parse_peers(json: &str) -> Result<Vec<std::net::IpAddr>, String> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let raw: Vec<RawFdb> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let mut peers: Vec<std::net::IpAddr> = raw.iter().filter(|e| e.mac.as_deref() == Some(HER_MAC)).filter_map(|e| e.dst.as_deref()?.parse().ok()).collect();
    peers.sort();
    peers.dedup();
    Ok(peers)
}

#[derive(Deserialize)]
struct IfNameOnly {
    ifname: String,
}

/// Every link's `disable_ipv6` in one command (`grep -H` over the files of
/// valid link names; a missing file is left out).
fn read_ipv6_disabled_on(exec: &Executor, names: &[String]) -> Result<std::collections::HashMap<String, bool>, HostError> {
    let mut flags = std::collections::HashMap::new();
    let paths: Vec<String> = names.iter().filter(|n| check_name(n).is_ok()).map(|n| ipv6_conf_path(n)).collect();
    if paths.is_empty() {
        return Ok(flags);
    }
    let mut argv: Vec<&OsStr> = vec![OsStr::new("grep"), OsStr::new("-s"), OsStr::new("-H"), OsStr::new(""), OsStr::new("--")];
    argv.extend(paths.iter().map(OsStr::new));
    let out = exec.output("list links", "all links", &argv, Input::None)?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((path, v)) = line.rsplit_once(':') else { continue };
        let Some(name) = path.strip_prefix("/proc/sys/net/ipv6/conf/").and_then(|r| r.strip_suffix("/disable_ipv6")) else { continue };
        match v.trim() {
            "0" => flags.insert(name.to_string(), false),
            "1" => flags.insert(name.to_string(), true),
            _ => None,
        };
    }
    Ok(flags)
}

/// Splits ip's batch stderr into the failed line number (from
/// `Command failed -:N`) and the rest of the message.
fn parse_batch_error(stderr: &str) -> (Option<usize>, String) {
    let mut line = None;
    let mut msg = Vec::new();
    for l in stderr.lines() {
        let t = l.trim();
        if let Some(rest) = t.strip_prefix("Command failed ") {
            line = rest.rsplit(':').next().and_then(|n| n.trim().parse().ok());
        } else if !t.is_empty() {
            msg.push(t);
        }
    }
    (line, msg.join("; "))
}

fn ipv6_conf_path(name: &str) -> String {
    format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6")
}

fn read_ipv6_disabled(name: &str) -> Option<bool> {
    check_name(name).ok()?;
    let s = std::fs::read_to_string(ipv6_conf_path(name)).ok()?;
    match s.trim() {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

fn write_disable_ipv6(exec: &Executor, name: &str) -> Result<(), String> {
    // `name` passed check_name (no '/', not "." or ".."): the path stays under conf/.
    let path = ipv6_conf_path(name);
    if exec.is_local() {
        if !std::path::Path::new("/proc/sys/net/ipv6").exists() {
            return Ok(()); // IPv6 is off kernel-wide: nothing to disable.
        }
        return std::fs::write(&path, "1").map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!("cannot write {path}: no such link")
            } else {
                format!("cannot write {path}: {e}")
            }
        });
    }
    if exec.stat(std::path::Path::new("/proc/sys/net/ipv6")).map_err(|e| e.to_string())?.is_none() {
        return Ok(());
    }
    let argv = [OsStr::new("tee"), OsStr::new("--"), OsStr::new(&path)];
    let out = exec.output("disable IPv6", name, &argv, Input::Bytes(b"1")).map_err(|e| e.to_string())?;
    if out.success() {
        Ok(())
    } else if String::from_utf8_lossy(&out.stderr).contains("No such file") {
        Err(format!("cannot write {path}: no such link{}", on_host(exec)))
    } else {
        Err(format!("cannot write {path}{}: {}", on_host(exec), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

// ---------------------------------------------------------------------------
// Parsing `ip -json -details addr show`

#[derive(Deserialize)]
struct RawLink {
    ifindex: u32,
    ifname: String,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    link_type: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    master: Option<String>,
    /// The peer/parent link's name, when in this namespace.
    #[serde(default)]
    link: Option<String>,
    /// Present when the peer/parent is in another namespace.
    #[serde(default)]
    link_netnsid: Option<serde_json::Value>,
    #[serde(default)]
    ifalias: Option<String>,
    #[serde(default)]
    linkinfo: Option<RawLinkInfo>,
    #[serde(default)]
    addr_info: Vec<RawAddr>,
}

#[derive(Deserialize)]
struct RawLinkInfo {
    #[serde(default)]
    info_kind: Option<String>,
    #[serde(default)]
    info_data: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawAddr {
    #[serde(default)]
    family: Option<String>,
    #[serde(default)]
    local: Option<String>,
    #[serde(default)]
    prefixlen: Option<u8>,
    #[serde(default)]
    scope: Option<String>,
}

/// Parses `ip -json -details addr show` output; `ipv6_disabled` supplies the
/// per-link sysctl (the real host reads `/proc`).
pub fn parse_links(json: &str, ipv6_disabled: impl Fn(&str) -> Option<bool>) -> Result<Vec<Link>, String> {
    let raw: Vec<RawLink> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(raw
        .into_iter()
        .map(|r| {
            let info_kind = r.linkinfo.as_ref().and_then(|i| i.info_kind.as_deref());
            let kind = LinkKind::from_info_kind(info_kind);
            let bridge = if kind == LinkKind::Bridge {
                r.linkinfo.as_ref().and_then(|i| i.info_data.as_ref()).map(|d| {
                    let num = |k: &str| d.get(k).and_then(serde_json::Value::as_u64);
                    BridgeInfo {
                        stp: num("stp_state").unwrap_or(0) != 0,
                        forward_delay_cs: num("forward_delay").and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
                        mcast_snooping: num("mcast_snooping").unwrap_or(0) != 0,
                    }
                })
            } else {
                None
            };
            let vxlan = match (&kind, r.linkinfo.as_ref().and_then(|i| i.info_data.as_ref())) {
                (LinkKind::Other(k), Some(d)) if k == "vxlan" => Some(VxlanInfo {
                    id: d.get("id").and_then(serde_json::Value::as_u64).and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
                    local: d.get("local").or_else(|| d.get("local6")).and_then(serde_json::Value::as_str).and_then(|a| a.parse().ok()),
                    port: d.get("port").and_then(serde_json::Value::as_u64).and_then(|v| u16::try_from(v).ok()).unwrap_or(0),
                    peers: Vec::new(),
                }),
                _ => None,
            };
            let veth_peer = if kind == LinkKind::Veth && r.link_netnsid.is_none() { r.link.clone() } else { None };
            let mac = if r.link_type.as_deref() == Some("ether") { r.address.as_deref().and_then(|a| Mac::parse(a).ok()) } else { None };
            let addrs = r
                .addr_info
                .iter()
                .filter(|a| a.scope.as_deref() == Some("global") && matches!(a.family.as_deref(), Some("inet" | "inet6")))
                .filter_map(|a| {
                    let ip: std::net::IpAddr = a.local.as_deref()?.parse().ok()?;
                    Some(IpCidr { addr: ip, prefix: a.prefixlen? })
                })
                .collect();
            Link {
                ipv6_disabled: ipv6_disabled(&r.ifname),
                up: r.flags.iter().any(|f| f == "UP"),
                promisc: r.flags.iter().any(|f| f == "PROMISC"),
                alias: r.ifalias.filter(|a| !a.is_empty()),
                name: r.ifname,
                ifindex: r.ifindex,
                kind,
                mtu: r.mtu,
                master: r.master,
                mac,
                addrs,
                bridge,
                veth_peer,
                vxlan,
            }
        })
        .collect())
}

// ---------------------------------------------------------------------------
// Nova's hybrid plug

/// The bridge options of a hybrid-plug `qbr` bridge (as os-vif's `brctl setfd 0`, `stp off`, `multicast_snooping 0`).
pub const HYBRID_BRIDGE: BridgeInfo = BridgeInfo { stp: false, forward_delay_cs: 0, mcast_snooping: false };

fn find<'a>(observed: &'a [Link], name: &str) -> Option<&'a Link> {
    observed.iter().find(|l| l.name == name)
}

/// The links among `names` that exist but do not carry exactly `marker`
/// (no marker, another stack's, or another resource's). The planner must
/// report these as conflicts and not apply [`hybrid_plug_ops`] /
/// [`hybrid_unplug_ops`] to them: those functions converge to the desired
/// state and would re-mark or delete such links.
pub fn foreign_links<'a>(observed: &'a [Link], names: &[&str], marker: &str) -> Vec<&'a Link> {
    names.iter().filter_map(|n| find(observed, n)).filter(|l| l.alias.as_deref() != Some(marker)).collect()
}

/// Nova's hybrid-plug bridge and veth steps for one port, in os-vif's order:
/// qbr bridge (forward delay 0, STP off, multicast snooping off, IPv6
/// disabled), veth qvb/qvo (mtu, up, promiscuous, both ends), qbr up, qvb
/// enslaved to qbr. `marker` goes on every link's alias. Returns only the ops
/// still needed given the observed links: partial state is repaired, not
/// duplicated (qbr missing but veth present → create qbr and re-enslave
/// qvb; nothing missing → empty). A qvb/qvo that is not a veth pair with each
/// other is deleted and recreated (as os-vif's `create_veth_pair` does); a
/// qbr that is not a bridge is deleted and recreated.
///
/// The qbr's MTU is not set (as in os-vif): the kernel adjusts a bridge to
/// its ports' MTU, so qbr follows qvb, and libvirt gives the tap the bridge's.
///
/// Check [`foreign_links`] first: this function does not judge ownership.
pub fn hybrid_plug_ops(observed: &[Link], qbr: &str, qvb: &str, qvo: &str, mtu: Option<u32>, marker: &str) -> Vec<LinkOp> {
    let mut ops = Vec::new();
    let mut gone: Vec<String> = Vec::new(); // names deleted by earlier ops (with veth peers)
    fn delete(ops: &mut Vec<LinkOp>, gone: &mut Vec<String>, l: &Link) {
        if gone.contains(&l.name) {
            return;
        }
        ops.push(LinkOp::Delete { name: l.name.clone() });
        gone.push(l.name.clone());
        if let Some(p) = &l.veth_peer {
            gone.push(p.clone());
        }
    }
    let alias_ok = |l: &Link| l.alias.as_deref() == Some(marker);

    // 1. The bridge (os-vif ensure_bridge).
    let br = match find(observed, qbr) {
        Some(l) if l.kind == LinkKind::Bridge => Some(l),
        Some(l) => {
            delete(&mut ops, &mut gone, l);
            None
        }
        None => None,
    };
    match br {
        None => {
            ops.push(LinkOp::CreateBridge {
                name: qbr.into(),
                alias: marker.into(),
                mtu: None,
                stp: HYBRID_BRIDGE.stp,
                forward_delay_cs: HYBRID_BRIDGE.forward_delay_cs,
                mcast_snooping: HYBRID_BRIDGE.mcast_snooping,
            });
            ops.push(LinkOp::DisableIpv6 { name: qbr.into() });
        }
        Some(l) => {
            if !alias_ok(l) {
                ops.push(LinkOp::SetAlias { name: qbr.into(), alias: marker.into() });
            }
            if l.bridge != Some(HYBRID_BRIDGE) {
                ops.push(LinkOp::SetBridgeOpts {
                    name: qbr.into(),
                    stp: HYBRID_BRIDGE.stp,
                    forward_delay_cs: HYBRID_BRIDGE.forward_delay_cs,
                    mcast_snooping: HYBRID_BRIDGE.mcast_snooping,
                });
            }
            if l.ipv6_disabled == Some(false) {
                ops.push(LinkOp::DisableIpv6 { name: qbr.into() });
            }
        }
    }

    // 2. The veth pair (os-vif create_veth_pair: recreate unless both ends exist).
    let vb = find(observed, qvb).filter(|l| !gone.contains(&l.name));
    let vo = find(observed, qvo).filter(|l| !gone.contains(&l.name));
    let paired = match (vb, vo) {
        (Some(b), Some(o)) => {
            b.kind == LinkKind::Veth && o.kind == LinkKind::Veth && b.veth_peer.as_deref() == Some(qvo) && o.veth_peer.as_deref() == Some(qvb)
        }
        _ => false,
    };
    let mut enslaved = false;
    if paired {
        for l in [vb, vo].into_iter().flatten() {
            if !alias_ok(l) {
                ops.push(LinkOp::SetAlias { name: l.name.clone(), alias: marker.into() });
            }
            if let Some(m) = mtu
                && l.mtu != m
            {
                ops.push(LinkOp::SetMtu { name: l.name.clone(), mtu: m });
            }
            if !l.up {
                ops.push(LinkOp::SetUp { name: l.name.clone() });
            }
            if !l.promisc {
                ops.push(LinkOp::SetPromisc { name: l.name.clone(), on: true });
            }
        }
        enslaved = br.is_some() && vb.and_then(|l| l.master.as_deref()) == Some(qbr);
    } else {
        for l in [vb, vo].into_iter().flatten() {
            delete(&mut ops, &mut gone, l);
        }
        ops.push(LinkOp::CreateVeth { name: qvb.into(), peer: qvo.into(), alias: marker.into(), peer_alias: marker.into(), mtu });
        for n in [qvb, qvo] {
            ops.push(LinkOp::SetUp { name: n.into() });
            ops.push(LinkOp::SetPromisc { name: n.into(), on: true });
        }
    }

    // 3. Bridge up, then qvb into it (os-vif add_bridge_port).
    if !br.is_some_and(|l| l.up) {
        ops.push(LinkOp::SetUp { name: qbr.into() });
    }
    if !enslaved {
        ops.push(LinkOp::SetMaster { name: qvb.into(), master: qbr.into() });
    }
    ops
}

/// Reverse of [`hybrid_plug_ops`]: delete qbr and the veth (deleting one
/// veth end removes both); only what exists. The OVS side (`del-port qvo`)
/// belongs between the two, in the OVS adapter.
pub fn hybrid_unplug_ops(observed: &[Link], qbr: &str, qvb: &str) -> Vec<LinkOp> {
    let mut ops = Vec::new();
    if find(observed, qbr).is_some() {
        ops.push(LinkOp::Delete { name: qbr.into() });
    }
    if let Some(l) = find(observed, qvb) {
        // qvb could be qbr's veth peer only in a pathological state; don't delete twice.
        let peer_of_qbr = find(observed, qbr).and_then(|b| b.veth_peer.as_deref()) == Some(qvb);
        if l.name != qbr && !peer_of_qbr {
            ops.push(LinkOp::Delete { name: qvb.into() });
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ip -json -details addr show` captured on a Debian 12 host
    /// (iproute2 6.1, kernel 6.x), one link per line: lo, the host NIC, a
    /// bridge with IPv4/IPv6 addresses and a quoted marker alias, a veth pair
    /// (one end enslaved, the other promiscuous), a tap, Open vSwitch's
    /// userspace-datapath devices (`ovs-netdev`, a netdev bridge and an
    /// internal port: all taps), and a veth whose peer is in another
    /// namespace. The last two lines are hand-written in the shape iproute2
    /// prints for Open vSwitch's kernel datapath (`ovs-system` and an
    /// internal port), which this host cannot load.
    const FIXTURE: &str = r##"[
{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,"qdisc":"noqueue","operstate":"UNKNOWN","group":"default","txqlen":1000,"link_type":"loopback","address":"00:00:00:00:00:00","broadcast":"00:00:00:00:00:00","promiscuity":0,"allmulti":0,"min_mtu":0,"max_mtu":0,"num_tx_queues":1,"num_rx_queues":1,"gso_max_size":65536,"gso_max_segs":65535,"tso_max_size":524280,"tso_max_segs":65535,"gro_max_size":65536,"addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host","label":"lo","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"::1","prefixlen":128,"scope":"host","valid_life_time":4294967295,"preferred_life_time":4294967295}]},
{"ifindex":4,"ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1400,"qdisc":"pfifo_fast","operstate":"UP","group":"default","txqlen":1000,"link_type":"ether","address":"02:fc:00:00:00:01","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":0,"allmulti":0,"min_mtu":68,"max_mtu":65535,"num_tx_queues":1,"num_rx_queues":1,"gso_max_size":65536,"gso_max_segs":65535,"tso_max_size":65536,"tso_max_segs":65535,"gro_max_size":65536,"parentbus":"virtio","parentdev":"virtio2","addr_info":[{"family":"inet","local":"192.0.2.2","prefixlen":24,"broadcast":"192.0.2.255","scope":"global","label":"eth0","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"fd00::2","prefixlen":64,"scope":"global","nodad":true,"valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"fe80::fc:ff:fe00:1","prefixlen":64,"scope":"link","valid_life_time":4294967295,"preferred_life_time":4294967295}]},
{"ifindex":43,"ifname":"fxbr0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1400,"qdisc":"noqueue","operstate":"UP","group":"default","txqlen":1000,"link_type":"ether","address":"ce:d2:1c:c5:d6:c8","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":0,"allmulti":0,"min_mtu":68,"max_mtu":65535,"linkinfo":{"info_kind":"bridge","info_data":{"forward_delay":0,"hello_time":200,"max_age":2000,"ageing_time":30000,"stp_state":0,"priority":32768,"vlan_filtering":0,"bridge_id":"8000.ce:d2:1c:c5:d6:c8","root_id":"8000.ce:d2:1c:c5:d6:c8","root_port":0,"root_path_cost":0,"topology_change":0,"topology_change_detected":0,"hello_timer":0.0,"tcn_timer":0.0,"topology_change_timer":0.0,"gc_timer":276.5,"group_fwd_mask":"0","group_addr":"01:80:c2:00:00:00","mcast_snooping":0,"no_linklocal_learn":0,"mcast_vlan_snooping":0,"mcast_router":1,"mcast_query_use_ifaddr":0,"mcast_querier":0,"mcast_hash_elasticity":16,"mcast_hash_max":4096,"mcast_last_member_cnt":2,"mcast_startup_query_cnt":2,"mcast_last_member_intvl":100,"mcast_membership_intvl":26000,"mcast_querier_intvl":25500,"mcast_query_intvl":12500,"mcast_query_response_intvl":1000,"mcast_startup_query_intvl":3124,"mcast_stats_enabled":0,"mcast_igmp_version":2,"mcast_mld_version":1,"nf_call_iptables":0,"nf_call_ip6tables":0,"nf_call_arptables":0}},"num_tx_queues":1,"num_rx_queues":1,"gso_max_size":65536,"gso_max_segs":65535,"tso_max_size":524280,"tso_max_segs":65535,"gro_max_size":65536,"ifalias":"virtform:demo:port.p[\"a b\"]","addr_info":[{"family":"inet","local":"10.199.0.1","prefixlen":24,"scope":"global","label":"fxbr0","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"fd00:199::1","prefixlen":64,"scope":"global","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"fe80::ccd2:1cff:fec5:d6c8","prefixlen":64,"scope":"link","valid_life_time":4294967295,"preferred_life_time":4294967295}]},
{"ifindex":44,"link":"fxvb0","ifname":"fxvo0","flags":["BROADCAST","MULTICAST","PROMISC","UP","LOWER_UP"],"mtu":1400,"qdisc":"noqueue","operstate":"UP","group":"default","txqlen":1000,"link_type":"ether","address":"de:f7:66:04:23:40","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":1,"allmulti":0,"min_mtu":68,"max_mtu":65535,"linkinfo":{"info_kind":"veth"},"num_tx_queues":2,"num_rx_queues":2,"gso_max_size":65536,"gso_max_segs":65535,"tso_max_size":524280,"tso_max_segs":65535,"gro_max_size":65536,"ifalias":"it's x","addr_info":[{"family":"inet6","local":"fe80::dcf7:66ff:fe04:2340","prefixlen":64,"scope":"link","valid_life_time":4294967295,"preferred_life_time":4294967295}]},
{"ifindex":45,"link":"fxvo0","ifname":"fxvb0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1400,"qdisc":"noqueue","master":"fxbr0","operstate":"UP","group":"default","txqlen":1000,"link_type":"ether","address":"ce:d2:1c:c5:d6:c8","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":1,"allmulti":1,"min_mtu":68,"max_mtu":65535,"linkinfo":{"info_kind":"veth","info_slave_kind":"bridge","info_slave_data":{"state":"forwarding","priority":32,"cost":2,"hairpin":false,"guard":false,"root_block":false,"fastleave":false,"learning":true,"flood":true,"id":"0x8001","no":"0x1","designated_port":32769,"designated_cost":0,"bridge_id":"8000.ce:d2:1c:c5:d6:c8","root_id":"8000.ce:d2:1c:c5:d6:c8","hold_timer":0.0,"message_age_timer":0.0,"forward_delay_timer":0.0,"topology_change_ack":0,"config_pending":0,"proxy_arp":false,"proxy_arp_wifi":false,"multicast_router":1,"mcast_flood":true,"bcast_flood":true,"mcast_to_unicast":false,"neigh_suppress":false,"group_fwd_mask":"0","group_fwd_mask_str":"0x0","vlan_tunnel":false,"isolated":false,"locked":false}},"num_tx_queues":2,"num_rx_queues":2,"gso_max_size":65536,"gso_max_segs":65535,"tso_max_size":524280,"tso_max_segs":65535,"gro_max_size":65536,"addr_info":[{"family":"inet6","local":"fe80::ccd2:1cff:fec5:d6c8","prefixlen":64,"scope":"link","valid_life_time":4294967295,"preferred_life_time":4294967295}]},
{"ifindex":46,"ifname":"fxtap0","flags":["BROADCAST","MULTICAST"],"mtu":1500,"qdisc":"noop","operstate":"DOWN","group":"default","txqlen":1000,"link_type":"ether","address":"46:15:19:87:48:68","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":0,"allmulti":0,"min_mtu":68,"max_mtu":65521,"linkinfo":{"info_kind":"tun","info_data":{"type":"tap","pi":false,"vnet_hdr":false,"multi_queue":false,"persist":true}},"num_tx_queues":1,"num_rx_queues":1,"gso_max_size":65536,"gso_max_segs":65535,"tso_max_size":65536,"tso_max_segs":65535,"gro_max_size":65536,"addr_info":[]},
{"ifindex":47,"ifname":"ovs-netdev","flags":["BROADCAST","MULTICAST","PROMISC"],"mtu":1500,"qdisc":"noop","operstate":"DOWN","group":"default","txqlen":1000,"link_type":"ether","address":"7e:44:97:00:b6:07","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":1,"allmulti":0,"min_mtu":68,"max_mtu":65521,"linkinfo":{"info_kind":"tun","info_data":{"type":"tap","pi":false,"vnet_hdr":false,"multi_queue":false,"persist":true}},"num_tx_queues":1,"num_rx_queues":1,"gso_max_size":65536,"gso_max_segs":65535,"tso_max_size":65536,"tso_max_segs":65535,"gro_max_size":65536,"addr_info":[]},
{"ifindex":48,"ifname":"fxoi0","flags":["BROADCAST","MULTICAST","PROMISC"],"mtu":1500,"qdisc":"noop","operstate":"DOWN","group":"default","txqlen":1000,"link_type":"ether","address":"02:5b:0e:48:14:61","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":1,"allmulti":0,"min_mtu":68,"max_mtu":65521,"linkinfo":{"info_kind":"tun","info_data":{"type":"tap","pi":false,"vnet_hdr":false,"multi_queue":false,"persist":true}},"num_tx_queues":1,"num_rx_queues":1,"gso_max_size":65536,"gso_max_segs":65535,"tso_max_size":65536,"tso_max_segs":65535,"gro_max_size":65536,"addr_info":[]},
{"ifindex":49,"ifname":"fxovs0","flags":["BROADCAST","MULTICAST","PROMISC"],"mtu":1500,"qdisc":"noop","operstate":"DOWN","group":"default","txqlen":1000,"link_type":"ether","address":"82:f1:a3:40:2e:41","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":1,"allmulti":0,"min_mtu":68,"max_mtu":65521,"linkinfo":{"info_kind":"tun","info_data":{"type":"tap","pi":false,"vnet_hdr":false,"multi_queue":false,"persist":true}},"num_tx_queues":1,"num_rx_queues":1,"gso_max_size":65536,"gso_max_segs":65535,"tso_max_size":65536,"tso_max_segs":65535,"gro_max_size":65536,"addr_info":[]},
{"ifindex":50,"link_index":2,"ifname":"fxnv0","flags":["BROADCAST","MULTICAST"],"mtu":1500,"qdisc":"noop","operstate":"DOWN","group":"default","txqlen":1000,"link_type":"ether","address":"12:cc:e5:da:7e:fa","broadcast":"ff:ff:ff:ff:ff:ff","link_netnsid":0,"promiscuity":0,"allmulti":0,"min_mtu":68,"max_mtu":65535,"linkinfo":{"info_kind":"veth"},"num_tx_queues":2,"num_rx_queues":2,"gso_max_size":65536,"gso_max_segs":65535,"tso_max_size":524280,"tso_max_segs":65535,"gro_max_size":65536,"ifalias":"virtform:demo:network.lan","addr_info":[]},
{"ifindex":60,"ifname":"ovs-system","flags":["BROADCAST","MULTICAST"],"mtu":1500,"qdisc":"noop","operstate":"DOWN","group":"default","txqlen":1000,"link_type":"ether","address":"5a:1e:0c:7b:52:11","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":1,"allmulti":0,"min_mtu":68,"max_mtu":65535,"linkinfo":{"info_kind":"openvswitch"},"num_tx_queues":1,"num_rx_queues":1,"addr_info":[]},
{"ifindex":61,"ifname":"br-int","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1450,"qdisc":"noqueue","master":"ovs-system","operstate":"UNKNOWN","group":"default","txqlen":1000,"link_type":"ether","address":"9e:4d:2c:11:20:4f","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":1,"allmulti":0,"min_mtu":68,"max_mtu":65535,"linkinfo":{"info_kind":"openvswitch","info_slave_kind":"openvswitch"},"num_tx_queues":1,"num_rx_queues":1,"addr_info":[]}
]"##;

    fn fixture() -> Vec<Link> {
        parse_links(FIXTURE, |n| match n {
            "fxbr0" => Some(true),
            "lo" => None,
            _ => Some(false),
        })
        .unwrap()
    }

    fn get<'a>(links: &'a [Link], name: &str) -> &'a Link {
        links.iter().find(|l| l.name == name).unwrap_or_else(|| panic!("{name} not parsed"))
    }

    fn cidr(s: &str) -> IpCidr {
        IpCidr::parse(s).unwrap()
    }

    #[test]
    fn parses_every_field_of_real_output() {
        let links = fixture();
        assert_eq!(links.len(), 12);

        let lo = get(&links, "lo");
        assert_eq!((lo.ifindex, lo.mtu, lo.up, lo.promisc), (1, 65536, true, false));
        assert_eq!(lo.kind, LinkKind::Other(String::new()));
        assert_eq!(lo.mac, None, "lo is not Ethernet");
        assert!(lo.addrs.is_empty(), "host-scope addresses are not listed: {:?}", lo.addrs);
        assert_eq!(lo.ipv6_disabled, None);

        let eth = get(&links, "eth0");
        assert_eq!(eth.addrs, vec![cidr("192.0.2.2/24"), cidr("fd00::2/64")], "no link-local");
        assert_eq!(eth.mac, Some(Mac::parse("02:fc:00:00:00:01").unwrap()));

        let br = get(&links, "fxbr0");
        assert_eq!(
            br,
            &Link {
                name: "fxbr0".into(),
                ifindex: 43,
                kind: LinkKind::Bridge,
                alias: Some("virtform:demo:port.p[\"a b\"]".into()),
                mtu: 1400,
                up: true,
                promisc: false,
                master: None,
                mac: Some(Mac::parse("ce:d2:1c:c5:d6:c8").unwrap()),
                addrs: vec![cidr("10.199.0.1/24"), cidr("fd00:199::1/64")],
                bridge: Some(BridgeInfo { stp: false, forward_delay_cs: 0, mcast_snooping: false }),
                veth_peer: None,
                vxlan: None,
                ipv6_disabled: Some(true),
            }
        );
        assert_eq!(br.owner(), Some(("demo", "port.p[\"a b\"]")));

        let vo = get(&links, "fxvo0");
        assert_eq!(vo.kind, LinkKind::Veth);
        assert_eq!(vo.veth_peer.as_deref(), Some("fxvb0"));
        assert!(vo.promisc && vo.up);
        assert_eq!(vo.alias.as_deref(), Some("it's x"));
        assert_eq!(vo.owner(), None, "not a marker");
        assert!(vo.addrs.is_empty());

        let vb = get(&links, "fxvb0");
        assert_eq!(vb.veth_peer.as_deref(), Some("fxvo0"));
        assert_eq!(vb.master.as_deref(), Some("fxbr0"));
        assert!(!vb.promisc, "a bridge port's promiscuity count is 1, but PROMISC was not requested");
        assert_eq!(vb.alias, None);
        assert_eq!(vb.bridge, None);

        let tap = get(&links, "fxtap0");
        assert_eq!((tap.kind.clone(), tap.up, tap.mtu), (LinkKind::Tun, false, 1500));
        for n in ["ovs-netdev", "fxoi0", "fxovs0"] {
            let l = get(&links, n);
            assert_eq!(l.kind, LinkKind::Tun, "{n}: OVS's netdev datapath uses taps");
            assert!(l.promisc, "{n}");
        }

        let nv = get(&links, "fxnv0");
        assert_eq!(nv.kind, LinkKind::Veth);
        assert_eq!(nv.veth_peer, None, "peer in another namespace");
        assert_eq!(nv.owner(), Some(("demo", "network.lan")));

        assert_eq!(get(&links, "ovs-system").kind, LinkKind::OpenvswitchInternal);
        let brint = get(&links, "br-int");
        assert_eq!(brint.kind, LinkKind::OpenvswitchInternal);
        assert_eq!(brint.master.as_deref(), Some("ovs-system"));
    }

    #[test]
    fn parse_tolerates_sparse_and_odd_entries() {
        let json = r#"[{"ifindex":7,"ifname":"gre0","flags":["NOARP"],"mtu":1476,"link_type":"gre","address":"0.0.0.0","linkinfo":{"info_kind":"gre"},"ifalias":"","addr_info":[{},{"family":"inet","local":"10.0.0.1","scope":"global"}]}]"#;
        let links = parse_links(json, |_| None).unwrap();
        assert_eq!(links[0].kind, LinkKind::Other("gre".into()));
        assert_eq!(links[0].mac, None);
        assert_eq!(links[0].alias, None, "an empty alias is no alias");
        assert!(links[0].addrs.is_empty(), "entries without local/prefixlen are skipped");
        assert!(parse_links("not json", |_| None).is_err());
        assert_eq!(parse_links("[]", |_| None).unwrap(), vec![]);
    }

    fn batch(ops: &[LinkOp]) -> String {
        match invocations(ops).unwrap().as_slice() {
            [Invocation::Batch { text, ops: line_ops }] => {
                assert_eq!(line_ops.len(), text.lines().count());
                text.clone()
            }
            other => panic!("expected one batch, got {other:?}"),
        }
    }

    #[test]
    fn renders_every_op_as_batch_lines() {
        let ops = vec![
            LinkOp::CreateBridge { name: "vf-lan0".into(), alias: "virtform:demo:network.lan".into(), mtu: Some(1450), stp: false, forward_delay_cs: 0, mcast_snooping: false },
            LinkOp::CreateBridge { name: "vf-stp0".into(), alias: String::new(), mtu: None, stp: true, forward_delay_cs: 1500, mcast_snooping: true },
            LinkOp::CreateVeth { name: "qvb1".into(), peer: "qvo1".into(), alias: "virtform:demo:port.p[\"a b\"]".into(), peer_alias: "it's".into(), mtu: Some(1450) },
            LinkOp::CreateVeth { name: "v0".into(), peer: "v1".into(), alias: String::new(), peer_alias: String::new(), mtu: None },
            LinkOp::SetMtu { name: "vf-lan0".into(), mtu: 9000 },
            LinkOp::SetAlias { name: "vf-lan0".into(), alias: "x".into() },
            LinkOp::SetUp { name: "vf-lan0".into() },
            LinkOp::SetDown { name: "vf-lan0".into() },
            LinkOp::SetPromisc { name: "qvo1".into(), on: true },
            LinkOp::SetPromisc { name: "qvo1".into(), on: false },
            LinkOp::SetMaster { name: "qvb1".into(), master: "vf-lan0".into() },
            LinkOp::NoMaster { name: "qvb1".into() },
            LinkOp::SetBridgeOpts { name: "vf-lan0".into(), stp: false, forward_delay_cs: 0, mcast_snooping: false },
            LinkOp::SetBridgeOpts { name: "vf-lan0".into(), stp: true, forward_delay_cs: 400, mcast_snooping: true },
            LinkOp::AddAddr { name: "vf-lan0".into(), addr: cidr("10.77.0.1/24") },
            LinkOp::AddAddr { name: "vf-lan0".into(), addr: cidr("10.77.1.1/31") },
            LinkOp::AddAddr { name: "vf-lan0".into(), addr: cidr("fd00:77::1/64") },
            LinkOp::DelAddr { name: "vf-lan0".into(), addr: cidr("10.77.0.1/24") },
            LinkOp::Delete { name: "vf-lan0".into() },
        ];
        let expected = r#"link add name vf-lan0 mtu 1450 type bridge stp_state 0 forward_delay 0 mcast_snooping 0
link set dev vf-lan0 alias 'virtform:demo:network.lan'
link add name vf-stp0 type bridge stp_state 1 forward_delay 1500 mcast_snooping 1
link add name qvb1 mtu 1450 type veth peer name qvo1 mtu 1450
link set dev qvb1 alias 'virtform:demo:port.p["a b"]'
link set dev qvo1 alias "it's"
link add name v0 type veth peer name v1
link set dev vf-lan0 mtu 9000
link set dev vf-lan0 alias 'x'
link set dev vf-lan0 up
link set dev vf-lan0 down
link set dev qvo1 promisc on
link set dev qvo1 promisc off
link set dev qvb1 master vf-lan0
link set dev qvb1 nomaster
link set dev vf-lan0 type bridge stp_state 0
link set dev vf-lan0 type bridge forward_delay 0 mcast_snooping 0
link set dev vf-lan0 type bridge forward_delay 400 mcast_snooping 1 stp_state 1
addr add 10.77.0.1/24 broadcast + dev vf-lan0
addr add 10.77.1.1/31 dev vf-lan0
addr add fd00:77::1/64 dev vf-lan0
addr del 10.77.0.1/24 dev vf-lan0
link del dev vf-lan0
"#;
        assert_eq!(batch(&ops), expected);
        // Every line maps back to the op that produced it.
        let Invocation::Batch { ops: line_ops, .. } = &invocations(&ops).unwrap()[0] else { unreachable!() };
        assert_eq!(line_ops[..7], [0, 0, 1, 2, 2, 2, 3]);
        assert_eq!(line_ops[15..18], [12, 12, 13]);
        assert_eq!(*line_ops.last().unwrap(), ops.len() - 1);
    }

    /// iproute2's batch tokenizer (lib/utils.c getcmdline + makeargs), to
    /// check that rendered lines come back as the intended words.
    fn ip_tokenize(line: &str) -> Vec<String> {
        let line = line.split('#').next().unwrap();
        let mut out = Vec::new();
        let mut rest = line;
        loop {
            rest = rest.trim_start_matches([' ', '\t', '\r', '\n']);
            if rest.is_empty() {
                break;
            }
            let q = rest.chars().next().unwrap();
            if q == '\'' || q == '"' {
                let end = rest[1..].find(q).expect("unterminated quote");
                out.push(rest[1..1 + end].to_string());
                rest = &rest[(2 + end).min(rest.len())..];
                // makeargs overwrites the character after the closing quote's position
                // (the quote itself), then continues; nothing else is skipped.
            } else {
                let end = rest.find([' ', '\t', '\r', '\n']).unwrap_or(rest.len());
                out.push(rest[..end].to_string());
                rest = &rest[end..];
            }
        }
        out
    }

    #[test]
    fn aliases_survive_the_batch_tokenizer_or_go_by_argument_vector() {
        for alias in ["virtform:demo:port.p[\"a b\"]", "it's", "  spaced\ttab  ", "", "virtform:s:instance.x[\"k.1\"]", "up down mtu 1"] {
            let ops = [LinkOp::SetAlias { name: "br0".into(), alias: alias.into() }];
            let text = batch(&ops);
            let words = ip_tokenize(text.trim_end_matches('\n'));
            assert_eq!(words, ["link", "set", "dev", "br0", "alias", alias], "{text}");
        }
        for alias in ["both ' and \"", "hash # here", "line\nbreak"] {
            let ops = [LinkOp::SetUp { name: "br0".into() }, LinkOp::SetAlias { name: "br0".into(), alias: alias.into() }, LinkOp::SetDown { name: "br0".into() }];
            let inv = invocations(&ops).unwrap();
            assert_eq!(inv.len(), 3, "{alias:?}: {inv:?}");
            assert_eq!(inv[1], Invocation::Ip { args: ["link", "set", "dev", "br0", "alias", alias].map(String::from).to_vec(), op: 1 });
            assert!(matches!(&inv[2], Invocation::Batch { ops, .. } if ops == &[2]));
        }
        // A create whose alias needs an argument vector: link add in a batch, alias after it.
        let ops = [LinkOp::CreateBridge { name: "br0".into(), alias: "a#b".into(), mtu: None, stp: false, forward_delay_cs: 0, mcast_snooping: false }];
        let inv = invocations(&ops).unwrap();
        assert!(matches!(&inv[..], [Invocation::Batch { .. }, Invocation::Ip { op: 0, .. }]), "{inv:?}");
    }

    #[test]
    fn bad_names_and_options_are_refused_before_anything_runs() {
        let good = LinkOp::CreateBridge { name: "vfok0".into(), alias: "m".into(), mtu: None, stp: false, forward_delay_cs: 0, mcast_snooping: false };
        for bad in ["", "../../../etc", "..", ".", "a/b", "-dev", "--help", "a b", "a:b", "a#b", "a'b", "a\"b", "a\\b", "sixteen-chars-xx", "tab\there", "new\nline"] {
            for op in [
                LinkOp::DisableIpv6 { name: bad.into() },
                LinkOp::Delete { name: bad.into() },
                LinkOp::SetMaster { name: "vfok0".into(), master: bad.into() },
                LinkOp::CreateVeth { name: "vfok0".into(), peer: bad.into(), alias: String::new(), peer_alias: String::new(), mtu: None },
            ] {
                let e = invocations(&[good.clone(), op.clone()]).unwrap_err();
                assert_eq!(e.object, bad, "{op:?}");
                assert_eq!(e.op, op.describe());
                // IpLinks::apply checks first: a bad op after a good one runs nothing.
                assert_eq!(IpLinks::local().apply(&[good.clone(), op]).unwrap_err(), e);
            }
        }
        let e = invocations(&[LinkOp::SetAlias { name: "br0".into(), alias: "x".repeat(256) }]).unwrap_err();
        assert!(e.message.contains("256 bytes"), "{e}");
        assert!(invocations(&[LinkOp::SetAlias { name: "br0".into(), alias: "x".repeat(255) }]).is_ok());
        assert!(invocations(&[LinkOp::SetAlias { name: "br0".into(), alias: "a\0b".into() }]).is_err());
        for fd in [0, 199, 3001] {
            let e = invocations(&[LinkOp::SetBridgeOpts { name: "br0".into(), stp: true, forward_delay_cs: fd, mcast_snooping: false }]).unwrap_err();
            assert!(e.message.contains("200..=3000"), "{e}");
            assert!(e.hint.is_some());
        }
        assert!(invocations(&[LinkOp::SetBridgeOpts { name: "br0".into(), stp: false, forward_delay_cs: 0, mcast_snooping: false }]).is_ok());
        assert_eq!(invocations(&[]).unwrap(), vec![]);
        assert_eq!(IpLinks::local().apply(&[]), Ok(()));
    }

    #[test]
    fn batch_errors_name_the_line() {
        assert_eq!(parse_batch_error("Cannot find device \"fxnone0\"\nCommand failed -:2\n"), (Some(2), "Cannot find device \"fxnone0\"".to_string()));
        assert_eq!(parse_batch_error("RTNETLINK answers: File exists\nCommand failed -:17"), (Some(17), "RTNETLINK answers: File exists".to_string()));
        assert_eq!(parse_batch_error("Error: something\n"), (None, "Error: something".to_string()));
    }

    fn link(name: &str, kind: LinkKind) -> Link {
        Link {
            name: name.into(),
            ifindex: 100,
            kind,
            alias: None,
            mtu: 1500,
            up: false,
            promisc: false,
            master: None,
            mac: Some(Mac::derived(name)),
            addrs: vec![],
            bridge: None,
            veth_peer: None,
            vxlan: None,
            ipv6_disabled: Some(false),
        }
    }

    const M: &str = "virtform:demo:port.p";
    const QBR: &str = "qbr0123456789a";
    const QVB: &str = "qvb0123456789a";
    const QVO: &str = "qvo0123456789a";

    /// The host after a complete hybrid plug with MTU 1450.
    fn plugged() -> Vec<Link> {
        let mut br = link(QBR, LinkKind::Bridge);
        br.alias = Some(M.into());
        br.bridge = Some(HYBRID_BRIDGE);
        br.ipv6_disabled = Some(true);
        br.up = true;
        br.mtu = 1450;
        let mut vb = link(QVB, LinkKind::Veth);
        vb.veth_peer = Some(QVO.into());
        vb.master = Some(QBR.into());
        let mut vo = link(QVO, LinkKind::Veth);
        vo.veth_peer = Some(QVB.into());
        for v in [&mut vb, &mut vo] {
            v.alias = Some(M.into());
            v.mtu = 1450;
            v.up = true;
            v.promisc = true;
        }
        vec![link("eth0", LinkKind::Other(String::new())), br, vb, vo]
    }

    fn plug(observed: &[Link]) -> Vec<LinkOp> {
        hybrid_plug_ops(observed, QBR, QVB, QVO, Some(1450), M)
    }

    fn s(x: &str) -> String {
        x.to_string()
    }

    #[test]
    fn hybrid_plug_from_nothing_follows_os_vif_order() {
        let ops = plug(&[link("eth0", LinkKind::Other(String::new()))]);
        assert_eq!(
            ops,
            vec![
                LinkOp::CreateBridge { name: s(QBR), alias: s(M), mtu: None, stp: false, forward_delay_cs: 0, mcast_snooping: false },
                LinkOp::DisableIpv6 { name: s(QBR) },
                LinkOp::CreateVeth { name: s(QVB), peer: s(QVO), alias: s(M), peer_alias: s(M), mtu: Some(1450) },
                LinkOp::SetUp { name: s(QVB) },
                LinkOp::SetPromisc { name: s(QVB), on: true },
                LinkOp::SetUp { name: s(QVO) },
                LinkOp::SetPromisc { name: s(QVO), on: true },
                LinkOp::SetUp { name: s(QBR) },
                LinkOp::SetMaster { name: s(QVB), master: s(QBR) },
            ]
        );
        // Two `ip -batch` processes and one sysctl write: IPv6 goes off before the bridge is up.
        let inv = invocations(&ops).unwrap();
        assert!(matches!(&inv[..], [Invocation::Batch { .. }, Invocation::DisableIpv6 { op: 1, .. }, Invocation::Batch { .. }]), "{inv:?}");
        let Invocation::Batch { text, .. } = &inv[2] else { unreachable!() };
        assert!(text.ends_with(&format!("link set dev {QBR} up\nlink set dev {QVB} master {QBR}\n")), "{text}");
        // Without an MTU, none is set.
        let ops = hybrid_plug_ops(&[], QBR, QVB, QVO, None, M);
        assert!(matches!(&ops[2], LinkOp::CreateVeth { mtu: None, .. }));
    }

    #[test]
    fn hybrid_plug_on_a_complete_host_is_empty() {
        assert_eq!(plug(&plugged()), vec![]);
        // The MTU is only compared when one is wanted.
        assert_eq!(hybrid_plug_ops(&plugged(), QBR, QVB, QVO, None, M), vec![]);
        assert!(foreign_links(&plugged(), &[QBR, QVB, QVO], M).is_empty());
    }

    #[test]
    fn hybrid_plug_repairs_a_missing_bridge_without_touching_the_veth() {
        let mut host = plugged();
        host.retain(|l| l.name != QBR);
        host.iter_mut().for_each(|l| l.master = None); // the kernel released qvb with the bridge
        assert_eq!(
            plug(&host),
            vec![
                LinkOp::CreateBridge { name: s(QBR), alias: s(M), mtu: None, stp: false, forward_delay_cs: 0, mcast_snooping: false },
                LinkOp::DisableIpv6 { name: s(QBR) },
                LinkOp::SetUp { name: s(QBR) },
                LinkOp::SetMaster { name: s(QVB), master: s(QBR) },
            ]
        );
    }

    #[test]
    fn hybrid_plug_recreates_a_half_veth() {
        let mut host = plugged();
        host.retain(|l| l.name != QVO);
        host.iter_mut().filter(|l| l.name == QVB).for_each(|l| l.veth_peer = Some("other0".into()));
        assert_eq!(
            plug(&host),
            vec![
                LinkOp::Delete { name: s(QVB) },
                LinkOp::CreateVeth { name: s(QVB), peer: s(QVO), alias: s(M), peer_alias: s(M), mtu: Some(1450) },
                LinkOp::SetUp { name: s(QVB) },
                LinkOp::SetPromisc { name: s(QVB), on: true },
                LinkOp::SetUp { name: s(QVO) },
                LinkOp::SetPromisc { name: s(QVO), on: true },
                LinkOp::SetMaster { name: s(QVB), master: s(QBR) },
            ]
        );
        // qvo alone (qvb gone): the stale qvo is deleted too.
        let mut host = plugged();
        host.retain(|l| l.name != QVB);
        let ops = plug(&host);
        assert_eq!(ops[0], LinkOp::Delete { name: s(QVO) });
        assert!(matches!(ops[1], LinkOp::CreateVeth { .. }));
    }

    #[test]
    fn hybrid_plug_corrects_drift_attribute_by_attribute() {
        let mut host = plugged();
        for l in host.iter_mut() {
            match l.name.as_str() {
                QBR => {
                    l.bridge = Some(BridgeInfo { stp: true, forward_delay_cs: 1500, mcast_snooping: true });
                    l.ipv6_disabled = Some(false);
                    l.up = false;
                    l.alias = None;
                }
                QVB => {
                    l.master = Some("elsewhere".into());
                    l.mtu = 1500;
                }
                QVO => {
                    l.up = false;
                    l.promisc = false;
                    l.alias = Some("virtform:other:port.q".into());
                }
                _ => {}
            }
        }
        assert_eq!(
            plug(&host),
            vec![
                LinkOp::SetAlias { name: s(QBR), alias: s(M) },
                LinkOp::SetBridgeOpts { name: s(QBR), stp: false, forward_delay_cs: 0, mcast_snooping: false },
                LinkOp::DisableIpv6 { name: s(QBR) },
                LinkOp::SetMtu { name: s(QVB), mtu: 1450 },
                LinkOp::SetAlias { name: s(QVO), alias: s(M) },
                LinkOp::SetUp { name: s(QVO) },
                LinkOp::SetPromisc { name: s(QVO), on: true },
                LinkOp::SetUp { name: s(QBR) },
                LinkOp::SetMaster { name: s(QVB), master: s(QBR) },
            ]
        );
        let foreign: Vec<&str> = foreign_links(&host, &[QBR, QVB, QVO], M).iter().map(|l| l.name.as_str()).collect();
        assert_eq!(foreign, [QBR, QVO]);
        // Unknown IPv6 state (IPv6 off kernel-wide) is not drift.
        let mut host = plugged();
        host.iter_mut().for_each(|l| l.ipv6_disabled = None);
        assert_eq!(plug(&host), vec![]);
    }

    #[test]
    fn hybrid_plug_replaces_a_qbr_that_is_not_a_bridge() {
        let mut host = plugged();
        host.iter_mut().filter(|l| l.name == QBR).for_each(|l| {
            l.kind = LinkKind::Tun;
            l.bridge = None;
        });
        host.iter_mut().for_each(|l| if l.name == QVB { l.master = None });
        let ops = plug(&host);
        assert_eq!(ops[0], LinkOp::Delete { name: s(QBR) });
        assert!(matches!(&ops[1], LinkOp::CreateBridge { name, .. } if name == QBR));
        assert_eq!(ops.len(), 5, "{ops:?}");
    }

    #[test]
    fn hybrid_unplug_deletes_only_what_exists() {
        assert_eq!(hybrid_unplug_ops(&plugged(), QBR, QVB), vec![LinkOp::Delete { name: s(QBR) }, LinkOp::Delete { name: s(QVB) }]);
        let mut host = plugged();
        host.retain(|l| l.name != QBR);
        assert_eq!(hybrid_unplug_ops(&host, QBR, QVB), vec![LinkOp::Delete { name: s(QVB) }]);
        host.retain(|l| l.name != QVB && l.name != QVO);
        assert_eq!(hybrid_unplug_ops(&host, QBR, QVB), vec![]);
        assert_eq!(hybrid_unplug_ops(&[], QBR, QVB), vec![]);
    }

    #[test]
    fn op_descriptions_name_the_change() {
        assert_eq!(LinkOp::SetMtu { name: s("x"), mtu: 1400 }.describe(), "set mtu 1400");
        assert_eq!(LinkOp::AddAddr { name: s("x"), addr: cidr("10.0.0.1/24") }.describe(), "add address 10.0.0.1/24");
        assert_eq!(LinkOp::CreateVeth { name: s("a"), peer: s("b"), alias: s(""), peer_alias: s(""), mtu: None }.names(), ["a", "b"]);
        assert_eq!(LinkOp::SetMaster { name: s("a"), master: s("br") }.name(), "a");
    }

    #[test]
    fn vxlan_devices_are_read_with_their_flood_entries_and_created_in_one_batch() {
        let json = r#"[{"ifindex":9,"ifname":"vx5001","flags":["BROADCAST","MULTICAST","UP"],"mtu":1450,"link_type":"ether","address":"02:eb:38:79:51:16","master":"vfab-t","ifalias":"virtform:s:network.t","linkinfo":{"info_kind":"vxlan","info_data":{"id":5001,"local":"10.99.0.11","port":4789,"learning":true}},"addr_info":[]}]"#;
        let l = &parse_links(json, |_| None).unwrap()[0];
        assert_eq!(l.vxlan, Some(VxlanInfo { id: 5001, local: Some("10.99.0.11".parse().unwrap()), port: 4789, peers: vec![] }));
        assert_eq!(l.master.as_deref(), Some("vfab-t"));
        let fdb = r#"[{"mac":"aa:bb:cc:dd:ee:ff","dst":"10.99.0.13","flags":["self"]},{"mac":"00:00:00:00:00:00","dst":"10.99.0.13","flags":["self"],"state":"permanent"},{"mac":"00:00:00:00:00:00","dst":"10.99.0.12","flags":["self"],"state":"permanent"},{"mac":"02:eb:38:79:51:16","vlan":1,"master":"vfab-t","state":"permanent"}]"#;
        assert_eq!(parse_peers(fdb).unwrap(), ["10.99.0.12".parse::<std::net::IpAddr>().unwrap(), "10.99.0.13".parse().unwrap()]);
        assert_eq!(parse_peers("").unwrap(), Vec::<std::net::IpAddr>::new());
        let ops = [
            LinkOp::CreateVxlan { name: s("vx5001"), alias: s("virtform:s:network.t"), id: 5001, local: "10.99.0.11".parse().unwrap(), port: 4789, mtu: Some(1450) },
            LinkOp::AddPeer { name: s("vx5001"), dst: "10.99.0.12".parse().unwrap() },
            LinkOp::SetUp { name: s("vx5001") },
        ];
        let inv = invocations(&ops).unwrap();
        assert_eq!(
            inv,
            [
                Invocation::Batch { text: "link add name vx5001 mtu 1450 type vxlan id 5001 local 10.99.0.11 dstport 4789\nlink set dev vx5001 alias 'virtform:s:network.t'\n".into(), ops: vec![0, 0] },
                Invocation::Bridge { args: ["fdb", "append", "00:00:00:00:00:00", "dev", "vx5001", "dst", "10.99.0.12"].map(String::from).to_vec(), op: 1 },
                Invocation::Batch { text: "link set dev vx5001 up\n".into(), ops: vec![2] },
            ]
        );
        // A hostile device name is refused before anything runs.
        assert!(invocations(&[LinkOp::AddPeer { name: s("-x"), dst: "10.99.0.12".parse().unwrap() }]).is_err());
    }
}
