//! The catalogue of bad configurations: each must be rejected with the right
//! message at the right file:line:column, and nothing may panic.

use virtform::config::{self, LoadOptions};

struct Case {
    name: &'static str,
    files: &'static [(&'static str, &'static str)],
    vars: &'static [&'static str],
    /// File and the text whose first occurrence (after skipping `skip` ones) the error points at.
    file: &'static str,
    at: &'static str,
    skip: usize,
    msg: &'static str,
    label: Option<&'static str>,
}

macro_rules! case {
    ($name:expr, $src:expr, at = $at:expr $(, skip = $skip:expr)?, msg = $msg:expr $(, label = $label:expr)? $(, vars = $vars:expr)?) => {
        Case {
            name: $name,
            files: &[("main.vf.hcl", $src)],
            vars: { let _v: &[&str] = &[]; $(let _v = $vars;)? _v },
            file: "main.vf.hcl",
            at: $at,
            skip: { let _s = 0; $(let _s = $skip;)? _s },
            msg: $msg,
            label: { let _l: Option<&str> = None; $(let _l = Some($label);)? _l },
        }
    };
}

fn cases() -> Vec<Case> {
    vec![
        case!("syntax error", "network \"lan\" {\n  mtu = = 1\n}\n", at = "= 1", msg = "syntax error"),
        case!("unclosed string", "network \"lan\" {\n  bridge = \"vf-lan\n}\n", at = "bridge", msg = "syntax error"),
        case!("unknown block type", "netwrk \"lan\" {}\n", at = "netwrk", msg = "unknown block type `netwrk`", label = "did you mean `network`?"),
        case!("unknown attribute", "network \"lan\" {}\nimage \"i\" { source = \"/x.qcow2\" }\ndisk \"d\" { image = image.i }\ninstance \"web\" {\n  memroy = \"512M\"\n  disks = [disk.d]\n}\n",
              at = "memroy", msg = "unknown attribute `memroy` in instance.web", label = "did you mean `memory`?"),
        case!("wrong type", "image \"i\" { source = \"/x.qcow2\" }\ndisk \"d\" { image = image.i }\ninstance \"web\" {\n  vcpus = \"two\"\n  disks = [disk.d]\n}\n",
              at = "\"two\"", msg = "expected a number"),
        case!("bad size unit", "disk \"d\" {\n  size = \"12X\"\n}\n", at = "\"12X\"", msg = "unknown size unit"),
        case!("inexact size", "disk \"d\" {\n  size = \"1.3K\"\n}\n", at = "\"1.3K\"", msg = "not a whole number of bytes"),
        case!("bad MAC", "network \"n\" {}\nport \"p\" {\n  network = network.n\n  mac = \"52:54:00:zz:00:01\"\n}\n", at = "\"52:54", msg = "is not a MAC address"),
        case!("multicast MAC", "network \"n\" {}\nport \"p\" {\n  network = network.n\n  mac = \"01:00:5e:00:00:01\"\n}\n", at = "\"01:00", msg = "multicast"),
        case!("CIDR without prefix", "network \"n\" {\n  address = \"10.77.0.1\"\n}\n", at = "\"10.77.0.1\"", msg = "not in CIDR notation"),
        case!("CIDR prefix too long", "network \"n\" {\n  address = \"10.77.0.1/33\"\n}\n", at = "\"10.77.0.1/33\"", msg = "is not a prefix length"),
        case!("dangling reference", "network \"lan\" {}\nport \"p\" {\n  network = network.wan\n}\n", at = "network.wan", msg = "reference to undeclared resource `network.wan`", label = "did you mean `lan`?"),
        case!("missing index", "disk \"root\" {\n  count = 2\n  size = \"1G\"\n}\ninstance \"vm\" {\n  disks = [disk.root[5]]\n}\n", at = "5]", msg = "index 5 is out of range for `disk.root`", label = "has 2 element(s)"),
        case!("reference written as a string", "network \"n\" {}\nport \"p\" {\n  network = \"network.n\"\n}\n",
              at = "\"network.n\"", msg = "not the string \"network.n\" (write it without quotes)"),
        case!("map instead of a reference", "network \"n\" {}\nport \"p\" {\n  network = { name = \"n\" }\n}\n",
              at = "{ name", msg = "expected a reference to a resource, like network.lan, not a map"),
        case!("list item not a reference", "image \"i\" { source = \"/x.qcow2\" }\ndisk \"d\" { image = image.i }\ninstance \"vm\" {\n  kernel = \"/k\"\n  disks = [disk.d, 3]\n}\n",
              at = "3]", msg = "expected a reference to a resource"),
        case!("cycle between locals", "locals {\n  a = local.b\n  b = local.a\n}\n", at = "local.a", msg = "dependency cycle: local.a -> local.b -> local.a"),
        case!("cycle between resources", "network \"n\" {}\nport \"p\" {\n  network = network.n\n  depends_on = [instance.vm]\n}\ninstance \"vm\" {\n  kernel = \"/k\"\n  ports = [port.p]\n}\n",
              at = "instance.vm]", msg = "dependency cycle: instance.vm -> port.p -> instance.vm"),
        case!("duplicate resource", "network \"lan\" {}\nnetwork \"lan\" {}\n", at = "\"lan\"", skip = 1, msg = "duplicate network \"lan\""),
        case!("duplicate MAC", "network \"n\" {}\nport \"a\" {\n  network = network.n\n  mac = \"52:54:00:00:00:01\"\n}\nport \"b\" {\n  network = network.n\n  mac = \"52:54:00:00:00:01\"\n}\n",
              at = "\"52:54:00:00:00:01\"", skip = 1, msg = "have the same MAC 52:54:00:00:00:01"),
        case!("duplicate bridge", "network \"a\" {\n  bridge = \"br-x\"\n}\nnetwork \"b\" {\n  bridge = \"br-x\"\n}\n", at = "\"br-x\"", skip = 1, msg = "claim the same bridge \"br-x\""),
        case!("duplicate domain name", "instance \"a\" {\n  name = \"vm\"\n  kernel = \"/k\"\n}\ninstance \"b\" {\n  name = \"vm\"\n  kernel = \"/k\"\n}\n", at = "\"vm\"", skip = 1, msg = "would both be the libvirt domain \"vm\""),
        case!("variable without value", "variable \"workers\" {\n  type = number\n}\n", at = "\"workers\"", msg = "variable `workers` has no value"),
        case!("failing validation", "variable \"workers\" {\n  default = 0\n  validation {\n    condition     = var.workers > 0\n    error_message = \"at least one worker\"\n  }\n}\n",
              at = "0\n  validation", msg = "at least one worker"),
        case!("bad function argument", "locals {\n  ip = cidrhost(\"10.0.0.0/33\", 1)\n}\n", at = "\"10.0.0.0/33\"", msg = "cidrhost"),
        case!("unknown function", "locals {\n  n = lenght([1])\n}\n", at = "lenght", msg = "did you mean `length`?"),
        case!("IP outside CIDR", "network \"lan\" {\n  address = \"10.77.0.1/24\"\n}\nport \"p\" {\n  network = network.lan\n  ip = \"10.78.0.5\"\n}\n", at = "\"10.78.0.5\"", msg = "10.78.0.5 is outside network.lan's subnet 10.77.0.0/24"),
        case!("interface name too long", "network \"lan\" {\n  bridge = \"a-very-long-bridge-name\"\n}\n", at = "\"a-very-long", msg = "Linux allows at most 15"),
        case!("count and for_each", "network \"n\" {\n  count = 2\n  for_each = toset([\"a\"])\n}\n", at = "for_each", msg = "sets both `count` and `for_each`"),
        case!("for_each over a list", "network \"n\" {\n  for_each = [\"a\", \"b\"]\n}\n", at = "[\"a\"", msg = "not a list", label = "toset"),
        case!("count.index without count", "network \"n\" {\n  mtu = 1500 + count.index\n}\n", at = "count.index", msg = "`count` is only available in a resource with `count`"),
        case!("each.key without for_each", "network \"n\" {\n  bridge = each.key\n}\n", at = "each.key", msg = "`each` is only available in a resource with `for_each`"),
        case!("undeclared variable", "variable \"workers\" {\n  default = 1\n}\nnetwork \"n\" {\n  count = var.wokers\n}\n", at = "var.wokers", msg = "undeclared variable `var.wokers`", label = "did you mean `workers`?"),
        case!("plug incompatible with network", "network \"lan\" {}\nport \"p\" {\n  network = network.lan\n  plug = \"ovs_hybrid\"\n}\n", at = "\"ovs_hybrid\"", msg = "plug \"ovs_hybrid\" cannot be used on network.lan", label = "expected \"bridge\""),
        case!("enum typo", "network \"lan\" {\n  type = \"brige\"\n}\n", at = "\"brige\"", msg = "invalid value \"brige\" for `type`", label = "did you mean \"bridge\"?"),
        case!("duplicate fixed IP", "network \"n\" {\n  type    = \"nat\"\n  address = \"10.9.0.1/24\"\n}\nport \"a\" {\n  network = network.n\n  ip      = \"10.9.0.5\"\n}\nport \"b\" {\n  network = network.n\n  ip      = \"10.9.0.5\"\n}\n",
              at = "\"10.9.0.5\"", skip = 1, msg = "port.b and port.a have the same fixed IP 10.9.0.5 on network.n", label = "IP 10.9.0.5 on network.n is already used by port.a"),
        case!("second disk used by two instances", "disk \"d\" {\n  size = \"1G\"\n}\ndisk \"e\" {\n  size = \"1G\"\n}\ninstance \"a\" {\n  disks = [disk.d]\n}\ninstance \"b\" {\n  disks = [disk.e, disk.d]\n}\n",
              at = "disk.d]", skip = 1, msg = "disk.d is used by two instances, instance.a and instance.b"),
        // moved and removed blocks (issue #16 items 2 and 3)
        case!("moved from a declared resource", "instance \"vm\" {\n  kernel = \"/k\"\n}\ninstance \"vm2\" {\n  kernel = \"/k\"\n}\nmoved {\n  from = instance.vm\n  to   = instance.vm2\n}\n",
              at = "instance.vm\n", skip = 0, msg = "instance.vm is moved to instance.vm2, but the configuration still declares instance.vm", label = "remove (or rename) the block of instance.vm"),
        case!("two moves to one target", "instance \"vm2\" {\n  kernel = \"/k\"\n}\nmoved {\n  from = instance.a\n  to   = instance.vm2\n}\nmoved {\n  from = instance.b\n  to   = instance.vm2\n}\n",
              at = "instance.vm2\n}", skip = 1, msg = "two moves to instance.vm2: from instance.a and from instance.b"),
        case!("moved between kinds", "instance \"vm2\" {\n  kernel = \"/k\"\n}\nmoved {\n  from = disk.root\n  to   = instance.vm2\n}\n", at = "instance.vm2\n}", msg = "cannot move disk.root to instance.vm2: a disk cannot become an instance", label = "expected a disk address here"),
        case!("moved from a malformed address", "instance \"vm2\" {\n  kernel = \"/k\"\n}\nmoved {\n  from = instance.vm[x]\n  to   = instance.vm2\n}\n", at = "instance.vm[x]", msg = "`from` must be the address of a resource"),
        case!("moved to a string", "instance \"vm2\" {\n  kernel = \"/k\"\n}\nmoved {\n  from = instance.vm\n  to   = \"instance.vm2\"\n}\n", at = "\"instance.vm2\"", msg = "`to` must be the address of a resource", label = "written without quotes"),
        case!("moved from a data source", "instance \"vm2\" {\n  kernel = \"/k\"\n}\nmoved {\n  from = data.network.lan\n  to   = instance.vm2\n}\n", at = "data.network.lan", msg = "`from` names the data source data.network.lan"),
        case!("moved to an undeclared resource", "instance \"vm2\" {\n  kernel = \"/k\"\n}\nmoved {\n  from = instance.vm\n  to   = instance.vm3\n}\n", at = "instance.vm3", msg = "instance.vm is moved to instance.vm3, which is not declared"),
        case!("moved without to", "instance \"vm2\" {\n  kernel = \"/k\"\n}\nmoved {\n  from = instance.vm\n}\n", at = "moved", msg = "a moved block needs `to`"),
        case!("moved to itself", "instance \"vm2\" {\n  kernel = \"/k\"\n}\nmoved {\n  from = instance.x\n  to   = instance.x\n}\n", at = "instance.x\n}", msg = "instance.x is moved to itself"),
        case!("moves in a circle", "instance \"vm2\" {\n  kernel = \"/k\"\n}\nmoved {\n  from = instance.a\n  to   = instance.b\n}\nmoved {\n  from = instance.b\n  to   = instance.a\n}\n", at = "instance.b\n}", msg = "go round in a circle"),
        case!("unknown attribute in moved", "instance \"vm2\" {\n  kernel = \"/k\"\n}\nmoved {\n  from = instance.vm\n  too  = instance.vm2\n}\n", at = "too", msg = "unknown attribute `too` in moved", label = "did you mean `to`?"),
        case!("removed for a declared resource", "instance \"vm2\" {\n  kernel = \"/k\"\n}\nremoved {\n  from = instance.vm2\n  lifecycle {\n    destroy = false\n  }\n}\n", at = "instance.vm2\n  lifecycle", msg = "instance.vm2 is removed, but the configuration still declares it"),
        case!("removed with a non-literal destroy", "instance \"vm2\" {\n  kernel = \"/k\"\n}\nremoved {\n  from = instance.old\n  lifecycle {\n    destroy = \"no\"\n  }\n}\n", at = "\"no\"", msg = "`destroy` must be the literal true or false"),
        case!("removed from a malformed address", "instance \"vm2\" {\n  kernel = \"/k\"\n}\nremoved {\n  from = instance\n}\n", at = "instance\n}", msg = "`from` must be the address of a resource"),
        case!("removed without from", "instance \"vm2\" {\n  kernel = \"/k\"\n}\nremoved {\n  lifecycle {\n    destroy = false\n  }\n}\n", at = "removed", msg = "a removed block needs `from`"),
        case!("both moved and removed", "instance \"vm2\" {\n  kernel = \"/k\"\n}\nmoved {\n  from = instance.vm\n  to   = instance.vm2\n}\nremoved {\n  from = instance.vm\n}\n", at = "instance.vm\n}", msg = "instance.vm is both moved and removed"),
        case!("moved block with a label", "instance \"vm2\" {\n  kernel = \"/k\"\n}\nmoved \"x\" {\n  from = instance.vm\n  to   = instance.vm2\n}\n", at = "\"x\"", msg = "a `moved` block takes no label"),
        // import blocks (issue #14 item 3)
        case!("import to an undeclared resource", "instance \"legacy\" {\n  kernel = \"/k\"\n}\nimport {\n  to = instance.legcy\n  id = \"legacy-vm\"\n}\n",
              at = "instance.legcy", msg = "import to undeclared resource `instance.legcy`", label = "did you mean `instance.legacy`?"),
        case!("import to a missing instance key", "instance \"w\" {\n  count = 2\n  kernel = \"/k\"\n}\nimport {\n  to = instance.w[5]\n  id = \"vm\"\n}\n",
              at = "instance.w[5]", msg = "import to undeclared resource `instance.w[5]`", label = "instance.w[0], instance.w[1]"),
        case!("import to a string", "instance \"legacy\" {\n  kernel = \"/k\"\n}\nimport {\n  to = \"instance.legacy\"\n  id = \"legacy-vm\"\n}\n",
              at = "\"instance.legacy\"", msg = "`to` must be the address of a resource", label = "without quotes"),
        case!("import into a data source", "data \"network\" \"lan\" {\n  bridge = \"br0\"\n}\nimport {\n  to = data.network.lan\n  id = \"br0\"\n}\n",
              at = "data.network.lan", msg = "is a data source"),
        case!("two imports to one address", "instance \"legacy\" {\n  kernel = \"/k\"\n}\nimport {\n  to = instance.legacy\n  id = \"a\"\n}\nimport {\n  to = instance.legacy\n  id = \"b\"\n}\n",
              at = "instance.legacy", skip = 1, msg = "two imports to instance.legacy"),
        case!("a disk and a volume importing one file", "disk \"d\" {\n  size = \"1G\"\n}\nvolume \"v\" {\n  size = \"1G\"\n}\nimport {\n  to = disk.d\n  id = \"/srv/a.qcow2\"\n}\nimport {\n  to = volume.v\n  id = \"/srv/a.qcow2\"\n}\n",
              at = "\"/srv/a.qcow2\"", skip = 1, msg = "\"/srv/a.qcow2\" is imported twice, into disk.d and volume.v"),
        case!("empty import id", "instance \"legacy\" {\n  kernel = \"/k\"\n}\nimport {\n  to = instance.legacy\n  id = \"  \"\n}\n",
              at = "\"  \"", msg = "the `id` of an import is empty"),
        case!("import without id", "instance \"legacy\" {\n  kernel = \"/k\"\n}\nimport {\n  to = instance.legacy\n}\n",
              at = "import", msg = "an import block needs `id`"),
        case!("import id not a string", "instance \"legacy\" {\n  kernel = \"/k\"\n}\nimport {\n  to = instance.legacy\n  id = 5\n}\n",
              at = "5\n", msg = "must be a string, not number"),
        case!("import id from a resource", "network \"n\" {}\ninstance \"legacy\" {\n  kernel = \"/k\"\n}\nimport {\n  to = instance.legacy\n  id = network.n.bridge\n}\n",
              at = "network.n.bridge", msg = "must be known before planning"),
        case!("unknown import attribute", "instance \"legacy\" {\n  kernel = \"/k\"\n}\nimport {\n  to = instance.legacy\n  ids = \"x\"\n}\n",
              at = "ids", msg = "unknown attribute `ids` in import", label = "did you mean `id`?"),
        case!("disk used by two instances", "disk \"d\" {\n  size = \"1G\"\n}\ninstance \"a\" {\n  disks = [disk.d]\n}\ninstance \"b\" {\n  disks = [disk.d]\n}\n", at = "disk.d]", skip = 1, msg = "disk.d is used by two instances"),
        case!("missing required attribute", "image \"base\" {\n  format = \"qcow2\"\n}\n", at = "image \"base\"", msg = "missing the required attribute `source`"),
        case!("blank disk without size", "disk \"d\" {\n  format = \"raw\"\n}\n", at = "disk \"d\"", msg = "a blank disk needs `size`"),
        case!("remote image without checksum", "image \"i\" {\n  source = \"https://example.org/x.qcow2\"\n}\n", at = "image \"i\"", msg = "needs `sha256`"),
        case!("invalid resource name", "network \"1abc\" {}\n", at = "\"1abc\"", msg = "is not a valid name"),
        case!("two labels", "network \"a\" \"b\" {}\n", at = "\"b\"", msg = "takes exactly one label"),
        case!("top-level attribute", "stack = \"x\"\n", at = "stack", msg = "unexpected attribute `stack` at the top level"),
        case!("duplicate attribute", "network \"n\" {\n  mtu = 1500\n  mtu = 9000\n}\n", at = "mtu", skip = 1, msg = "duplicate attribute `mtu`"),
        case!("default of the wrong type", "variable \"n\" {\n  type = number\n  default = \"many\"\n}\n", at = "\"many\"", msg = "does not match its type number"),
        case!("negative count", "network \"n\" {\n  count = -1\n}\n", at = "-1", msg = "`count` must be a whole number from 0 to 100000"),
        case!("sensitive output", "variable \"pw\" {\n  default = \"secret\"\n  sensitive = true\n}\noutput \"pw\" {\n  value = var.pw\n}\n", at = "var.pw\n}", msg = "refers to sensitive values"),
        case!("tcp wait without fixed ip", "network \"n\" {}\nport \"p\" {\n  network = network.n\n}\ninstance \"vm\" {\n  kernel = \"/k\"\n  ports = [port.p]\n  wait_for {\n    tcp = 22\n  }\n}\n", at = "22", msg = "`tcp` needs a port with a fixed `ip`"),
        case!("fixed ip without network address", "network \"n\" {}\nport \"p\" {\n  network = network.n\n  ip = \"10.0.0.5\"\n}\n", at = "\"10.0.0.5\"", msg = "needs its network to have a `subnet` (or an `address`)"),
        case!("data network without selector", "data \"network\" \"lan\" {}\n", at = "data \"network\" \"lan\"", msg = "needs exactly one selector: `bridge`, `libvirt_network` or `ovs_bridge`, and has none"),
        case!("data network with two selectors", "data \"network\" \"lan\" {\n  bridge = \"br0\"\n  ovs_bridge = \"br-int\"\n}\n", at = "\"br-int\"", msg = "needs exactly one selector, and this one has 2"),
        case!("data network attribute that would change it", "data \"network\" \"lan\" {\n  bridge = \"br0\"\n  mtu = 9000\n}\n", at = "9000", msg = "`mtu` would change an existing network"),
        case!("data network with a bad bridge name", "data \"network\" \"lan\" {\n  bridge = \"br 0\"\n}\n", at = "\"br 0\"", msg = "cannot name an existing network"),
        case!("unknown data source type", "data \"dsk\" \"x\" {}\n", at = "\"dsk\"", msg = "there is no data source of type \"dsk\""),
        case!("data source with one label", "data \"network\" {}\n", at = "data", msg = "two labels"),
        case!("reference to an undeclared data source", "network \"n\" {}\nport \"p\" {\n  network = data.network.nope\n}\n", at = "data.network.nope", msg = "data.network.nope"),
        case!("data source with lifecycle", "data \"network\" \"lan\" {\n  bridge = \"br0\"\n  lifecycle {\n    prevent_destroy = true\n  }\n}\n", at = "lifecycle", msg = "lifecycle"),
        case!("port ip outside the subnet", "network \"t\" {\n  type = \"ovs\"\n  bridge = \"vf-t\"\n  subnet = \"10.50.0.0/24\"\n}\nport \"p\" {\n  network = network.t\n  ip = \"10.51.0.5\"\n}\n", at = "\"10.51.0.5\"", msg = "10.51.0.5 is outside network.t's subnet 10.50.0.0/24"),
        case!("port ip on a data network outside its subnet", "data \"network\" \"lan\" {\n  bridge = \"br0\"\n  subnet = \"192.168.1.0/24\"\n}\nport \"p\" {\n  network = data.network.lan\n  ip = \"192.168.2.5\"\n}\n", at = "\"192.168.2.5\"", msg = "is outside data.network.lan's subnet 192.168.1.0/24"),
        case!("port ip is the gateway", "network \"t\" {\n  subnet = \"10.50.0.0/24\"\n  gateway = \"10.50.0.1\"\n}\nport \"p\" {\n  network = network.t\n  ip = \"10.50.0.1\"\n}\n", at = "\"10.50.0.1\"\n}", skip = 1, msg = "is the gateway of network.t"),
        case!("port ip is the network address", "network \"t\" {\n  subnet = \"10.50.0.0/24\"\n}\nport \"p\" {\n  network = network.t\n  ip = \"10.50.0.0\"\n}\n", at = "\"10.50.0.0\"\n}", msg = "network or broadcast"),
        case!("gateway outside the subnet", "network \"t\" {\n  subnet = \"10.50.0.0/24\"\n  gateway = \"10.60.0.1\"\n}\n", at = "\"10.60.0.1\"", msg = "gateway 10.60.0.1 is outside the subnet 10.50.0.0/24"),
        case!("gateway on a data network outside its subnet", "data \"network\" \"lan\" {\n  bridge = \"br0\"\n  subnet = \"192.168.1.0/24\"\n  gateway = \"192.168.9.1\"\n}\n", at = "\"192.168.9.1\"", msg = "is outside the subnet 192.168.1.0/24"),
        case!("subnet and address disagree", "network \"t\" {\n  subnet = \"10.50.0.0/24\"\n  address = \"10.51.0.1/24\"\n}\n", at = "\"10.50.0.0/24\"", msg = "subnet 10.50.0.0/24 and address 10.51.0.1/24 disagree"),
        case!("subnet with host bits", "network \"t\" {\n  subnet = \"10.50.0.7/24\"\n}\n", at = "\"10.50.0.7/24\"", msg = "has host bits set", label = "did you mean \"10.50.0.0/24\"?"),
        case!("empty dns", "network \"t\" {\n  subnet = \"10.50.0.0/24\"\n  dns = []\n}\n", at = "[]", msg = "`dns` is an empty list"),
        case!("agent wait without the agent channel", "instance \"vm\" {\n  kernel = \"/k\"\n  guest_agent = false\n  wait_for {\n    agent = true\n  }\n}\n", at = "true\n  }", msg = "`agent = true` waits for the guest agent, but this instance has `guest_agent = false`"),
        case!("agent addresses configuring a resource", "network \"n\" {}\nport \"p\" {\n  network = network.n\n}\ninstance \"vm\" {\n  kernel = \"/k\"\n  ports = [port.p]\n}\ninstance \"w\" {\n  kernel = \"/k\"\n  cmdline = join(\" \", instance.vm.addresses)\n}\n",
              at = "instance.vm.addresses", msg = "`instance.vm.addresses` is a host fact (what the guest agent reports) and cannot configure a resource"),
        case!("unknown attribute in nested block", "instance \"vm\" {\n  kernel = \"/k\"\n  wait_for {\n    consol = \"login:\"\n  }\n}\n", at = "consol", msg = "unknown attribute `consol` in `wait_for` of instance.vm", label = "did you mean `console`?"),
        case!("unsafe for_each key", "network \"n\" {\n  for_each = { \"../x\" = 1 }\n}\n", at = "{ \"../x\"", msg = "is not usable"),
        case!("index into a set", "locals {\n  s = toset([\"a\"])\n  x = local.s[0]\n}\n", at = "0]", msg = "is a set"),
        case!("division by zero", "locals {\n  x = 1 / 0\n}\n", at = "0\n", msg = "division by zero"),
        case!("invalid stack name", "virtform {\n  stack = \"my stack\"\n}\n", at = "\"my stack\"", msg = "stack name \"my stack\" is not valid"),
        case!("unknown type", "variable \"x\" {\n  type = strng\n}\n", at = "strng", msg = "did you mean `string`?"),
        case!("port ip is the host address", "network \"lan\" {\n  address = \"10.77.0.1/24\"\n}\nport \"p\" {\n  network = network.lan\n  ip = \"10.77.0.1\"\n}\n", at = "\"10.77.0.1\"\n}", msg = "is the host's own address"),
        case!("reference to wrong kind", "network \"n\" {}\nport \"p\" {\n  network = network.n\n}\ninstance \"vm\" {\n  disks = [port.p]\n}\n", at = "port.p]", msg = "expected a reference to a disk"),
        case!("string instead of reference", "network \"n\" {}\nport \"p\" {\n  network = \"n\"\n}\n", at = "\"n\"\n}", msg = "write it without quotes"),
        case!("nothing to boot", "instance \"vm\" {\n  vcpus = 1\n}\n", at = "instance \"vm\"", msg = "nothing to boot"),
        case!("cpu custom without model", "instance \"vm\" {\n  kernel = \"/k\"\n  cpu {\n    mode = \"custom\"\n  }\n}\n", at = "\"custom\"", msg = "needs `model`"),
        case!("secure_boot without efi", "instance \"vm\" {\n  kernel = \"/k\"\n  machine = \"q35\"\n  secure_boot = true\n}\n", at = "true", msg = "`secure_boot` needs firmware = \"efi\"", label = "Secure Boot is a UEFI feature"),
        case!("secure_boot on the pc machine", "instance \"vm\" {\n  kernel = \"/k\"\n  firmware = \"efi\"\n  secure_boot = true\n}\n", at = "true", msg = "`secure_boot` needs machine = \"q35\" (machine defaults to \"pc\")", label = "SMM"),
        case!("secure_boot on an i440fx machine", "instance \"vm\" {\n  kernel = \"/k\"\n  firmware = \"efi\"\n  machine = \"pc-i440fx-7.2\"\n  secure_boot = true\n}\n", at = "true", msg = "`secure_boot` needs machine = \"q35\" (machine is \"pc-i440fx-7.2\")"),
        case!("firmware typo", "instance \"vm\" {\n  kernel = \"/k\"\n  firmware = \"uefi\"\n}\n", at = "\"uefi\"", msg = "invalid value \"uefi\" for `firmware`", label = "did you mean \"efi\"?"),
        case!("ignore_changes of an unknown attribute", "instance \"vm\" {\n  kernel = \"/k\"\n  lifecycle {\n    ignore_changes = [memroy]\n  }\n}\n", at = "[memroy]", msg = "not an attribute of instance", label = "did you mean `memory`?"),
        case!("undeclared --var", "variable \"workers\" {\n  default = 1\n}\n", at = "", msg = "undeclared variable `wokers`", label = "did you mean `workers`?", vars = &["wokers=2"]),
        case!("--var of the wrong type", "variable \"workers\" {\n  type = number\n}\n", at = "\"workers\"", msg = "invalid value for variable `workers` (set by --var workers=...)", vars = &["workers=many"]),
    ]
}

