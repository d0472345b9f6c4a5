//! The inference queue: one encoder thread owns the forward passes; requests hand it work through
//! a channel and wait on a oneshot reply. Embedding work from concurrent requests is merged into
//! shared forward passes of up to `batch_size` items. A semaphore counts queued items: when it is
//! exhausted a request is refused at once with 429 instead of piling up until memory runs out.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use mirage_model::{MirageModel, TextRole};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::metrics::Metrics;

/// One item to embed.
#[derive(Debug)]
pub enum Input {
    /// A text, embedded as a document.
    Text(String),
    /// A search query: embedded by the query tower where the model has one.
    Query(String),
    /// One image already preprocessed to 3 × S × S floats.
    Pixels(Vec<f32>),
}

type Custom = Box<dyn FnOnce(&MirageModel) + Send>;

enum Job {
    Embed {
        inputs: Vec<Input>,
        reply: oneshot::Sender<ApiResult<Vec<Vec<f32>>>>,
        span: tracing::Span,
        _permit: OwnedSemaphorePermit,
    },
    /// Holds its queue permit inside `work`, which releases it before replying.
    Custom { work: Custom, span: tracing::Span },
}

impl Job {
    fn items(&self) -> usize {
        match self {
            Job::Embed { inputs, .. } => inputs.len(),
            Job::Custom { .. } => 1,
        }
    }
}

/// Handle to the encoder thread.
#[derive(Clone)]
pub struct Encoder {
    model: Arc<MirageModel>,
    tx: Sender<Job>,
    permits: Arc<Semaphore>,
    capacity: usize,
    metrics: Arc<Metrics>,
}

impl Encoder {
    /// Starts the encoder thread.
    pub fn start(
        model: Arc<MirageModel>,
        batch_size: usize,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        let worker_model = model.clone();
        let worker_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("mirage-encoder".into())
            .spawn(move || worker(&worker_model, &rx, batch_size, &worker_metrics))
            .expect("spawning the encoder thread");
        Self {
            model,
            tx,
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            metrics,
        }
    }

    /// The model.
    pub fn model(&self) -> &MirageModel {
        &self.model
    }

    /// Items queued or in flight.
    pub fn depth(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }

    fn admit(&self, items: usize) -> ApiResult<OwnedSemaphorePermit> {
        if items > self.capacity {
            // Waiting would not help: such a request can never fit.
            return Err(ApiError::invalid(format!(
                "this request needs {items} inference slots (texts, images and prompts), more than the server's max_queue_items ({}); send fewer labels, templates or inputs per request",
                self.capacity
            )));
        }
        let n = u32::try_from(items.max(1)).unwrap_or(u32::MAX);
        let permit = self.permits.clone().try_acquire_many_owned(n).map_err(|_| {
            self.metrics.rejected_overload();
            ApiError::new(
                ErrorKind::Overloaded,
                format!(
                    "the inference queue is full ({} of {} items waiting); retry after the Retry-After delay",
                    self.depth(),
                    self.capacity
                ),
            )
            .retry_after(1)
        })?;
        Ok(permit)
    }

    /// Embeds `inputs` (unit vectors, in order), batched with other requests' work.
    pub async fn embed(&self, inputs: Vec<Input>) -> ApiResult<Vec<Vec<f32>>> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let permit = self.admit(inputs.len())?;
        let span = self.queue_span(inputs.len());
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Embed {
                inputs,
                reply,
                span: span.clone(),
                _permit: permit,
            })
            .map_err(|_| ApiError::internal("encoder thread is gone"))?;
        tracing::Instrument::instrument(rx, span)
            .await
            .map_err(|_| ApiError::internal("encoder thread dropped a reply"))?
    }

    /// The span of one request's stay in the queue, from admission to its reply.
    fn queue_span(&self, items: usize) -> tracing::Span {
        tracing::info_span!(
            "inference.queue",
            model = %self.model.model_id(),
            items,
            queue_depth = self.depth(),
        )
    }

    /// Runs `work` on the encoder thread (for work that is not a plain embedding, such as
    /// classification against a label set), counted as `cost` queue items.
    pub async fn run<T: Send + 'static>(
        &self,
        cost: usize,
        work: impl FnOnce(&MirageModel) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        let permit = self.admit(cost)?;
        let span = self.queue_span(cost);
        let (reply, rx) = oneshot::channel();
        let work: Custom = Box::new(move |m| {
            let out = work(m);
            // Free the slots before the caller can see the reply, so a client that got its
            // answer never finds its own finished work still holding the queue.
            drop(permit);
            let _ = reply.send(out);
        });
        self.tx
            .send(Job::Custom {
                work,
                span: span.clone(),
            })
            .map_err(|_| ApiError::internal("encoder thread is gone"))?;
        tracing::Instrument::instrument(rx, span)
            .await
            .map_err(|_| ApiError::internal("encoder thread dropped a reply"))?
    }
}

