//! Inference towers in candle, one block per file (candle-transformers style: a config, `load`
//! from a `VarBuilder`, `forward`): [`bert`] and [`clip_text`] (text) with the [`text`] tower
//! that picks one, [`resnet`] with `attention_pool`, [`vit`] (torchvision and CLIP), the
//! [`vision`] tower that picks one, and the `block` and [`layers`] they share. Tensor names follow
//! [`crate::names`]; a test loads every architecture from exactly the names it lists.

pub(crate) mod attention_pool;
pub mod bert;
pub(crate) mod block;
pub mod clip_text;
pub mod layers;
pub mod resnet;
pub mod text;
pub mod vision;
pub mod vit;

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};
    use std::sync::{Arc, Mutex};

    use candle_core::{DType, Device, Shape, Tensor};
    use candle_nn::var_builder::SimpleBackend;
    use candle_nn::VarBuilder;

    use super::text::TextEncoder;
    use super::vision::VisionEncoder;
    use crate::names;
    use crate::testing::{tiny_config, TinyVision};

    /// Serves the tensors of the scheme and records which ones the towers ask for.
    struct Recorder {
        tensors: HashMap<String, Tensor>,
        used: Arc<Mutex<BTreeSet<String>>>,
    }

    impl Recorder {
        fn take(&self, name: &str) -> candle_core::Result<Tensor> {
            let t = self
                .tensors
                .get(name)
                .ok_or_else(|| candle_core::Error::CannotFindTensor {
                    path: name.to_owned(),
                })?;
            self.used.lock().unwrap().insert(name.to_owned());
            Ok(t.clone())
        }
    }

    impl SimpleBackend for Recorder {
        fn get(
            &self,
            s: Shape,
            name: &str,
            _: candle_nn::Init,
            _: DType,
            _: &Device,
        ) -> candle_core::Result<Tensor> {
            let t = self.take(name)?;
            assert_eq!(t.shape(), &s, "{name}: the tower asks for another shape");
            Ok(t)
        }

        fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
            self.take(name)
        }

        fn contains_tensor(&self, name: &str) -> bool {
            self.tensors.contains_key(name)
        }
    }

    #[test]
    fn every_architecture_loads_from_exactly_the_names_of_the_scheme() {
        for vision in TinyVision::ALL {
            let arch = tiny_config(vision, 16).architecture;
            let specs = names::model_tensors(&arch);
            let tensors = specs
                .iter()
                .map(|s| {
                    let t = Tensor::ones(s.shape.as_slice(), DType::F32, &Device::Cpu).unwrap();
                    (s.name.clone(), t)
                })
                .collect();
            let used = Arc::new(Mutex::new(BTreeSet::new()));
            let recorder = Recorder {
                tensors,
                used: Arc::clone(&used),
            };
            let vb = VarBuilder::from_backend(Box::new(recorder), DType::F32, Device::Cpu);
            TextEncoder::load(&vb.pp(names::TEXT), &arch.text).unwrap();
            VisionEncoder::load(&vb.pp(names::VISION), &arch.vision).unwrap();
            let used = used.lock().unwrap().clone();
            let towers: BTreeSet<String> = specs
                .iter()
                .map(|s| s.name.clone())
                .filter(|n| {
                    n.starts_with(&format!("{}.", names::TEXT))
                        || n.starts_with(&format!("{}.", names::VISION))
                })
                .collect();
            let unused: Vec<&String> = towers.difference(&used).collect();
            assert!(
                unused.is_empty(),
                "{vision:?}: names never loaded: {unused:?}"
            );
            assert_eq!(used, towers, "{vision:?}");
        }
    }
}
