//! Manifests, image indexes and configs as registries serve them (OCI and Docker schema 2,
//! parsed with `oci-spec`), and the choice of the host's platform from an index.

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

/// What a manifest endpoint returned.
pub enum Manifest {
    Index(Box<ImageIndex>),
    Image(Box<ImageManifest>),
}

/// A document that is not a manifest crius can use; the message says why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(String);

impl Manifest {
    /// Parses manifest bytes, telling indexes from image manifests by `mediaType`, or by
    /// shape when the field is absent (it is optional in OCI).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            schema_version: Option<u32>,
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
        }
        let probe: Probe = serde_json::from_slice(bytes)
            .map_err(|err| ManifestError(format!("manifest is not JSON: {err}")))?;
        if probe.schema_version != Some(2) {
            return Err(ManifestError(format!(
                "unsupported manifest schema version {:?} (Docker schema 1 images are not supported)",
                probe.schema_version
            )));
        }
        let is_index = match probe.media_type.as_deref() {
            Some("application/vnd.oci.image.index.v1+json")
            | Some("application/vnd.docker.distribution.manifest.list.v2+json") => true,
            Some("application/vnd.oci.image.manifest.v1+json")
            | Some("application/vnd.docker.distribution.manifest.v2+json") => false,
            Some(other) => {
                return Err(ManifestError(format!(
                    "unsupported manifest media type {other}"
                )))
            }
            None => probe.manifests.is_some(),
        };
        if is_index {
            ImageIndex::from_reader(bytes)
                .map(|index| Manifest::Index(Box::new(index)))
                .map_err(|err| ManifestError(format!("invalid image index: {err}")))
        } else {
            ImageManifest::from_reader(bytes)
                .map(|manifest| Manifest::Image(Box::new(manifest)))
                .map_err(|err| ManifestError(format!("invalid image manifest: {err}")))
        }
    }
}

/// The platform crius runs images for: linux on the host's architecture, named as
/// image indexes name it.
pub struct Platform {
    pub os: &'static str,
    pub architecture: &'static str,
    pub variant: Option<&'static str>,
}

impl Platform {
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            other => (other, None),
        };
        Platform {
            os: "linux",
            architecture,
            variant,
        }
    }

    /// Picks this platform's manifest from an index: same os and architecture, and the
    /// same variant when both sides name one (arm64's `v8` is often left out).
    pub fn select<'a>(&self, index: &'a ImageIndex) -> Option<&'a Descriptor> {
        index.manifests().iter().find(|descriptor| {
            let Some(platform) = descriptor.platform() else {
                return false;
            };
            platform.os().to_string() == self.os
                && platform.architecture().to_string() == self.architecture
                && match (platform.variant(), self.variant) {
                    (Some(theirs), Some(ours)) => theirs == ours,
                    _ => true,
                }
        })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// Parses an image config blob.
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfiguration, ManifestError> {
    ImageConfiguration::from_reader(bytes)
        .map_err(|err| ManifestError(format!("invalid image config: {err}")))
}

/// The config's `User` (`uid`, `name`, `uid:gid`…); empty means the image's default, root.
pub fn config_user(config: &ImageConfiguration) -> String {
    config
        .config()
        .as_ref()
        .and_then(|c| c.user().clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST_A: &str =
        "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const DIGEST_B: &str =
        "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn index(media_type: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}","manifests":[
              {{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{DIGEST_B}","size":1,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},
              {{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{DIGEST_A}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        )
    }

    #[test]
    fn docker_and_oci_indexes_resolve_to_the_host_platform() {
        for media_type in [
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.oci.image.index.v1+json",
        ] {
            let Manifest::Index(index) = Manifest::parse(index(media_type).as_bytes()).unwrap()
            else {
                panic!("not an index");
            };
            let amd64 = Platform {
                os: "linux",
                architecture: "amd64",
                variant: None,
            };
            assert_eq!(amd64.select(&index).unwrap().digest().to_string(), DIGEST_A);
            let arm64 = Platform {
                os: "linux",
                architecture: "arm64",
                variant: Some("v8"),
            };
            assert_eq!(arm64.select(&index).unwrap().digest().to_string(), DIGEST_B);
            let s390x = Platform {
                os: "linux",
                architecture: "s390x",
                variant: None,
            };
            assert!(s390x.select(&index).is_none());
        }
    }

    #[test]
    fn docker_schema2_manifest_parses() {
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
               "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":7,"digest":"{DIGEST_A}"}},
               "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":9,"digest":"{DIGEST_B}"}}]}}"#
        );
        let Manifest::Image(manifest) = Manifest::parse(manifest.as_bytes()).unwrap() else {
            panic!("not a manifest");
        };
        assert_eq!(manifest.layers().len(), 1);
        assert_eq!(manifest.config().digest().to_string(), DIGEST_A);
    }

    #[test]
    fn schema1_garbage_and_unknown_types_are_refused() {
        assert!(Manifest::parse(br#"{"schemaVersion":1}"#).is_err());
        assert!(Manifest::parse(b"not json").is_err());
        assert!(Manifest::parse(br#"{"schemaVersion":2,"mediaType":"text/plain"}"#).is_err());
    }

    #[test]
    fn docker_config_with_extra_fields_parses() {
        let config = parse_config(
            br#"{"architecture":"amd64","os":"linux","container_config":{"Hostname":"x"},
                "config":{"User":"1000","Env":["PATH=/bin"],"Cmd":["sh"]},
                "rootfs":{"type":"layers","diff_ids":["sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]}}"#,
        )
        .unwrap();
        assert_eq!(
            config.config().as_ref().unwrap().user().as_deref(),
            Some("1000")
        );
        assert_eq!(config.rootfs().diff_ids().len(), 1);
    }
}
