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
//!   scattered 1% update rewrites low. Only the bytes past the minimum size count towards a cut,
//!   each ending the chunk with the same small chance ([`CutRule::Geometric`]), so chunks average
//!   about the configured size whatever the documents' size, and no document below the maximum
//!   size ends a chunk for certain. Repositories keep the rule they were created with
//!   ([`CutRule::BeyondMinimum`], [`CutRule::WholeDocument`]).
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
    /// Only the document's bytes beyond the minimum size, `c` of them, with a chance of a cut of
    /// `c / (avg_size - min_size)` (repositories created before [`CutRule::Geometric`]). That
    /// chance reaches certainty for documents about as large as `avg_size - min_size`: with the
    /// defaults and 1 KiB documents nearly every chunk held two documents, so a shift by one
    /// document (batches of a parallel dump arriving in another order, an insert) kept the chunks
    /// out of step for about a hundred chunks instead of up to the next cut: a backup of an
    /// unchanged 2 GB database added 1 to 16% of its size.
    BeyondMinimum,
    /// Each of the document's bytes beyond the minimum size ends the chunk with probability
    /// `1 / (avg_size - min_size)`: a document of `c` such bytes with probability
    /// `1 - (1 - 1 / (avg_size - min_size))^c`, computed in 64-bit fixed point (so the same on
    /// every machine). Chunks average about `avg_size` plus half a document, and two streams
    /// out of step fall back into step within a few chunks.
    Geometric,
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
            CutRule::BeyondMinimum | CutRule::Geometric => self.current.saturating_sub(start.max(min)),
        };
        let after =
            self.current >= max || (self.current >= min && self.decides_cut(doc, counted, avg.saturating_sub(min)));
        if after {
            self.current = 0;
        }
        DocumentCut { before, after }
    }

    /// Whether `len` counted bytes end the chunk, with the rule's probability for a `span` of
    /// `avg_size - min_size`, decided by the keyed hash of the document's identity.
    fn decides_cut(&self, doc: &[u8], len: u64, span: u64) -> bool {
        if self.rule != CutRule::Geometric && span <= len {
            return true;
        }
        if span == 0 {
            return len > 0;
        }
        let hash = blake3::keyed_hash(&self.key, identity(doc));
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        let h = u128::from(u64::from_le_bytes(first));
        match self.rule {
            // h / 2^64 < 1 - (1 - 1/span)^len
            CutRule::Geometric => h + no_cut_within(len, span) < ONE,
            // h / 2^64 < len / span
            CutRule::WholeDocument | CutRule::BeyondMinimum => h * u128::from(span) < u128::from(len) << 64,
        }
    }
}

/// 1 in 64-bit fixed point.
const ONE: u128 = 1 << 64;

