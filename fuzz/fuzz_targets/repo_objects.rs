#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tidemark_repo::crypto::MasterKeys;
use tidemark_repo::{Id, pack};

static KEYS: OnceLock<MasterKeys> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let keys = KEYS.get_or_init(|| MasterKeys::generate(Id::hash(b"fuzz"), None));
    let _ = tidemark_repo::pack::IndexFile::decode(data, "index/x");
    let _ = tidemark_repo::chunk_list::decode_chunk_list(data);
    let pack_id = Id::hash(data);
    if let Ok(entries) = pack::read_header(keys, data, "data/x") {
        for e in &entries {
            let (s, l) = (e.offset as usize, e.length as usize);
            if let Some(stored) = data.get(s..s.saturating_add(l)) {
                let _ = pack::decode_blob(keys, stored, e, &pack_id);
                let _ = pack::decode_frame(keys, stored, std::slice::from_ref(e), &pack_id);
            }
        }
        if let Some(first) = entries.first() {
            let same: Vec<_> = entries.iter().filter(|e| e.offset == first.offset).cloned().collect();
            let (s, l) = (first.offset as usize, first.length as usize);
            if let Some(stored) = data.get(s..s.saturating_add(l)) {
                let _ = pack::decode_frame(keys, stored, &same, &pack_id);
            }
        }
    }
});
