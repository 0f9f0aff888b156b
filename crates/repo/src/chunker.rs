//! Where streams are cut into chunks.
//!
//! Two cutters, both content-defined so that a change moves only the cuts around it and the rest
//! of a stream deduplicates against earlier snapshots:
//!
//! - [`DocumentCutter`] (namespaces and oplogs) cuts only *between* documents. Whether a cut
//!   follows a document is decided by a keyed hash of the document's `_id` element (of the whole
//!   document when it has no leading `_id`, as oplog entries), with a probability proportional to
//!   the document's size so chunks average the configured size. Because the decision depends on
//!   the `_id` and not on the other fields, updating a document never moves a cut: only the chunk
//!   holding it changes. Inserting or deleting documents moves cuts only until the next cut
//!   decided by an unchanged document. Small chunks (a few KiB by default) keep the bytes a
//!   scattered 1% update rewrites low. Only the bytes past the minimum size count towards a cut
//!   ([`CutRule::BeyondMinimum`]), so chunks average the configured size whatever the documents'
//!   size; repositories created before that rule keep theirs ([`CutRule::WholeDocument`]), under
//!   which documents of about the span between minimum and average size are cut one per chunk.
//! - [`ByteCutter`] (file contents) is FastCDC 2020 with the repository's parameters and a gear
//!   table seeded per repository.
//!
//! Both only decide where to cut; hashing, deduplication and storage are the writer's job.

use serde::{Deserialize, Serialize};

use crate::repository::ChunkerParams;

/// Which of a document's bytes count towards the probability of a cut after it. Recorded in the
/// repository's config: a repository keeps its rule, so its chunks keep deduplicating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CutRule {
    /// The whole document, once the chunk holds the minimum size (repositories created before
    /// [`CutRule::BeyondMinimum`]). The document that reaches the minimum counts in full, so
    /// documents as large as `avg_size - min_size` end a chunk each: chunks of 1 KiB documents
    /// averaged 1 KiB, not the configured 2 KiB.
    WholeDocument,
    /// Only the document's bytes beyond the minimum size: the chunk holds `min_size` bytes for
    /// certain and one more byte ends it with probability `1 / (avg_size - min_size)`, so chunks
    /// average about `avg_size` whatever the documents' size.
    BeyondMinimum,
}

impl CutRule {
    /// The rule of a config that names none: the one of repositories created before the rules had
    /// names.
    pub(crate) fn unnamed() -> Self {
        CutRule::WholeDocument
    }
}

/// Cuts a document stream between documents.
#[derive(Debug, Clone)]
pub(crate) struct DocumentCutter {
    params: ChunkerParams,
    rule: CutRule,
    key: [u8; 32],
    /// Bytes in the current (open) chunk.
    current: u64,
}

/// What the cutter decided for one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DocumentCut {
    /// Cut before the document (it would make the open chunk exceed the maximum size).
    pub before: bool,
    /// Cut after the document.
    pub after: bool,
}

impl DocumentCutter {
    /// `key` personalises the cut decisions per repository, so chunk sizes do not reveal
    /// which `_id`s a collection holds.
    pub(crate) fn new(params: ChunkerParams, rule: CutRule, key: [u8; 32]) -> Self {
        DocumentCutter {
            params,
            rule,
            key,
            current: 0,
        }
    }

    /// Decides the cuts around the next document (its complete bytes).
    pub(crate) fn document(&mut self, doc: &[u8]) -> DocumentCut {
        let len = doc.len() as u64;
        let min = u64::from(self.params.min_size);
        let avg = u64::from(self.params.avg_size);
        let max = u64::from(self.params.max_size);
        let before = self.current > 0 && self.current + len > max;
        if before {
            self.current = 0;
        }
        let start = self.current;
        self.current += len;
        let counted = match self.rule {
            CutRule::WholeDocument => len,
            CutRule::BeyondMinimum => self.current.saturating_sub(start.max(min)),
        };
        let after =
            self.current >= max || (self.current >= min && self.decides_cut(doc, counted, avg.saturating_sub(min)));
        if after {
            self.current = 0;
        }
        DocumentCut { before, after }
    }

    /// True with probability `len / span` (always when `span <= len`), decided by the keyed hash
    /// of the document's identity.
    fn decides_cut(&self, doc: &[u8], len: u64, span: u64) -> bool {
        if span <= len {
            return true;
        }
        let hash = blake3::keyed_hash(&self.key, identity(doc));
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        let h = u128::from(u64::from_le_bytes(first));
        // h / 2^64 < len / span
        h * u128::from(span) < u128::from(len) << 64
    }
}

/// The bytes that identify a document: its leading `_id` element (type, name and value), or the
/// whole document when it does not start with `_id`.
fn identity(doc: &[u8]) -> &[u8] {
    let Ok(raw) = bson::RawDocument::from_bytes(doc) else {
        return doc;
    };
    match raw.iter_elements().next() {
        Some(Ok(element)) if element.key() == "_id" => {
            // 4 length bytes, 1 type byte, "_id\0", then the value.
            let end = 4 + 1 + 4 + element.len();
            doc.get(4..end).unwrap_or(doc)
        }
        _ => doc,
    }
}

/// FastCDC over a byte stream (file contents).
#[derive(Debug, Clone)]
pub(crate) struct ByteCutter {
    params: ChunkerParams,
    seed: u64,
}

impl ByteCutter {
    /// `seed` personalises FastCDC's gear table per repository, so chunk sizes do not reveal content.
    pub(crate) fn new(params: ChunkerParams, seed: u64) -> Self {
        ByteCutter { params, seed }
    }

