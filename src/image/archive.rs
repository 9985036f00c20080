//! Image archives for nodes without a registry: `crius save` writes them, `crius load`
//! reads them.
//!
//! Written: an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) that also
//! carries Docker's `manifest.json`, so `crius load`, `ctr import` and `docker load` all
//! accept it. Read: an OCI image layout, or a `docker save` tarball (`manifest.json`
//! naming config and layer files). Loading extracts into the ingest area, verifies
//! every blob against its digest, unpacks layers into snapshots and records the images;
//! a failure leaves nothing behind.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::content::sha256_reader;
use super::manifest::{config_user, parse_config, Manifest, Platform};
use super::reference::Reference;
use super::{ContentError, ImageError, ImageManager};
use crate::snapshot::{chain_ids, Compression};
use crate::store::images::LayerRecord;
use crate::store::ImageRecord;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// containerd's annotation for an image's full name inside an OCI layout.
const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// One image found in an archive, its blobs still in the extraction directory.
struct ArchiveImage {
    names: Vec<String>,
    manifest_bytes: Vec<u8>,
    manifest_media_type: String,
    config: Blob,
    layers: Vec<Blob>,
}

/// A blob inside the extracted archive.
struct Blob {
    digest: String,
    size: u64,
    media_type: String,
    path: PathBuf,
}

