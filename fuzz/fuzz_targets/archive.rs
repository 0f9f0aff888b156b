#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;
use tidemark_format::archive::ArchiveReader;
use tidemark_format::bson_stream::BsonReader;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut reader) = ArchiveReader::new(Cursor::new(data)) {
        let _ = reader.prelude_has_type();
        for _ in 0..10_000 {
            match reader.next_event_ref() {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }
    let mut bson = BsonReader::new(Cursor::new(data), 16 << 20);
    for _ in 0..10_000 {
        match bson.next_document() {
            Ok(Some(d)) => {
                let _ = tidemark_format::bson_stream::validate_document(&d);
                let _ = tidemark_format::extjson::to_string(&d, tidemark_format::extjson::Mode::Canonical);
                let _ = tidemark_format::extjson::to_string(&d, tidemark_format::extjson::Mode::Relaxed);
            }
            _ => break,
        }
    }
    let _ = tidemark_format::metadata::Metadata::parse(data, "x.metadata.json");
});
