//! `crius version` and `crius info`: the same facts `crictl version` and `crictl info` show.

use serde_json::{json, Map, Value};

use super::{rpc_error, CliError};
use crate::cri::api::{CgroupDriver, RuntimeConfigRequest, StatusRequest, VersionRequest};
use crate::cri::client::CriClient;

/// Client and runtime versions, one `Key:  value` line each (crictl's layout).
pub async fn version(address: &str) -> Result<String, CliError> {
    let mut client = CriClient::connect(address).await?;
    let response = client
        .runtime
        .version(VersionRequest {
            version: crate::cri::RUNTIME_API_VERSION.to_string(),
        })
        .await
        .map_err(rpc_error("Version"))?
        .into_inner();
    Ok(format!(
        "Client:  crius {}\nVersion:  {}\nRuntimeName:  {}\nRuntimeVersion:  {}\nRuntimeApiVersion:  {}\n",
        env!("CARGO_PKG_VERSION"),
        response.version,
        response.runtime_name,
        response.runtime_version,
        response.runtime_api_version
    ))
}

/// The runtime's conditions, handlers, cgroup driver and verbose info as one JSON object;
/// verbose entries are JSON documents themselves and are embedded as such.
pub async fn info(address: &str) -> Result<Value, CliError> {
    let mut client = CriClient::connect(address).await?;
    let status = client
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .map_err(rpc_error("Status"))?
        .into_inner();
    let runtime_config = client
        .runtime
        .runtime_config(RuntimeConfigRequest {})
        .await
        .map_err(rpc_error("RuntimeConfig"))?
        .into_inner();

    let conditions: Vec<Value> = status
        .status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .map(|condition| {
            json!({
                "type": condition.r#type,
                "status": condition.status,
                "reason": condition.reason,
                "message": condition.message,
            })
        })
        .collect();
    let handlers: Vec<Value> = status
        .runtime_handlers
        .into_iter()
        .map(|handler| {
            let features = handler.features.unwrap_or_default();
            json!({
                "name": handler.name,
                "features": {
                    "recursiveReadOnlyMounts": features.recursive_read_only_mounts,
                    "userNamespaces": features.user_namespaces,
                },
            })
        })
        .collect();
    let cgroup_driver = runtime_config
        .linux
        .and_then(|linux| CgroupDriver::try_from(linux.cgroup_driver).ok())
        .map(|driver| driver.as_str_name().to_lowercase());

    let mut info = Map::new();
    info.insert("status".into(), json!({ "conditions": conditions }));
    info.insert("runtimeHandlers".into(), Value::Array(handlers));
    info.insert("cgroupDriver".into(), json!(cgroup_driver));
    let mut verbose: Vec<_> = status.info.into_iter().collect();
    verbose.sort();
    for (key, text) in verbose {
        // Entries are JSON by convention; show anything else as a plain string.
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        info.insert(key, value);
    }
    Ok(Value::Object(info))
}
