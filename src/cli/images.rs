//! Image verbs: `pull` (with per-layer progress), `images`, `rmi`, `load`, `save`, and
//! the image part of `inspect` — Docker's workflow, over the CRI and crius.v1 APIs.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};
use tokio_stream::StreamExt;

use super::{rpc_error, table, CliError};
use crate::cri::api::{ImageSpec, ImageStatusRequest, ListImagesRequest, RemoveImageRequest};
use crate::cri::client::CriClient;
use crate::cri::crius_api::{LayerProgress, LayerState, LoadChunk, PullRequest, SaveRequest};

const CHUNK_BYTES: usize = 256 * 1024;

/// An `ImageSpec` naming `image`, as image RPCs take it.
pub(super) fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_string(),
        ..ImageSpec::default()
    })
}

/// Pulls `image`, drawing progress on stderr (redrawn in place on a terminal, one line
/// per finished layer otherwise). Returns the summary line.
pub async fn pull(
    address: &str,
    image: &str,
    username: &str,
    password: &str,
) -> Result<String, CliError> {
    let mut client = CriClient::connect(address).await?;
    let started = Instant::now();
    let mut stream = client
        .crius_images
        .pull(PullRequest {
            image: image.to_string(),
            username: username.to_string(),
            password: password.to_string(),
        })
        .await
        .map_err(rpc_error("Pull"))?
        .into_inner();
    let mut screen = ProgressScreen::new(std::io::stderr().is_terminal());
    let mut last = None;
    while let Some(update) = stream.next().await {
        let update = update.map_err(rpc_error("Pull"))?;
        screen.draw(&update.layers, started);
        last = Some(update);
    }
    let last = last
        .filter(|update| !update.image_id.is_empty())
        .ok_or_else(|| CliError::Protocol {
            rpc: "Pull",
            detail: "the stream ended without an image id".to_string(),
        })?;
    screen.finish(&last.layers);
    let bytes: u64 = last
        .layers
        .iter()
        .filter(|l| l.state() != LayerState::Exists)
        .map(|l| l.size)
        .sum();
    let seconds = started.elapsed().as_secs_f64();
    Ok(format!(
        "{image}: pulled {} ({} downloaded in {seconds:.1}s, {}/s)\n",
        last.image_id,
        human_size(bytes),
        human_size((bytes as f64 / seconds.max(0.001)) as u64)
    ))
}

/// Draws layer progress: in place on a terminal, else a line per layer as it finishes.
struct ProgressScreen {
    terminal: bool,
    drawn_lines: usize,
    reported: Vec<String>,
}

impl ProgressScreen {
    fn new(terminal: bool) -> ProgressScreen {
        ProgressScreen {
            terminal,
            drawn_lines: 0,
            reported: Vec::new(),
        }
    }

    fn draw(&mut self, layers: &[LayerProgress], started: Instant) {
        let mut err = std::io::stderr().lock();
        if !self.terminal {
            return self.report_finished(layers);
        }
        if self.drawn_lines > 0 {
            let _ = write!(err, "\x1b[{}A", self.drawn_lines);
        }
        let downloaded: u64 = layers.iter().map(|layer| layer.downloaded).sum();
        for layer in layers {
            let _ = writeln!(err, "\x1b[2K{}", layer_line(layer));
        }
        let speed = downloaded as f64 / started.elapsed().as_secs_f64().max(0.001);
        let _ = writeln!(
            err,
            "\x1b[2K{} at {}/s",
            human_size(downloaded),
            human_size(speed as u64)
        );
        self.drawn_lines = layers.len() + 1;
    }

    fn finish(&mut self, layers: &[LayerProgress]) {
        if !self.terminal {
            self.report_finished(layers);
        }
    }

    fn report_finished(&mut self, layers: &[LayerProgress]) {
        let mut err = std::io::stderr().lock();
        for layer in layers {
            let finished = matches!(layer.state(), LayerState::Done | LayerState::Exists);
            if finished && !self.reported.contains(&layer.digest) {
                let _ = writeln!(err, "{}", layer_line(layer));
                self.reported.push(layer.digest.clone());
            }
        }
    }
}

