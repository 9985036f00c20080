//! Container verbs over the CRI, with Docker's output and rules: `ps`, `pods`, `stop`,
//! `start`, `rm`, `container prune`, `exec` and `inspect` (a container first, then a pod,
//! then an image, as `docker inspect` looks).
//!
//! Verbs taking several containers act on each in turn and report the failures together
//! at the end, as Docker does, so one bad name does not stop the rest. Removing a
//! container also removes its pod when `crius run` created the pod and nothing else is in
//! it; pods made by kubelet or crictl are never touched.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::ports::{pod_network, PortsByPod};
use super::resolve::{self, container_name, short_id};
use super::run::{self, LOG_DIRECTORY_ANNOTATION, MANAGED_LABEL};
use super::{images, rpc_error, table, terminal, CliError};
use crate::cri::api::{
    AttachRequest, Container, ContainerFilter, ContainerState, ContainerStateValue,
    ContainerStatus, ContainerStatusRequest, ExecRequest, ListContainersRequest,
    ListPodSandboxRequest, PodSandboxFilter, PodSandboxState, PodSandboxStatus,
    PodSandboxStatusRequest, RemoveContainerRequest, RemovePodSandboxRequest, StopContainerRequest,
    StopPodSandboxRequest,
};
use crate::cri::client::CriClient;

/// Width of the COMMAND column, as Docker cuts it.
const COMMAND_WIDTH: usize = 20;

/// ContainerStatus of container `id` (a full id), with the runtime's verbose info (a map
/// of JSON documents) when asked for.
pub(super) async fn container_status(
    client: &mut CriClient,
    id: &str,
    verbose: bool,
) -> Result<(ContainerStatus, HashMap<String, String>), CliError> {
    let response = client
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: id.to_string(),
            verbose,
        })
        .await
        .map_err(rpc_error("ContainerStatus"))?
        .into_inner();
    let status = response.status.ok_or(CliError::Protocol {
        rpc: "ContainerStatus",
        detail: "no status".to_string(),
    })?;
    Ok((status, response.info))
}

/// PodSandboxStatus of pod `id` (a full id), with the runtime's verbose info (a map of
/// JSON documents) when asked for.
pub(super) async fn pod_status(
    client: &mut CriClient,
    id: &str,
    verbose: bool,
) -> Result<(PodSandboxStatus, HashMap<String, String>), CliError> {
    let response = client
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose,
        })
        .await
        .map_err(rpc_error("PodSandboxStatus"))?
        .into_inner();
    let status = response.status.ok_or(CliError::Protocol {
        rpc: "PodSandboxStatus",
        detail: "no status".to_string(),
    })?;
    Ok((status, response.info))
}

/// `crius ps [-a] [-q]`: running containers (all with `-a`), newest first.
pub async fn ps(address: &str, all: bool, quiet: bool) -> Result<String, CliError> {
    let mut client = CriClient::connect(address).await?;
    let filter = (!all).then(|| ContainerFilter {
        state: Some(ContainerStateValue {
            state: ContainerState::ContainerRunning as i32,
        }),
        ..ContainerFilter::default()
    });
    let mut containers = client
        .runtime
        .list_containers(ListContainersRequest { filter })
        .await
        .map_err(rpc_error("ListContainers"))?
        .into_inner()
        .containers;
    containers.sort_by_key(|container| std::cmp::Reverse(container.created_at));
    if quiet {
        return Ok(containers
            .iter()
            .map(|container| format!("{}\n", short_id(&container.id)))
            .collect());
    }
    let now = now_ns();
    let mut rows = vec![[
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAME",
    ]
    .map(str::to_string)
    .to_vec()];
    let mut ports = PortsByPod::default();
    for container in &containers {
        let (status, info) = match container_status(&mut client, &container.id, true).await {
            Ok(found) => found,
            // Removed since it was listed.
            Err(err) if err.is_not_found() => continue,
            Err(err) => return Err(err),
        };
        rows.push(vec![
            short_id(&container.id).to_string(),
            container
                .image
                .as_ref()
                .map(|image| image.image.clone())
                .unwrap_or_default(),
            command_text(&process_args(&info)),
            format!("{} ago", human_duration(elapsed(status.created_at, now))),
            status_text(&status, now),
            ports.get(&mut client, &container.pod_sandbox_id).await?,
            container_name(container).to_string(),
        ]);
    }
    Ok(table(&rows))
}

