//! The documentation users copy from must not rot:
//!
//! - every ```yaml block of `docs/issuers.md` is a whole `gateway.yaml` that parses,
//!   validates and whose files load, and every product section has at least one;
//! - `docs/troubleshooting.md` has an entry for every reason code the gateway can put into
//!   its logs and metrics.
//!
//! Reason codes live in several places (the `reason()` of `Rejection`, `TokenError` and
//! `ProofError`, and string literals handed to `AuthDenial` and `Rejection::BadRequest`
//! throughout `src/`), so they are found twice: through the public API where the types are
//! public, and by scanning the source for the places a code is written. The scan catches
//! codes added later; the API list checks that the scan still finds what it should.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use fapi_gateway::answer::{AuthDenial, Rejection};
use fapi_gateway::auth::dpop::ProofError;
use fapi_gateway::auth::token::TokenError;
use fapi_gateway::config::Config;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The fenced blocks of `markdown` whose info string is `lang`, with the line each starts on.
fn fenced_blocks(markdown: &str, lang: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match current.as_mut() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```")
                    && info.trim() == lang
                {
                    current = Some((i + 1, String::new()));
                }
            }
            Some((_, text)) => {
                if trimmed.starts_with("```") {
                    blocks.push(current.take().unwrap_or_default());
                } else {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
    }
    assert!(current.is_none(), "a ```{lang} block is not closed");
    blocks
}

