//! Syntax rules for the values of a region file: S3 bucket names, KMS key references, host
//! names and endpoint URLs. Each check returns the message for the field; the caller adds
//! file and field. Messages never echo a URL whole, since it could carry credentials.

use std::net::IpAddr;

use model::RegionId;
use url::Url;

/// S3 general-purpose bucket naming rules.
pub(crate) fn bucket_name(name: &str) -> Result<(), String> {
    let len = name.len();
    if !(3..=63).contains(&len) {
        return Err(format!(
            "bucket name `{name}` has {len} characters; S3 bucket names have 3 to 63"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "bucket name `{name}` contains `{bad}`; only lowercase letters, digits, `-` and `.` are allowed"
        ));
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    if !alnum(bytes[0]) || !alnum(bytes[len - 1]) {
        return Err(format!(
            "bucket name `{name}` must start and end with a lowercase letter or digit"
        ));
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return Err(format!(
            "bucket name `{name}` must not contain `..`, `.-` or `-.`"
        ));
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(format!("bucket name `{name}` must not be an IP address"));
    }
    for prefix in ["xn--", "sthree-"] {
        if name.starts_with(prefix) {
            return Err(format!(
                "bucket name `{name}` must not start with `{prefix}` (reserved by S3)"
            ));
        }
    }
    for suffix in ["-s3alias", "--ol-s3", ".mrap", "--x-s3"] {
        if name.ends_with(suffix) {
            return Err(format!(
                "bucket name `{name}` must not end with `{suffix}` (reserved by S3)"
            ));
        }
    }
    Ok(())
}

/// A KMS key of the region: `alias/<name>`, `arn:aws:kms:<region>:<account>:key/<id>` or
/// `arn:aws:kms:<region>:<account>:alias/<name>`. An ARN must be in `region`.
pub(crate) fn kms_key(key: &str, region: &RegionId) -> Result<(), String> {
    if let Some(name) = key.strip_prefix("alias/") {
        return alias_name(name);
    }
    if !key.starts_with("arn:") {
        return Err(format!(
            "`{key}` is not a KMS key reference: expected `alias/<name>` or `arn:aws:kms:<region>:<account>:key/<id>`"
        ));
    }
    let parts: Vec<&str> = key.splitn(6, ':').collect();
    let [_, partition, service, arn_region, account, resource] = parts[..] else {
        return Err(format!(
            "`{key}` is not a KMS key ARN: expected `arn:aws:kms:<region>:<account>:key/<id>`"
        ));
    };
    if !matches!(partition, "aws" | "aws-cn" | "aws-us-gov") {
        return Err(format!(
            "ARN partition `{partition}` is not an AWS partition"
        ));
    }
    if service != "kms" {
        return Err(format!("ARN is for service `{service}`, expected `kms`"));
    }
    if arn_region != region.as_str() {
        return Err(format!(
            "key is in {arn_region}, outside region {region}: each region uses its own KMS key"
        ));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "ARN account `{account}` is not a 12-digit AWS account id"
        ));
    }
    if let Some(id) = resource.strip_prefix("key/") {
        let ok = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok {
            Ok(())
        } else {
            Err(format!("`{id}` is not a KMS key id"))
        }
    } else if let Some(name) = resource.strip_prefix("alias/") {
        alias_name(name)
    } else {
        Err(format!(
            "ARN resource `{resource}` is neither `key/<id>` nor `alias/<name>`"
        ))
    }
}

fn alias_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("KMS alias name is empty: expected `alias/<name>`".to_owned());
    }
    if name.starts_with("aws/") {
        return Err(format!(
            "alias `alias/{name}` is an AWS-managed key; the region needs a key of its own"
        ));
    }
    if name.len() > 250
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'))
    {
        return Err(format!(
            "`alias/{name}` is not a valid KMS alias: letters, digits, `/`, `_` and `-`"
        ));
    }
    Ok(())
}

/// A database host: an IP address or a DNS name.
pub(crate) fn host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("host is empty".to_owned());
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if host.len() <= 253 && host.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!("`{host}` is not a host name or IP address"))
    }
}

/// The region label of an RDS host, `<name>.<id>.<region>.rds.amazonaws.com`; `None` when the
/// host is not an RDS host.
pub(crate) fn rds_region(host: &str) -> Option<Result<&str, String>> {
    let rest = host.to_ascii_lowercase();
    if !rest.ends_with(".rds.amazonaws.com") {
        return None;
    }
    let prefix = &host[..host.len() - ".rds.amazonaws.com".len()];
    Some(match prefix.rsplit_once('.') {
        Some((_, region)) if !region.is_empty() => Ok(region),
        _ => Err(format!(
            "RDS host `{host}` has no region label: expected `<name>.<id>.<region>.rds.amazonaws.com`"
        )),
    })
}

/// Which schemes an endpoint accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Schemes {
    HttpsOnly,
    HttpOrHttps,
}