/// The container's command line from the OCI spec in the verbose info.
fn process_args(info: &HashMap<String, String>) -> Vec<String> {
    info.get("info")
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .and_then(|info| {
            info["runtimeSpec"]["process"]["args"]
                .as_array()
                .map(|args| {
                    args.iter()
                        .filter_map(|arg| arg.as_str().map(str::to_string))
                        .collect()
                })
        })
        .unwrap_or_default()
}

/// Docker's COMMAND column: the arguments, quoted, cut to [`COMMAND_WIDTH`] characters.
fn command_text(args: &[String]) -> String {
    let joined = args.join(" ");
    if joined.chars().count() > COMMAND_WIDTH {
        let cut: String = joined.chars().take(COMMAND_WIDTH - 1).collect();
        format!("\"{cut}…\"")
    } else {
        format!("\"{joined}\"")
    }
}

/// Docker's STATUS column: `Created`, `Up 3 seconds`, `Exited (0) 2 seconds ago`.
fn status_text(status: &ContainerStatus, now: i64) -> String {
    match ContainerState::try_from(status.state) {
        Ok(ContainerState::ContainerCreated) => "Created".to_string(),
        Ok(ContainerState::ContainerRunning) => {
            format!("Up {}", human_duration(elapsed(status.started_at, now)))
        }
        Ok(ContainerState::ContainerExited) => format!(
            "Exited ({}) {} ago",
            status.exit_code,
            human_duration(elapsed(status.finished_at, now))
        ),
        _ => "Unknown".to_string(),
    }
}

/// `crius pods [-q]`: every pod sandbox, newest first.
pub async fn pods(address: &str, quiet: bool) -> Result<String, CliError> {
    let mut client = CriClient::connect(address).await?;
    let mut pods = client
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .map_err(rpc_error("ListPodSandbox"))?
        .into_inner()
        .items;
    pods.sort_by_key(|pod| std::cmp::Reverse(pod.created_at));
    if quiet {
        return Ok(pods
            .iter()
            .map(|pod| format!("{}\n", short_id(&pod.id)))
            .collect());
    }
    let now = now_ns();
    let mut rows = vec![["POD ID", "CREATED", "STATE", "NAME", "NAMESPACE"]
        .map(str::to_string)
        .to_vec()];
    for pod in &pods {
        let metadata = pod.metadata.clone().unwrap_or_default();
        let state = match PodSandboxState::try_from(pod.state) {
            Ok(PodSandboxState::SandboxReady) => "Ready",
            _ => "NotReady",
        };
        rows.push(vec![
            short_id(&pod.id).to_string(),
            format!("{} ago", human_duration(elapsed(pod.created_at, now))),
            state.to_string(),
            metadata.name,
            metadata.namespace,
        ]);
    }
    Ok(table(&rows))
}

/// Runs `step` for each key, as Docker does: a failure does not stop the others. The
/// successes' lines are the output; the failures make the error (the output so far is
/// printed first).
async fn each_key(
    keys: &[String],
    mut step: impl AsyncFnMut(&str) -> Result<String, CliError>,
) -> Result<String, CliError> {
    let mut output = String::new();
    let mut failures = Vec::new();
    for key in keys {
        match step(key).await {
            Ok(line) => {
                output.push_str(&line);
                output.push('\n');
            }
            Err(err) => failures.push(err),
        }
    }
    if failures.is_empty() {
        return Ok(output);
    }
    print!("{output}");
    Err(if failures.len() == 1 {
        failures.remove(0)
    } else {
        CliError::Several(failures)
    })
}

