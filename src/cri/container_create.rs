//! CreateContainer: the container's rootfs (an overlay of the image's snapshots and its
//! own writable layer), its OCI spec (Kubernetes' rules, in `crate::runtime`), and the
//! container created — not started — by the pod's shim. Rolled back on any failure.
//!
//! `tty` gives the container a terminal (the spec's `process.terminal`, the shim holds
//! the master and logs what it prints as `stdout`). `stdin` keeps its stdin open, as
//! containerd does: a FIFO in the bundle that the shim reads from (and holds open), so
//! that the container's reads wait rather than end until an Attach session writes to
//! it; with `stdin_once` the first session's end closes it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::sys::signal::Signal;
use nix::sys::stat::Mode;

use super::api::{self, CreateContainerRequest, CreateContainerResponse};
use super::pod_shims::blocking;
use super::rollback::Rollback;
use super::sandbox_run::io_error;
use super::{new_id, now_ns, Cri, CriError};
use crate::image::manifest::parse_config;
use crate::runtime::{
    self, container_spec, ContainerSpecInput, SandboxContext, SandboxFiles, SandboxNamespaces,
};
use crate::shim::manager::TaskIo;
use crate::snapshot::rootfs::{mount_overlay, unmount};
use crate::store::{ContainerRecord, ContainerState, MountRecord, SandboxRecord};

