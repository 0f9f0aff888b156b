//! MongoDB's comparison and sort order for BSON values.
//!
//! MongoDB orders values of different types by a fixed "canonical type" order
//! (<https://www.mongodb.com/docs/manual/reference/bson-type-comparison-order/>):
//! MinKey < (Undefined) < Null < Numbers < Symbol, String < Object < Array < BinData < ObjectId <
//! Boolean < Date < Timestamp < Regular Expression < (DBPointer < JavaScript < JavaScript with
//! scope) < MaxKey. Within a type bracket values compare by content:
//!
//! * numbers of all four types compare by their mathematical value, so `1`, `NumberLong(1)`,
//!   `1.0` and `NumberDecimal("1.00")` are equal; NaN equals NaN and sorts below every other number.
//!   Comparisons are exact: mixed integer/double pairs use an exact integer-versus-float test and
//!   anything involving a decimal goes through an exact decimal expansion, so the order stays
//!   transitive even where `f64` would round;
//! * strings and symbols compare by their UTF-8 bytes (no collation);
//! * documents compare element by element (canonical type, then field name, then value), a
//!   prefix sorting first; arrays compare element by element the same way;
//! * BinData compares by length, then subtype, then bytes;
//! * timestamps compare as unsigned `(t, i)` pairs, dates as signed milliseconds.
//!
//! [`compare_values`] is a total order: every pair of values is comparable and the relation is
//! antisymmetric and transitive, which is what sorting and grouping rely on.

use std::cmp::Ordering;

use bson::{Bson, Document};

/// MongoDB's canonical type rank: values of different ranks compare by rank alone.
///
/// The numbers are those of MongoDB's `canonicalizeBSONType`, so ranks can be compared directly.
pub fn canonical_type(value: &Bson) -> i32 {
    match value {
        Bson::MinKey => -1,
        Bson::Undefined => 0,
        Bson::Null => 5,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 10,
        Bson::String(_) | Bson::Symbol(_) => 15,
        Bson::Document(_) => 20,
        Bson::Array(_) => 25,
        Bson::Binary(_) => 30,
        Bson::ObjectId(_) => 35,
        Bson::Boolean(_) => 40,
        Bson::DateTime(_) => 45,
        Bson::Timestamp(_) => 47,
        Bson::RegularExpression(_) => 50,
        Bson::DbPointer(_) => 55,
        Bson::JavaScriptCode(_) => 60,
        Bson::JavaScriptCodeWithScope(_) => 65,
        Bson::MaxKey => 100,
    }
}

