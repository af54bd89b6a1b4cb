//! `openshell exec`: submit one job, print its output as it was, exit with its exit code.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use openshell_protocol::client::{DEFAULT_WAIT, REPLY_MARGIN};
use openshell_protocol::{
    ByteSize, Client, DurationMs, ExecRequest, ExecResult, FileSpec, Limits, OutputChunk,
    OutputPattern, OutputStream, Payload, RelativePath, Subjects, Verdict,
};

use crate::client::NatsArgs;
use crate::durable::client::DurableClient;

/// Exit codes for jobs that did not complete; a completed job exits with its own code.
pub mod exit {
    /// Wall timeout (as coreutils `timeout`).
    pub const TIMEOUT: u8 = 124;
    /// Out of memory.
    pub const OUT_OF_MEMORY: u8 = 137;
    /// Output limit.
    pub const OUTPUT_LIMIT: u8 = 141;
    /// Egress byte limit.
    pub const NETWORK_LIMIT: u8 = 142;
    /// Cancelled.
    pub const CANCELLED: u8 = 130;
    /// Rejected by the worker (invalid request, policy).
    pub const REJECTED: u8 = 65;
    /// Deadline passed before start.
    pub const EXPIRED: u8 = 75;
    /// Backend failure, worker lost.
    pub const BACKEND_ERROR: u8 = 70;
    /// The job could not be submitted or no result came back (no worker, NATS down).
    pub const CLIENT_ERROR: u8 = 69;
}

/// Run code or a command on a pool and print its output.
/// The job flags `exec` and `submit` share.
#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
    /// Pool to run on (env OPENSHELL_POOL; default: SANDBOX_BACKEND, else docker).
    #[arg(long, env = "OPENSHELL_POOL")]
    pub(crate) pool: Option<String>,
    /// Tenant to run as (env OPENSHELL_TENANT).
    #[arg(long, env = "OPENSHELL_TENANT", default_value = "default")]
    pub(crate) tenant: String,
    /// Language of the code (python, node, bash, sh, ...).
    #[arg(long = "lang", short = 'l')]
    pub(crate) language: Option<String>,
    /// The code to run.
    #[arg(short = 'c', long = "code", conflicts_with = "command")]
    pub(crate) code: Option<String>,
    /// A file with the code to run (with --lang).
    #[arg(conflicts_with_all = ["code", "command"])]
    pub(crate) script: Option<PathBuf>,
    /// Run this argv instead of code: everything after --command.
    #[arg(long, num_args = 1.., allow_hyphen_values = true, conflicts_with = "language")]
    pub(crate) command: Option<Vec<String>>,
    /// Arguments for the program (after --).
    #[arg(last = true)]
    pub(crate) args: Vec<String>,
    /// Job id (default: generated).
    #[arg(long)]
    pub(crate) id: Option<String>,
    /// Read standard input for the job from this file (`-` for this process's stdin).
    #[arg(long)]
    pub(crate) stdin: Option<PathBuf>,
    /// Environment variable for the job, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub(crate) env: Vec<String>,
    /// File for the job's working directory, PATH=LOCAL_FILE (repeatable).
    #[arg(long = "file", value_name = "PATH=LOCAL_FILE")]
    pub(crate) files: Vec<String>,
    /// Wall timeout, e.g. 30s, 500ms.
    #[arg(long)]
    pub(crate) timeout: Option<DurationMs>,
    /// CPU time limit, e.g. 10s.
    #[arg(long)]
    pub(crate) cpu_time: Option<DurationMs>,
    /// Memory limit, e.g. 512m, 1g.
    #[arg(long)]
    pub(crate) memory: Option<ByteSize>,
    /// CPU share in cores, e.g. 0.5.
    #[arg(long)]
    pub(crate) cpus: Option<f64>,
    /// Process limit.
    #[arg(long)]
    pub(crate) processes: Option<u64>,
    /// Open file limit.
    #[arg(long)]
    pub(crate) open_files: Option<u64>,
    /// Output limit (stdout + stderr), e.g. 64k.
    #[arg(long)]
    pub(crate) output: Option<ByteSize>,
    /// Disk limit, e.g. 100m.
    #[arg(long)]
    pub(crate) disk: Option<ByteSize>,
    /// Ask for network access (the pool must allow it).
    #[arg(long)]
    pub(crate) network: bool,
    /// Return files the job leaves that match this path or glob, relative to its working
    /// directory, e.g. 'out/*.png' (repeatable).
    #[arg(long = "output-file", value_name = "PATTERN")]
    pub(crate) output_files: Vec<String>,
    /// Print the whole result as JSON instead of the output.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Run one job and print its output, live on a terminal.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  openshell exec --lang python -c 'print(6*7)'\n  openshell exec --lang bash script.sh -- arg1 arg2\n  echo hi | openshell exec --stdin - --command cat\n  openshell exec --pool docker --tenant acme --timeout 5s --memory 256m --lang node -c 'console.log(1)'\n  openshell exec --lang python -c 'open(\"out.csv\", \"w\").write(\"x\")' --output-file '*.csv' --output-dir results\n  openshell exec --durable --live --lang bash -c 'for i in 1 2 3; do echo $i; sleep 1; done'\n\nExit status: the job's own exit code when it completed (128+N when killed by signal N);\n124 timeout, 137 out of memory, 141 output limit, 130 cancelled, 65 rejected,\n75 expired, 70 backend error, 69 not submitted or no result."
)]
pub struct ExecCommand {
    #[command(flatten)]
    pub(crate) job: ExecArgs,
    /// Print the output live, as the job writes it (default on a terminal, without --json).
    #[arg(long, conflicts_with = "no_live")]
    pub(crate) live: bool,
    /// Print the output only once the job ended.
    #[arg(long)]
    pub(crate) no_live: bool,
    /// Where files returned for --output-file are written, under their paths in the job.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub(crate) output_dir: PathBuf,
    /// Queue the job in durable mode (JetStream) and wait for its stored result, instead of
    /// a core request: it survives a worker restart and waits for a free worker.
    #[arg(long)]
    pub(crate) durable: bool,
    /// Run in this session (WORKER.SESSION, as `openshell session open` printed it): its
    /// files, and its kernel's variables, persist between jobs.
    #[arg(long, conflicts_with = "durable")]
    pub(crate) session: Option<String>,
}

