//! Where a call goes on its target: an [`UpstreamPath`] is a list of path segments pushed
//! one by one onto the target's base URL, never a string joined onto it.
//!
//! `Url::join` resolves its argument as a relative *reference*: `http://other-host/x`,
//! `//other-host/x`, `\\other-host` and `../../other-model` all leave the base, taking the
//! target's token with them. Pass-through paths come from callers, so they are split into
//! segments, each percent-decoded once and refused if it could mean anything but one plain
//! path segment; then every segment is pushed (and so re-encoded) below the base. The
//! result is checked to keep the base's origin and path prefix before anything is sent.

use percent_encoding::percent_decode_str;
use url::Url;

/// A path below a target's base URL, as segments that are each exactly one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpstreamPath {
    segments: Vec<String>,
}

/// Why a caller's pass-through path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathRejected {
    #[error("the path has an empty segment")]
    Empty,
    #[error("the path has a '.' or '..' segment")]
    DotSegment,
    #[error("a path segment holds {0:?}, which pass-through does not forward")]
    Forbidden(char),
    #[error("a path segment holds a control character")]
    Control,
    #[error("a path segment is not valid percent-encoded UTF-8")]
    NotUtf8,
    #[error("the path has more than {MAX_SEGMENTS} segments")]
    TooLong,
}

/// Most segments a caller's path may have (TGI's and HF's own paths have at most four).
const MAX_SEGMENTS: usize = 32;

impl UpstreamPath {
    /// A path Warden itself chose (`v1/chat/completions`): split on `/`, empty parts skipped.
    pub(crate) fn trusted(path: &str) -> Self {
        Self {
            segments: path
                .split('/')
                .filter(|segment| !segment.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }

    /// A caller's path as it came in on the wire (still percent-encoded, without the query),
    /// empty for the target's root. One trailing `/` is ignored.
    pub(crate) fn from_caller(raw: &str) -> Result<Self, PathRejected> {
        let raw = raw.strip_prefix('/').unwrap_or(raw);
        let raw = raw.strip_suffix('/').unwrap_or(raw);
        if raw.is_empty() {
            return Ok(Self {
                segments: Vec::new(),
            });
        }
        let mut segments = Vec::new();
        for encoded in raw.split('/') {
            if segments.len() == MAX_SEGMENTS {
                return Err(PathRejected::TooLong);
            }
            segments.push(decode_segment(encoded)?);
        }
        Ok(Self { segments })
    }

    /// This path below `prefix` (a trusted path, such as `models/{model}`).
    pub(crate) fn below(mut self, prefix: &str) -> Self {
        let mut segments = Self::trusted(prefix).segments;
        segments.append(&mut self.segments);
        self.segments = segments;
        self
    }

    /// The path as `a/b/c`, for logs and metric labels.
    pub(crate) fn as_relative(&self) -> String {
        self.segments.join("/")
    }

    /// The URL this path names on `base` (which ends with `/`). Fails only if the result
    /// would not stay below `base`, which validated segments cannot cause.
    pub(crate) fn on(&self, base: &Url) -> Result<Url, String> {
        debug_assert!(base.path().ends_with('/'), "target base URLs end with '/'");
        let mut url = base.clone();
        if self.segments.is_empty() {
            return Ok(url);
        }
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| format!("base URL {base} cannot have a path"))?;
            // The base ends with '/', which is an empty last segment: replace it.
            path.pop_if_empty();
            for segment in &self.segments {
                path.push(segment);
            }
        }
        let stays_below = url.origin() == base.origin()
            && url.path().starts_with(base.path())
            && url.query().is_none()
            && url.fragment().is_none();
        if stays_below {
            Ok(url)
        } else {
            Err(format!("path {:?} leaves the target", self.as_relative()))
        }
    }
}

