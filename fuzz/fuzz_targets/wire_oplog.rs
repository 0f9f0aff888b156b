#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;
use tidemark_format::bson_stream::BsonReader;
use tidemark_oplog::{OplogEntry, apply_ops_command, parse_oplog_limit, parse_restore_point};

fuzz_target!(|data: &[u8]| {
    let _ = tidemark_wire::decode_message(data, 48_000_000);
    let mut reader = BsonReader::new(Cursor::new(data), 16 << 20);
    while let Ok(Some(raw)) = reader.next_document() {
        if let Ok(entry) = OplogEntry::from_raw(&raw) {
            let _ = entry.command_name();
            let _ = entry.to_document();
            let _ = apply_ops_command(&entry, false);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_oplog_limit(text);
        let _ = parse_restore_point(text);
    }
});
