//! Rows in PostgreSQL's COPY text format, buffered for one `COPY … FROM
//! STDIN` per table and database.

use std::fmt::Write as _;

/// One column value of a COPY row.
pub enum Field<'a> {
    Text(&'a str),
    Int(i64),
    Bool(bool),
    Bytes(&'a [u8]),
    Null,
}

/// The rows of one table, in COPY text format.
#[derive(Default)]
pub struct CopyRows {
    text: String,
    count: usize,
}

impl CopyRows {
    pub fn push(&mut self, fields: &[Field<'_>]) {
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                self.text.push('\t');
            }
            match field {
                Field::Text(value) => escape_into(&mut self.text, value),
                Field::Int(value) => {
                    let _ = write!(self.text, "{value}");
                }
                Field::Bool(value) => self.text.push(if *value { 't' } else { 'f' }),
                // bytea's hex form; its backslash is escaped for COPY.
                Field::Bytes(value) => {
                    self.text.push_str("\\\\x");
                    self.text.push_str(&hex::encode(value));
                }
                Field::Null => self.text.push_str("\\N"),
            }
        }
        self.text.push('\n');
        self.count += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.text.as_bytes()
    }
}

/// COPY text format: backslash, tab, newline and carriage return are escaped.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_copy_would_misread() {
        let mut rows = CopyRows::default();
        rows.push(&[Field::Text("a\tb\\c\nd"), Field::Int(-3), Field::Bool(true), Field::Bytes(&[0xab, 1]), Field::Null]);
        assert_eq!(std::str::from_utf8(rows.as_bytes()).unwrap(), "a\\tb\\\\c\\nd\t-3\tt\t\\\\xab01\t\\N\n");
    }
}