fn layer_line(layer: &LayerProgress) -> String {
    const WIDTH: usize = 30;
    let short = short_digest(&layer.digest);
    match layer.state() {
        LayerState::Exists => format!("{short}: Already exists"),
        LayerState::Done => format!("{short}: Pull complete {:>10}", human_size(layer.size)),
        LayerState::Waiting => format!("{short}: Waiting"),
        LayerState::Unpacking => format!("{short}: Extracting {:>10}", human_size(layer.size)),
        LayerState::Downloading => {
            let filled =
                (layer.downloaded as f64 / layer.size.max(1) as f64 * WIDTH as f64) as usize;
            let filled = filled.min(WIDTH);
            format!(
                "{short}: Downloading [{}>{}] {}/{}",
                "=".repeat(filled),
                " ".repeat(WIDTH - filled),
                human_size(layer.downloaded),
                human_size(layer.size)
            )
        }
    }
}

/// `crius images`: a table (IMAGE, TAG, [DIGEST], IMAGE ID, SIZE), or ids only.
pub async fn images(address: &str, quiet: bool, digests: bool) -> Result<String, CliError> {
    let mut client = CriClient::connect(address).await?;
    let mut images = client
        .image
        .list_images(ListImagesRequest::default())
        .await
        .map_err(rpc_error("ListImages"))?
        .into_inner()
        .images;
    images.sort_by(|a, b| a.repo_tags.cmp(&b.repo_tags).then(a.id.cmp(&b.id)));
    if quiet {
        let mut ids: Vec<&str> = images.iter().map(|image| short_digest(&image.id)).collect();
        ids.dedup();
        return Ok(ids.iter().map(|id| format!("{id}\n")).collect());
    }
    let mut rows = vec![{
        let mut header = vec!["IMAGE", "TAG"];
        if digests {
            header.push("DIGEST");
        }
        header.extend(["IMAGE ID", "SIZE"]);
        header.into_iter().map(str::to_string).collect::<Vec<_>>()
    }];
    for image in &images {
        let digest = image
            .repo_digests
            .first()
            .and_then(|name| name.rsplit_once('@'))
            .map(|(_, digest)| digest.to_string())
            .unwrap_or_else(|| "<none>".to_string());
        let mut names: Vec<(String, String)> = image
            .repo_tags
            .iter()
            .map(|name| match name.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
                _ => (name.clone(), "<none>".to_string()),
            })
            .collect();
        if names.is_empty() {
            let repo = image
                .repo_digests
                .first()
                .and_then(|name| name.split_once('@'))
                .map(|(repo, _)| repo.to_string())
                .unwrap_or_else(|| "<none>".to_string());
            names.push((repo, "<none>".to_string()));
        }
        for (repo, tag) in names {
            let mut row = vec![repo, tag];
            if digests {
                row.push(digest.clone());
            }
            row.extend([short_digest(&image.id).to_string(), human_size(image.size)]);
            rows.push(row);
        }
    }
    Ok(table(&rows))
}

/// `crius rmi`: removes each image with all of its names. An image that is not there is
/// an error, as in Docker, after the others are removed.
pub async fn rmi(address: &str, keys: &[String]) -> Result<String, CliError> {
    let mut client = CriClient::connect(address).await?;
    let mut output = String::new();
    let mut missing = Vec::new();
    for key in keys {
        let status = client
            .image
            .image_status(ImageStatusRequest {
                image: spec(key),
                verbose: false,
            })
            .await
            .map_err(rpc_error("ImageStatus"))?
            .into_inner();
        let Some(image) = status.image else {
            missing.push(key.clone());
            continue;
        };
        client
            .image
            .remove_image(RemoveImageRequest {
                image: spec(&image.id),
            })
            .await
            .map_err(rpc_error("RemoveImage"))?;
        for name in &image.repo_tags {
            output.push_str(&format!("Untagged: {name}\n"));
        }
        output.push_str(&format!("Deleted: {}\n", image.id));
    }
    if missing.is_empty() {
        Ok(output)
    } else {
        print!("{output}");
        Err(CliError::NoSuch {
            kind: "image",
            key: missing.join(", "),
        })
    }
}

/// The image part of `crius inspect`: the image as kubelet sees it, plus its config and
/// layers.
pub(super) async fn inspect_image(client: &mut CriClient, key: &str) -> Result<Value, CliError> {
    let status = client
        .image
        .image_status(ImageStatusRequest {
            image: spec(key),
            verbose: true,
        })
        .await
        .map_err(rpc_error("ImageStatus"))?
        .into_inner();
    let image = status.image.ok_or_else(|| CliError::NoSuch {
        kind: "image",
        key: key.to_string(),
    })?;
    let details = status
        .info
        .get("info")
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .unwrap_or(Value::Null);
    Ok(json!({
        "Id": image.id,
        "RepoTags": image.repo_tags,
        "RepoDigests": image.repo_digests,
        "Size": image.size,
        "Uid": image.uid.map(|uid| uid.value),
        "Username": image.username,
        "Pinned": image.pinned,
        "ManifestDigest": details["manifestDigest"],
        "Layers": details["layers"],
        "Config": details["imageSpec"],
    }))
}

