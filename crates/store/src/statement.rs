//! Statements composed from parts written by different row modules (a record and its audit
//! event in one statement): each part binds its own values and writes the placeholders it
//! gets back, so that no module knows, or numbers, another module's parameters.

use std::fmt;
use std::sync::OnceLock;

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

/// The text of a statement whose shape never changes between calls, composed once.
/// Composing a statement from its parts costs several allocations, on the hot path of
/// every record write; its placeholders are numbered in binding order, so every call of a
/// given shape composes the same text. Debug builds compose it every time and check that.
pub(crate) struct ComposedOnce(OnceLock<String>);

impl ComposedOnce {
    pub(crate) const fn new() -> Self {
        Self(OnceLock::new())
    }

    /// The text, composed by `compose` on first use.
    pub(crate) fn get(&self, compose: impl FnOnce() -> String) -> &str {
        if cfg!(debug_assertions) {
            let composed = compose();
            let cached = self.0.get_or_init(|| composed.clone());
            assert_eq!(
                cached, &composed,
                "a statement of one shape must compose the same text on every call"
            );
            cached
        } else {
            self.0.get_or_init(compose)
        }
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

    #[test]
    fn a_composed_text_is_kept_from_the_first_call() {
        static TEXT: ComposedOnce = ComposedOnce::new();
        let compose = |value: i64| {
            let mut statement = Statement::new();
            let placeholder = statement.bind(&value);
            format!("select {placeholder}")
        };
        assert_eq!(TEXT.get(|| compose(1)), "select $1");
        assert_eq!(TEXT.get(|| compose(2)), "select $1");
    }

    #[test]
    #[should_panic(expected = "must compose the same text")]
    #[cfg(debug_assertions)]
    fn a_shape_that_changes_between_calls_is_caught_in_debug_builds() {
        static TEXT: ComposedOnce = ComposedOnce::new();
        TEXT.get(|| "select 1".to_owned());
        TEXT.get(|| "select 2".to_owned());
    }
}
