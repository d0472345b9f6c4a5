//! Snapshots: archives of collections in the server's snapshot folder (`<data_dir>/snapshots`),
//! written while the collection serves, listed, downloaded, deleted, and restored as new
//! collections. Every route needs an admin key when keys are configured: an archive holds the
//! whole collection.

use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mirage_index::snapshot::{self, SnapshotManifest, EXTENSION};

use crate::dto::{
    CollectionName, CollectionResponse, DeleteResponse, RestoreRequest, SnapshotList, SnapshotName,
    SnapshotResponse,
};
use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::extract::ApiBody;
use crate::state::{AppState, CollectionSettings};

fn folder(state: &AppState) -> PathBuf {
    state.settings.data_dir.join("snapshots")
}

/// The archive `name` names in the snapshot folder; names are plain file names, so no request
/// reaches outside it.
fn archive_path(state: &AppState, name: &str) -> ApiResult<PathBuf> {
    let stem = name.strip_suffix(&format!(".{EXTENSION}")).unwrap_or("");
    if stem.is_empty() || !snapshot::is_plain_file_name(name) {
        return Err(ApiError::invalid(format!(
            "snapshot {name:?} is not a snapshot name: letters, digits, '.', '-' or '_', ending in .{EXTENSION}"
        )));
    }
    let path = folder(state).join(name);
    if !path.is_file() {
        return Err(ApiError::not_found(format!(
            "no snapshot {name:?} here; GET /v1/snapshots lists them"
        )));
    }
    Ok(path)
}

fn response(
    name: String,
    m: SnapshotManifest,
    size_bytes: u64,
    sha256: Option<String>,
) -> SnapshotResponse {
    SnapshotResponse {
        name,
        store: m.kind,
        collection: m.collection,
        model_id: m.model.model_id,
        bundle_sha256: m.model.sha256,
        items: m.items,
        index_version: m.generation,
        size_bytes,
        sha256,
        created_unix: m.created_unix,
    }
}

/// Writes a snapshot archive of a collection while it keeps serving reads and writes. It holds
/// exactly the writes acknowledged before it began (embedded: one consistent copy of the
/// database and the graph dumps it names; Qdrant: Qdrant's own snapshot, downloaded).
#[utoipa::path(
    post,
    path = "/v1/collections/{name}/snapshots",
    tag = "collections",
    params(("name" = CollectionName, Path, description = "Collection name")),
    responses((status = 201, description = "Written", body = SnapshotResponse))
)]
pub async fn create_snapshot(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<SnapshotResponse>)> {
    let c = state.collection(&name).await?;
    let spec = state.store_for(Some(c.kind()))?;
    let dir = folder(&state);
    fs_err::tokio::create_dir_all(&dir)
        .await
        .map_err(ApiError::internal)?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let file = format!("{name}-{millis}.{EXTENSION}");
    let info = c.snapshot(&spec, dir.join(&file)).await?;
    tracing::info!(collection = %name, snapshot = %file, bytes = info.size_bytes,
        items = info.manifest.items, "snapshot written");
    Ok((
        StatusCode::CREATED,
        Json(response(
            file,
            info.manifest,
            info.size_bytes,
            Some(info.sha256),
        )),
    ))
}

/// The snapshot archives the server holds, newest first (read from their manifests; the files
/// are checked when restored).
#[utoipa::path(
    get,
    path = "/v1/snapshots",
    tag = "collections",
    responses((status = 200, description = "The snapshots", body = SnapshotList))
)]
pub async fn list_snapshots(State(state): State<AppState>) -> ApiResult<Json<SnapshotList>> {
    let dir = folder(&state);
    let listed = tokio::task::spawn_blocking(move || -> std::io::Result<SnapshotList> {
        let mut snapshots = Vec::new();
        let mut unreadable = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(SnapshotList {
                    snapshots,
                    unreadable,
                })
            }
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with('.') || !name.ends_with(&format!(".{EXTENSION}")) {
                continue;
            }
            let size = entry.metadata()?.len();
            match snapshot::describe(&entry.path()) {
                Ok(m) => snapshots.push(response(name, m, size, None)),
                Err(e) => unreadable.push(format!("{name}: {e}")),
            }
        }
        snapshots.sort_by(|a, b| {
            (b.created_unix, &b.name)
                .partial_cmp(&(a.created_unix, &a.name))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        Ok(SnapshotList {
            snapshots,
            unreadable,
        })
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(Json(listed))
}

/// Downloads a snapshot archive (a tar file; its last two entries are the manifest and the
/// manifest's sha256).
#[utoipa::path(
    get,
    path = "/v1/snapshots/{snapshot}",
    tag = "collections",
    params(("snapshot" = SnapshotName, Path, description = "Snapshot file name")),
    responses((status = 200, description = "The archive", content_type = "application/x-tar", body = Vec<u8>))
)]
pub async fn download_snapshot(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let path = archive_path(&state, &name)?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(ApiError::internal)?;
    let size = file.metadata().await.map_err(ApiError::internal)?.len();
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// Deletes a snapshot archive.
#[utoipa::path(
    delete,
    path = "/v1/snapshots/{snapshot}",
    tag = "collections",
    params(("snapshot" = SnapshotName, Path, description = "Snapshot file name")),
    responses((status = 200, description = "Deleted (`deleted` is 1)", body = DeleteResponse))
)]
pub async fn delete_snapshot(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<DeleteResponse>> {
    let path = archive_path(&state, &name)?;
    fs_err::tokio::remove_file(&path)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(DeleteResponse { deleted: 1 }))
}

/// Restores a snapshot archive as a new collection, after checking every checksum, the format
/// versions and the model: the archive's model must be loaded here (409 otherwise), and an
/// existing collection of the name is never replaced (409). A damaged, truncated or altered
/// archive is refused (422) with the reason.
#[utoipa::path(
    post,
    path = "/v1/snapshots/{snapshot}/restore",
    tag = "collections",
    params(("snapshot" = SnapshotName, Path, description = "Snapshot file name")),
    request_body(content = RestoreRequest, content_type = "application/json"),
    responses((status = 201, description = "Restored", body = CollectionResponse))
)]
pub async fn restore_snapshot(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiBody(req): ApiBody<RestoreRequest>,
) -> ApiResult<(StatusCode, Json<CollectionResponse>)> {
    if let Some(n) = &req.as_name {
        mirage_index::embedded::validate_collection_name(n)?;
    }
    let path = archive_path(&state, &name)?;
    let manifest = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || snapshot::describe(&path).map_err(ApiError::from))
            .await
            .map_err(ApiError::internal)??
    };
    let target = req.as_name.unwrap_or_else(|| manifest.collection.clone());
    // Refused before anything is written: a collection this server could not query.
    state.models.for_collection(&target, &manifest.model)?;
    let spec = state.store_for(Some(&manifest.kind))?;
    match state.collection(&target).await {
        Ok(c) => {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!(
                    "collection {target:?} exists in the {} store; restore under another name (\"as\"), or delete it first",
                    c.kind()
                ),
            ))
        }
        Err(e) if e.kind == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let c = mirage_index::restore(&spec, path, Some(target.clone())).await?;
    state.insert_open(&target, c.clone()).await;
    state
        .set_collection_settings(
            &target,
            Some(CollectionSettings {
                store: c.kind().to_owned(),
                ..CollectionSettings::default()
            }),
        )
        .await?;
    tracing::info!(snapshot = %name, collection = %target, "snapshot restored");
    let info = c.info().await?;
    Ok((
        StatusCode::CREATED,
        Json(super::collections::describe(&state, info).await),
    ))
}
