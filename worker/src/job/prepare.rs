//! Turning an admitted request into what a backend runs.

use openshell_protocol::ExecRequest;
use openshell_scheduler::{Admitted, NetworkGrant};

use openshell_backend::language::LanguageSpec;
use openshell_backend::{FilesRequest, Job, JobFile};

/// The backend's view of `request`: code becomes a file plus the language's command.
/// `language` is the request's language spec (admission checked the pool has it).
pub fn build_job(
    request: &ExecRequest,
    admitted: &Admitted,
    tenant: &str,
    language: Option<&LanguageSpec>,
    outputs: Option<FilesRequest>,
) -> Job {
    let mut files: Vec<JobFile> = request
        .files
        .iter()
        .map(|file| JobFile {
            path: file.path.clone(),
            content: file.content.0.clone(),
            mode: file.mode.unwrap_or(0o644),
        })
        .collect();
    let argv = match (language, &request.code, &request.command) {
        (Some(spec), Some(code), _) => {
            let (argv, code_file) = spec.resolve(code, &request.args);
            files.retain(|file| file.path != code_file.path);
            files.push(code_file);
            argv
        }
        (_, _, Some(command)) => command.iter().chain(&request.args).cloned().collect(),
        _ => Vec::new(),
    };
    Job {
        id: request.id.clone(),
        tenant: tenant.to_string(),
        language: request.language.clone(),
        argv,
        stdin: request.stdin.clone().unwrap_or_default(),
        env: request.env.clone(),
        files,
        limits: admitted.limits.clone(),
        network: admitted.network == NetworkGrant::Pool,
        egress: None,
        outputs,
    }
}

#[cfg(test)]
mod tests {
    use openshell_protocol::{EnforcementReport, FileSpec, Limits, Payload};

    use super::*;
    use openshell_backend::language::builtin;

    fn admitted() -> Admitted {
        Admitted {
            limits: Limits::default(),
            enforcement: EnforcementReport::new(),
            network: NetworkGrant::None,
        }
    }

    #[test]
    fn code_becomes_a_file_and_a_command() {
        let mut request = ExecRequest::code("j", "python", "print(1)");
        request.args = vec!["x".into()];
        request.files = vec![FileSpec {
            path: "main.py".parse().unwrap(),
            content: Payload::from("shadowed"),
            mode: None,
        }];
        let languages = builtin();
        let job = build_job(&request, &admitted(), "acme", languages.get("python"), None);
        assert_eq!(job.argv, ["python3", "main.py", "x"]);
        assert_eq!(job.files.len(), 1);
        assert_eq!(job.files[0].content, b"print(1)");
    }

    #[test]
    fn commands_take_their_args() {
        let mut request = ExecRequest::command("j", vec!["echo".into(), "a".into()]);
        request.args = vec!["b".into()];
        let job = build_job(&request, &admitted(), "acme", None, None);
        assert_eq!(job.argv, ["echo", "a", "b"]);
    }
}
