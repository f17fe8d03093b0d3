//! Header matching: exports name their columns in many ways, so headers are
//! compared case- and punctuation-insensitively and through the policy's
//! aliases. Unknown columns are kept, to be carried through to reports.

use std::collections::HashMap;

use crate::domain::normalise_name;

/// Where each canonical column sits in a file, and which columns are extra.
#[derive(Debug, Clone)]
pub struct HeaderMap {
    /// The file's own header names, in file order.
    pub names: Vec<String>,
    /// For each canonical column (in the order given to [`match_headers`]),
    /// its index in the file.
    pub canonical: Vec<Option<usize>>,
    /// Indices of the columns that match nothing, in file order.
    pub extras: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("columns `{first}` and `{second}` both mean `{column}`; rename or drop one of them")]
    Duplicate {
        column: String,
        first: String,
        second: String,
    },
    #[error("required column `{column}` is missing (looked for {tried}); add it or an alias in the policy's [headers.aliases]")]
    Missing { column: String, tried: String },
    #[error("the file has no header row")]
    Empty,
}

/// Matches `names` against `canonical` column names using `aliases`
/// (normalised alias → canonical name).
pub fn match_headers(
    names: &[String],
    canonical: &[&str],
    aliases: &HashMap<String, String>,
) -> Result<HeaderMap, HeaderError> {
    if names.is_empty() || names.iter().all(|n| n.trim().is_empty()) {
        return Err(HeaderError::Empty);
    }
    let mut map = HeaderMap {
        names: names.to_vec(),
        canonical: vec![None; canonical.len()],
        extras: Vec::new(),
    };
    for (i, name) in names.iter().enumerate() {
        let key = normalise_name(name);
        let target = canonical
            .iter()
            .position(|c| normalise_name(c) == key)
            .or_else(|| {
                aliases
                    .get(&key)
                    .and_then(|c| canonical.iter().position(|k| k == c))
            });
        match target {
            Some(t) => {
                if let Some(prev) = map.canonical[t] {
                    return Err(HeaderError::Duplicate {
                        column: canonical[t].to_string(),
                        first: names[prev].clone(),
                        second: name.clone(),
                    });
                }
                map.canonical[t] = Some(i);
            }
            None => map.extras.push(i),
        }
    }
    Ok(map)
}

impl HeaderMap {
    /// Fails on the first of `required` that the file lacks, naming what was tried.
    pub fn require(
        &self,
        canonical: &[&str],
        required: &[&str],
        aliases: &HashMap<String, String>,
    ) -> Result<(), HeaderError> {
        for column in required {
            let Some(i) = canonical.iter().position(|c| c == column) else {
                continue;
            };
            if self.canonical[i].is_none() {
                let mut tried: Vec<String> = aliases
                    .iter()
                    .filter(|(_, c)| c == column)
                    .map(|(a, _)| format!("`{a}`"))
                    .collect();
                tried.sort();
                tried.insert(0, format!("`{column}`"));
                return Err(HeaderError::Missing {
                    column: column.to_string(),
                    tried: tried.join(", "),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aliases() -> HashMap<String, String> {
        [
            ("sn", "serial_number"),
            ("serial", "serial_number"),
            ("mac", "mac_address"),
            ("ethernetmac", "mac_address"),
        ]
        .into_iter()
        .map(|(a, c)| (a.to_string(), c.to_string()))
        .collect()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn case_punctuation_and_aliases() {
        let canonical = ["serial_number", "mac_address", "country"];
        let m = match_headers(
            &names(&["Serial Number", "Ethernet MAC", "COUNTRY", "Asset Tag"]),
            &canonical,
            &aliases(),
        )
        .unwrap();
        assert_eq!(m.canonical, vec![Some(0), Some(1), Some(2)]);
        assert_eq!(m.extras, vec![3]);
        let m = match_headers(&names(&["SN", "mac"]), &canonical, &aliases()).unwrap();
        assert_eq!(m.canonical, vec![Some(0), Some(1), None]);
    }

    #[test]
    fn two_columns_for_one_meaning_is_an_error() {
        let err =
            match_headers(&names(&["Serial", "SN"]), &["serial_number"], &aliases()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "columns `Serial` and `SN` both mean `serial_number`; rename or drop one of them"
        );
    }

    #[test]
    fn missing_names_the_column_and_the_aliases_tried() {
        let canonical = ["serial_number", "country"];
        let m = match_headers(&names(&["Country"]), &canonical, &aliases()).unwrap();
        let err = m
            .require(&canonical, &["serial_number"], &aliases())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "required column `serial_number` is missing (looked for `serial_number`, `serial`, `sn`); add it or an alias in the policy's [headers.aliases]"
        );
    }
}
