//! Numeric arithmetic with MongoDB's type promotion.
//!
//! `$inc`, `$mul`, `$add`, `$multiply` and `$sum` combine numbers of possibly different types. The
//! result has the "widest" operand type: int32 < int64 < double < decimal128. An int32 result that
//! overflows becomes an int64; an int64 result that overflows is an error for update operators
//! (MongoDB refuses to lose precision silently) and becomes a double in aggregation. Decimal
//! arithmetic is done exactly on decimal digit strings and rounded once to decimal128's 34
//! significant digits (half to even); only NaN/infinity operands and results outside
//! decimal128's exponent range go through a double.

use bson::{Bson, Decimal128};

use crate::compare::Number;

/// How an operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithError {
    /// An operand is not a number.
    NonNumeric,
    /// An int64 result overflowed (update operators only).
    Overflow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Mul,
}

/// `a + b` for aggregation (int64 overflow becomes double); `None` for non-numbers.
pub(crate) fn add_numbers(a: &Bson, b: &Bson) -> Option<Bson> {
    arith(Op::Add, a, b, true).ok()
}

/// `a * b` for aggregation (int64 overflow becomes double); `None` for non-numbers.
pub(crate) fn multiply_numbers(a: &Bson, b: &Bson) -> Option<Bson> {
    arith(Op::Mul, a, b, true).ok()
}

/// `a + b` for `$inc`: int64 overflow is an error.
pub(crate) fn inc(a: &Bson, b: &Bson) -> Result<Bson, ArithError> {
    arith(Op::Add, a, b, false)
}

/// `a * b` for `$mul`: int64 overflow is an error.
pub(crate) fn mul(a: &Bson, b: &Bson) -> Result<Bson, ArithError> {
    arith(Op::Mul, a, b, false)
}

/// A number as a double (decimals round).
pub(crate) fn to_f64(value: &Bson) -> Option<f64> {
    match Number::of(value)? {
        Number::Int(i) => Some(i as f64),
        Number::Double(d) => Some(d),
        Number::Decimal(d) => d.to_string().parse().ok(),
    }
}

fn arith(op: Op, a: &Bson, b: &Bson, overflow_to_double: bool) -> Result<Bson, ArithError> {
    let (x, y) = match (Number::of(a), Number::of(b)) {
        (Some(x), Some(y)) => (x, y),
        _ => return Err(ArithError::NonNumeric),
    };
    let as_double = || -> Result<Bson, ArithError> {
        let (p, q) = (
            to_f64(a).ok_or(ArithError::NonNumeric)?,
            to_f64(b).ok_or(ArithError::NonNumeric)?,
        );
        Ok(Bson::Double(match op {
            Op::Add => p + q,
            Op::Mul => p * q,
        }))
    };
    match (x, y) {
        (Number::Decimal(_), _) | (_, Number::Decimal(_)) => Ok(Bson::Decimal128(decimal_op(op, a, b))),
        (Number::Double(_), _) | (_, Number::Double(_)) => as_double(),
        (Number::Int(p), Number::Int(q)) => {
            let result = match op {
                Op::Add => p.checked_add(q),
                Op::Mul => p.checked_mul(q),
            };
            let both_int32 = matches!(a, Bson::Int32(_)) && matches!(b, Bson::Int32(_));
            match result {
                Some(r) if both_int32 => Ok(i32::try_from(r).map(Bson::Int32).unwrap_or(Bson::Int64(r))),
                Some(r) => Ok(Bson::Int64(r)),
                None if overflow_to_double => as_double(),
                None => Err(ArithError::Overflow),
            }
        }
    }
}

