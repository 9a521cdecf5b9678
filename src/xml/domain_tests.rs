use super::*;
use crate::xml::{Doc, Elem};

fn mac(s: &str) -> Mac {
    Mac::parse(s).unwrap()
}

fn marker(address: &str) -> Marker {
    Marker { stack: "demo".into(), address: address.into(), spec_hash: "sha256:8f2c1d".into() }
}

/// The quickstart guest (DESIGN.md example, README-guest.md's domain): direct
/// kernel boot, a virtio overlay, a NIC on a Linux bridge.
fn quickstart() -> DomainDef {
    DomainDef {
        name: "demo-worker-0".into(),
        uuid: "5f1e2d3c-4b5a-5968-8776-a5b4c3d2e1f0".into(),
        domain_type: DomainKind::Qemu,
        memory_kib: 256 * 1024,
        vcpus: 1,
        cpu: None,
        machine: "pc".into(),
        firmware: Firmware::Bios,
        loader: None,
        kernel: Some("/var/lib/virtform/assets/vmlinuz".into()),
        initrd: Some("/var/lib/virtform/assets/initrd.gz".into()),
        cmdline: Some("console=ttyS0 vf.ip=10.77.0.10/24 vf.gw=10.77.0.1".into()),
        disks: vec![DiskDef {
            path: "/var/lib/virtform/demo/disks/root@0.qcow2".into(),
            format: "qcow2".into(),
            device: DiskDevice::Disk,
            bus: Bus::Virtio,
            target: "vda".into(),
            readonly: false,
            serial: Some("vf-root-0".into()),
            boot_order: None,
        }],
        nics: vec![NicDef {
            mac: mac("52:54:00:12:34:56"),
            model: NicModel::Virtio,
            source: NicSource::Bridge { bridge: "vf-lan0".into() },
            target_dev: Some("tap0b7f6a3e5d2".into()),
            mtu: None,
        }],
        console_log: "/var/lib/virtform/demo/console/demo-worker-0.log".into(),
        graphics: Graphics::None,
        guest_agent: true,
        marker: marker("instance.worker[0]"),
    }
}

/// Nova-style: one NIC with libvirt's own OVS plug, one on a hybrid qbr bridge.
fn ovs_hybrid() -> DomainDef {
    DomainDef {
        name: "demo-pair-a".into(),
        uuid: "0b7f6a3e-5d2c-5c1a-9e8b-7f6a3e5d2c4c".into(),
        domain_type: DomainKind::Kvm,
        memory_kib: 512 * 1024,
        vcpus: 2,
        cpu: Some(CpuDef { mode: CpuMode::HostModel, model: None }),
        machine: "pc-i440fx-7.2".into(),
        firmware: Firmware::Bios,
        loader: None,
        kernel: None,
        initrd: None,
        cmdline: None,
        disks: vec![DiskDef {
            path: "/var/lib/virtform/demo/disks/pair-a.qcow2".into(),
            format: "qcow2".into(),
            device: DiskDevice::Disk,
            bus: Bus::Virtio,
            target: "vda".into(),
            readonly: false,
            serial: None,
            boot_order: None,
        }],
        nics: vec![
            NicDef {
                mac: mac("52:54:00:99:01:01"),
                model: NicModel::Virtio,
                source: NicSource::Ovs { bridge: "vf-int".into(), interface_id: "3f2a1b0c-9d8e-4f7a-8b6c-5d4e3f2a1b0c".into() },
                target_dev: Some("tap3f2a1b0c-9d".into()),
                mtu: Some(1450),
            },
            NicDef {
                mac: mac("52:54:00:99:01:02"),
                model: NicModel::Virtio,
                source: NicSource::Bridge { bridge: "qbr7c6d5e4f-3a".into() },
                target_dev: Some("tap7c6d5e4f-3a".into()),
                mtu: Some(1450),
            },
        ],
        console_log: "/var/lib/virtform/demo/console/demo-pair-a.log".into(),
        graphics: Graphics::None,
        guest_agent: false,
        marker: marker("instance.pair[\"a\"]"),
    }
}

/// A NAT network guest with a cloud-init seed cdrom (ide on pc) and VNC.
fn nat() -> DomainDef {
    DomainDef {
        name: "ci-fleet-runner-3".into(),
        uuid: "c0ffee00-1234-5678-9abc-def012345678".into(),
        domain_type: DomainKind::Qemu,
        memory_kib: 1 << 20,
        vcpus: 2,
        cpu: Some(CpuDef { mode: CpuMode::Maximum, model: None }),
        machine: "pc".into(),
        firmware: Firmware::Bios,
        loader: None,
        kernel: None,
        initrd: None,
        cmdline: None,
        disks: vec![
            DiskDef {
                path: "/var/lib/virtform/ci/disks/runner@3.qcow2".into(),
                format: "qcow2".into(),
                device: DiskDevice::Disk,
                bus: Bus::Virtio,
                target: "vda".into(),
                readonly: false,
                serial: None,
                boot_order: Some(1),
            },
            DiskDef {
                path: "/var/lib/virtform/ci/seeds/runner@3.iso".into(),
                format: "raw".into(),
                device: DiskDevice::Cdrom,
                bus: Bus::Ide,
                target: "hda".into(),
                readonly: true,
                serial: None,
                boot_order: None,
            },
        ],
        nics: vec![NicDef {
            mac: mac("52:54:00:c1:00:03"),
            model: NicModel::E1000,
            source: NicSource::Network { network: "vf-ci-nat".into() },
            target_dev: None,
            mtu: None,
        }],
        console_log: "/var/lib/virtform/ci/console/runner-3.log".into(),
        graphics: Graphics::Vnc,
        guest_agent: true,
        marker: Marker { stack: "ci".into(), address: "instance.runner[\"3\"]".into(), spec_hash: "sha256:00ff".into() },
    }
}