/// `crius stop [-t SECS] CONTAINER…`: the stop signal, then SIGKILL after `timeout`
/// seconds. Stopping a stopped container succeeds.
pub async fn stop(address: &str, keys: &[String], timeout: i64) -> Result<String, CliError> {
    let mut client = CriClient::connect(address).await?;
    each_key(keys, async |key| {
        let container = resolve::container(&mut client, key).await?;
        client
            .runtime
            .stop_container(StopContainerRequest {
                container_id: container.id,
                timeout,
            })
            .await
            .map_err(rpc_error("StopContainer"))?;
        Ok(key.to_string())
    })
    .await
}

/// `crius start CONTAINER…`: starts created containers; an exited container made by
/// `crius run` is re-created as its next attempt (see [`run::restart`]). Prints the id of
/// each container now running, which for a re-created one is new.
pub async fn start(address: &str, keys: &[String]) -> Result<String, CliError> {
    let mut client = CriClient::connect(address).await?;
    each_key(keys, async |key| {
        let container = resolve::container(&mut client, key).await?;
        match ContainerState::try_from(container.state) {
            Ok(ContainerState::ContainerRunning) => Ok(container.id),
            Ok(ContainerState::ContainerCreated) => {
                run::start_container(&mut client, &container.id).await?;
                Ok(container.id)
            }
            _ => run::restart(&mut client, &container).await,
        }
    })
    .await
}

/// `crius rm [-f] CONTAINER…`: a running container only with `force` (killed first).
pub async fn rm(address: &str, keys: &[String], force: bool) -> Result<String, CliError> {
    let mut client = CriClient::connect(address).await?;
    each_key(keys, async |key| {
        let container = resolve::container(&mut client, key).await?;
        if container.state == ContainerState::ContainerRunning as i32 && !force {
            return Err(CliError::Running(key.to_string()));
        }
        remove_container(&mut client, &container.id, &container.pod_sandbox_id).await?;
        Ok(key.to_string())
    })
    .await
}

/// `crius container prune`: removes every exited container (and the pods `crius run`
/// made for them); lists the ids removed.
pub async fn prune(address: &str) -> Result<String, CliError> {
    let mut client = CriClient::connect(address).await?;
    let exited = client
        .runtime
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                state: Some(ContainerStateValue {
                    state: ContainerState::ContainerExited as i32,
                }),
                ..ContainerFilter::default()
            }),
        })
        .await
        .map_err(rpc_error("ListContainers"))?
        .into_inner()
        .containers;
    let pods: HashMap<String, String> = exited
        .iter()
        .map(|container| (container.id.clone(), container.pod_sandbox_id.clone()))
        .collect();
    let ids: Vec<String> = exited.into_iter().map(|container| container.id).collect();
    let removed = each_key(&ids, async |id| {
        let pod = pods.get(id).map_or("", String::as_str);
        remove_container(&mut client, id, pod).await?;
        Ok(id.to_string())
    })
    .await?;
    Ok(if removed.is_empty() {
        removed
    } else {
        format!("Deleted Containers:\n{removed}")
    })
}

/// Removes container `id` (killing it if it runs), then its pod `pod_id` if that is left
/// empty and was made by `crius run`.
pub(super) async fn remove_container(
    client: &mut CriClient,
    id: &str,
    pod_id: &str,
) -> Result<(), CliError> {
    client
        .runtime
        .remove_container(RemoveContainerRequest {
            container_id: id.to_string(),
        })
        .await
        .map_err(rpc_error("RemoveContainer"))?;
    remove_pod_if_unused(client, pod_id).await
}

