//! The YAML parser's errors in the user's words, and as many of them as a file has.
//!
//! serde stops at the first error. To report the others too, a file that fails is parsed
//! again piece by piece — each top-level section, and each item of a top-level list such as
//! `routes:` on its own, with every other line blanked so that line numbers stay true —
//! and each piece's first error is kept. Messages are rewritten from the parser's terms
//! ("expected sequence start", "invalid u64") into what to write instead.

use serde_saphyr::Error as YamlError;

use super::ConfigError;
use super::raw::{RawConfig, RawPieces};
use super::yaml_path;

/// Parses `text`, or returns every error found in it, in file order.
pub(super) fn parse(text: &str, file: &str) -> Result<RawConfig, Vec<ConfigError>> {
    if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
        return Err(vec![ConfigError::Syntax {
            file: file.to_string(),
            line: 1,
            column: 1,
            message: "the file is empty: a configuration needs at least `listen:` and `routes:` (start from the \
                      bundled gateway.yaml, where every key is explained)"
                .to_string(),
        }]);
    }
    let first = match serde_saphyr::from_str::<RawConfig>(text) {
        Ok(raw) => return Ok(raw),
        Err(e) => located(text, file, &e),
    };
    let mut errors = vec![first];
    for piece in pieces(text) {
        for error in piece_errors(text, file, piece) {
            if !errors.iter().any(|seen| position(seen) == position(&error)) {
                errors.push(error);
            }
        }
    }
    errors.sort_by_key(position);
    Err(errors)
}

/// At most this many errors per piece.
const MAX_ERRORS_PER_PIECE: usize = 10;

/// The errors of one piece: after each, the line at fault is blanked and the piece parsed
/// again. A key missing only because its line was blanked is not reported.
fn piece_errors(text: &str, file: &str, piece: String) -> Vec<ConfigError> {
    let mut lines: Vec<String> = piece.lines().map(str::to_string).collect();
    let mut errors = Vec::new();
    for attempt in 0..MAX_ERRORS_PER_PIECE {
        let joined = lines.join("\n");
        let Err(e) = serde_saphyr::from_str::<RawPieces>(&joined) else { break };
        let missing = parser_message(&e.to_string()).starts_with("missing field");
        if !(attempt > 0 && missing) {
            errors.push(located(text, file, &e));
        }
        let line = e.location().and_then(|l| usize::try_from(l.line()).ok()).unwrap_or(0);
        // Stop at a top-level line (blanking it would drop the whole piece) and at a list
        // item's first line (the lines under it would no longer belong to an item).
        match lines.get_mut(line.wrapping_sub(1)) {
            Some(at_fault) if at_fault.starts_with(' ') && !at_fault.trim_start().starts_with('-') => {
                at_fault.clear();
            }
            _ => break,
        }
    }
    errors
}

fn position(error: &ConfigError) -> (u64, u64) {
    match error {
        ConfigError::Syntax { line, column, .. } | ConfigError::Invalid { line, column, .. } => (*line, *column),
        _ => (0, 0),
    }
}

/// The error with its position, the key path it concerns and a message in plain words.
fn located(text: &str, file: &str, error: &YamlError) -> ConfigError {
    let message = humanise(&parser_message(&error.to_string()));
    match error.location() {
        Some(loc) if loc.line() > 0 => ConfigError::Syntax {
            file: file.to_string(),
            line: loc.line(),
            column: loc.column(),
            message: match yaml_path::key_path_at(text, usize::try_from(loc.line()).unwrap_or(0)) {
                Some(key) => format!("{key}: {message}"),
                None => message,
            },
        },
        _ => ConfigError::SyntaxNoLocation { file: file.to_string(), message },
    }
}

