//! The gateway's routes file and request paths: any input is an answer
//! or an error, never a panic.
#![no_main]

use keyward_core::gateway::{RouteTable, check_request_path};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first line is a request path; the rest a routes file.
    let (path, file) = text.split_once('\n').unwrap_or((text, ""));
    let _ = check_request_path(path);
    if let Ok(table) = RouteTable::from_toml(file) {
        let _ = table.find("GET", path);
    }
});
