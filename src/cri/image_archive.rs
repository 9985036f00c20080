//! crius.v1 Load and Save: image archives streamed through the socket in chunks, so the
//! CLI can read from and write to any file, or a pipe.

use std::io::Write;
use std::path::Path;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use super::crius_api::{LoadChunk, LoadResponse, LoadedImage, SaveChunk};
use super::{Cri, CriError};

/// Size of the chunks an archive is sent in.
const CHUNK_BYTES: usize = 256 * 1024;

impl Cri {
    pub(super) async fn load_images(
        &self,
        mut chunks: impl tokio_stream::Stream<Item = Result<LoadChunk, tonic::Status>> + Unpin,
    ) -> Result<LoadResponse, CriError> {
        let dir = self.images.staging_dir()?;
        let archive = dir.join("archive.tar");
        let received = async {
            let mut file = tokio::fs::File::create(&archive)
                .await
                .map_err(|err| upload_error(&archive, err))?;
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk
                    .map_err(|status| CriError::invalid("chunk", status.message().to_string()))?;
                file.write_all(&chunk.data)
                    .await
                    .map_err(|err| upload_error(&archive, err))?;
            }
            file.flush()
                .await
                .map_err(|err| upload_error(&archive, err))?;
            Ok::<_, CriError>(())
        }
        .await;
        let loaded = match received {
            Ok(()) => self.images.load(&archive).await.map_err(CriError::from),
            Err(err) => Err(err),
        };
        if let Err(err) = tokio::fs::remove_dir_all(&dir).await {
            tracing::warn!(dir = %dir.display(), "cannot remove upload directory: {err}");
        }
        Ok(LoadResponse {
            images: loaded?
                .into_iter()
                .map(|record| LoadedImage {
                    id: record.id,
                    names: record.repo_tags,
                })
                .collect(),
        })
    }

    /// Streams the archive of `keys`; an error part-way ends the stream with that error.
    pub(super) fn save_images(
        &self,
        keys: Vec<String>,
    ) -> Result<mpsc::Receiver<Result<SaveChunk, CriError>>, CriError> {
        if keys.is_empty() {
            return Err(CriError::invalid("images", "name at least one image"));
        }
        if let Some(missing) = keys.iter().find(|key| self.images.find(key).is_none()) {
            return Err(CriError::Image(crate::image::ImageError::NotFound {
                image: missing.clone(),
                detail: "no such image on this node".to_string(),
            }));
        }
        let (sender, receiver) = mpsc::channel(4);
        let images = self.images.clone();
        tokio::task::spawn_blocking(move || {
            let mut writer = ChunkWriter {
                buffer: Vec::with_capacity(CHUNK_BYTES),
                sender: sender.clone(),
            };
            let saved = images.save(&keys, &mut writer).map_err(CriError::from);
            if let Err(err) = saved.and_then(|()| {
                writer.flush().map_err(|_| CriError::Internal {
                    what: "streaming the archive",
                    reason: "the client went away".to_string(),
                })
            }) {
                let _ = sender.blocking_send(Err(err));
            }
        });
        Ok(receiver)
    }
}

fn upload_error(path: &Path, err: std::io::Error) -> CriError {
    CriError::Internal {
        what: "receiving the archive",
        reason: format!("{}: {err}", path.display()),
    }
}

/// Turns a blocking `Write` into chunks on a channel; a closed channel (the client went
/// away) is a broken pipe, which stops the archive writer.
struct ChunkWriter {
    buffer: Vec<u8>,
    sender: mpsc::Sender<Result<SaveChunk, CriError>>,
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES));
        self.sender
            .blocking_send(Ok(SaveChunk { data }))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}
