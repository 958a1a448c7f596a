//! Writes that lost a race with another writer (409 Conflict) are tried again after a short,
//! growing wait, instead of failing the whole reconcile and redoing its work.

use std::time::Duration;

/// Attempts after the first one.
const RETRIES: u32 = 4;

/// The wait before the first retry; each later wait doubles it (50, 100, 200, 400 ms).
const FIRST_WAIT: Duration = Duration::from_millis(50);

/// Whether the API server refused a write because the object changed (or is changing) under it.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(ae) if ae.code == 409)
}

/// The waits between the attempts at one write.
#[derive(Debug)]
pub struct Backoff {
    wait: Duration,
    left: u32,
}

impl Backoff {
    /// A fresh schedule: [`RETRIES`] retries, the first after [`FIRST_WAIT`].
    pub fn new() -> Self {
        Self {
            wait: FIRST_WAIT,
            left: RETRIES,
        }
    }

    /// Waits before the next attempt; `false` (at once) when no attempt is left.
    pub async fn wait(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        tokio::time::sleep(self.wait).await;
        self.wait *= 2;
        true
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn four_retries_waiting_50_100_200_400_ms() {
        let mut backoff = Backoff::new();
        let start = std::time::Instant::now();
        let mut retries = 0;
        while backoff.wait().await {
            retries += 1;
        }
        assert_eq!(retries, 4);
        assert!(start.elapsed() >= Duration::from_millis(750));
    }
}
