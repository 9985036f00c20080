//! CNI mode (CNI spec 1.0, "Execution protocol" and "Network configuration lists"): the
//! plugins of the node's network config list connect each pod.
//!
//! - ADD runs the plugins in order, each getting the previous one's result as
//!   `prevResult`; the last result holds the pod's address. DEL runs them in reverse with
//!   the cached ADD result, CHECK in order with it (from CNI 0.4.0 on).
//! - Every plugin runs with `CNI_COMMAND`, `CNI_CONTAINERID` (the sandbox id),
//!   `CNI_NETNS`, `CNI_IFNAME=eth0`, `CNI_PATH` and `CNI_ARGS` carrying the pod's
//!   Kubernetes identity as containerd and CRI-O pass it (Calico and Cilium read it), and
//!   the `runtimeConfig` of the capabilities it declares (`portMappings`).
//! - The cache, `<cache dir>/<sandbox id>.json`, holds the list and the runtime's
//!   arguments before ADD runs and the ADD result after: a pod's DEL repeats what its ADD
//!   used even after the config changed or criusd restarted, and a criusd killed during
//!   ADD leaves an entry that garbage collection can DEL from.
//! - A failed ADD is undone with a DEL before its error is returned; a DEL whose
//!   namespace is gone runs with an empty `CNI_NETNS`, which plugins treat as "only free
//!   what lives outside it" (addresses, host rules).
//!
//! - Operations on one sandbox never overlap, as the spec requires: the CHECKs after a
//!   restart run beside kubelet's RPCs.
//!
//! Plugins are processes run synchronously (killed after [`PLUGIN_TIMEOUT`]): the callers
//! are off the async workers.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{mpsc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::cni_config::{CniConfigError, NetworkList};
use super::{netns, PodIdentity, PortMapping};
use crate::store::atomic;
use crate::store::StoreError;

/// The pod's interface, as kubelet's runtimes name it.
const IFNAME: &str = "eth0";

/// A plugin still running after this long is killed: a hung plugin must not hold
/// RunPodSandbox (and kubelet's retries) forever.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest piece of a plugin's stderr quoted in an error.
const QUOTED_OUTPUT: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error(transparent)]
    Config(#[from] CniConfigError),
    #[error("CNI plugin {plugin:?} not found in {dirs}")]
    PluginNotFound { plugin: String, dirs: String },
    #[error("CNI plugin {plugin:?} of network {network:?} failed {command} for pod sandbox {sandbox}: {message}")]
    Plugin {
        plugin: String,
        network: String,
        command: Command,
        sandbox: String,
        message: String,
    },
    #[error("CNI plugin {plugin:?} did not finish {command} for pod sandbox {sandbox} within {}s and was killed", PLUGIN_TIMEOUT.as_secs())]
    TimedOut {
        plugin: String,
        command: Command,
        sandbox: String,
    },
    #[error("CNI plugin {plugin:?} printed no valid {command} result: {reason}")]
    BadResult {
        plugin: String,
        command: Command,
        reason: String,
    },
    #[error("cannot run the CNI plugin {}: {source}", .path.display())]
    Exec {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pod {field} {value:?} cannot be passed in CNI_ARGS: it contains ';' or '='")]
    PodIdentity { field: &'static str, value: String },
    #[error("CNI cache: {0}")]
    Cache(#[from] StoreError),
    #[error("{error}; undoing the ADD failed too: {cleanup}")]
    Undo {
        error: Box<CniError>,
        cleanup: Box<CniError>,
    },
}

/// The CNI operations crius runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
        })
    }
}

/// What a pod's ADD used and got, kept for its CHECK and DEL.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Attachment {
    network: NetworkList,
    cni_args: String,
    /// `runtimeConfig` values by capability name.
    capability_args: Map<String, Value>,
    /// The final ADD result; `None` until ADD succeeded.
    result: Option<Value>,
}

/// The node's CNI setup: where configs, plugins and the cache are.
pub struct Cni {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    /// Sandboxes with an operation in flight: the spec forbids two at once for one
    /// container, and the CHECKs after a restart run beside kubelet's StopPodSandbox.
    busy: Mutex<HashSet<String>>,
    /// Signalled whenever a sandbox leaves `busy`.
    idle: Condvar,
}

/// A sandbox's turn at its plugins; the next operation on it waits until this drops.
struct Turn<'a> {
    cni: &'a Cni,
    sandbox_id: String,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.cni.lock_busy().remove(&self.sandbox_id);
        self.cni.idle.notify_all();
    }
}

