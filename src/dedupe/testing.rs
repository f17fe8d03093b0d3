//! What the duplicate index's tests share (here and in the pipeline's):
//! a row's keys from text, and the row-by-row rule the index must match.

use super::{Dups, RowKeys};
use crate::domain::{LicenseId, Mac, Serial};

pub(crate) fn keys(
    row: u64,
    serial: Option<&str>,
    mac: Option<&str>,
    license: Option<&str>,
) -> RowKeys {
    RowKeys::new(
        row,
        serial.map(|s| Serial::parse(s, 1, 20).unwrap()),
        mac.map(|m| Mac::parse(m).unwrap()),
        license.map(|l| LicenseId::parse(l).unwrap()),
    )
}

/// The row-by-row rule the sharded index must match exactly.
pub(crate) fn reference(rows: &[RowKeys]) -> Vec<Dups> {
    reference_with_rejected(rows, &vec![false; rows.len()])
}

/// [`reference`], where a rejected row's keys are looked up and never
/// recorded.
pub(crate) fn reference_with_rejected(rows: &[RowKeys], rejected: &[bool]) -> Vec<Dups> {
    let (mut s, mut m, mut l) = (
        std::collections::HashSet::new(),
        std::collections::HashSet::new(),
        std::collections::HashSet::new(),
    );
    rows.iter()
        .zip(rejected)
        .map(|(r, &rejected)| {
            let d = Dups {
                serial: r.serial.is_some_and(|x| s.contains(&x)),
                mac: r.mac.is_some_and(|x| m.contains(&x)),
                license: r.license.is_some_and(|x| l.contains(&x)),
            };
            if !d.any() && !rejected {
                r.serial.map(|x| s.insert(x));
                r.mac.map(|x| m.insert(x));
                r.license.map(|x| l.insert(x));
            }
            d
        })
        .collect()
}
