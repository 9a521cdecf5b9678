use super::*;

fn mac(s: &str) -> Mac {
    Mac::parse(s).unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn nat() -> NetworkDef {
    NetworkDef {
        name: "vf-demo-nat".into(),
        uuid: "9a8b7c6d-5e4f-5a3b-8c2d-1e0f9a8b7c6d".into(),
        bridge: "vfnat5e4f3a".into(),
        mtu: None,
        address: Some((ip("10.199.252.1"), 24)),
        forward: Forward::Nat,
        dhcp_range: Some((ip("10.199.252.100"), ip("10.199.252.200"))),
        hosts: vec![
            DhcpHost { mac: mac("52:54:00:c1:00:03"), ip: ip("10.199.252.20"), name: Some("runner-3".into()) },
            DhcpHost { mac: mac("52:54:00:c1:00:01"), ip: ip("10.199.252.21"), name: None },
        ],
        stp: false,
        delay: 0,
    }
}

fn isolated() -> NetworkDef {
    NetworkDef {
        name: "vf-lab-iso".into(),
        uuid: "0f0e0d0c-0b0a-5908-8706-050403020100".into(),
        bridge: "vfiso0".into(),
        mtu: Some(9000),
        address: Some((ip("192.168.77.1"), 28)),
        forward: Forward::None,
        dhcp_range: None,
        hosts: vec![],
        stp: true,
        delay: 2,
    }
}

fn hostile() -> NetworkDef {
    let mut n = nat();
    n.name = "net<&'\"$(x)>\n\tz".into();
    n.bridge = "br<&'\">".into();
    n.hosts[0].name = Some("h<&'\">\nz".into());
    n
}

#[test]
fn snapshots() {
    insta::assert_snapshot!("network_nat", network_xml(&nat()));
    insta::assert_snapshot!("network_isolated", network_xml(&isolated()));
    insta::assert_snapshot!("network_hostile", network_xml(&hostile()));
    insta::assert_snapshot!("network_nat_normalized", ObservedNetwork::from_def(&nat()).normalized_xml());
    insta::assert_snapshot!("dhcp_host", dhcp_host_xml(&mac("52:54:00:AB:CD:EF"), ip("10.0.0.9"), Some("web-0")));
}

#[test]
fn dhcp_host_entries() {
    assert_eq!(dhcp_host_xml(&mac("52:54:00:AB:CD:EF"), ip("10.0.0.9"), Some("web-0")), "<host mac=\"52:54:00:ab:cd:ef\" name=\"web-0\" ip=\"10.0.0.9\"/>\n");
    assert_eq!(dhcp_host_xml(&mac("52:54:00:ab:cd:ef"), ip("10.0.0.9"), None), "<host mac=\"52:54:00:ab:cd:ef\" ip=\"10.0.0.9\"/>\n");
    assert_eq!(dhcp_host_xml(&mac("52:54:00:ab:cd:ef"), ip("10.0.0.9"), Some("")), "<host mac=\"52:54:00:ab:cd:ef\" ip=\"10.0.0.9\"/>\n");
    let x = dhcp_host_xml(&mac("52:54:00:ab:cd:ef"), ip("10.0.0.9"), Some("a'\"<&>"));
    let doc = crate::xml::Doc::parse(&x, "host").unwrap();
    assert_eq!(doc.root().attr("name"), Some("a'\"<&>"));
    // The same element as inside the network document.
    let net = network_xml(&nat());
    let h = &nat().hosts[0];
    assert!(net.contains(dhcp_host_xml(&h.mac, h.ip, h.name.as_deref()).trim()));
}

#[test]
fn round_trip_of_our_own_output() {
    for n in [nat(), isolated(), hostile()] {
        let xml = network_xml(&n);
        let o = parse_network(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
        let want = ObservedNetwork::from_def(&n);
        assert_eq!(o, want);
        assert!(want.changed_fields(&o).is_empty());
        assert_eq!(o.normalized_xml(), want.normalized_xml());
    }
    let h = parse_network(&network_xml(&hostile())).unwrap();
    assert_eq!(h.name, hostile().name);
    assert_eq!(h.bridge.as_deref(), Some("br<&'\">"));
    assert_eq!(h.hosts[0].name.as_deref(), Some("h<&'\">\nz"));
}

#[test]
fn hosts_without_a_range_and_no_address() {
    let mut n = isolated();
    n.hosts = vec![DhcpHost { mac: mac("52:54:00:00:00:01"), ip: ip("192.168.77.5"), name: None }];
    let x = network_xml(&n);
    assert!(x.contains("<dhcp>") && !x.contains("<range"));
    assert_eq!(parse_network(&x).unwrap(), ObservedNetwork::from_def(&n));
    n.address = None;
    let x = network_xml(&n);
    assert!(!x.contains("<ip"));
    assert_eq!(parse_network(&x).unwrap(), ObservedNetwork::from_def(&n));
}

/// `virsh net-dumpxml --inactive` of `nat()` as libvirt 9.0 stores it: a
/// generated bridge MAC, the NAT port range, DNS and domain settings, DHCP
/// host MACs kept as written (uppercase here), an IPv6 address, and the
/// netmask form.
const LIBVIRT_NAT: &str = r#"<network connections='1'>
  <name>vf-demo-nat</name>
  <uuid>9A8B7C6D-5E4F-5A3B-8C2D-1E0F9A8B7C6D</uuid>
  <forward mode='nat'>
    <nat>
      <port start='1024' end='65535'/>
    </nat>
  </forward>
  <bridge name='vfnat5e4f3a' stp='off' delay='0'/>
  <mac address='52:54:00:54:98:dc'/>
  <domain name='demo' localOnly='yes'/>
  <dns enable='yes'/>
  <ip family='ipv6' address='fd00:77::1' prefix='64'/>
  <ip address='10.199.252.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='10.199.252.100' end='10.199.252.200'>
        <lease expiry='1' unit='hours'/>
      </range>
      <host mac='52:54:00:C1:00:01' ip='10.199.252.21'/>
      <host mac='52:54:00:C1:00:03' name='runner-3' ip='10.199.252.20'/>
      <host id='0:1:0:1:2c:3d' ip='10.199.252.30'/>
    </dhcp>
  </ip>
</network>
"#;

#[test]
fn libvirt_rendition_parses_to_the_same_values() {
    let got = parse_network(LIBVIRT_NAT).unwrap();
    let want = ObservedNetwork::from_def(&nat());
    assert_eq!(got.address, Some((ip("10.199.252.1"), 24)), "netmask → prefix");
    assert_eq!(got.hosts[0].mac.to_string(), "52:54:00:c1:00:01");
    assert!(want.changed_fields(&got).is_empty(), "{:?}", want.changed_fields(&got));
    assert_eq!(got.normalized(), want.normalized());
    assert_eq!(got.normalized_xml(), want.normalized_xml());
}

#[test]
fn defaults_and_changes() {
    // No stp/delay: libvirt's defaults (stp on, delay 0); no mode: nat.
    let x = "<network><name>n</name><forward/><bridge name='b'/><ip address='10.1.2.3'/></network>";
    let o = parse_network(x).unwrap();
    assert_eq!((o.stp, o.delay, o.forward.as_deref()), (true, 0, Some("nat")));
    assert_eq!(o.address, Some((ip("10.1.2.3"), 8)), "classful default");
    let base = ObservedNetwork::from_def(&nat());
    let changed = |f: &dyn Fn(&mut NetworkDef)| {
        let mut n = nat();
        f(&mut n);
        ObservedNetwork::from_def(&n).changed_fields(&base)
    };
    assert_eq!(changed(&|n| n.forward = Forward::None), ["forward"]);
    assert_eq!(changed(&|n| n.stp = true), ["stp"]);
    assert_eq!(changed(&|n| n.mtu = Some(1400)), ["mtu"]);
    assert_eq!(changed(&|n| n.address = Some((ip("10.199.252.1"), 16))), ["address"]);
    assert_eq!(changed(&|n| n.hosts[1].ip = ip("10.199.252.99")), ["host:52:54:00:c1:00:01"]);
    assert_eq!(changed(&|n| n.hosts.push(DhcpHost { mac: mac("52:54:00:00:00:07"), ip: ip("10.199.252.7"), name: None })), ["host:52:54:00:00:00:07"]);
    assert_eq!(changed(&|n| n.hosts.reverse()), Vec::<String>::new());
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let xml = network_xml(&nat());
    for cut in 0..xml.trim_end().len() {
        assert!(parse_network(&xml[..cut]).is_err(), "cut at {cut} parsed");
    }
    for (input, expect) in [
        ("<domain/>", "expected a <network> document"),
        ("<network/>", "<network> has no <name>"),
        ("<network><name>n</name><bridge stp='maybe'/></network>", "attribute `stp` \"maybe\" in <network/bridge>"),
        ("<network><name>n</name><bridge delay='-1'/></network>", "attribute `delay`"),
        ("<network><name>n</name><ip address='10.0.0.300' prefix='24'/></network>", "attribute `address` \"10.0.0.300\" in <network/ip>"),
        ("<network><name>n</name><ip address='10.0.0.1' prefix='33'/></network>", "attribute `prefix` \"33\""),
        ("<network><name>n</name><ip address='10.0.0.1' netmask='255.0.255.0'/></network>", "attribute `netmask`"),
        ("<network><name>n</name><ip address='10.0.0.1' prefix='24'><dhcp><range start='x'/></dhcp></ip></network>", "attribute `start` \"x\" in <network/ip/dhcp/range>"),
        ("<network><name>n</name><ip address='10.0.0.1' prefix='24'><dhcp><host mac='52:54:00:00:00:01'/></dhcp></ip></network>", "<network/ip/dhcp/host> has no `ip` attribute"),
        ("<network><name>n</name><ip address='10.0.0.1' prefix='24'><dhcp><host mac='01:00:5e:00:00:01' ip='10.0.0.2'/></dhcp></ip></network>", "multicast"),
        ("<network><name>n</name><mtu size='x'/></network>", "attribute `size` \"x\" in <network/mtu>"),
    ] {
        let err = parse_network(input).unwrap_err().to_string();
        assert!(err.contains(expect), "{input:?}: {err:?} does not contain {expect:?}");
    }
    assert_eq!(netmask_prefix("255.255.255.0"), Some(24));
    assert_eq!(netmask_prefix("255.255.255.255"), Some(32));
    assert_eq!(netmask_prefix("0.0.0.0"), Some(0));
    assert_eq!(netmask_prefix("255.255.0.255"), None);
}

mod real {
    use super::*;
    use std::process::Command;

    const URI: &str = "qemu:///system";

    fn virsh(args: &[&str]) -> (bool, String) {
        match Command::new("virsh").arg("-c").arg(URI).args(args).output() {
            Ok(o) => (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))),
            Err(e) => (false, format!("cannot run virsh: {e}")),
        }
    }

    /// Undefines the network on drop, even when an assertion failed.
    struct NetUndefine(String);

    impl Drop for NetUndefine {
        fn drop(&mut self) {
            if virsh(&["net-info", &self.0]).0 {
                let _ = virsh(&["net-undefine", &self.0]);
            }
        }
    }

    /// net-define (never started), net-dumpxml --inactive, compare; then a
    /// DHCP host added with virNetworkUpdate from `dhcp_host_xml`.
    #[test]
    fn real_libvirt_round_trip() {
        if std::env::var("VIRTFORM_REAL_HOST").as_deref() != Ok("1") {
            eprintln!("real_libvirt_round_trip: skipped (set VIRTFORM_REAL_HOST=1; scripts/test does)");
            return;
        }
        let (ok, out) = virsh(&["version"]);
        assert!(ok, "libvirtd is not reachable at {URI}: {out}");
        let pid = std::process::id();
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let tmp = tempfile::tempdir().unwrap();
        let mut n1 = nat();
        n1.name = format!("vf-xmltest-{pid}-nat");
        n1.uuid = format!("{pid:08x}-{:04x}-5000-8000-{t:08x}0001", t & 0xffff);
        n1.bridge = format!("vfx{:x}n", pid & 0xfffff);
        n1.hosts[0].mac = mac("52:54:00:C1:00:03");
        let mut n2 = isolated();
        n2.name = format!("vf-xmltest-{pid}-iso &'");
        n2.uuid = format!("{pid:08x}-{:04x}-5000-8000-{t:08x}0002", t & 0xffff);
        n2.bridge = format!("vfx{:x}i", pid & 0xfffff);
        let uuids = [n1.uuid.clone(), n2.uuid.clone()];
        for n in [n1, n2] {
            let _guard = NetUndefine(n.uuid.clone());
            let xml = network_xml(&n);
            let file = tmp.path().join("net.xml");
            std::fs::write(&file, &xml).unwrap();
            let (ok, out) = virsh(&["net-define", &file.to_string_lossy()]);
            assert!(ok, "net-define failed: {out}\n{xml}");
            let (ok, stored) = virsh(&["net-dumpxml", "--inactive", &n.uuid]);
            assert!(ok, "net-dumpxml: {stored}");
            let observed = parse_network(&stored).unwrap_or_else(|e| panic!("{e}\n{stored}"));
            let want = ObservedNetwork::from_def(&n);
            assert_eq!(observed, want, "libvirt stored:\n{stored}");

            // virNetworkUpdate with our host fragment, on the persistent config.
            let host = DhcpHost { mac: mac("52:54:00:0A:0B:0C"), ip: Ipv4Addr::from(u32::from(n.address.unwrap().0) + 9), name: Some("added".into()) };
            let frag = dhcp_host_xml(&host.mac, host.ip, host.name.as_deref());
            let (ok, out) = virsh(&["net-update", &n.uuid, "add-last", "ip-dhcp-host", &frag, "--config"]);
            assert!(ok, "net-update failed: {out}\n{frag}");
            let (_, stored) = virsh(&["net-dumpxml", "--inactive", &n.uuid]);
            let observed = parse_network(&stored).unwrap();
            let mut want2 = n.clone();
            want2.hosts.push(host);
            assert!(ObservedNetwork::from_def(&want2).changed_fields(&observed).is_empty(), "after net-update:\n{stored}");
            eprintln!("real_libvirt_round_trip: network {} ok", n.name);
        }
        for u in &uuids {
            assert!(!virsh(&["net-info", u]).0, "network {u} was left behind");
        }
    }
}