impl ImageManager {
    /// Writes the images that `keys` name as one tar to `out`. Blocking: call it from a
    /// blocking task.
    pub fn save(&self, keys: &[String], out: impl Write) -> Result<(), ImageError> {
        let mut records = Vec::new();
        for key in keys {
            let record = self.find(key).ok_or_else(|| ImageError::NotFound {
                image: key.clone(),
                detail: "no such image on this node".to_string(),
            })?;
            records.push(record);
        }
        let mut tar = tar::Builder::new(out);
        let mut blobs = BTreeSet::new();
        let mut index = Vec::new();
        let mut docker = Vec::new();
        for record in &records {
            blobs.insert(record.manifest_digest.clone());
            blobs.insert(record.id.clone());
            blobs.extend(record.layers.iter().map(|layer| layer.digest.clone()));
            let manifest_size = self.blob_size(&record.manifest_digest)?;
            let descriptor = |annotations: Value| {
                json!({
                    "mediaType": record.manifest_media_type,
                    "digest": record.manifest_digest,
                    "size": manifest_size,
                    "annotations": annotations,
                })
            };
            if record.repo_tags.is_empty() {
                index.push(descriptor(json!({})));
            }
            // The OCI ref name may be a full reference; a bare tag would make two images
            // tagged `latest` indistinguishable (and skopeo looks names up by it).
            for name in &record.repo_tags {
                index.push(descriptor(
                    json!({ IMAGE_NAME_ANNOTATION: name, REF_NAME_ANNOTATION: name }),
                ));
            }
            docker.push(json!({
                "Config": blob_name(&record.id),
                "RepoTags": record.repo_tags,
                "Layers": record.layers.iter().map(|layer| blob_name(&layer.digest)).collect::<Vec<_>>(),
            }));
        }
        let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index });
        append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        append_bytes(&mut tar, "index.json", index.to_string().as_bytes())?;
        append_bytes(
            &mut tar,
            "manifest.json",
            Value::Array(docker).to_string().as_bytes(),
        )?;
        for digest in &blobs {
            let path = self.content.path(digest)?;
            let mut file =
                std::fs::File::open(&path).map_err(|source| io(&path, "open", source))?;
            let size = file
                .metadata()
                .map_err(|source| io(&path, "stat", source))?
                .len();
            let mut header = archive_header(size);
            tar.append_data(&mut header, blob_name(digest), &mut file)
                .map_err(|source| io(&path, "archive", source))?;
        }
        tar.into_inner()
            .and_then(|mut out| out.flush())
            .map_err(|source| io(Path::new("archive"), "finish", source))
    }

    /// Imports every image of the tar at `archive`; returns their records.
    pub async fn load(&self, archive: &Path) -> Result<Vec<ImageRecord>, ImageError> {
        let result = {
            let _shared = self.gc_lock.read().await;
            self.load_archive(archive).await
        };
        if let Err(err) = &result {
            tracing::info!("load failed, discarding its data: {err}");
            if let Err(gc_err) = self.collect_garbage().await {
                tracing::warn!("cleaning up after a failed load: {gc_err}");
            }
        }
        result
    }

    async fn load_archive(&self, archive: &Path) -> Result<Vec<ImageRecord>, ImageError> {
        let dir = self.content.ingest_dir("load")?;
        let _cleanup = RemoveDirOnDrop(dir.clone());
        let (source, target) = (archive.to_path_buf(), dir.clone());
        let images = tokio::task::spawn_blocking(move || -> Result<Vec<ArchiveImage>, ImageError> {
            let file = std::fs::File::open(&source).map_err(|err| io(&source, "open", err))?;
            tar::Archive::new(file)
                .unpack(&target)
                .map_err(|err| bad_archive(format!("cannot extract: {err}")))?;
            if target.join("index.json").is_file() {
                read_oci_layout(&target)
            } else if target.join("manifest.json").is_file() {
                read_docker_archive(&target)
            } else {
                Err(bad_archive("neither an OCI image layout (index.json) nor a docker save tarball (manifest.json)".into()))
            }
        })
        .await
        .map_err(|_| ImageError::Task("archive extraction"))??;
        if images.is_empty() {
            return Err(bad_archive("the archive holds no image".into()));
        }
        let mut records = Vec::new();
        for image in images {
            records.push(self.import(image).await?);
        }
        Ok(records)
    }

    /// Moves one archive image's blobs into the store, unpacks its layers and records it.
    async fn import(&self, image: ArchiveImage) -> Result<ImageRecord, ImageError> {
        let label = image
            .names
            .first()
            .cloned()
            .unwrap_or_else(|| image.config.digest.clone());
        for blob in std::iter::once(&image.config).chain(&image.layers) {
            if !self.content.contains(&blob.digest) {
                let (path, digest) = (blob.path.clone(), blob.digest.clone());
                let content = self.content.clone();
                tokio::task::spawn_blocking(move || content.import_file(&path, &digest))
                    .await
                    .map_err(|_| ImageError::Task("blob import"))?
                    .map_err(|err| match err {
                        ContentError::DigestMismatch { .. } => bad_archive(err.to_string()),
                        other => ImageError::Content(other),
                    })?;
            }
        }
        let manifest_digest = super::content::sha256_digest(&image.manifest_bytes);
        if !self.content.contains(&manifest_digest) {
            self.content
                .write_all(&manifest_digest, &image.manifest_bytes)
                .await?;
        }
        let config_bytes = self.content.read(&image.config.digest).await?;
        let config =
            parse_config(&config_bytes).map_err(|err| bad_archive(format!("{label}: {err}")))?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != image.layers.len() {
            return Err(bad_archive(format!(
                "{label}: {} layers but the config lists {} diff ids",
                image.layers.len(),
                diff_ids.len()
            )));
        }
        let chains = chain_ids(diff_ids);
        let mut layers = Vec::new();
        for ((blob, diff_id), chain_id) in image.layers.iter().zip(diff_ids).zip(&chains) {
            let lock = self.layer_lock(chain_id);
            let _single_flight = lock.lock().await;
            if !self.snapshots.exists(chain_id) {
                let compression = Compression::from_media_type(&blob.media_type)?;
                self.unpack_blob(&label, &blob.digest, compression, diff_id, chain_id)
                    .await?;
            }
            layers.push(LayerRecord {
                digest: blob.digest.clone(),
                size: blob.size,
                media_type: blob.media_type.clone(),
                diff_id: diff_id.clone(),
                chain_id: chain_id.clone(),
            });
        }
        let user = config_user(&config);
        let record = ImageRecord {
            id: image.config.digest.clone(),
            repo_tags: image.names,
            repo_digests: Vec::new(),
            manifest_digest,
            manifest_media_type: image.manifest_media_type,
            size: image.config.size + layers.iter().map(|layer| layer.size).sum::<u64>(),
            layers,
            user,
        };
        let record = self.store.put(record)?;
        tracing::info!(id = %record.id, names = ?record.repo_tags, "image loaded");
        Ok(record)
    }

    fn blob_size(&self, digest: &str) -> Result<u64, ImageError> {
        let path = self.content.path(digest)?;
        Ok(std::fs::metadata(&path)
            .map_err(|source| io(&path, "stat", source))?
            .len())
    }
}

