//! Aligned columns the way kubectl prints them: upper-case headers, columns three spaces
//! apart, the last column not padded.

/// Renders `rows` under `headers`, each line indented by `indent` spaces.
pub fn render(headers: &[&str], rows: &[Vec<String>], indent: usize) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = " ".repeat(indent);
        let last = cells.len().saturating_sub(1);
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(width - cell.chars().count() + 3));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_line_up_three_spaces_apart() {
        let rows = vec![
            vec!["reviews".to_string(), "Running".to_string()],
            vec!["a".to_string(), "Completed".to_string()],
        ];
        assert_eq!(
            super::render(&["NAME", "PHASE"], &rows, 0),
            "NAME      PHASE\nreviews   Running\na         Completed\n"
        );
    }
}
