//! The two byte-range headers clients send: `Range` on a blob GET (RFC 9110
//! §14) and `Content-Range` on an upload chunk (docker's `<start>-<end>`).
//! Both are client bytes: anything at all parses to an answer, never a panic
//! or an overflow.

use crate::registry::{
    error::{Code, Error},
    upload::ChunkRange,
};

/// What a blob GET's `Range` header asks of a blob of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No range to honour: the whole blob, 200. A malformed header, another
    /// unit, or several ranges (a server may ignore any Range, RFC 9110 §14.2).
    Whole,
    /// One satisfiable range, 206.
    Part { start: u64, len: u64 },
    /// A well-formed range that misses the blob, 416.
    Unsatisfiable,
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n`, against a blob of `size` bytes.
pub fn parse_range(value: &str, size: u64) -> RangeRequest {
    let value = value.trim();
    let Some(set) = value
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case("bytes="))
        .map(|_| &value[6..])
    else {
        return RangeRequest::Whole;
    };
    if set.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    if first.is_empty() {
        // suffix-range: the last n bytes.
        return match position(last) {
            None => RangeRequest::Whole,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if size == 0 => RangeRequest::Unsatisfiable,
            Some(n) => {
                let len = n.min(size);
                RangeRequest::Part {
                    start: size - len,
                    len,
                }
            }
        };
    }
    let Some(start) = position(first) else {
        return RangeRequest::Whole;
    };
    let last = if last.is_empty() {
        u64::MAX
    } else {
        match position(last) {
            Some(l) => l,
            None => return RangeRequest::Whole,
        }
    };
    if last < start {
        // Invalid, not unsatisfiable (RFC 9110 §14.1.1): ignored.
        return RangeRequest::Whole;
    }
    if start >= size {
        return RangeRequest::Unsatisfiable;
    }
    let end = last.min(size - 1);
    RangeRequest::Part {
        start,
        len: end - start + 1,
    }
}

/// A byte position: ASCII digits only (no sign, no spaces). One too large
/// for a u64 is past any blob's end, so it saturates.
fn position(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().unwrap_or(u64::MAX))
}

/// An upload chunk's `Content-Range: <start>-<end>` (docker's form;
/// `bytes `/`bytes=` before it and `/<total>` after it are tolerated).
/// Malformed: 400 BLOB_UPLOAD_INVALID. Backwards (`end < start`) or too
/// long for any upload (`0-18446744073709551615`): 416 RANGE_INVALID, as
/// distribution answers a range it cannot take.
pub fn parse_content_range(value: &str) -> Result<ChunkRange, Error> {
    let shown: String = value.chars().take(100).collect();
    let malformed = || {
        Error::new(
            Code::BlobUploadInvalid,
            format!("malformed Content-Range {shown:?}"),
        )
    };
    let mut v = value.trim();
    if let Some(rest) = v
        .get(..5)
        .filter(|unit| unit.eq_ignore_ascii_case("bytes"))
        .map(|_| &v[5..])
    {
        v = rest
            .strip_prefix(['=', ' '])
            .ok_or_else(malformed)?
            .trim_start();
    }
    let v = v.split_once('/').map_or(v, |(range, _total)| range);
    let (a, b) = v.split_once('-').ok_or_else(malformed)?;
    let number = |s: &str| {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        // All digits, so the only failure left is a value past u64::MAX.
        s.parse::<u64>().map_err(|_| unsatisfiable(&shown))
    };
    let (start, end) = (number(a)?, number(b)?);
    ChunkRange::new(start, end).ok_or_else(|| unsatisfiable(&shown))
}

fn unsatisfiable(shown: &str) -> Error {
    Error::new(
        Code::RangeInvalid,
        format!("Content-Range {shown:?} is not a range of an upload"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn part(start: u64, len: u64) -> RangeRequest {
        RangeRequest::Part { start, len }
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), part(0, 10));
        assert_eq!(parse_range("bytes=90-", 100), part(90, 10));
        assert_eq!(parse_range("bytes=-5", 100), part(95, 5));
        assert_eq!(parse_range("bytes=-500", 100), part(0, 100));
        assert_eq!(parse_range("bytes=50-500", 100), part(50, 50));
        assert_eq!(parse_range("BYTES=1-1", 100), part(1, 1));
        assert_eq!(
            parse_range("bytes=99999999999999999999999-", 100),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(parse_range("bytes=100-", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), RangeRequest::Unsatisfiable);
        // Malformed or not ours: ignored, the whole blob.
        for ignored in [
            "bytes=5-2",
            "items=0-1",
            "bytes=0-1,4-5",
            "bytes=",
            "bytes=-",
            "bytes=+1-2",
            "bytes=1--2",
            "bytes=a-b",
            "bytes=0x10-",
            "bytes 0-1",
            "",
        ] {
            assert_eq!(parse_range(ignored, 100), RangeRequest::Whole, "{ignored}");
        }
    }

    #[test]
    fn content_ranges() {
        let r = parse_content_range("0-9").unwrap();
        assert_eq!((r.start(), r.end(), r.length()), (0, 9, 10));
        for same in [
            "bytes 0-9",
            "bytes=0-9",
            "bytes 0-9/10",
            "bytes 0-9/*",
            " 0 - 9 ",
        ] {
            assert_eq!(parse_content_range(same).unwrap(), r, "{same}");
        }
        let code = |v: &str| parse_content_range(v).unwrap_err().code;
        assert_eq!(code("5-2"), Code::RangeInvalid);
        assert_eq!(code("0-18446744073709551615"), Code::RangeInvalid);
        assert_eq!(code("0-18446744073709551616"), Code::RangeInvalid);
        let r = parse_content_range("1-18446744073709551615").unwrap();
        assert_eq!(r.length(), u64::MAX);
        for bad in [
            "",
            "-",
            "5",
            "a-b",
            "+1-2",
            "1-+2",
            "bytes",
            "bytesx0-1",
            "0x1-2",
        ] {
            assert_eq!(code(bad), Code::BlobUploadInvalid, "{bad}");
        }
    }

    /// Strings that look like range headers, with the odd stray byte.
    fn rangeish() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ ]{0,2}(bytes|BYTES|items|)[= ]?[0-9 ,+-]{0,30}",
            "(bytes=)?[0-9]{0,25}-[0-9]{0,25}(/[0-9*]{0,5})?",
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Any header, any size: an answer within the blob, never a panic.
        #[test]
        fn range_answers_stay_within_the_blob(value in rangeish(), size in prop_oneof![Just(0u64), 0u64..1000, any::<u64>()]) {
            match parse_range(&value, size) {
                RangeRequest::Part { start, len } => {
                    prop_assert!(len >= 1);
                    prop_assert!(start < size);
                    prop_assert!(len <= size - start);
                }
                RangeRequest::Whole | RangeRequest::Unsatisfiable => {}
            }
        }

        /// A well-formed `bytes=a-b` is honoured exactly as RFC 9110 reads it.
        #[test]
        fn int_ranges_are_read_exactly(a in any::<u64>(), b in any::<u64>(), size in any::<u64>()) {
            let got = parse_range(&format!("bytes={a}-{b}"), size);
            let want = if b < a {
                RangeRequest::Whole
            } else if a >= size {
                RangeRequest::Unsatisfiable
            } else {
                part(a, b.min(size - 1) - a + 1)
            };
            prop_assert_eq!(got, want);
        }

        /// Any Content-Range: a chunk whose length fits, or the spec's error.
        #[test]
        fn content_range_never_overflows(value in rangeish()) {
            match parse_content_range(&value) {
                Ok(r) => {
                    prop_assert!(r.length() >= 1);
                    prop_assert_eq!(r.end() - r.start() + 1, r.length());
                }
                Err(e) => prop_assert!(
                    matches!(e.code, Code::BlobUploadInvalid | Code::RangeInvalid),
                    "{e}"
                ),
            }
        }

        /// `start-end` round-trips, whatever the numbers.
        #[test]
        fn content_range_round_trips(start in any::<u64>(), end in any::<u64>()) {
            let got = parse_content_range(&format!("{start}-{end}"));
            match ChunkRange::new(start, end) {
                Some(r) => prop_assert_eq!(got.unwrap(), r),
                None => prop_assert_eq!(got.unwrap_err().code, Code::RangeInvalid),
            }
        }
    }
}