/// Reads an OCI image layout: each index.json entry is an image (an index entry resolves
/// to the host platform); names come from containerd's or the OCI ref-name annotation.
fn read_oci_layout(dir: &Path) -> Result<Vec<ArchiveImage>, ImageError> {
    let index: Value = read_json(&dir.join("index.json"))?;
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    let mut images: Vec<ArchiveImage> = Vec::new();
    for entry in entries {
        let digest = entry["digest"].as_str().unwrap_or_default().to_string();
        let name = entry["annotations"][IMAGE_NAME_ANNOTATION]
            .as_str()
            .or_else(|| entry["annotations"][REF_NAME_ANNOTATION].as_str())
            .and_then(full_name);
        let mut manifest_digest = digest.clone();
        let mut bytes = read_blob(dir, &digest)?;
        if let Manifest::Index(index) =
            Manifest::parse(&bytes).map_err(|err| bad_archive(err.to_string()))?
        {
            let platform = Platform::host();
            let selected = platform
                .select(&index)
                .ok_or_else(|| bad_archive(format!("index {digest} has no {platform} image")))?;
            manifest_digest = selected.digest().to_string();
            bytes = read_blob(dir, &manifest_digest)?;
        }
        // The same manifest listed under several names is one image with several names.
        if let Some(existing) = images
            .iter_mut()
            .find(|image| super::content::sha256_digest(&image.manifest_bytes) == manifest_digest)
        {
            existing.names.extend(name);
            continue;
        }
        let manifest: Value = serde_json::from_slice(&bytes)
            .map_err(|err| bad_archive(format!("manifest {manifest_digest}: {err}")))?;
        let blob = |descriptor: &Value| -> Result<Blob, ImageError> {
            let digest = descriptor["digest"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            Ok(Blob {
                path: blob_path(dir, &digest)?,
                size: descriptor["size"].as_u64().unwrap_or_default(),
                media_type: descriptor["mediaType"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                digest,
            })
        };
        let layers = manifest["layers"]
            .as_array()
            .map(|layers| layers.iter().map(blob).collect::<Result<Vec<_>, _>>())
            .transpose()?
            .unwrap_or_default();
        images.push(ArchiveImage {
            names: name.into_iter().collect(),
            manifest_media_type: manifest["mediaType"]
                .as_str()
                .unwrap_or(OCI_MANIFEST)
                .to_string(),
            config: blob(&manifest["config"])?,
            layers,
            manifest_bytes: bytes,
        });
    }
    Ok(images)
}

/// Reads a `docker save` tarball: manifest.json lists each image's config file, layer
/// files and tags. crius writes an OCI manifest for each, with the layers' real digests
/// and compression.
fn read_docker_archive(dir: &Path) -> Result<Vec<ArchiveImage>, ImageError> {
    let entries: Value = read_json(&dir.join("manifest.json"))?;
    let mut images = Vec::new();
    for entry in entries.as_array().cloned().unwrap_or_default() {
        let file_blob = |relative: &str, media_type: Option<&str>| -> Result<Blob, ImageError> {
            let path = inside(dir, relative)?;
            let mut file = std::fs::File::open(&path).map_err(|err| io(&path, "open", err))?;
            let mut magic = [0u8; 4];
            let sniffed = file
                .read(&mut magic)
                .map_err(|err| io(&path, "read", err))?;
            let media_type = media_type
                .map(str::to_string)
                .unwrap_or_else(|| layer_media_type(&magic[..sniffed]));
            let mut file = std::fs::File::open(&path).map_err(|err| io(&path, "open", err))?;
            let (digest, size) = sha256_reader(&mut file).map_err(|err| io(&path, "read", err))?;
            Ok(Blob {
                digest,
                size,
                media_type,
                path,
            })
        };
        let config = file_blob(
            entry["Config"].as_str().unwrap_or_default(),
            Some(OCI_CONFIG),
        )?;
        let layers = entry["Layers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|layer| file_blob(layer.as_str().unwrap_or_default(), None))
            .collect::<Result<Vec<_>, _>>()?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": config.media_type, "digest": config.digest, "size": config.size },
            "layers": layers.iter().map(|layer| json!({
                "mediaType": layer.media_type, "digest": layer.digest, "size": layer.size,
            })).collect::<Vec<_>>(),
        });
        let names = entry["RepoTags"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|tag| tag.as_str().and_then(full_name))
            .collect();
        images.push(ArchiveImage {
            names,
            manifest_bytes: manifest.to_string().into_bytes(),
            manifest_media_type: OCI_MANIFEST.to_string(),
            config,
            layers,
        });
    }
    Ok(images)
}

/// A normalised `name:tag` for an archive's name, if it is a full reference (an OCI
/// ref-name may be a bare tag, which names no repository).
fn full_name(name: &str) -> Option<String> {
    if !name.contains('/') && !name.contains(':') {
        return None;
    }
    Reference::parse(name)
        .ok()
        .and_then(|reference| reference.tagged())
}

/// Docker archives hold uncompressed or gzip layers (zstd in newer ones): tell by magic.
fn layer_media_type(magic: &[u8]) -> String {
    let compression = match magic {
        [0x1f, 0x8b, ..] => "+gzip",
        [0x28, 0xb5, 0x2f, 0xfd] => "+zstd",
        _ => "",
    };
    format!("application/vnd.oci.image.layer.v1.tar{compression}")
}

fn blob_name(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf, ImageError> {
    super::reference::validate_digest(digest)
        .map_err(|reason| bad_archive(format!("digest {digest:?}: {reason}")))?;
    let (algorithm, hex) = digest.split_once(':').unwrap_or_default();
    Ok(dir.join("blobs").join(algorithm).join(hex))
}

fn read_blob(dir: &Path, digest: &str) -> Result<Vec<u8>, ImageError> {
    let path = blob_path(dir, digest)?;
    let bytes =
        std::fs::read(&path).map_err(|_| bad_archive(format!("blob {digest} is missing")))?;
    if super::content::sha256_digest(&bytes) != digest {
        return Err(bad_archive(format!(
            "blob {digest} does not match its digest"
        )));
    }
    Ok(bytes)
}

fn read_json(path: &Path) -> Result<Value, ImageError> {
    let bytes = std::fs::read(path).map_err(|err| io(path, "read", err))?;
    serde_json::from_slice(&bytes).map_err(|err| bad_archive(format!("{}: {err}", path.display())))
}

/// `relative` inside `dir`, refusing paths that climb out of it.
fn inside(dir: &Path, relative: &str) -> Result<PathBuf, ImageError> {
    let path = Path::new(relative);
    if relative.is_empty()
        || path.is_absolute()
        || path
            .components()
            .any(|part| matches!(part, std::path::Component::ParentDir))
    {
        return Err(bad_archive(format!("path {relative:?} leaves the archive")));
    }
    Ok(dir.join(path))
}

fn archive_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

fn append_bytes(
    tar: &mut tar::Builder<impl Write>,
    name: &str,
    bytes: &[u8],
) -> Result<(), ImageError> {
    let mut header = archive_header(bytes.len() as u64);
    tar.append_data(&mut header, name, bytes)
        .map_err(|source| io(Path::new(name), "archive", source))
}

fn bad_archive(detail: String) -> ImageError {
    ImageError::BadArchive { detail }
}

fn io(path: &Path, action: &'static str, source: std::io::Error) -> ImageError {
    ImageError::Content(ContentError::Io {
        action,
        path: path.to_path_buf(),
        source,
    })
}

/// Removes the extraction directory however the load ends.
struct RemoveDirOnDrop(PathBuf);

impl Drop for RemoveDirOnDrop {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), "cannot remove load directory: {err}");
        }
    }
}
