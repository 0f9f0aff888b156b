#![no_main]
use bson::{Bson, Document};
use libfuzzer_sys::fuzz_target;
use tidemark_query::{Filter, Pipeline, Projection, SortSpec, Update};

fn doc(part: &[u8]) -> Option<Document> {
    let v: serde_json::Value = serde_json::from_slice(part).ok()?;
    match Bson::try_from(v).ok()? {
        Bson::Document(d) => Some(d),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let parts: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let docs: Vec<Document> = parts.iter().filter_map(|p| doc(p)).collect();
    if docs.is_empty() {
        return;
    }
    let spec = &docs[0];
    let inputs = &docs[1..];
    if let Ok(f) = Filter::parse(spec) {
        for d in inputs {
            f.matches(d);
        }
        let _ = f.equality_fields();
        if let Ok(u) = Update::parse(spec) {
            let _ = u.upsert_document(&f);
        }
    }
    if let Ok(u) = Update::parse(spec) {
        for d in inputs {
            let mut d = d.clone();
            let _ = u.apply(&mut d, false);
            let mut d2 = Document::new();
            let _ = u.apply(&mut d2, true);
        }
    }
    if let Ok(p) = Projection::parse(spec) {
        for d in inputs {
            p.apply(d);
        }
    }
    if let Ok(s) = SortSpec::parse(spec) {
        for a in inputs {
            for b in inputs {
                s.compare(a, b);
            }
        }
    }
    let stages: Vec<Document> = spec
        .get_array("p")
        .map(|a| a.iter().filter_map(|b| b.as_document().cloned()).collect())
        .unwrap_or_else(|_| vec![spec.clone()]);
    if let Ok(p) = Pipeline::parse(&stages) {
        let _ = p.run(inputs.iter().cloned());
    }
    for d in inputs {
        let mut d = d.clone();
        let _ = tidemark_query::apply_oplog_diff(&mut d, spec);
    }
});
