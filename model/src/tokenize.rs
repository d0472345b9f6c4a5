//! Tokenisation with the `tokenizers` crate: truncation to the bundle's max length and padding
//! only to the longest item of each batch, whatever padding `tokenizer.json` itself asks for.

use std::path::Path;

use candle_core::{Device, Tensor};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::config::TokenizerSettings;
use crate::{Error, Result};

/// A batch of token ids with its attention mask, all [B, L].
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
    lowercase: bool,
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
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token,
            ..Default::default()
        }));
        Ok(Self {
            inner,
            lowercase: settings.lowercase,
        })
    }

    /// Tokens `text` becomes (special tokens included, after truncation): what usage counts.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        let input = if self.lowercase {
            text.to_lowercase()
        } else {
            text.to_owned()
        };
        let enc = self
            .inner
            .encode(input, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_attention_mask().iter().filter(|&&m| m == 1).count())
    }

    /// Tokenises a batch, padded to its longest item, as plain vectors (for other tensor
    /// libraries, e.g. the trainer's libtorch).
    pub fn encode_ids(&self, texts: &[&str]) -> Result<TokenIds> {
        if texts.is_empty() {
            return Err(Error::InvalidInput("empty text batch".into()));
        }
        let inputs: Vec<String> = texts
            .iter()
            .map(|t| {
                if self.lowercase {
                    t.to_lowercase()
                } else {
                    (*t).to_owned()
                }
            })
            .collect();
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
        Ok(out)
    }

    /// Tokenises a batch, padded to its longest item.
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