/// q35, EFI, a custom CPU model, a sata cdrom, spice, a scsi data disk.
fn efi_custom() -> DomainDef {
    DomainDef {
        name: "lab-efi".into(),
        uuid: "11111111-2222-5333-8444-555555555555".into(),
        domain_type: DomainKind::Qemu,
        memory_kib: 768 * 1024,
        vcpus: 4,
        cpu: Some(CpuDef { mode: CpuMode::Custom, model: Some("qemu64".into()) }),
        machine: "q35".into(),
        firmware: Firmware::Efi,
        loader: Some(LoaderDef::ovmf(false, "/var/lib/virtform/lab/nvram/efi_VARS.fd".into())),
        kernel: None,
        initrd: None,
        cmdline: None,
        disks: vec![
            DiskDef {
                path: "/var/lib/virtform/lab/disks/efi.qcow2".into(),
                format: "qcow2".into(),
                device: DiskDevice::Disk,
                bus: Bus::Virtio,
                target: "vda".into(),
                readonly: false,
                serial: Some("root".into()),
                boot_order: None,
            },
            DiskDef {
                path: "/var/lib/virtform/lab/disks/data.raw".into(),
                format: "raw".into(),
                device: DiskDevice::Disk,
                bus: Bus::Scsi,
                target: "sda".into(),
                readonly: false,
                serial: Some("data".into()),
                boot_order: None,
            },
            DiskDef {
                path: "/var/lib/virtform/lab/seed.iso".into(),
                format: "raw".into(),
                device: DiskDevice::Cdrom,
                bus: Bus::Sata,
                target: "sdb".into(),
                readonly: false,
                serial: None,
                boot_order: None,
            },
        ],
        nics: vec![],
        console_log: "/var/lib/virtform/lab/console/efi.log".into(),
        graphics: Graphics::Spice,
        guest_agent: false,
        marker: Marker { stack: "lab".into(), address: "instance.efi".into(), spec_hash: "sha256:efefef".into() },
    }
}

/// Secure Boot: q35, the enrolled-keys OVMF, SMM, direct kernel boot.
fn efi_secure() -> DomainDef {
    let mut d = quickstart();
    d.name = "demo-sb".into();
    d.machine = "q35".into();
    d.firmware = Firmware::Efi;
    d.loader = Some(LoaderDef::ovmf(true, "/var/lib/virtform/demo/nvram/sb_VARS.fd".into()));
    d.console_log = "/var/lib/virtform/demo/console/sb.log".into();
    d.marker = marker("instance.sb");
    d
}

const NASTY: &str = "<&'\"$(reboot)`id`;|>\n\tend";

/// Every string a user can influence holds markup, quotes, shell syntax,
/// newlines, tabs, CR, and a control character XML cannot carry.
fn hostile() -> DomainDef {
    let mut d = quickstart();
    d.name = format!("evil{NASTY}");
    d.kernel = Some(format!("/tmp/k {NASTY}/vmlinuz"));
    d.initrd = Some(" leading and trailing spaces ".into());
    d.cmdline = Some(format!("console=ttyS0 a=\"<b>\" c='&d' $(rm -rf /) `id`\r\nnext\u{1}line {NASTY}"));
    d.disks[0].path = format!("/tmp/d {NASTY}.qcow2");
    d.disks[0].serial = Some("s<&>'\"".into());
    d.nics[0].source = NicSource::Bridge { bridge: "br'\"<&>".into() };
    d.nics.push(NicDef {
        mac: mac("52:54:00:00:00:02"),
        model: NicModel::Rtl8139,
        source: NicSource::Network { network: format!("net{NASTY}") },
        target_dev: None,
        mtu: Some(9000),
    });
    d.console_log = format!("/tmp/log {NASTY}.log");
    d.marker = Marker { stack: "st<&>".into(), address: format!("instance.x[\"{NASTY}\"]"), spec_hash: "'\"".into() };
    d
}

fn all() -> Vec<(&'static str, DomainDef)> {
    vec![("quickstart", quickstart()), ("ovs_hybrid", ovs_hybrid()), ("nat", nat()), ("efi_custom", efi_custom()), ("efi_secure", efi_secure()), ("hostile", hostile())]
}

// ------------------------------------------------------------ device names

#[test]
fn targets_follow_nova_blockinfo() {
    use DiskDevice::{Cdrom, Disk};
    assert_eq!(assign_targets(&[(Disk, Bus::Virtio), (Disk, Bus::Virtio), (Cdrom, Bus::Ide), (Disk, Bus::Virtio)], "pc"), ["vda", "vdb", "hda", "vdc"]);
    assert_eq!(assign_targets(&[(Disk, Bus::Scsi), (Cdrom, Bus::Sata), (Disk, Bus::Sata), (Disk, Bus::Ide)], "pc"), ["sda", "sdb", "sdc", "hda"]);
    // ide on q35 becomes sata and shares the sd names.
    assert_eq!(assign_targets(&[(Disk, Bus::Virtio), (Cdrom, Bus::Ide), (Disk, Bus::Sata)], "pc-q35-7.2"), ["vda", "sda", "sdb"]);
    assert!(assign_targets(&[], "pc").is_empty());
    let many = assign_targets(&[(Disk, Bus::Virtio); 30], "pc");
    assert_eq!(&many[24..], ["vdy", "vdz", "vdaa", "vdab", "vdac", "vdad"]);
    assert_eq!(disk_letters(0), "a");
    assert_eq!(disk_letters(25), "z");
    assert_eq!(disk_letters(26), "aa");
    assert_eq!(disk_letters(51), "az");
    assert_eq!(disk_letters(52), "ba");
    assert_eq!(disk_letters(701), "zz");
    assert_eq!(disk_letters(702), "aaa");
}

#[test]
fn default_buses() {
    assert_eq!(effective_bus(DiskDevice::Disk, None, "pc"), Bus::Virtio);
    assert_eq!(effective_bus(DiskDevice::Cdrom, None, "pc"), Bus::Ide);
    assert_eq!(effective_bus(DiskDevice::Cdrom, None, "pc-i440fx-7.2"), Bus::Ide);
    assert_eq!(effective_bus(DiskDevice::Cdrom, None, "q35"), Bus::Sata);
    assert_eq!(effective_bus(DiskDevice::Cdrom, None, "pc-q35-7.2"), Bus::Sata);
    assert_eq!(effective_bus(DiskDevice::Cdrom, Some(Bus::Scsi), "q35"), Bus::Scsi);
    assert_eq!(effective_bus(DiskDevice::Disk, Some(Bus::Ide), "q35"), Bus::Sata);
    assert_eq!(effective_bus(DiskDevice::Disk, Some(Bus::Ide), "pc"), Bus::Ide);
}

#[test]
fn machine_families() {
    for (m, f) in [("pc", "pc"), ("pc-i440fx-7.2", "pc"), ("pc-i440fx-jammy", "pc"), ("pc-1.3", "pc"), ("q35", "q35"), ("pc-q35-7.2", "q35"), ("microvm", "microvm"), ("pc-foo", "pc-foo")] {
        assert_eq!(machine_family(m), f, "{m}");
    }
    assert!(machines_match("pc", "pc-i440fx-7.2"));
    assert!(machines_match("q35", "pc-q35-7.2"));
    assert!(machines_match("pc-i440fx-7.2", "pc-i440fx-7.2"));
    assert!(!machines_match("pc", "pc-q35-7.2"));
    assert!(!machines_match("q35", "pc-i440fx-7.2"));
    assert!(!machines_match("pc-i440fx-7.2", "pc-i440fx-8.0"));
    assert!(!machines_match("pc-i440fx-7.2", "pc"));
}