impl Cni {
    pub fn new(conf_dir: &Path, bin_dirs: &[PathBuf], cache_dir: &Path) -> Cni {
        Cni {
            conf_dir: conf_dir.to_path_buf(),
            bin_dirs: bin_dirs.to_vec(),
            cache_dir: cache_dir.to_path_buf(),
            busy: Mutex::new(HashSet::new()),
            idle: Condvar::new(),
        }
    }

    /// Waits until no other operation runs for `sandbox_id`, then claims it.
    fn turn(&self, sandbox_id: &str) -> Turn<'_> {
        let mut busy = self.lock_busy();
        while busy.contains(sandbox_id) {
            busy = self
                .idle
                .wait(busy)
                .unwrap_or_else(|poison| poison.into_inner());
        }
        busy.insert(sandbox_id.to_string());
        Turn {
            cni: self,
            sandbox_id: sandbox_id.to_string(),
        }
    }

    fn lock_busy(&self) -> MutexGuard<'_, HashSet<String>> {
        self.busy
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn conf_dir(&self) -> &Path {
        &self.conf_dir
    }

    pub fn bin_dirs(&self) -> &[PathBuf] {
        &self.bin_dirs
    }

    /// Whether the conf dir holds a network config, usable or not.
    pub fn has_config(&self) -> bool {
        super::cni_config::has_config(&self.conf_dir)
    }

    /// The network new pods join, once its config parses and every plugin it names is
    /// installed.
    pub fn network(&self) -> Result<NetworkList, CniError> {
        let network = NetworkList::load(&self.conf_dir)?;
        for plugin in network.plugin_types() {
            self.find_plugin(plugin)?;
        }
        Ok(network)
    }

    /// Connects the pod in `netns` with the current network; returns its IPv4 address, if
    /// the result has one. On failure the plugins have been asked to undo what they did.
    pub fn add(
        &self,
        sandbox_id: &str,
        netns: &Path,
        pod: &PodIdentity,
        port_mappings: &[PortMapping],
    ) -> Result<Option<Ipv4Addr>, CniError> {
        let _turn = self.turn(sandbox_id);
        let mut attachment = Attachment {
            network: self.network()?,
            cni_args: cni_args(sandbox_id, pod)?,
            capability_args: capability_args(port_mappings),
            result: None,
        };
        self.save(sandbox_id, &attachment)?;
        let added = self
            .run_add(sandbox_id, netns, &attachment)
            .and_then(|result| {
                let ip = pod_ip(&result);
                attachment.result = Some(result);
                self.save(sandbox_id, &attachment)?;
                Ok(ip)
            });
        added.map_err(|error| match self.del_in_turn(sandbox_id, netns) {
            Ok(()) => error,
            Err(cleanup) => CniError::Undo {
                error: Box::new(error),
                cleanup: Box::new(cleanup),
            },
        })
    }

    fn run_add(
        &self,
        sandbox_id: &str,
        netns: &Path,
        attachment: &Attachment,
    ) -> Result<Value, CniError> {
        let network = &attachment.network;
        let netns = netns.to_string_lossy();
        let mut prev_result = None;
        for (index, plugin) in network.plugin_types().enumerate() {
            let config =
                network.invocation_config(index, prev_result.as_ref(), &attachment.capability_args);
            let output = self.invoke(
                Command::Add,
                plugin,
                sandbox_id,
                &netns,
                attachment,
                &config,
            )?;
            let bad = |reason: String| CniError::BadResult {
                plugin: plugin.to_string(),
                command: Command::Add,
                reason,
            };
            match serde_json::from_slice(&output) {
                Ok(Value::Object(result)) => prev_result = Some(Value::Object(result)),
                Ok(other) => return Err(bad(format!("{other} is not a result object"))),
                Err(err) => return Err(bad(err.to_string())),
            }
        }
        prev_result.ok_or_else(|| CniError::BadResult {
            plugin: String::new(),
            command: Command::Add,
            reason: "the network has no plugins".to_string(),
        })
    }

    /// Disconnects the pod with the plugins and arguments its ADD used; a pod without a
    /// cache entry has nothing to undo. The entry goes once every plugin succeeded, so a
    /// failed DEL can be retried.
    pub fn del(&self, sandbox_id: &str, netns: &Path) -> Result<(), CniError> {
        let _turn = self.turn(sandbox_id);
        self.del_in_turn(sandbox_id, netns)
    }

    fn del_in_turn(&self, sandbox_id: &str, netns: &Path) -> Result<(), CniError> {
        let Some(attachment) = self.load(sandbox_id)? else {
            return Ok(());
        };
        let network = &attachment.network;
        let prev_result = attachment
            .result
            .as_ref()
            .filter(|_| network.passes_prev_result_to_del());
        // A namespace that is gone (or a leftover file where it was pinned) is passed as
        // none at all: plugins then free only what lives outside it.
        let netns = if netns::is_pinned(netns) {
            netns.to_string_lossy()
        } else {
            "".into()
        };
        for (index, plugin) in network.plugin_types().enumerate().rev() {
            let config = network.invocation_config(index, prev_result, &attachment.capability_args);
            self.invoke(
                Command::Del,
                plugin,
                sandbox_id,
                &netns,
                &attachment,
                &config,
            )?;
        }
        atomic::remove_file(&self.cache_path(sandbox_id))?;
        Ok(())
    }

    /// Asks the plugins whether the pod's network is still as its ADD left it. Pods
    /// without a cached result, and networks without CHECK (before 0.4.0, or
    /// `disableCheck`), pass.
    pub fn check(&self, sandbox_id: &str, netns: &Path) -> Result<(), CniError> {
        let _turn = self.turn(sandbox_id);
        let Some(attachment) = self.load(sandbox_id)? else {
            return Ok(());
        };
        let (network, Some(result)) = (&attachment.network, &attachment.result) else {
            return Ok(());
        };
        if !network.supports_check() {
            return Ok(());
        }
        let netns = netns.to_string_lossy();
        for (index, plugin) in network.plugin_types().enumerate() {
            let config =
                network.invocation_config(index, Some(result), &attachment.capability_args);
            self.invoke(
                Command::Check,
                plugin,
                sandbox_id,
                &netns,
                &attachment,
                &config,
            )?;
        }
        Ok(())
    }

    /// Whether the pod's host ports are a plugin's job (its network has one that takes
    /// `portMappings`), so that criusd must not relay them itself.
    pub fn maps_ports(&self, sandbox_id: &str) -> bool {
        match self.load(sandbox_id) {
            Ok(Some(attachment)) => attachment.network.maps_ports(),
            Ok(None) => false,
            Err(err) => {
                tracing::warn!(sandbox = %sandbox_id, "{err}");
                false
            }
        }
    }

    /// Sandboxes with a cache entry: attached, or left half-attached by a crash.
    pub fn attached(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.cache_dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                // `.tmp-` files are atomic writes that a crash interrupted.
                let id = name.strip_suffix(".json")?;
                (!name.starts_with('.')).then(|| id.to_string())
            })
            .collect()
    }

    /// Runs one plugin; returns its stdout.
    fn invoke(
        &self,
        command: Command,
        plugin: &str,
        sandbox_id: &str,
        netns: &str,
        attachment: &Attachment,
        config: &Value,
    ) -> Result<Vec<u8>, CniError> {
        let path = self.find_plugin(plugin)?;
        let mut process = std::process::Command::new(&path);
        process
            .env("CNI_COMMAND", command.to_string())
            .env("CNI_CONTAINERID", sandbox_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_ARGS", &attachment.cni_args)
            .env("CNI_PATH", self.cni_path());
        let started = Instant::now();
        let output = run_with_timeout(process, config.to_string().into_bytes(), PLUGIN_TIMEOUT)
            .map_err(|source| CniError::Exec {
                path: path.clone(),
                source,
            })?
            .ok_or_else(|| CniError::TimedOut {
                plugin: plugin.to_string(),
                command,
                sandbox: sandbox_id.to_string(),
            })?;
        tracing::debug!(
            sandbox = %sandbox_id,
            plugin,
            %command,
            elapsed_ms = started.elapsed().as_millis() as u64,
            status = %output.status,
            "CNI plugin ran"
        );
        if output.status.success() {
            Ok(output.stdout)
        } else {
            Err(CniError::Plugin {
                plugin: plugin.to_string(),
                network: attachment.network.name.clone(),
                command,
                sandbox: sandbox_id.to_string(),
                message: failure_message(&output),
            })
        }
    }

    /// The first bin dir's binary named `plugin`.
    fn find_plugin(&self, plugin: &str) -> Result<PathBuf, CniError> {
        self.bin_dirs
            .iter()
            .map(|dir| dir.join(plugin))
            .find(|path| path.is_file())
            .ok_or_else(|| CniError::PluginNotFound {
                plugin: plugin.to_string(),
                dirs: self
                    .bin_dirs
                    .iter()
                    .map(|dir| dir.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// `CNI_PATH`: the bin dirs, ':'-separated (config validation keeps ':' out of them).
    fn cni_path(&self) -> OsString {
        let mut path = OsString::new();
        for (index, dir) in self.bin_dirs.iter().enumerate() {
            if index > 0 {
                path.push(":");
            }
            path.push(dir);
        }
        path
    }

    fn cache_path(&self, sandbox_id: &str) -> PathBuf {
        self.cache_dir.join(format!("{sandbox_id}.json"))
    }

    fn save(&self, sandbox_id: &str, attachment: &Attachment) -> Result<(), CniError> {
        let path = self.cache_path(sandbox_id);
        std::fs::create_dir_all(&self.cache_dir).map_err(|source| StoreError::Io {
            action: "create",
            path: self.cache_dir.clone(),
            source,
        })?;
        let bytes =
            serde_json::to_vec_pretty(attachment).map_err(|source| StoreError::Corrupt {
                path: path.clone(),
                source,
            })?;
        atomic::write_file(&path, &bytes)?;
        Ok(())
    }

    fn load(&self, sandbox_id: &str) -> Result<Option<Attachment>, CniError> {
        let path = self.cache_path(sandbox_id);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    action: "read",
                    path,
                    source,
                }
                .into())
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Corrupt { path, source }.into())
    }
}

/// `CNI_ARGS` as containerd and CRI-O set it: plugins that do not know a key must ignore
/// it (`IgnoreUnknown`), and `;`/`=` in a value would forge another key.
fn cni_args(sandbox_id: &str, pod: &PodIdentity) -> Result<String, CniError> {
    let pairs = [
        ("K8S_POD_NAMESPACE", "namespace", pod.namespace.as_str()),
        ("K8S_POD_NAME", "name", pod.name.as_str()),
        ("K8S_POD_INFRA_CONTAINER_ID", "sandbox id", sandbox_id),
        ("K8S_POD_UID", "uid", pod.uid.as_str()),
    ];
    let mut args = "IgnoreUnknown=1".to_string();
    for (key, field, value) in pairs {
        if value.contains([';', '=']) {
            return Err(CniError::PodIdentity {
                field,
                value: value.to_string(),
            });
        }
        args.push_str(&format!(";{key}={value}"));
    }
    Ok(args)
}

/// The `runtimeConfig` values crius offers: `portMappings` as the portmap plugin reads
/// them (an unspecified host address is left out: "every address").
fn capability_args(port_mappings: &[PortMapping]) -> Map<String, Value> {
    let mappings = port_mappings
        .iter()
        .map(|mapping| {
            let mut entry = serde_json::json!({
                "hostPort": mapping.host_port,
                "containerPort": mapping.container_port,
                "protocol": mapping.protocol.to_string(),
            });
            if !mapping.host_ip.is_unspecified() {
                entry["hostIP"] = Value::from(mapping.host_ip.to_string());
            }
            entry
        })
        .collect();
    Map::from_iter([("portMappings".to_string(), Value::Array(mappings))])
}

/// The pod's IPv4 address in an ADD result (`ips[].address`, CIDR notation); a loopback
/// plugin's 127.0.0.1 is not it.
fn pod_ip(result: &Value) -> Option<Ipv4Addr> {
    result
        .get("ips")?
        .as_array()?
        .iter()
        .filter_map(|ip| ip.get("address")?.as_str())
        .filter_map(|address| address.split('/').next()?.parse::<Ipv4Addr>().ok())
        .find(|ip| !ip.is_loopback())
}

/// What a finished plugin printed.
struct Output {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// What a failed plugin said: its CNI error object on stdout (`code`, `msg`, `details`),
/// else the end of its stderr, else its exit status.
fn failure_message(output: &Output) -> String {
    if let Ok(Value::Object(error)) = serde_json::from_slice::<Value>(&output.stdout) {
        if let Some(msg) = error.get("msg").and_then(Value::as_str) {
            let mut message = msg.to_string();
            if let Some(details) = error
                .get("details")
                .and_then(Value::as_str)
                .filter(|details| !details.is_empty())
            {
                message.push_str(&format!(": {details}"));
            }
            if let Some(code) = error.get("code").and_then(Value::as_u64) {
                message.push_str(&format!(" (code {code})"));
            }
            return message;
        }
    }
    let printed = [&output.stderr, &output.stdout]
        .into_iter()
        .map(|bytes| String::from_utf8_lossy(bytes).trim().to_string())
        .find(|text| !text.is_empty());
    match printed {
        Some(text) => {
            let start = text.len().saturating_sub(QUOTED_OUTPUT);
            let start = (start..text.len())
                .find(|index| text.is_char_boundary(*index))
                .unwrap_or(0);
            format!("{} ({})", &text[start..], output.status)
        }
        None => format!("it printed nothing ({})", output.status),
    }
}

/// Runs `process` with `input` on its stdin and collects its output; `None` when it
/// ran past `timeout` and was killed. Each pipe has a thread of its own, so that a
/// plugin never blocks on a full pipe while crius waits on another.
fn run_with_timeout(
    mut process: std::process::Command,
    input: Vec<u8>,
    timeout: Duration,
) -> std::io::Result<Option<Output>> {
    let mut child = process
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that exits without reading (EPIPE) shows in its status instead.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let (done, finished) = mpsc::channel();
    let drain = |pipe: Option<Box<dyn Read + Send>>, done: mpsc::Sender<()>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            let _ = done.send(());
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
        done.clone(),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
        done,
    );
    // The pipes close when the plugin exits (unless it left a child holding them), an
    // instant before its exit status can be collected.
    let deadline = Instant::now() + timeout;
    let mut closed = 0;
    let status = loop {
        if closed < 2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if finished.recv_timeout(left).is_ok() {
                closed += 1;
                continue;
            }
        } else if let Some(status) = child.try_wait()? {
            break status;
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
        if Instant::now() >= deadline {
            // Not reaped yet, so the pid is still the plugin's.
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
    };
    Ok(Some(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Protocol;
    use serde_json::json;
    use std::net::IpAddr;
    use std::os::unix::process::ExitStatusExt;

    fn pod() -> PodIdentity {
        PodIdentity {
            name: "web".to_string(),
            namespace: "shop".to_string(),
            uid: "0b5c6f0e-uid".to_string(),
        }
    }

    #[test]
    fn cni_args_carry_the_kubernetes_identity() {
        assert_eq!(
            cni_args("abc123", &pod()).unwrap(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=0b5c6f0e-uid"
        );
        let forged = PodIdentity {
            name: "web;K8S_POD_NAMESPACE=kube-system".to_string(),
            ..pod()
        };
        let err = cni_args("abc123", &forged).unwrap_err().to_string();
        assert!(err.contains("pod name"), "{err}");
    }

    #[test]
    fn port_mappings_are_offered_as_portmap_reads_them() {
        let args = capability_args(&[
            PortMapping {
                protocol: Protocol::Tcp,
                host_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                host_port: 8080,
                container_port: 80,
            },
            PortMapping {
                protocol: Protocol::Udp,
                host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                host_port: 5353,
                container_port: 53,
            },
        ]);
        assert_eq!(
            Value::Object(args),
            json!({"portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
            ]})
        );
    }

    #[test]
    fn the_pod_ip_is_the_first_ipv4_address_that_is_not_loopback() {
        let result = json!({"cniVersion": "1.0.0", "ips": [
            {"address": "127.0.0.1/8", "interface": 0},
            {"address": "fd00::5/64", "interface": 1},
            {"address": "10.22.0.7/24", "interface": 1, "gateway": "10.22.0.1"},
        ]});
        assert_eq!(pod_ip(&result), Some(Ipv4Addr::new(10, 22, 0, 7)));
        assert_eq!(pod_ip(&json!({"cniVersion": "1.0.0"})), None);
    }

    fn output(code: i32, stdout: &str, stderr: &str) -> Output {
        Output {
            status: ExitStatus::from_raw(code << 8),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_plugin_error_is_quoted_from_its_error_object_or_its_stderr() {
        let message = failure_message(&output(
            1,
            r#"{"cniVersion":"1.0.0","code":11,"msg":"no IP addresses available","details":"range 10.0.0.0/30 is full"}"#,
            "",
        ));
        assert_eq!(
            message,
            "no IP addresses available: range 10.0.0.0/30 is full (code 11)"
        );
        let message = failure_message(&output(2, "", "panic: boom\n"));
        assert!(
            message.starts_with("panic: boom (exit status: 2"),
            "{message}"
        );
        let message = failure_message(&output(3, "", ""));
        assert!(message.contains("printed nothing"), "{message}");
    }

    #[test]
    fn a_plugin_reads_its_stdin_and_its_output_is_collected() {
        let mut process = std::process::Command::new("sh");
        process.args(["-c", "cat; echo to-stderr >&2; exit 3"]);
        let output = run_with_timeout(process, b"{\"x\":1}".to_vec(), PLUGIN_TIMEOUT)
            .unwrap()
            .unwrap();
        assert_eq!(output.status.code(), Some(3));
        assert_eq!(output.stdout, b"{\"x\":1}");
        assert_eq!(output.stderr, b"to-stderr\n");
    }

    #[test]
    fn a_plugin_that_hangs_is_killed_at_the_timeout() {
        let mut process = std::process::Command::new("sleep");
        process.arg("30");
        let started = Instant::now();
        let output = run_with_timeout(process, Vec::new(), Duration::from_millis(200)).unwrap();
        assert!(output.is_none());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
