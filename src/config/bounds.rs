//! Bounds on configuration input, checked before the YAML parser sees it.
//!
//! Part of `config`, ahead of `raw`: a file is read (by [`crate::files::read_bounded`]) only
//! if it is a regular file and at most [`MAX_CONFIG_BYTES`] long, and its text is scanned once for what would make the
//! parser slow or large: flow collections nested deeper than [`MAX_FLOW_DEPTH`] (the parser
//! takes quadratic time on them) and aliases that would add more than
//! [`MAX_ALIAS_GROWTH`] to the document (a "billion laughs"). The scan is approximate on the safe side:
//! it reads YAML's quoting and comments, and counts an anchored node as the text from its
//! anchor to the next line indented no deeper than the anchor's line.

/// The largest configuration file read: about 200,000 specs written one a line, so that
/// every replica of a sharded fleet can read the whole list.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// The deepest nesting of `[` and `{` accepted.
pub const MAX_FLOW_DEPTH: usize = 32;
/// The most that expanding its aliases may add to a document.
pub const MAX_ALIAS_GROWTH: usize = 4 << 20;

/// Checks configuration text for deep flow nesting and for aliases that would expand it
/// beyond bounds.
pub fn check_text(text: &str) -> Result<(), String> {
    let scan = scan(text);
    if scan.max_flow_depth > MAX_FLOW_DEPTH {
        return Err(format!(
            "YAML nested {} levels deep in brackets or braces; at most {MAX_FLOW_DEPTH} are accepted",
            scan.max_flow_depth
        ));
    }
    let growth = expanded_size(text, &scan).saturating_sub(text.len());
    if growth > MAX_ALIAS_GROWTH {
        return Err(format!(
            "YAML aliases would add about {growth} bytes to the document; at most {MAX_ALIAS_GROWTH} are accepted"
        ));
    }
    Ok(())
}