// ------------------------------------------------------------ writing

#[test]
fn snapshots() {
    for (name, d) in all() {
        insta::assert_snapshot!(format!("domain_{name}"), domain_xml(&d));
    }
}

#[test]
fn device_xml_snapshots_match_the_domain() {
    let d = ovs_hybrid();
    let nic = nic_device_xml(&d.nics[0]);
    let disk = disk_device_xml(&nat().disks[1]);
    insta::assert_snapshot!("device_nic_ovs", nic);
    insta::assert_snapshot!("device_disk_cdrom", disk);
    // The device documents are the same elements as in the domain (modulo indentation).
    let squash = |s: &str| s.lines().map(str::trim).collect::<String>();
    assert!(squash(&domain_xml(&d)).contains(&squash(&nic)));
    assert!(squash(&domain_xml(&nat())).contains(&squash(&disk)));
    for n in &hostile().nics {
        let x = nic_device_xml(n);
        let doc = Doc::parse(&x, "interface").unwrap();
        assert_eq!(doc.root().child("mac").unwrap().attr("address"), Some(n.mac.to_string().as_str()));
    }
    let x = disk_device_xml(&hostile().disks[0]);
    let doc = Doc::parse(&x, "disk").unwrap();
    assert_eq!(doc.root().child("source").unwrap().attr("file"), Some(hostile().disks[0].path.as_str()));
}

#[test]
fn output_is_deterministic() {
    for (_, d) in all() {
        assert_eq!(domain_xml(&d), domain_xml(&d.clone()));
    }
}

#[test]
fn boot_and_features() {
    let q = domain_xml(&quickstart());
    assert!(!q.contains("<boot"), "kernel boot writes no <boot dev>");
    assert!(q.contains("<acpi/>") && q.contains("<apic/>"));
    let o = domain_xml(&ovs_hybrid());
    assert!(o.contains("<boot dev=\"hd\"/>"));
    let n = domain_xml(&nat());
    assert!(n.contains("<boot order=\"1\"/>") && !n.contains("<boot dev="), "per-device boot order excludes <os><boot>");
    let e = domain_xml(&efi_custom());
    // An explicit loader, never libvirt's autoselection (which reads back
    // differently once libvirt has picked a file).
    assert!(e.contains("<os>") && !e.contains("firmware="), "{e}");
    assert!(e.contains("<loader readonly=\"yes\" type=\"pflash\">/usr/share/OVMF/OVMF_CODE_4M.fd</loader>"), "{e}");
    assert!(e.contains("<nvram template=\"/usr/share/OVMF/OVMF_VARS_4M.fd\">/var/lib/virtform/lab/nvram/efi_VARS.fd</nvram>"), "{e}");
    assert!(!e.contains("<smm"), "no SMM without secure boot");
    let sb = domain_xml(&efi_secure());
    assert!(sb.contains("<loader readonly=\"yes\" secure=\"yes\" type=\"pflash\">/usr/share/OVMF/OVMF_CODE_4M.secboot.fd</loader>"), "{sb}");
    assert!(sb.contains("<nvram template=\"/usr/share/OVMF/OVMF_VARS_4M.ms.fd\">/var/lib/virtform/demo/nvram/sb_VARS.fd</nvram>"), "{sb}");
    assert!(sb.contains("<smm state=\"on\"/>"), "{sb}");
    // A definition without a loader (not one virtform's lowering makes) is left to libvirt.
    let mut auto = efi_custom();
    auto.loader = None;
    let a = domain_xml(&auto);
    assert!(a.contains("<os firmware=\"efi\">") && !a.contains("<loader") && !a.contains("<nvram"), "{a}");
    // A BIOS domain never names a loader, whatever the def holds.
    let mut bios = efi_custom();
    bios.firmware = Firmware::Bios;
    assert!(!domain_xml(&bios).contains("<loader"));
    assert!(e.contains("<model fallback=\"allow\">qemu64</model>"));
    assert_eq!(e.matches("pcie-root-port").count(), 1 + 5 + Q35_HOTPLUG_SPARE_PORTS);
    assert_eq!(e.matches("model=\"pcie-root\"").count(), 1);
    assert!(!o.contains("pcie-root-port"));
}

// ------------------------------------------------------------ reading our own output

#[test]
fn round_trip_of_our_own_output() {
    for (name, d) in all() {
        let xml = domain_xml(&d);
        let parsed = parse_domain(&xml).unwrap_or_else(|e| panic!("{name}: {e}\n{xml}"));
        let want = ObservedDomain::from_def(&d);
        assert_eq!(parsed, want, "{name}");
        assert!(want.changed_fields(&parsed).is_empty(), "{name}");
        assert_eq!(parsed.normalized_xml(), want.normalized_xml(), "{name}");
    }
}

#[test]
fn hostile_values_stay_well_formed_and_round_trip() {
    let d = hostile();
    let xml = domain_xml(&d);
    // Well-formed: quick-xml reads it to the end with all checks on.
    let mut r = quick_xml::Reader::from_str(&xml);
    r.config_mut().enable_all_checks(true);
    let mut elements = 0;
    loop {
        match r.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(quick_xml::events::Event::Start(_) | quick_xml::events::Event::Empty(_)) => elements += 1,
            Ok(_) => {}
            Err(e) => panic!("not well-formed: {e}\n{xml}"),
        }
    }
    assert_eq!(elements, Doc::parse(&xml, "domain").map(|d| count(d.root())).unwrap());
    // Nothing user-controlled leaked into markup.
    assert!(!xml.contains("<b>") && !xml.contains("$(reboot)`id`;|>\n"));

    let o = parse_domain(&xml).unwrap();
    // Exact round trip for everything XML can carry ...
    assert_eq!(o.name, d.name);
    assert_eq!(o.kernel, d.kernel);
    assert_eq!(o.initrd, d.initrd, "spaces are kept");
    assert_eq!(o.disks[0].path.as_deref(), Some(d.disks[0].path.as_str()));
    assert_eq!(o.disks[0].serial, d.disks[0].serial);
    assert_eq!(o.nics[0].source, ObservedNicSource::Bridge { bridge: "br'\"<&>".into() });
    assert_eq!(o.nics[1].source, ObservedNicSource::Network { network: format!("net{NASTY}") });
    assert_eq!(o.console_log.as_deref(), Some(d.console_log.as_str()));
    assert_eq!(o.marker.as_ref(), Some(&d.marker));
    // ... including CR LF; the one control character becomes U+FFFD.
    assert_eq!(o.cmdline.as_deref(), Some(d.cmdline.as_deref().unwrap().replace('\u{1}', "\u{FFFD}").as_str()));
    assert!(o.cmdline.as_deref().unwrap().contains("\r\nnext"));
    assert_eq!(o, ObservedDomain::from_def(&d));
}

