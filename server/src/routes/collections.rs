//! Collection lifecycle and item writes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use mirage_index::passages::{expand, plan, remove_stale, ChunkOptions, Span};
use mirage_index::types::unit_vector;
use mirage_index::{CollectionConfig, CollectionInfo, HnswParams, Item};

use crate::dto::{
    CollectionList, CollectionName, CollectionResponse, CollectionSummary, CreateCollectionRequest,
    DeleteItemsRequest, DeleteResponse, FusionSettings, HnswSettings, StoreKind, UpsertRequest,
    UpsertResponse, UpsertedItem,
};
use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::extract::ApiBody;
use crate::infer::Input;
use crate::routes::{check_input_count, parse_filter, prepare_images};
use crate::state::{AppState, CollectionSettings};

pub(crate) async fn describe(state: &AppState, info: CollectionInfo) -> CollectionResponse {
    let settings = state.collection_settings(&info.name).await;
    let search_mode =
        CollectionSettings::mode(settings.as_ref(), true, info.lexical.is_some()).into();
    let fusion = FusionSettings::of(CollectionSettings::fusion(settings.as_ref()));
    let (store, location) = info
        .store
        .split_once(':')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .unwrap_or_default();
    CollectionResponse {
        rag_min_score: settings
            .and_then(|s| s.rag_min_score)
            .unwrap_or(state.settings.rag_min_score),
        name: info.name,
        store,
        location,
        dim: info.dim,
        model_id: info.model.model_id,
        bundle_sha256: info.model.sha256,
        items: info.items,
        text_vectors: info.text_vectors,
        image_vectors: info.image_vectors,
        tombstones: info.tombstones,
        index_version: info.generation,
        hnsw: HnswSettings {
            m: Some(info.hnsw.m),
            ef_construction: Some(info.hnsw.ef_construction),
            ef_search: Some(info.hnsw.ef_search),
            exact_threshold: Some(info.hnsw.exact_threshold),
            quantization: Some(info.hnsw.quantization.into()),
        },
        lexical_index: info.lexical,
        search_mode,
        fusion,
    }
}

/// Creates a collection bound to a loaded model (idempotent when it exists with the same model).
#[utoipa::path(
    put,
    path = "/v1/collections/{name}",
    tag = "collections",
    params(("name" = CollectionName, Path, description = "Collection name")),
    request_body(content = CreateCollectionRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = CollectionResponse),
        (status = 200, description = "Already existed with this model", body = CollectionResponse)
    )
)]
pub async fn create_collection(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiBody(req): ApiBody<CreateCollectionRequest>,
) -> ApiResult<(StatusCode, Json<CollectionResponse>)> {
    mirage_index::embedded::validate_collection_name(&name)?;
    crate::routes::search::check_score("rag_min_score", req.rag_min_score)?;
    if let Some(f) = req.fusion {
        f.over(mirage_index::hybrid::Fusion::default()).validate()?;
    }
    let served = state.models.get(req.model.as_deref())?;
    let mut config = CollectionConfig::new(served.model().dim(), served.model_ref.clone());
    let defaults = HnswParams::default();
    let h = req.hnsw.unwrap_or_default();
    config.hnsw = HnswParams {
        m: h.m.unwrap_or(defaults.m),
        ef_construction: h.ef_construction.unwrap_or(defaults.ef_construction),
        ef_search: h.ef_search.unwrap_or(defaults.ef_search),
        exact_threshold: h.exact_threshold.unwrap_or(defaults.exact_threshold),
        quantization: h.quantization.map_or(defaults.quantization, Into::into),
    };
    config.shard_number = req.shard_number;
    config.replication_factor = req.replication_factor;
    // Checked whether or not the collection exists, so a request is valid or not by itself.
    config.validate()?;
    let spec = state.store_for(req.store.map(StoreKind::as_str))?;
    // A Qdrant collection may have been dropped behind this server's back; look it up afresh.
    // (An embedded one cannot: it is locked to this process while open.)
    state.forget_remote(&name).await;
    let existing = match state.collection(&name).await {
        Ok(c) => Some(c),
        Err(e) if e.kind == ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if let Some(c) = &existing {
        if c.model() != &served.model_ref {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!(
                    "collection {name:?} already exists, built with model {:?}; a collection keeps the model it was created with, so it cannot be created again for {:?}",
                    c.model().model_id,
                    served.model_ref.model_id
                ),
            ));
        }
    }
    let (collection, existed) = match existing {
        // Without a store named, the collection is wherever it lives.
        Some(c) => {
            if req.store.is_some() {
                let lives_in = state.store_for(Some(c.kind()))?;
                mirage_index::store::one_store(&name, &lives_in, &spec)?;
            }
            (c, true)
        }
        None => {
            let c = mirage_index::create_unique(&state.stores(), &spec, &name, &config).await?;
            state.insert_open(&name, c.clone()).await;
            (c, false)
        }
    };
    let previous = state.collection_settings(&name).await;
    let changes = req.rag_min_score.is_some() || req.search_mode.is_some() || req.fusion.is_some();
    if !existed || changes || previous.is_none() {
        let previous = previous.unwrap_or_default();
        let settings = CollectionSettings {
            store: collection.kind().to_owned(),
            rag_min_score: req.rag_min_score.or(previous.rag_min_score),
            search_mode: req.search_mode.or(previous.search_mode),
            fusion: req.fusion.or(previous.fusion),
        };
        state.set_collection_settings(&name, Some(settings)).await?;
    }
    let info = collection.info().await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(describe(&state, info).await)))
}

