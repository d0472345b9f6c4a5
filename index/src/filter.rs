//! Payload filters: one language and one semantics for every store, modelled on Qdrant's so that
//! the Qdrant store can pass them through unchanged.
//!
//! ```json
//! {"must": [{"key": "modality", "match": {"value": "CT"}},
//!           {"key": "year", "range": {"gte": 2015, "lt": 2020}}],
//!  "should": [{"key": "finding", "match": {"any": ["effusion", "edema"]}}],
//!  "must_not": [{"must": [{"key": "source", "match": {"value": "synthetic"}}]}]}
//! ```
//!
//! Semantics: a condition on a key holds when any value at that key satisfies it; a key holding an
//! array is satisfied by any element; nested objects are reached with dots (`study.modality`); a
//! missing key satisfies no condition (so `must_not` keeps items without it). `must`: all hold;
//! `must_not`: none holds; `should`: at least one holds when any are given. A condition may itself
//! be a filter (an object with `must`/`should`/`must_not`). `match.value` takes a string, an
//! integer or a boolean; `match.any` a non-empty list of strings or of integers; `range` bounds are
//! numbers and match integer and float values.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{IndexError, Result};

/// A boolean combination of conditions on the payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Every condition must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub must: Vec<Condition>,
    /// At least one condition must hold (when non-empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub should: Vec<Condition>,
    /// No condition may hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub must_not: Vec<Condition>,
}

/// One condition: on a payload field, or a nested filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ConditionWire", into = "ConditionWire")]
pub enum Condition {
    /// A test of the values at `key`.
    Field {
        /// Dotted path into the payload.
        key: String,
        /// The test.
        test: FieldTest,
    },
    /// A nested filter.
    Nested(Box<Filter>),
}

/// What a field condition tests.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldTest {
    /// Equal to this value.
    Equals(MatchValue),
    /// Equal to one of these values.
    In(Vec<MatchValue>),
    /// Within these numeric bounds.
    Range(Range),
}

/// A value `match` compares with. Floats are not matchable for equality: use a range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MatchValue {
    /// A keyword.
    String(String),
    /// An integer.
    Integer(i64),
    /// A boolean.
    Bool(bool),
}

/// Numeric bounds; unset bounds are open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// Strictly greater than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    /// Greater than or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    /// Strictly less than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    /// Less than or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
}

impl Range {
    fn contains(&self, x: f64) -> bool {
        self.gt.is_none_or(|b| x > b)
            && self.gte.is_none_or(|b| x >= b)
            && self.lt.is_none_or(|b| x < b)
            && self.lte.is_none_or(|b| x <= b)
    }
}

/// The JSON shape of a condition, checked into [`Condition`] so that a malformed one is an error
/// that names what is wrong rather than serde's "did not match any variant".
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConditionWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    match_: Option<MatchWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    range: Option<Range>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    must: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    should: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    must_not: Option<Vec<Condition>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    any: Option<Vec<Value>>,
}

fn match_value(v: Value, key: &str) -> Result<MatchValue, String> {
    match v {
        Value::String(s) => Ok(MatchValue::String(s)),
        Value::Bool(b) => Ok(MatchValue::Bool(b)),
        Value::Number(n) => n.as_i64().map(MatchValue::Integer).ok_or_else(|| {
            format!("condition on {key:?}: match takes strings, integers or booleans; use a range for {n}")
        }),
        other => Err(format!(
            "condition on {key:?}: match takes strings, integers or booleans, not {other}"
        )),
    }
}

impl TryFrom<ConditionWire> for Condition {
    type Error = String;
    fn try_from(w: ConditionWire) -> Result<Self, String> {
        let nested = w.must.is_some() || w.should.is_some() || w.must_not.is_some();
        match (w.key, nested) {
            (Some(_), true) => Err(
                "a condition is either a field condition (key + match/range) or a nested filter \
                 (must/should/must_not), not both"
                    .into(),
            ),
            (None, true) => {
                if w.match_.is_some() || w.range.is_some() {
                    return Err("match/range need a key".into());
                }
                Ok(Condition::Nested(Box::new(Filter {
                    must: w.must.unwrap_or_default(),
                    should: w.should.unwrap_or_default(),
                    must_not: w.must_not.unwrap_or_default(),
                })))
            }
            (None, false) => Err(
                "empty condition: give a key with match or range, or a nested must/should/must_not"
                    .into(),
            ),
            (Some(key), false) => {
                if key.is_empty() {
                    return Err("condition key is empty".into());
                }
                let test = match (w.match_, w.range) {
                    (Some(_), Some(_)) => {
                        return Err(format!(
                            "condition on {key:?} has both match and range; use two conditions"
                        ))
                    }
                    (None, None) => {
                        return Err(format!("condition on {key:?} needs match or range"))
                    }
                    (None, Some(range)) => FieldTest::Range(range),
                    (Some(m), None) => match (m.value, m.any) {
                        (Some(v), None) => FieldTest::Equals(match_value(v, &key)?),
                        (None, Some(list)) => FieldTest::In(
                            list.into_iter()
                                .map(|v| match_value(v, &key))
                                .collect::<Result<_, _>>()?,
                        ),
                        _ => {
                            return Err(format!(
                                "condition on {key:?}: match needs exactly one of value or any"
                            ))
                        }
                    },
                };
                Ok(Condition::Field { key, test })
            }
        }
    }
}

