//! Image references, parsed and normalised the way Docker and kubelet do it.
//!
//! `busybox` → `docker.io/library/busybox:latest`; `host:port/repo:tag`; `repo@sha256:…`;
//! `repo:tag@sha256:…`. The grammar is the distribution project's reference grammar:
//! a registry (the first path component, when it has a `.` or `:` or is `localhost`),
//! lowercase path components joined by `/`, an optional tag, an optional digest.

use std::fmt;

/// The registry that references without one name.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag that references without tag or digest get.
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LENGTH: usize = 255;
const MAX_TAG_LENGTH: usize = 128;

/// Why a reference is malformed; the message quotes the reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: &'static str,
}

/// A fully qualified image reference: always a registry and repository, and a tag, a
/// digest or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `text`.
    pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
        let fail = |reason| ReferenceError {
            reference: text.to_string(),
            reason,
        };
        if text.is_empty() {
            return Err(fail("it is empty"));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest).map_err(fail)?;
                (rest, Some(digest.to_string()))
            }
            None => (text, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |index| index + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(colon) => {
                let colon = last_slash + colon;
                (&rest[..colon], Some(&rest[colon + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(fail)?;
        }
        if name.len() > MAX_NAME_LENGTH {
            return Err(fail("the repository name is longer than 255 characters"));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder)) if looks_like_registry(first) => {
                (first, remainder.to_string())
            }
            _ => (DEFAULT_REGISTRY, name.to_string()),
        };
        validate_registry(registry).map_err(fail)?;
        let registry = if registry == "index.docker.io" {
            DEFAULT_REGISTRY
        } else {
            registry
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        validate_repository(&repository).map_err(fail)?;
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }

    /// Registry host (and port) as written in image names, e.g. `docker.io`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Repository path inside the registry, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag`, when the reference has a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|tag| format!("{}:{tag}", self.name()))
    }

    /// `registry/repository@digest` for a manifest digest: how kubelet's `repo_digests` read.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }

    /// What to ask the registry's manifest endpoint for: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Docker's rule: the first component is a registry when it has a dot or a port, or is
/// `localhost`; otherwise it is the first path component of a Docker Hub repository.
fn looks_like_registry(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

fn validate_registry(registry: &str) -> Result<(), &'static str> {
    let (host, port) = match registry.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (host, Some(port)),
        _ => (registry, None),
    };
    if let Some(port) = port {
        if port.is_empty()
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u16>().is_err()
        {
            return Err("the registry port is not a number");
        }
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    };
    if host_ok {
        Ok(())
    } else {
        Err("the registry host is not a valid host name")
    }
}

/// Path components: lowercase alphanumerics separated by `.`, `_`, `__` or runs of `-`.
fn validate_repository(repository: &str) -> Result<(), &'static str> {
    for component in repository.split('/') {
        if component.is_empty() {
            return Err("the repository has an empty path component");
        }
        if component.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err("the repository must be lowercase");
        }
        let bytes = component.as_bytes();
        if !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
            return Err("a repository path component must start and end with a letter or digit");
        }
        let mut index = 0;
        while index < bytes.len() {
            let b = bytes[index];
            if b.is_ascii_lowercase() || b.is_ascii_digit() {
                index += 1;
                continue;
            }
            // A separator run: '.', '_', '__' or one or more '-'.
            let start = index;
            while index < bytes.len() && !bytes[index].is_ascii_alphanumeric() {
                index += 1;
            }
            let separator = &component[start..index];
            let valid =
                matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
            if !valid {
                return Err("the repository has an invalid character or separator");
            }
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), &'static str> {
    let bytes = tag.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    if tag.is_empty() || tag.len() > MAX_TAG_LENGTH {
        return Err("the tag must be 1 to 128 characters");
    }
    if !word(bytes[0]) || !bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-') {
        return Err("the tag may only hold letters, digits, '_', '.' and '-', and not start with '.' or '-'");
    }
    Ok(())
}

/// `algorithm:hex`; sha256 and sha512 digests must have their exact lengths.
pub fn validate_digest(digest: &str) -> Result<(), &'static str> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err("the digest has no algorithm prefix");
    };
    let expected = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err("the digest algorithm is not sha256 or sha512"),
    };
    if hex.len() != expected
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err("the digest is not lowercase hex of the algorithm's length");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn normalised(text: &str) -> String {
        Reference::parse(text).unwrap().to_string()
    }

    #[test]
    fn docker_hub_short_names_are_normalised() {
        assert_eq!(normalised("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalised("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(
            normalised("library/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(normalised("user/app:v1"), "docker.io/user/app:v1");
        assert_eq!(
            normalised("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalised("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn registries_with_ports_and_paths() {
        assert_eq!(
            normalised("127.0.0.1:5000/busybox:v2"),
            "127.0.0.1:5000/busybox:v2"
        );
        assert_eq!(normalised("localhost/a/b/c"), "localhost/a/b/c:latest");
        assert_eq!(
            normalised("registry.k8s.io/pause:3.9"),
            "registry.k8s.io/pause:3.9"
        );
        assert_eq!(normalised("[::1]:5000/x:y"), "[::1]:5000/x:y");
        let reference = Reference::parse("127.0.0.1:5000/team/app").unwrap();
        assert_eq!(reference.registry(), "127.0.0.1:5000");
        assert_eq!(reference.repository(), "team/app");
        assert_eq!(reference.manifest_reference(), "latest");
    }

    #[test]
    fn digests_with_and_without_tags() {
        let pinned = Reference::parse(&format!("busybox@{DIGEST}")).unwrap();
        assert_eq!(pinned.tag(), None);
        assert_eq!(pinned.digest(), Some(DIGEST));
        assert_eq!(pinned.manifest_reference(), DIGEST);
        assert_eq!(
            pinned.to_string(),
            format!("docker.io/library/busybox@{DIGEST}")
        );
        let both = Reference::parse(&format!("host:1/app:v1@{DIGEST}")).unwrap();
        assert_eq!(both.tag(), Some("v1"));
        assert_eq!(both.manifest_reference(), DIGEST);
        assert_eq!(both.tagged().unwrap(), "host:1/app:v1");
        assert_eq!(both.with_digest(DIGEST), format!("host:1/app@{DIGEST}"));
    }

    #[test]
    fn malformed_references_are_rejected_with_the_reference_quoted() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-tag",
            "busybox@sha256:abc",
            "busybox@md5:0123",
            "host:port/app",
            "a//b",
            "-app",
            "app-",
            "app..x",
            "app:tag with space",
            "busybox@",
        ] {
            let err = Reference::parse(bad).expect_err(bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        let long = "a".repeat(300);
        assert!(Reference::parse(&long).is_err());
        assert!(Reference::parse(&format!("app:{}", "t".repeat(129))).is_err());
    }

    #[test]
    fn separators_follow_the_grammar() {
        for good in ["a.b", "a_b", "a__b", "a-b", "a---b", "a0/b1.c_d"] {
            Reference::parse(good).unwrap_or_else(|err| panic!("{good}: {err}"));
        }
        for bad in ["a___b", "a._b", "a-.b"] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
