//! Running the real `keyward` binary from tests: `init`, and `serve` (or
//! `proxy`) on a free port whose address and log lines the test can read.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_keyward");

/// The binary, pointed at `db`, with no password in its environment.
pub fn keyward(db: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .env("KEYWARD_DATABASE_URL", db)
        .env_remove("KEYWARD_OWNER_PASSWORD");
    command
}

/// `keyward <subcommand> --email … --password-stdin --json`.
pub fn init(db: &str, subcommand: &[&str], email: &str) -> Output {
    let mut command = keyward(db);
    command
        .args(subcommand)
        .args(["--email", email, "--password-stdin", "--json"]);
    run_with_stdin(command, "correct horse battery staple\n")
}

/// [`init`] that must succeed: what it printed, as JSON.
pub fn initialised(db: &str, subcommand: &[&str], email: &str) -> serde_json::Value {
    let output = init(db, subcommand, email);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Runs `command` with `input` on its standard input; collects its output.
pub fn run_with_stdin(mut command: Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A running `keyward serve`, its address, and everything it logs. Killed
/// when dropped unless stopped gracefully first.
pub struct Serving {
    child: Child,
    pub base: String,
    /// What it logged before the line with `base`.
    startup: Vec<String>,
    log: mpsc::Receiver<String>,
}

impl Serving {
    /// Starts on 127.0.0.1:0 with `KEYWARD_LOG=<log_filter>` and waits for
    /// the line that says which port it got.
    pub fn start(db: &str, log_filter: &str) -> Self {
        Self::start_with(db, log_filter, &[])
    }

    /// [`Self::start`] with more `serve` arguments.
    pub fn start_with(db: &str, log_filter: &str, args: &[&str]) -> Self {
        let mut serve = vec!["serve", "--listen", "127.0.0.1:0"];
        serve.extend_from_slice(args);
        Self::start_command(db, log_filter, &serve, "keyward listening on ")
    }

    /// Runs `keyward <args>` and waits for the log line with `marker`
    /// followed by the address that becomes [`Self::base`].
    pub fn start_command(db: &str, log_filter: &str, args: &[&str], marker: &str) -> Self {
        let mut command = keyward(db);
        command.args(args);
        Self::spawn(command, log_filter, marker)
    }

    /// Starts `command` (a `keyward` command line) and waits for the
    /// address logged after `marker`.
    pub fn spawn(mut command: Command, log_filter: &str, marker: &str) -> Self {
        let mut child = command
            .env("KEYWARD_LOG", log_filter)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, log) = mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut seen = Vec::new();
        let base = loop {
            let line = log
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no listening line: {seen:#?}"));
            if let Some(base) = address_after(&line, marker) {
                break base;
            }
            seen.push(line);
        };
        Self {
            child,
            base,
            startup: seen,
            log,
        }
    }

    /// The address a start-up line names right after `marker`.
    pub fn address_logged(&self, marker: &str) -> Option<String> {
        self.startup
            .iter()
            .find_map(|line| address_after(line, marker))
    }

    /// Stops the server with SIGTERM, so it drains and flushes as in
    /// production, and returns its whole log.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "keyward serve exited with {status}");
        self.log.try_iter().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        // A process already stopped makes both calls no-ops.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `http://…` address that follows `marker` in a log line.
fn address_after(line: &str, marker: &str) -> Option<String> {
    let at = line.find(marker)? + marker.len();
    let address = line[at..].split_whitespace().next()?;
    let address = address.trim_end_matches(':');
    address.starts_with("http://").then(|| address.to_owned())
}