impl Cri {
    pub(super) async fn create_container(
        &self,
        request: CreateContainerRequest,
    ) -> Result<CreateContainerResponse, CriError> {
        let sandbox = self.sandbox(&request.pod_sandbox_id)?;
        if !sandbox.can_create_containers() {
            return Err(CriError::FailedPrecondition(format!(
                "pod sandbox {} is not ready: containers cannot be created in it",
                sandbox.id
            )));
        }
        let config = request
            .config
            .ok_or_else(|| CriError::invalid("config", "is required"))?;
        let metadata = config
            .metadata
            .clone()
            .ok_or_else(|| CriError::invalid("config.metadata", "is required"))?;
        if metadata.name.is_empty() {
            return Err(CriError::invalid("config.metadata.name", "is required"));
        }
        tracing::Span::current().record("name", metadata.name.as_str());
        let image_name = config
            .image
            .as_ref()
            .map(|image| image.image.clone())
            .filter(|image| !image.is_empty())
            .ok_or_else(|| CriError::invalid("config.image.image", "is required"))?;
        let image = self
            .images
            .find(&image_name)
            .ok_or_else(|| CriError::NotFound {
                kind: "image",
                id: image_name.clone(),
            })?;
        let image_config =
            parse_config(&self.images.config_bytes(&image).await?).map_err(|err| {
                CriError::Internal {
                    what: "reading the image config",
                    reason: err.to_string(),
                }
            })?;

        let _names = self.names.lock().await;
        if let Some(existing) = self
            .containers_of(&sandbox.id)
            .into_iter()
            .find(|container| {
                container.name == metadata.name && container.attempt == metadata.attempt
            })
        {
            return Err(CriError::AlreadyExists {
                kind: "container",
                name: format!("{} (attempt {})", metadata.name, metadata.attempt),
                id: existing.id,
            });
        }
        let mut container_config = translate_config(&config);
        let pid_mode = &mut container_config
            .linux
            .security_context
            .namespace_options
            .pid;
        if *pid_mode == runtime::NamespaceMode::Pod && sandbox.pid_namespace_init.is_none() {
            // POD means "as the pod's containers": in a pod without a shared namespace
            // (pid mode CONTAINER, which kubelet then asks of every container too, or a
            // pod from before crius held shared ones) each container has its own.
            *pid_mode = runtime::NamespaceMode::Container;
        }
        // Before anything is acquired: checks that need no rootfs.
        runtime::check_host_propagation(&container_config.mounts, || {
            std::fs::read_to_string(runtime::HOST_MOUNT_TABLE)
        })?;
        let target_pid_namespace = self.target_pid_namespace(&sandbox, &config)?;
        let id = new_id()?;
        tracing::Span::current().record("id", id.as_str());
        let mut rollback = Rollback::default();

        // The rootfs: the image's layers, topmost first, under the container's own layer.
        let layer = self.layer_dir(&id);
        let bundle = self.bundle_dir(&id);
        let rootfs = bundle.join("rootfs");
        let lowers = self.images.image_lowers(&image)?;
        for dir in [layer.clone(), bundle.clone()] {
            let removed = dir.clone();
            rollback.push("a container directory", move || {
                std::fs::remove_dir_all(&removed).map_err(|err| err.to_string())
            });
        }
        mount_overlay(&lowers, &layer.join("upper"), &layer.join("work"), &rootfs)?;
        let unmounted = rootfs.clone();
        rollback.push("the container rootfs", move || {
            unmount(&unmounted).map_err(|err| err.to_string())
        });

        let volumes = self.mount_image_volumes(&config.mounts, &bundle, &mut rollback)?;
        for (mount, volume) in container_config.mounts.iter_mut().zip(&volumes) {
            if let Some(volume) = volume {
                mount.host_path = volume.host_path.display().to_string();
            }
        }
        // POD means "the pod's namespace": for a pod on the node's network or IPC, the
        // node's (kubelet may leave a container's namespace options unset).
        let options = &mut container_config.linux.security_context.namespace_options;
        for (mode, node) in [
            (&mut options.network, sandbox.host_network),
            (&mut options.ipc, sandbox.host_ipc),
        ] {
            if node && *mode == runtime::NamespaceMode::Pod {
                *mode = runtime::NamespaceMode::Node;
            }
        }
        let image_fields = runtime::ImageConfig {
            entrypoint: image_config
                .config()
                .as_ref()
                .and_then(|c| c.entrypoint().clone())
                .unwrap_or_default(),
            cmd: image_config
                .config()
                .as_ref()
                .and_then(|c| c.cmd().clone())
                .unwrap_or_default(),
            env: image_config
                .config()
                .as_ref()
                .and_then(|c| c.env().clone())
                .unwrap_or_default(),
            working_dir: image_config
                .config()
                .as_ref()
                .and_then(|c| c.working_dir().clone())
                .unwrap_or_default(),
            user: crate::image::manifest::config_user(&image_config),
        };
        let sandbox_context = self.sandbox_context(&sandbox);
        let cgroups_path = if sandbox.cgroup_parent.is_empty() {
            format!("/crius-{id}")
        } else {
            format!("{}/crius-{id}", sandbox.cgroup_parent.trim_end_matches('/'))
        };
        let spec = container_spec(&ContainerSpecInput {
            config: &container_config,
            image: &image_fields,
            sandbox: &sandbox_context,
            host: &self.host,
            rootfs: &rootfs,
            cgroups_path: &cgroups_path,
            target_pid_namespace: target_pid_namespace.as_deref(),
        })?;
        let spec_json = serde_json::to_vec_pretty(&spec).map_err(|err| CriError::Internal {
            what: "writing the OCI spec",
            reason: err.to_string(),
        })?;
        let config_path = bundle.join("config.json");
        std::fs::write(&config_path, spec_json)
            .map_err(|err| io_error("write", &config_path, err))?;

        let log_path = if sandbox.log_directory.is_empty() || config.log_path.is_empty() {
            PathBuf::new()
        } else {
            Path::new(&sandbox.log_directory).join(&config.log_path)
        };
        let io = TaskIo {
            terminal: config.tty,
            stdin: config.stdin.then(|| stdin_fifo(&bundle)).transpose()?,
        };
        let shim = self.shims.get(&sandbox.id)?;
        let (creating, container_id, bundle_path, log) =
            (shim.clone(), id.clone(), bundle.clone(), log_path.clone());
        let pid = blocking(move || creating.create_with_io(&container_id, &bundle_path, &log, &io))
            .await?;
        let (deleting, deleted_id) = (shim.clone(), id.clone());
        rollback.push("the created container", move || {
            deleting
                .delete(&deleted_id)
                .map(|_| ())
                .map_err(|err| err.to_string())
        });

        let stop_signal = stop_signal(
            &config,
            image_config
                .config()
                .as_ref()
                .and_then(|c| c.stop_signal().clone()),
        );
        self.containers.insert(ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            name: metadata.name,
            attempt: metadata.attempt,
            image: image_name,
            image_id: image.id,
            labels: config
                .labels
                .clone()
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
            annotations: config
                .annotations
                .clone()
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
            log_path: log_path.display().to_string(),
            mounts: container_config
                .mounts
                .iter()
                .zip(volumes)
                .map(|(mount, volume)| match volume {
                    Some(volume) => MountRecord {
                        container_path: mount.container_path.clone(),
                        host_path: volume.host_path.display().to_string(),
                        readonly: true,
                        propagation: mount.propagation,
                        image: volume.image,
                        image_id: volume.image_id,
                    },
                    None => MountRecord {
                        container_path: mount.container_path.clone(),
                        host_path: mount.host_path.clone(),
                        readonly: mount.readonly,
                        propagation: mount.propagation,
                        image: String::new(),
                        image_id: String::new(),
                    },
                })
                .collect(),
            cgroup: cgroups_path,
            stop_signal,
            state: ContainerState::Created,
            pid,
            created_at: now_ns(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            stdin: config.stdin,
            stdin_once: config.stdin_once,
            tty: config.tty,
        })?;
        rollback.commit();
        tracing::info!("container created");
        Ok(CreateContainerResponse { container_id: id })
    }

