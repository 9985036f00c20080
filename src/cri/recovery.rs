//! What criusd does at start for the pods that outlived its previous run: reconnect to
//! their shims, catch up on container exits that happened meanwhile (the shim recorded
//! them), and watch the containers that still run. A pod whose shim is gone is NOTREADY
//! and its containers exited with reason `ShimLost`. The CNI plugins of the pods still
//! ready check their networks (CNI CHECK) in the background.

use super::pod_shims::{record_shim_lost, watch_exit};
use super::{now_ns, Cri};
use crate::shim::manager::TaskStatus;
use crate::store::{ContainerState, SandboxState};

impl Cri {
    pub(super) fn recover(&self) {
        let sandboxes = self.sandboxes.list();
        let known = sandboxes.iter().map(|sandbox| sandbox.id.clone()).collect();
        self.network.collect_garbage(&known);
        for sandbox in sandboxes {
            if let (SandboxState::Ready, Some(ip)) = (sandbox.state, sandbox.ip) {
                // The relays died with the previous criusd; the pod still owns its ports.
                if let Err(err) = self
                    .network
                    .open_ports(&sandbox.id, ip, &sandbox.port_mappings)
                {
                    tracing::warn!(sandbox = %sandbox.id, "cannot reopen the pod's host ports: {err}");
                }
            }
            let shim = match self.shims.get(&sandbox.id) {
                Ok(shim) => shim,
                Err(err) => {
                    tracing::warn!(sandbox = %sandbox.id, "shim lost: {err}");
                    self.mark_shim_lost(&sandbox.id);
                    continue;
                }
            };
            for container in self.containers_of(&sandbox.id) {
                if container.state == ContainerState::Exited {
                    continue;
                }
                match shim.state(&container.id) {
                    Ok(state) if state.status == TaskStatus::Stopped => {
                        if let Some(exit) = state.exit {
                            super::pod_shims::record_exit(&self.containers, &container.id, exit);
                        }
                    }
                    Ok(state) if state.status == TaskStatus::Running => {
                        if container.state == ContainerState::Created {
                            // Started just before criusd stopped, before it was recorded.
                            let _ = self.containers.update(&container.id, |record| {
                                record.state = ContainerState::Running;
                                record.started_at = now_ns();
                            });
                        }
                        watch_exit(
                            self.containers.clone(),
                            self.sandboxes.clone(),
                            shim.clone(),
                            sandbox.shim_pid,
                            container.id.clone(),
                        );
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(container = %container.id, "state unknown after restart: {err}")
                    }
                }
            }
        }
        self.check_pod_networks();
    }

    /// Runs CNI CHECK for every ready pod, off the async workers and without holding up
    /// start-up: a failure is logged, as kubelet has no way to hear of it.
    fn check_pod_networks(&self) {
        let ready: Vec<String> = self
            .sandboxes
            .list()
            .into_iter()
            .filter(|sandbox| sandbox.state == SandboxState::Ready && !sandbox.host_network)
            .map(|sandbox| sandbox.id)
            .collect();
        if ready.is_empty() {
            return;
        }
        let network = self.network.clone();
        tokio::task::spawn_blocking(move || {
            for sandbox in ready {
                if let Err(err) = network.check(&sandbox) {
                    tracing::warn!(%sandbox, "the pod's network failed its check: {err}");
                }
            }
        });
    }

    fn mark_shim_lost(&self, sandbox_id: &str) {
        let _ = self
            .sandboxes
            .update(sandbox_id, |record| record.state = SandboxState::NotReady);
        for container in self.containers_of(sandbox_id) {
            record_shim_lost(&self.containers, &container.id);
        }
    }
}
