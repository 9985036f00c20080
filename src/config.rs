//! The daemon's configuration: a TOML file whose every key is optional.
//!
//! The commented default file (`deploy/crius.toml`) is embedded in the binary; it is what
//! `criusd config default` prints and a unit test proves it parses to [`Config::default`].
//! Parsing rejects unknown keys (serde `deny_unknown_fields`), then [`Config::validate`]
//! checks values that types alone cannot (absolute paths, mirror URLs), so an error always
//! names the file and the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::network::Subnet;
use crate::shim::runc::OciRuntime;

/// Where criusd looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/crius/crius.toml";

/// The commented default configuration, byte for byte as shipped in `deploy/`.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../deploy/crius.toml");

/// A configuration file that could not be used; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid config file {path}: key `{key}`: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Path of the unix socket serving the CRI services.
    pub listen: PathBuf,
    /// Persistent state directory.
    pub root: PathBuf,
    /// Volatile runtime state directory.
    pub state: PathBuf,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    pub cgroup_driver: CgroupDriver,
    /// The OCI runtime of the default runtime handler (`""`, pods without a
    /// RuntimeClass): the embedded one, or a binary with runc's command line.
    pub oci_runtime: OciRuntime,
    /// Runtime handlers by name: a RuntimeClass's `handler` picks one.
    pub runtimes: BTreeMap<String, HandlerConfig>,
    pub image: ImageConfig,
    pub network: NetworkConfig,
    pub streaming: StreamingConfig,
    /// Per-registry settings keyed by registry host (`docker.io`, `127.0.0.1:5000`).
    pub registries: BTreeMap<String, RegistryConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: PathBuf::from("/run/crius/crius.sock"),
            root: PathBuf::from("/var/lib/crius"),
            state: PathBuf::from("/run/crius"),
            log_level: LogLevel::Info,
            log_format: LogFormat::Text,
            cgroup_driver: CgroupDriver::Cgroupfs,
            // crius's own: a node needs no runtime binary.
            oci_runtime: OciRuntime::Embedded,
            runtimes: BTreeMap::from([
                (
                    "embedded".to_string(),
                    HandlerConfig {
                        path: OciRuntime::Embedded,
                    },
                ),
                (
                    "runc".to_string(),
                    HandlerConfig {
                        path: OciRuntime::Binary(PathBuf::from("runc")),
                    },
                ),
            ]),
            image: ImageConfig::default(),
            network: NetworkConfig::default(),
            streaming: StreamingConfig::default(),
            registries: BTreeMap::new(),
        }
    }
}

/// A named runtime handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    /// Its OCI runtime: `"embedded"`, or a binary with runc's command line (a path, or a
    /// name looked up in PATH).
    pub path: OciRuntime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The cgroup driver; kubelet's `--cgroup-driver` must match what RuntimeConfig reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
}

/// How images are pulled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageConfig {
    /// Layers of one pull downloaded at the same time.
    pub max_concurrent_downloads: usize,
    /// A pull that receives no data for this many seconds is cancelled.
    pub pull_progress_timeout_secs: u64,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            max_concurrent_downloads: 3,
            pull_progress_timeout_secs: 60,
        }
    }
}