fn count(e: Elem<'_>) -> usize {
    1 + e.elements().map(count).sum::<usize>()
}

// ------------------------------------------------------------ reading libvirt's output

/// `virsh dumpxml --inactive` of `quickstart()` as libvirt 9.0 stores it
/// (shape taken from formatdomain and from a define/dumpxml on this host),
/// with everything libvirt adds: machine expanded, the default CPU model,
/// `<boot dev='hd'/>` despite the kernel, KiB units, placement,
/// `<emulator>`, controllers, PCI and drive addresses, aliases (user aliases
/// survive in the inactive XML), `<model>` after `<target>`, isa-serial
/// target, console mirror, input, audio, video, seclabel, resource, another
/// application's metadata, and our marker under a different prefix.
const LIBVIRT_QUICKSTART: &str = r#"<domain type='qemu'>
  <name>demo-worker-0</name>
  <uuid>5f1e2d3c-4b5a-5968-8776-a5b4c3d2e1f0</uuid>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:name>not ours</nova:name>
    </nova:instance>
    <vf:instance xmlns:vf="https://virtform.dev/xmlns/virtform/1" stack="demo" address="instance.worker[0]" spec-hash="sha256:8f2c1d"/>
  </metadata>
  <memory unit='KiB'>262144</memory>
  <currentMemory unit='KiB'>262144</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <resource>
    <partition>/machine</partition>
  </resource>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <kernel>/var/lib/virtform/assets/vmlinuz</kernel>
    <initrd>/var/lib/virtform/assets/initrd.gz</initrd>
    <cmdline>console=ttyS0 vf.ip=10.77.0.10/24 vf.gw=10.77.0.1</cmdline>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
    <apic/>
    <vmport state='off'/>
  </features>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>qemu64</model>
  </cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <pm>
    <suspend-to-mem enabled='no'/>
    <suspend-to-disk enabled='no'/>
  </pm>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/virtform/demo/disks/root@0.qcow2'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
      <serial>vf-root-0</serial>
      <alias name='ua-root'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
    </disk>
    <controller type='usb' index='0' model='piix3-uhci'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x2'/>
    </controller>
    <controller type='pci' index='0' model='pci-root'/>
    <controller type='virtio-serial' index='0'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
    </controller>
    <interface type='bridge'>
      <mac address='52:54:00:12:34:56'/>
      <source bridge='vf-lan0'/>
      <target dev='tap0b7f6a3e5d2'/>
      <model type='virtio'/>
      <link state='up'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </interface>
    <serial type='file'>
      <source path='/var/lib/virtform/demo/console/demo-worker-0.log' append='on'/>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
    </serial>
    <console type='file'>
      <source path='/var/lib/virtform/demo/console/demo-worker-0.log' append='on'/>
      <target type='serial' port='0'/>
    </console>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
      <address type='virtio-serial' controller='0' bus='0' port='1'/>
    </channel>
    <input type='mouse' bus='ps2'/>
    <input type='keyboard' bus='ps2'/>
    <audio id='1' type='none'/>
    <video>
      <model type='none'/>
    </video>
    <memballoon model='virtio'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>
    </memballoon>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x06' function='0x0'/>
    </rng>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'/>
</domain>
"#;

/// The `<os>` and `<features>` of `efi_secure()` as libvirt 9.0 stores them
/// (`virsh define` + `dumpxml --inactive` on this host): the loader and
/// nvram exactly as written, the machine expanded.
fn libvirt_efi_secure() -> String {
    domain_xml(&efi_secure())
        .replace("machine=\"q35\"", "machine='pc-q35-7.2'")
        .replace(
            "<loader readonly=\"yes\" secure=\"yes\" type=\"pflash\">",
            "<loader readonly='yes' secure='yes' type='pflash'>",
        )
        .replace("<smm state=\"on\"/>", "<smm state='on'/>\n    <vmport state='off'/>")
}

#[test]
fn efi_reads_back_without_changes() {
    for d in [efi_custom(), efi_secure()] {
        let want = ObservedDomain::from_def(&d);
        let l = d.loader.as_ref().unwrap();
        let got = parse_domain(&domain_xml(&d)).unwrap();
        assert_eq!(got.firmware, Firmware::Efi, "an explicit pflash loader is EFI");
        assert_eq!(got.loader, Some(ObservedLoader { path: l.code.clone(), readonly: true, secure: l.secure, kind: Some("pflash".into()) }));
        assert_eq!(got.nvram, Some(ObservedNvram { path: Some(l.nvram.clone()), template: Some(l.vars_template.clone()) }));
        assert!(want.changed_fields(&got).is_empty());
    }
    let got = parse_domain(&libvirt_efi_secure()).unwrap();
    let want = ObservedDomain::from_def(&efi_secure());
    assert_eq!(got.features, ["acpi", "apic", "smm"]);
    assert_eq!(want.changed_fields(&got), Vec::<String>::new());
    // SMM switched off is no SMM.
    let off = parse_domain(&libvirt_efi_secure().replace("<smm state='on'/>", "<smm state='off'/>")).unwrap();
    assert_eq!(want.changed_fields(&off), ["features"]);
}