impl ExecArgs {
    /// The request these flags describe (shared by `exec` and `submit`).
    pub(crate) fn request(&self) -> anyhow::Result<ExecRequest> {
        let id = self.id.clone().unwrap_or_else(generated_id);
        let mut request = match (&self.language, &self.code, &self.script, &self.command) {
            (Some(language), Some(code), None, None) => ExecRequest::code(id, language, code),
            (Some(language), None, Some(script), None) => {
                let code = std::fs::read_to_string(script)
                    .with_context(|| format!("reading {}", script.display()))?;
                ExecRequest::code(id, language, code)
            }
            (None, None, None, Some(argv)) => ExecRequest::command(id, argv.clone()),
            (None, _, _, None) => {
                bail!("give --lang with -c CODE or a script file, or --command ARGV...")
            }
            _ => bail!("give either --lang with -c CODE or a script file, or --command ARGV..."),
        };
        request.args = self.args.clone();
        request.stdin = match &self.stdin {
            Some(path) if path.as_os_str() == "-" => {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                    .context("reading stdin")?;
                Some(Payload(bytes))
            }
            Some(path) => Some(Payload(
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            )),
            None => None,
        };
        request.env = self
            .env
            .iter()
            .map(|pair| split_pair(pair, "--env"))
            .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
        for pair in &self.files {
            let (path, local) = split_pair(pair, "--file")?;
            let path = RelativePath::parse(&path).with_context(|| {
                format!("--file {pair}: PATH is not a file path in the job's working directory")
            })?;
            let content = std::fs::read(&local).with_context(|| format!("reading {local}"))?;
            request.files.push(FileSpec {
                path,
                content: Payload(content),
                mode: None,
            });
        }
        request.limits = Limits {
            timeout: self.timeout,
            cpu_time: self.cpu_time,
            memory: self.memory,
            cpus: self.cpus,
            processes: self.processes,
            open_files: self.open_files,
            output: self.output,
            disk: self.disk,
        };
        request.network = self.network.into();
        request.outputs = self
            .output_files
            .iter()
            .map(|pattern| {
                OutputPattern::parse(pattern)
                    .map_err(|error| anyhow::anyhow!("--output-file {pattern}: {error}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(request)
    }
}

fn split_pair(pair: &str, flag: &str) -> anyhow::Result<(String, String)> {
    match pair.split_once('=') {
        Some((key, value)) => Ok((key.to_string(), value.to_string())),
        None => bail!("{flag} takes KEY=VALUE, got `{pair}`"),
    }
}

fn generated_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    format!("cli-{}-{nanos:x}", std::process::id())
}

/// The process exit code for `result`.
pub fn exit_code(result: &ExecResult) -> u8 {
    match result.status {
        Verdict::Completed => match (result.exit_code, result.signal) {
            (Some(code), _) => code.clamp(0, 255) as u8,
            (None, Some(signal)) => (128 + signal).clamp(0, 255) as u8,
            (None, None) => 0,
        },
        Verdict::Timeout => exit::TIMEOUT,
        Verdict::OutOfMemory => exit::OUT_OF_MEMORY,
        Verdict::OutputLimit => exit::OUTPUT_LIMIT,
        Verdict::NetworkLimit => exit::NETWORK_LIMIT,
        Verdict::Cancelled => exit::CANCELLED,
        Verdict::Rejected => exit::REJECTED,
        Verdict::Expired => exit::EXPIRED,
        Verdict::BackendError | Verdict::WorkerLost => exit::BACKEND_ERROR,
    }
}

/// Submits the job and prints its output.
pub async fn run(command: ExecCommand) -> anyhow::Result<ExitCode> {
    let ExecCommand {
        job: args,
        live,
        no_live,
        output_dir,
        durable,
        session,
    } = command;
    let request = match args.request() {
        Ok(request) => request,
        Err(error) => {
            eprintln!("openshell exec: {error:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let pool = args
        .pool
        .clone()
        .unwrap_or_else(crate::client::default_pool);
    let nats = match args.nats.connect_as(&args.tenant).await {
        Ok(nats) => nats,
        Err(error) => {
            eprintln!("openshell exec: {error:#}");
            return Ok(ExitCode::from(exit::CLIENT_ERROR));
        }
    };
    let client = Client::new(nats, Subjects::new(args.nats.subject_prefix.clone()));
    let live =
        !args.json && !no_live && (live || std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let mut request = request;
    request.stream = live;
    // Subscribed before the request goes out, so no chunk is missed.
    let printer = match live {
        true => Some(LivePrinter::start(&client, &args.tenant, &request.id).await?),
        false => None,
    };
    let answer = if let Some(handle) = &session {
        super::session::exec_in(&client, &args.tenant, handle, &request).await
    } else if durable {
        durable_exec(&client, &args, &pool, &request).await
    } else {
        client
            .exec(&pool, &args.tenant, &request)
            .await
            .map_err(|error| error.to_string())
    };
    let result = match answer {
        Ok(result) => result,
        Err(error) => {
            eprintln!("openshell exec: {error}");
            return Ok(ExitCode::from(exit::CLIENT_ERROR));
        }
    };
    let code = match printer {
        Some(printer) => {
            printer.finish(&result).await?;
            print_ending(&result);
            ExitCode::from(exit_code(&result))
        }
        None => print_result(&result, args.json)?,
    };
    if let Err(error) = super::outputs::save(&client, &args.tenant, &result, &output_dir).await {
        eprintln!("openshell exec: {error:#}");
        return Ok(ExitCode::from(exit::CLIENT_ERROR));
    }
    Ok(code)
}

/// Queues `request` on `pool`'s durable work queue and waits for its stored result (as long
/// as its timeout plus a margin after it starts, or the client's default wait).
async fn durable_exec(
    client: &Client,
    args: &ExecArgs,
    pool: &str,
    request: &ExecRequest,
) -> Result<ExecResult, String> {
    let durable = DurableClient::new(client.nats().clone(), &args.nats.subject_prefix);
    durable
        .submit(pool, &args.tenant, request, None)
        .await
        .map_err(|error| error.to_string())?;
    let wait = request
        .limits
        .timeout
        .map_or(DEFAULT_WAIT, |timeout| timeout.as_duration() + REPLY_MARGIN);
    match durable.result(&args.tenant, &request.id, wait).await {
        Ok(Some(result)) => Ok(result),
        Ok(None) => Err(format!(
            "no stored result for job {} within {wait:?}: it is still queued or running; \
             `openshell result {} --wait` picks it up later",
            request.id, request.id
        )),
        Err(error) => Err(error.to_string()),
    }
}

/// Prints a job's live output as its chunks arrive.
struct LivePrinter {
    task: tokio::task::JoinHandle<anyhow::Result<(usize, usize)>>,
    done: tokio_util::sync::CancellationToken,
}

impl LivePrinter {
    /// Subscribes to the output of `tenant`'s job `id` and prints what comes.
    async fn start(client: &Client, tenant: &str, id: &str) -> anyhow::Result<Self> {
        let subject = client.subjects().output(tenant, id);
        let mut chunks = client
            .nats()
            .subscribe(subject.clone())
            .await
            .with_context(|| format!("subscribing to {subject} for the live output"))?;
        // The subscription must reach the server before the request does.
        client
            .nats()
            .flush()
            .await
            .context("flushing the subscription")?;
        let done = tokio_util::sync::CancellationToken::new();
        let stop = done.clone();
        let task = tokio::spawn(async move {
            let (mut stdout, mut stderr) = (0, 0);
            loop {
                let message = tokio::select! {
                    message = futures::StreamExt::next(&mut chunks) => message,
                    // The result came: what was published before it is already queued here.
                    () = stop.cancelled() => tokio::time::timeout(
                        std::time::Duration::from_millis(100),
                        futures::StreamExt::next(&mut chunks),
                    )
                    .await
                    .unwrap_or_default(),
                };
                let Some(message) = message else {
                    return Ok((stdout, stderr));
                };
                let Ok(chunk) = serde_json::from_slice::<OutputChunk>(&message.payload) else {
                    continue;
                };
                match chunk.stream {
                    OutputStream::Stdout => {
                        std::io::stdout().write_all(chunk.data.as_bytes())?;
                        std::io::stdout().flush()?;
                        stdout += chunk.data.len();
                    }
                    OutputStream::Stderr => {
                        std::io::stderr().write_all(chunk.data.as_bytes())?;
                        stderr += chunk.data.len();
                    }
                }
            }
        });
        Ok(Self { task, done })
    }

    /// Prints the chunks still on their way, then whatever of `result`'s output no chunk
    /// brought (a worker that could not publish them all).
    async fn finish(self, result: &ExecResult) -> anyhow::Result<()> {
        self.done.cancel();
        let (stdout, stderr) = self.task.await.context("the live printer stopped")??;
        if let Some(rest) = result.stdout.as_bytes().get(stdout..) {
            std::io::stdout().write_all(rest)?;
            std::io::stdout().flush()?;
        }
        if let Some(rest) = result.stderr.as_bytes().get(stderr..) {
            std::io::stderr().write_all(rest)?;
        }
        Ok(())
    }
}

/// Prints `result` as `exec` does (its output, or JSON) and gives the matching exit code.
pub(crate) fn print_result(result: &ExecResult, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(result)?);
    } else {
        std::io::stdout().write_all(result.stdout.as_bytes())?;
        std::io::stdout().flush()?;
        std::io::stderr().write_all(result.stderr.as_bytes())?;
        print_ending(result);
    }
    Ok(ExitCode::from(exit_code(result)))
}

/// Says on stderr why a job did not complete, or that its output was cut.
fn print_ending(result: &ExecResult) {
    if let Some(error) = &result.error {
        eprintln!(
            "openshell: job {} {}: {}",
            result.id, result.status, error.message
        );
    } else if result.stdout_truncated || result.stderr_truncated {
        eprintln!("openshell: job {} output was truncated", result.id);
    }
}
