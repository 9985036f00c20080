//! Version, Status, RuntimeConfig and UpdateRuntimeConfig: what kubelet asks before it
//! trusts a node's runtime, and what `crictl version` / `crictl info` print.

use std::collections::HashMap;
use std::net::IpAddr;

use super::api::{
    self, CgroupDriver, LinuxRuntimeConfiguration, RuntimeCondition, RuntimeConfigResponse,
    RuntimeHandler, RuntimeHandlerFeatures, RuntimeStatus, StatusRequest, StatusResponse,
    UpdateRuntimeConfigRequest, VersionResponse,
};
use super::{Cri, CriError, RUNTIME_API_VERSION, RUNTIME_NAME};
use crate::config;

/// Condition types kubelet looks for in Status (names fixed by the CRI).
const RUNTIME_READY: &str = "RuntimeReady";
const NETWORK_READY: &str = "NetworkReady";

impl Cri {
    pub(super) fn version(&self) -> VersionResponse {
        VersionResponse {
            // The kubelet-runtime API version, kept at 0.1.0 as every CRI runtime reports it.
            version: "0.1.0".to_string(),
            runtime_name: RUNTIME_NAME.to_string(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
            runtime_api_version: RUNTIME_API_VERSION.to_string(),
        }
    }

    pub(super) fn status(&self, request: &StatusRequest) -> Result<StatusResponse, CriError> {
        let conditions = vec![
            RuntimeCondition {
                r#type: RUNTIME_READY.to_string(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            // Kubelet keeps a node NotReady, scheduling nothing onto it, until pods can
            // be networked.
            match self.network.not_ready() {
                None => RuntimeCondition {
                    r#type: NETWORK_READY.to_string(),
                    status: true,
                    reason: String::new(),
                    message: String::new(),
                },
                Some(why) => RuntimeCondition {
                    r#type: NETWORK_READY.to_string(),
                    status: false,
                    reason: "NetworkPluginNotReady".to_string(),
                    message: format!("crius: {why}"),
                },
            },
        ];
        let mut info = HashMap::new();
        if request.verbose {
            info.insert("config".to_string(), self.config_json()?);
            let mut network = self.network.describe();
            network["podCidr"] = self.pod_cidr().into();
            info.insert("network".to_string(), network.to_string());
        }
        Ok(StatusResponse {
            status: Some(RuntimeStatus { conditions }),
            info,
            // The default handler is named "" in the CRI. None supports the optional
            // features yet, and each says so, so kubelet and critest skip rather than fail.
            runtime_handlers: self
                .config
                .runtime_handlers()
                .map(|name| RuntimeHandler {
                    name: name.to_string(),
                    features: Some(RuntimeHandlerFeatures::default()),
                })
                .collect(),
            features: Some(api::RuntimeFeatures::default()),
        })
    }

    pub(super) fn runtime_config(&self) -> RuntimeConfigResponse {
        let cgroup_driver = match self.config.cgroup_driver {
            config::CgroupDriver::Cgroupfs => CgroupDriver::Cgroupfs,
        };
        RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration {
                cgroup_driver: cgroup_driver.into(),
            }),
        }
    }

    pub(super) fn update_runtime_config(
        &self,
        request: &UpdateRuntimeConfigRequest,
    ) -> Result<(), CriError> {
        let runtime_config = request
            .runtime_config
            .as_ref()
            .ok_or_else(|| CriError::invalid("runtime_config", "is required"))?;
        let Some(network) = &runtime_config.network_config else {
            return Ok(());
        };
        validate_pod_cidr(&network.pod_cidr)?;
        *self
            .pod_cidr
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = network.pod_cidr.clone();
        tracing::info!(pod_cidr = %network.pod_cidr, "pod CIDR updated");
        Ok(())
    }

    fn pod_cidr(&self) -> String {
        self.pod_cidr
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    fn config_json(&self) -> Result<String, CriError> {
        serde_json::to_string(&self.config).map_err(|err| CriError::Internal {
            what: "serialising the effective config",
            reason: err.to_string(),
        })
    }
}

/// kubelet sends one CIDR, or two separated by a comma for dual-stack.
fn validate_pod_cidr(pod_cidr: &str) -> Result<(), CriError> {
    const FIELD: &str = "runtime_config.network_config.pod_cidr";
    if pod_cidr.is_empty() {
        return Ok(());
    }
    for cidr in pod_cidr.split(',') {
        let bad = || CriError::invalid(FIELD, format!("{cidr:?} is not an address/prefix CIDR"));
        let (address, prefix) = cidr.trim().split_once('/').ok_or_else(bad)?;
        let address: IpAddr = address.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_pod_cidr;

    #[test]
    fn pod_cidr_accepts_single_and_dual_stack() {
        for ok in ["", "10.244.1.0/24", "10.244.1.0/24,fd00:10:244:1::/64"] {
            validate_pod_cidr(ok).unwrap();
        }
    }

    #[test]
    fn pod_cidr_rejects_garbage_naming_the_field() {
        for bad in [
            "10.244.1.0",
            "10.244.1.0/33",
            "fd00::/129",
            "banana/8",
            "10.0.0.0/24,",
        ] {
            let err = validate_pod_cidr(bad).unwrap_err().to_string();
            assert!(
                err.contains("runtime_config.network_config.pod_cidr"),
                "{bad}: {err}"
            );
        }
    }
}
