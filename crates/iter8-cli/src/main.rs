//! The `iter8` command: local mode (`run`, `demo`, `report -f`, `assess`) and, on a cluster,
//! `get`, `describe`, `report`, `watch`, `pause`, `resume`, `terminate` and `split`. Installed
//! (or linked) as `kubectl-iter8`, it is also the kubectl plugin `kubectl iter8`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use iter8_analytics_client::CredentialFiles;
use iter8_api::AssessmentRequest;
use iter8_cli::cluster::{self, Output, Target};
use iter8_cli::progress::Progress;
use iter8_cli::report::{self, Format};
use iter8_cli::{Analytics, RunRecord, demo, local, spec};
use iter8_crd::OverrideAction;

/// iter8: performance tests, canaries, A/B and A/B/n experiments decided with Bayesian
/// statistics, locally without a cluster or run by the controller on one.
#[derive(Debug, Parser)]
#[command(name = "iter8", version, about)]
struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

/// The name under which kubectl finds the binary as a plugin (`kubectl iter8 ...`).
const PLUGIN_NAME: &str = "kubectl-iter8";

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
    /// Render a saved run (-f FILE) or a cluster Experiment (NAME): text, JSON or a
    /// self-contained HTML page.
    Report {
        /// The Experiment on the cluster (its report is HTML unless --format says otherwise).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        name: Option<String>,
        /// The saved run (from `iter8 run` or `iter8 demo`).
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// The format (default: text for a saved run, html for an Experiment; text for an
        /// Experiment is `iter8 describe`'s).
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Write here instead of standard output.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
    /// List Experiments on the cluster, or show one: phase, iteration, winner, weights, age.
    Get {
        /// Only this Experiment.
        name: Option<String>,
        /// List the Experiments of every namespace.
        #[arg(short = 'A', long, conflicts_with = "name")]
        all_namespaces: bool,
        /// How to print.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Show why an Experiment is where it is: estimates and credible intervals, the
    /// criteria's probabilities, the decision and its reason, conditions, splits, Events.
    Describe {
        /// The Experiment.
        name: String,
        /// How to print (json and yaml give the object and its Events).
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Follow an Experiment: a line per iteration until it ends. Exit code: 0 completed
    /// (promoted, passed or inconclusive), 2 rolled back, 3 failed, 4 aborted, 1 error.
    Watch {
        /// The Experiment.
        name: String,
    },
    /// Stop iterating and hold the current split (spec.manualOverride: pause).
    Pause {
        /// The Experiment.
        name: String,
    },
    /// Iterate again after a pause or a split (spec.manualOverride: resume).
    Resume {
        /// The Experiment.
        name: String,
    },
    /// End the Experiment now, with the given split or else by its termination policy.
    Terminate {
        /// The Experiment.
        name: String,
        /// The final split: one weight per version, in order, summing to 100.
        weights: Vec<u32>,
    },
    /// Set the split by hand and hold it (a pause with a split), e.g. `split NAME 70 30`.
    Split {
        /// The Experiment.
        name: String,
        /// One weight per version, in order, summing to 100.
        #[arg(required = true)]
        weights: Vec<u32>,
    },
    /// Open the approval gate the Experiment waits at (spec.approval, with who you are as
    /// the API server says); the approval is for that gate only.
    Approve {
        /// The Experiment.
        name: String,
    },
    /// Print a shell completion script: `source <(iter8 completion bash)`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
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
    /// The token and TLS material a secured service requires.
    #[command(flatten)]
    credentials: CredentialFiles,
}

impl AnalyticsArgs {
    fn analytics(&self) -> Result<Analytics> {
        if self.url.is_none() && self.credentials.any() {
            bail!(
                "analytics credentials were given without --analytics-url: they are for a remote service"
            );
        }
        Ok(Analytics::with_credentials(
            self.url.as_deref(),
            &self.credentials,
        )?)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = parse();
    let target = cli.target;
    match cli.command {
        Command::Run {
            file,
            output,
            html,
            analytics,
        } => run(&file, output, html, analytics.analytics()?).await,
        Command::Demo { out, analytics } => demo(&out, analytics.analytics()?).await,
        Command::Report {
            name: None,
            file: Some(file),
            format,
            output,
        } => report(&file, format.unwrap_or(Format::Text), output.as_deref()),
        Command::Report {
            name,
            format,
            output,
            ..
        } => {
            let name = name.context("name an Experiment, or a saved run with -f")?;
            cluster_report(&target, &name, format, output.as_deref()).await
        }
        Command::Assess {
            file,
            analytics,
            json,
        } => assess(&file, analytics.analytics()?, json).await,
        Command::Get {
            name,
            all_namespaces,
            output,
        } => {
            let cluster = target.connect().await?;
            emit(&cluster::get::run(&cluster, name.as_deref(), all_namespaces, output).await?)
        }
        Command::Describe { name, output } => {
            let cluster = target.connect().await?;
            emit(&cluster::describe::run(&cluster, &name, output).await?)
        }
        Command::Watch { name } => {
            let cluster = target.connect().await?;
            let outcome = cluster::watch::run(&cluster, &name, &mut std::io::stdout()).await?;
            std::process::exit(outcome.exit_code())
        }
        Command::Pause { name } => control(&target, &name, OverrideAction::Pause, None).await,
        Command::Resume { name } => control(&target, &name, OverrideAction::Resume, None).await,
        Command::Terminate { name, weights } => {
            let weights = (!weights.is_empty()).then_some(weights);
            control(&target, &name, OverrideAction::Terminate, weights).await
        }
        Command::Split { name, weights } => {
            control(&target, &name, OverrideAction::Pause, Some(weights)).await
        }
        Command::Approve { name } => {
            let cluster = target.connect().await?;
            emit(&cluster::approve::run(&cluster, &name).await?)
        }
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "iter8", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// The command line, read as `kubectl iter8` when the binary is invoked as `kubectl-iter8`
/// (kubectl runs plugins by that name), so help and errors show what the user typed.
fn parse() -> Cli {
    let invoked_as = std::env::args_os()
        .next()
        .and_then(|arg0| {
            Path::new(&arg0)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let mut command = Cli::command();
    if invoked_as == PLUGIN_NAME {
        command = command.name(PLUGIN_NAME).bin_name("kubectl iter8");
    }
    command
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches))
        .unwrap_or_else(|e| usage_exit(e))
}

/// Prints clap's help, version or usage error and exits: 0 for help and version, 1 (like
/// kubectl) for a usage error, since clap's 2 is `iter8 watch`'s "rolled back".
fn usage_exit(error: clap::Error) -> ! {
    let _ = error.print();
    std::process::exit(if error.use_stderr() { 1 } else { 0 })
}

async fn control(
    target: &Target,
    name: &str,
    action: OverrideAction,
    weights: Option<Vec<u32>>,
) -> Result<()> {
    let cluster = target.connect().await?;
    emit(&cluster::control::run(&cluster, name, action, weights).await?)
}

async fn cluster_report(
    target: &Target,
    name: &str,
    format: Option<Format>,
    output: Option<&Path>,
) -> Result<()> {
    let cluster = target.connect().await?;
    let rendered = match format.unwrap_or(Format::Html) {
        Format::Html => report::html::page(&cluster::report::fetch(&cluster, name).await?),
        Format::Text => cluster::describe::run(&cluster, name, Output::Table).await?,
        Format::Json => cluster::describe::run(&cluster, name, Output::Json).await?,
    };
    match output {
        Some(path) => {
            write(path, &rendered)?;
            println!("report: {}", path.display());
            Ok(())
        }
        None => emit(&rendered),
    }
}

/// Prints `text`; a closed pipe (`iter8 describe x | head`) is not an error.
fn emit(text: &str) -> Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to standard output"),
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
