//! Turning rows into records and records into column values. Whatever the
//! database hands back is checked: a value that does not decode is
//! [`StoreError::Corrupt`], naming the column but never echoing the value.

use crate::error::{StoreError, StoreResult};
use keyward_core::InvalidValue;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::any::AnyRow;
use sqlx::{Any, Row};

/// One column, decoded to `T`.
pub(super) fn column<'r, T>(row: &'r AnyRow, name: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get(name)
        .map_err(|e| StoreError::corrupt(format_args!("column {name}: {e}")))
}

/// A TEXT column holding a domain value with a `parse` constructor (enums,
/// permission names, CIDRs).
pub(super) fn parsed<T, E: std::fmt::Display>(
    row: &AnyRow,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> StoreResult<T> {
    let text: String = column(row, name)?;
    parse(&text).map_err(|e| StoreError::corrupt(format_args!("column {name}: {e}")))
}

/// A TEXT column holding JSON.
pub(super) fn json<T: DeserializeOwned>(row: &AnyRow, name: &str) -> StoreResult<T> {
    parsed(row, name, |text| serde_json::from_str(text))
}

/// An integer column whose value must fit a narrower type (a count, an
/// HTTP status, a rate limit).
pub(super) fn narrowed<T: TryFrom<i64>>(row: &AnyRow, name: &str) -> StoreResult<T> {
    let wide: i64 = column(row, name)?;
    T::try_from(wide).map_err(|_| StoreError::corrupt(format_args!("column {name}: out of range")))
}

/// [`narrowed`] for a nullable column.
pub(super) fn narrowed_opt<T: TryFrom<i64>>(row: &AnyRow, name: &str) -> StoreResult<Option<T>> {
    let wide: Option<i64> = column(row, name)?;
    wide.map(|w| {
        T::try_from(w).map_err(|_| StoreError::corrupt(format_args!("column {name}: out of range")))
    })
    .transpose()
}

/// A list of domain values stored as a JSON array of their names.
pub(super) fn name_list<T>(
    row: &AnyRow,
    name: &str,
    parse: impl Fn(&str) -> Result<T, InvalidValue>,
) -> StoreResult<Vec<T>> {
    let names: Vec<String> = json(row, name)?;
    names
        .iter()
        .map(|n| parse(n).map_err(|e| StoreError::corrupt(format_args!("column {name}: {e}"))))
        .collect()
}

/// A value as JSON text for a column. Only ever given lists of strings and
/// JSON maps, which always serialise; `field` names the input if one ever
/// does not.
pub(super) fn to_json(value: &impl Serialize, field: &'static str) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Invalid {
        field,
        message: format!("cannot be stored: {e}"),
    })
}

/// A list of domain values as a JSON array of their names.
pub(super) fn names_to_json<'a>(
    names: impl IntoIterator<Item = &'a str>,
    field: &'static str,
) -> StoreResult<String> {
    to_json(&names.into_iter().collect::<Vec<_>>(), field)
}
