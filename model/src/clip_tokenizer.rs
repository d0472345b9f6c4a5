//! CLIP's byte-level BPE tokenizer as a `tokenizer.json`, built from the BPE merge list OpenAI
//! CLIP and open_clip ship (`bpe_simple_vocab_16e6.txt.gz`), for open_clip checkpoints that come
//! without one. The vocabulary is built as open_clip's `SimpleTokenizer` builds it; the
//! normaliser, pre-tokeniser and post-processor are those of Hugging Face's `CLIPTokenizerFast`,
//! so the file is the one transformers writes for CLIP.

use std::io::Read;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::{Error, Result};

/// Start-of-text token.
pub const SOT: &str = "<|startoftext|>";
/// End-of-text token, also the padding and unknown token.
pub const EOT: &str = "<|endoftext|>";
/// Merges CLIP uses from the file (the rest are unused).
const MERGES: usize = 49152 - 256 - 2;

/// GPT-2's reversible map from bytes to printable characters.
fn bytes_to_unicode() -> Vec<char> {
    let mut bs: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    cs.into_iter()
        .map(|c| char::from_u32(c).expect("below 512 — a valid char"))
        .collect()
}

/// `tokenizer.json` bytes for CLIP from the gzipped merge list at `bpe_gz`.
///
/// # Errors
///
/// The file cannot be read, is not gzip, or has too few merges.
pub fn from_bpe_vocab(bpe_gz: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(bpe_gz).map_err(|e| Error::io(bpe_gz, e))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .map_err(|e| {
            Error::Tokenizer(format!(
                "{}: not a gzipped BPE merge list: {e}",
                bpe_gz.display()
            ))
        })?;
    // The first line is a version header.
    let merges: Vec<(&str, &str)> = text
        .lines()
        .skip(1)
        .take(MERGES)
        .filter_map(|l| l.split_once(' '))
        .collect();
    if merges.len() != MERGES {
        return Err(Error::Tokenizer(format!(
            "{}: {} merges, CLIP needs {MERGES}",
            bpe_gz.display(),
            merges.len()
        )));
    }
    let bytes = bytes_to_unicode();
    let mut tokens: Vec<String> = bytes.iter().map(|c| c.to_string()).collect();
    tokens.extend(bytes.iter().map(|c| format!("{c}</w>")));
    tokens.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
    tokens.push(SOT.to_owned());
    tokens.push(EOT.to_owned());
    let vocab: Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let (sot, eot) = (tokens.len() - 2, tokens.len() - 1);
    let special = |id: usize, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(sot, SOT), special(eot, EOT)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex":
                "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
             "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": {"type": "RobertaProcessing", "sep": [EOT, eot], "cls": [SOT, sot],
                           "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": EOT,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab,
                  "merges": merges.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>()}
    });
    Ok(serde_json::to_vec(&doc).expect("a JSON value serialises"))
}