fn worker(model: &MirageModel, rx: &Receiver<Job>, batch_size: usize, metrics: &Metrics) {
    while let Ok(first) = rx.recv() {
        // Take whatever else is already waiting, up to one batch of items.
        let mut jobs = vec![first];
        let mut items = jobs[0].items();
        while items < batch_size {
            match rx.try_recv() {
                Ok(job) => {
                    items += job.items();
                    jobs.push(job);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let mut embeds = Vec::new();
        for job in jobs {
            match job {
                Job::Custom { work, span } => {
                    let _g = tracing::info_span!(parent: &span, "inference.run").entered();
                    let t = Instant::now();
                    // A panic in one request's work must not take the encoder down with it.
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(model)));
                    if result.is_err() {
                        tracing::error!("inference work panicked");
                    }
                    metrics.inference(t.elapsed().as_secs_f64(), 1);
                }
                Job::Embed {
                    inputs,
                    reply,
                    span,
                    _permit,
                } => embeds.push((inputs, reply, span, _permit)),
            }
        }
        if !embeds.is_empty() {
            run_embeds(model, embeds, batch_size, metrics);
        }
    }
}

type EmbedJob = (
    Vec<Input>,
    oneshot::Sender<ApiResult<Vec<Vec<f32>>>>,
    tracing::Span,
    OwnedSemaphorePermit,
);

fn run_embeds(model: &MirageModel, jobs: Vec<EmbedJob>, batch_size: usize, metrics: &Metrics) {
    // Flatten texts and images of every job, remembering where each result goes.
    let mut texts: Vec<(usize, usize, String)> = Vec::new();
    let mut queries: Vec<(usize, usize, String)> = Vec::new();
    let mut images: Vec<(usize, usize, Vec<f32>)> = Vec::new();
    let mut outputs: Vec<Vec<Vec<f32>>> = Vec::with_capacity(jobs.len());
    let mut replies = Vec::with_capacity(jobs.len());
    for (j, (inputs, reply, span, permit)) in jobs.into_iter().enumerate() {
        outputs.push(vec![Vec::new(); inputs.len()]);
        for (i, input) in inputs.into_iter().enumerate() {
            match input {
                Input::Text(t) => texts.push((j, i, t)),
                Input::Query(t) => queries.push((j, i, t)),
                Input::Pixels(p) => images.push((j, i, p)),
            }
        }
        replies.push((reply, span, permit));
    }
    // One forward pass serves several requests: its span is a child of the first request's
    // queue span and follows from the others'.
    let batch = tracing::info_span!(
        parent: replies.first().and_then(|(_, s, _)| s.id()),
        "inference.batch",
        requests = replies.len(),
        texts = texts.len() + queries.len(),
        images = images.len(),
    );
    for (_, s, _) in replies.iter().skip(1) {
        batch.follows_from(s);
    }
    let _g = batch.entered();
    let result = (|| -> mirage_model::Result<()> {
        for (items, role) in [(&texts, TextRole::Document), (&queries, TextRole::Query)] {
            for chunk in items.chunks(batch_size) {
                let t = Instant::now();
                let refs: Vec<&str> = chunk.iter().map(|(_, _, s)| s.as_str()).collect();
                for ((j, i, _), v) in chunk.iter().zip(model.embed_texts_as(&refs, role)?) {
                    outputs[*j][*i] = v;
                }
                metrics.inference(t.elapsed().as_secs_f64(), chunk.len());
            }
        }
        for chunk in images.chunks_mut(batch_size) {
            let t = Instant::now();
            let mut pixels = Vec::with_capacity(chunk.iter().map(|c| c.2.len()).sum());
            for (_, _, p) in chunk.iter_mut() {
                pixels.append(p);
            }
            for ((j, i, _), v) in chunk
                .iter()
                .zip(model.embed_preprocessed(pixels, chunk.len())?)
            {
                outputs[*j][*i] = v;
            }
            metrics.inference(t.elapsed().as_secs_f64(), chunk.len());
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            for ((reply, _, permit), out) in replies.into_iter().zip(outputs) {
                // Slots are freed before the reply (see `Encoder::run`).
                drop(permit);
                let _ = reply.send(Ok(out));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "batched inference failed");
            for (reply, _, permit) in replies {
                drop(permit);
                let _ = reply.send(Err(ApiError::internal(format!("inference failed: {e}"))));
            }
        }
    }
}