    /// Bytes to buffer before cutting: every cut but the last of a buffer this long is final,
    /// because FastCDC's cut points depend only on the bytes since the previous cut.
    pub(crate) fn window(&self) -> usize {
        usize::try_from(self.params.max_size)
            .unwrap_or(usize::MAX)
            .saturating_mul(2)
    }

    /// Chunk lengths of `buf`, in order; without `last` the final (possibly incomplete) chunk is
    /// left out.
    pub(crate) fn cuts(&self, buf: &[u8], last: bool) -> Vec<usize> {
        let p = self.params;
        let mut lengths: Vec<usize> = fastcdc::v2020::FastCDC::with_level_and_seed(
            buf,
            p.min_size,
            p.avg_size,
            p.max_size,
            fastcdc::v2020::Normalization::Level1,
            self.seed,
        )
        .map(|c| c.length)
        .collect();
        if !last {
            lengths.pop();
        }
        lengths
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: i32, payload: &str) -> Vec<u8> {
        bson::rawdoc! { "_id": id, "payload": payload }.into_bytes()
    }

    fn chunks(docs: &[Vec<u8>], params: ChunkerParams, rule: CutRule) -> Vec<Vec<usize>> {
        let mut cutter = DocumentCutter::new(params, rule, [7; 32]);
        let mut out: Vec<Vec<usize>> = vec![Vec::new()];
        for (i, d) in docs.iter().enumerate() {
            let cut = cutter.document(d);
            if cut.before {
                out.push(Vec::new());
            }
            out.last_mut().unwrap().push(i);
            if cut.after {
                out.push(Vec::new());
            }
        }
        out.retain(|c| !c.is_empty());
        out
    }

    fn mean_size(docs: &[Vec<u8>], chunks: &[Vec<usize>]) -> usize {
        let sizes: Vec<usize> = chunks.iter().map(|c| c.iter().map(|&i| docs[i].len()).sum()).collect();
        sizes.iter().sum::<usize>() / sizes.len()
    }

    #[test]
    fn cuts_follow_ids_not_contents_and_respect_bounds() {
        let params = ChunkerParams {
            min_size: 2048,
            avg_size: 4096,
            max_size: 65536,
        };
        let docs: Vec<Vec<u8>> = (0..4000).map(|i| doc(i, &"x".repeat(1000))).collect();
        for rule in [CutRule::WholeDocument, CutRule::BeyondMinimum] {
            let before = chunks(&docs, params, rule);
            let sizes: Vec<usize> = before.iter().map(|c| c.iter().map(|&i| docs[i].len()).sum()).collect();
            let mean = mean_size(&docs, &before);
            assert!((3000..5500).contains(&mean), "{rule:?}: mean chunk {mean}");
            assert!(sizes[..sizes.len() - 1].iter().all(|s| (2048..=65536).contains(s)));
            // Changing a document's contents (same size or not) keeps every cut.
            let mut changed = docs.clone();
            changed[1234] = doc(1234, &"y".repeat(1010));
            assert_eq!(chunks(&changed, params, rule), before, "{rule:?}");
            // Deleting a document resynchronises at the next cut.
            let mut deleted = docs.clone();
            deleted.remove(100);
            let after: Vec<Vec<usize>> = chunks(&deleted, params, rule)
                .into_iter()
                .map(|c| c.into_iter().map(|j| if j < 100 { j } else { j + 1 }).collect())
                .collect();
            let same = after.iter().filter(|c| before.contains(c)).count();
            assert!(
                same + 3 >= before.len(),
                "{rule:?}: {same} of {} chunks kept",
                before.len()
            );
        }
    }

    #[test]
    fn chunks_average_the_configured_size_whatever_the_document_size() {
        // The repository defaults: chunks of 1 to 64 KiB averaging 2 KiB.
        let params = ChunkerParams::DOCUMENTS;
        for payload in [0, 200, 700, 1000, 1500, 3000] {
            let docs: Vec<Vec<u8>> = (0..20_000).map(|i| doc(i, &"x".repeat(payload))).collect();
            let len = docs[0].len();
            let mean = mean_size(&docs, &chunks(&docs, params, CutRule::BeyondMinimum));
            // About the average, or one document when documents alone exceed it.
            let expected = 2048.max(len);
            assert!(
                mean * 10 >= expected * 9 && mean * 10 <= expected * 13,
                "documents of {len} bytes: mean chunk {mean}"
            );
        }
        // The older rule cuts after every document of about the span between minimum and average.
        let docs: Vec<Vec<u8>> = (0..5_000).map(|i| doc(i, &"x".repeat(1000))).collect();
        let old = chunks(&docs, params, CutRule::WholeDocument);
        assert!(old.iter().all(|c| c.len() == 1), "one document per chunk");
    }

    #[test]
    fn a_document_larger_than_the_maximum_is_one_chunk() {
        let params = ChunkerParams {
            min_size: 64,
            avg_size: 256,
            max_size: 1024,
        };
        let docs = vec![doc(1, "a"), doc(2, &"b".repeat(5000)), doc(3, "c")];
        let got = chunks(&docs, params, CutRule::BeyondMinimum);
        assert!(got.contains(&vec![1]), "{got:?}");
        // Bytes that are not BSON still get a decision (the whole input is the identity).
        let mut cutter = DocumentCutter::new(params, CutRule::BeyondMinimum, [1; 32]);
        let _ = cutter.document(&[1, 2, 3]);
    }
}