/// `(1 - 1/span)^bytes` in 64-bit fixed point (rounded down at every step): the chance that `bytes`
/// bytes, each ending a chunk with probability `1/span`, all go by without one. Integer arithmetic,
/// so every machine cuts at the same documents.
fn no_cut_within(bytes: u64, span: u64) -> u128 {
    let mut base = ONE - ONE.div_ceil(u128::from(span.max(1)));
    let mut result = ONE;
    let mut exponent = bytes;
    while exponent > 0 && result > 0 {
        if exponent & 1 == 1 {
            // Both factors are at most 2^64 and `base` is below it: the product fits in 128 bits.
            result = (result * base) >> 64;
        }
        base = (base * base) >> 64;
        exponent >>= 1;
    }
    result
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
        for rule in [CutRule::WholeDocument, CutRule::BeyondMinimum, CutRule::Geometric] {
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
            // About the average, or one document when documents alone exceed it.
            let expected = 2048.max(len);
            let mean = mean_size(&docs, &chunks(&docs, params, CutRule::BeyondMinimum));
            assert!(
                mean * 10 >= expected * 9 && mean * 10 <= expected * 13,
                "beyond-minimum, documents of {len} bytes: mean chunk {mean}"
            );
            // Plus up to about half a document.
            let mean = mean_size(&docs, &chunks(&docs, params, CutRule::Geometric));
            assert!(
                mean * 10 >= expected * 9 && mean * 10 <= (expected + len / 2) * 12,
                "geometric, documents of {len} bytes: mean chunk {mean}"
            );
        }
        // The older rule cuts after every document of about the span between minimum and average.
        let docs: Vec<Vec<u8>> = (0..5_000).map(|i| doc(i, &"x".repeat(1000))).collect();
        let old = chunks(&docs, params, CutRule::WholeDocument);
        assert!(old.iter().all(|c| c.len() == 1), "one document per chunk");
    }

    /// `_id`s of documents in batches of `batch`, four ranges of the collection read at once with
    /// their batches arriving in an order drawn from `seed` (as a parallel dump's do).
    fn interleaved(n: i32, batch: i32, seed: u64) -> Vec<i32> {
        let batches: Vec<Vec<i32>> = (0..n)
            .step_by(batch as usize)
            .map(|start| (start..(start + batch).min(n)).collect())
            .collect();
        let quarter = batches.len().div_ceil(4);
        let mut ranges: Vec<std::collections::VecDeque<Vec<i32>>> =
            batches.chunks(quarter).map(|r| r.iter().cloned().collect()).collect();
        let mut state = seed;
        let mut order = Vec::new();
        while ranges.iter().any(|r| !r.is_empty()) {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let open: Vec<usize> = (0..ranges.len()).filter(|&i| !ranges[i].is_empty()).collect();
            let pick = open[usize::try_from(state >> 33).unwrap_or(0) % open.len()];
            order.extend(ranges[pick].pop_front().unwrap_or_default());
        }
        order
    }

    #[test]
    fn batches_arriving_in_another_order_keep_nearly_every_chunk() {
        // Documents of about `avg_size - min_size` (the benchmark's 1 KiB documents and the
        // defaults), the size at which the linear chance of `BeyondMinimum` is a certainty.
        let params = ChunkerParams::DOCUMENTS;
        let n = 60_000;
        let docs: Vec<Vec<u8>> = (0..n).map(|i| doc(i, &"x".repeat(995))).collect();
        let chunk_sets = |ids: &[i32], rule: CutRule| -> std::collections::HashSet<Vec<i32>> {
            let stream: Vec<Vec<u8>> = ids.iter().map(|&i| docs[i as usize].clone()).collect();
            chunks(&stream, params, rule)
                .into_iter()
                .map(|c| c.into_iter().map(|j| ids[j]).collect())
                .collect()
        };
        let (first, second) = (interleaved(n, 1000, 1), interleaved(n, 1000, 2));
        assert_ne!(first, second);
        let new_fraction = |rule: CutRule| {
            let before = chunk_sets(&first, rule);
            let after = chunk_sets(&second, rule);
            let new_docs: usize = after.difference(&before).map(Vec::len).sum();
            new_docs as f64 / f64::from(n)
        };
        let geometric = new_fraction(CutRule::Geometric);
        assert!(
            geometric < 0.01,
            "geometric: {:.2}% of documents in new chunks",
            geometric * 100.0
        );
        let linear = new_fraction(CutRule::BeyondMinimum);
        assert!(
            linear > 5.0 * geometric,
            "beyond-minimum {linear}, geometric {geometric}"
        );
    }

    #[test]
    fn the_chance_of_no_cut_is_exact_in_fixed_point() {
        for (bytes, span) in [
            (0, 1024),
            (1, 1024),
            (1016, 1024),
            (4096, 1024),
            (3, 7),
            (100_000, 1024),
        ] {
            let exact = (1.0 - 1.0 / span as f64).powf(bytes as f64);
            let fixed = no_cut_within(bytes, span) as f64 / ONE as f64;
            assert!(
                (exact - fixed).abs() < 1e-12,
                "{bytes} bytes, span {span}: {fixed} vs {exact}"
            );
        }
        assert_eq!(no_cut_within(5, 1), 0);
    }

    #[test]
    fn a_document_larger_than_the_maximum_is_one_chunk() {
        let params = ChunkerParams {
            min_size: 64,
            avg_size: 256,
            max_size: 1024,
        };
        let docs = vec![doc(1, "a"), doc(2, &"b".repeat(5000)), doc(3, "c")];
        for rule in [CutRule::BeyondMinimum, CutRule::Geometric] {
            let got = chunks(&docs, params, rule);
            assert!(got.contains(&vec![1]), "{got:?}");
        }
        // Bytes that are not BSON still get a decision (the whole input is the identity).
        let mut cutter = DocumentCutter::new(params, CutRule::BeyondMinimum, [1; 32]);
        let _ = cutter.document(&[1, 2, 3]);
    }
}