/// Compares two values in MongoDB's BSON comparison order (a total order).
pub fn compare_values(a: &Bson, b: &Bson) -> Ordering {
    let ranks = canonical_type(a).cmp(&canonical_type(b));
    if ranks != Ordering::Equal {
        return ranks;
    }
    match (a, b) {
        (Bson::String(x) | Bson::Symbol(x), Bson::String(y) | Bson::Symbol(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Bson::Document(x), Bson::Document(y)) => compare_documents(x, y),
        (Bson::Array(x), Bson::Array(y)) => compare_arrays(x, y),
        (Bson::Binary(x), Bson::Binary(y)) => x
            .bytes
            .len()
            .cmp(&y.bytes.len())
            .then_with(|| u8::from(x.subtype).cmp(&u8::from(y.subtype)))
            .then_with(|| x.bytes.cmp(&y.bytes)),
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Bson::Boolean(x), Bson::Boolean(y)) => x.cmp(y),
        (Bson::DateTime(x), Bson::DateTime(y)) => x.timestamp_millis().cmp(&y.timestamp_millis()),
        (Bson::Timestamp(x), Bson::Timestamp(y)) => (x.time, x.increment).cmp(&(y.time, y.increment)),
        (Bson::RegularExpression(x), Bson::RegularExpression(y)) => x
            .pattern
            .as_bytes()
            .cmp(y.pattern.as_bytes())
            .then_with(|| x.options.as_bytes().cmp(y.options.as_bytes())),
        (Bson::JavaScriptCode(x), Bson::JavaScriptCode(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Bson::JavaScriptCodeWithScope(x), Bson::JavaScriptCodeWithScope(y)) => x
            .code
            .as_bytes()
            .cmp(y.code.as_bytes())
            .then_with(|| compare_documents(&x.scope, &y.scope)),
        (Bson::DbPointer(_), Bson::DbPointer(_)) => compare_db_pointers(a, b),
        _ => match (Number::of(a), Number::of(b)) {
            (Some(x), Some(y)) => compare_numbers(x, y),
            // Same rank and not numbers: MinKey, MaxKey, Null and Undefined are singletons.
            _ => Ordering::Equal,
        },
    }
}

/// Compares two documents element by element: canonical type, then field name, then value.
pub fn compare_documents(a: &Document, b: &Document) -> Ordering {
    let mut left = a.iter();
    let mut right = b.iter();
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some((ka, va)), Some((kb, vb))) => {
                let ord = canonical_type(va)
                    .cmp(&canonical_type(vb))
                    .then_with(|| ka.as_bytes().cmp(kb.as_bytes()))
                    .then_with(|| compare_values(va, vb));
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

/// Compares two arrays element by element (their implicit field names are equal position by position).
fn compare_arrays(a: &[Bson], b: &[Bson]) -> Ordering {
    for (x, y) in a.iter().zip(b.iter()) {
        let ord = compare_values(x, y);
        if ord != Ordering::Equal {
            return ord;
        }
    }
    a.len().cmp(&b.len())
}

/// DBPointer fields are not public in the bson crate, so they are read back from the encoded value:
/// MongoDB orders them by namespace length, then namespace bytes, then ObjectId.
fn compare_db_pointers(a: &Bson, b: &Bson) -> Ordering {
    fn encoded(value: &Bson) -> Vec<u8> {
        let mut doc = Document::new();
        doc.insert("", value.clone());
        let mut bytes = Vec::new();
        // Encoding an in-memory document into a Vec cannot fail; an empty encoding compares first.
        if doc.to_writer(&mut bytes).is_err() {
            return Vec::new();
        }
        // 4 bytes document length, 1 byte element type, 1 byte empty key terminator.
        bytes.get(6..).map(<[u8]>::to_vec).unwrap_or_default()
    }
    let (x, y) = (encoded(a), encoded(b));
    let len = |v: &[u8]| {
        v.get(..4)
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
            .map(i32::from_le_bytes)
            .unwrap_or(0)
    };
    len(&x).cmp(&len(&y)).then_with(|| x.get(4..).cmp(&y.get(4..)))
}

/// Whether two documents are identical: same fields in the same order with the same types and
/// values (unlike `==`, a NaN double is identical to a NaN double; `1` and `1.0` are not identical).
pub fn identical_documents(a: &Document, b: &Document) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && identical_values(va, vb))
}

/// Whether two values are identical (see [`identical_documents`]).
pub fn identical_values(a: &Bson, b: &Bson) -> bool {
    match (a, b) {
        (Bson::Double(x), Bson::Double(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
        (Bson::Document(x), Bson::Document(y)) => identical_documents(x, y),
        (Bson::Array(x), Bson::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| identical_values(p, q))
        }
        _ => a == b,
    }
}

/// A numeric BSON value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Number {
    /// An integer (int32 or int64).
    Int(i64),
    /// A double.
    Double(f64),
    /// A decimal128.
    Decimal(bson::Decimal128),
}

impl Number {
    /// The number held by `value`, if it is numeric.
    pub(crate) fn of(value: &Bson) -> Option<Number> {
        match value {
            Bson::Int32(v) => Some(Number::Int(i64::from(*v))),
            Bson::Int64(v) => Some(Number::Int(*v)),
            Bson::Double(v) => Some(Number::Double(*v)),
            Bson::Decimal128(v) => Some(Number::Decimal(*v)),
            _ => None,
        }
    }

    fn is_nan(&self) -> bool {
        match self {
            Number::Int(_) => false,
            Number::Double(v) => v.is_nan(),
            Number::Decimal(d) => d.to_string().ends_with("NaN"),
        }
    }
}

