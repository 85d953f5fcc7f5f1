//! Recovers the key path (`routes[0].binding`) of a position in a block-style YAML file, so
//! that parser errors, which know only `line:col`, can name the key the user must fix.
//!
//! A best-effort reading of indentation, not a YAML parser: it understands block mappings
//! and block sequences (the shape of `gateway.yaml`); inside flow collections
//! (`{ a: 1 }`) it names the block key the collection belongs to.

/// The dotted key path of the `key:` on 1-based `line`, or `None` when it cannot tell.
pub fn key_path_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut index = line.checked_sub(1)?;
    let (dash, content) = structure(lines.get(index)?)?;
    let mut parts = vec![own_key(lines[index], content)?];
    let mut indent = content;
    if let Some(d) = dash {
        parts.push(format!("[{}]", sibling_items_before(&lines, index, d)));
        indent = d;
    }
    while indent > 0 && index > 0 {
        index -= 1;
        let Some((dash, content)) = structure(lines[index]) else {
            continue;
        };
        if content >= indent && dash.is_none_or(|d| d >= indent) {
            continue;
        }
        if content > indent {
            continue;
        }
        if content < indent {
            // A `key:` (or `- key:`) line that our key is nested under.
            parts.push(own_key(lines[index], content)?);
        }
        // Else `- sibling: …`: the sequence item that holds our key.
        indent = content;
        if let Some(d) = dash {
            parts.push(format!("[{}]", sibling_items_before(&lines, index, d)));
            indent = d;
        }
    }
    parts.reverse();
    let mut path = String::new();
    for part in parts {
        if !part.starts_with('[') && !path.is_empty() {
            path.push('.');
        }
        path.push_str(&part);
    }
    Some(path)
}

/// The 1-based `line:col` where the block-style key `path` (as [`key_path_at`] names it) is
/// written, or `None` when it is not (a default, or inside a flow mapping).
pub fn line_of_key(text: &str, path: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    (1..=lines.len()).find(|&line| key_path_at(text, line).as_deref() == Some(path)).and_then(|line| {
        let (_, content) = structure(lines[line - 1])?;
        Some((line, content + 1))
    })
}

/// Column of the dash (if the line is a sequence item) and of the content; `None` for
/// blank and comment lines.
fn structure(line: &str) -> Option<(Option<usize>, usize)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let rest = &line[indent..];
    if rest.is_empty() || rest.starts_with('#') {
        return None;
    }
    if let Some(after) = rest.strip_prefix("- ").or_else(|| (rest == "-").then_some("")) {
        let extra = after.len() - after.trim_start_matches(' ').len();
        return Some((Some(indent), indent + 2 + extra));
    }
    Some((None, indent))
}

/// The mapping key starting at `content` on this line, if the line is `key: …`.
fn own_key(line: &str, content: usize) -> Option<String> {
    let rest = line.get(content..)?;
    let (key, _) = rest.split_once(':')?;
    let key = key.trim();
    (!key.is_empty() && !key.contains([' ', '{', '[', '"', '\''])).then(|| key.to_string())
}

/// How many sequence items at dash column `dash` precede line `index` in the same sequence.
fn sibling_items_before(lines: &[&str], index: usize, dash: usize) -> usize {
    let mut count = 0;
    for line in lines[..index].iter().rev() {
        match structure(line) {
            None => continue,
            Some((Some(d), _)) if d == dash => count += 1,
            Some((_, content)) if content > dash => continue,
            Some((Some(d), _)) if d > dash => continue,
            _ => break,
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "\
listen:
  address: 1
  tls:
    cert: a
    # a comment
    key: b
issuers:
  - issuer: x
    leeway: 5
routes:
  - name: one
    match: { path_prefix: / }

  - name: two
    bindng: mtls
    scopes:
      - a
";

    #[test]
    fn nested_mapping_keys() {
        assert_eq!(key_path_at(YAML, 2).as_deref(), Some("listen.address"));
        assert_eq!(key_path_at(YAML, 6).as_deref(), Some("listen.tls.key"));
        assert_eq!(key_path_at(YAML, 1).as_deref(), Some("listen"));
    }

    #[test]
    fn sequence_items_are_indexed() {
        assert_eq!(key_path_at(YAML, 9).as_deref(), Some("issuers[0].leeway"));
        assert_eq!(key_path_at(YAML, 8).as_deref(), Some("issuers[0].issuer"));
        assert_eq!(key_path_at(YAML, 15).as_deref(), Some("routes[1].bindng"));
        assert_eq!(key_path_at(YAML, 12).as_deref(), Some("routes[0].match"));
    }

    #[test]
    fn keys_are_found_by_their_path() {
        assert_eq!(line_of_key(YAML, "listen.tls.key"), Some((6, 5)));
        assert_eq!(line_of_key(YAML, "routes[1].bindng"), Some((15, 5)));
        assert_eq!(line_of_key(YAML, "issuers[0].issuer"), Some((8, 5)));
        assert_eq!(line_of_key(YAML, "routes[0].match.path_prefix"), None, "inside a flow mapping");
        assert_eq!(line_of_key(YAML, "limits"), None);
    }

    #[test]
    fn out_of_range_is_none() {
        assert_eq!(key_path_at(YAML, 99), None);
        assert_eq!(key_path_at(YAML, 5), None);
    }
}
