//! Country of an IP address, from a MaxMind GeoIP2 / GeoLite2 database (or any MaxMind DB
//! with `country.iso_code`).
//!
//! The database is memory-mapped: a City database is tens of megabytes and only the pages
//! lookups touch are read. A map is only sound while nobody writes into the file, so replace
//! a database the way `geoipupdate` does (write a new file, rename it over the old one; the
//! map keeps the old file until Warden restarts) and never edit it in place.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{MaxMindDbError, Mmap, Reader, path};

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("GeoIP database {path}: {source}")]
pub struct GeoIpError {
    path: PathBuf,
    source: MaxMindDbError,
}

/// An open GeoIP database.
pub struct GeoIp {
    reader: Reader<Mmap>,
    path: PathBuf,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp").field("path", &self.path).finish()
    }
}

impl GeoIp {
    /// Maps the database at `path` and checks its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GeoIpError> {
        let path = path.as_ref().to_path_buf();
        #[expect(
            unsafe_code,
            reason = "memory-mapping the database is unsafe only if the file is written while \
                      mapped; the module docs require replacing it by rename, as geoipupdate does"
        )]
        // SAFETY: see the reason above: the file is replaced by rename, never written in place.
        let reader = unsafe { Reader::open_mmap(&path) };
        let reader = reader.map_err(|source| GeoIpError {
            path: path.clone(),
            source,
        })?;
        Ok(Self { reader, path })
    }

    /// The ISO 3166-1 alpha-2 code of the country of `ip` (e.g. "DE"), if the database knows
    /// it.
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        let found = self.reader.lookup(ip).ok()?;
        found
            .decode_path::<String>(&path!["country", "iso_code"])
            .ok()
            .flatten()
    }

    /// The database's type, from its metadata (e.g. "GeoLite2-Country").
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }
}