impl From<Condition> for ConditionWire {
    fn from(c: Condition) -> Self {
        match c {
            Condition::Nested(f) => ConditionWire {
                must: Some(f.must),
                should: Some(f.should),
                must_not: Some(f.must_not),
                ..Default::default()
            },
            Condition::Field { key, test } => {
                let to_json = |m: MatchValue| match m {
                    MatchValue::String(s) => Value::String(s),
                    MatchValue::Integer(i) => Value::from(i),
                    MatchValue::Bool(b) => Value::Bool(b),
                };
                let (match_, range) = match test {
                    FieldTest::Equals(v) => (
                        Some(MatchWire {
                            value: Some(to_json(v)),
                            any: None,
                        }),
                        None,
                    ),
                    FieldTest::In(list) => (
                        Some(MatchWire {
                            value: None,
                            any: Some(list.into_iter().map(to_json).collect()),
                        }),
                        None,
                    ),
                    FieldTest::Range(r) => (None, Some(r)),
                };
                ConditionWire {
                    key: Some(key),
                    match_,
                    range,
                    ..Default::default()
                }
            }
        }
    }
}

impl Filter {
    /// Parses a filter from JSON text, with an error that says what is wrong.
    pub fn from_json(text: &str) -> Result<Self> {
        let f: Filter =
            serde_json::from_str(text).map_err(|e| IndexError::invalid(format!("filter: {e}")))?;
        f.validate()?;
        Ok(f)
    }

    /// Checks what the types cannot: non-empty `any` lists of one type, ranges with a bound and
    /// finite bounds.
    pub fn validate(&self) -> Result<()> {
        for c in self.must.iter().chain(&self.should).chain(&self.must_not) {
            match c {
                Condition::Nested(f) => f.validate()?,
                Condition::Field { key, test } => match test {
                    FieldTest::Equals(_) => {}
                    FieldTest::In(list) => {
                        if list.is_empty() {
                            return Err(IndexError::invalid(format!(
                                "filter: condition on {key:?}: match.any is empty"
                            )));
                        }
                        let strings = list
                            .iter()
                            .filter(|v| matches!(v, MatchValue::String(_)))
                            .count();
                        let ints = list
                            .iter()
                            .filter(|v| matches!(v, MatchValue::Integer(_)))
                            .count();
                        if strings != list.len() && ints != list.len() {
                            return Err(IndexError::invalid(format!(
                                "filter: condition on {key:?}: match.any must list only strings or only integers"
                            )));
                        }
                    }
                    FieldTest::Range(r) => {
                        let bounds = [r.gt, r.gte, r.lt, r.lte];
                        if bounds.iter().all(Option::is_none) {
                            return Err(IndexError::invalid(format!(
                                "filter: condition on {key:?}: range needs at least one of gt, gte, lt, lte"
                            )));
                        }
                        if bounds.iter().flatten().any(|b| !b.is_finite()) {
                            return Err(IndexError::invalid(format!(
                                "filter: condition on {key:?}: range bounds must be finite"
                            )));
                        }
                    }
                },
            }
        }
        Ok(())
    }

    /// Whether a payload passes the filter.
    pub fn matches(&self, payload: &Map<String, Value>) -> bool {
        self.must.iter().all(|c| c.matches(payload))
            && !self.must_not.iter().any(|c| c.matches(payload))
            && (self.should.is_empty() || self.should.iter().any(|c| c.matches(payload)))
    }

    /// True when the filter accepts every payload.
    pub fn is_empty(&self) -> bool {
        self.must.is_empty() && self.should.is_empty() && self.must_not.is_empty()
    }
}

impl Condition {
    fn matches(&self, payload: &Map<String, Value>) -> bool {
        match self {
            Condition::Nested(f) => f.matches(payload),
            Condition::Field { key, test } => {
                let Some(value) = lookup(payload, key) else {
                    return false;
                };
                let leaves: &[Value] = match value {
                    Value::Array(items) => items,
                    single => std::slice::from_ref(single),
                };
                leaves.iter().any(|v| test.accepts(v))
            }
        }
    }
}

impl FieldTest {
    fn accepts(&self, v: &Value) -> bool {
        match self {
            FieldTest::Equals(m) => value_equals(m, v),
            FieldTest::In(list) => list.iter().any(|m| value_equals(m, v)),
            FieldTest::Range(r) => v.as_f64().is_some_and(|x| r.contains(x)),
        }
    }
}

