//! Checks numeric comparison and decimal arithmetic against an independent implementation:
//! Python's `decimal` module, which represents every int64, double (exactly, via
//! `Decimal(float)`) and decimal128 value without rounding.
//!
//! MongoDB compares numbers of different types by their mathematical value
//! (<https://www.mongodb.com/docs/manual/reference/bson-type-comparison-order/#numeric-types>),
//! with NaN equal to NaN and below every other number. The test needs `python3`; without it the
//! test reports that it was skipped.

use std::cmp::Ordering;
use std::io::Write;
use std::process::{Command, Stdio};

use bson::{Bson, Decimal128, doc};
use tidemark_query::{Update, compare_values};

fn numbers() -> Vec<Bson> {
    let mut out = vec![
        Bson::Int32(0),
        Bson::Int32(-1),
        Bson::Int32(i32::MAX),
        Bson::Int32(i32::MIN),
        Bson::Int64(i64::MAX),
        Bson::Int64(i64::MIN),
        Bson::Int64(i64::MAX - 1),
        Bson::Int64(9_007_199_254_740_993), // 2^53 + 1: not representable as a double
        Bson::Int64(9_007_199_254_740_992),
        Bson::Double(9_007_199_254_740_992.0),
        Bson::Double(9_223_372_036_854_775_808.0), // 2^63
        Bson::Double(-9_223_372_036_854_775_808.0),
        Bson::Double(0.1),
        Bson::Double(-0.0),
        Bson::Double(0.5),
        Bson::Double(1e300),
        Bson::Double(5e-324),
        Bson::Double(f64::NAN),
        Bson::Double(f64::INFINITY),
        Bson::Double(f64::NEG_INFINITY),
    ];
    for text in [
        "0.1",
        "0.1000000000000000055511151231257827", // 0.1 as a double, rounded to 34 digits
        "9007199254740993",
        "9223372036854775807",
        "9223372036854775808",
        "-0",
        "1E+300",
        "1.000000000000000000000000000000001",
        "NaN",
        "Infinity",
        "-Infinity",
        "-1.5",
        "5E-324",
    ] {
        out.push(Bson::Decimal128(text.parse::<Decimal128>().expect("valid decimal")));
    }
    // A deterministic spread of further values.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..30 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let bits = state >> 11;
        let small = i64::try_from(bits % 2001).unwrap_or(0) - 1000;
        out.push(match state % 4 {
            0 => Bson::Int64(i64::try_from(bits).unwrap_or(0) - (1 << 52)),
            1 => Bson::Double(small as f64 / 8.0),
            2 => Bson::Decimal128(format!("{small}E-3").parse().expect("valid decimal")),
            _ => Bson::Int32(i32::try_from(small).unwrap_or(0)),
        });
    }
    out
}

fn python_literal(v: &Bson) -> String {
    match v {
        Bson::Int32(i) => format!("I {i}"),
        Bson::Int64(i) => format!("I {i}"),
        Bson::Double(d) => format!("F {d:e}"),
        Bson::Decimal128(d) => format!("D {d}"),
        other => panic!("not a number: {other}"),
    }
}

const SCRIPT: &str = r#"
import sys
from decimal import Decimal, getcontext
getcontext().prec = 34
def value(kind, text):
    if kind == "I":
        return Decimal(int(text))
    if kind == "F":
        return Decimal(float(text))
    return Decimal(text)
def cmp(a, b):
    if a.is_nan() or b.is_nan():
        return (0 if b.is_nan() else -1) if a.is_nan() else 1
    return (a > b) - (a < b)
bad = 0
for line in sys.stdin:
    parts = line.split()
    if parts[0] == "C":
        a, b, ours = value(parts[1], parts[2]), value(parts[3], parts[4]), int(parts[5])
        if cmp(a, b) != ours:
            bad += 1
            print("compare", parts[1:], "python", cmp(a, b))
    else:
        op, a, b, ours = parts[1], value(parts[2], parts[3]), value(parts[4], parts[5]), Decimal(parts[6])
        want = (a + b) if op == "inc" else (a * b)
        if want != ours:
            bad += 1
            print("arith", parts[1:], "python", want)
print("checked", "bad", bad)
"#;

#[test]
fn numeric_order_and_decimal_arithmetic_match_python_decimal() {
    let child = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("python3 is not available: skipping the independent decimal check");
        return;
    };
    let values = numbers();
    let mut input = String::new();
    let mut lines = 0;
    for a in &values {
        for b in &values {
            let ours = match compare_values(a, b) {
                Ordering::Less => -1,
                Ordering::Equal => 0,
                Ordering::Greater => 1,
            };
            input.push_str(&format!("C {} {} {ours}\n", python_literal(a), python_literal(b)));
            lines += 1;
        }
    }
    // $inc and $mul on decimals: exact while the result fits 34 digits.
    let decimals: Vec<&Bson> = values
        .iter()
        .filter(|v| matches!(v, Bson::Decimal128(d) if !d.to_string().contains("N") && !d.to_string().contains("Inf")))
        .collect();
    for a in &decimals {
        for b in values
            .iter()
            .filter(|v| matches!(v, Bson::Int32(_) | Bson::Decimal128(_)))
        {
            if b.to_string().contains("N") || b.to_string().contains("Inf") {
                continue;
            }
            for op in ["inc", "mul"] {
                let mut d = doc! {"v": (*a).clone()};
                Update::parse(&doc! {format!("${op}"): {"v": b.clone()}})
                    .unwrap()
                    .apply(&mut d, false)
                    .unwrap();
                let Some(Bson::Decimal128(result)) = d.get("v") else {
                    panic!("decimal result expected, got {d}")
                };
                input.push_str(&format!(
                    "A {op} {} {} {result}\n",
                    python_literal(a),
                    python_literal(b)
                ));
                lines += 1;
            }
        }
    }
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.as_bytes()).expect("write to python3");
    drop(stdin);
    let output = child.wait_with_output().expect("python3 output");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "python3 failed: {text}");
    assert!(
        text.trim_end().ends_with("checked bad 0"),
        "{lines} checks, mismatches:\n{text}"
    );
}
