//! Tokenisation with the `tokenizers` crate: truncation to the bundle's max length and padding
//! only to the longest item of each batch (to the limit for a tower that attends to padding),
//! whatever padding `tokenizer.json` itself asks for.

use std::path::Path;

#[cfg(feature = "candle")]
use candle_core::{Device, Tensor};
use tokenizers::{PaddingParams, PaddingStrategy, PostProcessor, Tokenizer, TruncationParams};

use crate::config::TokenizerSettings;
use crate::{Error, Result};

/// A batch of token ids with its attention mask, all [B, L], as candle tensors.
#[cfg(feature = "candle")]
#[derive(Debug)]
pub struct TokenBatch {
    /// Token ids.
    pub ids: Tensor,
    /// Segment ids.
    pub type_ids: Tensor,
    /// 1 for real tokens, 0 for padding.
    pub mask: Tensor,
    /// Tokens per item before padding (after truncation).
    pub lengths: Vec<usize>,
}

/// A batch of token ids as row-major `batch × seq_len` vectors.
#[derive(Debug, Clone)]
pub struct TokenIds {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Segment ids.
    pub type_ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub mask: Vec<u32>,
    /// Tokens per item before padding (after truncation).
    pub lengths: Vec<usize>,
    /// Items.
    pub batch: usize,
    /// Padded length.
    pub seq_len: usize,
}

/// The bundle's tokenizer with its settings applied.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// The same tokenizer without truncation or padding: what measures a text and finds its
    /// token offsets for passages.
    whole: Tokenizer,
    lowercase: bool,
    max_length: usize,
    special_tokens: usize,
    /// [`TokenizerSettings::attend_padding`].
    attend_padding: bool,
}

