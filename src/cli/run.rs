//! `crius run`: the image pulled when missing, a pod sandbox of the container's own (named
//! after it, in namespace `crius`), the container created in it and started; then either
//! its id (`-d`) or its output followed until it exits, whose code becomes the CLI's.
//! Also the re-creation behind `crius start` of an exited container: a CRI container
//! starts only once, so, as kubelet does for a restart, the next attempt of the same
//! config is created in the same pod.
//!
//! What `crius run` creates is marked so that other verbs know what they may remove or
//! re-create: the pod carries [`MANAGED_LABEL`] and its log directory in
//! [`LOG_DIRECTORY_ANNOTATION`] (the CLI made both, so `rm` removes both); the container
//! carries its own config and its pod's, protobuf-encoded, in its annotations.
//!
//! Published ports (`-p`) are the pod's host ports: the pod outlives the container's
//! re-creations, so the ports stay with it until `rm` removes the pod.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine;
use prost::Message;

use super::containers::{container_status, remove_container, remove_pod_if_unused};
use super::logs::follow_from_start;
use super::ports::{self, PublishedPort};
use super::resolve::{self, container_name};
use super::{images, rpc_error, CliError};
use crate::cri::api::{
    Container, ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageStatusRequest,
    Int64Value, KeyValue, LinuxContainerConfig, LinuxContainerResources,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PortMapping,
    RemoveContainerRequest, RunPodSandboxRequest, StartContainerRequest,
};
use crate::cri::client::CriClient;

/// Where pods' log directories go unless `--log-dir` (or `CRIUS_LOG_DIR`) says otherwise.
pub const DEFAULT_LOG_DIR: &str = "/var/log/crius/pods";
/// The namespace of the pods `crius run` creates, apart from kubelet's.
const NAMESPACE: &str = "crius";
/// Label (value `true`) of the pods `crius run` created: the CLI may remove them.
pub(super) const MANAGED_LABEL: &str = "io.crius.cli/run";
/// Annotation of a `crius run` pod: the log directory the CLI chose, removed with the pod.
pub(super) const LOG_DIRECTORY_ANNOTATION: &str = "io.crius.cli/log-directory";
/// Annotations of a `crius run` container: its config and its pod's (base64 protobuf).
const CONFIG_ANNOTATION: &str = "io.crius.cli/container-config";
const POD_CONFIG_ANNOTATION: &str = "io.crius.cli/pod-config";
/// CFS period of `--cpus` (the kernel's and Docker's default), in microseconds.
const CPU_PERIOD: i64 = 100_000;
/// The kernel's smallest CFS quota, in microseconds: `--cpus 0.01`.
const MIN_CPU_QUOTA: i64 = 1_000;
/// Docker's smallest memory limit: below it a container cannot even start.
const MIN_MEMORY: i64 = 6 * 1024 * 1024;
/// Longest hostname the kernel accepts is 64 bytes; DNS labels stop at 63.
const MAX_HOSTNAME: usize = 63;

/// A bind mount: `-v HOST:CONTAINER[:ro|:rw]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub host: String,
    pub container: String,
    pub readonly: bool,
}

/// `-u`: a uid or a user name of the image's `/etc/passwd`, with an optional numeric gid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum User {
    Id { uid: i64, gid: Option<i64> },
    Name { name: String, gid: Option<i64> },
}

/// What `crius run` was asked for.
#[derive(Debug)]
pub struct RunOptions {
    pub image: String,
    /// Replaces the image's `Cmd` (its `Entrypoint` stays), as in Docker.
    pub command: Vec<String>,
    /// The container's (and its pod's) name; generated when absent.
    pub name: Option<String>,
    /// `KEY=VALUE`, or `KEY` to pass the CLI's own value of `KEY` (skipped when unset).
    pub env: Vec<String>,
    pub volumes: Vec<Volume>,
    /// `-p`: container ports published on the node (the pod's host ports).
    pub publish: Vec<PublishedPort>,
    pub workdir: Option<String>,
    pub user: Option<User>,
    pub memory_bytes: Option<i64>,
    /// CFS quota in microseconds per [`CPU_PERIOD`], from `--cpus`.
    pub cpu_quota: Option<i64>,
    pub detach: bool,
    /// Remove the container and its pod once it exited (foreground runs only).
    pub remove: bool,
    /// Parent of the pod's log directory.
    pub log_dir: PathBuf,
}