#[test]
fn firmware_changes_are_reported_by_field() {
    let efi = ObservedDomain::from_def(&efi_secure());
    let changed = |f: &dyn Fn(&mut DomainDef)| {
        let mut d = efi_secure();
        f(&mut d);
        ObservedDomain::from_def(&d).changed_fields(&efi)
    };
    // secure boot off: another firmware file, another template, no SMM.
    assert_eq!(changed(&|d| d.loader = Some(LoaderDef::ovmf(false, d.loader.clone().unwrap().nvram))), ["loader", "nvram", "features"]);
    assert_eq!(changed(&|d| d.loader.as_mut().unwrap().nvram = "/elsewhere_VARS.fd".into()), ["nvram"]);
    // BIOS: no loader, no nvram, no SMM.
    assert_eq!(
        changed(&|d| {
            d.firmware = Firmware::Bios;
            d.loader = None;
        }),
        ["firmware", "loader", "nvram", "features"]
    );
    let bios = ObservedDomain::from_def(&quickstart());
    assert!(bios.loader.is_none() && bios.nvram.is_none());
    // A domain left to autoselection (libvirt stores `<os firmware='efi'>`) is a change of loader.
    let auto = parse_domain(&domain_xml(&efi_secure()).replace("<os>", "<os firmware='efi'>").replace(&format!("<loader readonly=\"yes\" secure=\"yes\" type=\"pflash\">{OVMF_CODE_SECURE}</loader>"), "")).unwrap();
    assert_eq!(auto.firmware, Firmware::Efi);
    assert_eq!(efi.changed_fields(&auto), ["loader"]);
}

#[test]
fn libvirt_rendition_parses_to_the_same_values() {
    let want = ObservedDomain::from_def(&quickstart());
    let got = parse_domain(LIBVIRT_QUICKSTART).unwrap();
    // Only the machine alias and the default CPU differ before alignment ...
    assert_eq!(got.machine, "pc-i440fx-7.2");
    assert_eq!(got.cpu.as_ref().and_then(|c| c.model.as_deref()), Some(DEFAULT_CPU_MODEL));
    assert_eq!(got.machine_family(), "pc");
    assert_eq!(want.changed_fields(&got), Vec::<String>::new());
    let mut aligned = got.clone();
    aligned.align_aliases(&want);
    // ... and after alignment everything is equal.
    assert_eq!(aligned, want);
    let (a, b) = normalized_pair(&want, &got);
    assert_eq!(a, b);
}

/// The live XML of the same domain: libvirt's runtime values are not configuration.
#[test]
fn live_only_values_are_ignored() {
    let live = LIBVIRT_QUICKSTART
        .replace("<domain type='qemu'>", "<domain type='qemu' id='7'>")
        .replace("<target dev='tap0b7f6a3e5d2'/>", "<target dev='tap0b7f6a3e5d2'/>\n      <alias name='net0'/>")
        .replace("<source bridge='vf-lan0'/>", "<source bridge='vf-lan0'/>\n      <virtualport type='midonet'/>");
    let want = ObservedDomain::from_def(&quickstart());
    assert!(want.changed_fields(&parse_domain(&live).unwrap()).is_empty());
    // A libvirt-generated tap name is not configuration either.
    let mut d = quickstart();
    d.nics[0].target_dev = None;
    let vnet = LIBVIRT_QUICKSTART.replace("tap0b7f6a3e5d2", "vnet12");
    assert!(ObservedDomain::from_def(&d).changed_fields(&parse_domain(&vnet).unwrap()).is_empty());
}

#[test]
fn units_case_and_defaults_normalize() {
    let x = LIBVIRT_QUICKSTART
        .replace("<memory unit='KiB'>262144</memory>", "<memory unit='MiB'>256</memory>")
        .replace("<currentMemory unit='KiB'>262144</currentMemory>", "")
        .replace("<uuid>5f1e2d3c-4b5a-5968-8776-a5b4c3d2e1f0</uuid>", "<uuid>5F1E2D3C4B5A59688776A5B4C3D2E1F0</uuid>")
        .replace("52:54:00:12:34:56", "52:54:00:12:34:56".to_uppercase().as_str())
        .replace("<vcpu placement='static'>1</vcpu>", "")
        .replace("<on_poweroff>destroy</on_poweroff>", "")
        .replace("<clock offset='utc'/>", "");
    let o = parse_domain(&x).unwrap();
    assert_eq!((o.memory_kib, o.current_memory_kib, o.vcpus), (262144, 262144, 1));
    assert_eq!(o.uuid.as_deref(), Some("5f1e2d3c-4b5a-5968-8776-a5b4c3d2e1f0"));
    assert!(ObservedDomain::from_def(&quickstart()).changed_fields(&o).is_empty());
    for (unit, value, kib) in [("GiB", "1", 1 << 20), ("G", "2", 2 << 20), ("b", "268435456", 262144), ("bytes", "268435456", 262144), ("KB", "1024", 1000), ("k", "5", 5)] {
        let x = LIBVIRT_QUICKSTART.replace("<memory unit='KiB'>262144</memory>", &format!("<memory unit='{unit}'>{value}</memory>"));
        assert_eq!(parse_domain(&x).unwrap().memory_kib, kib, "{unit}");
    }
    let x = LIBVIRT_QUICKSTART.replace("<memory unit='KiB'>262144</memory>", "<memory>4096</memory>");
    assert_eq!(parse_domain(&x).unwrap().memory_kib, 4096);
}

#[test]
fn cpu_modes_are_read_as_written() {
    let default_cpu = "<cpu mode='custom' match='exact' check='none'>\n    <model fallback='forbid'>qemu64</model>\n  </cpu>";
    assert!(LIBVIRT_QUICKSTART.contains(default_cpu));
    let with_cpu = |cpu: &str| LIBVIRT_QUICKSTART.replace(default_cpu, cpu);
    // libvirt's default CPU is what "no cpu" means.
    assert_eq!(parse_domain(LIBVIRT_QUICKSTART).unwrap().cpu, Some(CpuDef { mode: CpuMode::Custom, model: Some("qemu64".into()) }));
    assert!(ObservedDomain::from_def(&quickstart()).changed_fields(&parse_domain(LIBVIRT_QUICKSTART).unwrap()).is_empty());
    assert!(ObservedDomain::from_def(&quickstart()).changed_fields(&parse_domain(&with_cpu("")).unwrap()).is_empty());
    let mode = |cpu: &str| parse_domain(&with_cpu(cpu)).unwrap().cpu;
    // The inactive XML keeps host-model (only the live XML shows it as custom).
    assert_eq!(mode("<cpu mode='host-model' check='partial'/>"), Some(CpuDef { mode: CpuMode::HostModel, model: None }));
    assert_eq!(mode("<cpu mode='host-model' check='partial'><model fallback='allow'/></cpu>"), Some(CpuDef { mode: CpuMode::HostModel, model: None }));
    assert_eq!(mode("<cpu mode='host-passthrough' check='none' migratable='on'/>"), Some(CpuDef { mode: CpuMode::HostPassthrough, model: None }));
    assert_eq!(mode("<cpu mode='maximum' check='none'/>"), Some(CpuDef { mode: CpuMode::Maximum, model: None }));
    assert_eq!(
        mode("<cpu mode='custom' match='exact' check='none'>\n    <model fallback='allow'>qemu64</model>\n  </cpu>"),
        Some(CpuDef { mode: CpuMode::Custom, model: Some("qemu64".into()) })
    );
    // No mode attribute means custom.
    assert_eq!(mode("<cpu><model>Skylake-Client</model></cpu>"), Some(CpuDef { mode: CpuMode::Custom, model: Some("Skylake-Client".into()) }));
    // The live rendition of host-model is a change of mode, visible as such.
    let live = parse_domain(&with_cpu("<cpu mode='custom' match='exact' check='full'><model fallback='forbid'>qemu64</model><feature policy='require' name='x2apic'/></cpu>")).unwrap();
    let mut d = quickstart();
    d.cpu = Some(CpuDef { mode: CpuMode::HostModel, model: None });
    assert_eq!(ObservedDomain::from_def(&d).changed_fields(&live), ["cpu"]);
    assert!(parse_domain(&with_cpu("<cpu mode='sideways'/>")).unwrap_err().to_string().contains("domain/cpu"));
}

