//! Statements composed from parts written by different row modules (a record and its audit
//! event in one statement): each part binds its own values and writes the placeholders it
//! gets back, so that no module knows, or numbers, another module's parameters.

use std::fmt;

use tokio_postgres::types::ToSql;

/// The parameters of one statement, in the order they were bound.
pub(crate) struct Statement<'a> {
    params: Vec<&'a (dyn ToSql + Sync)>,
}

impl<'a> Statement<'a> {
    pub(crate) fn new() -> Self {
        Self {
            params: Vec::with_capacity(24),
        }
    }

    /// Binds `value` as the statement's next parameter; write the returned placeholder
    /// where the SQL uses it.
    pub(crate) fn bind(&mut self, value: &'a (dyn ToSql + Sync)) -> Placeholder {
        self.params.push(value);
        Placeholder(self.params.len())
    }

    /// The values bound, for the driver.
    pub(crate) fn params(&self) -> &[&'a (dyn ToSql + Sync)] {
        &self.params
    }
}

/// Where a bound value goes in the SQL text: `$n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placeholder(usize);

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_number_their_parameters_in_binding_order() {
        let (a, b, c) = (1_i64, "two", 3_i64);
        let mut statement = Statement::new();
        let first = statement.bind(&a);
        let second = statement.bind(&b);
        let third = statement.bind(&c);
        assert_eq!(
            format!("{first} {second} {third}"),
            "$1 $2 $3",
            "placeholders follow the order values were bound in"
        );
        assert_eq!(statement.params().len(), 3);
    }
}