/// Removes pod `pod_id` and its log directory when `crius run` created it and no
/// container is left in it; leaves every other pod alone.
pub(super) async fn remove_pod_if_unused(
    client: &mut CriClient,
    pod_id: &str,
) -> Result<(), CliError> {
    let pods = client
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                id: pod_id.to_string(),
                ..PodSandboxFilter::default()
            }),
        })
        .await
        .map_err(rpc_error("ListPodSandbox"))?
        .into_inner()
        .items;
    let Some(pod) = pods.into_iter().find(|pod| pod.id == pod_id) else {
        return Ok(());
    };
    if pod.labels.get(MANAGED_LABEL).map(String::as_str) != Some("true") {
        return Ok(());
    }
    let left = client
        .runtime
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod.id.clone(),
                ..ContainerFilter::default()
            }),
        })
        .await
        .map_err(rpc_error("ListContainers"))?
        .into_inner()
        .containers;
    if !left.is_empty() {
        return Ok(());
    }
    client
        .runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .await
        .map_err(rpc_error("StopPodSandbox"))?;
    client
        .runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .await
        .map_err(rpc_error("RemovePodSandbox"))?;
    let metadata = pod.metadata.unwrap_or_default();
    if let Some(dir) = pod.annotations.get(LOG_DIRECTORY_ANNOTATION) {
        // Only the directory `crius run` named after the pod: an annotation is no licence
        // to remove anything else.
        let expected = format!("{}_{}", metadata.name, metadata.uid);
        let dir = Path::new(dir);
        if dir.is_absolute()
            && dir
                .file_name()
                .is_some_and(|name| name == expected.as_str())
        {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CliError::File {
                        path: dir.display().to_string(),
                        source,
                    })
                }
            }
        }
    }
    Ok(())
}

/// `crius exec [-i] [-t] CONTAINER CMD…`: runs the command through an Exec session, its
/// stdout and stderr passed on as they come, this process's stdin with `interactive`,
/// with a terminal with `tty` (this terminal in raw mode meanwhile, its size passed on
/// as it changes); returns the command's exit code.
pub async fn exec(
    address: &str,
    key: &str,
    command: &[String],
    interactive: bool,
    tty: bool,
) -> Result<i32, CliError> {
    let mut client = CriClient::connect(address).await?;
    let container = resolve::container(&mut client, key).await?;
    let url = client
        .runtime
        .exec(ExecRequest {
            container_id: container.id,
            cmd: command.to_vec(),
            tty,
            stdin: interactive,
            stdout: true,
            stderr: !tty,
        })
        .await
        .map_err(rpc_error("Exec"))?
        .into_inner()
        .url;
    let _raw = tty.then(terminal::RawMode::enter).flatten();
    let io = terminal::session_io(interactive, tty);
    Ok(crate::streaming::client::exec(&url, io).await?)
}

/// `crius attach [--no-stdin] CONTAINER`: joins the running container's own stdio (an
/// Attach session): its output as it comes, this process's stdin when the container
/// keeps one open (unless `no_stdin`), with its terminal if it has one (this terminal in
/// raw mode meanwhile). Returns once the container exits (its exit code) or the session
/// ends.
pub async fn attach(address: &str, key: &str, no_stdin: bool) -> Result<i32, CliError> {
    let mut client = CriClient::connect(address).await?;
    let container = resolve::container(&mut client, key).await?;
    let (_, info) = container_status(&mut client, &container.id, true).await?;
    let tty = info
        .get("info")
        .and_then(|info| serde_json::from_str::<Value>(info).ok())
        .and_then(|info| info["runtimeSpec"]["process"]["terminal"].as_bool())
        .unwrap_or(false);
    let request = |stdin: bool| AttachRequest {
        container_id: container.id.clone(),
        stdin,
        stdout: true,
        stderr: !tty,
        tty,
    };
    let asked = client.runtime.attach(request(!no_stdin)).await;
    let (url, stdin) = match asked {
        Ok(response) => (response.into_inner().url, !no_stdin),
        // A container without an open stdin: its output alone.
        Err(status) if status.code() == tonic::Code::FailedPrecondition && !no_stdin => {
            let response = client
                .runtime
                .attach(request(false))
                .await
                .map_err(rpc_error("Attach"))?;
            (response.into_inner().url, false)
        }
        Err(status) => return Err(rpc_error("Attach")(status)),
    };
    let raw = tty.then(terminal::RawMode::enter).flatten();
    let io = terminal::session_io(stdin, tty);
    crate::streaming::client::attach(&url, io).await?;
    drop(raw);
    let (status, _) = container_status(&mut client, &container.id, false).await?;
    Ok(if status.state == ContainerState::ContainerExited as i32 {
        status.exit_code
    } else {
        0
    })
}

