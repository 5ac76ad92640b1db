//! Where the running test is: the run, its role, its instance, its machine
//! and the plan entry's parameters.
//!
//! These call the host's `context` imports, so they only work inside a suite
//! run by Ensemble (natively they panic: there is no host).

use std::fmt::Display;
use std::str::FromStr;

use crate::Failure;
use crate::bindings::ensemble::suite::context as host;

/// The id of the run this test belongs to.
pub fn run_id() -> String {
    host::run_id()
}

/// The role of this plan entry, e.g. `"server"` or `"client"`.
pub fn role() -> String {
    host::role()
}

/// Zero-based index of this instance among the instances of its role.
pub fn instance_index() -> u32 {
    host::instance_index()
}

/// How many instances of this role take part in the run.
pub fn instance_count() -> u32 {
    host::instance_count()
}

/// Name of the machine executing this test.
pub fn machine() -> String {
    host::machine()
}

/// The parameter `name` of the plan entry, if set.
pub fn param(name: &str) -> Option<String> {
    host::param(name)
}

/// The parameter `name`, or `default` when it is not set.
pub fn param_or(name: &str, default: impl Into<String>) -> String {
    param(name).unwrap_or_else(|| default.into())
}

/// The parameter `name`, or a failure saying it is required.
pub fn param_required(name: &str) -> Result<String, Failure> {
    param(name).ok_or_else(|| Failure::fail(format!("parameter `{name}` is required but not set")))
}

/// The parameter `name` parsed as a `T`: `Ok(None)` when it is not set, and a
/// failure naming the parameter and its value when it does not parse.
pub fn param_parse<T>(name: &str) -> Result<Option<T>, Failure>
where
    T: FromStr,
    T::Err: Display,
{
    param(name).map(|value| parse_param(name, &value)).transpose()
}

/// The parameter `name` parsed as a `T`, or `default` when it is not set; a
/// failure naming the parameter when it does not parse.
pub fn param_parse_or<T>(name: &str, default: T) -> Result<T, Failure>
where
    T: FromStr,
    T::Err: Display,
{
    Ok(param_parse(name)?.unwrap_or(default))
}

/// All parameters of the plan entry, sorted by name.
pub fn params() -> Vec<(String, String)> {
    host::params()
}

/// Parses one parameter value; the error names the parameter, its value and
/// the expected type.
fn parse_param<T>(name: &str, value: &str) -> Result<T, Failure>
where
    T: FromStr,
    T::Err: Display,
{
    value.parse().map_err(|error| {
        Failure::fail(format!(
            "parameter `{name}` = {value:?} is not a valid {}: {error}",
            std::any::type_name::<T>()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_parameter() {
        assert_eq!(parse_param::<u32>("keys", "12"), Ok(12));
        let failure = parse_param::<u32>("keys", "many").unwrap_err();
        assert_eq!(
            failure.message(),
            "parameter `keys` = \"many\" is not a valid u32: invalid digit found in string"
        );
    }
}
