//! Request bodies: JSON, or `multipart/form-data` for file uploads. Both end up as the same
//! request type, so every route takes images either way. In a multipart body, a text part named
//! `request` holds the JSON object, and every file part is put into it, as a base64 string, at
//! the place its name gives: a dotted name reaches into the object (`query.image` sets
//! `{"query": {"image": …}}`, `items.0.image` the image of the first item). Nothing else is
//! accepted, so the OpenAPI document can describe the body exactly.

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header::CONTENT_TYPE;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{ApiError, ErrorKind};

/// A request body of type `T` from JSON or multipart.
pub struct ApiBody<T>(pub T);

fn rejection(status: axum::http::StatusCode, text: String) -> ApiError {
    let kind = match status.as_u16() {
        413 => ErrorKind::PayloadTooLarge,
        _ => ErrorKind::InvalidJson,
    };
    let detail = if kind == ErrorKind::PayloadTooLarge {
        "the request body exceeds the server's limit (see max_body_bytes in GET /info); send fewer or smaller items".to_owned()
    } else {
        text
    };
    ApiError::new(kind, detail)
}

/// Parses JSON bytes, telling syntax errors (400) from type errors (422).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid(format!("request body: {e}")),
        _ => ApiError::new(
            ErrorKind::InvalidJson,
            format!("request body is not valid JSON: {e}"),
        ),
    })
}

/// Deserialises a request, naming the field at fault (`fusion.method: unknown variant …`).
fn from_value<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::invalid(format!("{what}: {inner}"))
        } else {
            ApiError::invalid(format!("{what}: {path}: {inner}"))
        }
    })
}

fn insert(root: &mut Map<String, Value>, key: &str, value: Value) -> Result<(), ApiError> {
    let segments: Vec<&str> = key.split('.').collect();
    place(root, &segments, value).ok_or_else(|| {
        ApiError::invalid(format!(
            "multipart field name {key:?} does not address a place in the request"
        ))
    })
}

/// Puts `value` at `path` under `map`: objects are created on the way, a numeric segment steps
/// into an existing list, and a repeated leaf becomes a list.
fn place(map: &mut Map<String, Value>, path: &[&str], value: Value) -> Option<()> {
    let (&head, rest) = path.split_first()?;
    if head.is_empty() {
        return None;
    }
    if rest.is_empty() {
        match map.get_mut(head) {
            Some(Value::Array(list)) => list.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
            None => {
                map.insert(head.to_owned(), value);
            }
        }
        return Some(());
    }
    match map
        .entry(head.to_owned())
        .or_insert_with(|| Value::Object(Map::new()))
    {
        Value::Object(inner) => place(inner, rest, value),
        Value::Array(list) => {
            let (&index, rest) = rest.split_first()?;
            match list.get_mut(index.parse::<usize>().ok()?)? {
                Value::Object(inner) if !rest.is_empty() => place(inner, rest, value),
                _ => None,
            }
        }
        _ => None,
    }
}

async fn multipart_object(mut mp: Multipart) -> Result<Value, ApiError> {
    let mut base = Map::new();
    let mut fields: Vec<(String, Value)> = Vec::new();
    while let Some(field) = mp
        .next_field()
        .await
        .map_err(|e| rejection(e.status(), format!("multipart body: {}", e.body_text())))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        if name.is_empty() {
            return Err(ApiError::new(
                ErrorKind::InvalidJson,
                "multipart body: every part needs a name",
            ));
        }
        let is_file = field.file_name().is_some();
        let bytes = field.bytes().await.map_err(|e| {
            rejection(
                e.status(),
                format!("multipart part {name:?}: {}", e.body_text()),
            )
        })?;
        if name == "request" && !is_file {
            match parse_json::<Value>(&bytes)? {
                Value::Object(m) => base = m,
                _ => {
                    return Err(ApiError::invalid(
                        "multipart part \"request\" must hold a JSON object",
                    ))
                }
            }
        } else if is_file {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
            fields.push((name, Value::String(b64)));
        } else {
            return Err(ApiError::invalid(format!(
                "multipart part {name:?} is a text part: put fields in the JSON part \"request\"; other parts must be files (with a filename)"
            )));
        }
    }
    // Parts go onto the `request` object wherever it came in the body.
    for (name, value) in fields {
        insert(&mut base, &name, value)?;
    }
    Ok(Value::Object(base))
}

/// JSON Schema's `integer` includes `6.0`; serde's integer types refuse it. Every float with no
/// fractional part becomes the integer it equals, so each integer field takes what the schema
/// calls an integer (and `match.value` of a filter compares `1.0` as the integer 1, as the schema
/// says it is).
fn integral_floats_to_integers(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Beyond ±2^63 an f64 is an integer with no exact i64/u64 twin; leave it a float.
            if f.fract() == 0.0 && f.abs() < 9.2e18 {
                *v = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ct = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if ct.starts_with("multipart/form-data") {
            let mp = Multipart::from_request(req, state)
                .await
                .map_err(|e| rejection(e.status(), e.body_text()))?;
            let mut value = multipart_object(mp).await?;
            integral_floats_to_integers(&mut value);
            let t = from_value(value, "request")?;
            Ok(Self(t))
        } else if ct.starts_with("application/json") || ct.contains("+json") {
            let bytes = axum::body::Bytes::from_request(req, state)
                .await
                .map_err(|e| rejection(e.status(), e.body_text()))?;
            let mut value: Value = parse_json(&bytes)?;
            // serde reads a struct from a JSON array too; the API takes objects only.
            if !value.is_object() {
                return Err(ApiError::invalid("the request body must be a JSON object"));
            }
            integral_floats_to_integers(&mut value);
            let t = from_value(value, "request body")?;
            Ok(Self(t))
        } else {
            Err(ApiError::new(
                ErrorKind::UnsupportedMediaType,
                format!(
                    "Content-Type {:?} is not accepted; send application/json or multipart/form-data",
                    if ct.is_empty() { "(none)" } else { ct.as_str() }
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_names_reach_into_objects_and_lists() {
        let mut root = json!({"items": [{"id": "a"}, {"id": "b"}]})
            .as_object()
            .unwrap()
            .clone();
        insert(&mut root, "items.1.image", json!("B64")).unwrap();
        insert(&mut root, "query.image", json!("Q")).unwrap();
        insert(&mut root, "labels", json!("x")).unwrap();
        insert(&mut root, "labels", json!("y")).unwrap();
        assert_eq!(
            Value::Object(root.clone()),
            json!({"items": [{"id": "a"}, {"id": "b", "image": "B64"}], "query": {"image": "Q"}, "labels": ["x", "y"]})
        );
        assert!(insert(&mut root, "items.7.image", json!(1)).is_err());
        assert!(insert(&mut root, "labels.x", json!(1)).is_err());
        assert!(insert(&mut root, "a..b", json!(1)).is_err());
    }
}
