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
    /// Every required column the file lacks, each with the names looked
    /// for, and the file's own column names.
    #[error("{}", missing_text(missing, found))]
    Missing {
        missing: Vec<(String, String)>,
        found: Vec<String>,
    },
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
    /// Fails when the file lacks any of `required`, naming them all at
    /// once, each with what was looked for, and the file's own columns (a
    /// user who adds aliases one run at a time gives up).
    pub fn require(
        &self,
        canonical: &[&str],
        required: &[&str],
        aliases: &HashMap<String, String>,
    ) -> Result<(), HeaderError> {
        let mut missing = Vec::new();
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
                missing.push((column.to_string(), tried.join(", ")));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(HeaderError::Missing {
            missing,
            found: self.names.clone(),
        })
    }
}

/// [`HeaderError::Missing`]'s text.
fn missing_text(missing: &[(String, String)], found: &[String]) -> String {
    const SHOWN: usize = 40;
    let mut names: Vec<String> = found
        .iter()
        .take(SHOWN)
        .map(|n| format!("`{}`", n.trim()))
        .collect();
    if found.len() > SHOWN {
        names.push(format!("and {} more", found.len() - SHOWN));
    }
    let found = names.join(", ");
    match missing {
        [(column, tried)] => format!(
            "required column `{column}` is missing (looked for {tried}); the file's columns: {found}; add it or an alias in the policy's [headers.aliases]"
        ),
        _ => {
            let each: Vec<String> = missing
                .iter()
                .map(|(column, tried)| format!("`{column}` (looked for {tried})"))
                .collect();
            format!(
                "{} required columns are missing: {}; the file's columns: {found}; add them or aliases in the policy's [headers.aliases]",
                missing.len(),
                each.join(", ")
            )
        }
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
            "required column `serial_number` is missing (looked for `serial_number`, `serial`, `sn`); the file's columns: `Country`; add it or an alias in the policy's [headers.aliases]"
        );
    }

    #[test]
    fn every_missing_column_is_named_at_once_with_the_files_headers() {
        let canonical = ["serial_number", "mac_address", "country"];
        let m = match_headers(&names(&["Seriennummer", "Land"]), &canonical, &aliases()).unwrap();
        let err = m
            .require(&canonical, &canonical, &aliases())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "3 required columns are missing: `serial_number` (looked for `serial_number`, `serial`, `sn`), `mac_address` (looked for `mac_address`, `ethernetmac`, `mac`), `country` (looked for `country`); the file's columns: `Seriennummer`, `Land`; add them or aliases in the policy's [headers.aliases]"
        );
    }
}