    /// What a container of `sandbox` joins and mounts from it.
    fn sandbox_context(&self, sandbox: &SandboxRecord) -> SandboxContext {
        let namespace = |name: &str, own: bool| {
            own.then(|| PathBuf::from(format!("/proc/{}/ns/{name}", sandbox.shim_pid)))
        };
        let dir = self.sandbox_dir(&sandbox.id);
        SandboxContext {
            id: sandbox.id.clone(),
            hostname: sandbox.hostname.clone(),
            sysctls: sandbox.sysctls.clone().into_iter().collect(),
            namespaces: SandboxNamespaces {
                network: namespace("net", !sandbox.host_network),
                ipc: namespace("ipc", !sandbox.host_ipc),
                uts: namespace("uts", !sandbox.host_network),
                pid: sandbox
                    .pid_namespace_init
                    .map(|init| PathBuf::from(format!("/proc/{init}/ns/pid"))),
            },
            files: SandboxFiles {
                hosts: Some(dir.join("hosts")),
                resolv_conf: Some(dir.join("resolv.conf")),
                hostname: Some(dir.join("hostname")),
                shm: (!sandbox.host_ipc).then(|| dir.join("shm")),
            },
        }
    }

    /// In TARGET pid mode (`kubectl debug --target`), the PID namespace of the target: a
    /// running container of the same pod, as containerd requires.
    fn target_pid_namespace(
        &self,
        sandbox: &SandboxRecord,
        config: &api::ContainerConfig,
    ) -> Result<Option<PathBuf>, CriError> {
        const FIELD: &str = "config.linux.security_context.namespace_options.target_id";
        let Some(options) = config
            .linux
            .as_ref()
            .and_then(|linux| linux.security_context.as_ref())
            .and_then(|security| security.namespace_options.as_ref())
            .filter(|options| options.pid == api::NamespaceMode::Target as i32)
        else {
            return Ok(None);
        };
        if options.target_id.is_empty() {
            return Err(CriError::invalid(FIELD, "is required in TARGET pid mode"));
        }
        let target = self
            .containers
            .find(&options.target_id)?
            .filter(|target| target.sandbox_id == sandbox.id)
            .ok_or_else(|| {
                CriError::invalid(
                    FIELD,
                    format!(
                        "{:?} is not a container of pod sandbox {}",
                        options.target_id, sandbox.id
                    ),
                )
            })?;
        if !target.is_running() {
            return Err(CriError::FailedPrecondition(format!(
                "target container {} is not running: its pid namespace cannot be joined",
                target.id
            )));
        }
        Ok(Some(PathBuf::from(format!("/proc/{}/ns/pid", target.pid))))
    }

