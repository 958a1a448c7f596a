//! Processes the tests start: this workspace's binaries and the tools `setup.sh` builds, each
//! killed when its handle drops, with its output in a log file for failure messages.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};

/// A binary of this workspace, built next to the running test (`target/<profile>`).
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/debug/deps/<test>-<hash> -> target/debug/<name>; an example runs from
    // target/debug/examples/<name>, which has the same grandparent.
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary directory")?;
    let path = dir.join(name);
    ensure!(
        path.is_file(),
        "{} not found: build it first with \
         `cargo build -p iter8-controller -p iter8-analytics -p iter8-sample-app --bins` \
         (integration-tests/run.sh does)",
        path.display()
    );
    Ok(path)
}

/// A child process killed on drop, with its output in a log file.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `command` with no stdin and its stdout and stderr in `<dir>/<name>.log`.
    pub fn spawn(name: &str, mut command: Command, dir: &Path) -> Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// What it logged so far, headed by its name.
    pub fn log(&self) -> String {
        format!(
            "--- {} log:\n{}",
            self.name,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then waits up to 10 s for a clean exit.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("{} did not exit within 10 s of SIGTERM", self.name)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