fn value_equals(m: &MatchValue, v: &Value) -> bool {
    match (m, v) {
        (MatchValue::String(a), Value::String(b)) => a == b,
        (MatchValue::Integer(a), Value::Number(b)) => b.as_i64() == Some(*a),
        (MatchValue::Bool(a), Value::Bool(b)) => a == b,
        _ => false,
    }
}

fn lookup<'a>(payload: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    let mut parts = key.split('.');
    let mut current = payload.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn conditions_follow_the_documented_semantics() {
        let p = payload(json!({
            "modality": "CT", "year": 2017, "score": 0.5, "tags": ["a", "b"],
            "flag": true, "study": {"site": "north", "n": 3}
        }));
        let cases = [
            (
                json!({"must": [{"key": "modality", "match": {"value": "CT"}}]}),
                true,
            ),
            (
                json!({"must": [{"key": "modality", "match": {"value": "MR"}}]}),
                false,
            ),
            (
                json!({"must": [{"key": "year", "match": {"value": 2017}}]}),
                true,
            ),
            (
                json!({"must": [{"key": "year", "range": {"gte": 2017, "lt": 2018}}]}),
                true,
            ),
            (
                json!({"must": [{"key": "year", "range": {"gt": 2017}}]}),
                false,
            ),
            (
                json!({"must": [{"key": "score", "range": {"lte": 0.5}}]}),
                true,
            ),
            (
                json!({"must": [{"key": "tags", "match": {"value": "b"}}]}),
                true,
            ),
            (
                json!({"must": [{"key": "tags", "match": {"any": ["x", "a"]}}]}),
                true,
            ),
            (
                json!({"must": [{"key": "flag", "match": {"value": true}}]}),
                true,
            ),
            (
                json!({"must": [{"key": "study.site", "match": {"value": "north"}}]}),
                true,
            ),
            (
                json!({"must": [{"key": "study.n", "range": {"gt": 2}}]}),
                true,
            ),
            (
                json!({"must": [{"key": "missing", "match": {"value": "x"}}]}),
                false,
            ),
            (
                json!({"must_not": [{"key": "missing", "match": {"value": "x"}}]}),
                true,
            ),
            (
                json!({"must_not": [{"key": "modality", "match": {"value": "CT"}}]}),
                false,
            ),
            (
                json!({"should": [{"key": "modality", "match": {"value": "MR"}},
                               {"key": "year", "match": {"value": 2017}}]}),
                true,
            ),
            (
                json!({"should": [{"key": "modality", "match": {"value": "MR"}}]}),
                false,
            ),
            (
                json!({"must": [{"should": [{"key": "modality", "match": {"value": "MR"}}],
                              "must_not": []}]}),
                false,
            ),
            (
                json!({"must": [{"must_not": [{"key": "modality", "match": {"value": "MR"}}]}]}),
                true,
            ),
            // A string "2017" is not the integer 2017: types must agree, as in Qdrant.
            (
                json!({"must": [{"key": "year", "match": {"value": "2017"}}]}),
                false,
            ),
            (json!({}), true),
        ];
        for (filter, expected) in cases {
            let f = Filter::from_json(&filter.to_string()).unwrap();
            assert_eq!(f.matches(&p), expected, "{filter}");
        }
    }

    #[test]
    fn malformed_filters_are_explained() {
        let cases = [
            (json!({"must": [{"key": "a"}]}), "needs match or range"),
            (
                json!({"must": [{"key": "a", "match": {"value": 1.5}}]}),
                "use a range",
            ),
            (
                json!({"must": [{"key": "a", "match": {"any": []}}]}),
                "empty",
            ),
            (
                json!({"must": [{"key": "a", "match": {"any": ["x", 1]}}]}),
                "only strings or only integers",
            ),
            (
                json!({"must": [{"key": "a", "range": {}}]}),
                "at least one of",
            ),
            (
                json!({"must": [{"key": "a", "range": {"gt": 1}, "match": {"value": 1}}]}),
                "both match and range",
            ),
            (json!({"must": [{}]}), "empty condition"),
            (json!({"must": [{"key": "a", "must": []}]}), "not both"),
            (json!({"mustnt": []}), "unknown field"),
            (
                json!({"must": [{"key": "a", "match": {"value": 1, "any": [1]}}]}),
                "exactly one",
            ),
        ];
        for (filter, needle) in cases {
            let err = Filter::from_json(&filter.to_string())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{filter}: {err}");
        }
    }

    #[test]
    fn filters_round_trip_through_json() {
        let text = json!({"must": [{"key": "a", "match": {"any": [1, 2]}},
                                   {"should": [{"key": "b", "range": {"gt": 1.0}}]}],
                          "must_not": [{"key": "c", "match": {"value": "x"}}]});
        let f = Filter::from_json(&text.to_string()).unwrap();
        let back = Filter::from_json(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(f, back);
    }
}