/// One token window of a text: its character span (Unicode scalar values, end exclusive) and
/// how many content tokens it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenWindow {
    /// First character.
    pub start: usize,
    /// One past the last character.
    pub end: usize,
    /// Tokens in the window (special tokens not counted).
    pub tokens: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("lowercase", &self.lowercase)
            .finish()
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json` and applies `settings`.
    pub fn from_file(path: &Path, settings: &TokenizerSettings) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, settings)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))
    }

    /// Parses `tokenizer.json` bytes and applies `settings`.
    pub fn from_bytes(bytes: &[u8], settings: &TokenizerSettings) -> Result<Self> {
        let mut inner =
            Tokenizer::from_bytes(bytes).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut whole = inner.clone();
        whole
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        whole.with_padding(None);
        let special_tokens = whole
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        let (pad_id, pad_token) = match inner.get_padding() {
            Some(p) => (p.pad_id, p.pad_token.clone()),
            None => {
                let token = "[PAD]".to_owned();
                (inner.token_to_id(&token).unwrap_or(0), token)
            }
        };
        inner
            .with_truncation(Some(TruncationParams {
                max_length: settings.max_length,
                ..Default::default()
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        inner.with_padding(Some(PaddingParams {
            strategy: padding(settings.max_length, settings.attend_padding),
            pad_id,
            pad_token,
            ..Default::default()
        }));
        Ok(Self {
            inner,
            whole,
            lowercase: settings.lowercase,
            max_length: settings.max_length,
            special_tokens,
            attend_padding: settings.attend_padding,
        })
    }

    /// The same tokenizer cutting texts at `max_length` tokens (an asymmetric bundle's queries).
    pub fn with_max_length(&self, max_length: usize) -> Result<Self> {
        let mut out = self.clone();
        out.inner
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        if let Some(p) = out.inner.get_padding_mut() {
            p.strategy = padding(max_length, out.attend_padding);
        }
        out.max_length = max_length;
        Ok(out)
    }

    /// The bundle's token limit (special tokens included): longer texts are cut to it.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Special tokens the tokenizer adds to every text (`[CLS]` and `[SEP]` for BERT).
    pub fn special_tokens(&self) -> usize {
        self.special_tokens
    }

    /// Content tokens the largest passage may hold: the limit less the special tokens.
    pub fn max_content_tokens(&self) -> usize {
        self.max_length.saturating_sub(self.special_tokens).max(1)
    }

    /// Tokens `text` becomes without truncation (special tokens included): above
    /// [`Self::max_length`], embedding it cuts the rest.
    pub fn full_length(&self, text: &str) -> Result<usize> {
        let enc = self
            .whole
            .encode(self.normalise(text), true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().len())
    }

    fn normalise(&self, text: &str) -> String {
        if self.lowercase {
            text.to_lowercase()
        } else {
            text.to_owned()
        }
    }

    /// Splits the characters `range` of `text` into windows of at most `window` content tokens,
    /// consecutive windows sharing at least `overlap` tokens (rounded out to whole words).
    /// Windows end and start on word
    /// boundaries where a word boundary lies inside them (a single word longer than a window is
    /// cut inside), and spans are trimmed of surrounding whitespace. A range without tokens gives
    /// no window.
    ///
    /// # Errors
    ///
    /// `window` is 0 or `overlap` is not below it, or the tokenizer fails.
    pub fn windows(
        &self,
        text: &str,
        range: std::ops::Range<usize>,
        window: usize,
        overlap: usize,
    ) -> Result<Vec<TokenWindow>> {
        if window == 0 || overlap >= window {
            return Err(Error::InvalidInput(format!(
                "a window of {window} tokens with {overlap} overlapping: the window must be at \
                 least 1 token and the overlap smaller than the window"
            )));
        }
        let chars: Vec<char> = text.chars().collect();
        let end = range.end.min(chars.len());
        let start = range.start.min(end);
        // Lowercasing may change a character into several (İ → i̇): map each character of the
        // tokenizer's input back to the character of `text` it came from.
        let mut input = String::new();
        let mut origin = Vec::new();
        for (i, c) in chars[start..end].iter().enumerate() {
            if self.lowercase {
                for l in c.to_lowercase() {
                    input.push(l);
                    origin.push(start + i);
                }
            } else {
                input.push(*c);
                origin.push(start + i);
            }
        }
        let enc = self
            .whole
            .encode_char_offsets(input.as_str(), false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        // Tokens with a span in the text, as (first char, one past the last, word).
        let tokens: Vec<(usize, usize, Option<u32>)> = enc
            .get_offsets()
            .iter()
            .zip(enc.get_word_ids())
            .filter(|((s, e), _)| e > s && *e <= origin.len())
            .map(|(&(s, e), &w)| (origin[s], origin[e - 1] + 1, w))
            .collect();
        let n = tokens.len();
        let mut out = Vec::new();
        if n == 0 {
            return Ok(out);
        }
        // A boundary between tokens i-1 and i lies between two words.
        let boundary =
            |i: usize| i == 0 || i >= n || tokens[i].2.is_none() || tokens[i].2 != tokens[i - 1].2;
        // Where a window starting at token `first` ends: the last word boundary within `window`
        // tokens, or the window's width when one word fills it.
        let end_of = |first: usize| {
            let last = (first + window).min(n);
            if last == n {
                return n;
            }
            (first + 1..=last)
                .rev()
                .find(|&b| boundary(b))
                .unwrap_or(last)
        };
        let mut first = 0;
        loop {
            let last = end_of(first);
            let (s, e) = if first == 0 && last == n {
                (start, end)
            } else {
                (tokens[first].0, tokens[last - 1].1)
            };
            let (s, e) = trim_span(&chars, s, e);
            out.push(TokenWindow {
                start: s,
                end: e,
                tokens: last - first,
            });
            if last == n {
                return Ok(out);
            }
            // The shared tokens are rounded out to the word they fall in, so a word longer than
            // the overlap still repeats. No overlap where it would leave the next window unable
            // to reach past this one (a long word next).
            let target = last.saturating_sub(overlap).max(first + 1);
            let next = (first + 1..=target)
                .rev()
                .find(|&b| boundary(b))
                .or_else(|| (target..last).find(|&b| boundary(b)))
                .unwrap_or(last);
            first = if end_of(next) > last { next } else { last };
        }
    }

    /// Tokens `text` becomes (special tokens included, after truncation): what usage counts.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        let enc = self
            .inner
            .encode(self.normalise(text), true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_attention_mask().iter().filter(|&&m| m == 1).count())
    }

    /// Tokenises a batch, padded to its longest item (to the limit for a bundle whose tower
    /// attends to padding, with every mask entry 1 and `lengths` the limit), as plain vectors
    /// (for other tensor libraries, e.g. the trainer's libtorch).
    pub fn encode_ids(&self, texts: &[&str]) -> Result<TokenIds> {
        if texts.is_empty() {
            return Err(Error::InvalidInput("empty text batch".into()));
        }
        let inputs: Vec<String> = texts.iter().map(|t| self.normalise(t)).collect();
        let enc = self
            .inner
            .encode_batch(inputs, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let batch = enc.len();
        let seq_len = enc.first().map_or(0, |e| e.get_ids().len());
        let mut out = TokenIds {
            ids: Vec::with_capacity(batch * seq_len),
            type_ids: Vec::with_capacity(batch * seq_len),
            mask: Vec::with_capacity(batch * seq_len),
            lengths: Vec::with_capacity(batch),
            batch,
            seq_len,
        };
        for e in &enc {
            out.ids.extend_from_slice(e.get_ids());
            out.type_ids.extend_from_slice(e.get_type_ids());
            out.mask.extend_from_slice(e.get_attention_mask());
            out.lengths
                .push(e.get_attention_mask().iter().filter(|&&m| m == 1).count());
        }
        if self.attend_padding {
            out.mask.fill(1);
            out.lengths.fill(seq_len);
        }
        Ok(out)
    }

    /// Tokenises a batch, padded to its longest item, as candle tensors.
    #[cfg(feature = "candle")]
    pub fn encode_batch(&self, texts: &[&str], device: &Device) -> Result<TokenBatch> {
        let t = self.encode_ids(texts)?;
        let shape = (t.batch, t.seq_len);
        Ok(TokenBatch {
            ids: Tensor::from_vec(t.ids, shape, device)?,
            type_ids: Tensor::from_vec(t.type_ids, shape, device)?,
            mask: Tensor::from_vec(t.mask, shape, device)?,
            lengths: t.lengths,
        })
    }
}

/// Padding to the batch's longest item, or to `max_length` for a tower that attends to padding
/// (whose output depends on how much there is).
fn padding(max_length: usize, attend_padding: bool) -> PaddingStrategy {
    if attend_padding {
        PaddingStrategy::Fixed(max_length)
    } else {
        PaddingStrategy::BatchLongest
    }
}

/// `start..end` without the whitespace at either end.
fn trim_span(chars: &[char], mut start: usize, mut end: usize) -> (usize, usize) {
    while start < end && chars[start].is_whitespace() {
        start += 1;
    }
    while end > start && chars[end - 1].is_whitespace() {
        end -= 1;
    }
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(attend_padding: bool) -> TextTokenizer {
        let settings = TokenizerSettings {
            max_length: 12,
            lowercase: false,
            query_max_length: None,
            attend_padding,
        };
        TextTokenizer::from_bytes(
            include_bytes!("../tests/fixtures/tiny_tokenizer.json"),
            &settings,
        )
        .unwrap()
    }

    #[test]
    fn a_tower_that_attends_to_padding_gets_every_text_at_the_limit() {
        let texts = ["chest", "axial brain mri of the head"];
        let usual = tiny(false).encode_ids(&texts).unwrap();
        assert!(usual.seq_len < 12, "{usual:?}");
        assert!(usual.mask.contains(&0));
        let padded = tiny(true).encode_ids(&texts).unwrap();
        assert_eq!(padded.seq_len, 12);
        assert!(padded.mask.iter().all(|&m| m == 1));
        assert_eq!(padded.lengths, vec![12, 12]);
        // The same tokens, then padding.
        for row in 0..2 {
            let n = usual.lengths[row];
            assert_eq!(
                padded.ids[row * 12..row * 12 + n],
                usual.ids[row * usual.seq_len..row * usual.seq_len + n]
            );
            assert!(padded.ids[row * 12 + n..(row + 1) * 12]
                .iter()
                .all(|&id| id == 0));
        }
        // Queries cut shorter keep padding to their own limit.
        let q = tiny(true).with_max_length(8).unwrap();
        assert_eq!(q.encode_ids(&texts).unwrap().seq_len, 8);
    }
}
