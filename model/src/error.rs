//! One error type for the crate: every variant names the file, tensor, shape or input at fault so a
//! caller can tell the user exactly what to fix.

use std::path::PathBuf;

/// Errors of `mirage-model`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file of the bundle (or an input file) could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `bundle.json` (or another JSON file) is not valid.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file at fault.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The bundle was written by a format this build does not read.
    #[error("{path}: bundle format version {found} is not supported (this build reads version {supported})")]
    UnsupportedFormatVersion {
        /// `bundle.json`.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// A file listed in (or required by) the bundle, or an input file, is missing.
    #[error("{path}: file is missing")]
    MissingFile {
        /// The missing file.
        path: PathBuf,
    },
    /// A file's sha256 differs from the one `bundle.json` records.
    #[error("{path}: sha256 mismatch: bundle.json records {expected}, the file has {actual}")]
    ChecksumMismatch {
        /// The file at fault.
        path: PathBuf,
        /// sha256 recorded in bundle.json.
        expected: String,
        /// sha256 of the file on disk.
        actual: String,
    },
    /// A tensor the architecture needs is absent from the weights file.
    #[error("{path}: missing tensor `{name}` (expected shape {expected:?})")]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// Tensor name.
        name: String,
        /// The shape the architecture expects.
        expected: Vec<usize>,
    },
    /// A tensor has a different shape from the one the architecture needs.
    #[error("{path}: tensor `{name}` has shape {actual:?}, the architecture expects {expected:?}")]
    TensorShape {
        /// The weights file.
        path: PathBuf,
        /// Tensor name.
        name: String,
        /// The shape the architecture expects.
        expected: Vec<usize>,
        /// The shape in the file.
        actual: Vec<usize>,
    },
    /// A tensor is stored in a dtype we cannot load.
    #[error("{path}: tensor `{name}` has dtype {dtype}, expected a floating point dtype")]
    TensorDtype {
        /// The weights file.
        path: PathBuf,
        /// Tensor name.
        name: String,
        /// The dtype found.
        dtype: String,
    },
    /// The safetensors container itself is malformed.
    #[error("{path}: not a valid safetensors file: {reason}")]
    Safetensors {
        /// The file at fault.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The bundle configuration is inconsistent.
    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),
    /// The tokenizer could not be loaded or failed on an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An image could not be decoded.
    #[error("{source_name}: cannot decode image: {reason}")]
    ImageDecode {
        /// The path or description of the input.
        source_name: String,
        /// What went wrong.
        reason: String,
    },
    /// The image format is not one we read.
    #[error("{source_name}: unsupported image format (expected PNG, JPEG or DICOM)")]
    UnsupportedImageFormat {
        /// The path or description of the input.
        source_name: String,
    },
    /// A DICOM file uses a transfer syntax whose pixel data this build cannot decode.
    #[error("{source_name}: unsupported transfer syntax {uid} ({name})")]
    UnsupportedTransferSyntax {
        /// The path or description of the input.
        source_name: String,
        /// Transfer syntax UID.
        uid: String,
        /// Human-readable name of the transfer syntax.
        name: String,
    },
    /// A DICOM file is valid but cannot become an image (no pixel data, bad frame, …).
    #[error("{source_name}: {reason}")]
    Dicom {
        /// The path or description of the input.
        source_name: String,
        /// What went wrong.
        reason: String,
    },
    /// Caller input is unusable (empty label list, empty batch, …).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// An ONNX graph of the bundle is unusable: unreadable, of an unsupported opset, or with
    /// inputs/outputs other than `bundle.json` records.
    #[error("{path}: {reason}")]
    Onnx {
        /// The ONNX file at fault.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// The inference engine could not be set up (library missing, execution provider
    /// unavailable) or failed on a batch.
    #[error("{0}")]
    Engine(String),
    /// The tensor library failed.
    #[cfg(feature = "candle")]
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::MissingFile { path }
        } else {
            Error::Io { path, source }
        }
    }
}