/// Lists the collections of the server's store (and of its Qdrant store, when configured).
#[utoipa::path(
    get,
    path = "/v1/collections",
    tag = "collections",
    responses((status = 200, description = "The collections", body = CollectionList))
)]
pub async fn list_collections(State(state): State<AppState>) -> ApiResult<Json<CollectionList>> {
    let mut collections: Vec<CollectionSummary> = Vec::new();
    let mut unavailable = Vec::new();
    for spec in state.stores() {
        let store = spec.kind();
        let names = match mirage_index::list_collections(&spec).await {
            Ok(names) => names,
            // One store down must not hide the other's collections: list what answers and
            // name what did not.
            Err(e @ mirage_index::IndexError::Qdrant { .. }) => {
                tracing::warn!(store = %spec, error = %e, "cannot list the store's collections");
                unavailable.push(store.to_owned());
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for name in names {
            match collections.iter_mut().find(|c| c.name == name) {
                Some(c) => c.conflict = true,
                None => collections.push(CollectionSummary {
                    name,
                    store: store.to_owned(),
                    conflict: false,
                }),
            }
        }
    }
    Ok(Json(CollectionList {
        collections,
        unavailable_stores: unavailable,
    }))
}

/// A collection's size, model and settings.
#[utoipa::path(
    get,
    path = "/v1/collections/{name}",
    tag = "collections",
    params(("name" = CollectionName, Path, description = "Collection name")),
    responses((status = 200, description = "The collection", body = CollectionResponse))
)]
pub async fn get_collection(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<CollectionResponse>> {
    let c = state.collection(&name).await?;
    let info = c.info().await?;
    Ok(Json(describe(&state, info).await))
}

/// Deletes a collection and everything in it.
#[utoipa::path(
    delete,
    path = "/v1/collections/{name}",
    tag = "collections",
    params(("name" = CollectionName, Path, description = "Collection name")),
    responses((status = 200, description = "Deleted", body = DeleteResponse))
)]
pub async fn delete_collection(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<DeleteResponse>> {
    let c = state.collection(&name).await?;
    let items = c.count(None).await?;
    let spec = state.store_for(Some(c.kind()))?;
    // Close our handle first: the embedded store holds a lock file while open.
    drop(c);
    state.close(&name).await;
    mirage_index::drop_collection(&spec, &name).await?;
    state.set_collection_settings(&name, None).await?;
    Ok(Json(DeleteResponse { deleted: items }))
}

/// Embeds and writes items; answers once the write is durable.
#[utoipa::path(
    post,
    path = "/v1/collections/{name}/items",
    tag = "collections",
    params(("name" = CollectionName, Path, description = "Collection name")),
    request_body(content((UpsertRequest = "application/json"), (UpsertRequest = "multipart/form-data"))),
    responses((status = 200, description = "Written", body = UpsertResponse))
)]
pub async fn upsert_items(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiBody(req): ApiBody<UpsertRequest>,
) -> ApiResult<Json<UpsertResponse>> {
    check_input_count(&state, req.items.len(), "items")?;
    let (collection, served) = state.collection_and_model(&name).await?;
    let tokenizer = served.model().tokenizer().clone();
    let chunking = match req.chunking {
        Some(c) => Some(
            ChunkOptions::new(c.mode.into(), c.tokens, c.overlap, &tokenizer)
                .map_err(|e| ApiError::invalid(format!("chunking: {e}")))?,
        ),
        None => None,
    };
    let mut inputs = Vec::new();
    let mut images = Vec::new();
    // Where each embedding goes, in input order.
    let mut slots = Vec::new();
    let dim = served.model().dim();
    // Vectors the caller computed, checked before anything is embedded.
    let mut given = Vec::with_capacity(req.items.len());
    for (i, it) in req.items.iter().enumerate() {
        let v = it.vectors.as_ref();
        let check = |space: &str, v: Option<&Vec<f64>>| {
            v.map(|v| {
                unit_vector(&format!("items[{i}].vectors.{space}"), v, dim).map_err(ApiError::from)
            })
            .transpose()
        };
        let text_vector = check("text", v.and_then(|v| v.text.as_ref()))?;
        let image_vector = check("image", v.and_then(|v| v.image.as_ref()))?;
        if v.is_some() && text_vector.is_none() && image_vector.is_none() {
            return Err(ApiError::invalid(format!(
                "items[{i}].vectors has neither text nor image"
            )));
        }
        if image_vector.is_some() && it.image.is_some() {
            return Err(ApiError::invalid(format!(
                "items[{i}] gives both image and vectors.image: give one (image_uri stores a reference)"
            )));
        }
        if text_vector.is_some() && chunking.is_some() {
            return Err(ApiError::invalid(format!(
                "items[{i}] gives vectors.text, which cannot be split into passages: send the text without vectors.text, or drop chunking"
            )));
        }
        given.push((text_vector, image_vector));
    }
    // Per item: its passages (split texts) and whether its text is cut at the model's limit.
    let mut splits: Vec<Option<Vec<Span>>> = Vec::with_capacity(req.items.len());
    let mut truncated = Vec::with_capacity(req.items.len());
    for (i, it) in req.items.iter().enumerate() {
        if it.text.is_none() && it.image.is_none() && it.vectors.is_none() {
            return Err(ApiError::invalid(format!(
                "items[{i}] ({:?}) has neither text, image nor vectors: nothing to index",
                it.id
            )));
        }
        let (mut spans, mut cut) = (None, false);
        if let Some(t) = &it.text {
            if t.trim().is_empty() {
                return Err(ApiError::invalid(format!("items[{i}].text is empty")));
            }
            match (chunking, given[i].0.is_none()) {
                (Some(o), _) => {
                    let parts = plan(&tokenizer, &it.id, t, &it.payload, &o)
                        .map_err(|e| ApiError::invalid(format!("items[{i}]: {e}")))?;
                    let chars: Vec<char> = t.chars().collect();
                    for span in &parts {
                        inputs.push(Input::Text(span.text(&chars)));
                        slots.push(Slot::Passage(i));
                    }
                    spans = Some(parts);
                }
                (None, true) => {
                    cut =
                        tokenizer.full_length(t).map_err(ApiError::from)? > tokenizer.max_length();
                    inputs.push(Input::Text(t.clone()));
                    slots.push(Slot::Text(i));
                }
                (None, false) => {}
            }
        }
        if let Some(d) = &it.image {
            images.push((format!("items[{i}].image"), d.clone()));
        }
        splits.push(spans);
        truncated.push(cut);
    }
    let prepared = prepare_images(&state, &served, images, req.frame.into()).await?;
    let mut dicom = Vec::new();
    for ((i, _), (pixels, tags)) in req
        .items
        .iter()
        .enumerate()
        .filter(|(_, it)| it.image.is_some())
        .zip(prepared)
    {
        inputs.push(Input::Pixels(pixels));
        slots.push(Slot::Image(i));
        dicom.push((i, tags));
    }
    let vectors = served.encoder.embed(inputs).await?;
    let mut items: Vec<Item> = req
        .items
        .into_iter()
        .zip(given)
        .map(|(it, (text_vector, image_vector))| Item {
            id: it.id,
            text: it.text,
            image: it.image_uri,
            payload: it.payload,
            text_vector,
            image_vector,
        })
        .collect();
    let mut passage_vectors: Vec<Vec<Vec<f32>>> = vec![Vec::new(); items.len()];
    for (slot, v) in slots.into_iter().zip(vectors) {
        match slot {
            Slot::Text(i) => items[i].text_vector = Some(v),
            Slot::Image(i) => items[i].image_vector = Some(v),
            Slot::Passage(i) => passage_vectors[i].push(v),
        }
    }
    for (i, tags) in dicom {
        items[i].add_dicom_tags(tags);
    }
    let mut report = Vec::with_capacity(items.len());
    let mut written = Vec::with_capacity(items.len());
    let mut stored = Vec::with_capacity(items.len());
    for ((item, spans), (cut, vectors)) in items
        .into_iter()
        .zip(splits)
        .zip(truncated.iter().zip(passage_vectors))
    {
        report.push(UpsertedItem {
            id: item.id.clone(),
            passages: spans.as_ref().map(Vec::len),
            truncated: *cut,
        });
        let Some(spans) = spans else {
            written.push((item.id.clone(), 0));
            stored.push(item);
            continue;
        };
        written.push((item.id.clone(), spans.len()));
        stored.extend(expand(item, &spans, vectors)?);
    }
    let items_written = stored.len();
    collection.upsert(stored).await?;
    remove_stale(&collection, &written).await?;
    Ok(Json(UpsertResponse {
        upserted: report.len(),
        items_written,
        truncated: truncated.iter().filter(|&&t| t).count(),
        index_version: collection.index_version(),
        items: report,
    }))
}

/// Where one embedding of an upsert goes.
enum Slot {
    /// The text vector of item i.
    Text(usize),
    /// The image vector of item i.
    Image(usize),
    /// The next passage of item i's text.
    Passage(usize),
}

/// Deletes items by id or by filter.
#[utoipa::path(
    delete,
    path = "/v1/collections/{name}/items",
    tag = "collections",
    params(("name" = CollectionName, Path, description = "Collection name")),
    request_body(content = DeleteItemsRequest, content_type = "application/json"),
    responses((status = 200, description = "Deleted", body = DeleteResponse))
)]
pub async fn delete_items(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiBody(req): ApiBody<DeleteItemsRequest>,
) -> ApiResult<Json<DeleteResponse>> {
    let collection = state.collection(&name).await?;
    let deleted = match (req.ids, parse_filter(req.filter)?) {
        (Some(ids), None) => {
            check_input_count(&state, ids.len(), "ids")?;
            collection.delete(ids).await?
        }
        (None, Some(f)) => collection.delete_by_filter(f).await?,
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of \"ids\" or \"filter\"",
            ))
        }
    };
    Ok(Json(DeleteResponse { deleted }))
}