/// An endpoint base URL: the scheme allowed, a host, no credentials, query, fragment or path.
pub(crate) fn endpoint(raw: &str, schemes: Schemes) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|err| format!("not a valid URL: {err}"))?;
    match (url.scheme(), schemes) {
        ("https", _) | ("http", Schemes::HttpOrHttps) => {}
        (scheme, Schemes::HttpsOnly) => {
            return Err(format!(
                "scheme is `{scheme}`; the public endpoint must use https"
            ));
        }
        (scheme, Schemes::HttpOrHttps) => {
            return Err(format!("scheme is `{scheme}`; expected http or https"));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URL must not carry user information".to_owned());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("URL has no host".to_owned());
    }
    if url.port() == Some(0) {
        return Err("URL port must not be 0".to_owned());
    }
    if url.query().is_some() {
        return Err("URL must not have a query".to_owned());
    }
    if url.fragment().is_some() {
        return Err("URL must not have a fragment".to_owned());
    }
    if !matches!(url.path(), "" | "/") {
        return Err(format!(
            "URL path is `{}`; an endpoint is a base URL with no path",
            url.path()
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: &str) -> RegionId {
        RegionId::parse(id).expect("valid region id")
    }

    #[test]
    fn bucket_names() {
        for good in [
            "abc",
            "residency-eu-central-1-data",
            "a.b-c.d1",
            &"a".repeat(63),
        ] {
            assert_eq!(bucket_name(good), Ok(()), "{good}");
        }
        for bad in [
            "ab",
            &"a".repeat(64),
            "Residency-data",
            "residency_data",
            "-residency",
            "residency-",
            ".residency",
            "res..idency",
            "res.-idency",
            "192.168.5.4",
            "xn--residency",
            "sthree-residency",
            "residency-s3alias",
            "residency--ol-s3",
        ] {
            assert!(bucket_name(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn kms_keys() {
        let eu = region("eu-central-1");
        for good in [
            "alias/residency-eu-central-1",
            "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:eu-central-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab",
            "arn:aws:kms:eu-central-1:123456789012:alias/residency",
        ] {
            assert_eq!(kms_key(good, &eu), Ok(()), "{good}");
        }
        for bad in [
            "",
            "alias/",
            "alias/aws/s3",
            "alias/has space",
            "residency-key",
            "arn:aws:kms:eu-central-1:123456789012",
            "arn:aws:s3:eu-central-1:123456789012:key/abc",
            "arn:aws:kms:eu-central-1:12345:key/abc",
            "arn:aws:kms:eu-central-1:123456789012:key/",
            "arn:aws:kms:eu-central-1:123456789012:grant/abc",
            "arn:other:kms:eu-central-1:123456789012:key/abc",
        ] {
            assert!(kms_key(bad, &eu).is_err(), "{bad} should be refused");
        }
        let err = kms_key("arn:aws:kms:us-east-1:123456789012:key/abc", &eu)
            .expect_err("key from another region");
        assert!(
            err.contains("us-east-1, outside region eu-central-1"),
            "{err}"
        );
    }

    #[test]
    fn hosts() {
        for good in ["127.0.0.1", "::1", "localhost", "db-1.example.com"] {
            assert_eq!(host(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "db host",
            "-db.example.com",
            "db..example.com",
            "db_1.example.com",
        ] {
            assert!(host(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn rds_region_labels() {
        assert_eq!(rds_region("localhost"), None);
        assert_eq!(
            rds_region("residency.c9akciq32.eu-west-1.rds.amazonaws.com"),
            Some(Ok("eu-west-1"))
        );
        assert!(matches!(rds_region("x.rds.amazonaws.com"), Some(Err(_))));
    }

    #[test]
    fn endpoints() {
        let ok = endpoint("https://eu-west-1.api.example.com", Schemes::HttpsOnly)
            .expect("valid public endpoint");
        assert_eq!(ok.host_str(), Some("eu-west-1.api.example.com"));
        endpoint("http://10.0.0.1:8080/", Schemes::HttpOrHttps).expect("valid internal endpoint");
        for (bad, schemes) in [
            ("http://api.example.com", Schemes::HttpsOnly),
            ("ftp://api.example.com", Schemes::HttpOrHttps),
            ("api.example.com", Schemes::HttpsOnly),
            ("https://user:pw@api.example.com", Schemes::HttpsOnly),
            ("https://api.example.com/v1", Schemes::HttpsOnly),
            ("https://api.example.com/?a=b", Schemes::HttpsOnly),
            ("https://api.example.com/#top", Schemes::HttpsOnly),
            ("https://api.example.com:0", Schemes::HttpsOnly),
        ] {
            assert!(endpoint(bad, schemes).is_err(), "{bad} should be refused");
        }
        let err = endpoint("https://user:hunter2@api.example.com", Schemes::HttpsOnly)
            .expect_err("credentials in URL");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
