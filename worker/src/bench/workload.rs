//! What a bench run executes: code in a language or an explicit argv, with limits.

use openshell_protocol::{ExecRequest, Limits};

use openshell_backend::language as languages;

/// The job every operation of a run executes.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// Code in a language of the pool's table.
    Code {
        /// Language name.
        language: String,
        /// Source.
        code: String,
    },
    /// An explicit argv.
    Command(Vec<String>),
}

impl Workload {
    /// The OpenShell request for operation `id`.
    pub fn request(&self, id: String, limits: &Limits) -> ExecRequest {
        let mut request = match self {
            Workload::Code { language, code } => ExecRequest::code(id, language, code),
            Workload::Command(argv) => ExecRequest::command(id, argv.clone()),
        };
        request.limits = limits.clone();
        request
    }

    /// The argv that runs this workload with the code read from standard input, and that
    /// input: how raw baselines (docker run, ssh) run the same thing without a file upload.
    pub fn stdin_form(&self) -> (Vec<String>, Vec<u8>) {
        match self {
            Workload::Code { language, code } => {
                let argv: &[&str] = match language.as_str() {
                    "python" => &["python3", "-"],
                    "node" | "javascript" => &["node", "-"],
                    "bash" => &["bash", "-s"],
                    _ => &["sh", "-s"],
                };
                (
                    argv.iter().map(|part| part.to_string()).collect(),
                    code.as_bytes().to_vec(),
                )
            }
            Workload::Command(argv) => (argv.clone(), Vec::new()),
        }
    }

    /// The argv and code file that run this workload locally, as the worker's language table does.
    pub fn file_form(&self) -> (Vec<String>, Option<(String, Vec<u8>)>) {
        match self {
            Workload::Code { language, code } => match languages::builtin().get(language) {
                Some(spec) => {
                    let (argv, file) = spec.resolve(code, &[]);
                    (argv, Some((file.path.into_string(), file.content)))
                }
                None => {
                    let (argv, stdin) = self.stdin_form();
                    (argv, Some(("stdin".to_string(), stdin)))
                }
            },
            Workload::Command(argv) => (argv.clone(), None),
        }
    }
}