/// The `## ` sections of `markdown`: (heading, body).
fn sections(markdown: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut in_fence = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        if !in_fence && let Some(heading) = line.strip_prefix("## ") {
            out.push((heading.trim().to_string(), String::new()));
            continue;
        }
        if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

#[test]
fn every_issuer_recipe_is_a_valid_gateway_yaml() {
    let doc = read("docs/issuers.md");
    let blocks = fenced_blocks(&doc, "yaml");
    assert!(blocks.len() >= 5, "docs/issuers.md has {} yaml blocks, expected one per product (5+)", blocks.len());
    let mut failures = Vec::new();
    for (n, (line, text)) in blocks.iter().enumerate() {
        let name = format!("docs/issuers.md#{n}");
        let config = match Config::from_yaml(text, &name, root()) {
            Ok(config) => config,
            Err(e) => {
                failures.push(format!("yaml block #{n} (line {line}): {e}\n{text}"));
                continue;
            }
        };
        if config.issuers.is_empty() || config.routes.is_empty() {
            failures.push(format!("yaml block #{n} (line {line}): a recipe needs issuers and at least one route"));
            continue;
        }
        // The files it names load too (certificates, keys, CAs), as `check-config` checks;
        // nothing is fetched over the network.
        if let Err(e) = fapi_gateway::check_files(&config) {
            failures.push(format!("yaml block #{n} (line {line}): {e}\n{text}"));
        }
    }
    assert!(failures.is_empty(), "invalid recipes in docs/issuers.md:\n\n{}", failures.join("\n\n"));
}

#[test]
fn every_login_recipe_is_a_valid_gateway_yaml_with_a_session_route() {
    let doc = read("docs/login.md");
    let blocks = fenced_blocks(&doc, "yaml");
    let sections = sections(&doc);
    for product in ["Keycloak", "Curity", "oidc-provider"] {
        let recipes: usize = sections
            .iter()
            .filter(|(h, _)| h.contains(product))
            .map(|(_, body)| fenced_blocks(body, "yaml").len())
            .sum();
        assert!(recipes >= 1, "docs/login.md has no ```yaml recipe under a `## …{product}…` section");
    }
    let mut failures = Vec::new();
    for (n, (line, text)) in blocks.iter().enumerate() {
        let config = match Config::from_yaml(text, &format!("docs/login.md#{n}"), root()) {
            Ok(config) => config,
            Err(e) => {
                failures.push(format!("yaml block #{n} (line {line}): {e}\n{text}"));
                continue;
            }
        };
        let session_route =
            config.routes.iter().any(|r| matches!(r.policy, fapi_gateway::config::RoutePolicy::Session { .. }));
        if config.logins.is_empty() || !session_route {
            failures.push(format!(
                "yaml block #{n} (line {line}): a login recipe needs `login:` and an `auth: session` route"
            ));
            continue;
        }
        if let Err(e) = fapi_gateway::check_files(&config) {
            failures.push(format!("yaml block #{n} (line {line}): {e}\n{text}"));
        }
    }
    assert!(failures.is_empty(), "invalid recipes in docs/login.md:\n\n{}", failures.join("\n\n"));
}

#[test]
fn every_deployment_example_is_a_valid_gateway_yaml() {
    // deploy/examples/*/gateway.yaml name files of the target machine (/etc/…): they are
    // parsed and validated, not opened.
    let dir = root().join("deploy/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path().join("gateway.yaml");
        if !path.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(e) = Config::from_yaml(&text, &path.display().to_string(), path.parent().unwrap()) {
            panic!("{e}");
        }
        assert!(
            read(&format!(
                "deploy/examples/{}/README.md",
                path.parent().unwrap().file_name().unwrap().to_string_lossy()
            ))
            .len()
                > 200
        );
        checked += 1;
    }
    assert!(checked >= 2, "deploy/examples has {checked} examples");
}

#[test]
fn every_product_has_a_recipe() {
    let doc = read("docs/issuers.md");
    let sections = sections(&doc);
    for product in ["Keycloak", "Auth0", "Okta", "Curity", "oidc-provider"] {
        let matching: Vec<&(String, String)> = sections.iter().filter(|(h, _)| h.contains(product)).collect();
        assert!(!matching.is_empty(), "docs/issuers.md has no `## …{product}…` section");
        let blocks: usize = matching.iter().map(|(_, body)| fenced_blocks(body, "yaml").len()).sum();
        assert!(blocks >= 1, "the {product} section of docs/issuers.md has no ```yaml recipe");
    }
}

/// Whether `s` looks like a reason code: lower-case snake case.
fn is_code(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The string literal starting at `text[0]` (a `"`), without escapes (reason codes have none).
fn literal_at(text: &str) -> Option<&str> {
    let rest = text.strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(&rest[..end])
}

/// Skips whitespace.
fn skip_ws(text: &str) -> &str {
    text.trim_start()
}

/// The reason codes written in one source file (test modules excluded): the places that
/// name a code are `reason: "…"` fields, `=> "…"` arms inside `fn reason(`, the second
/// argument of `AuthDenial::new(` / `AuthDenial::dpop(`, and `src/auth/binding.rs`'s
/// `bearer("…"` / `dpop("…"` helpers and `Err(("…"` certificate results.
fn codes_in_source(path: &Path, source: &str, out: &mut BTreeSet<String>) {
    let code = source.split("#[cfg(test)]").next().unwrap_or(source);
    let mut add = |s: Option<&str>| {
        if let Some(s) = s.filter(|s| is_code(s)) {
            out.insert(s.to_string());
        }
    };
    // `reason: "…"`
    for (i, _) in code.match_indices("reason:") {
        add(literal_at(skip_ws(&code[i + "reason:".len()..])));
    }
    // `=> "…"` inside every `fn reason(` body (up to the next `fn `).
    for (i, _) in code.match_indices("fn reason(") {
        let body = &code[i..];
        let end = body[3..].find("fn ").map_or(body.len(), |e| e + 3);
        for (j, _) in body[..end].match_indices("=>") {
            add(literal_at(skip_ws(&body[j + 2..end])));
        }
    }
    // `AuthDenial::new(AuthErrorCode::X, "…"` and `AuthDenial::dpop(…, "…"`; the login
    // mode's `failure(StatusCode::X, "…"` and `refusal_body(StatusCode::X, "…"`.
    for call in ["AuthDenial::new(", "AuthDenial::dpop(", "failure(", "refusal_body("] {
        for (i, _) in code.match_indices(call) {
            let args = &code[i + call.len()..];
            let Some(comma) = args.find(',') else { continue };
            add(literal_at(skip_ws(&args[comma + 1..])));
        }
    }
    if path.ends_with("auth/binding.rs") {
        for helper in ["bearer(", "dpop(", "Err(("] {
            for (i, _) in code.match_indices(helper) {
                let preceded_by_ident =
                    code[..i].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
                if !preceded_by_ident {
                    add(literal_at(skip_ws(&code[i + helper.len()..])));
                }
            }
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs") {
            out.push(path);
        }
    }
}

/// Every reason code found in `src/`.
fn scanned_codes() -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut codes = BTreeSet::new();
    for path in files {
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        codes_in_source(&path, &source, &mut codes);
    }
    codes
}

/// The reason codes reachable through the public API.
fn api_codes() -> BTreeSet<String> {
    let rejections = [
        Rejection::NotFound,
        Rejection::MethodNotAllowed { allow: "GET".into() },
        Rejection::Misdirected,
        Rejection::PayloadTooLarge,
        Rejection::KeysUnavailable,
        Rejection::ReplayStoreUnavailable,
        Rejection::UpstreamUnavailable,
        Rejection::UpstreamTimeout,
        Rejection::Auth(AuthDenial::missing_credentials()),
    ];
    let token_errors = [
        TokenError::TooLarge,
        TokenError::Malformed,
        TokenError::AlgorithmNotAllowed { alg: "RS256".into(), allowed: None },
        TokenError::CriticalHeader,
        TokenError::WrongType { seen: None, accepted: "at+jwt".into() },
        TokenError::UnknownIssuer,
        TokenError::UnknownKey,
        TokenError::KeysUnavailable,
        TokenError::BadSignature,
        TokenError::MissingExpiry,
        TokenError::MissingClaim("sub".into()),
        TokenError::Expired,
        TokenError::NotYetValid,
        TokenError::IssuedInFuture,
        TokenError::WrongAudience,
        TokenError::BadConfirmation,
    ];
    let proof_errors = [
        ProofError::TooLarge,
        ProofError::Malformed,
        ProofError::WrongType,
        ProofError::AlgorithmNotAllowed,
        ProofError::BadKey,
        ProofError::PrivateKey,
        ProofError::KeyAlgorithmMismatch,
        ProofError::BadSignature,
        ProofError::BadJti,
        ProofError::HtmMismatch,
        ProofError::HtuMismatch { got: "".into(), expected: "".into() },
        ProofError::MissingIat,
        ProofError::TooOld,
        ProofError::IssuedInFuture,
        ProofError::AthMismatch,
        ProofError::KeyBindingMismatch,
    ];
    rejections
        .iter()
        .map(Rejection::reason)
        .chain(token_errors.iter().map(TokenError::reason))
        .chain(proof_errors.iter().map(ProofError::reason))
        .map(str::to_string)
        .collect()
}

#[test]
fn troubleshooting_covers_every_reason_code() {
    let scanned = scanned_codes();
    // The scan must still see the codes that are written in these different ways; if
    // this fails, the source changed shape and `codes_in_source` needs to follow.
    for sample in [
        "no_route",             // Rejection::reason
        "token_expired",        // TokenError::reason
        "dpop_htu_mismatch",    // ProofError::reason and AuthDenial::dpop
        "no_credentials",       // AuthDenial::new
        "unsupported_scheme",   // reason: "…" in a struct literal
        "ambiguous_path",       // Rejection::BadRequest
        "client_cert_mismatch", // binding.rs certificate result
        "token_not_bound",      // binding.rs helper
        "dpop_nonce_after_restart",
        "insufficient_scope",
    ] {
        assert!(scanned.contains(sample), "the source scan no longer finds `{sample}`; found {scanned:?}");
    }
    let api = api_codes();
    let missed: Vec<&String> = api.difference(&scanned).collect();
    assert!(missed.is_empty(), "the source scan misses reason codes the API has: {missed:?}");

    let doc = read("docs/troubleshooting.md");
    let mut all = scanned;
    all.extend(api);
    all.insert("ok".to_string()); // the reason of a request the upstream answered
    let undocumented: Vec<&String> = all.iter().filter(|code| !doc.contains(&format!("`{code}`"))).collect();
    assert!(
        undocumented.is_empty(),
        "docs/troubleshooting.md does not mention these reason codes (as `code`): {undocumented:?}"
    );
    // Every refusal has an entry of its own (a heading), not just a mention.
    let undocumented_entries: Vec<&String> = all
        .iter()
        // `replayed` and `key_over_quota` are labels of the replay-refusal counter too,
        // documented under the request reasons `dpop_replayed` and `dpop_key_over_quota`.
        .filter(|code| !["ok", "replayed", "key_over_quota"].contains(&code.as_str()))
        .filter(|code| !doc.contains(&format!("### `{code}`")))
        .collect();
    assert!(
        undocumented_entries.is_empty(),
        "docs/troubleshooting.md has no `### `code`` entry for: {undocumented_entries:?}"
    );
    // And no entry documents a code the gateway does not have (a typo, or a removed code).
    let unknown: Vec<&str> = doc
        .lines()
        .filter_map(|line| line.strip_prefix("### `")?.strip_suffix('`'))
        .filter(|code| !all.contains(*code))
        .collect();
    assert!(unknown.is_empty(), "docs/troubleshooting.md has entries for unknown reason codes: {unknown:?}");
}