/// `crius inspect NAME`: the container, else the pod, else the image that `key` names, as
/// JSON. A key that fits several containers or pods is an error, not a fall-through.
pub async fn inspect(address: &str, key: &str) -> Result<Value, CliError> {
    let mut client = CriClient::connect(address).await?;
    match resolve::container(&mut client, key).await {
        Ok(container) => return inspect_container(&mut client, &container).await,
        Err(CliError::NoSuch { .. }) => {}
        Err(err) => return Err(err),
    }
    match resolve::pod(&mut client, key).await {
        Ok(pod) => return inspect_pod(&mut client, &pod.id).await,
        Err(CliError::NoSuch { .. }) => {}
        Err(err) => return Err(err),
    }
    let no_such_object = || CliError::NoSuch {
        kind: "object",
        key: key.to_string(),
    };
    images::inspect_image(&mut client, key)
        .await
        .map_err(|err| match err {
            CliError::NoSuch { .. } => no_such_object(),
            // Not even an image reference: it names nothing.
            CliError::Rpc { status, .. } if status.code() == tonic::Code::InvalidArgument => {
                no_such_object()
            }
            other => other,
        })
}

/// The runtime's verbose info: its `info` entry, a JSON document.
pub(super) fn verbose_info(info: &HashMap<String, String>) -> Value {
    info.get("info")
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null)
}

/// A string map as a JSON object with sorted keys.
fn sorted(map: &HashMap<String, String>) -> Value {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort();
    Value::Object(
        entries
            .into_iter()
            .map(|(key, value)| (key.clone(), Value::String(value.clone())))
            .collect::<Map<_, _>>(),
    )
}

/// ContainerStatus (verbose) as crictl shows it: `status` and the runtime's `info`; and
/// the `pod` it is in, with its IP and host ports, which the CRI keeps on the pod only.
/// Times are nanoseconds since the epoch, as the CRI carries them.
async fn inspect_container(
    client: &mut CriClient,
    container: &Container,
) -> Result<Value, CliError> {
    let (status, info) = container_status(client, &container.id, true).await?;
    let pod = pod_network(client, &container.pod_sandbox_id).await?;
    let metadata = status.metadata.clone().unwrap_or_default();
    let state = ContainerState::try_from(status.state)
        .map(|state| state.as_str_name())
        .unwrap_or("CONTAINER_UNKNOWN");
    let mounts: Vec<Value> = status
        .mounts
        .iter()
        .map(|mount| {
            json!({
                "containerPath": mount.container_path,
                "hostPath": mount.host_path,
                "readonly": mount.readonly,
            })
        })
        .collect();
    Ok(json!({
        "status": {
            "id": status.id,
            "metadata": { "name": metadata.name, "attempt": metadata.attempt },
            "state": state,
            "createdAt": status.created_at,
            "startedAt": status.started_at,
            "finishedAt": status.finished_at,
            "exitCode": status.exit_code,
            "image": status.image.map(|image| image.image),
            "imageRef": status.image_ref,
            "imageId": status.image_id,
            "reason": status.reason,
            "message": status.message,
            "labels": sorted(&status.labels),
            "annotations": sorted(&status.annotations),
            "mounts": mounts,
            "logPath": status.log_path,
        },
        "info": verbose_info(&info),
        "pod": {
            "id": container.pod_sandbox_id,
            "ip": pod.ip,
            "portMappings": pod.ports,
        },
    }))
}

