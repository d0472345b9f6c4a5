//! torchvision ResNet trunks (names under `vision.`) with BatchNorm in batch-statistics mode
//! while training, mirroring `mirage-model`'s `towers::resnet`.

use mirage_model::config::{ResNetConfig, VisionPooling};
use mirage_model::names::resnet::*;
use mirage_model::names::{path, BIAS, RUNNING_MEAN, RUNNING_VAR, VISION, WEIGHT};
use tch::{Kind, Tensor};

use super::attention_pool::attention_pool;
use super::{Mode, Params};

const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

fn conv_bn(
    p: &Params,
    prefix: &str,
    conv: &str,
    bn: &str,
    x: &Tensor,
    stride: i64,
    mode: Mode,
) -> Tensor {
    let w = p.get(&path(&[prefix, conv, WEIGHT]));
    let k = w.size()[2];
    let y = x
        .to_kind(mode.compute)
        .conv2d(
            &w.to_kind(mode.compute),
            None::<Tensor>,
            [stride, stride],
            [k / 2, k / 2],
            [1, 1],
            1,
        )
        .to_kind(Kind::Float);
    let g = |n: &str| p.get(&path(&[prefix, bn, n]));
    y.batch_norm(
        Some(g(WEIGHT)),
        Some(g(BIAS)),
        Some(g(RUNNING_MEAN)),
        Some(g(RUNNING_VAR)),
        mode.train,
        BN_MOMENTUM,
        BN_EPS,
        true,
    )
}

pub(crate) fn resnet_features(p: &Params, c: &ResNetConfig, x: &Tensor, mode: Mode) -> Tensor {
    let expansion = if c.bottleneck { 4 } else { 1 };
    let mut x = if c.modified {
        let mut y = x.shallow_clone();
        for j in 1..=3 {
            let stride = if j == 1 { 2 } else { 1 };
            y = conv_bn(p, VISION, &conv(j), &bn(j), &y, stride, mode).relu();
        }
        y.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>)
    } else {
        conv_bn(p, VISION, STEM_CONV, STEM_BN, x, 2, mode)
            .relu()
            .max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)
    };
    let mut in_c = c.width;
    for (stage, &blocks) in c.layers.iter().enumerate() {
        let planes = c.width << stage;
        for b in 0..blocks {
            let pre = path(&[VISION, &block(stage, b)]);
            let stride = if b == 0 && stage > 0 { 2 } else { 1 };
            let unit = |j: usize, x: &Tensor, stride: i64| {
                conv_bn(p, &pre, &conv(j), &bn(j), x, stride, mode)
            };
            // The modified ResNet average-pools where torchvision strides a convolution.
            let (conv_stride, pool) = if c.modified { (1, stride) } else { (stride, 1) };
            let avg = |t: Tensor| {
                if pool > 1 {
                    t.avg_pool2d([pool, pool], [pool, pool], [0, 0], false, true, None::<i64>)
                } else {
                    t
                }
            };
            let y = if c.bottleneck {
                let y = unit(1, &x, 1).relu();
                let y = avg(unit(2, &y, conv_stride).relu());
                unit(3, &y, 1)
            } else {
                let y = unit(1, &x, stride).relu();
                unit(2, &y, 1)
            };
            let identity = if b == 0 && (stride != 1 || in_c != planes * expansion) {
                let src = avg(x.shallow_clone());
                conv_bn(
                    p,
                    &pre,
                    DOWNSAMPLE_CONV,
                    DOWNSAMPLE_BN,
                    &src,
                    conv_stride,
                    mode,
                )
            } else {
                x.shallow_clone()
            };
            x = (y + identity).relu();
            in_c = planes * expansion;
        }
    }
    match c.pooling {
        VisionPooling::Mean => x.mean_dim([2i64, 3].as_slice(), false, Kind::Float),
        VisionPooling::Attention => attention_pool(p, c, &x, mode),
    }
}