/// The streaming server, which carries Exec, Attach and PortForward sessions: their
/// RPCs answer with a URL on it, which kubelet (or crictl) then connects to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    /// The TCP address it listens on; port 0 picks a free one. Loopback by default:
    /// kubelet, on the same node, is the one to connect (it proxies the API server's
    /// sessions), and the sessions are not authenticated beyond their one-time URLs.
    pub address: SocketAddr,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// How pods are networked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    pub mode: NetworkMode,
    /// The built-in network's bridge interface.
    pub bridge: String,
    /// The built-in network's IPv4 subnet; the bridge takes its first address.
    pub subnet: String,
    /// An IPv6 subnet as well, for dual-stack pods; empty for IPv4 only.
    pub subnet6: String,
    /// Masquerade what pods on the bridge send out of the node (an nftables table of
    /// crius's own, and IP forwarding on).
    pub masquerade: bool,
    /// Where CNI network configs are read from (the first file in lexical order).
    pub cni_conf_dir: PathBuf,
    /// Where CNI plugin binaries are looked up, in order (`CNI_PATH`).
    pub cni_bin_dirs: Vec<PathBuf>,
    /// Where each pod's CNI ADD result and config are kept for its DEL; `<root>/cni`
    /// when unset, so that it lives exactly as long as the pod records do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cni_cache_dir: Option<PathBuf>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            mode: NetworkMode::Auto,
            bridge: "crius0".to_string(),
            subnet: "10.88.0.0/16".to_string(),
            subnet6: String::new(),
            masquerade: false,
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            cni_bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            cni_cache_dir: None,
        }
    }
}

impl NetworkConfig {
    /// The parsed `subnet`, which must be IPv4.
    pub fn subnet(&self) -> Result<Subnet, String> {
        let subnet: Subnet = self.subnet.parse()?;
        if !subnet.is_ipv4() {
            return Err(format!(
                "{subnet} is not an IPv4 subnet (IPv6 goes in `subnet6`)"
            ));
        }
        Ok(subnet)
    }

    /// The parsed `subnet6`, which must be IPv6; `None` when not set.
    pub fn subnet6(&self) -> Result<Option<Subnet>, String> {
        if self.subnet6.is_empty() {
            return Ok(None);
        }
        let subnet: Subnet = self.subnet6.parse()?;
        if subnet.is_ipv4() {
            return Err(format!("{subnet} is not an IPv6 subnet"));
        }
        Ok(Some(subnet))
    }

