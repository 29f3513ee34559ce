//! `keyward scan` as a user runs it: over a directory, standard input and a
//! git repository's history, with real keys from `keyward init` — found
//! where they are, reported by hint only, look-alikes ignored, and the exit
//! status a CI job or pre-commit hook can act on.

mod common;

use common::{BIN, initialised, run_with_stdin};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Two real keys of the default format: an API key and a management token.
fn real_keys() -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("keyward.db").display());
    let created = initialised(&db, &["init"], "owner@example.com");
    (
        created["primary_secret"].as_str().unwrap().to_owned(),
        created["management_token"].as_str().unwrap().to_owned(),
    )
}

fn scan(args: &[&str], stdin: &str) -> Output {
    let mut command = Command::new(BIN);
    command
        .arg("scan")
        .args(args)
        .env_remove("KEYWARD_KEY_PREFIX");
    run_with_stdin(command, stdin)
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn hint(key: &str) -> String {
    format!("{}…{}", &key[..key.len() - 38 + 4], &key[key.len() - 4..])
}

fn write(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

fn git(repo: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

#[test]
fn keys_in_files_and_standard_input_are_reported_by_hint_and_place() {
    let (secret, token) = real_keys();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        &root.join("app/.env"),
        &format!("# settings\nKEYWARD_KEY={secret}\n"),
    );
    write(
        &root.join("src/client.rs"),
        &format!("fn main() {{\n    // call the API\n    let token = \"{token}\";\n}}\n"),
    );
    let mut typo = token.clone();
    typo.pop();
    typo.push(if token.ends_with('a') { 'b' } else { 'a' });
    write(
        &root.join("docs/notes.md"),
        &format!("old: {typo}\nglued: x{secret}\n"),
    );
    write(&root.join(".git/config"), &format!("{secret}\n"));

    let output = scan(&[root.to_str().unwrap()], "");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let env = root.join("app/.env").display().to_string();
    assert!(
        lines[0].starts_with(&format!("{env}:2:13: {}", hint(&secret))),
        "{stdout}"
    );
    assert!(
        lines[0].contains("API key (live environment tag)"),
        "{stdout}"
    );
    let client = root.join("src/client.rs").display().to_string();
    assert!(
        lines[1].starts_with(&format!("{client}:3:18: {}", hint(&token))),
        "{stdout}"
    );
    assert!(lines[1].contains("management token"), "{stdout}");
    for key in [&secret, &token] {
        assert!(
            !text(&output).contains(key.as_str()),
            "the scan printed a key"
        );
    }
    assert!(String::from_utf8_lossy(&output.stderr).contains("2 keys found in 3 files"));

    let output = scan(&["--json", root.to_str().unwrap()], "");
    let findings: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(findings[0]["kind"], "api_key");
    assert_eq!(findings[0]["line"], 2);
    assert_eq!(findings[1]["kind"], "management_token");
    assert_eq!(findings[1]["env_tag"], "mgmt");

    let output = scan(&["-"], &format!("curl -H 'X-API-Key: {secret}' …\n"));
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("(standard input):1:21:"));

    let output = scan(&["--key-prefix", "acme", root.to_str().unwrap()], "");
    assert_eq!(
        output.status.code(),
        Some(0),
        "another deployment's prefix matched"
    );

    std::fs::remove_dir_all(root.join("app")).unwrap();
    std::fs::remove_dir_all(root.join("src")).unwrap();
    let output = scan(&[root.to_str().unwrap()], "");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("0 keys found"));
}

#[test]
fn a_key_removed_from_the_files_is_still_found_in_the_history() {
    let (secret, _) = real_keys();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(repo, &["init", "--quiet"]);
    write(&repo.join("deploy.sh"), "#!/bin/sh\nset -e\n");
    git(repo, &["add", "."]);
    git(repo, &["commit", "--quiet", "-m", "deploy script"]);
    write(
        &repo.join("deploy.sh"),
        &format!("#!/bin/sh\nset -e\nexport KEY={secret}\n"),
    );
    git(repo, &["commit", "--quiet", "-am", "oops"]);
    write(&repo.join("deploy.sh"), "#!/bin/sh\nset -e\n");
    git(repo, &["commit", "--quiet", "-am", "remove the key"]);

    let in_files = scan(&[repo.to_str().unwrap()], "");
    assert_eq!(in_files.status.code(), Some(0), "{}", text(&in_files));

    let output = scan(&["--git-history", repo.to_str().unwrap(), "--json"], "");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let findings: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(findings.as_array().unwrap().len(), 1, "{findings}");
    assert_eq!(findings[0]["path"], "deploy.sh");
    assert_eq!(findings[0]["line"], 3);
    assert_eq!(findings[0]["column"], 12);
    let oops = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "HEAD~1"])
        .output()
        .unwrap();
    assert_eq!(
        findings[0]["commit"],
        String::from_utf8_lossy(&oops.stdout).trim()
    );
    assert!(!text(&output).contains(&secret));

    let not_a_repo = tempfile::tempdir().unwrap();
    let output = scan(&["--git-history", not_a_repo.path().to_str().unwrap()], "");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("git log failed"));
}
