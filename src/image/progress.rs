//! Pull progress, per layer, as `crius pull` draws it. The pull pipeline updates a watch
//! channel; whoever wants progress subscribes, and a pull nobody watches pays only for
//! a few in-memory updates.

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerState {
    Waiting,
    Downloading,
    Unpacking,
    Done,
    /// The layer was already on the node.
    Exists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerProgress {
    pub digest: String,
    /// Compressed size in bytes.
    pub size: u64,
    pub downloaded: u64,
    pub state: LayerState,
}

/// The sending side of a pull's progress: one entry per layer, in manifest order.
pub type Progress = watch::Sender<Vec<LayerProgress>>;

/// A progress channel for a pull whose progress nobody watches.
pub fn unwatched() -> Progress {
    watch::Sender::new(Vec::new())
}

/// Applies `update` to the entry of layer `digest`, if the pull lists it.
pub(super) fn update_layer(
    progress: &Progress,
    digest: &str,
    update: impl FnOnce(&mut LayerProgress),
) {
    progress.send_if_modified(|layers| {
        match layers.iter_mut().find(|layer| layer.digest == digest) {
            Some(layer) => {
                update(layer);
                true
            }
            None => false,
        }
    });
}
