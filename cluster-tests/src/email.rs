//! `email-reports` service processes for the pipeline tests: start one against a cluster,
//! kill -9 it, restart it on the same port and data, wait until it answers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::email_reports_binary;

/// One `email-reports serve` process.
pub struct ReportsProcess {
    /// `http://127.0.0.1:port`.
    pub url: String,
    listen: String,
    config: PathBuf,
    data_dir: PathBuf,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl ReportsProcess {
    /// Starts `email-reports serve --config CONFIG` on `port` with its store in `data_dir`.
    pub fn start(config: &Path, port: u16, data_dir: PathBuf, extra_args: &[&str]) -> ReportsProcess {
        let listen = format!("127.0.0.1:{port}");
        let mut process = ReportsProcess {
            url: format!("http://{listen}"),
            listen,
            config: config.to_owned(),
            data_dir,
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            child: None,
        };
        process.restart();
        process
    }

    /// (Re)starts it on the same port and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.url);
        std::fs::create_dir_all(&self.data_dir).expect("data dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join("email-reports.log"))
            .expect("log file");
        let child = Command::new(email_reports_binary())
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .args(["--listen", &self.listen])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env(
                "RUST_LOG",
                std::env::var("EMAIL_REPORTS_LOG").unwrap_or_else(|_| "warn,email_reports=info".into()),
            )
            .spawn()
            .expect("starting email-reports");
        self.child = Some(child);
    }

    /// Waits until `/health` answers (the topics exist and the listener is up).
    pub async fn wait_healthy(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let health = format!("{}/health", self.url);
        loop {
            if let Ok(response) = reqwest::get(&health).await {
                if response.status().is_success() {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|child| child.try_wait().expect("polling")) {
                panic!(
                    "email-reports exited with {status}; log: {}",
                    std::fs::read_to_string(self.data_dir.join("email-reports.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "{health} not answering after {timeout:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reaping email-reports");
        }
    }

    /// SIGTERM and wait: a clean stop (leaves the group, flushes the store).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("running kill");
            assert!(status.success());
            let status = child.wait().expect("waiting for email-reports");
            assert!(
                status.success(),
                "email-reports exited with {status}; log:\n{}",
                self.log()
            );
        }
    }

    /// The log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("email-reports.log")).unwrap_or_default()
    }
}

impl Drop for ReportsProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