#[test]
fn foreign_devices_parse_and_show_as_drift() {
    let x = LIBVIRT_QUICKSTART.replace(
        "<controller type='usb'",
        "<disk type='block' device='lun'><source dev='/dev/sdz'/><target dev='sdz' bus='scsi'/></disk>\n    <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>\n    <interface type='user'><mac address='52:54:00:ab:cd:ef'/><model type='e1000e'/></interface>\n    <graphics type='sdl'/>\n    <controller type='usb'",
    );
    let o = parse_domain(&x).unwrap();
    assert_eq!(o.disks.len(), 3);
    assert_eq!(o.disks[1].path.as_deref(), Some("/dev/sdz"));
    assert_eq!(o.disks[2].path, None, "an empty tray");
    assert_eq!(o.nics[0].source, ObservedNicSource::Other { kind: "user".into() });
    assert_eq!(o.nics[0].model.as_deref(), Some("e1000e"));
    assert_eq!(ObservedDomain::from_def(&quickstart()).changed_fields(&o), ["graphics", "disk:hdc", "disk:sdz", "nic:52:54:00:ab:cd:ef"]);
}

#[test]
fn changes_are_reported_by_field() {
    let base = quickstart();
    let observed = parse_domain(LIBVIRT_QUICKSTART).unwrap();
    let changed = |f: &dyn Fn(&mut DomainDef)| {
        let mut d = base.clone();
        f(&mut d);
        ObservedDomain::from_def(&d).changed_fields(&observed)
    };
    assert_eq!(changed(&|d| d.memory_kib = 512 * 1024), ["memory", "current_memory"]);
    assert_eq!(changed(&|d| d.vcpus = 2), ["vcpus"]);
    assert_eq!(changed(&|d| d.machine = "q35".into()), ["machine"]);
    assert_eq!(changed(&|d| d.machine = "pc-i440fx-7.2".into()), Vec::<String>::new());
    assert_eq!(changed(&|d| d.machine = "pc-i440fx-8.0".into()), ["machine"]);
    assert_eq!(changed(&|d| d.cmdline = None), ["cmdline"]);
    assert_eq!(changed(&|d| d.kernel = None), ["kernel"]);
    assert_eq!(changed(&|d| d.disks[0].boot_order = Some(1)), ["boot", "disk:vda"]);
    assert_eq!(changed(&|d| d.cpu = Some(CpuDef { mode: CpuMode::HostModel, model: None })), ["cpu"]);
    assert_eq!(changed(&|d| d.marker.spec_hash = "sha256:new".into()), ["marker"]);
    assert_eq!(changed(&|d| d.domain_type = DomainKind::Kvm), ["domain_type"]);
    assert_eq!(changed(&|d| d.graphics = Graphics::Vnc), ["graphics"]);
    assert_eq!(changed(&|d| d.firmware = Firmware::Efi), ["firmware"]);
    assert_eq!(changed(&|d| d.nics[0].mtu = Some(1400)), ["nic:52:54:00:12:34:56"]);
    assert_eq!(
        changed(&|d| {
            let mut n = d.nics[0].clone();
            n.mac = mac("52:54:00:00:00:09");
            d.nics.insert(0, n);
            d.disks.push(DiskDef { target: "vdb".into(), serial: None, ..d.disks[0].clone() });
        }),
        ["disk:vdb", "nic:52:54:00:00:00:09"]
    );
    // NIC and disk order in the XML is not a change.
    let mut two = base.clone();
    two.nics.push(NicDef { mac: mac("52:54:00:00:00:01"), ..two.nics[0].clone() });
    two.disks.push(DiskDef { target: "vdb".into(), ..two.disks[0].clone() });
    let mut swapped = two.clone();
    swapped.nics.reverse();
    swapped.disks.reverse();
    assert!(ObservedDomain::from_def(&two).changed_fields(&ObservedDomain::from_def(&swapped)).is_empty());
    assert_eq!(ObservedDomain::from_def(&two).normalized_xml(), ObservedDomain::from_def(&swapped).normalized_xml());
}

#[test]
fn normalized_xml_snapshots_and_diff() {
    for (name, d) in all() {
        insta::assert_snapshot!(format!("normalized_{name}"), ObservedDomain::from_def(&d).normalized_xml());
    }
    let mut d = quickstart();
    d.memory_kib = 512 * 1024;
    d.nics[0].mtu = Some(1400);
    let (a, b) = normalized_pair(&ObservedDomain::from_def(&d), &parse_domain(LIBVIRT_QUICKSTART).unwrap());
    let diff = similar::TextDiff::from_lines(&b, &a).unified_diff().header("observed", "desired").to_string();
    insta::assert_snapshot!("normalized_diff", diff);
    // Only the changed lines differ.
    assert_eq!(diff.lines().filter(|l| l.starts_with('+') && !l.starts_with("+++")).count(), 3);
}

#[test]
fn disk_order_sorts_like_the_kernel() {
    let mut v = vec!["vdaa", "vdb", "sda", "vdz", "hda", "vda"];
    v.sort_by_key(|t| target_key(t));
    assert_eq!(v, ["hda", "sda", "vda", "vdb", "vdz", "vdaa"]);
}

