//! `mirage-train`: MIRAGE pre-training on libtorch, checkpoint export and the loss probe.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use mirage_trainer::config::TrainConfig;
use mirage_trainer::export::{export, ExportOptions};
use mirage_trainer::probe::probe;
use mirage_trainer::train::Trainer;

#[derive(Parser)]
#[command(
    name = "mirage-train",
    version,
    about = "Train MIRAGE (or the CLIP baseline) dual encoders and export serving bundles",
    long_about = "Train MIRAGE (or the CLIP baseline) dual encoders on image-caption pairs and \
                  export serving bundles.\n\nCheckpoints hold the weights, BatchNorm buffers, the \
                  four log-scales, the AdamW moments, the memory queue with its pointer and \
                  captions, the position in the epoch and the resolved config, so --resume \
                  continues a killed run where its last checkpoint left off. Data order, noise \
                  and augmentation are derived from (seed, epoch, sample) and libtorch's generator \
                  is re-seeded every step, so no random-generator state needs saving."
)]
struct Cli {
    /// TrueType font for the PNG plots (default: DejaVu Sans or Liberation Sans from the system).
    #[arg(long, env = "MIRAGE_PLOT_FONT", global = true)]
    plot_font: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train from a TOML config (see configs/), writing checkpoints, metrics.jsonl and plots to --out.
    Train {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override a key: `--set loss.lambda_ot=0.1` (repeatable; values in TOML syntax).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Run directory.
        #[arg(long)]
        out: PathBuf,
        /// Continue from a checkpoint directory or a run directory's latest checkpoint. Alone, it
        /// reuses the checkpoint's configuration; with --config/--set those apply instead (the
        /// data must be the same).
        #[arg(long)]
        resume: Option<PathBuf>,
        /// No progress bar or per-epoch lines.
        #[arg(long)]
        quiet: bool,
        /// Export the final checkpoint to this bundle directory when training ends.
        #[arg(long)]
        export: Option<PathBuf>,
    },
    /// Write the bundle of a checkpoint (or of a run directory's latest checkpoint).
    Export {
        /// Checkpoint or run directory.
        checkpoint: PathBuf,
        /// Bundle directory to write.
        #[arg(long)]
        out: PathBuf,
        /// Model id for the bundle (default: the config's model.model_id).
        #[arg(long)]
        model_id: Option<String>,
        /// Leave out the text bank (no matching score / audit from this bundle).
        #[arg(long)]
        no_bank: bool,
        /// Leave out the ONNX graphs (text.onnx, vision.onnx); ONNX Runtime then builds them
        /// from the weights at each load.
        #[arg(long)]
        no_onnx: bool,
    },
    /// Print the loss terms for given features: image_features, text_features `[B,D]`, queue
    /// `[K,D]`, log_scales `[4]` (pair, robust, ot, queue) in one safetensors file.
    Loss {
        /// safetensors file with the four tensors.
        #[arg(long)]
        inputs: PathBuf,
        /// Config whose loss, nn and temps sections apply (defaults: the published run).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides as for `train`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Print the resolved configuration (file + overrides + defaults) as TOML.
    Config {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides as for `train`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
}

fn run(cli: Cli) -> Result<()> {
    // Configs may name paths under `~` (the assets cache); the library reads no environment.
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    match cli.command {
        Command::Train {
            config,
            overrides,
            out,
            resume,
            quiet,
            export: export_to,
        } => {
            // `--resume` alone continues with the configuration the checkpoint was written with.
            let config = match (&resume, config, overrides.is_empty()) {
                (Some(r), None, true) => Some(
                    mirage_trainer::checkpoint::resolve(r)?
                        .join(mirage_trainer::checkpoint::CONFIG),
                ),
                (_, c, _) => c,
            };
            let cfg = TrainConfig::load(config.as_deref(), &overrides, home.as_deref())?;
            cfg.validate_for_training()?;
            let mut trainer = Trainer::new(cfg, &out, resume.as_deref(), quiet)?;
            let ck = trainer.run()?;
            println!(
                "{}",
                serde_json::json!({
                    "checkpoint": ck,
                    "step": trainer.state().step,
                    "validation": trainer.state().last_validation,
                })
            );
            if let Some(dir) = export_to {
                let b = export(&ck, &dir, &ExportOptions::default())?;
                eprintln!("exported {} to {}", b.config().model_id, dir.display());
            }
        }
        Command::Export {
            checkpoint,
            out,
            model_id,
            no_bank,
            no_onnx,
        } => {
            let b = export(
                &checkpoint,
                &out,
                &ExportOptions {
                    model_id,
                    no_bank,
                    no_onnx,
                },
            )?;
            println!(
                "{}",
                serde_json::json!({
                    "bundle": out,
                    "model_id": b.config().model_id,
                    "sha256": b.sha256(),
                })
            );
        }
        Command::Loss {
            inputs,
            config,
            overrides,
        } => {
            let cfg = TrainConfig::load(config.as_deref(), &overrides, home.as_deref())?;
            println!("{}", probe(&inputs, &cfg)?);
        }
        Command::Config { config, overrides } => {
            let cfg = TrainConfig::load(config.as_deref(), &overrides, home.as_deref())?;
            print!("{}", toml::to_string(&cfg)?);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(font) = &cli.plot_font {
        mirage_eval::plot::prefer_font(font);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
