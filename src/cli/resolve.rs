//! Which container or pod a user means: a full id, a name (the CRI metadata name) or a
//! unique id prefix, tried in Docker's order — exact id, then exact name, then id prefix.
//! A key that fits more than one object is an error listing the candidates, never a
//! guess: a verb like `rm` must not act on a container the user did not mean.

use super::{rpc_error, CliError};
use crate::cri::api::{Container, ListContainersRequest, ListPodSandboxRequest, PodSandbox};
use crate::cri::client::CriClient;

/// Characters of an id shown in tables and messages, as crictl shows them.
pub(super) const SHORT_ID: usize = 13;

/// The first [`SHORT_ID`] characters of `id`.
pub(super) fn short_id(id: &str) -> &str {
    &id[..id.len().min(SHORT_ID)]
}

/// The one item among `items` that `key` names; `id_and_name` gives an item's id and
/// name, `kind` names what is looked for in errors.
pub(super) fn resolve<'a, T>(
    kind: &'static str,
    key: &str,
    items: &'a [T],
    id_and_name: impl Fn(&T) -> (&str, &str),
) -> Result<&'a T, CliError> {
    let no_such = || CliError::NoSuch {
        kind,
        key: key.to_string(),
    };
    if key.is_empty() {
        return Err(no_such());
    }
    if let Some(item) = items.iter().find(|item| id_and_name(item).0 == key) {
        return Ok(item);
    }
    let one = |matches: Vec<&'a T>| -> Result<Option<&'a T>, CliError> {
        match matches.as_slice() {
            [] => Ok(None),
            [only] => Ok(Some(*only)),
            several => Err(CliError::Ambiguous {
                kind,
                key: key.to_string(),
                candidates: several
                    .iter()
                    .map(|item| {
                        let (id, name) = id_and_name(item);
                        format!("{} ({name})", short_id(id))
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    };
    let by_name = items
        .iter()
        .filter(|item| id_and_name(item).1 == key)
        .collect();
    if let Some(item) = one(by_name)? {
        return Ok(item);
    }
    let by_prefix = items
        .iter()
        .filter(|item| id_and_name(item).0.starts_with(key))
        .collect();
    one(by_prefix)?.ok_or_else(no_such)
}

/// Every container the runtime has, in any state.
pub(super) async fn all_containers(client: &mut CriClient) -> Result<Vec<Container>, CliError> {
    Ok(client
        .runtime
        .list_containers(ListContainersRequest::default())
        .await
        .map_err(rpc_error("ListContainers"))?
        .into_inner()
        .containers)
}

fn container_id_and_name(container: &Container) -> (&str, &str) {
    (
        &container.id,
        container
            .metadata
            .as_ref()
            .map_or("", |metadata| metadata.name.as_str()),
    )
}

/// The container `key` names.
pub(super) async fn container(client: &mut CriClient, key: &str) -> Result<Container, CliError> {
    let containers = all_containers(client).await?;
    resolve("container", key, &containers, container_id_and_name).cloned()
}

/// The name of a container, as ListContainers gives it.
pub(super) fn container_name(container: &Container) -> &str {
    container_id_and_name(container).1
}

/// The pod `key` names.
pub(super) async fn pod(client: &mut CriClient, key: &str) -> Result<PodSandbox, CliError> {
    let pods = client
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .map_err(rpc_error("ListPodSandbox"))?
        .into_inner()
        .items;
    resolve("pod", key, &pods, |pod| {
        (
            pod.id.as_str(),
            pod.metadata
                .as_ref()
                .map_or("", |metadata| metadata.name.as_str()),
        )
    })
    .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ITEMS: [(&str, &str); 4] = [
        ("abc123000000000000", "web"),
        ("abc124000000000000", "db"),
        ("def000000000000000", "abc"),
        ("fed000000000000000", "twin"),
    ];

    fn find(key: &str) -> Result<&'static str, CliError> {
        resolve("container", key, &ITEMS, |(id, name)| (id, name)).map(|(id, _)| *id)
    }

    #[test]
    fn ids_names_and_unique_prefixes_resolve() {
        assert_eq!(find("abc123000000000000").unwrap(), "abc123000000000000");
        assert_eq!(find("web").unwrap(), "abc123000000000000");
        assert_eq!(find("abc124").unwrap(), "abc124000000000000");
        assert_eq!(find("fe").unwrap(), "fed000000000000000");
    }

    #[test]
    fn an_exact_name_wins_over_an_id_prefix() {
        assert_eq!(find("abc").unwrap(), "def000000000000000");
    }

    #[test]
    fn an_ambiguous_prefix_lists_the_candidates() {
        let err = find("abc12").unwrap_err().to_string();
        assert!(err.contains("more than one container"), "{err}");
        assert!(err.contains("abc1230000000 (web)"), "{err}");
        assert!(err.contains("abc1240000000 (db)"), "{err}");
    }

    #[test]
    fn a_name_held_twice_is_ambiguous() {
        let twins = [("a1", "same"), ("b2", "same")];
        let err = resolve("pod", "same", &twins, |(id, name)| (id, name))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a1 (same), b2 (same)"), "{err}");
    }

    #[test]
    fn unknown_and_empty_keys_are_not_found() {
        assert_eq!(
            find("zzz").unwrap_err().to_string(),
            "no such container: zzz"
        );
        assert!(matches!(find(""), Err(CliError::NoSuch { .. })));
    }
}