/// What the scan found: the deepest flow nesting, the anchors with the byte range of the
/// node each names, and the aliases with their position.
#[derive(Debug, Default)]
struct Scan<'a> {
    max_flow_depth: usize,
    anchors: Vec<(&'a str, std::ops::Range<usize>)>,
    aliases: Vec<(&'a str, usize)>,
}

/// One pass over the text: quotes and comments are skipped, brackets counted, `&anchor`
/// and `*alias` tokens recorded where a token may start.
fn scan(text: &str) -> Scan<'_> {
    let bytes = text.as_bytes();
    let mut result = Scan::default();
    let (mut depth, mut i) = (0usize, 0usize);
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            match b {
                b'\\' if q == b'"' => i += 1,
                b'\'' if q == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 1,
                _ if b == q => quote = None,
                _ => {}
            }
            i += 1;
            continue;
        }
        let token_start =
            i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b'\n' | b'[' | b'{' | b',' | b':' | b'-');
        match b {
            b'"' | b'\'' if token_start => quote = Some(b),
            b'#' if token_start => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                result.max_flow_depth = result.max_flow_depth.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'&' | b'*' if token_start => {
                let name_end = (i + 1..bytes.len())
                    .find(|&j| matches!(bytes[j], b' ' | b'\t' | b'\n' | b'\r' | b',' | b']' | b'}'))
                    .unwrap_or(bytes.len());
                let name = &text[i + 1..name_end];
                if b == b'&' {
                    result.anchors.push((name, i..node_end(text, i)));
                } else {
                    result.aliases.push((name, i));
                }
                i = name_end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    result
}

/// Where the node anchored at `at` ends: at the start of the first later line that is
/// indented no deeper than the anchor's own line (blank and comment lines aside).
fn node_end(text: &str, at: usize) -> usize {
    let line_start = text[..at].rfind('\n').map_or(0, |n| n + 1);
    let indent = |line: &str| line.len() - line.trim_start_matches(' ').len();
    let own = indent(&text[line_start..]);
    let mut pos = text[at..].find('\n').map_or(text.len(), |n| at + n + 1);
    while pos < text.len() {
        let line_end = text[pos..].find('\n').map_or(text.len(), |n| pos + n + 1);
        let line = &text[pos..line_end];
        let body = line.trim();
        if !body.is_empty() && !body.starts_with('#') && indent(line) <= own {
            break;
        }
        pos = line_end;
    }
    pos
}

/// The size of the text once every alias is replaced by the node it names; an anchored
/// node that holds aliases counts their expansion too. Anchors and aliases are in document
/// order, and an alias names the latest anchor of its name before it.
fn expanded_size(text: &str, scan: &Scan<'_>) -> usize {
    use std::collections::HashMap;
    // Each anchor's expanded size, in document order; an alias inside an anchored node
    // names an anchor that starts before the alias, whose size is known by then unless
    // that anchor encloses it (then it counts as its text alone).
    let mut sizes: Vec<usize> = Vec::with_capacity(scan.anchors.len());
    let mut latest: HashMap<&str, usize> = HashMap::new();
    let size_before = |name: &str, at: usize, latest: &HashMap<&str, usize>, sizes: &[usize]| -> usize {
        latest
            .get(name)
            .filter(|&&k| scan.anchors[k].1.start < at)
            .and_then(|&k| sizes.get(k))
            .copied()
            .unwrap_or(0)
    };
    for (k, (name, span)) in scan.anchors.iter().enumerate() {
        let first = scan.aliases.partition_point(|(_, at)| *at < span.start);
        let last = scan.aliases.partition_point(|(_, at)| *at < span.end);
        let inner = scan.aliases[first..last]
            .iter()
            .map(|(alias, at)| size_before(alias, *at, &latest, &sizes))
            .fold(0usize, usize::saturating_add);
        sizes.push(span.len().saturating_add(inner));
        latest.insert(name, k);
    }
    // Every alias again, against the anchors as they stood where it appears.
    let mut latest: HashMap<&str, usize> = HashMap::new();
    let mut next_anchor = 0;
    let mut total = text.len();
    for (alias, at) in &scan.aliases {
        while next_anchor < scan.anchors.len() && scan.anchors[next_anchor].1.start < *at {
            latest.insert(scan.anchors[next_anchor].0, next_anchor);
            next_anchor += 1;
        }
        total = total.saturating_add(latest.get(alias).map_or(0, |&k| sizes[k]));
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_nesting_is_refused_before_parsing() {
        let deep = format!("interval: {}{}", "[".repeat(50_000), "]".repeat(50_000));
        let err = check_text(&deep).unwrap_err();
        assert_eq!(err, "YAML nested 50000 levels deep in brackets or braces; at most 32 are accepted");
        assert!(check_text("targets: [{ host: mx, ports: [{ port: 25, module: m }] }]\n").is_ok());
        // Brackets in quotes and comments do not count.
        let quoted = format!("a: \"{}\"\n# {}\nb: '{}'\n", "[".repeat(100), "{".repeat(100), "[".repeat(100));
        assert!(check_text(&quoted).is_ok());
    }

    #[test]
    fn alias_bombs_are_refused_and_modest_anchors_are_not() {
        let big = "x".repeat(100_000);
        let mut bomb = format!("modules:\n  a: &big \"{big}\"\n");
        for i in 0..100 {
            bomb.push_str(&format!("  m{i}: *big\n"));
        }
        let err = check_text(&bomb).unwrap_err();
        assert!(err.starts_with("YAML aliases would add about 10"), "{err}");
        // A long file with a few aliases is not a bomb.
        let long = format!("{}{}", "# filler\n".repeat(600_000), "d: &d { tls: starttls }\nm: *d\n");
        assert!(check_text(&long).is_ok());

        // Nested: each level doubles; 30 levels of two aliases is 2^30 copies.
        let mut laughs = String::from("a0: &a0 \"lol\"\n");
        for i in 1..30 {
            laughs.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}]\n", p = i - 1));
        }
        assert!(check_text(&laughs).is_err());

        let modest = "defaults: &defaults\n  tls: starttls\n  timeout: 10s\nmodules:\n  a: *defaults\n  b: *defaults\n";
        assert!(check_text(modest).is_ok());
        let scan = scan(modest);
        assert_eq!(scan.anchors.len(), 1);
        assert_eq!(&modest[scan.anchors[0].1.clone()], "&defaults\n  tls: starttls\n  timeout: 10s\n");
        assert_eq!(scan.aliases.len(), 2);
    }

    /// Issue 17: each bound is inclusive: text at exactly the deepest nesting or the
    /// largest alias growth passes.
    #[test]
    fn the_bounds_are_inclusive() {
        let nested = |depth: usize| format!("a: {}{}\n", "[".repeat(depth), "]".repeat(depth));
        assert!(check_text(&nested(MAX_FLOW_DEPTH)).is_ok());
        assert!(check_text(&nested(MAX_FLOW_DEPTH + 1)).is_err());

        // One alias of one anchored scalar adds the anchored node's text once.
        let aliased = |n: usize| format!("a: &x \"{}\"\nb: *x\n", "x".repeat(n));
        let overhead = {
            let text = aliased(10);
            let scan = scan(&text);
            scan.anchors[0].1.len() - 10
        };
        let at_bound = aliased(MAX_ALIAS_GROWTH - overhead);
        assert_eq!(expanded_size(&at_bound, &scan(&at_bound)) - at_bound.len(), MAX_ALIAS_GROWTH);
        assert!(check_text(&at_bound).is_ok());
        assert!(check_text(&aliased(MAX_ALIAS_GROWTH - overhead + 1)).is_err());
    }

    /// Issue 17: quotes are read as YAML reads them: `\"` does not end a double-quoted
    /// string, `''` does not end a single-quoted one, and a backslash escapes nothing in
    /// single quotes; brackets inside a string do not count, outside they do.
    #[test]
    fn quotes_are_read_as_yaml_reads_them() {
        let deep = format!("{}{}", "[".repeat(MAX_FLOW_DEPTH + 1), "]".repeat(MAX_FLOW_DEPTH + 1));
        for inside in [format!("a: \"x\\\" {deep}\"\n"), format!("a: 'it''s {deep}'\n")] {
            assert_eq!(check_text(&inside), Ok(()), "{inside}");
        }
        for outside in [
            format!("a: 'x\\' {deep}\n"),
            format!("a: 'abc' {deep}\n"),
            format!("a: \"x\\\\\" {deep}\n"),
            format!("a: \"x'\" {deep}\n"),
            format!("a: it's {deep}\n"),
        ] {
            assert!(check_text(&outside).is_err(), "{outside}");
        }
    }

    /// Issue 17: an anchored node ends where a line is indented no deeper than the
    /// anchor's own line, for an anchor on an indented line too.
    #[test]
    fn an_indented_anchor_ends_at_its_own_indentation() {
        let text =
            "modules:\n  a: &x\n    tls: starttls\n\n    # a comment\n    timeout: 5s\n  b: *x\nother: 1\n";
        let scan = scan(text);
        assert_eq!(
            &text[scan.anchors[0].1.clone()],
            "&x\n    tls: starttls\n\n    # a comment\n    timeout: 5s\n"
        );
    }

    /// Issue 17: an alias on the line that ends an anchored node is not inside it, so an
    /// alias of that node does not count it twice.
    #[test]
    fn an_alias_where_a_node_ends_is_outside_it() {
        let text = "b: &y hello\na: &x [1,\n*y]\nc: *x\n";
        let scan = scan(text);
        assert_eq!(&text[scan.anchors[1].1.clone()], "&x [1,\n");
        assert_eq!(expanded_size(text, &scan), text.len() + "&y hello\n".len() + "&x [1,\n".len());
    }

    /// Issue 17: an anchored node counts only the aliases inside it: one that comes
    /// before the anchor adds nothing to it.
    #[test]
    fn an_alias_before_an_anchor_is_not_inside_it() {
        let text = "a: &x [1, 2, 3]\nb: *x\nc: &y [4]\nd: *y\n";
        let scan = scan(text);
        assert_eq!(expanded_size(text, &scan), text.len() + "&x [1, 2, 3]\n".len() + "&y [4]\n".len());
    }

    /// Issue 17: `#` starts a comment only where a token may start; inside a word it is
    /// text, and what follows on the line is scanned. A comment may end the text without
    /// a line break.
    #[test]
    fn a_hash_inside_a_word_is_not_a_comment() {
        let found = scan("a: x#y &z [1]\n");
        assert_eq!((found.anchors.len(), found.max_flow_depth), (1, 1));
        let found = scan("a: x # [1] &z");
        assert_eq!((found.anchors.len(), found.max_flow_depth), (0, 0));
        assert!(check_text("a: 1 # the end, without a line break").is_ok());
    }
}