/// How `crius run` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// `-d`: the container runs; its id.
    Detached(String),
    /// The container's exit code.
    Exited(i32),
}

/// `crius run`. A failure after the pod was created removes the pod again; a container
/// that was created but failed to start is kept (as Docker keeps it) unless `--rm`.
pub async fn run(address: &str, options: RunOptions) -> Result<RunOutcome, CliError> {
    let envs = env_vars(&options.env, |key| std::env::var(key).ok())?;
    if let Some(name) = &options.name {
        check_name(name)?;
    }
    let mut client = CriClient::connect(address).await?;
    ensure_image(address, &mut client, &options.image).await?;
    let containers = resolve::all_containers(&mut client).await?;
    let name = match &options.name {
        Some(name) => {
            if let Some(holder) = containers.iter().find(|c| container_name(c) == name) {
                return Err(CliError::NameInUse {
                    name: name.clone(),
                    id: resolve::short_id(&holder.id).to_string(),
                });
            }
            name.clone()
        }
        None => generate_name(&containers)?,
    };
    let uid = hex::encode(random_bytes::<16>()?);
    let log_root = std::path::absolute(&options.log_dir).map_err(|source| CliError::File {
        path: options.log_dir.display().to_string(),
        source,
    })?;
    // Picked last, just before the pod listens, to keep a free port's window short.
    let port_mappings = ports::port_mappings(&options.publish)?;
    let pod_config = pod_config(
        &name,
        &uid,
        &log_root.join(format!("{name}_{uid}")),
        port_mappings,
    );
    let config = annotate(container_config(&options, &name, envs), &pod_config);

    let pod_id = client
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map_err(rpc_error("RunPodSandbox"))?
        .into_inner()
        .pod_sandbox_id;
    let id = match create_container(&mut client, &pod_id, config, pod_config).await {
        Ok(id) => id,
        Err(err) => {
            if let Err(cleanup) = remove_pod_if_unused(&mut client, &pod_id).await {
                eprintln!("crius: removing the pod after the failure: {cleanup}");
            }
            return Err(err);
        }
    };
    if let Err(err) = start_container(&mut client, &id).await {
        if options.remove {
            if let Err(cleanup) = remove_container(&mut client, &id, &pod_id).await {
                eprintln!("crius: removing the container after the failure: {cleanup}");
            }
        }
        return Err(err);
    }
    if options.detach {
        return Ok(RunOutcome::Detached(id));
    }
    let (status, _) = container_status(&mut client, &id, false).await?;
    let exited = follow_from_start(&mut client, &id, Path::new(&status.log_path))
        .await?
        .ok_or_else(|| CliError::NoSuch {
            kind: "container",
            key: format!("{id} (removed while it ran)"),
        })?;
    if options.remove {
        remove_container(&mut client, &id, &pod_id).await?;
    }
    Ok(RunOutcome::Exited(exited.exit_code))
}

/// Pulls `image` through the progress-reporting pull (progress on stderr) unless the
/// runtime has it.
async fn ensure_image(address: &str, client: &mut CriClient, image: &str) -> Result<(), CliError> {
    let present = client
        .image
        .image_status(ImageStatusRequest {
            image: images::spec(image),
            verbose: false,
        })
        .await
        .map_err(rpc_error("ImageStatus"))?
        .into_inner()
        .image
        .is_some();
    if !present {
        eprintln!("Unable to find image '{image}' locally");
        eprint!("{}", images::pull(address, image, "", "").await?);
    }
    Ok(())
}

async fn create_container(
    client: &mut CriClient,
    pod_id: &str,
    config: ContainerConfig,
    pod_config: PodSandboxConfig,
) -> Result<String, CliError> {
    Ok(client
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.to_string(),
            config: Some(config),
            sandbox_config: Some(pod_config),
        })
        .await
        .map_err(rpc_error("CreateContainer"))?
        .into_inner()
        .container_id)
}