/// Compares two numbers by mathematical value; NaN equals NaN and is below everything else.
pub(crate) fn compare_numbers(a: Number, b: Number) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Less,
        (false, true) => return Ordering::Greater,
        (false, false) => {}
    }
    match (a, b) {
        (Number::Int(x), Number::Int(y)) => x.cmp(&y),
        (Number::Double(x), Number::Double(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        (Number::Int(x), Number::Double(y)) => compare_int_double(x, y),
        (Number::Double(x), Number::Int(y)) => compare_int_double(y, x).reverse(),
        _ => Exact::of(a).cmp(&Exact::of(b)),
    }
}

/// Exact comparison of an integer with a (non-NaN) double.
fn compare_int_double(i: i64, d: f64) -> Ordering {
    // 2^63 is exactly representable; every double at or above it exceeds every i64.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if d >= TWO_63 {
        return Ordering::Less;
    }
    if d < -TWO_63 {
        return Ordering::Greater;
    }
    let whole = double_trunc_to_i64(d);
    i.cmp(&whole).then_with(|| {
        let fraction = d - d.trunc();
        if fraction > 0.0 {
            Ordering::Less
        } else if fraction < 0.0 {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    })
}

/// Truncates a double already known to lie in `[-2^63, 2^63)` to an integer.
#[allow(clippy::cast_possible_truncation)] // the caller checked the range, and truncation is the intent
pub(crate) fn double_trunc_to_i64(d: f64) -> i64 {
    d.trunc() as i64
}

/// An exact decimal value used when a decimal128 takes part in a comparison.
#[derive(Debug, PartialEq, Eq)]
enum Exact {
    NegInfinity,
    /// `negative`, significant digits (no leading or trailing zeros; empty for zero), and the
    /// exponent `e` such that the value is `0.d1d2d3... * 10^e`.
    Finite(bool, Vec<u8>, i64),
    Infinity,
}

impl Exact {
    fn of(n: Number) -> Exact {
        match n {
            Number::Int(i) => Exact::parse(&i.to_string()),
            Number::Double(d) if d.is_infinite() => {
                if d > 0.0 {
                    Exact::Infinity
                } else {
                    Exact::NegInfinity
                }
            }
            // Rust prints the exact binary value when asked for enough digits (a double has at
            // most 767 significant decimal digits).
            Number::Double(d) => Exact::parse(&format!("{d:.800e}")),
            Number::Decimal(d) => Exact::parse(&d.to_string()),
        }
    }

    /// Parses `[-]digits[.digits][(e|E)[+|-]digits]` or an infinity spelling.
    fn parse(text: &str) -> Exact {
        let (negative, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        if body.eq_ignore_ascii_case("infinity") || body.eq_ignore_ascii_case("inf") {
            return if negative { Exact::NegInfinity } else { Exact::Infinity };
        }
        let (mantissa, exponent) = match body.find(['e', 'E']) {
            Some(pos) => (&body[..pos], body[pos + 1..].parse::<i64>().unwrap_or(0)),
            None => (body, 0),
        };
        let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let mut digits: Vec<u8> = int_part
            .bytes()
            .chain(frac_part.bytes())
            .filter(u8::is_ascii_digit)
            .map(|c| c - b'0')
            .collect();
        let int_len = i64::try_from(int_part.len()).unwrap_or(i64::MAX);
        // value = 0.(int_part frac_part) * 10^(int_len + exponent)
        let mut exp = int_len.saturating_add(exponent);
        let leading = digits.iter().take_while(|&&d| d == 0).count();
        digits.drain(..leading);
        exp = exp.saturating_sub(i64::try_from(leading).unwrap_or(i64::MAX));
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            return Exact::Finite(false, Vec::new(), 0);
        }
        Exact::Finite(negative, digits, exp)
    }

    fn cmp(&self, other: &Exact) -> Ordering {
        fn rank(e: &Exact) -> i32 {
            match e {
                Exact::NegInfinity => 0,
                Exact::Finite(true, d, _) if !d.is_empty() => 1,
                Exact::Finite(_, d, _) if d.is_empty() => 2,
                Exact::Finite(..) => 3,
                Exact::Infinity => 4,
            }
        }
        let by_rank = rank(self).cmp(&rank(other));
        if by_rank != Ordering::Equal {
            return by_rank;
        }
        match (self, other) {
            (Exact::Finite(neg, da, ea), Exact::Finite(_, db, eb)) if !da.is_empty() => {
                let magnitude = ea.cmp(eb).then_with(|| da.cmp(db));
                if *neg { magnitude.reverse() } else { magnitude }
            }
            _ => Ordering::Equal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{Binary, Decimal128, Timestamp, doc, oid::ObjectId, spec::BinarySubtype};

    fn dec(s: &str) -> Bson {
        Bson::Decimal128(s.parse::<Decimal128>().unwrap())
    }

    // https://www.mongodb.com/docs/manual/reference/bson-type-comparison-order/
    #[test]
    fn type_brackets_follow_documented_order() {
        let ordered = vec![
            Bson::MinKey,
            Bson::Null,
            Bson::Int32(5),
            Bson::String("a".into()),
            Bson::Document(doc! {}),
            Bson::Array(vec![]),
            Bson::Binary(Binary {
                subtype: BinarySubtype::Generic,
                bytes: vec![],
            }),
            Bson::ObjectId(ObjectId::from_bytes([0; 12])),
            Bson::Boolean(false),
            Bson::DateTime(bson::DateTime::from_millis(0)),
            Bson::Timestamp(Timestamp { time: 0, increment: 0 }),
            Bson::RegularExpression(bson::Regex {
                pattern: "a".into(),
                options: String::new(),
            }),
            Bson::MaxKey,
        ];
        for pair in ordered.windows(2) {
            assert_eq!(compare_values(&pair[0], &pair[1]), Ordering::Less, "{pair:?}");
            assert_eq!(compare_values(&pair[1], &pair[0]), Ordering::Greater, "{pair:?}");
        }
    }

    // "MongoDB treats some types as equivalent for comparison purposes. For instance, numeric
    // types undergo conversion before comparison." / symbols compare as strings.
    #[test]
    fn numbers_compare_by_value_across_types() {
        assert_eq!(compare_values(&Bson::Int32(1), &Bson::Double(1.0)), Ordering::Equal);
        assert_eq!(compare_values(&Bson::Int64(1), &dec("1.00")), Ordering::Equal);
        assert_eq!(compare_values(&Bson::Double(0.5), &Bson::Int32(1)), Ordering::Less);
        assert_eq!(compare_values(&dec("0.1"), &Bson::Double(0.1)), Ordering::Less); // 0.1 as double is 0.1000000000000000055...
        assert_eq!(
            compare_values(&dec("-Infinity"), &Bson::Int64(i64::MIN)),
            Ordering::Less
        );
        assert_eq!(
            compare_values(&Bson::Int64(i64::MAX), &Bson::Double(9_223_372_036_854_775_807.0)),
            Ordering::Less
        );
        assert_eq!(
            compare_values(&Bson::Double(f64::NAN), &Bson::Double(f64::NEG_INFINITY)),
            Ordering::Less
        );
        assert_eq!(compare_values(&Bson::Double(f64::NAN), &dec("NaN")), Ordering::Equal);
        assert_eq!(compare_values(&Bson::Double(-0.0), &Bson::Int32(0)), Ordering::Equal);
        assert_eq!(
            compare_values(&Bson::Symbol("b".into()), &Bson::String("a".into())),
            Ordering::Greater
        );
    }

    #[test]
    fn documents_and_arrays_compare_element_by_element() {
        // Field name matters after type: {a: 1} < {b: 1}; a prefix sorts first.
        assert_eq!(
            compare_values(&Bson::Document(doc! {"a": 1}), &Bson::Document(doc! {"b": 1})),
            Ordering::Less
        );
        assert_eq!(
            compare_values(&Bson::Document(doc! {"a": 1}), &Bson::Document(doc! {"a": 1, "b": 0})),
            Ordering::Less
        );
        // Type is compared before the field name: a string value sorts after a number value.
        assert_eq!(
            compare_values(&Bson::Document(doc! {"b": 1}), &Bson::Document(doc! {"a": "x"})),
            Ordering::Less
        );
        assert_eq!(
            compare_values(
                &Bson::Array(vec![1.into(), 2.into()]),
                &Bson::Array(vec![1.into(), 3.into()])
            ),
            Ordering::Less
        );
        assert_eq!(
            compare_values(&Bson::Array(vec![1.into()]), &Bson::Array(vec![1.into(), 0.into()])),
            Ordering::Less
        );
    }

    #[test]
    fn bindata_compares_length_then_subtype_then_bytes() {
        let bin = |subtype: BinarySubtype, bytes: Vec<u8>| Bson::Binary(Binary { subtype, bytes });
        assert_eq!(
            compare_values(
                &bin(BinarySubtype::UserDefined(0x80), vec![0]),
                &bin(BinarySubtype::Generic, vec![0, 0])
            ),
            Ordering::Less
        );
        assert_eq!(
            compare_values(
                &bin(BinarySubtype::Generic, vec![9]),
                &bin(BinarySubtype::Uuid, vec![0])
            ),
            Ordering::Less
        );
    }
}
