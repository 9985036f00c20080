//! CNI network configuration (CNI spec 1.0, "Network configuration" and "Deriving
//! execution configuration"): which file of the conf dir is the pods' network, and the
//! configuration each plugin of it gets on stdin.
//!
//! As containerd does, the first file in lexical order with a `.conflist`, `.conf` or
//! `.json` extension is the network; a single-plugin `.conf` or `.json` file becomes a
//! list of one, as libcni's `ConfListFromConf` makes it. A broken first file is an error
//! rather than skipped: the operator put it there, and falling through to the next file
//! would give pods a network nobody chose.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Extensions of the files that hold network configs.
const EXTENSIONS: [&str; 3] = ["conf", "conflist", "json"];

/// CNI versions whose results crius reads (`ips[].address`, from 0.3.0 on).
const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

#[derive(Debug, thiserror::Error)]
pub enum CniConfigError {
    #[error("no CNI network config (*.conflist, *.conf or *.json) in {}", .0.display())]
    Missing(PathBuf),
    #[error("cannot read the CNI config {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid CNI network config {}: {reason}", .path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// A network configuration list: the plugins a pod's interface is set up with, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkList {
    /// The file it was read from.
    pub file: PathBuf,
    pub name: String,
    pub cni_version: String,
    /// The list opts out of CHECK.
    pub disable_check: bool,
    /// Each plugin's configuration as the file has it; every one has a `type`.
    pub plugins: Vec<Map<String, Value>>,
}

/// Whether `dir` holds a file that claims to be a network config (usable or not).
pub fn has_config(dir: &Path) -> bool {
    config_files(dir).is_ok_and(|files| !files.is_empty())
}