pub(super) async fn start_container(client: &mut CriClient, id: &str) -> Result<(), CliError> {
    client
        .runtime
        .start_container(StartContainerRequest {
            container_id: id.to_string(),
        })
        .await
        .map_err(rpc_error("StartContainer"))?;
    Ok(())
}

/// Replaces the exited container `old`, which `crius run` created, by the next attempt of
/// the same config in the same pod, started; returns the new container's id. It keeps
/// the name and the log file (which the new attempt appends to).
pub(super) async fn restart(client: &mut CriClient, old: &Container) -> Result<String, CliError> {
    let not_restartable = || CliError::NotRestartable(container_name(old).to_string());
    let (mut config, pod_config) =
        recorded_configs(&old.annotations).ok_or_else(not_restartable)?;
    let attempt = old.metadata.as_ref().map_or(0, |metadata| metadata.attempt) + 1;
    config
        .metadata
        .as_mut()
        .ok_or_else(not_restartable)?
        .attempt = attempt;
    let config = annotate(config, &pod_config);
    let id = create_container(client, &old.pod_sandbox_id, config, pod_config).await?;
    client
        .runtime
        .remove_container(RemoveContainerRequest {
            container_id: old.id.clone(),
        })
        .await
        .map_err(rpc_error("RemoveContainer"))?;
    start_container(client, &id).await?;
    Ok(id)
}

/// The pod of a container named `name`: its own, so that removing the container can
/// remove the pod (and free its host ports), and the pod's name and hostname are the
/// container's.
fn pod_config(
    name: &str,
    uid: &str,
    log_directory: &Path,
    port_mappings: Vec<PortMapping>,
) -> PodSandboxConfig {
    let log_directory = log_directory.display().to_string();
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: uid.to_string(),
            namespace: NAMESPACE.to_string(),
            attempt: 0,
        }),
        hostname: name[..name.len().min(MAX_HOSTNAME)].to_string(),
        log_directory: log_directory.clone(),
        port_mappings,
        labels: HashMap::from([(MANAGED_LABEL.to_string(), "true".to_string())]),
        annotations: HashMap::from([(LOG_DIRECTORY_ANNOTATION.to_string(), log_directory)]),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                // One container per pod: a pod-wide pid namespace would add nothing.
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..NamespaceOption::default()
                }),
                ..LinuxSandboxSecurityContext::default()
            }),
            ..LinuxPodSandboxConfig::default()
        }),
        ..PodSandboxConfig::default()
    }
}

/// The CRI config of the container `options` describe.
fn container_config(options: &RunOptions, name: &str, envs: Vec<KeyValue>) -> ContainerConfig {
    let (run_as_user, run_as_username, run_as_group) = match &options.user {
        None => (None, String::new(), None),
        Some(User::Id { uid, gid }) => (Some(*uid), String::new(), *gid),
        Some(User::Name { name, gid }) => (None, name.clone(), *gid),
    };
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: images::spec(&options.image),
        args: options.command.clone(),
        working_dir: options.workdir.clone().unwrap_or_default(),
        envs,
        mounts: options
            .volumes
            .iter()
            .map(|volume| Mount {
                container_path: volume.container.clone(),
                host_path: volume.host.clone(),
                readonly: volume.readonly,
                ..Mount::default()
            })
            .collect(),
        // One file for every attempt: `crius logs` shows all runs, as `docker logs` does.
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: options.memory_bytes.unwrap_or(0),
                cpu_quota: options.cpu_quota.unwrap_or(0),
                cpu_period: if options.cpu_quota.is_some() {
                    CPU_PERIOD
                } else {
                    0
                },
                ..LinuxContainerResources::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                run_as_user: run_as_user.map(|value| Int64Value { value }),
                run_as_group: run_as_group.map(|value| Int64Value { value }),
                run_as_username,
                ..LinuxContainerSecurityContext::default()
            }),
        }),
        ..ContainerConfig::default()
    }
}