    /// The sandbox's containers.
    pub(super) fn containers_of(&self, sandbox_id: &str) -> Vec<ContainerRecord> {
        self.containers
            .list()
            .into_iter()
            .filter(|container| container.sandbox_id == sandbox_id)
            .collect()
    }
}

/// Creates the FIFO the container's stdin is fed from, in its `bundle` (removed with it).
fn stdin_fifo(bundle: &Path) -> Result<PathBuf, CriError> {
    let fifo = bundle.join("stdin");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600))
        .map_err(|err| io_error("create", &fifo, err.into()))?;
    Ok(fifo)
}

/// The CRI container config in `crate::runtime`'s terms (which never sees CRI types).
fn translate_config(config: &api::ContainerConfig) -> runtime::ContainerConfig {
    let linux = config.linux.clone().unwrap_or_default();
    let resources = linux.resources.unwrap_or_default();
    let security = linux.security_context.unwrap_or_default();
    let namespace_mode = |mode: i32| match api::NamespaceMode::try_from(mode) {
        Ok(api::NamespaceMode::Pod) => runtime::NamespaceMode::Pod,
        Ok(api::NamespaceMode::Node) => runtime::NamespaceMode::Node,
        Ok(api::NamespaceMode::Target) => runtime::NamespaceMode::Target,
        _ => runtime::NamespaceMode::Container,
    };
    let options = security.namespace_options.clone().unwrap_or_default();
    let capabilities = security.capabilities.clone().unwrap_or_default();
    let non_empty = |paths: &Vec<String>| (!paths.is_empty()).then(|| paths.clone());
    runtime::ContainerConfig {
        name: config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default(),
        command: config.command.clone(),
        args: config.args.clone(),
        working_dir: config.working_dir.clone(),
        envs: config
            .envs
            .iter()
            .map(|kv| runtime::KeyValue {
                key: kv.key.clone(),
                // cri-api v0.36 carries values as bytes: environments need not be UTF-8
                // on the wire, but the OCI spec's strings must be.
                value: String::from_utf8_lossy(&kv.value).into_owned(),
            })
            .collect(),
        mounts: config
            .mounts
            .iter()
            .map(|mount| runtime::Mount {
                container_path: mount.container_path.clone(),
                host_path: mount.host_path.clone(),
                readonly: mount.readonly,
                propagation: match api::MountPropagation::try_from(mount.propagation) {
                    Ok(api::MountPropagation::PropagationHostToContainer) => {
                        runtime::MountPropagation::HostToContainer
                    }
                    Ok(api::MountPropagation::PropagationBidirectional) => {
                        runtime::MountPropagation::Bidirectional
                    }
                    _ => runtime::MountPropagation::Private,
                },
                recursive_read_only: mount.recursive_read_only,
            })
            .collect(),
        devices: config
            .devices
            .iter()
            .map(|device| runtime::Device {
                container_path: device.container_path.clone(),
                host_path: device.host_path.clone(),
                permissions: device.permissions.clone(),
            })
            .collect(),
        annotations: config.annotations.clone(),
        tty: config.tty,
        linux: runtime::LinuxContainerConfig {
            resources: runtime::LinuxContainerResources {
                cpu_period: resources.cpu_period,
                cpu_quota: resources.cpu_quota,
                cpu_shares: resources.cpu_shares,
                memory_limit_in_bytes: resources.memory_limit_in_bytes,
                oom_score_adj: resources.oom_score_adj,
                cpuset_cpus: resources.cpuset_cpus.clone(),
                cpuset_mems: resources.cpuset_mems.clone(),
                hugepage_limits: resources
                    .hugepage_limits
                    .iter()
                    .map(|limit| runtime::HugepageLimit {
                        page_size: limit.page_size.clone(),
                        limit: limit.limit,
                    })
                    .collect(),
                unified: resources.unified.clone(),
                memory_swap_limit_in_bytes: resources.memory_swap_limit_in_bytes,
            },
            security_context: runtime::LinuxContainerSecurityContext {
                capabilities: runtime::Capability {
                    add_capabilities: capabilities.add_capabilities,
                    drop_capabilities: capabilities.drop_capabilities,
                    add_ambient_capabilities: capabilities.add_ambient_capabilities,
                },
                privileged: security.privileged,
                namespace_options: runtime::NamespaceOption {
                    network: namespace_mode(options.network),
                    pid: namespace_mode(options.pid),
                    ipc: namespace_mode(options.ipc),
                },
                selinux_label: None,
                run_as_user: security.run_as_user.map(|uid| uid.value),
                run_as_group: security.run_as_group.map(|gid| gid.value),
                run_as_username: security.run_as_username.clone(),
                readonly_rootfs: security.readonly_rootfs,
                supplemental_groups: security.supplemental_groups.clone(),
                supplemental_groups_policy: if security.supplemental_groups_policy
                    == api::SupplementalGroupsPolicy::Strict as i32
                {
                    runtime::SupplementalGroupsPolicy::Strict
                } else {
                    runtime::SupplementalGroupsPolicy::Merge
                },
                no_new_privs: security.no_new_privs,
                masked_paths: non_empty(&security.masked_paths),
                readonly_paths: non_empty(&security.readonly_paths),
                seccomp: seccomp_profile(
                    security.seccomp.as_ref(),
                    deprecated_seccomp_path(&security),
                ),
                apparmor_profile: None,
            },
        },
    }
}

