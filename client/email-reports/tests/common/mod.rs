//! What the integration tests share: where the webhook fixtures are and how a sample becomes
//! the HTTP request body a provider would post.
#![allow(dead_code)] // each test binary uses its own subset

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use email_reports::Provider;
use serde_json::Value;

/// `$WEBHOOK_FIXTURES_DIR`, else the copy of the project's `shared/fixtures/webhooks` in
/// `testdata/webhooks` (kept in the repository so a clean clone tests the same payloads).
/// Missing fixtures fail the test: they are the point of it.
pub fn fixtures_dir() -> PathBuf {
    let dir = match std::env::var_os("WEBHOOK_FIXTURES_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/webhooks"),
    };
    assert!(
        dir.join("manifest.json").is_file(),
        "webhook fixtures not found at {} (set WEBHOOK_FIXTURES_DIR)",
        dir.display()
    );
    dir
}

/// What the HTTP request body of a sample is. Samples are mostly bodies as posted; the signed
/// test vectors wrap theirs in `raw_body`; the Mandrill events sample is the decoded value of
/// the form field, so it is form-encoded again here. `None`: a signature vector with no body.
pub fn request_body(provider: Provider, file_text: &str) -> Option<Vec<u8>> {
    let value: Value = serde_json::from_str(file_text).expect("fixture is JSON");
    if let Some(raw) = value.get("raw_body").and_then(Value::as_str) {
        return Some(raw.as_bytes().to_vec());
    }
    if value.get("expected_valid").is_some() {
        return None;
    }
    if provider == Provider::Mandrill {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("mandrill_events", file_text)
            .finish();
        return Some(form.into_bytes());
    }
    Some(file_text.as_bytes().to_vec())
}

/// Every sample that has a request body, with its provider, in manifest order (read once).
pub fn sample_bodies() -> &'static [(String, Provider, Vec<u8>)] {
    static SAMPLES: OnceLock<Vec<(String, Provider, Vec<u8>)>> = OnceLock::new();
    SAMPLES.get_or_init(read_sample_bodies)
}

fn read_sample_bodies() -> Vec<(String, Provider, Vec<u8>)> {
    let dir = fixtures_dir();
    let manifest: Value = serde_json::from_str(&fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    manifest["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|sample| {
            let file = sample["file"].as_str().unwrap().to_owned();
            let provider: Provider = sample["provider"].as_str().unwrap().parse().unwrap();
            let text = fs::read_to_string(dir.join("samples").join(&file)).unwrap();
            request_body(provider, &text).map(|body| (file, provider, body))
        })
        .collect()
}