fn base64_engine() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// `config` with itself (minus these annotations) and `pod` recorded in its annotations.
fn annotate(mut config: ContainerConfig, pod: &PodSandboxConfig) -> ContainerConfig {
    config.annotations.remove(CONFIG_ANNOTATION);
    config.annotations.remove(POD_CONFIG_ANNOTATION);
    let recorded = base64_engine().encode(config.encode_to_vec());
    config
        .annotations
        .insert(CONFIG_ANNOTATION.to_string(), recorded);
    config.annotations.insert(
        POD_CONFIG_ANNOTATION.to_string(),
        base64_engine().encode(pod.encode_to_vec()),
    );
    config
}

/// The configs [`annotate`] recorded; `None` for a container `crius run` did not create.
fn recorded_configs(
    annotations: &HashMap<String, String>,
) -> Option<(ContainerConfig, PodSandboxConfig)> {
    let decode = |key: &str| base64_engine().decode(annotations.get(key)?).ok();
    let config = ContainerConfig::decode(decode(CONFIG_ANNOTATION)?.as_slice()).ok()?;
    let pod = PodSandboxConfig::decode(decode(POD_CONFIG_ANNOTATION)?.as_slice()).ok()?;
    Some((config, pod))
}

/// `-e` entries as CRI key/values; a bare `KEY` takes its value from `lookup` (the CLI's
/// environment) and is left out when that has none, as Docker does.
fn env_vars(
    entries: &[String],
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<KeyValue>, CliError> {
    let mut envs = Vec::new();
    for entry in entries {
        let (key, value) = match entry.split_once('=') {
            Some((key, value)) => (key, Some(value.to_string())),
            None => (entry.as_str(), lookup(entry)),
        };
        if key.is_empty() {
            return Err(CliError::Usage(format!(
                "-e {entry:?}: the variable needs a name"
            )));
        }
        if let Some(value) = value {
            envs.push(KeyValue {
                key: key.to_string(),
                value: value.into_bytes(),
            });
        }
    }
    Ok(envs)
}

/// Docker's rule for container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn check_name(name: &str) -> Result<(), CliError> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "invalid container name {name:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )))
    }
}

const ADJECTIVES: [&str; 32] = [
    "admiring", "amazing", "awesome", "blissful", "bold", "brave", "clever", "cool", "dazzling",
    "eager", "elegant", "epic", "focused", "friendly", "gallant", "happy", "hopeful", "jolly",
    "keen", "kind", "lucid", "modest", "nifty", "peaceful", "quirky", "relaxed", "serene", "sharp",
    "stoic", "vibrant", "wizardly", "zealous",
];
const SCIENTISTS: [&str; 32] = [
    "babbage", "bohr", "curie", "darwin", "dijkstra", "einstein", "euler", "faraday", "fermi",
    "feynman", "galileo", "gauss", "hamilton", "hopper", "hypatia", "kepler", "knuth", "lamport",
    "liskov", "lovelace", "maxwell", "meitner", "newton", "noether", "pascal", "ritchie",
    "shannon", "tesla", "thompson", "torvalds", "turing", "wozniak",
];

/// A Docker-style `adjective_scientist` name that no container holds; after a few
/// collisions a number is added, as Docker does.
fn generate_name(containers: &[Container]) -> Result<String, CliError> {
    const TRIES: usize = 32;
    for attempt in 0..TRIES {
        let [left, right, number] = random_bytes::<3>()?;
        let mut name = format!(
            "{}_{}",
            ADJECTIVES[usize::from(left) % ADJECTIVES.len()],
            SCIENTISTS[usize::from(right) % SCIENTISTS.len()]
        );
        if attempt >= TRIES / 2 {
            name.push_str(&number.to_string());
        }
        if !containers.iter().any(|c| container_name(c) == name) {
            return Ok(name);
        }
    }
    Err(CliError::Usage(
        "no free container name found: give one with --name".to_string(),
    ))
}

/// `N` bytes from the kernel's random source.
fn random_bytes<const N: usize>() -> Result<[u8; N], CliError> {
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(|source| CliError::File {
            path: "/dev/urandom".to_string(),
            source,
        })?;
    Ok(bytes)
}