/// One caller segment, decoded once and refused unless it is a plain name.
fn decode_segment(encoded: &str) -> Result<String, PathRejected> {
    let decoded = percent_decode_str(encoded)
        .decode_utf8()
        .map_err(|_| PathRejected::NotUtf8)?;
    match decoded.as_ref() {
        "" => return Err(PathRejected::Empty),
        "." | ".." => return Err(PathRejected::DotSegment),
        _ => {}
    }
    for character in decoded.chars() {
        if character.is_control() {
            return Err(PathRejected::Control);
        }
        // '/' and '\' would split (or, to some servers, start) a path; ':' a scheme or a
        // Windows drive; '%' a second round of decoding upstream.
        if matches!(character, '/' | '\\' | ':' | '%') {
            return Err(PathRejected::Forbidden(character));
        }
    }
    Ok(decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn base() -> Url {
        Url::parse("http://upstream.test:3000/base/").expect("url")
    }

    #[test]
    fn plain_paths_land_below_the_base() {
        let url = |raw: &str| {
            UpstreamPath::from_caller(raw)
                .expect("valid")
                .on(&base())
                .expect("below")
                .to_string()
        };
        assert_eq!(url(""), "http://upstream.test:3000/base/");
        assert_eq!(url("/generate"), "http://upstream.test:3000/base/generate");
        assert_eq!(
            url("/pipeline/feature-extraction/"),
            "http://upstream.test:3000/base/pipeline/feature-extraction"
        );
        let serverless = UpstreamPath::from_caller("/pipeline/x")
            .expect("valid")
            .below("models/org/model");
        assert_eq!(
            serverless.on(&base()).expect("below").path(),
            "/base/models/org/model/pipeline/x"
        );
        assert_eq!(
            UpstreamPath::trusted("v1/chat/completions")
                .on(&base())
                .expect("below")
                .path(),
            "/base/v1/chat/completions"
        );
    }

    #[test]
    fn paths_that_could_leave_the_target_are_refused() {
        let cases: [(&str, PathRejected); 12] = [
            ("/http:%2F%2Fother-host/x", PathRejected::Forbidden(':')),
            ("/http%3A%2F%2Fother-host", PathRejected::Forbidden(':')),
            ("/%5C%5Cother-host/x", PathRejected::Forbidden('\\')),
            ("/\\\\other-host", PathRejected::Forbidden('\\')),
            ("/..", PathRejected::DotSegment),
            ("/%2e%2e/other-model", PathRejected::DotSegment),
            ("/%2E", PathRejected::DotSegment),
            ("/a//b", PathRejected::Empty),
            ("//other-host/x", PathRejected::Empty),
            ("/a%2Fb", PathRejected::Forbidden('/')),
            ("/a%0ab", PathRejected::Control),
            ("/%252e%252e", PathRejected::Forbidden('%')),
        ];
        for (raw, expected) in cases {
            assert_eq!(UpstreamPath::from_caller(raw), Err(expected), "{raw}");
        }
        assert_eq!(
            UpstreamPath::from_caller("/%ff"),
            Err(PathRejected::NotUtf8)
        );
        assert_eq!(
            UpstreamPath::from_caller(&"/a".repeat(MAX_SEGMENTS + 1)),
            Err(PathRejected::TooLong)
        );
    }

    proptest! {
        /// Whatever a caller sends, an accepted path stays on the base's origin and below its
        /// path, with no query or fragment.
        #[test]
        fn no_caller_path_leaves_the_target(
            parts in proptest::collection::vec(
                prop_oneof![
                    "[a-zA-Z0-9_.~-]{0,8}",
                    "(%[0-9a-fA-F]{2}){1,4}",
                    Just("..".to_owned()),
                    Just("%2e%2e".to_owned()),
                    Just("?x=1".to_owned()),
                    Just("#frag".to_owned()),
                    Just("@evil".to_owned()),
                    Just("http:".to_owned()),
                    Just("\\".to_owned()),
                    "\\PC{0,4}",
                ],
                0..8,
            ),
        ) {
            let raw = format!("/{}", parts.join("/"));
            if let Ok(path) = UpstreamPath::from_caller(&raw) {
                let url = path.on(&base()).expect("an accepted path stays below the base");
                prop_assert_eq!(url.origin(), base().origin());
                prop_assert!(url.path().starts_with("/base/"));
                prop_assert!(url.query().is_none() && url.fragment().is_none());
                // Nothing the upstream could decode into another segment.
                let below = &url.path()["/base/".len()..];
                prop_assert_eq!(below.split('/').filter(|s| !s.is_empty()).count(),
                    path.as_relative().split('/').filter(|s| !s.is_empty()).count());
            }
        }
    }
}