// ------------------------------------------------------------ malformed input

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let xml = domain_xml(&nat());
    // Every truncation of a valid document either fails or (never) parses; no panic.
    for cut in (0..xml.trim_end().len()).filter(|i| xml.is_char_boundary(*i)) {
        assert!(parse_domain(&xml[..cut]).is_err(), "cut at {cut} parsed");
    }
    let cases: &[(&str, &str)] = &[
        ("", "empty"),
        ("garbage", "text outside the root element"),
        ("<network/>", "expected a <domain> document"),
        ("<domain type='qemu'/>", "<domain> has no <name>"),
        ("<domain><name>x</name></domain>", "no `type` attribute"),
        ("<domain type='xen'><name>x</name></domain>", "attribute `type` \"xen\" in <domain>"),
        ("<domain type='qemu'><name>x</name></domain>", "no <memory>"),
        ("<domain type='qemu'><name>x</name><memory unit='parsec'>1</memory><os><type>hvm</type></os></domain>", "attribute `unit` \"parsec\" in <domain/memory>"),
        ("<domain type='qemu'><name>x</name><memory>lots</memory><os><type>hvm</type></os></domain>", "text \"lots\" in <domain/memory>"),
        ("<domain type='qemu'><name>x</name><memory>-1</memory><os><type>hvm</type></os></domain>", "domain/memory"),
        ("<domain type='qemu'><name>x</name><memory>1</memory><vcpu>many</vcpu><os><type>hvm</type></os></domain>", "domain/vcpu"),
        ("<domain type='qemu'><name>x</name><memory>1</memory></domain>", "no <os>"),
        ("<domain type='qemu'><name>x</name><memory>1</memory><os/></domain>", "<domain/os> has no <type>"),
        (
            "<domain type='qemu'><name>x</name><memory>1</memory><os><type>hvm</type></os><devices><interface type='bridge'><mac address='zz'/></interface></devices></domain>",
            "attribute `address` \"zz\" in <domain/devices/interface/mac>",
        ),
        (
            "<domain type='qemu'><name>x</name><memory>1</memory><os><type>hvm</type></os><devices><disk/><disk><target bus='virtio'/></disk></devices></domain>",
            "<domain/devices/disk> has no <target>",
        ),
        (
            "<domain type='qemu'><name>x</name><memory>1</memory><os><type>hvm</type></os><devices><disk><target dev='vda'/></disk><disk><target bus='virtio'/></disk></devices></domain>",
            "<domain/devices/disk[2]/target> has no `dev` attribute",
        ),
        (
            "<domain type='qemu'><name>x</name><memory>1</memory><os><type>hvm</type></os><devices><interface type='bridge'><mac address='52:54:00:00:00:01'/><mtu size='big'/></interface></devices></domain>",
            "attribute `size` \"big\" in <domain/devices/interface/mtu>",
        ),
        ("<domain type='qemu'><name>x &nbsp;</name></domain>", "unknown entity"),
        ("<domain type='qemu'><name>x</nome></domain>", "malformed XML"),
    ];
    for (input, expect) in cases {
        let err = parse_domain(input).unwrap_err().to_string();
        assert!(err.contains(expect), "{input:?}: {err:?} does not contain {expect:?}");
    }
    // Random bytes: never a panic.
    let mut seed = 0x2545_f491_u32;
    for _ in 0..2000 {
        let mut s = String::new();
        for _ in 0..(seed % 64) {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            s.push(b"<>/='\"&;# adomainemoryx:"[seed as usize % 24] as char);
        }
        let _ = parse_domain(&s);
        let _ = parse_domain(&format!("<domain type='qemu'><name>n</name><memory>1</memory><os><type>hvm</type></os><devices>{s}</devices></domain>"));
    }
}