/// `--memory`: bytes, or a number with a binary unit `k`, `m`, `g`, `t` (`512m`, `1.5g`,
/// `1GiB`), as `docker run --memory` reads it.
pub fn parse_memory(text: &str) -> Result<i64, CliError> {
    let invalid = |why: &str| CliError::Usage(format!("memory {text:?}: {why}"));
    let lower = text.trim().to_ascii_lowercase();
    let number_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(number_end);
    let unit = unit.trim_start();
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let multiplier: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(invalid("use bytes or a unit of k, m, g or t (e.g. 512m)")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| invalid("not a number with an optional unit (e.g. 512m)"))?;
    let bytes = value * multiplier;
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return Err(invalid("too large"));
    }
    if (bytes as i64) < MIN_MEMORY {
        return Err(invalid("the smallest memory limit is 6m"));
    }
    Ok(bytes as i64)
}

/// `--cpus`: a number of CPUs (`1.5`) as a CFS quota per [`CPU_PERIOD`].
pub fn parse_cpus(text: &str) -> Result<i64, CliError> {
    let invalid = |why: &str| CliError::Usage(format!("cpus {text:?}: {why}"));
    let cpus: f64 = text
        .trim()
        .parse()
        .map_err(|_| invalid("not a number (e.g. 1.5)"))?;
    if !cpus.is_finite() || cpus <= 0.0 {
        return Err(invalid("must be a positive number"));
    }
    let quota = (cpus * CPU_PERIOD as f64).round();
    if quota < MIN_CPU_QUOTA as f64 {
        return Err(invalid("the smallest CPU limit is 0.01"));
    }
    if quota >= i64::MAX as f64 {
        return Err(invalid("too large"));
    }
    Ok(quota as i64)
}

/// `-u`: `uid`, `uid:gid`, `name` or `name:gid`. Group names are refused: the CRI takes a
/// numeric group only.
pub fn parse_user(text: &str) -> Result<User, CliError> {
    let (user, group) = match text.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (text, None),
    };
    let gid = group
        .map(|group| {
            group.parse::<u32>().map(i64::from).map_err(|_| {
                CliError::Usage(format!(
                    "user {text:?}: the group must be a numeric gid (the CRI takes no group names)"
                ))
            })
        })
        .transpose()?;
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(User::Id {
            uid: i64::from(uid),
            gid,
        });
    }
    let valid_name = !user.is_empty()
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-$".contains(c));
    if valid_name {
        Ok(User::Name {
            name: user.to_string(),
            gid,
        })
    } else {
        Err(CliError::Usage(format!(
            "user {text:?}: give uid, uid:gid, name or name:gid"
        )))
    }
}

