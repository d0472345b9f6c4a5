//! The error type of the index crate. Variants say what the caller can do about them.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = IndexError> = std::result::Result<T, E>;

/// What can go wrong when creating, opening, writing or querying a collection.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The collection does not exist; create it (e.g. `mirage index build`) first.
    #[error("collection {name:?} does not exist at {location}")]
    CollectionNotFound {
        /// Collection name.
        name: String,
        /// Where it was looked for.
        location: String,
    },
    /// A collection of that name already exists with settings that differ from the requested ones.
    #[error("collection {name:?} already exists: {reason}")]
    CollectionExists {
        /// Collection name.
        name: String,
        /// What differs.
        reason: String,
    },
    /// The collection was built with another model; querying it with this one would compare
    /// vectors from different embedding spaces. Use the bundle it was built with, or rebuild it.
    #[error(
        "collection {collection:?} was built with model {index_model_id} (bundle sha256 {index_sha256}); \
         the bundle given is {given_model_id} (sha256 {given_sha256}). Use the bundle the collection was \
         built with, or rebuild the collection with this one"
    )]
    ModelMismatch {
        /// Collection name.
        collection: String,
        /// Model id recorded in the collection.
        index_model_id: String,
        /// Bundle sha256 recorded in the collection.
        index_sha256: String,
        /// Model id of the bundle given.
        given_model_id: String,
        /// sha256 of the bundle given.
        given_sha256: String,
    },
    /// A vector has the wrong length for this collection (or model).
    #[error("{what} has {got} dimensions; the space has {expected}")]
    Dimension {
        /// Which vector.
        what: String,
        /// Collection dimension.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// The request is malformed (bad filter, bad id, NaN in a vector, …); fix the request.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The on-disk collection is unreadable or was written by an incompatible version.
    #[error("collection at {path} is corrupt or incompatible: {reason}")]
    Corrupt {
        /// Collection directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A snapshot archive was refused: damaged, truncated, altered, of another format, or not
    /// one at all. The reason names what failed.
    #[error("snapshot {path} refused: {reason}")]
    Snapshot {
        /// The archive.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// Filesystem error; the message names the path.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The payload database failed.
    #[error("payload database: {0}")]
    Database(#[from] rusqlite::Error),
    /// The HNSW graph could not be written or read.
    #[error("HNSW graph: {0}")]
    Graph(String),
    /// The Qdrant server could not be reached, refused the credentials, or failed a request.
    #[error("qdrant: {message}")]
    Qdrant {
        /// What the caller can do about it.
        failure: StoreFailure,
        /// The operation and the server's (or the transport's) reason.
        message: String,
    },
    /// Embedding with the model failed.
    #[error(transparent)]
    Model(#[from] mirage_model::Error),
}

/// Why a request to a networked store failed, as far as a caller can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFailure {
    /// Unreachable, timed out or overloaded: the same request can succeed later.
    Unavailable,
    /// The server refused the credentials (API key missing or wrong).
    Unauthenticated,
    /// The server refused or failed the request itself; retrying will not help.
    Rejected,
}

impl IndexError {
    /// Shorthand for [`IndexError::InvalidRequest`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidRequest(msg.into())
    }
}

/// The error of a lexical or hybrid search on a collection without a lexical index.
pub(crate) fn no_lexical_index(name: &str) -> IndexError {
    IndexError::invalid(format!(
        "collection {name:?} has no lexical index (made before lexical search existed, or by \
         another analyzer version): rebuild it to search with mode lexical or hybrid, or use mode dense"
    ))
}
