//! What the operator commands print for people: aligned tables and `name: value` blocks.
//! Scripts use `--json`, which prints the API's answer as it is.

use std::fmt::Write as _;

/// `rows` under `headers`, each column as wide as its widest cell, two spaces apart.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, width) in cells.zip(&widths) {
            let _ = write!(text, "{:<width$}  ", printable(cell));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// `name: value` lines, the names aligned.
pub(crate) fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(name, _)| name.chars().count() + 1)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (name, value) in pairs {
        let _ = writeln!(out, "{:<width$} {}", format!("{name}:"), printable(value));
    }
    out
}

/// `text` without control characters: a name a tenant chose can never move the cursor,
/// recolour the terminal or break a row.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// The line after a page that has a next one: how to get it.
pub(crate) fn next_page(next_cursor: Option<&str>) -> String {
    next_cursor.map_or_else(String::new, |cursor| {
        format!("(more: add --cursor {cursor})\n")
    })
}

/// A list of names as one cell.
pub(crate) fn list(items: &[String]) -> String {
    items.join(",")
}

/// An optional value as one cell: `-` when absent.
pub(crate) fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let text = table(
            &["ID", "NAME"],
            &[
                vec!["a".to_owned(), "Acme GmbH".to_owned()],
                vec!["long-id".to_owned(), "B".to_owned()],
            ],
        );
        assert_eq!(text, "ID       NAME\na        Acme GmbH\nlong-id  B\n");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let text = table(&["NAME"], &[vec!["evil\u{1b}[2J\nname".to_owned()]]);
        assert_eq!(text, "NAME\nevil\u{FFFD}[2J\u{FFFD}name\n");
    }

    #[test]
    fn fields_align_their_names() {
        let text = fields(&[("id", "t1".to_owned()), ("home region", "eu".to_owned())]);
        assert_eq!(text, "id:          t1\nhome region: eu\n");
    }
}
