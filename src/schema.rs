//! JSON Schema of the language, generated from the resource types.
//!
//! Invariant: `schema/language.schema.json` in the repository equals
//! [`language_schema`]'s output (a test fails when it is stale).

use crate::model::{data::DataNetwork, disk::Disk, host::Host, image::Image, instance::Instance, network::Network, port::Port, volume::Volume};
use schemars::generate::SchemaSettings;

/// The schema: one definition per resource kind, with descriptions.
pub fn language_schema() -> serde_json::Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let mut defs = serde_json::Map::new();
    let mut kinds = serde_json::Map::new();
    let entries: [(&str, schemars::Schema); 7] = [
        ("host", generator.subschema_for::<Host>()),
        ("network", generator.subschema_for::<Network>()),
        ("port", generator.subschema_for::<Port>()),
        ("image", generator.subschema_for::<Image>()),
        ("disk", generator.subschema_for::<Disk>()),
        ("volume", generator.subschema_for::<Volume>()),
        ("instance", generator.subschema_for::<Instance>()),
    ];
    for (kind, s) in entries {
        kinds.insert(
            kind.to_string(),
            serde_json::json!({
                "type": "object",
                "description": format!("`{kind} \"NAME\" {{ ... }}` blocks, by name. Every resource also accepts count, for_each, depends_on and lifecycle."),
                "additionalProperties": s.to_value(),
            }),
        );
    }
    let data_network = generator.subschema_for::<DataNetwork>();
    kinds.insert(
        "data".to_string(),
        serde_json::json!({
            "type": "object",
            "description": "`data \"TYPE\" \"NAME\" { ... }` blocks: existing objects virtform reads and never changes, referenced as data.TYPE.NAME.",
            "properties": {
                "network": {
                    "type": "object",
                    "description": "`data \"network\" \"NAME\" { ... }`: an existing Linux bridge, libvirt network or Open vSwitch bridge (exactly one selector).",
                    "additionalProperties": data_network.to_value(),
                }
            },
            "additionalProperties": false,
        }),
    );
    let address = serde_json::json!({
        "type": "string",
        "description": "A resource address written without quotes: KIND.NAME, KIND.NAME[INDEX] or KIND.NAME[\"KEY\"] (a whole block when written without a key), optionally inside modules (module.web[\"a\"].KIND.NAME), or a module (module.web, module.web[\"a\"]).",
        "pattern": "^((module\\.[A-Za-z_][A-Za-z0-9_-]*(\\[([0-9]+|\"[A-Za-z0-9_.-]+\")\\])?\\.)*(network|port|image|disk|volume|instance)\\.[A-Za-z_][A-Za-z0-9_-]*(\\[([0-9]+|\"[A-Za-z0-9_.-]+\")\\])?|module\\.[A-Za-z_][A-Za-z0-9_-]*(\\[([0-9]+|\"[A-Za-z0-9_.-]+\")\\])?(\\.module\\.[A-Za-z_][A-Za-z0-9_-]*(\\[([0-9]+|\"[A-Za-z0-9_.-]+\")\\])?)*)$",
    });
    kinds.insert(
        "moved".to_string(),
        serde_json::json!({
            "type": "array",
            "description": "`moved { from = ADDRESS, to = ADDRESS }` blocks: the object of `from` now belongs to `to`. The host objects keep the names derived from `from` (domain name and UUID, bridge, MAC, file paths); only the ownership markers are rewritten. Chains (a to b, b to c) resolve; `from` must no longer be declared, `to` (the chain's end) must be.",
            "items": {
                "type": "object",
                "properties": { "from": address.clone(), "to": address.clone() },
                "required": ["from", "to"],
                "additionalProperties": false,
            },
        }),
    );
    kinds.insert(
        "removed".to_string(),
        serde_json::json!({
            "type": "array",
            "description": "`removed { from = ADDRESS  lifecycle { destroy = BOOL } }` blocks for resources whose block is gone: destroy = true (the default) destroys the object as if the block were simply deleted; destroy = false forgets it: its marker is removed (files and libvirt networks are recorded as forgotten in <state>/<stack>/names.json) and the object stays as it is.",
            "items": {
                "type": "object",
                "properties": {
                    "from": address,
                    "lifecycle": {
                        "type": "object",
                        "properties": { "destroy": { "type": "boolean", "default": true, "description": "false: stop managing the object and leave it; true: destroy it." } },
                        "additionalProperties": false,
                    },
                },
                "required": ["from"],
                "additionalProperties": false,
            },
        }),
    );
    kinds.insert(
        "module".to_string(),
        serde_json::json!({
            "type": "object",
            "description": "`module \"NAME\" { source = \"./DIR\", ... }` blocks, by name: a local module (a directory of .vf.hcl files with its own variables, locals, resources and outputs) instantiated here. Its resources' addresses carry the module path (module.NAME[KEY].KIND.NAME); module.NAME reads its outputs (a list of them under count, a map under for_each).",
            "additionalProperties": {
                "type": "object",
                "required": ["source"],
                "properties": {
                    "source": { "type": "string", "pattern": "^\\.\\.?/", "description": "The module's directory, relative to the directory of the calling file; a literal string starting with ./ or ../." },
                    "count": { "type": "integer", "minimum": 0, "description": "How many instances: module.NAME[0], module.NAME[1], …" },
                    "for_each": { "description": "A map or a set of strings: one instance per key, module.NAME[\"KEY\"]." },
                    "depends_on": { "type": "array", "items": { "$ref": "#/$defs/ResourceRef" }, "description": "Resources or modules every resource of the module is created after." }
                },
                "additionalProperties": { "description": "An input: a value for the module's variable of that name (converted to its type and checked by its validation blocks); resources and data sources can be passed in (network = network.lan)." }
            }
        }),
    );
    for (k, v) in generator.definitions() {
        defs.insert(k.clone(), v.clone());
    }
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://virtform.dev/schema/language.schema.json",
        "title": "virtform configuration",
        "description": "The evaluated shape of a virtform configuration (*.vf.hcl): resource blocks by kind and name. References such as network.lan are written as expressions in HCL and appear here as ResourceRef.",
        "type": "object",
        "properties": kinds,
        "$defs": defs,
    })
}

/// Pretty JSON text of the schema, as checked in.
pub fn language_schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&language_schema()).unwrap_or_default();
    s.push('\n');
    s
}