// ------------------------------------------------------------ the real libvirt

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

    /// Undefines the domain on drop, so nothing is left behind even when an assertion fails.
    struct Undefine(String);

    impl Drop for Undefine {
        fn drop(&mut self) {
            if virsh(&["dominfo", &self.0]).0 {
                let (ok, _) = virsh(&["undefine", "--nvram", &self.0]);
                if !ok {
                    let _ = virsh(&["undefine", &self.0]);
                }
            }
        }
    }

    fn uuid(n: u32) -> String {
        let pid = std::process::id();
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        format!("{pid:08x}-{:04x}-5{:03x}-8{:03x}-{t:08x}{n:04x}", n & 0xffff, (t >> 12) & 0xfff, t & 0xfff)
    }

    /// Defines `d` with virsh (never started), reads its inactive XML back
    /// and asserts no managed field changed: the domain as observed, as
    /// wanted, libvirt's stored XML, and the guard that undefines it.
    fn define_and_read_back(d: &DomainDef, dir: &std::path::Path) -> (Undefine, ObservedDomain, ObservedDomain, String) {
        let guard = Undefine(d.uuid.clone());
        let xml = domain_xml(d);
        let file = dir.join("domain.xml");
        std::fs::write(&file, &xml).unwrap();
        let (ok, out) = virsh(&["define", &file.to_string_lossy()]);
        assert!(ok, "virsh define failed: {out}\n{xml}");
        let (ok, stored) = virsh(&["dumpxml", "--inactive", &d.uuid]);
        assert!(ok, "dumpxml: {stored}");
        let observed = parse_domain(&stored).unwrap_or_else(|e| panic!("{e}\n{stored}"));
        let want = ObservedDomain::from_def(d);
        let changed = want.changed_fields(&observed);
        let (x, y) = normalized_pair(&want, &observed);
        assert!(changed.is_empty(), "libvirt changed {changed:?}\n{}\n--- libvirt stored:\n{stored}", similar::TextDiff::from_lines(&x, &y).unified_diff().header("desired", "observed"));
        (guard, observed, want, stored)
    }

    /// Defines each domain with `virsh define`, reads `dumpxml --inactive`
    /// back and checks the managed fields; the domains are never started.
    #[test]
    fn real_libvirt_round_trip() {
        if std::env::var("VIRTFORM_REAL_HOST").as_deref() != Ok("1") {
            eprintln!("real_libvirt_round_trip: skipped (set VIRTFORM_REAL_HOST=1; scripts/test does)");
            return;
        }
        let (ok, out) = virsh(&["version"]);
        assert!(ok, "libvirtd is not reachable at {URI}: {out}");
        let tmp = tempfile::tempdir().unwrap();
        // A directory whose name needs escaping, holding real files.
        let dir = tmp.path().join("a&b'c \"d\" <e>");
        std::fs::create_dir_all(&dir).unwrap();
        let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
        for (f, fmt, size) in [("root.qcow2", "qcow2", "16M"), ("data.raw", "raw", "1M"), ("seed.iso", "raw", "1M")] {
            let o = Command::new("qemu-img").args(["create", "-q", "-f", fmt, &p(f), size]).output().expect("qemu-img");
            assert!(o.status.success(), "qemu-img: {}", String::from_utf8_lossy(&o.stderr));
        }
        std::fs::write(p("vmlinuz"), b"not a kernel").unwrap();
        std::fs::write(p("initrd.gz"), b"not an initrd").unwrap();

        let pid = std::process::id();
        let mut a = quickstart();
        a.name = format!("vf-xmltest-{pid}-a <&'\"> $(x)");
        a.kernel = Some(p("vmlinuz"));
        a.initrd = Some(p("initrd.gz"));
        a.cmdline = Some("console=ttyS0 a=\"<b>\" c='&d' $(rm -rf /) `id` x\ty".into());
        a.disks[0].path = p("root.qcow2");
        // libvirt allows only [A-Za-z0-9_ .+-] in a disk serial.
        a.disks[0].serial = Some("vf-root_0 .+-".into());
        a.disks.push(DiskDef {
            path: p("seed.iso"),
            format: "raw".into(),
            device: DiskDevice::Cdrom,
            bus: Bus::Ide,
            target: "hdc".into(),
            readonly: true,
            serial: None,
            boot_order: None,
        });
        a.nics.extend(ovs_hybrid().nics);
        a.nics.push(NicDef { mac: mac("52:54:00:c1:00:03"), model: NicModel::E1000, source: NicSource::Network { network: "vf-xmltest-none".into() }, target_dev: Some("vnet77".into()), mtu: None });
        a.nics[1].source = NicSource::Ovs { bridge: "vf-int".into(), interface_id: "3F2A1B0C-9D8E-4F7A-8B6C-5D4E3F2A1B0C".into() };
        a.console_log = p("console.log");
        a.graphics = Graphics::Vnc;
        a.marker = Marker { stack: "xmltest".into(), address: "instance.a[\"<&'\\\">\"]".into(), spec_hash: "sha256:abc".into() };
        a.uuid = uuid(1);

        let mut b = efi_custom();
        b.name = format!("vf-xmltest-{pid}-b");
        b.disks[0].path = p("root.qcow2");
        b.disks[1].path = p("data.raw");
        b.disks[2].path = p("seed.iso");
        b.disks[0].boot_order = Some(1);
        b.nics = nat().nics;
        b.console_log = p("console-b.log");
        b.uuid = uuid(2);

        let mut c = nat();
        c.name = format!("vf-xmltest-{pid}-c");
        c.disks[0].path = p("root.qcow2");
        c.disks[1].path = p("seed.iso");
        c.cpu = Some(CpuDef { mode: CpuMode::HostModel, model: None });
        c.memory_kib = 300 * 1024 + 4;
        c.graphics = Graphics::Spice;
        c.console_log = String::new();
        c.uuid = uuid(3);

        let uuids = [a.uuid.clone(), b.uuid.clone(), c.uuid.clone()];
        for d in [a, b, c] {
            let (_guard, observed, want, stored) = define_and_read_back(&d, tmp.path());
            // What libvirt rewrote (before alias alignment): the machine
            // alias, and the CPU when none was given; nothing else.
            assert_eq!(observed.machine_family(), machine_family(&d.machine));
            assert!(observed.machine.starts_with(if machine_family(&d.machine) == "q35" { "pc-q35-" } else { "pc-i440fx-" }), "{}", observed.machine);
            let mut raw = observed.clone();
            raw.machine = want.machine.clone();
            if d.cpu.is_none() {
                assert_eq!(raw.cpu, Some(CpuDef { mode: CpuMode::Custom, model: Some(DEFAULT_CPU_MODEL.into()) }));
                raw.cpu = None;
            }
            assert_eq!(raw, want, "libvirt rewrote more than the machine alias and the default cpu:\n{stored}");
            assert_eq!(observed.marker, Some(d.marker.clone()), "the marker survives");
            assert_eq!(observed.name, d.name);
            eprintln!("real_libvirt_round_trip: {} ok (machine {} -> {})", d.name, d.machine, observed.machine);
        }
        for u in &uuids {
            assert!(!virsh(&["dominfo", u]).0, "domain {u} was left behind");
        }
    }

    /// EFI and Secure Boot definitions with OVMF's real files: libvirt
    /// stores the loader and nvram as written (nothing to autoselect, so
    /// nothing that reads back differently), and the domains are never started.
    #[test]
    fn real_libvirt_efi_round_trip() {
        if std::env::var("VIRTFORM_REAL_HOST").as_deref() != Ok("1") {
            eprintln!("real_libvirt_efi_round_trip: skipped (set VIRTFORM_REAL_HOST=1; scripts/test does)");
            return;
        }
        for f in OVMF_FILES {
            assert!(std::path::Path::new(f).is_file(), "{f} is missing: apt-get install {OVMF_PACKAGE} (scripts/host-setup does)");
        }
        let tmp = tempfile::tempdir().unwrap();
        let p = |f: &str| tmp.path().join(f).to_string_lossy().into_owned();
        let o = Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", &p("root.qcow2"), "16M"]).output().expect("qemu-img");
        assert!(o.status.success());
        let pid = std::process::id();
        let mut a = efi_custom();
        a.name = format!("vfuefi-xmltest-{pid}-a");
        a.uuid = uuid(11);
        a.disks.truncate(1);
        a.disks[0].path = p("root.qcow2");
        a.loader = Some(LoaderDef::ovmf(false, p("a_VARS.fd")));
        a.console_log = p("a.log");
        let mut b = efi_secure();
        b.name = format!("vfuefi-xmltest-{pid}-b");
        b.uuid = uuid(12);
        b.kernel = None;
        b.initrd = None;
        b.cmdline = None;
        b.disks[0].path = p("root.qcow2");
        b.loader = Some(LoaderDef::ovmf(true, p("b_VARS.fd")));
        b.console_log = p("b.log");
        for d in [a, b] {
            let (_guard, observed, want, stored) = define_and_read_back(&d, tmp.path());
            assert_eq!(observed.loader, want.loader, "{stored}");
            assert_eq!(observed.nvram, want.nvram, "{stored}");
            // Defining creates no variable store: libvirt copies it at the first start.
            assert!(!std::path::Path::new(&d.loader.as_ref().unwrap().nvram).exists());
            eprintln!("real_libvirt_efi_round_trip: {} ok (secure boot {})", d.name, d.loader.as_ref().unwrap().secure);
        }
    }
}