/// PodSandboxStatus (verbose) as crictl shows it: `status` and the runtime's `info`.
async fn inspect_pod(client: &mut CriClient, id: &str) -> Result<Value, CliError> {
    let (status, info) = pod_status(client, id, true).await?;
    let metadata = status.metadata.clone().unwrap_or_default();
    let state = PodSandboxState::try_from(status.state)
        .map(|state| state.as_str_name())
        .unwrap_or("SANDBOX_NOTREADY");
    Ok(json!({
        "status": {
            "id": status.id,
            "metadata": {
                "name": metadata.name,
                "uid": metadata.uid,
                "namespace": metadata.namespace,
                "attempt": metadata.attempt,
            },
            "state": state,
            "createdAt": status.created_at,
            "network": { "ip": status.network.map(|network| network.ip).unwrap_or_default() },
            "labels": sorted(&status.labels),
            "annotations": sorted(&status.annotations),
            "runtimeHandler": status.runtime_handler,
        },
        "info": verbose_info(&info),
    }))
}

/// Now, in nanoseconds since the epoch (the CRI's timestamps).
fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as i64)
}

/// Time from `since_ns` to `now_ns`; zero for a time not yet set or in the future.
fn elapsed(since_ns: i64, now_ns: i64) -> Duration {
    Duration::from_nanos(u64::try_from(now_ns.saturating_sub(since_ns)).unwrap_or(0))
}

/// A duration as Docker words it (go-units' `HumanDuration`): `Less than a second`,
/// `5 seconds`, `About a minute`, `3 hours`, `2 weeks`…
fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let minutes = seconds / 60;
    // Rounded to the nearest hour, as go-units does.
    let hours = (seconds + 1800) / 3600;
    match () {
        _ if seconds < 1 => "Less than a second".to_string(),
        _ if seconds == 1 => "1 second".to_string(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".to_string(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_docker() {
        let secs = Duration::from_secs;
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(secs(1)), "1 second");
        assert_eq!(human_duration(secs(5)), "5 seconds");
        assert_eq!(human_duration(secs(59)), "59 seconds");
        assert_eq!(human_duration(secs(60)), "About a minute");
        assert_eq!(human_duration(secs(119)), "About a minute");
        assert_eq!(human_duration(secs(150)), "2 minutes");
        assert_eq!(human_duration(secs(3599)), "59 minutes");
        assert_eq!(human_duration(secs(3600)), "About an hour");
        assert_eq!(human_duration(secs(3 * 3600)), "3 hours");
        assert_eq!(human_duration(secs(47 * 3600)), "47 hours");
        assert_eq!(human_duration(secs(3 * 86_400)), "3 days");
        assert_eq!(human_duration(secs(20 * 86_400)), "2 weeks");
        assert_eq!(human_duration(secs(90 * 86_400)), "3 months");
        assert_eq!(human_duration(secs(800 * 86_400)), "2 years");
    }

    #[test]
    fn elapsed_time_never_goes_negative() {
        assert_eq!(elapsed(1_000, 3_000), Duration::from_nanos(2_000));
        assert_eq!(elapsed(5_000, 3_000), Duration::ZERO);
    }

    #[test]
    fn status_and_command_columns() {
        let now = 100_000_000_000;
        let status = |state: ContainerState, exit_code| ContainerStatus {
            state: state as i32,
            started_at: now - 3_000_000_000,
            finished_at: now - 2_000_000_000,
            exit_code,
            ..ContainerStatus::default()
        };
        assert_eq!(
            status_text(&status(ContainerState::ContainerCreated, 0), now),
            "Created"
        );
        assert_eq!(
            status_text(&status(ContainerState::ContainerRunning, 0), now),
            "Up 3 seconds"
        );
        assert_eq!(
            status_text(&status(ContainerState::ContainerExited, 3), now),
            "Exited (3) 2 seconds ago"
        );
        assert_eq!(command_text(&["sleep".into(), "9".into()]), "\"sleep 9\"");
        assert_eq!(
            command_text(&["sh".into(), "-c".into(), "echo out; echo err >&2".into()]),
            "\"sh -c echo out; ech…\""
        );
    }
}
