//! The guest agent channel in plans: how it lands on domains defined with
//! and without it, and that libvirt's additions never show as changes.

use super::tests::{find, load, lowering, opts};
use super::*;
use crate::observe::ActualDomain;
use crate::xml::domain::ObservedDomain;

const VM: &str = r#"
virtform { stack = "ag" }
network "lan" {
  bridge  = "vfag-lan0"
  address = "10.78.0.1/24"
}
port "eth0" {
  network = network.lan
  ip      = "10.78.0.10"
}
instance "vm" {
  memory  = "256M"
  kernel  = "/assets/vmlinuz"
  ports   = [port.eth0]
}
"#;

/// The host as an apply of `cfg` left it, with `edit` applied to the
/// domain's definition (and its marker left at the hash of what it was
/// defined from: an older spec when the definition differs).
fn host_with(cfg: &Configuration, edit: impl Fn(&mut crate::xml::domain::DomainDef)) -> Observed {
    let mut o = Observed::default();
    let b = desired::DesiredBridge::from_network(match &cfg.resource("network.lan").unwrap().spec {
        Spec::Network(n) => n,
        _ => unreachable!(),
    });
    o.links.insert(b.name.clone(), super::tests::unmarked_bridge(&b.name, &["10.78.0.1/24"], b.forward_delay_s * 100));
    o.links.get_mut(&b.name).unwrap().alias = Some(crate::host::marker_with_hash(&cfg.stack, "network.lan", &b.hash()));
    let r = cfg.resource("instance.vm").unwrap();
    let mut def = lowering(cfg).domain(r).unwrap();
    edit(&mut def);
    def.marker.spec_hash = String::new();
    def.marker.spec_hash = desired::spec_hash(&def);
    let mut seen = ObservedDomain::from_def(&def);
    if !def.guest_agent {
        // What libvirt reads back from a domain of the previous version:
        // no channel and no virtio-serial controller.
        seen.virtio_serial = false;
    }
    o.domains.insert(def.name.clone(), ActualDomain { name: def.name.clone(), running: true, autostart: false, def: Some(seen), marker: Some((cfg.stack.clone(), r.address.to_string(), def.marker.spec_hash.clone())) });
    o
}

#[test]
fn a_domain_defined_with_the_channel_plans_nothing() {
    let (_d, cfg) = load(VM);
    let p = plan(&cfg, &host_with(&cfg, |_| {}), &opts());
    assert!(!p.has_changes(), "{}", render::text(&p, false));
}

#[test]
fn a_domain_of_the_previous_version_gets_the_channel_with_a_restart() {
    let (_d, cfg) = load(VM);
    let p = plan(&cfg, &host_with(&cfg, |d| d.guest_agent = false), &opts());
    let c = find(&p, "instance.vm");
    assert_eq!(c.action, Action::Update);
    assert_eq!(c.reason.as_deref(), Some("update"), "a new version's definition is not drift");
    let ch = c.changes.iter().find(|x| x.attr == "guest_agent").expect("a guest_agent change");
    assert_eq!((ch.before.as_deref(), ch.after.as_deref(), ch.landing), (Some("false"), Some("true"), Landing::Restart));
    insta::assert_snapshot!("plan_text_agent_channel_restart", render::text(&p, false));
}

#[test]
fn the_channel_is_hot_plugged_where_a_virtio_serial_controller_is() {
    // Defined by this version with `guest_agent = false`: the controller is there.
    let (_d, cfg) = load(VM);
    let mut o = host_with(&cfg, |d| d.guest_agent = false);
    o.domains.get_mut("ag-vm").unwrap().def.as_mut().unwrap().virtio_serial = true;
    let p = plan(&cfg, &o, &opts());
    let c = find(&p, "instance.vm");
    assert_eq!(c.landing(), Some(Landing::Live));
    insta::assert_snapshot!("plan_text_agent_channel_live", render::text(&p, false));
}

#[test]
fn turning_the_agent_off_removes_the_channel_with_a_restart() {
    let (_d, cfg) = load(&VM.replace("ports   = [port.eth0]", "ports   = [port.eth0]\n  guest_agent = false"));
    let p = plan(&cfg, &host_with(&cfg, |d| d.guest_agent = true), &opts());
    let c = find(&p, "instance.vm");
    let ch = c.changes.iter().find(|x| x.attr == "guest_agent").expect("a guest_agent change");
    assert_eq!((ch.before.as_deref(), ch.after.as_deref(), ch.landing), (Some("true"), Some("false"), Landing::Restart));
    // And a domain without it, defined so, is converged.
    let p = plan(&cfg, &host_with(&cfg, |d| d.guest_agent = false), &opts());
    assert!(!p.has_changes(), "{}", render::text(&p, false));
}

#[test]
fn ignore_changes_keeps_the_hosts_channel() {
    let (_d, cfg) = load(&VM.replace("ports   = [port.eth0]", "ports   = [port.eth0]\n  lifecycle { ignore_changes = [guest_agent] }"));
    let p = plan(&cfg, &host_with(&cfg, |d| d.guest_agent = false), &opts());
    assert!(find(&p, "instance.vm").changes.iter().all(|c| c.attr != "guest_agent"), "{}", render::text(&p, false));
}

#[test]
fn addresses_are_unknown_at_plan_and_outputs_say_so() {
    let (_d, cfg) = load(&format!("{VM}\noutput \"addresses\" {{ value = instance.vm.addresses }}\noutput \"first\" {{ value = instance.vm.addresses[0] }}\n"));
    assert!(cfg.agent_fact_readers.contains("vm"));
    let o = cfg.outputs.iter().find(|o| o.name == "addresses").unwrap();
    assert!(o.value.contains_unknown());
    // The plan is the same as without the outputs: the fact is no desired state.
    let p = plan(&cfg, &host_with(&cfg, |_| {}), &opts());
    assert!(!p.has_changes(), "{}", render::text(&p, false));
}
