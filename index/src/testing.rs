//! Seeded vectors for tests and benchmarks.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Latent dimension of [`embedding_like_vectors`].
pub const LATENT_DIM: usize = 32;

/// `n` seeded unit vectors shaped like text embeddings: `LATENT_DIM` Gaussian factors mapped to
/// `dim` by one fixed random matrix, plus isotropic noise. Real embeddings concentrate on a
/// low-dimensional subspace; isotropic Gaussian vectors in 384 dimensions do not, and have almost
/// no neighbour structure for any graph index to find (hnswlib reaches Recall@10 0.43 at ef 128
/// on them). Base and query sets drawn with different `seed`s share the mixing matrix.
pub fn embedding_like_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let normal = Normal::new(0.0f32, 1.0).expect("unit normal");
    let mut mix_rng = ChaCha8Rng::seed_from_u64(7);
    let mix: Vec<f32> = (0..LATENT_DIM * dim)
        .map(|_| normal.sample(&mut mix_rng))
        .collect();
    let noise = 0.1 * (LATENT_DIM as f32).sqrt();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let z: Vec<f32> = (0..LATENT_DIM).map(|_| normal.sample(&mut rng)).collect();
            let mut v: Vec<f32> = (0..dim)
                .map(|j| {
                    let signal: f32 = (0..LATENT_DIM).map(|l| z[l] * mix[l * dim + j]).sum();
                    signal + noise * normal.sample(&mut rng)
                })
                .collect();
            let norm = v
                .iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
                .max(f32::MIN_POSITIVE);
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect()
}

/// [`mirage_model::testing::skip_or_fail`] for a Qdrant suite (`.ci/run` starts a server and
/// sets the variables, so CI never skips one).
fn skip_or_fail(suite: &str, what: &str) {
    mirage_model::testing::skip_or_fail(&format!("{suite}: {what}"));
}

/// The Qdrant server shared by the Qdrant suites: `MIRAGE_QDRANT_URL`, its gRPC URL. `None`
/// (after printing why) when unset, except under CI, where that is a failure.
pub fn qdrant_test_url(suite: &str) -> Option<String> {
    match std::env::var("MIRAGE_QDRANT_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            skip_or_fail(
                suite,
                "set MIRAGE_QDRANT_URL (gRPC URL of a Qdrant server, e.g. http://localhost:6334)",
            );
            None
        }
    }
}

/// The folder with a Qdrant server binary and its `start.sh`/`stop.sh`
/// (`MIRAGE_QDRANT_TOOLS`), for tests that start, kill and restart their own nodes. `None`
/// (after printing why) when unset, except under CI, where that is a failure.
pub fn qdrant_tools(suite: &str) -> Option<std::path::PathBuf> {
    match std::env::var_os("MIRAGE_QDRANT_TOOLS") {
        Some(dir) if std::path::Path::new(&dir).join("start.sh").is_file() => Some(dir.into()),
        _ => {
            skip_or_fail(
                suite,
                "set MIRAGE_QDRANT_TOOLS to a folder with the Qdrant binary's start.sh and stop.sh",
            );
            None
        }
    }
}

/// A free TCP port on the loopback interface (bound, read back, released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One Qdrant server process of a test, started with the tools' `start.sh` on free loopback
/// ports in its own folder, and stopped (by its pid file) when dropped.
#[derive(Debug)]
pub struct QdrantNode {
    tools: std::path::PathBuf,
    /// Storage, log (`qdrant.log`) and pid file.
    pub dir: std::path::PathBuf,
    /// REST port.
    pub http_port: u16,
    /// gRPC port (what the store talks to).
    pub grpc_port: u16,
    /// Cluster mode: this peer's p2p port.
    pub p2p_port: Option<u16>,
    bootstrap: Option<String>,
    api_key: Option<String>,
}

impl QdrantNode {
    /// Starts a node and waits until it is ready. With `p2p`, the node runs in cluster mode,
    /// joining through `bootstrap` (another peer's [`Self::p2p_uri`]) when given.
    pub fn start(
        tools: &std::path::Path,
        dir: &std::path::Path,
        p2p: bool,
        bootstrap: Option<&str>,
        api_key: Option<&str>,
    ) -> std::io::Result<Self> {
        let node = Self {
            tools: tools.to_path_buf(),
            dir: dir.to_path_buf(),
            http_port: free_port()?,
            grpc_port: free_port()?,
            p2p_port: if p2p { Some(free_port()?) } else { None },
            bootstrap: bootstrap.map(str::to_string),
            api_key: api_key.map(str::to_string),
        };
        node.launch()?;
        Ok(node)
    }

    /// Starts the process again on the same folder and ports (after [`Self::kill`]).
    pub fn launch(&self) -> std::io::Result<()> {
        let mut cmd = std::process::Command::new(self.tools.join("start.sh"));
        cmd.arg("--wait")
            .arg("--dir")
            .arg(&self.dir)
            .args(["--http-port", &self.http_port.to_string()])
            .args(["--grpc-port", &self.grpc_port.to_string()]);
        if let Some(p) = self.p2p_port {
            cmd.args(["--p2p-port", &p.to_string()]);
        }
        if let Some(b) = &self.bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        if let Some(k) = &self.api_key {
            cmd.env("QDRANT__SERVICE__API_KEY", k);
        }
        let out = cmd.output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "start.sh failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    /// gRPC URL, as `MIRAGE_QDRANT_URL` / `qdrant:URL` take it.
    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// REST base URL.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// This peer's URI for other peers' `--bootstrap`.
    pub fn p2p_uri(&self) -> Option<String> {
        self.p2p_port.map(|p| format!("http://127.0.0.1:{p}"))
    }

    /// SIGKILL, as a crash or a lost machine would end it; returns once the process is gone.
    pub fn kill(&self) -> std::io::Result<()> {
        let pid = fs_err::read_to_string(self.dir.join("qdrant.pid"))?;
        let pid = pid.trim();
        std::process::Command::new("kill")
            .args(["-9", pid])
            .status()?;
        let proc_dir = std::path::Path::new("/proc").join(pid);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // Gone, or a zombie of a parent that has not reaped it yet (start.sh's nohup child).
        while proc_dir.exists()
            && !fs_err::read_to_string(proc_dir.join("stat"))
                .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
        {
            if std::time::Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "qdrant {pid} survived SIGKILL"
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for QdrantNode {
    fn drop(&mut self) {
        let _ = std::process::Command::new(self.tools.join("stop.sh"))
            .arg("--dir")
            .arg(&self.dir)
            .output();
    }
}
