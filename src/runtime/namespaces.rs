//! The container's Linux namespaces (`linux.namespaces`).
//!
//! Rules (CRI `NamespaceOption`, containerd's CRI `container_create_linux.go`):
//! - network, IPC: POD joins the sandbox's pinned namespace, NODE stays in the host's
//!   (no entry). The kubelet sends nothing else for these.
//! - UTS follows the network mode: a host-network pod sees the node's hostname.
//! - PID: CONTAINER gets a new one, POD joins the sandbox's, NODE the host's, TARGET the
//!   one the caller resolved for `target_id`.
//! - mount: always new. cgroup: new on cgroup v2 hosts only (on v1 a private cgroup
//!   namespace would show a half-virtualised tree). user: not supported yet.
//! - A POD mode whose sandbox namespace is missing is an error, never a silent fallback
//!   to the host's namespace.

use std::path::Path;

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType};

use super::input::{NamespaceMode, NamespaceOption, SandboxNamespaces};
use super::SpecError;

pub(super) fn container_namespaces(
    options: &NamespaceOption,
    sandbox: &SandboxNamespaces,
    target_pid_namespace: Option<&Path>,
    cgroup_v2: bool,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    let mut namespaces = Vec::new();

    match options.pid {
        NamespaceMode::Container => namespaces.push(new_namespace(LinuxNamespaceType::Pid)?),
        NamespaceMode::Pod => namespaces.push(joined_namespace(
            LinuxNamespaceType::Pid,
            "pid",
            sandbox.pid.as_deref(),
        )?),
        NamespaceMode::Node => {}
        NamespaceMode::Target => {
            let path = target_pid_namespace.ok_or(SpecError::MissingNamespace {
                namespace: "pid",
                mode: NamespaceMode::Target,
            })?;
            namespaces.push(joined_namespace(
                LinuxNamespaceType::Pid,
                "pid",
                Some(path),
            )?);
        }
    }

    for (typ, name, mode, path) in [
        (
            LinuxNamespaceType::Network,
            "network",
            options.network,
            &sandbox.network,
        ),
        (LinuxNamespaceType::Ipc, "ipc", options.ipc, &sandbox.ipc),
        (
            LinuxNamespaceType::Uts,
            "uts",
            options.network,
            &sandbox.uts,
        ),
    ] {
        match mode {
            NamespaceMode::Node => {}
            NamespaceMode::Pod => namespaces.push(joined_namespace(typ, name, path.as_deref())?),
            NamespaceMode::Container | NamespaceMode::Target => {
                return Err(SpecError::UnsupportedNamespaceMode {
                    namespace: name,
                    mode,
                })
            }
        }
    }

    namespaces.push(new_namespace(LinuxNamespaceType::Mount)?);
    if cgroup_v2 {
        namespaces.push(new_namespace(LinuxNamespaceType::Cgroup)?);
    }
    Ok(namespaces)
}

/// Whether the container gets the sandbox's UTS namespace (and so its hostname).
pub(super) fn has_private_uts(options: &NamespaceOption) -> bool {
    options.network != NamespaceMode::Node
}

fn new_namespace(typ: LinuxNamespaceType) -> Result<LinuxNamespace, SpecError> {
    LinuxNamespaceBuilder::default()
        .typ(typ)
        .build()
        .map_err(assemble_error)
}

fn joined_namespace(
    typ: LinuxNamespaceType,
    name: &'static str,
    path: Option<&Path>,
) -> Result<LinuxNamespace, SpecError> {
    let path = path.ok_or(SpecError::MissingNamespace {
        namespace: name,
        mode: NamespaceMode::Pod,
    })?;
    LinuxNamespaceBuilder::default()
        .typ(typ)
        .path(path)
        .build()
        .map_err(assemble_error)
}

fn assemble_error(source: oci_spec::OciSpecError) -> SpecError {
    SpecError::Assemble {
        part: "linux.namespaces",
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn sandbox() -> SandboxNamespaces {
        SandboxNamespaces {
            network: Some("/run/netns/sb".into()),
            ipc: Some("/proc/10/ns/ipc".into()),
            uts: Some("/proc/10/ns/uts".into()),
            pid: Some("/proc/10/ns/pid".into()),
        }
    }

    fn summary(namespaces: &[LinuxNamespace]) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
        namespaces
            .iter()
            .map(|n| (n.typ(), n.path().clone()))
            .collect()
    }

    #[test]
    fn pod_network_ipc_uts_and_container_pid() {
        let options = NamespaceOption {
            pid: NamespaceMode::Container,
            ..Default::default()
        };
        let got = container_namespaces(&options, &sandbox(), None, false).unwrap();
        assert_eq!(
            summary(&got),
            vec![
                (LinuxNamespaceType::Pid, None),
                (LinuxNamespaceType::Network, Some("/run/netns/sb".into())),
                (LinuxNamespaceType::Ipc, Some("/proc/10/ns/ipc".into())),
                (LinuxNamespaceType::Uts, Some("/proc/10/ns/uts".into())),
                (LinuxNamespaceType::Mount, None),
            ]
        );
    }

    #[test]
    fn pod_pid_joins_the_sandbox_and_cgroup_v2_adds_a_cgroup_namespace() {
        let got =
            container_namespaces(&NamespaceOption::default(), &sandbox(), None, true).unwrap();
        let got = summary(&got);
        assert_eq!(
            got[0],
            (LinuxNamespaceType::Pid, Some("/proc/10/ns/pid".into()))
        );
        assert_eq!(got.last(), Some(&(LinuxNamespaceType::Cgroup, None)));
    }

    #[test]
    fn node_modes_leave_namespaces_out() {
        let options = NamespaceOption {
            network: NamespaceMode::Node,
            pid: NamespaceMode::Node,
            ipc: NamespaceMode::Node,
        };
        let got =
            container_namespaces(&options, &SandboxNamespaces::default(), None, false).unwrap();
        assert_eq!(summary(&got), vec![(LinuxNamespaceType::Mount, None)]);
        assert!(!has_private_uts(&options));
    }

    #[test]
    fn target_pid_joins_the_target() {
        let options = NamespaceOption {
            pid: NamespaceMode::Target,
            ..Default::default()
        };
        let target = Path::new("/proc/99/ns/pid");
        let got = container_namespaces(&options, &sandbox(), Some(target), false).unwrap();
        assert_eq!(
            summary(&got)[0],
            (LinuxNamespaceType::Pid, Some(target.into()))
        );
        let err = container_namespaces(&options, &sandbox(), None, false).unwrap_err();
        assert!(err.to_string().contains("pid"), "{err}");
    }

    #[test]
    fn pod_mode_without_a_sandbox_namespace_is_an_error() {
        let mut namespaces = sandbox();
        namespaces.network = None;
        let err = container_namespaces(&NamespaceOption::default(), &namespaces, None, false)
            .unwrap_err();
        assert!(matches!(
            err,
            SpecError::MissingNamespace {
                namespace: "network",
                ..
            }
        ));
    }

    #[test]
    fn container_network_mode_is_rejected() {
        let options = NamespaceOption {
            network: NamespaceMode::Container,
            ..Default::default()
        };
        assert!(container_namespaces(&options, &sandbox(), None, false).is_err());
    }
}
