//! What a reload changes: a one-line summary of the sections and named items that differ
//! between two configurations, for the "configuration reloaded" log line.

use std::fmt::Debug;

use super::Config;

impl Config {
    /// `routes: +orders -legacy ~accounts; issuers: ~https://as.example.com; token_cache`,
    /// or `nothing` when the two are the same. Items are named by their `name` (routes) or
    /// `issuer`; `+` added, `-` removed, `~` changed.
    pub fn changes_from(&self, previous: &Config) -> String {
        let mut parts = Vec::new();
        let named = |label: &str, old: Vec<(&str, String)>, new: Vec<(&str, String)>| {
            let mut marks = Vec::new();
            for (name, value) in &new {
                match old.iter().find(|(n, _)| n == name) {
                    None => marks.push(format!("+{name}")),
                    Some((_, before)) if before != value => marks.push(format!("~{name}")),
                    Some(_) => {}
                }
            }
            for (name, _) in &old {
                if !new.iter().any(|(n, _)| n == name) {
                    marks.push(format!("-{name}"));
                }
            }
            let reordered = marks.is_empty() && old.iter().map(|(n, _)| n).ne(new.iter().map(|(n, _)| n));
            match (marks.is_empty(), reordered) {
                (false, _) => Some(format!("{label}: {}", marks.join(" "))),
                (true, true) => Some(format!("{label}: reordered")),
                (true, false) => None,
            }
        };
        parts.extend(named("routes", routes(previous), routes(self)));
        parts.extend(named("issuers", issuers(previous), issuers(self)));
        for (label, changed) in [
            ("listen", debug(&previous.listen) != debug(&self.listen)),
            ("admin", previous.admin != self.admin),
            ("limits", debug(&previous.limits) != debug(&self.limits)),
            ("token_cache", debug(&previous.token_cache) != debug(&self.token_cache)),
            ("dpop", debug(&previous.dpop) != debug(&self.dpop)),
            ("login", debug(&previous.logins) != debug(&self.logins)),
            ("resource_metadata", previous.resource_metadata != self.resource_metadata),
        ] {
            if changed {
                parts.push(label.to_string());
            }
        }
        if parts.is_empty() { "nothing".to_string() } else { parts.join("; ") }
    }
}

fn routes(c: &Config) -> Vec<(&str, String)> {
    c.routes.iter().map(|r| (r.name.as_str(), debug(r))).collect()
}

fn issuers(c: &Config) -> Vec<(&str, String)> {
    c.issuers.iter().map(|i| (i.issuer.as_str(), debug(i))).collect()
}

/// Settings compared through their `Debug` text: every field, secrets redacted alike.
fn debug(value: &impl Debug) -> String {
    format!("{value:?}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use super::Config;

    const BASE: &str = "
listen:
  address: 127.0.0.1:8443
  public_url: https://gateway.test
  tls: { cert: c.pem, key: k.pem }
issuers:
  - issuer: https://as.test
    jwks_uri: https://as.test/jwks
    audiences: [a]
routes:
  - name: accounts
    match: { path_prefix: /accounts }
    upstream: http://127.0.0.1:9
    binding: mtls
  - name: legacy
    match: { path_prefix: /legacy }
    upstream: http://127.0.0.1:9
    auth: none
";

    fn config(text: &str) -> Config {
        Config::from_yaml(text, "t.yaml", Path::new("/")).unwrap()
    }

    #[test]
    fn nothing_changed_says_so() {
        assert_eq!(config(BASE).changes_from(&config(BASE)), "nothing");
    }

    #[test]
    fn routes_and_issuers_are_named_and_sections_listed() {
        let changed = BASE
            .replace("    binding: mtls\n", "    binding: dpop\n")
            .replace(
                "  - name: legacy\n    match: { path_prefix: /legacy }",
                "  - name: orders\n    match: { path_prefix: /orders }",
            )
            .replace("audiences: [a]", "audiences: [a, b]")
            + "token_cache: { max_entries: 10 }\n";
        assert_eq!(
            config(&changed).changes_from(&config(BASE)),
            "routes: ~accounts +orders -legacy; issuers: ~https://as.test; token_cache"
        );
    }
}
