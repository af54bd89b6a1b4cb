//! How a `language` + `code` request becomes a program: the code is written to a file in the
//! working directory and the language's command runs it.

use std::collections::BTreeMap;

use openshell_protocol::RelativePath;
use serde::{Deserialize, Serialize};

use crate::job::JobFile;

/// How to run one language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanguageSpec {
    /// File the code is written to, e.g. `main.py` (checked when the configuration is read).
    pub file: RelativePath,
    /// The argv that runs it; the request's `args` are appended.
    pub command: Vec<String>,
    /// Container image for this language (Docker backend); the pool's image when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl LanguageSpec {
    fn new(file: &str, command: &[&str]) -> Self {
        Self {
            file: RelativePath::parse(file).expect("a built-in language's file is a plain name"),
            command: command.iter().map(|part| part.to_string()).collect(),
            image: None,
        }
    }

    /// The argv and code file for `code` with extra `args`.
    pub fn resolve(&self, code: &str, args: &[String]) -> (Vec<String>, JobFile) {
        let mut argv = self.command.clone();
        argv.extend(args.iter().cloned());
        let file = JobFile {
            path: self.file.clone(),
            content: code.as_bytes().to_vec(),
            mode: 0o644,
        };
        (argv, file)
    }
}

/// The languages every pool knows unless its configuration replaces them.
pub fn builtin() -> BTreeMap<String, LanguageSpec> {
    let node = LanguageSpec::new("main.js", &["node", "main.js"]);
    BTreeMap::from([
        (
            "python".to_string(),
            LanguageSpec::new("main.py", &["python3", "main.py"]),
        ),
        ("node".to_string(), node.clone()),
        ("javascript".to_string(), node),
        (
            "bash".to_string(),
            LanguageSpec::new("main.sh", &["bash", "main.sh"]),
        ),
        (
            "sh".to_string(),
            LanguageSpec::new("main.sh", &["sh", "main.sh"]),
        ),
    ])
}
