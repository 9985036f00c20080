//! Undo steps for a request that acquires several resources: each acquired resource
//! registers how to release it; on failure the steps run in reverse, and on success the
//! request commits and nothing runs (containerd's and CRI-O's rollback discipline).

/// One release step: what it releases, and how.
type Step = (&'static str, Box<dyn FnOnce() -> Result<(), String> + Send>);

/// Release steps, run in reverse order when dropped uncommitted.
#[derive(Default)]
pub(super) struct Rollback {
    steps: Vec<Step>,
}

impl Rollback {
    /// Registers how to release what was just acquired; `what` names it in logs.
    pub(super) fn push(
        &mut self,
        what: &'static str,
        step: impl FnOnce() -> Result<(), String> + Send + 'static,
    ) {
        self.steps.push((what, Box::new(step)));
    }

    /// The request succeeded: keep everything.
    pub(super) fn commit(mut self) {
        self.steps.clear();
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        while let Some((what, step)) = self.steps.pop() {
            if let Err(err) = step() {
                tracing::warn!("rollback: cannot release {what}: {err}");
            }
        }
    }
}