fn locate(src: &str, needle: &str, skip: usize) -> (usize, usize) {
    let mut from = 0;
    let mut pos = None;
    for _ in 0..=skip {
        let i = src[from..].find(needle).unwrap_or_else(|| panic!("needle {needle:?} not in source")) + from;
        pos = Some(i);
        from = i + 1;
    }
    let pos = pos.unwrap();
    let line = src[..pos].matches('\n').count() + 1;
    let col = src[..pos].rsplit('\n').next().unwrap().chars().count() + 1;
    (line, col)
}

#[test]
fn catalogue_of_bad_configurations() {
    let cases = cases();
    assert!(cases.len() >= 40, "the catalogue has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let dir = tempfile::tempdir().unwrap();
        for (name, src) in case.files {
            std::fs::write(dir.path().join(name), src).unwrap();
        }
        let opts = LoadOptions {
            dir: dir.path().to_path_buf(),
            vars: case.vars.iter().map(|s| s.to_string()).collect(),
            state_dir: "/var/lib/virtform".into(),
            ..Default::default()
        };
        let err = match config::load(&opts) {
            Ok(_) => {
                failures.push(format!("{}: was accepted", case.name));
                continue;
            }
            Err(e) => e,
        };
        let rendered = err.render(false);
        let Some(d) = err.diags.0.iter().find(|d| d.message.contains(case.msg)) else {
            failures.push(format!("{}: no diagnostic contains {:?}; got:\n{rendered}", case.name, case.msg));
            continue;
        };
        if let Some(l) = case.label {
            let text = format!("{} {}", d.label.clone().unwrap_or_default(), d.help.clone().unwrap_or_default());
            if !text.contains(l) {
                failures.push(format!("{}: label {:?} lacks {l:?}", case.name, d.label));
            }
        }
        if case.at.is_empty() {
            continue; // a command-line error has no place in a file
        }
        let src = case.files.iter().find(|f| f.0 == case.file).unwrap().1;
        let (line, col) = locate(src, case.at, case.skip);
        let want = format!("{}:{line}:{col}", case.file);
        let got = d.location(&err.sources).unwrap_or_default();
        if !got.ends_with(&want) {
            failures.push(format!("{}: expected location {want}, got {got}:\n{rendered}", case.name));
            continue;
        }
        // The rendering shows the source line and a marker.
        let text_line = src.lines().nth(line - 1).unwrap();
        if !rendered.contains(&format!("{line} | {text_line}")) || !rendered.contains('^') {
            failures.push(format!("{}: rendering lacks the source line or marker:\n{rendered}", case.name));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n\n{}", failures.len(), cases.len(), failures.join("\n\n"));
}

/// A syntactically valid OpenSSH private key (not a usable one): the
/// format carries its public half and cipher in the clear, which is all
/// validation reads.
fn fake_openssh_key(cipher: &str) -> String {
    virtform::model::ssh_key::fake_private_key(cipher, 1, "ssh-ed25519")
}

/// `connection` and the SSH waits: every mistake a located error.
#[test]
fn connection_and_ssh_wait_errors() {
    let base = |conn: &str, wait: &str, ci: &str, port: &str| {
        format!(
            "network \"lan\" {{\n  address = \"10.88.0.1/24\"\n}}\nnetwork \"dark\" {{\n  subnet = \"10.89.0.0/24\"\n}}\nport \"p\" {{\n  network = {port}\n  ip = \"{}\"\n}}\ninstance \"vm\" {{\n  kernel = \"/k\"\n  ports = [port.p]\n{ci}{conn}{wait}}}\n",
            if port == "network.lan" { "10.88.0.5" } else { "10.89.0.5" }
        )
    };
    let conn = |user: &str, key: &str| format!("  connection {{\n    user = \"{user}\"\n    private_key = {key}\n  }}\n");
    let ci = "  cloud_init {}\n";
    let ssh = "  wait_for {\n    ssh = true\n  }\n";
    let key = "file(\"${path.module}/id_ed25519\")";
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("missing key file", base(&conn("debian", "file(\"${path.module}/nope\")"), ssh, ci, "network.lan"), "\"${path.module}/nope\"", "nope"),
        ("not a private key", base(&conn("debian", "\"hello\""), ssh, ci, "network.lan"), "\"hello\"", "not an OpenSSH private key"),
        ("a public key", base(&conn("debian", "file(\"${path.module}/id_ed25519.pub\")"), ssh, ci, "network.lan"), "file(", "this is a public key"),
        ("root", base(&conn("root", key), ssh, ci, "network.lan"), "\"root\"", "disable root logins"),
        ("bad user", base(&conn("Debian User", key), ssh, ci, "network.lan"), "\"Debian User\"", "is not a user name cloud-init can create"),
        ("ssh wait without connection", base("", ssh, ci, "network.lan"), "true", "`ssh` needs a `connection` block"),
        ("cloud_init wait without connection", base("", "  wait_for {\n    cloud_init = true\n  }\n", ci, "network.lan"), "true", "`cloud_init` needs a `connection` block"),
        ("connection without cloud_init", base(&conn("debian", key), "", "", "network.lan"), "connection {", "needs a `cloud_init` block"),
        ("unreachable port", base(&conn("debian", key), ssh, ci, "network.dark"), "true", "no port of this instance has an address virtform can reach"),
    ];
    let mut failures = Vec::new();
    for (name, src, at, msg) in &cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.vf.hcl"), src).unwrap();
        std::fs::write(dir.path().join("id_ed25519"), fake_openssh_key("none")).unwrap();
        std::fs::write(dir.path().join("id_ed25519.pub"), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAkJ t@t\n").unwrap();
        let opts = LoadOptions { dir: dir.path().to_path_buf(), state_dir: "/var/lib/virtform".into(), ..Default::default() };
        let err = match config::load(&opts) {
            Ok(_) => {
                failures.push(format!("{name}: was accepted:\n{src}"));
                continue;
            }
            Err(e) => e,
        };
        let rendered = err.render(false);
        let Some(d) = err.diags.0.iter().find(|d| d.message.contains(msg)) else {
            failures.push(format!("{name}: no diagnostic contains {msg:?}; got:\n{rendered}"));
            continue;
        };
        let (line, col) = locate(src, at, 0);
        let got = d.location(&err.sources).unwrap_or_default();
        if !got.ends_with(&format!("main.vf.hcl:{line}:{col}")) {
            failures.push(format!("{name}: expected main.vf.hcl:{line}:{col}, got {got}:\n{rendered}"));
        }
        if rendered.contains("private-part") || rendered.contains("b3BlbnNzaC1rZXktdjE") {
            failures.push(format!("{name}: key material in the message:\n{rendered}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n\n{}", failures.len(), cases.len(), failures.join("\n\n"));

    // The same configuration with everything right loads, and the key is
    // sensitive in every rendering of the instance.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.vf.hcl"), base(&conn("debian", key), ssh, ci, "network.lan") + "output \"c\" {\n  value = instance.vm.connection\n}\n").unwrap();
    std::fs::write(dir.path().join("id_ed25519"), fake_openssh_key("none")).unwrap();
    let cfg = config::load(&LoadOptions { dir: dir.path().to_path_buf(), state_dir: "/var/lib/virtform".into(), ..Default::default() }).unwrap_or_else(|e| panic!("{}", e.render(false)));
    let shown = format!("{:?} {}", cfg.resources, cfg.outputs[0].value);
    assert!(!shown.contains("b3BlbnNzaC1rZXktdjE") && !shown.contains("BEGIN OPENSSH"), "{shown}");
    assert!(cfg.outputs[0].value.to_string().contains("(sensitive)"), "{}", cfg.outputs[0].value);

    // An encrypted key needs an agent.
    std::fs::write(dir.path().join("id_ed25519"), fake_openssh_key("aes256-ctr")).unwrap();
    let r = config::load(&LoadOptions { dir: dir.path().to_path_buf(), state_dir: "/var/lib/virtform".into(), ..Default::default() });
    if std::env::var_os("SSH_AUTH_SOCK").is_none() {
        let e = r.expect_err("an encrypted key without an agent is refused");
        assert!(e.render(false).contains("encrypted with a passphrase and no ssh-agent"), "{}", e.render(false));
    } else {
        assert!(r.is_ok());
    }
}