/// `-v HOST:CONTAINER[:ro|:rw]`; both paths absolute (named volumes do not exist here).
pub fn parse_volume(text: &str) -> Result<Volume, CliError> {
    let invalid = |why: &str| CliError::Usage(format!("volume {text:?}: {why}"));
    let parts: Vec<&str> = text.split(':').collect();
    let (host, container, readonly) = match parts.as_slice() {
        [host, container] => (*host, *container, false),
        [host, container, "ro"] => (*host, *container, true),
        [host, container, "rw"] => (*host, *container, false),
        [_, _, mode] => return Err(invalid(&format!("unknown mode {mode:?}: use ro or rw"))),
        _ => return Err(invalid("use HOST:CONTAINER[:ro]")),
    };
    if !host.starts_with('/') || !container.starts_with('/') {
        return Err(invalid("both paths must be absolute"));
    }
    Ok(Volume {
        host: host.to_string(),
        container: container.to_string(),
        readonly,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_reads_like_docker() {
        assert_eq!(parse_memory("512m").unwrap(), 512 * 1024 * 1024);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1G").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_memory("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_memory("64mb").unwrap(), 64 << 20);
        assert_eq!(parse_memory("10485760").unwrap(), 10 << 20);
        assert_eq!(parse_memory("8192k").unwrap(), 8 << 20);
        for bad in ["", "m", "12x", "1.2.3g", "-5m", "1m", "4096", "99999999t"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpus_become_a_cfs_quota() {
        assert_eq!(parse_cpus("1.5").unwrap(), 150_000);
        assert_eq!(parse_cpus("2").unwrap(), 200_000);
        assert_eq!(parse_cpus("0.01").unwrap(), 1_000);
        for bad in ["0", "-1", "0.001", "abc", "inf", "NaN", ""] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn users_are_ids_or_names() {
        assert_eq!(
            parse_user("1000").unwrap(),
            User::Id {
                uid: 1000,
                gid: None
            }
        );
        assert_eq!(
            parse_user("1000:50").unwrap(),
            User::Id {
                uid: 1000,
                gid: Some(50)
            }
        );
        assert_eq!(
            parse_user("nobody").unwrap(),
            User::Name {
                name: "nobody".into(),
                gid: None
            }
        );
        assert_eq!(
            parse_user("app:1000").unwrap(),
            User::Name {
                name: "app".into(),
                gid: Some(1000)
            }
        );
        for bad in ["", "app:staff", "1:", "a b", "-x"] {
            assert!(parse_user(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volumes_are_absolute_binds() {
        assert_eq!(
            parse_volume("/srv:/data:ro").unwrap(),
            Volume {
                host: "/srv".into(),
                container: "/data".into(),
                readonly: true
            }
        );
        assert!(!parse_volume("/srv:/data").unwrap().readonly);
        assert!(!parse_volume("/srv:/data:rw").unwrap().readonly);
        for bad in [
            "/srv",
            "srv:/data",
            "/srv:data",
            "/srv:/data:rx",
            "/a:/b:ro:x",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_entries_with_and_without_values() {
        let lookup = |key: &str| (key == "HOME").then(|| "/root".to_string());
        let envs = env_vars(
            &["A=1".into(), "B=x=y".into(), "HOME".into(), "UNSET".into()],
            lookup,
        )
        .unwrap();
        let pairs: Vec<(&str, &[u8])> = envs
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_slice()))
            .collect();
        assert_eq!(
            pairs,
            vec![("A", &b"1"[..]), ("B", b"x=y"), ("HOME", b"/root")]
        );
        assert!(env_vars(&["=1".into()], lookup).is_err());
    }

    #[test]
    fn names_follow_dockers_rule() {
        for good in ["web", "a", "my_app.v2-1", "0x"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "_x", "-x", "a b", "a/b", "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        let name = generate_name(&[]).unwrap();
        assert!(check_name(&name).is_ok() && name.contains('_'), "{name}");
    }

    #[test]
    fn configs_survive_the_round_trip_through_annotations() {
        let options = RunOptions {
            image: "busybox".into(),
            command: vec!["sleep".into(), "1".into()],
            name: None,
            env: Vec::new(),
            volumes: Vec::new(),
            publish: Vec::new(),
            workdir: Some("/tmp".into()),
            user: Some(User::Name {
                name: "nobody".into(),
                gid: Some(7),
            }),
            memory_bytes: Some(64 << 20),
            cpu_quota: Some(150_000),
            detach: true,
            remove: false,
            log_dir: PathBuf::from("/logs"),
        };
        let ports =
            ports::port_mappings(&[ports::parse_publish("127.0.0.1:8080:80").unwrap()]).unwrap();
        let pod = pod_config("web", "u1", Path::new("/logs/web_u1"), ports.clone());
        let config = annotate(container_config(&options, "web", Vec::new()), &pod);
        let resources = config
            .linux
            .as_ref()
            .and_then(|linux| linux.resources.clone())
            .unwrap();
        assert_eq!(
            (resources.cpu_quota, resources.cpu_period),
            (150_000, 100_000)
        );
        let (recorded, recorded_pod) = recorded_configs(&config.annotations).unwrap();
        assert_eq!(recorded_pod, pod);
        assert_eq!(
            recorded_pod.port_mappings, ports,
            "a restart keeps the ports"
        );
        assert!(recorded.annotations.is_empty());
        let mut without = config.clone();
        without.annotations.clear();
        assert_eq!(recorded, without);
        // Recorded again (a restart), the annotations do not nest.
        let again = annotate(recorded, &recorded_pod);
        assert_eq!(again.annotations, config.annotations);
        assert!(recorded_configs(&HashMap::new()).is_none());
    }
}
