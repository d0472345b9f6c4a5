//! `mirage-train loss`: the objective on given features, for reproducing numbers against other
//! implementations. Reads `image_features` `[B,D]` and `text_features` `[B,D]` (projected, not yet
//! normalised), `queue` `[K,D]` (unit rows) and `log_scales` `[4]` (pair, robust, ot, queue).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::json;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::read_tensors;
use crate::config::TrainConfig;
use crate::loss::{mirage_loss, Lambdas, LogScales};

/// Evaluates the configured objective on the tensors of `inputs`; returns the JSON report.
pub fn probe(inputs: &Path, config: &TrainConfig) -> Result<serde_json::Value> {
    let t = read_tensors(inputs, Device::Cpu)?;
    let get = |n: &str| -> Result<Tensor> {
        Ok(t.get(n)
            .with_context(|| format!("{} lacks tensor `{n}`", inputs.display()))?
            .to_kind(Kind::Float))
    };
    let v = get("image_features")?;
    let x = get("text_features")?;
    let q = get("queue")?;
    let scales = get("log_scales")?;
    if v.dim() != 2 || v.size() != x.size() {
        bail!(
            "image_features {:?} and text_features {:?} must both be [B, D]",
            v.size(),
            x.size()
        );
    }
    if q.dim() != 2 || q.size()[1] != v.size()[1] {
        bail!(
            "queue {:?} must be [K, D] with D = {}",
            q.size(),
            v.size()[1]
        );
    }
    if scales.size() != [4] {
        bail!(
            "log_scales {:?} must be [4]: pair, robust, ot, queue",
            scales.size()
        );
    }
    let s: Vec<Tensor> = (0..4).map(|i| scales.get(i)).collect();
    let out = mirage_loss(
        &v,
        &x,
        (!config.loss.is_clip()).then_some((&q, q.size()[0])),
        &LogScales {
            pair: &s[0],
            robust: &s[1],
            ot: &s[2],
            queue: &s[3],
        },
        &config.loss,
        Lambdas::at_step(&config.loss, u64::MAX),
        &config.nn,
        config.temps.max_scale,
        Kind::Float,
    );
    let s = Vec::<f64>::try_from(out.s.to_kind(Kind::Double))?;
    Ok(json!({
        "pair": out.pair.double_value(&[]),
        "robust": out.robust.double_value(&[]),
        "ot": out.ot.double_value(&[]),
        "total": out.total.double_value(&[]),
        "s": s,
    }))
}