/// `crius load [-i FILE]`: streams an archive (a file, or standard input) to the daemon.
pub async fn load(address: &str, input: Option<&Path>) -> Result<String, CliError> {
    let mut reader: Box<dyn Read + Send> = match input {
        Some(path) => Box::new(std::fs::File::open(path).map_err(|err| CliError::File {
            path: path.display().to_string(),
            source: err,
        })?),
        None if std::io::stdin().is_terminal() => {
            return Err(CliError::Usage(
                "no input: give -i FILE or pipe an archive into crius load".into(),
            ))
        }
        None => Box::new(std::io::stdin()),
    };
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let name = input
        .map(|path| path.display().to_string())
        .unwrap_or_else(|| "stdin".into());
    let reading = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        loop {
            let mut data = vec![0u8; CHUNK_BYTES];
            let read = reader.read(&mut data)?;
            if read == 0 {
                return Ok(());
            }
            data.truncate(read);
            if sender.blocking_send(LoadChunk { data }).is_err() {
                return Ok(());
            }
        }
    });
    let mut client = CriClient::connect(address).await?;
    let response = client
        .crius_images
        .load(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .map_err(rpc_error("Load"))?
        .into_inner();
    reading
        .await
        .map_err(|_| CliError::Usage("reading the archive failed".into()))?
        .map_err(|source| CliError::File { path: name, source })?;
    let mut output = String::new();
    for image in response.images {
        if image.names.is_empty() {
            output.push_str(&format!("Loaded image ID: {}\n", image.id));
        }
        for name in image.names {
            output.push_str(&format!("Loaded image: {name}\n"));
        }
    }
    Ok(output)
}

/// `crius save [-o FILE] IMAGE…`: writes the archive to a file (through a temp file, so
/// a failure never leaves half an archive under the name), or to a piped stdout.
pub async fn save(
    address: &str,
    output: Option<&Path>,
    images: &[String],
) -> Result<String, CliError> {
    if output.is_none() && std::io::stdout().is_terminal() {
        return Err(CliError::Usage(
            "refusing to write an archive to a terminal: give -o FILE or redirect".into(),
        ));
    }
    let mut client = CriClient::connect(address).await?;
    let mut stream = client
        .crius_images
        .save(SaveRequest {
            images: images.to_vec(),
        })
        .await
        .map_err(rpc_error("Save"))?
        .into_inner();
    let file_error = |path: &Path, source| CliError::File {
        path: path.display().to_string(),
        source,
    };
    let temp = output.map(|path| path.with_extension("crius-partial"));
    let mut sink: Box<dyn Write> = match &temp {
        Some(path) => Box::new(std::fs::File::create(path).map_err(|err| file_error(path, err))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let written = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(rpc_error("Save"))?;
            sink.write_all(&chunk.data)
                .map_err(|err| file_error(Path::new("output"), err))?;
        }
        sink.flush()
            .map_err(|err| file_error(Path::new("output"), err))
    }
    .await;
    drop(sink);
    match (written, &temp, output) {
        (Ok(()), Some(temp), Some(path)) => {
            std::fs::rename(temp, path).map_err(|err| file_error(path, err))?
        }
        (Err(err), Some(temp), _) => {
            let _ = std::fs::remove_file(temp);
            return Err(err);
        }
        (result, _, _) => result?,
    }
    Ok(String::new())
}

/// The first 12 hex digits of a digest, as Docker shows image ids.
fn short_digest(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    &hex[..hex.len().min(12)]
}

/// Docker's sizes: SI units, four significant digits (`52.43MB`, `1.5kB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let decimals = match value {
        v if v >= 1000.0 => 0,
        v if v >= 100.0 => 1,
        v if v >= 10.0 => 2,
        _ => 3,
    };
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(52_428_800), "52.43MB");
        assert_eq!(human_size(1_500), "1.5kB");
        assert_eq!(human_size(123_456_789), "123.5MB");
        assert_eq!(human_size(4_000_000), "4MB");
    }

    #[test]
    fn short_ids() {
        assert_eq!(short_digest("sha256:0123456789abcdef"), "0123456789ab");
    }
}