/// serde-saphyr renders a source snippet under its message and repeats the location in
/// front of it (and sometimes after it); keep the message alone.
fn parser_message(rendered: &str) -> String {
    let first = rendered.lines().next().unwrap_or(rendered).trim();
    let without_error = first.strip_prefix("error: ").unwrap_or(first);
    let message = match without_error.strip_prefix("line ").and_then(|rest| rest.split_once(": ")) {
        Some((position, rest)) if position.contains(" column ") => rest,
        _ => without_error,
    };
    match message.rsplit_once(" at line ") {
        Some((message, position)) if position.contains(", column ") => message.to_string(),
        _ => message.to_string(),
    }
}

/// The parser's phrasing turned into what the user should write instead.
fn humanise(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((name, expected)) = rest.split_once('`')
    {
        let choices = choices(expected);
        return match closest(name, &choices) {
            Some(near) => format!("unknown key `{name}`: did you mean `{near}`? (keys here: {})", choices.join(", ")),
            None => format!("unknown key `{name}` (keys here: {})", choices.join(", ")),
        };
    }
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((value, expected)) = rest.split_once('`')
    {
        let choices = choices(expected);
        return match closest(value, &choices) {
            Some(near) => {
                format!("`{value}` is not a valid value: did you mean `{near}`? (one of: {})", choices.join(", "))
            }
            None => format!("`{value}` is not a valid value (one of: {})", choices.join(", ")),
        };
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest);
        return format!("the required key `{name}` is missing here");
    }
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let name = rest.split(',').next().unwrap_or(rest).trim();
        return format!("`{name}` is given twice in this mapping: keep one");
    }
    if let Some(kind) = message.strip_prefix("invalid ")
        && matches!(kind, "u8" | "u16" | "u32" | "u64" | "u128" | "usize")
    {
        return "expected a whole number, 0 or more, without a unit or quotes (e.g. `65536`)".to_string();
    }
    if message.starts_with("tabs disallowed") {
        return "indentation must use spaces, not tabs: replace the tab at this position with spaces".to_string();
    }
    let plain = match message {
        "expected sequence start" => "expected a list here: `[a, b]`, or one `- item` per line below the key",
        "expected string scalar" => "expected a single value here (text), not a list or a mapping",
        "expected mapping start" => "expected keys here (`key: value` lines indented below, or `{ key: value }`)",
        "while parsing a block mapping, did not find expected key" => {
            "this line's indentation does not match the keys above it: keys of one mapping start in the same column"
        }
        _ => return message.to_string(),
    };
    plain.to_string()
}

/// `expected one of a, b, c` (serde's wording, with or without backticks) as a list.
fn choices(expected: &str) -> Vec<String> {
    let list = expected.trim_start_matches(',').trim();
    let list = list.strip_prefix("expected one of").or_else(|| list.strip_prefix("expected")).unwrap_or(list);
    list.split(',')
        .map(|c| c.trim().trim_matches('`').to_string())
        .filter(|c| !c.is_empty() && !c.contains(' '))
        .collect()
}

