//! The OpenAPI document: what utoipa derives from the handlers and DTOs, plus what derive
//! attributes cannot say, added here from the same code: the problem responses every `/v1`
//! operation can give, "exactly one of" / "at least one of" field groups, multipart bodies as the
//! server reads them, and the values a running server's configuration fixes (input limits, the
//! model's dimension, the stores offered, whether keys are required). `mirage openapi` prints the
//! document for the default configuration; `GET /openapi.json` serves it for the running one.

use serde_json::{json, Map, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Spec, Ref, ResponseBuilder};

use crate::config::Settings;
use crate::error::PROBLEM_JSON;

/// Status codes every `/v1` operation can answer with a problem, besides its own.
const PROBLEM_STATUSES: [(&str, &str); 11] = [
    ("400", "Malformed JSON or multipart body"),
    ("401", "Missing or unknown API key"),
    ("403", "The key's scope does not allow this route"),
    ("404", "Unknown collection, model or route"),
    (
        "409",
        "Collection built with another model, a name in both stores, the bundle lacks a text bank, or the server has no reranker (`--reranker`)",
    ),
    ("413", "Body above max_body_bytes"),
    ("415", "Content-Type or image encoding not supported"),
    (
        "422",
        "Invalid request: a value the schema cannot describe (an image that does not decode, a DICOM frame out of range)",
    ),
    (
        "429",
        "Inference queue full; retry after Retry-After seconds",
    ),
    (
        "502",
        "The Qdrant store refused the request or this server's credentials",
    ),
    (
        "503",
        "Not ready, draining, timed out, or the Qdrant store is unreachable; retry after Retry-After seconds",
    ),
];

/// What a running server's configuration fixes in its document.
#[derive(Debug, Clone)]
pub struct Contract {
    /// Most inputs (texts, images, items, pairs, labels, ids) per request.
    pub max_inputs_per_request: usize,
    /// The model's joint dimension; `None` in the configuration-free document.
    pub embed_dim: Option<usize>,
    /// Content tokens the model reads in one text (its limit less its special tokens): the
    /// largest passage; `None` in the configuration-free document.
    pub max_chunk_tokens: Option<usize>,
    /// Stores a collection may be created in.
    pub stores: Vec<&'static str>,
    /// Whether requests need an API key.
    pub auth: bool,
}

impl Default for Contract {
    fn default() -> Self {
        Self {
            max_inputs_per_request: Settings::default().max_inputs_per_request,
            embed_dim: None,
            max_chunk_tokens: None,
            stores: vec!["embedded", "qdrant"],
            auth: false,
        }
    }
}

/// Problem responses, security schemes: the parts that are the same for every configuration.
pub(crate) fn finish_spec(mut api: Spec) -> Spec {
    let problem = |desc: &str| {
        ResponseBuilder::new()
            .description(desc)
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
    };
    for (path, item) in api.paths.paths.iter_mut() {
        if crate::auth::public_path(path) {
            continue;
        }
        // Outside /v1 (`/info`) the only problem a client can cause is a missing key.
        let v1 = path.starts_with("/v1/");
        let statuses = PROBLEM_STATUSES
            .iter()
            .filter(|(code, _)| v1 || *code == "401");
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            for (code, desc) in statuses.clone() {
                op.responses
                    .responses
                    .entry((*code).to_owned())
                    .or_insert_with(|| problem(desc).into());
            }
            op.responses
                .responses
                .entry("500".to_owned())
                .or_insert_with(|| problem("Server error; details are in its log").into());
        }
    }
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    components.add_security_scheme(
        "api_key",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
    );
    api
}

/// `{"required": [f], "properties": {f: not null}}`: the branch where `f` is given.
fn given(field: &str) -> Value {
    json!({"required": [field], "properties": {field: {"not": {"type": "null"}}}})
}

/// Exactly one of `fields` is given (present and not null).
fn exactly_one(schema: &mut Value, fields: &[&str]) {
    let branches: Vec<Value> = fields
        .iter()
        .map(|f| {
            let mut b = given(f);
            for other in fields.iter().filter(|o| *o != f) {
                b["properties"][*other] = json!({"type": "null"});
            }
            b
        })
        .collect();
    schema["oneOf"] = Value::Array(branches);
}

/// At least one of `fields` is given.
fn at_least_one(schema: &mut Value, fields: &[&str]) {
    schema["anyOf"] = Value::Array(fields.iter().map(|f| given(f)).collect());
}

/// Sets `key` of the schema at `pointer` (which must exist: a renamed field fails loudly).
fn set(doc: &mut Value, pointer: &str, key: &str, value: Value) {
    let node = doc
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("OpenAPI document has no {pointer}"));
    // An optional field's schema is `oneOf [null, X]` (or `type: [X, null]`): the bound goes on X.
    let target = match node.get_mut("oneOf") {
        Some(Value::Array(branches)) => branches
            .iter_mut()
            .find(|b| b.get("type") != Some(&json!("null")))
            .unwrap_or_else(|| panic!("{pointer}: no non-null branch")),
        _ => node,
    };
    target[key] = value;
}

