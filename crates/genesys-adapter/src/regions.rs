//! Genesys Cloud regions: the region code → environment domain table and the API/login base URLs
//! derived from it (`https://api.{domain}`, `https://login.{domain}`).
//!
//! The table is the one in `shared/reference/genesys-api.md` (JS SDK `PureCloudRegionHosts`, Go SDK
//! constants); there is no `mygen.com` host.

use std::fmt;
use std::str::FromStr;

use url::Url;

use crate::error::GenesysError;

/// Every known region as `(code, domain)`, in the reference's order.
const REGIONS: [(&str, &str); 18] = [
    ("us-east-1", "mypurecloud.com"),
    ("us-east-2", "use2.us-gov-pure.cloud"),
    ("us-west-2", "usw2.pure.cloud"),
    ("ca-central-1", "cac1.pure.cloud"),
    ("sa-east-1", "sae1.pure.cloud"),
    ("mx-central-1", "mxc1.pure.cloud"),
    ("eu-west-1", "mypurecloud.ie"),
    ("eu-west-2", "euw2.pure.cloud"),
    ("eu-central-1", "mypurecloud.de"),
    ("eu-central-2", "euc2.pure.cloud"),
    ("eusc-de-east-1", "edee1.eusc-pure.cloud"),
    ("me-central-1", "mec1.pure.cloud"),
    ("ap-south-1", "aps1.pure.cloud"),
    ("ap-southeast-1", "apse1.pure.cloud"),
    ("ap-southeast-2", "mypurecloud.com.au"),
    ("ap-northeast-1", "mypurecloud.jp"),
    ("ap-northeast-2", "apne2.pure.cloud"),
    ("ap-northeast-3", "apne3.pure.cloud"),
];

/// A Genesys Cloud region (one row of the region table). `Default` is `us-east-1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region {
    code: &'static str,
    domain: &'static str,
}

impl Region {
    /// Parses a region code (`eu-west-1`) or an environment domain (`mypurecloud.ie`,
    /// `usw2.pure.cloud`), ignoring case and surrounding whitespace.
    ///
    /// # Errors
    /// [`GenesysError::UnknownRegion`], whose message lists the known codes.
    pub fn parse(code_or_domain: &str) -> Result<Self, GenesysError> {
        let wanted = code_or_domain.trim().to_ascii_lowercase();
        Self::all().find(|r| r.code == wanted || r.domain == wanted).ok_or_else(|| GenesysError::UnknownRegion {
            given: code_or_domain.trim().chars().take(64).collect(),
            known: Self::known_codes(),
        })
    }

    /// Every known region, in the reference's order.
    pub fn all() -> impl Iterator<Item = Region> {
        REGIONS.iter().map(|&(code, domain)| Region { code, domain })
    }

    /// The known region codes, comma-separated (for error messages and `--help`).
    pub fn known_codes() -> String {
        REGIONS.iter().map(|(code, _)| *code).collect::<Vec<_>>().join(", ")
    }

    /// The region code, e.g. `eu-west-1`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The environment domain, e.g. `mypurecloud.ie`.
    pub fn domain(&self) -> &'static str {
        self.domain
    }

    /// `https://api.{domain}`.
    pub fn api_base(&self) -> Url {
        Self::https(&format!("api.{}", self.domain))
    }

    /// `https://login.{domain}`.
    pub fn login_base(&self) -> Url {
        Self::https(&format!("login.{}", self.domain))
    }

    fn https(host: &str) -> Url {
        match Url::parse(&format!("https://{host}")) {
            Ok(url) => url,
            // Every table domain is a valid host name; the unit tests parse all of them.
            Err(_) => unreachable!("region table holds an invalid host {host}"),
        }
    }
}

impl Default for Region {
    fn default() -> Self {
        Region { code: REGIONS[0].0, domain: REGIONS[0].1 }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl FromStr for Region {
    type Err = GenesysError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_the_eighteen_reference_regions_each_once() {
        // Arrange
        let codes: std::collections::HashSet<_> = Region::all().map(|r| r.code()).collect();
        let domains: std::collections::HashSet<_> = Region::all().map(|r| r.domain()).collect();

        // Assert
        assert_eq!(Region::all().count(), 18);
        assert_eq!(codes.len(), 18);
        assert_eq!(domains.len(), 18);
    }

    #[test]
    fn region_codes_and_domains_both_parse_to_the_same_region() {
        for (input, code, api, login) in [
            ("eu-west-1", "eu-west-1", "https://api.mypurecloud.ie/", "https://login.mypurecloud.ie/"),
            ("mypurecloud.ie", "eu-west-1", "https://api.mypurecloud.ie/", "https://login.mypurecloud.ie/"),
            ("usw2.pure.cloud", "us-west-2", "https://api.usw2.pure.cloud/", "https://login.usw2.pure.cloud/"),
            (
                " AP-SOUTHEAST-2 ",
                "ap-southeast-2",
                "https://api.mypurecloud.com.au/",
                "https://login.mypurecloud.com.au/",
            ),
            ("us-east-2", "us-east-2", "https://api.use2.us-gov-pure.cloud/", "https://login.use2.us-gov-pure.cloud/"),
            (
                "edee1.eusc-pure.cloud",
                "eusc-de-east-1",
                "https://api.edee1.eusc-pure.cloud/",
                "https://login.edee1.eusc-pure.cloud/",
            ),
        ] {
            // Act
            let region = Region::parse(input).unwrap_or_else(|e| panic!("{input:?} did not parse: {e}"));

            // Assert
            assert_eq!(region.code(), code, "{input:?}");
            assert_eq!(region.api_base().as_str(), api, "{input:?}");
            assert_eq!(region.login_base().as_str(), login, "{input:?}");
        }
    }

    #[test]
    fn every_region_has_valid_api_and_login_hosts() {
        for region in Region::all() {
            assert_eq!(region.api_base().host_str(), Some(format!("api.{}", region.domain()).as_str()));
            assert_eq!(region.login_base().host_str(), Some(format!("login.{}", region.domain()).as_str()));
            assert_eq!(Region::parse(region.domain()), Ok(region));
        }
    }

    #[test]
    fn the_default_region_is_us_east_1() {
        assert_eq!(Region::default().code(), "us-east-1");
        assert_eq!(Region::default().domain(), "mypurecloud.com");
    }

    #[test]
    fn an_unknown_region_is_an_error_listing_the_known_codes() {
        // Act
        let error = Region::parse("mygen.com").unwrap_err();

        // Assert
        let message = error.to_string();
        assert!(message.contains("mygen.com"), "{message}");
        for region in Region::all() {
            assert!(message.contains(region.code()), "{message} lacks {}", region.code());
        }
    }
}