    fn validate(&self) -> Result<(), (String, String)> {
        self.subnet()
            .map_err(|reason| ("network.subnet".to_string(), reason))?;
        self.subnet6()
            .map_err(|reason| ("network.subnet6".to_string(), reason))?;
        // Linux interface names: at most 15 bytes, no '/', no whitespace.
        let bridge = &self.bridge;
        if bridge.is_empty()
            || bridge.len() > 15
            || bridge.contains(|c: char| c == '/' || c == ':' || c.is_whitespace())
        {
            return Err((
                "network.bridge".to_string(),
                format!(
                    "{bridge:?} is not an interface name (1 to 15 bytes, no '/', ':' or spaces)"
                ),
            ));
        }
        let absolute = |key: &str, dir: &Path| {
            if dir.is_absolute() {
                Ok(())
            } else {
                Err((
                    key.to_string(),
                    format!("{} is not an absolute path", dir.display()),
                ))
            }
        };
        absolute("network.cni_conf_dir", &self.cni_conf_dir)?;
        if let Some(dir) = &self.cni_cache_dir {
            absolute("network.cni_cache_dir", dir)?;
        }
        if self.cni_bin_dirs.is_empty() {
            return Err((
                "network.cni_bin_dirs".to_string(),
                "must name at least one directory".to_string(),
            ));
        }
        for (index, dir) in self.cni_bin_dirs.iter().enumerate() {
            let key = format!("network.cni_bin_dirs[{index}]");
            absolute(&key, dir)?;
            // Plugins get the list as CNI_PATH, which ':' separates.
            if dir.to_string_lossy().contains(':') {
                return Err((key, format!("{} contains ':'", dir.display())));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// CNI while `cni_conf_dir` holds a network config, else the built-in bridge;
    /// decided for each new pod.
    Auto,
    /// The built-in bridge, veth pairs and address management.
    Bridge,
    /// The CNI plugins of the network config in `cni_conf_dir`.
    Cni,
    /// A loopback interface only; NetworkReady stays false.
    None,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Endpoints (`http://host:port` or `https://host[/path]`) tried in order before the
    /// registry itself.
    pub mirrors: Vec<String>,
    /// Never contact the registry itself, only its mirrors.
    pub mirrors_only: bool,
    /// Allow plain HTTP and unverified TLS for this registry.
    pub insecure: bool,
    /// Credentials used when a pull request carries none.
    pub username: String,
    #[serde(skip_serializing)]
    pub password: String,
}

impl Config {
    /// The OCI runtime of runtime handler `handler` (`""` is the default handler).
    pub fn runtime(&self, handler: &str) -> Option<&OciRuntime> {
        if handler.is_empty() {
            return Some(&self.oci_runtime);
        }
        self.runtimes.get(handler).map(|config| &config.path)
    }

    /// The names of the runtime handlers, the default (`""`) first.
    pub fn runtime_handlers(&self) -> impl Iterator<Item = &str> {
        std::iter::once("").chain(self.runtimes.keys().map(String::as_str))
    }

    /// Loads `path`. A missing file at the default path means "all defaults"; a missing file
    /// that the operator named explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses and validates TOML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        config
            .validate()
            .map_err(|(key, reason)| ConfigError::Invalid {
                path: path.to_path_buf(),
                key,
                reason,
            })?;
        Ok(config)
    }

    /// Checks what serde cannot: returns the offending key and why.
    fn validate(&self) -> Result<(), (String, String)> {
        for (key, dir) in [
            ("listen", &self.listen),
            ("root", &self.root),
            ("state", &self.state),
        ] {
            if !dir.is_absolute() {
                return Err((
                    key.to_string(),
                    format!("{} is not an absolute path", dir.display()),
                ));
            }
        }
        if self.root == self.state {
            return Err((
                "state".to_string(),
                "must differ from `root`: runtime state is wiped on reboot, root is not"
                    .to_string(),
            ));
        }
        if self.image.max_concurrent_downloads == 0 {
            return Err((
                "image.max_concurrent_downloads".to_string(),
                "must be at least 1".to_string(),
            ));
        }
        if self.image.pull_progress_timeout_secs == 0 {
            return Err((
                "image.pull_progress_timeout_secs".to_string(),
                "must be at least 1".to_string(),
            ));
        }
        for (host, registry) in &self.registries {
            registry.validate(host)?;
        }
        validate_runtime(&self.oci_runtime)
            .map_err(|reason| ("oci_runtime".to_string(), reason))?;
        for (name, handler) in &self.runtimes {
            validate_handler_name(name)?;
            validate_runtime(&handler.path)
                .map_err(|reason| (format!("runtimes.\"{name}\".path"), reason))?;
        }
        self.network.validate()
    }
}

/// A handler is named as Kubernetes names a RuntimeClass's `handler`: a DNS label.
fn validate_handler_name(name: &str) -> Result<(), (String, String)> {
    let key = format!("runtimes.\"{name}\"");
    if name.is_empty() {
        return Err((
            key,
            "the default handler \"\" is configured with `oci_runtime`".to_string(),
        ));
    }
    let label = name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !label {
        return Err((
            key,
            "a handler name is a DNS label, as RuntimeClass handlers are: lowercase letters, \
             digits and '-', at most 63"
                .to_string(),
        ));
    }
    Ok(())
}

/// A binary is a name looked up in PATH or an absolute path.
fn validate_runtime(runtime: &OciRuntime) -> Result<(), String> {
    let OciRuntime::Binary(binary) = runtime else {
        return Ok(());
    };
    let text = binary.as_os_str();
    if text.is_empty() {
        return Err("is empty: \"embedded\", a binary's name or an absolute path".to_string());
    }
    if text.as_encoded_bytes().contains(&b'/') && !binary.is_absolute() {
        return Err(format!(
            "{} is neither a name looked up in PATH nor an absolute path",
            binary.display()
        ));
    }
    Ok(())
}

impl RegistryConfig {
    fn validate(&self, host: &str) -> Result<(), (String, String)> {
        let key = |field: &str| format!("registries.\"{host}\".{field}");
        if host.is_empty()
            || host.contains("://")
            || host.contains('/')
            || host.contains(char::is_whitespace)
        {
            return Err((
                format!("registries.\"{host}\""),
                "a registry is named by its host and optional port, e.g. \"docker.io\" or \"127.0.0.1:5000\"".to_string(),
            ));
        }
        for (index, mirror) in self.mirrors.iter().enumerate() {
            validate_endpoint(mirror)
                .map_err(|reason| (key(&format!("mirrors[{index}]")), reason))?;
        }
        if self.mirrors_only && self.mirrors.is_empty() {
            return Err((
                key("mirrors_only"),
                "is true but no mirrors are configured".to_string(),
            ));
        }
        Ok(())
    }
}

/// A mirror is an absolute http(s) URL with a host and no query or fragment.
fn validate_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|err| format!("{endpoint:?} is not a URL: {err}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("{endpoint:?} must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{endpoint:?} has no host"));
    }
    if uri.query().is_some() || !matches!(uri.path(), "" | "/") {
        return Err(format!(
            "{endpoint:?} must be scheme://host[:port] only: the repository path is appended as the registry API defines"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/crius/test.toml"))
    }

    #[test]
    fn embedded_default_file_equals_the_built_in_defaults() {
        assert_eq!(parse(DEFAULT_CONFIG_TOML).unwrap(), Config::default());
    }

    #[test]
    fn empty_file_means_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn registry_section_parses() {
        let config = parse(
            r#"
            [registries."docker.io"]
            mirrors = ["http://127.0.0.1:5000", "https://mirror.example"]
            mirrors_only = true
            [registries."127.0.0.1:5000"]
            insecure = true
            "#,
        )
        .unwrap();
        let docker = &config.registries["docker.io"];
        assert_eq!(docker.mirrors.len(), 2);
        assert!(docker.mirrors_only && !docker.insecure);
        assert!(config.registries["127.0.0.1:5000"].insecure);
    }

    #[test]
    fn runtime_handlers_map_to_their_runtimes() {
        let config = parse(
            r#"
            oci_runtime = "/usr/sbin/runc"
            [runtimes.crun]
            path = "crun"
            [runtimes.crius]
            path = "embedded"
            "#,
        )
        .unwrap();
        let binary = |path: &str| OciRuntime::Binary(PathBuf::from(path));
        assert_eq!(config.runtime(""), Some(&binary("/usr/sbin/runc")));
        assert_eq!(config.runtime("crun"), Some(&binary("crun")));
        assert_eq!(config.runtime("crius"), Some(&OciRuntime::Embedded));
        assert_eq!(
            config.runtime("runc"),
            None,
            "the file's list replaces the default"
        );
        let handlers: Vec<&str> = config.runtime_handlers().collect();
        assert_eq!(handlers, ["", "crius", "crun"]);

        let defaults = Config::default();
        assert_eq!(defaults.runtime(""), Some(&OciRuntime::Embedded));
        assert_eq!(defaults.runtime("embedded"), Some(&OciRuntime::Embedded));
        assert_eq!(defaults.runtime("runc"), Some(&binary("runc")));
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let err = parse("lisen = \"/tmp/x.sock\"").unwrap_err().to_string();
        assert!(err.contains("/etc/crius/test.toml"), "{err}");
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn unknown_registry_key_is_named() {
        let err = parse("[registries.\"docker.io\"]\nmirror = []")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mirror"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        for (text, key) in [
            ("log_level = \"loud\"", "log_level"),
            ("log_format = \"xml\"", "log_format"),
            ("cgroup_driver = \"systemd\"", "cgroup_driver"),
            ("root = \"relative/dir\"", "root"),
            ("listen = 5", "listen"),
            ("state = \"/var/lib/crius\"", "state"),
            (
                "[registries.\"docker.io\"]\nmirrors = [\"ftp://x\"]",
                "registries.\"docker.io\".mirrors[0]",
            ),
            (
                "[registries.\"docker.io\"]\nmirrors = [\"not a url\"]",
                "registries.\"docker.io\".mirrors[0]",
            ),
            (
                "[registries.\"docker.io\"]\nmirrors_only = true",
                "registries.\"docker.io\".mirrors_only",
            ),
            (
                "[registries.\"https://docker.io\"]\ninsecure = true",
                "registries.\"https://docker.io\"",
            ),
            ("[network]\nsubnet = \"10.88.0.1/16\"", "network.subnet"),
            ("[network]\nsubnet = \"fd00::/64\"", "network.subnet"),
            ("[network]\nsubnet6 = \"10.1.0.0/16\"", "network.subnet6"),
            ("[network]\nsubnet6 = \"fd00::1/64\"", "network.subnet6"),
            (
                "[network]\nbridge = \"a-very-long-bridge-name\"",
                "network.bridge",
            ),
            ("[network]\nmode = \"weave\"", "mode"),
            (
                "[network]\ncni_conf_dir = \"net.d\"",
                "network.cni_conf_dir",
            ),
            ("[network]\ncni_bin_dirs = []", "network.cni_bin_dirs"),
            (
                "[network]\ncni_bin_dirs = [\"/opt/cni/bin\", \"lib/cni\"]",
                "network.cni_bin_dirs[1]",
            ),
            (
                "[network]\ncni_bin_dirs = [\"/opt/cni:bin\"]",
                "network.cni_bin_dirs[0]",
            ),
            (
                "[network]\ncni_cache_dir = \"cache\"",
                "network.cni_cache_dir",
            ),
            ("oci_runtime = \"bin/runc\"", "oci_runtime"),
            ("oci_runtime = \"\"", "oci_runtime"),
            ("[runtimes.Kata]\npath = \"kata\"", "runtimes.\"Kata\""),
            ("[runtimes.\"\"]\npath = \"runc\"", "runtimes.\"\""),
            (
                "[runtimes.crun]\npath = \"./crun\"",
                "runtimes.\"crun\".path",
            ),
            ("[runtimes.crun]\nbinary = \"crun\"", "binary"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text:?} gave {err}");
            assert!(err.contains("/etc/crius/test.toml"), "{err}");
        }
    }

    #[test]
    fn network_modes_and_cni_keys_parse() {
        assert_eq!(Config::default().network.mode, NetworkMode::Auto);
        for (mode, expected) in [
            ("auto", NetworkMode::Auto),
            ("bridge", NetworkMode::Bridge),
            ("cni", NetworkMode::Cni),
            ("none", NetworkMode::None),
        ] {
            let config = parse(&format!("[network]\nmode = \"{mode}\"")).unwrap();
            assert_eq!(config.network.mode, expected);
        }
        let config = parse(
            "[network]\ncni_conf_dir = \"/srv/net.d\"\ncni_bin_dirs = [\"/srv/cni\"]\ncni_cache_dir = \"/srv/cache\"",
        )
        .unwrap();
        assert_eq!(config.network.cni_conf_dir, Path::new("/srv/net.d"));
        assert_eq!(config.network.cni_bin_dirs, vec![PathBuf::from("/srv/cni")]);
        assert_eq!(
            config.network.cni_cache_dir.as_deref(),
            Some(Path::new("/srv/cache"))
        );
    }

    #[test]
    fn printed_effective_config_parses_back() {
        // `criusd config check` prints TOML, which has no null: an unset cache dir is left out.
        let printed = toml::to_string(&Config::default()).unwrap();
        assert_eq!(parse(&printed).unwrap(), Config::default());
    }

    #[test]
    fn missing_default_file_is_defaults_but_missing_explicit_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("crius-config-test-{}", std::process::id()));
        let missing = dir.join("nope.toml");
        assert_eq!(Config::load(&missing, false).unwrap(), Config::default());
        let err = Config::load(&missing, true).unwrap_err().to_string();
        assert!(err.contains("nope.toml"), "{err}");
    }
}
