//! The `iter8` command: `run`, `demo`, `report` and `assess`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use iter8_analytics_client::CredentialFiles;
use iter8_api::AssessmentRequest;
use iter8_cli::progress::Progress;
use iter8_cli::report::{self, Format};
use iter8_cli::{Analytics, RunRecord, demo, local, spec};

/// iter8: performance tests, canaries, A/B and A/B/n experiments decided with Bayesian
/// statistics, here without a cluster.
#[derive(Debug, Parser)]
#[command(name = "iter8", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an experiment file locally: generate load on each version's url, assess every
    /// iteration, apply the split, stop on the decision.
    Run {
        /// The Experiment file (apiVersion iter8.tools/v3alpha1, kind Experiment).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Where to save the run as JSON (default: <experiment name>.run.json).
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// Also write the HTML report here.
        #[arg(long)]
        html: Option<PathBuf>,
        #[command(flatten)]
        analytics: AnalyticsArgs,
    },
    /// Start three sample versions and run an A/B/n experiment on them (under a minute).
    Demo {
        /// The directory for run.json and report.html.
        #[arg(long, default_value = "iter8-demo")]
        out: PathBuf,
        #[command(flatten)]
        analytics: AnalyticsArgs,
    },
    /// Render a saved run as text, JSON or a self-contained HTML page.
    Report {
        /// The saved run (from `iter8 run` or `iter8 demo`).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// The format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Write here instead of standard output.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
    /// Send one assessment request to the analytics and print the answer.
    Assess {
        /// The request (the body of POST /v1/assessments), as JSON.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[command(flatten)]
        analytics: AnalyticsArgs,
        /// Print the response as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Which analytics to ask, and the credentials a secured service requires.
#[derive(Debug, Args)]
struct AnalyticsArgs {
    /// An analytics service to ask instead of the engine in this process.
    #[arg(
        long = "analytics-url",
        visible_alias = "url",
        env = "ITER8_ANALYTICS_URL"
    )]
    url: Option<String>,
    /// A file holding the bearer token the service requires.
    #[arg(long, env = "ITER8_ANALYTICS_TOKEN_FILE", requires = "url")]
    analytics_token_file: Option<PathBuf>,
    /// A PEM CA bundle to trust for an `https://` service (instead of the system roots).
    #[arg(long, env = "ITER8_ANALYTICS_CA_FILE", requires = "url")]
    analytics_ca_file: Option<PathBuf>,
    /// A PEM client certificate to present to a service that requires one (mTLS).
    #[arg(
        long,
        env = "ITER8_ANALYTICS_CLIENT_CERT_FILE",
        requires = "analytics_client_key_file"
    )]
    analytics_client_cert_file: Option<PathBuf>,
    /// The PEM private key of the client certificate.
    #[arg(
        long,
        env = "ITER8_ANALYTICS_CLIENT_KEY_FILE",
        requires = "analytics_client_cert_file"
    )]
    analytics_client_key_file: Option<PathBuf>,
}

impl AnalyticsArgs {
    fn analytics(&self) -> Result<Analytics> {
        let credentials = CredentialFiles {
            token: self.analytics_token_file.clone(),
            ca: self.analytics_ca_file.clone(),
            client_cert: self.analytics_client_cert_file.clone(),
            client_key: self.analytics_client_key_file.clone(),
        };
        Ok(Analytics::with_credentials(
            self.url.as_deref(),
            &credentials,
        )?)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Run {
            file,
            output,
            html,
            analytics,
        } => run(&file, output, html, analytics.analytics()?).await,
        Command::Demo { out, analytics } => demo(&out, analytics.analytics()?).await,
        Command::Report {
            file,
            format,
            output,
        } => report(&file, format, output.as_deref()),
        Command::Assess {
            file,
            analytics,
            json,
        } => assess(&file, analytics.analytics()?, json).await,
    }
}

async fn run(
    file: &Path,
    output: Option<PathBuf>,
    html: Option<PathBuf>,
    analytics: Analytics,
) -> Result<()> {
    let experiment = spec::load_file(file)?;
    let mut progress = Progress::detect();
    let run = local::run(&experiment, &analytics, &mut progress).await?;
    let output = output.unwrap_or_else(|| PathBuf::from(format!("{}.run.json", run.name)));
    write(&output, &report::render(&run, Format::Json)?)?;
    if let Some(html) = html {
        write(&html, &report::html::render(&run))?;
        println!("report: {}", html.display());
    }
    println!();
    print!("{}", report::text::winner_line(&run));
    println!("run saved to {}", output.display());
    Ok(())
}

async fn demo(out: &Path, analytics: Analytics) -> Result<()> {
    let started = Instant::now();
    let mut progress = Progress::detect();
    let outcome = demo::run(out, &analytics, &mut progress).await?;
    println!();
    print!("{}", report::text::winner_line(&outcome.run));
    println!(
        "final split: {}",
        iter8_crd::weights_summary(
            &outcome.run.spec.versions,
            &outcome.run.outcome.final_weights
        )
    );
    println!("run:    {}", outcome.json.display());
    println!("report: {}", outcome.html.display());
    println!("demo finished in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn report(file: &Path, format: Format, output: Option<&Path>) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    let run: RunRecord = serde_path_to_error::deserialize(de)
        .with_context(|| format!("{} is not a saved iter8 run", file.display()))?;
    let rendered = report::render(&run, format)?;
    match output {
        Some(path) => write(path, &rendered),
        None => {
            print!("{rendered}");
            Ok(())
        }
    }
}

async fn assess(file: &Path, analytics: Analytics, json: bool) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    let request: AssessmentRequest = serde_path_to_error::deserialize(de)
        .with_context(|| format!("{} is not an assessment request", file.display()))?;
    let response = analytics.assess(&request).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&response)?);
    } else {
        print!("{}", report::text::assessment_table(&response));
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