/// A multipart body as [`crate::extract::ApiBody`] reads it: a `request` part holding the JSON
/// request, plus file parts that fill image fields by their JSON path.
fn multipart_body(request_ref: &Value, image_paths: &str) -> Value {
    json!({
        "schema": {
            "type": "object",
            "required": ["request"],
            "properties": {"request": request_ref},
            "additionalProperties": false,
            "description": format!(
                "The part `request` holds the JSON request (as in application/json). File parts \
                 may add images: a part named by the JSON path of an image field ({image_paths}) \
                 sets that field to the file's bytes, in place of base64 in `request`."
            )
        },
        "encoding": {"request": {"contentType": "application/json"}}
    })
}

/// The payload filter language of `mirage_index::filter`, as JSON Schema: what its parser and
/// `Filter::validate` accept, no more and no less.
fn filter_schemas() -> [(&'static str, Value); 6] {
    let r = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let nullable = |schema: Value| json!({"oneOf": [{"type": "null"}, schema]});
    let conditions = json!({"type": "array", "items": r("FilterCondition")});
    let integer = json!({"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX});
    let no = json!({"type": "null"});
    [
        (
            "Filter",
            json!({
                "type": "object",
                "description": "Payload filter (Qdrant's syntax): every `must` condition holds, at least one `should` condition holds when any are given, no `must_not` condition holds. A key reaches nested objects with dots; a key holding a list is satisfied by any element; a missing key satisfies no condition.",
                "additionalProperties": false,
                "properties": {"must": conditions, "should": conditions, "must_not": conditions}
            }),
        ),
        (
            "FilterCondition",
            json!({"oneOf": [r("FieldCondition"), r("NestedFilter")]}),
        ),
        (
            "FieldCondition",
            json!({
                "type": "object",
                "description": "A test of the values at `key`: `match` or `range`.",
                "additionalProperties": false,
                "required": ["key"],
                "properties": {
                    "key": {"type": "string", "minLength": 1},
                    "match": nullable(r("FilterMatch")),
                    "range": nullable(r("FilterRange")),
                    "must": no, "should": no, "must_not": no
                },
                "oneOf": [
                    {"required": ["match"], "properties": {"match": {"not": no}, "range": no}},
                    {"required": ["range"], "properties": {"range": {"not": no}, "match": no}}
                ]
            }),
        ),
        (
            "NestedFilter",
            json!({
                "type": "object",
                "description": "A nested filter: at least one of `must`, `should`, `must_not`.",
                "additionalProperties": false,
                "properties": {
                    "key": no, "match": no, "range": no,
                    "must": nullable(conditions.clone()),
                    "should": nullable(conditions.clone()),
                    "must_not": nullable(conditions)
                },
                "anyOf": [given("must"), given("should"), given("must_not")]
            }),
        ),
        (
            "FilterMatch",
            json!({
                "type": "object",
                "description": "`value`: equal to a string, integer or boolean; `any`: equal to one of a non-empty list of strings or of integers. Floats are matched with a range.",
                "additionalProperties": false,
                "properties": {
                    "value": nullable(json!({"oneOf": [{"type": "string"}, integer, {"type": "boolean"}]})),
                    "any": nullable(json!({
                        "type": "array",
                        "minItems": 1,
                        "oneOf": [
                            {"items": {"type": "string"}},
                            {"items": integer}
                        ]
                    }))
                },
                "oneOf": [
                    {"required": ["value"], "properties": {"value": {"not": no}, "any": no}},
                    {"required": ["any"], "properties": {"any": {"not": no}, "value": no}}
                ]
            }),
        ),
        (
            "FilterRange",
            json!({
                "type": "object",
                "description": "Numeric bounds, at least one; integer and float values match.",
                "additionalProperties": false,
                "properties": {
                    "gt": nullable(json!({"type": "number"})),
                    "gte": nullable(json!({"type": "number"})),
                    "lt": nullable(json!({"type": "number"})),
                    "lte": nullable(json!({"type": "number"}))
                },
                "anyOf": [given("gt"), given("gte"), given("lt"), given("lte")]
            }),
        ),
    ]
}

/// The document for a server configured as `contract` says.
pub fn document(api: &Spec, contract: &Contract) -> Value {
    let mut doc = serde_json::to_value(api).expect("the OpenAPI document serialises");
    let schemas = "/components/schemas";
    let max = json!(contract.max_inputs_per_request);

    // The filter language, wherever a filter is taken.
    if let Some(Value::Object(components)) = doc.pointer_mut(schemas) {
        for (name, schema) in filter_schemas() {
            components.insert(name.into(), schema);
        }
    }
    for owner in ["SearchRequest", "RagRequest", "DeleteItemsRequest"] {
        let field = doc
            .pointer_mut(&format!("{schemas}/{owner}/properties/filter"))
            .unwrap_or_else(|| panic!("{owner} has no filter"));
        let description = field.get("description").cloned();
        *field = json!({"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Filter"}]});
        if let Some(d) = description {
            field["description"] = d;
        }
    }

    // Field groups the derive cannot state.
    let s = |doc: &mut Value, name: &str| -> Value {
        doc.pointer(&format!("{schemas}/{name}"))
            .cloned()
            .unwrap_or_else(|| panic!("no schema {name}"))
    };
    for (name, fields, exactly) in [
        ("Query", &["text", "image", "vector"][..], false),
        ("InputObject", &["text", "image"][..], true),
        ("DeleteItemsRequest", &["ids", "filter"][..], true),
        ("RagRequest", &["question", "image"][..], false),
        ("UpsertItem", &["text", "image", "vectors"][..], false),
        ("ItemVectors", &["text", "image"][..], false),
    ] {
        let mut schema = s(&mut doc, name);
        if exactly {
            exactly_one(&mut schema, fields);
        } else {
            at_least_one(&mut schema, fields);
        }
        *doc.pointer_mut(&format!("{schemas}/{name}")).unwrap() = schema;
    }
    // An image and a vector are two dense queries; text may join either.
    let query = doc
        .pointer_mut(&format!("{schemas}/Query"))
        .expect("Query schema");
    query["not"] = json!({
        "required": ["image", "vector"],
        "properties": {
            "image": {"not": {"type": "null"}},
            "vector": {"not": {"type": "null"}},
        },
    });
    // Fusion needs a leg with weight.
    let fusion = doc
        .pointer_mut(&format!("{schemas}/FusionSettings"))
        .expect("FusionSettings schema");
    fusion["not"] = json!({
        "required": ["dense_weight", "lexical_weight"],
        "properties": {"dense_weight": {"const": 0}, "lexical_weight": {"const": 0}},
    });
    // An image to embed and a precomputed image vector are two answers to one question.
    let item = doc
        .pointer_mut(&format!("{schemas}/UpsertItem"))
        .expect("UpsertItem schema");
    item["not"] = json!({
        "required": ["image", "vectors"],
        "properties": {
            "image": {"not": {"type": "null"}},
            "vectors": {"type": "object", "required": ["image"],
                        "properties": {"image": {"not": {"type": "null"}}}},
        },
    });
    set(
        &mut doc,
        &format!("{schemas}/UpsertItem/properties/payload"),
        "propertyNames",
        json!({"not": {"const": mirage_index::types::RESERVED_PAYLOAD_KEY}}),
    );
    set(
        &mut doc,
        &format!("{schemas}/ClassifyRequest/properties/labels"),
        "uniqueItems",
        json!(true),
    );

    // Limits of this configuration.
    for pointer in [
        "ClassifyRequest/properties/labels",
        "AuditRequest/properties/pairs",
        "UpsertRequest/properties/items",
        "DeleteItemsRequest/properties/ids",
    ] {
        set(
            &mut doc,
            &format!("{schemas}/{pointer}"),
            "maxItems",
            max.clone(),
        );
    }
    let many = doc
        .pointer_mut(&format!("{schemas}/EmbeddingInput/oneOf/1"))
        .expect("EmbeddingInput is one text or a list");
    many["minItems"] = json!(1);
    many["maxItems"] = max;
    let vectors = [
        format!("{schemas}/Query/properties/vector"),
        format!("{schemas}/ItemVectors/properties/text"),
        format!("{schemas}/ItemVectors/properties/image"),
    ];
    for vector in &vectors {
        set(&mut doc, vector, "contains", json!({"not": {"const": 0}}));
    }
    // The depth bound the stores enforce, stated where they keep it.
    let depth = mirage_index::types::MAX_SEARCH_DEPTH;
    let page = format!("{schemas}/SearchRequest/properties");
    set(&mut doc, &format!("{page}/limit"), "maximum", json!(depth));
    set(
        &mut doc,
        &format!("{page}/offset"),
        "maximum",
        json!(depth - 1),
    );
    // The RAG bounds, stated where the assembly keeps them.
    let rag_props = format!("{schemas}/RagRequest/properties");
    for (field, minimum, maximum) in [
        ("k", 1, mirage_index::rag::MAX_PASSAGES),
        (
            "max_chars",
            mirage_index::rag::MIN_CONTEXT_CHARS,
            mirage_index::rag::MAX_CONTEXT_CHARS,
        ),
    ] {
        set(
            &mut doc,
            &format!("{rag_props}/{field}"),
            "minimum",
            json!(minimum),
        );
        set(
            &mut doc,
            &format!("{rag_props}/{field}"),
            "maximum",
            json!(maximum),
        );
    }
    if let Some(dim) = contract.embed_dim {
        for vector in &vectors {
            set(&mut doc, vector, "minItems", json!(dim));
            set(&mut doc, vector, "maxItems", json!(dim));
        }
        set(
            &mut doc,
            &format!("{schemas}/EmbeddingsRequest/properties/dimensions"),
            "enum",
            json!([dim]),
        );
    }
    if let Some(most) = contract.max_chunk_tokens {
        let chunking = format!("{schemas}/ChunkingSettings/properties");
        set(
            &mut doc,
            &format!("{chunking}/tokens"),
            "maximum",
            json!(most),
        );
        set(
            &mut doc,
            &format!("{chunking}/overlap"),
            "maximum",
            json!(most.saturating_sub(1)),
        );
    }
    // Grouping: its size bound, and a size only with a grouping.
    set(
        &mut doc,
        &format!("{page}/group_size"),
        "maximum",
        json!(mirage_index::hybrid::MAX_GROUP_SIZE),
    );
    let not_null = json!({"not": {"type": "null"}});
    let search = doc
        .pointer_mut(&format!("{schemas}/SearchRequest"))
        .expect("SearchRequest schema");
    // Rerank reads the query text beside each hit's text: no rerank of an image or vector alone.
    let rerank_set = json!({"required": ["rerank"], "properties": {"rerank": not_null}});
    search["allOf"] = json!([
        {
            "if": {"required": ["group_size"], "properties": {"group_size": not_null}},
            "then": {"required": ["group_by"], "properties": {"group_by": not_null}},
        },
        {
            "if": rerank_set,
            "then": {"properties": {"query": {
                "type": "object", "required": ["text"], "properties": {"text": not_null}}}},
        },
    ]);
    let rag = doc
        .pointer_mut(&format!("{schemas}/RagRequest"))
        .expect("RagRequest schema");
    rag["if"] = rerank_set;
    rag["then"] = json!({"required": ["question"], "properties": {"question": not_null}});
    // Split texts are embedded here, passage by passage, and record their passages in the
    // payload: no precomputed text vector and no caller's `passage` key beside chunking.
    let upsert = doc
        .pointer_mut(&format!("{schemas}/UpsertRequest"))
        .expect("UpsertRequest schema");
    upsert["if"] = json!({"required": ["chunking"], "properties": {"chunking": not_null}});
    upsert["then"] = json!({"properties": {"items": {"items": {
        "not": {"anyOf": [
            {"required": ["vectors"], "properties": {"vectors": {
                "type": "object", "required": ["text"], "properties": {"text": not_null}}}},
            {"required": ["payload"], "properties": {"payload": {
                "type": "object", "required": [mirage_index::passages::PASSAGE_PAYLOAD_KEY]}}},
        ]},
    }}}});
    set(
        &mut doc,
        &format!("{schemas}/CreateCollectionRequest/properties/store"),
        "enum",
        json!(contract.stores),
    );
    if let Some(Value::Object(store)) = doc.pointer_mut(&format!("{schemas}/StoreKind")) {
        store.insert("enum".into(), json!(contract.stores));
    }

    // Multipart bodies as they are read.
    let multipart: [(&str, &str, &str); 6] = [
        ("/v1/embeddings", "EmbeddingsRequest", "`input.0.image`, …"),
        ("/v1/classify", "ClassifyRequest", "`image`"),
        ("/v1/search", "SearchRequest", "`query.image`"),
        ("/v1/rag/context", "RagRequest", "`image`"),
        ("/v1/audit", "AuditRequest", "`pairs.0.image`, …"),
        (
            "/v1/collections/{name}/items",
            "UpsertRequest",
            "`items.0.image`, …",
        ),
    ];
    for (path, schema, images) in multipart {
        let pointer = format!(
            "/paths/{}/post/requestBody/content",
            path.replace('/', "~1")
        );
        let content = doc
            .pointer_mut(&pointer)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("no request body at {pointer}"));
        content.insert(
            "multipart/form-data".into(),
            multipart_body(
                &json!({"$ref": format!("#/components/schemas/{schema}")}),
                images,
            ),
        );
    }

    // Keys: required by every operation but the public ones when configured; the document
    // without a configuration says both.
    let mut schemes = vec![json!({"bearer": []}), json!({"api_key": []})];
    if !contract.auth {
        schemes.push(json!({}));
    }
    if let Some(Value::Object(paths)) = doc.get_mut("paths") {
        for (path, item) in paths.iter_mut() {
            if crate::auth::public_path(path) {
                continue;
            }
            for op in item.as_object_mut().into_iter().flat_map(Map::values_mut) {
                op["security"] = json!(schemes);
            }
        }
    }
    doc
}