/// A finite decimal `(-1)^negative * digits * 10^exponent`, digits most significant first.
#[derive(Debug, Clone)]
struct Scaled {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

/// Decimal128 keeps 34 significant digits.
const PRECISION: usize = 34;

fn scaled(value: &Bson) -> Option<Scaled> {
    let text = match value {
        Bson::Int32(i) => i.to_string(),
        Bson::Int64(i) => i.to_string(),
        // MongoDB converts doubles to decimals with 15 significant digits.
        Bson::Double(d) if d.is_finite() => format!("{d:.14e}"),
        Bson::Decimal128(d) => d.to_string(),
        _ => return None,
    };
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(pos) => (&body[..pos], body[pos + 1..].parse::<i64>().ok()?),
        None => (body, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits = Vec::with_capacity(int_part.len() + frac_part.len());
    for c in int_part.bytes().chain(frac_part.bytes()) {
        if !c.is_ascii_digit() {
            return None;
        }
        digits.push(c - b'0');
    }
    let exponent = exponent.checked_sub(i64::try_from(frac_part.len()).ok()?)?;
    Some(trim(Scaled {
        negative,
        digits,
        exponent,
    }))
}

/// Drops leading zeros and trailing zeros (moving them into the exponent).
fn trim(mut s: Scaled) -> Scaled {
    let leading = s.digits.iter().take_while(|d| **d == 0).count();
    s.digits.drain(..leading);
    while s.digits.last() == Some(&0) {
        s.digits.pop();
        s.exponent += 1;
    }
    s
}

fn compare_magnitude(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// `a + b` on aligned digit strings (most significant first).
fn add_digits(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len().max(b.len()) + 1);
    let (mut i, mut j, mut carry) = (a.len(), b.len(), 0u8);
    while i > 0 || j > 0 || carry > 0 {
        let x = if i > 0 {
            i -= 1;
            a[i]
        } else {
            0
        };
        let y = if j > 0 {
            j -= 1;
            b[j]
        } else {
            0
        };
        let sum = x + y + carry;
        out.push(sum % 10);
        carry = sum / 10;
    }
    out.reverse();
    out
}

/// `a - b` for magnitudes with `a >= b`.
fn sub_digits(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len());
    let (mut i, mut j, mut borrow) = (a.len(), b.len(), 0i8);
    while i > 0 {
        i -= 1;
        let y = if j > 0 {
            j -= 1;
            i8::try_from(b[j]).unwrap_or(0)
        } else {
            0
        };
        let mut d = i8::try_from(a[i]).unwrap_or(0) - y - borrow;
        borrow = 0;
        if d < 0 {
            d += 10;
            borrow = 1;
        }
        out.push(u8::try_from(d).unwrap_or(0));
    }
    out.reverse();
    out
}

fn mul_digits(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut acc = vec![0u32; a.len() + b.len()];
    for (i, x) in a.iter().enumerate().rev() {
        for (j, y) in b.iter().enumerate().rev() {
            acc[i + j + 1] += u32::from(*x) * u32::from(*y);
        }
    }
    for k in (1..acc.len()).rev() {
        let carry = acc[k] / 10;
        acc[k] %= 10;
        acc[k - 1] += carry;
    }
    acc.into_iter().map(|d| u8::try_from(d).unwrap_or(0)).collect()
}

/// Largest exponent gap worth materialising: beyond it the smaller operand only decides rounding.
const MAX_ALIGN: i64 = 2 * PRECISION as i64 + 4;

fn decimal_exact(op: Op, x: Scaled, y: Scaled) -> Option<Scaled> {
    if x.digits.is_empty() || y.digits.is_empty() {
        return Some(match op {
            Op::Mul => Scaled {
                negative: false,
                digits: Vec::new(),
                exponent: 0,
            },
            Op::Add if x.digits.is_empty() => y,
            Op::Add => x,
        });
    }
    match op {
        Op::Mul => Some(Scaled {
            negative: x.negative != y.negative,
            digits: mul_digits(&x.digits, &y.digits),
            exponent: x.exponent.checked_add(y.exponent)?,
        }),
        Op::Add => {
            let (mut hi, mut lo) = if x.exponent >= y.exponent { (x, y) } else { (y, x) };
            // Keep the aligned strings short: a far smaller operand is replaced by a single
            // "sticky" digit below the precision, which rounds the same way.
            let hi_top = hi.exponent + i64::try_from(hi.digits.len()).ok()?;
            let lo_top = lo.exponent + i64::try_from(lo.digits.len()).ok()?;
            if hi_top - lo_top > MAX_ALIGN {
                lo = Scaled {
                    negative: lo.negative,
                    digits: vec![1],
                    exponent: hi_top - MAX_ALIGN,
                };
                if lo.exponent > hi.exponent {
                    lo.exponent = hi.exponent - 1;
                }
            }
            let shift = usize::try_from(hi.exponent.checked_sub(lo.exponent)?).ok()?;
            hi.digits.extend(std::iter::repeat_n(0, shift));
            let exponent = lo.exponent;
            let (negative, digits) = if hi.negative == lo.negative {
                (hi.negative, add_digits(&hi.digits, &lo.digits))
            } else if compare_magnitude(&hi.digits, &lo.digits) != std::cmp::Ordering::Less {
                (hi.negative, sub_digits(&hi.digits, &lo.digits))
            } else {
                (lo.negative, sub_digits(&lo.digits, &hi.digits))
            };
            Some(Scaled {
                negative,
                digits,
                exponent,
            })
        }
    }
}

/// Rounds to 34 significant digits, half to even (IEEE 754's default rounding), in one step.
fn round_to_precision(s: Scaled) -> Scaled {
    let s = trim(s);
    if s.digits.len() <= PRECISION {
        return s;
    }
    let dropped = s.digits.len() - PRECISION;
    let (kept, rest) = s.digits.split_at(PRECISION);
    let first = rest.first().copied().unwrap_or(0);
    let beyond_half = rest.iter().skip(1).any(|d| *d != 0);
    let odd = kept.last().is_some_and(|d| d % 2 == 1);
    let round_up = first > 5 || (first == 5 && (beyond_half || odd));
    let digits = if round_up {
        add_digits(kept, &[1])
    } else {
        kept.to_vec()
    };
    let exponent = s.exponent + i64::try_from(dropped).unwrap_or(0);
    // Rounding up can carry into a 35th digit (999.. -> 1000..), which trims back to 34.
    trim(Scaled {
        negative: s.negative,
        digits,
        exponent,
    })
}

fn decimal_op(op: Op, a: &Bson, b: &Bson) -> Decimal128 {
    let exact = match (scaled(a), scaled(b)) {
        (Some(x), Some(y)) => decimal_exact(op, x, y),
        _ => None,
    };
    if let Some(s) = exact.map(round_to_precision) {
        let digits: String = if s.digits.is_empty() {
            "0".to_owned()
        } else {
            s.digits.iter().map(|d| char::from(b'0' + d)).collect()
        };
        let sign = if s.negative { "-" } else { "" };
        if let Ok(d) = format!("{sign}{digits}E{}", s.exponent).parse::<Decimal128>() {
            return d;
        }
    }
    // NaN/infinity operands, or a result outside decimal128's exponent range: go through a double.
    let (p, q) = (to_f64(a).unwrap_or(f64::NAN), to_f64(b).unwrap_or(f64::NAN));
    let r = match op {
        Op::Add => p + q,
        Op::Mul => p * q,
    };
    let text = if r.is_nan() {
        "NaN".to_owned()
    } else if r.is_infinite() {
        if r > 0.0 {
            "Infinity".to_owned()
        } else {
            "-Infinity".to_owned()
        }
    } else {
        format!("{r:.14e}")
    };
    text.parse().unwrap_or_else(|_| Decimal128::from_bytes([0; 16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    // https://www.mongodb.com/docs/manual/reference/operator/update/inc/ and /mul/#multiply-mixed-numeric-types
    #[test]
    fn type_promotion() {
        assert_eq!(inc(&Bson::Int32(1), &Bson::Int32(2)), Ok(Bson::Int32(3)));
        assert_eq!(
            inc(&Bson::Int32(i32::MAX), &Bson::Int32(1)),
            Ok(Bson::Int64(i64::from(i32::MAX) + 1))
        );
        assert_eq!(inc(&Bson::Int64(i64::MAX), &Bson::Int32(1)), Err(ArithError::Overflow));
        assert_eq!(
            add_numbers(&Bson::Int64(i64::MAX), &Bson::Int32(1)),
            Some(Bson::Double(9.223_372_036_854_776e18))
        );
        assert_eq!(mul(&Bson::Int32(2), &Bson::Int64(5)), Ok(Bson::Int64(10)));
        assert_eq!(mul(&Bson::Int32(2), &Bson::Double(1.5)), Ok(Bson::Double(3.0)));
        assert_eq!(
            inc(&Bson::String("x".into()), &Bson::Int32(1)),
            Err(ArithError::NonNumeric)
        );
        let d = |s: &str| Bson::Decimal128(s.parse().unwrap());
        assert_eq!(inc(&d("0.1"), &d("0.2")).unwrap().to_string(), d("0.3").to_string());
        assert_eq!(
            mul(&d("1.5"), &Bson::Int32(3)).unwrap().to_string(),
            d("4.5").to_string()
        );
    }
}
