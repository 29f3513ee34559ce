//! How the API commands print for people: aligned tables and `label value`
//! lines. Scripts use `--json`, which prints the API's own response.

use anyhow::{Result, bail};
use serde_json::Value;
use std::io::{BufRead, IsTerminal, Write};

/// A table with a header row, each column as wide as its widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    std::iter::once(&header)
        .chain(rows)
        .map(|row| line(&widths, row))
        .collect::<Vec<_>>()
        .join("\n")
}

fn line(widths: &[usize], cells: &[String]) -> String {
    let mut out = String::new();
    for (i, (width, cell)) in widths.iter().zip(cells).enumerate() {
        if i + 1 == cells.len() {
            out.push_str(cell);
        } else {
            let pad = width - cell.chars().count();
            out.push_str(cell);
            out.push_str(&" ".repeat(pad + 2));
        }
    }
    out
}

/// `label  value` lines, the labels aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(label, value)| format!("  {label:<width$}  {value}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A string member, or `absent` when it is null or missing.
pub fn text_or(value: &Value, absent: &str) -> String {
    value.as_str().unwrap_or(absent).to_owned()
}

/// A list of strings joined by commas, or `absent` when empty.
pub fn list_or(value: &Value, absent: &str) -> String {
    let items: Vec<&str> = value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if items.is_empty() {
        absent.to_owned()
    } else {
        items.join(", ")
    }
}

/// Prints `json` pretty when `--json` was asked for and says so; otherwise
/// the caller prints its summary.
pub fn json_if_asked(json: bool, value: &Value) -> bool {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        );
    }
    json
}

/// A secret, once, with the warning that it will not be shown again.
pub fn secret(label: &str, secret: &Value) {
    println!();
    println!("{label} (shown once — store it now; Keyward keeps only its hash):");
    println!();
    println!("    {}", text_or(secret, "?"));
}

/// Deleting cannot be undone, so the user types the object's name, as in
/// the console.
pub fn ask_for_name(what: &str, name: &str) -> Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "deleting needs --confirm-name with the {what}'s name ({name:?}) when not run in a terminal"
        );
    }
    eprint!("This deletes the {what} {name:?} and cannot be undone. Type its name to confirm: ");
    std::io::stderr().flush().ok();
    let mut typed = String::new();
    std::io::stdin().lock().read_line(&mut typed)?;
    Ok(typed.trim_end_matches(['\r', '\n']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_by_characters() {
        let rows = vec![
            vec!["key_1".to_owned(), "Café".to_owned(), "active".to_owned()],
            vec!["key_22".to_owned(), "B".to_owned(), "revoked".to_owned()],
        ];
        assert_eq!(
            table(&["ID", "NAME", "STATUS"], &rows),
            "ID      NAME  STATUS\nkey_1   Café  active\nkey_22  B     revoked"
        );
    }

    #[test]
    fn absent_values_read_as_words() {
        assert_eq!(list_or(&serde_json::json!([]), "none"), "none");
        assert_eq!(
            list_or(&serde_json::json!(["a:b", "c:d"]), "none"),
            "a:b, c:d"
        );
        assert_eq!(text_or(&Value::Null, "never"), "never");
    }
}