impl NetworkList {
    /// The network of the first config file in `dir`.
    pub fn load(dir: &Path) -> Result<NetworkList, CniConfigError> {
        let files = config_files(dir).map_err(|source| CniConfigError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let file = files
            .into_iter()
            .next()
            .ok_or_else(|| CniConfigError::Missing(dir.to_path_buf()))?;
        let text = std::fs::read_to_string(&file).map_err(|source| CniConfigError::Read {
            path: file.clone(),
            source,
        })?;
        NetworkList::parse(&text, &file)
    }

    /// Parses the content of `file`: a list for `.conflist`, a single plugin otherwise.
    pub fn parse(text: &str, file: &Path) -> Result<NetworkList, CniConfigError> {
        let invalid = |reason: String| CniConfigError::Invalid {
            path: file.to_path_buf(),
            reason,
        };
        let value: Value = serde_json::from_str(text).map_err(|err| invalid(err.to_string()))?;
        let Value::Object(object) = value else {
            return Err(invalid("the file holds no JSON object".to_string()));
        };
        let is_list = file.extension().is_some_and(|ext| ext == "conflist");
        let plugins = if is_list {
            match object.get("plugins") {
                Some(Value::Array(plugins)) => plugins
                    .iter()
                    .enumerate()
                    .map(|(index, plugin)| match plugin {
                        Value::Object(plugin) => Ok(plugin.clone()),
                        _ => Err(invalid(format!("plugins[{index}] is not an object"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                _ => return Err(invalid("`plugins` must be an array".to_string())),
            }
        } else if object.contains_key("plugins") {
            return Err(invalid(
                "a network config list must be in a .conflist file".to_string(),
            ));
        } else {
            vec![object.clone()]
        };
        if plugins.is_empty() {
            return Err(invalid("`plugins` is empty".to_string()));
        }
        for (index, plugin) in plugins.iter().enumerate() {
            let kind = plugin.get("type").and_then(Value::as_str).unwrap_or("");
            // The type names a binary in the bin dirs: no path may sneak in.
            if kind.is_empty() || kind.contains('/') || kind == "." || kind == ".." {
                return Err(invalid(format!(
                    "plugins[{index}].type must name a plugin binary, not {:?}",
                    plugin.get("type").unwrap_or(&Value::Null)
                )));
            }
        }
        let name = match object.get("name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => return Err(invalid("`name` must be a non-empty string".to_string())),
        };
        let cni_version = object
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !SUPPORTED_VERSIONS.contains(&cni_version) {
            return Err(invalid(format!(
                "cniVersion {cni_version:?} is not supported (supported: {})",
                SUPPORTED_VERSIONS.join(", ")
            )));
        }
        let disable_check = match object.get("disableCheck") {
            None | Some(Value::Bool(false)) => false,
            Some(Value::Bool(true)) => true,
            // libcni accepts the string form too.
            Some(Value::String(text)) if text == "true" || text == "false" => text == "true",
            Some(other) => return Err(invalid(format!("disableCheck {other} is not a boolean"))),
        };
        Ok(NetworkList {
            file: file.to_path_buf(),
            name,
            cni_version: cni_version.to_string(),
            disable_check,
            plugins,
        })
    }

    /// The `type` of each plugin, in order.
    pub fn plugin_types(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator {
        self.plugins
            .iter()
            .map(|plugin| plugin.get("type").and_then(Value::as_str).unwrap_or(""))
    }

    /// Whether a plugin of the list takes host ports (declares the `portMappings`
    /// capability, as portmap does).
    pub fn maps_ports(&self) -> bool {
        self.plugins
            .iter()
            .any(|plugin| declares(plugin, "portMappings"))
    }

    /// CHECK exists from 0.4.0 on, unless the list opts out.
    pub fn supports_check(&self) -> bool {
        !self.disable_check && self.since_0_4()
    }

    /// DEL gets the cached ADD result as `prevResult` from 0.4.0 on.
    pub fn passes_prev_result_to_del(&self) -> bool {
        self.since_0_4()
    }

    fn since_0_4(&self) -> bool {
        version(&self.cni_version) >= (0, 4, 0)
    }

    /// What the plugin at `index` reads on stdin: its own config with the list's `name`
    /// and `cniVersion`, the previous result, and the runtime's values of the capabilities
    /// it declares (only those) as `runtimeConfig`.
    pub fn invocation_config(
        &self,
        index: usize,
        prev_result: Option<&Value>,
        capability_args: &Map<String, Value>,
    ) -> Value {
        let mut config = self.plugins.get(index).cloned().unwrap_or_default();
        config.insert("name".to_string(), Value::from(self.name.as_str()));
        config.insert(
            "cniVersion".to_string(),
            Value::from(self.cni_version.as_str()),
        );
        if let Some(result) = prev_result {
            config.insert("prevResult".to_string(), result.clone());
        }
        let runtime_config: Map<String, Value> = capability_args
            .iter()
            .filter(|(capability, _)| declares(&config, capability))
            .map(|(capability, value)| (capability.clone(), value.clone()))
            .collect();
        if !runtime_config.is_empty() {
            config.insert("runtimeConfig".to_string(), Value::Object(runtime_config));
        }
        Value::Object(config)
    }
}

/// The config files of `dir`, in lexical order; a missing dir has none.
fn config_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let matches = path
            .extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| EXTENSIONS.contains(&ext));
        if matches && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Whether `plugin` declares `capability` (`"capabilities": {"portMappings": true}`).
fn declares(plugin: &Map<String, Value>, capability: &str) -> bool {
    plugin
        .get("capabilities")
        .and_then(|capabilities| capabilities.get(capability))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// `major.minor.patch` of a supported version, for ordering.
fn version(text: &str) -> (u32, u32, u32) {
    let mut parts = text.split('.').map(|part| part.parse().unwrap_or(0));
    let mut next = || parts.next().unwrap_or(0);
    (next(), next(), next())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str, name: &str) -> Result<NetworkList, CniConfigError> {
        NetworkList::parse(text, &Path::new("/etc/cni/net.d").join(name))
    }

    const LIST: &str = r#"{
        "cniVersion": "1.0.0", "name": "pods",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}},
            {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": true}}
        ]
    }"#;

    #[test]
    fn a_list_parses_with_its_plugins_in_order() {
        let list = parse(LIST, "10-pods.conflist").unwrap();
        assert_eq!(list.name, "pods");
        assert_eq!(list.cni_version, "1.0.0");
        assert_eq!(
            list.plugin_types().collect::<Vec<_>>(),
            ["bridge", "portmap"]
        );
        assert!(list.maps_ports());
        assert!(list.supports_check());
    }

    #[test]
    fn a_single_plugin_config_becomes_a_list_of_one() {
        let list = parse(
            r#"{"cniVersion": "0.3.1", "name": "old", "type": "bridge", "bridge": "cni0"}"#,
            "10-old.conf",
        )
        .unwrap();
        assert_eq!(list.plugin_types().collect::<Vec<_>>(), ["bridge"]);
        assert_eq!(list.plugins[0]["bridge"], "cni0");
        assert!(!list.maps_ports());
        // CHECK and DEL's prevResult came with 0.4.0.
        assert!(!list.supports_check());
        assert!(!list.passes_prev_result_to_del());
    }

    #[test]
    fn broken_configs_are_named_with_the_reason() {
        for (text, name, reason) in [
            ("{\"cniVersion\": ", "a.conflist", "EOF"),
            ("[]", "a.conflist", "no JSON object"),
            (
                r#"{"cniVersion":"1.0.0","name":"n"}"#,
                "a.conflist",
                "`plugins`",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
                "a.conflist",
                "empty",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"bridge":"x"}]}"#,
                "a.conflist",
                "plugins[0].type",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../../bin/sh"}]}"#,
                "a.conflist",
                "plugins[0].type",
            ),
            (
                r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
                "a.conflist",
                "`name`",
            ),
            (
                r#"{"cniVersion":"0.2.0","name":"n","plugins":[{"type":"bridge"}]}"#,
                "a.conflist",
                "cniVersion \"0.2.0\"",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"}]}"#,
                "a.conf",
                ".conflist",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","disableCheck":3,"plugins":[{"type":"b"}]}"#,
                "a.conflist",
                "disableCheck",
            ),
        ] {
            let err = parse(text, name).unwrap_err().to_string();
            assert!(err.contains(&format!("/etc/cni/net.d/{name}")), "{err}");
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn each_plugin_gets_name_version_prev_result_and_only_its_capabilities() {
        let list = parse(LIST, "10-pods.conflist").unwrap();
        let mappings = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
        let args = Map::from_iter([("portMappings".to_string(), mappings.clone())]);
        let first = list.invocation_config(0, None, &args);
        assert_eq!(first["name"], "pods");
        assert_eq!(first["cniVersion"], "1.0.0");
        assert_eq!(first["bridge"], "cni0");
        assert!(first.get("prevResult").is_none());
        assert!(first.get("runtimeConfig").is_none(), "{first}");

        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24"}]});
        let second = list.invocation_config(1, Some(&prev), &args);
        assert_eq!(second["prevResult"], prev);
        // `bandwidth` is declared but the runtime has no value for it.
        assert_eq!(second["runtimeConfig"], json!({ "portMappings": mappings }));
    }

    #[test]
    fn the_first_config_file_in_lexical_order_wins() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!has_config(dir.path()));
        let err = NetworkList::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no CNI network config"), "{err}");
        std::fs::write(dir.path().join("README"), "not a config").unwrap();
        std::fs::write(dir.path().join("00-ignored.conf.bak"), "{").unwrap();
        assert!(!has_config(dir.path()));
        std::fs::write(dir.path().join("20-second.conflist"), LIST).unwrap();
        std::fs::write(
            dir.path().join("10-first.conf"),
            r#"{"cniVersion": "1.0.0", "name": "first", "type": "ptp"}"#,
        )
        .unwrap();
        assert!(has_config(dir.path()));
        let list = NetworkList::load(dir.path()).unwrap();
        assert_eq!(list.name, "first");
        assert_eq!(list.file, dir.path().join("10-first.conf"));
        assert!(!has_config(&dir.path().join("missing")));
    }
}