/// Older kubelets send the profile only in the deprecated string field.
#[allow(deprecated)]
fn deprecated_seccomp_path(security: &api::LinuxContainerSecurityContext) -> &str {
    &security.seccomp_profile_path
}

/// The CRI's seccomp choice: the `seccomp` message, else the deprecated path string.
fn seccomp_profile(
    profile: Option<&api::SecurityProfile>,
    deprecated_path: &str,
) -> runtime::SeccompProfile {
    use api::security_profile::ProfileType;
    match profile {
        Some(profile) => match ProfileType::try_from(profile.profile_type) {
            Ok(ProfileType::RuntimeDefault) => runtime::SeccompProfile::RuntimeDefault,
            Ok(ProfileType::Localhost) => {
                runtime::SeccompProfile::Localhost(PathBuf::from(&profile.localhost_ref))
            }
            _ => runtime::SeccompProfile::Unconfined,
        },
        None => match deprecated_path {
            "runtime/default" | "docker/default" => runtime::SeccompProfile::RuntimeDefault,
            path if path.starts_with("localhost/") => runtime::SeccompProfile::Localhost(
                PathBuf::from(path.trim_start_matches("localhost/")),
            ),
            _ => runtime::SeccompProfile::Unconfined,
        },
    }
}

/// StopContainer's first signal: the config's, else the image's `StopSignal`, else SIGTERM.
fn stop_signal(config: &api::ContainerConfig, image_signal: Option<String>) -> i32 {
    let named = |name: &str| {
        let name = name.trim().to_uppercase();
        let name = if name.starts_with("SIG") {
            name
        } else {
            format!("SIG{name}")
        };
        Signal::from_str(&name).ok()
    };
    let from_config = api::Signal::try_from(config.stop_signal)
        .ok()
        .filter(|signal| *signal != api::Signal::RuntimeDefault)
        .and_then(|signal| named(signal.as_str_name()));
    let from_image = image_signal.and_then(|signal| match signal.trim().parse::<i32>() {
        Ok(number) => Signal::try_from(number).ok(),
        Err(_) => named(&signal),
    });
    from_config.or(from_image).unwrap_or(Signal::SIGTERM) as i32
}
