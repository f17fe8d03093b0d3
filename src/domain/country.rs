//! Countries (ISO 3166-1, via `celes`) and the vendor's sales regions.

use std::collections::HashMap;

use celes::LookupTable;
use std::fmt;

/// An ISO 3166-1 alpha-2 code, upper-case. Built only through [`CountryTable`].
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    pub fn as_str(&self) -> &str {
        // A Country is only made by `from_alpha2_unchecked`, which takes two
        // upper-case ASCII letters: always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    fn index(self) -> usize {
        usize::from(self.0[0] - b'A') * 26 + usize::from(self.0[1] - b'A')
    }

    /// Only for codes already known to be two upper-case ASCII letters.
    fn from_alpha2_unchecked(code: &str) -> Option<Country> {
        let b = code.as_bytes();
        (b.len() == 2 && b.iter().all(u8::is_ascii_uppercase)).then(|| Country([b[0], b[1]]))
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Country({})", self.as_str())
    }
}

/// The vendor's sales regions (SPEC §2.3).
#[derive(
    Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize, serde::Deserialize,
)]
pub enum Region {
    #[serde(rename = "AMER")]
    Amer,
    #[serde(rename = "EMEA")]
    Emea,
    #[serde(rename = "APAC")]
    Apac,
}

impl Region {
    pub const ALL: [Region; 3] = [Region::Amer, Region::Emea, Region::Apac];

    pub fn as_str(self) -> &'static str {
        match self {
            Region::Amer => "AMER",
            Region::Emea => "EMEA",
            Region::Apac => "APAC",
        }
    }

    pub fn parse(s: &str) -> Option<Region> {
        Region::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown country: expected an ISO 3166-1 alpha-2 or alpha-3 code or an English country name"
)]
pub struct CountryError;

/// Country look-up: ISO codes and names from `celes`, extra aliases and the
/// country → region map from the policy.
#[derive(Clone)]
pub struct CountryTable {
    /// alpha-2 look-up without allocation: index = (c0 - 'A') * 26 + (c1 - 'A').
    by_alpha2: Vec<Option<Country>>,
    /// Region per alpha-2 index.
    region: Vec<Option<Region>>,
    /// Normalised alpha-3 codes, names and aliases.
    by_name: HashMap<String, Country>,
}

impl fmt::Debug for CountryTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CountryTable")
    }
}

/// Lower-case letters and digits only: "Côte d'Ivoire" and "cote divoire" meet.
pub fn normalise_name(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

impl CountryTable {
    /// Builds the table. `regions` maps alpha-2 codes to regions; `aliases`
    /// maps extra names to alpha-2 codes. Returns the names that did not
    /// resolve, so the policy can report them.
    pub fn new<'a>(
        regions: impl IntoIterator<Item = (&'a str, Region)>,
        aliases: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<CountryTable, String> {
        let mut table = CountryTable {
            by_alpha2: vec![None; 26 * 26],
            region: vec![None; 26 * 26],
            by_name: HashMap::new(),
        };
        let iso = celes::Country::get_countries();
        // Aliases first, so that an official name always wins over another
        // country's alias (celes lists "samoa" as an alias of American Samoa).
        for c in &iso {
            for alias in c.aliases.iter() {
                if let Some(country) = Country::from_alpha2_unchecked(c.alpha2) {
                    table.by_name.insert(normalise_name(alias), country);
                }
            }
        }
        for c in &iso {
            let Some(country) = Country::from_alpha2_unchecked(c.alpha2) else {
                continue;
            };
            table.by_alpha2[country.index()] = Some(country);
            table.by_name.insert(normalise_name(c.alpha3), country);
            table.by_name.insert(normalise_name(c.long_name), country);
        }
        for (code, region) in regions {
            let country = Country::from_alpha2_unchecked(code.trim())
                .ok_or_else(|| format!("countries: `{code}` is not an upper-case alpha-2 code"))?;
            // The policy may name a code that ISO has not (yet) assigned, e.g. XK.
            table.by_alpha2[country.index()] = Some(country);
            table.region[country.index()] = Some(region);
        }
        for (alias, code) in aliases {
            let country = table.alpha2(code).ok_or_else(|| {
                format!("country_aliases: `{alias}` points to unknown code `{code}`")
            })?;
            table.by_name.insert(normalise_name(alias), country);
        }
        Ok(table)
    }

    fn alpha2(&self, code: &str) -> Option<Country> {
        let b = code.as_bytes();
        if b.len() != 2 || !b.iter().all(u8::is_ascii_alphabetic) {
            return None;
        }
        let i = usize::from(b[0].to_ascii_uppercase() - b'A') * 26
            + usize::from(b[1].to_ascii_uppercase() - b'A');
        self.by_alpha2[i]
    }

    /// Resolves an alpha-2 or alpha-3 code, an English name or a policy alias.
    pub fn parse(&self, input: &str) -> Result<Country, CountryError> {
        let s = super::trim(input);
        if let Some(c) = self.alpha2(s) {
            return Ok(c);
        }
        self.by_name
            .get(&normalise_name(s))
            .copied()
            .ok_or(CountryError)
    }

    pub fn region(&self, country: Country) -> Option<Region> {
        self.region[country.index()]
    }

    /// Every alpha-2 code the table knows.
    pub fn countries(&self) -> impl Iterator<Item = Country> + '_ {
        self.by_alpha2.iter().flatten().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> CountryTable {
        CountryTable::new(
            [
                ("US", Region::Amer),
                ("DE", Region::Emea),
                ("JP", Region::Apac),
                ("XK", Region::Emea),
            ],
            [("usa", "US"), ("uk", "GB")],
        )
        .unwrap()
    }

    #[test]
    fn codes_names_and_aliases() {
        let t = table();
        for s in ["US", "us", " USA ", "United States of America", "usa"] {
            assert_eq!(t.parse(s).unwrap().as_str(), "US", "{s}");
        }
        assert_eq!(t.parse("DEU").unwrap().as_str(), "DE");
        assert_eq!(t.parse("germany").unwrap().as_str(), "DE");
        assert_eq!(t.parse("UK").unwrap().as_str(), "GB");
        assert_eq!(t.parse("XK").unwrap().as_str(), "XK");
        assert_eq!(t.parse("Samoa").unwrap().as_str(), "WS");
        for s in ["", "ZZ", "Atlantis", "U S", "1", "ÉÉ"] {
            assert_eq!(t.parse(s), Err(CountryError), "{s:?}");
        }
    }

    #[test]
    fn regions() {
        let t = table();
        assert_eq!(t.region(t.parse("JP").unwrap()), Some(Region::Apac));
        assert_eq!(t.region(t.parse("GB").unwrap()), None);
    }
}