/// The choice a typo most likely meant: at most two edits away, or the same ignoring case.
fn closest<'a>(typed: &str, choices: &'a [String]) -> Option<&'a str> {
    choices
        .iter()
        .map(|c| (edit_distance(&typed.to_ascii_lowercase(), &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= 2.min(c.len() / 2).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// The file cut into independently parsable pieces, each as long as the file: one per
/// top-level key, except that a top-level list written in block style gives one piece per
/// item (its `key:` line kept).
fn pieces(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let is_top_key = |l: &str| !l.is_empty() && !l.starts_with([' ', '#', '-']) && l != "---" && l != "...";
    let starts: Vec<usize> = (0..lines.len()).filter(|&i| is_top_key(lines[i])).collect();
    let mut pieces = Vec::new();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(lines.len());
        let dash = |l: &str| {
            let rest = l.trim_start_matches(' ');
            (rest.starts_with("- ") || rest == "-").then(|| l.len() - rest.len())
        };
        let header_opens_block = lines[start].split_once(':').is_some_and(|(_, after)| {
            let after = after.trim();
            after.is_empty() || after.starts_with('#')
        });
        let item_column = (start + 1..end).filter_map(|i| dash(lines[i])).min();
        match item_column {
            Some(column) if header_opens_block => {
                let items: Vec<usize> = (start + 1..end).filter(|&i| dash(lines[i]) == Some(column)).collect();
                for (k, &item) in items.iter().enumerate() {
                    let item_end = items.get(k + 1).copied().unwrap_or(end);
                    pieces.push(keep(&lines, |i| i == start || (item..item_end).contains(&i)));
                }
            }
            _ => pieces.push(keep(&lines, |i| (start..end).contains(&i))),
        }
    }
    pieces
}

/// The lines for which `kept` holds; every other line before the last kept one left empty
/// (so line numbers stay true), nothing after it.
fn keep(lines: &[&str], kept: impl Fn(usize) -> bool) -> String {
    let last = (0..lines.len()).rev().find(|&i| kept(i)).map_or(0, |i| i + 1);
    let mut out = String::new();
    for (i, line) in lines[..last].iter().enumerate() {
        if kept(i) {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parser_phrases_become_instructions() {
        assert!(humanise("expected sequence start").starts_with("expected a list here"));
        assert!(humanise("invalid u64").starts_with("expected a whole number"));
        assert_eq!(
            humanise("duplicate mapping key: max_body_bytes, set DuplicateKeyPolicy in Options if acceptable"),
            "`max_body_bytes` is given twice in this mapping: keep one"
        );
        assert_eq!(
            humanise("unknown field `bindng`, expected one of `name`, `match`, `binding`, `scopes`"),
            "unknown key `bindng`: did you mean `binding`? (keys here: name, match, binding, scopes)"
        );
        assert_eq!(
            humanise("unknown field `zzz`, expected one of name, binding"),
            "unknown key `zzz` (keys here: name, binding)"
        );
        assert_eq!(
            humanise("unknown variant `optinal`, expected one of `none`, `optional`, `required`"),
            "`optinal` is not a valid value: did you mean `optional`? (one of: none, optional, required)"
        );
        assert_eq!(humanise("missing field `upstream`"), "the required key `upstream` is missing here");
        assert_eq!(humanise("something new"), "something new", "unknown phrasing passes through");
    }

    #[test]
    fn the_parser_location_is_not_repeated() {
        assert_eq!(parser_message("error: line 3 column 4: invalid u64\n --> x"), "invalid u64");
        assert_eq!(parser_message("unexpected end of input at line 1, column 1"), "unexpected end of input");
    }

    #[test]
    fn pieces_keep_line_numbers_and_split_top_level_lists() {
        let text = "listen:\n  address: a\nroutes:\n  - name: one\n    upstream: x\n  # c\n  - name: two\nadmin: { address: b }\n";
        let pieces = pieces(text);
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces[0], "listen:\n  address: a\n");
        assert_eq!(pieces[1], "\n\nroutes:\n  - name: one\n    upstream: x\n  # c\n");
        assert_eq!(pieces[2], "\n\nroutes:\n\n\n\n  - name: two\n");
        assert_eq!(pieces[3], "\n\n\n\n\n\n\nadmin: { address: b }\n");
    }

    #[test]
    fn the_pieces_struct_has_the_keys_of_the_whole() {
        let keys = |e: YamlError| e.to_string().lines().next().unwrap().split("expected").nth(1).unwrap().to_string();
        let whole = keys(serde_saphyr::from_str::<RawConfig>("zzz: 1\n").unwrap_err());
        let pieces = keys(serde_saphyr::from_str::<RawPieces>("zzz: 1\n").unwrap_err());
        assert_eq!(whole, pieces);
    }

    #[test]
    fn typos_find_their_key() {
        let keys: Vec<String> = ["routes", "listen", "issuers"].iter().map(|s| s.to_string()).collect();
        assert_eq!(closest("rotes", &keys), Some("routes"));
        assert_eq!(closest("Listen", &keys), Some("listen"));
        assert_eq!(closest("xyz", &keys), None);
    }
}
