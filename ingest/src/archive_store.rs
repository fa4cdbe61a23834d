//! Opening the archive's object store: a local directory or an S3-compatible bucket.
//!
//! Writer (`warden-sinks`) and readers (`warden sql`, `warden verify`) open the archive the same
//! way, from `[archive].url` and `[archive.s3]`. S3 credentials are never part of the config:
//! they come from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`), or from the instance / web-identity role when those are unset, exactly
//! as the AWS tools find them. `AWS_ENDPOINT`, `AWS_REGION` and `AWS_ALLOW_HTTP` are honoured
//! too; a value in `[archive.s3]` wins over the environment.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use serde::Deserialize;
use url::Url;

use crate::layout::ArchiveUrl;

/// `[archive.s3]`: how to reach an S3-compatible store (AWS, MinIO, Ceph, R2...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Options {
    /// Endpoint of an S3-compatible server, e.g. `http://minio:9000`; unset for AWS itself.
    pub endpoint: Option<String>,
    /// Region of the bucket; defaults to `AWS_REGION`, then `us-east-1`.
    pub region: Option<String>,
    /// Allows a plain `http://` endpoint (a server on a private network).
    pub allow_http: bool,
}

impl S3Options {
    /// Checks the section without IO; one message per problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(endpoint) = &self.endpoint {
            match Url::parse(endpoint) {
                Ok(url) if url.scheme() == "http" && !self.allow_http => errors.push(
                    "archive.s3.endpoint: is http:// but archive.s3.allow_http is false".to_owned(),
                ),
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                Ok(url) => errors.push(format!(
                    "archive.s3.endpoint: scheme {:?} is not http or https",
                    url.scheme()
                )),
                Err(err) => errors.push(format!("archive.s3.endpoint: {endpoint:?}: {err}")),
            }
        }
        if self.region.as_deref().is_some_and(str::is_empty) {
            errors.push("archive.s3.region: must not be empty when set".to_owned());
        }
        errors
    }
}

/// The archive's object store, opened.
#[derive(Debug, Clone)]
pub struct ArchiveStore {
    /// Rooted at the archive: keys read `events/dt=…/hour=…/….parquet`, `_warden/…`.
    pub root: Arc<dyn ObjectStore>,
    /// The same objects addressed from the bucket (or filesystem) root, for query engines that
    /// resolve table URLs themselves: it serves [`Self::url`]'s scheme and authority.
    pub bucket: Arc<dyn ObjectStore>,
    /// The archive root as a URL ending in `/` (`file:///abs/dir/`, `s3://bucket/prefix/`).
    pub url: Url,
}

impl ArchiveStore {
    /// Opens the archive at `url`, creating a local directory if needed. Does no network IO:
    /// an unreachable bucket shows up at the first read or write.
    pub fn open(url: &ArchiveUrl, s3: &S3Options) -> Result<Self, String> {
        match url {
            ArchiveUrl::Local(dir) => {
                let failed = |err: &dyn std::fmt::Display| format!("{}: {err}", dir.display());
                std::fs::create_dir_all(dir).map_err(|err| failed(&err))?;
                let dir = std::path::absolute(dir).map_err(|err| failed(&err))?;
                // Pruning deletes whole partitions: their emptied directories go too.
                let root = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|err| failed(&err))?
                    .with_automatic_cleanup(true);
                let url = Url::from_directory_path(&dir)
                    .map_err(|()| failed(&"not an absolute directory path"))?;
                Ok(Self {
                    root: Arc::new(root),
                    bucket: Arc::new(LocalFileSystem::new()),
                    url,
                })
            }
            ArchiveUrl::Remote(url) => {
                let failed = |err: &dyn std::fmt::Display| format!("{url}: {err}");
                let bucket_url = format!("s3://{}", url.host_str().unwrap_or_default());
                let mut builder = AmazonS3Builder::from_env().with_url(&bucket_url);
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(region) = &s3.region {
                    builder = builder.with_region(region);
                }
                if s3.allow_http {
                    builder = builder.with_allow_http(true);
                }
                let bucket: Arc<dyn ObjectStore> =
                    Arc::new(builder.build().map_err(|err| failed(&err))?);
                let prefix = url.path().trim_matches('/');
                let root: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    bucket.clone()
                } else {
                    Arc::new(PrefixStore::new(bucket.clone(), prefix))
                };
                let mut url = Url::parse(&bucket_url).map_err(|err| failed(&err))?;
                url.set_path(&if prefix.is_empty() {
                    "/".to_owned()
                } else {
                    format!("/{prefix}/")
                });
                Ok(Self { root, bucket, url })
            }
        }
    }

    /// The URL of `table`'s directory, ending in `/`.
    pub fn table_url(&self, table: &str) -> Url {
        let mut url = self.url.clone();
        url.set_path(&format!("{}{table}/", self.url.path()));
        url
    }

    /// The URL that [`Self::bucket`] serves (`s3://bucket`, `file:///`).
    pub fn bucket_url(&self) -> Url {
        let mut url = self.url.clone();
        url.set_path("/");
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_archives_are_rooted_at_their_absolute_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ArchiveStore::open(
            &ArchiveUrl::Local(dir.path().join("a")),
            &S3Options::default(),
        )
        .expect("open");
        assert!(store.url.as_str().starts_with("file:///"));
        assert!(store.url.as_str().ends_with("/a/"));
        assert!(store.table_url("events").as_str().ends_with("/a/events/"));
        assert_eq!(store.bucket_url().as_str(), "file:///");
    }

    #[test]
    fn s3_archives_split_bucket_and_prefix() {
        let s3 = S3Options {
            endpoint: Some("http://127.0.0.1:9".to_owned()),
            region: Some("eu-west-1".to_owned()),
            allow_http: true,
        };
        let url = ArchiveUrl::parse("s3://audit/warden/prod").expect("url");
        let store = ArchiveStore::open(&url, &s3).expect("open");
        assert_eq!(store.url.as_str(), "s3://audit/warden/prod/");
        assert_eq!(
            store.table_url("events").as_str(),
            "s3://audit/warden/prod/events/"
        );
        assert_eq!(store.bucket_url().as_str(), "s3://audit/");

        let url = ArchiveUrl::parse("s3://audit").expect("url");
        let store = ArchiveStore::open(&url, &s3).expect("open");
        assert_eq!(store.table_url("events").as_str(), "s3://audit/events/");
    }

    #[test]
    fn s3_options_name_their_problems() {
        let plain_http = S3Options {
            endpoint: Some("http://minio:9000".to_owned()),
            ..S3Options::default()
        };
        assert!(plain_http.validate()[0].contains("allow_http"));
        let ftp = S3Options {
            endpoint: Some("ftp://minio".to_owned()),
            ..S3Options::default()
        };
        assert!(ftp.validate()[0].contains("archive.s3.endpoint"));
        assert!(S3Options::default().validate().is_empty());
    }
}
