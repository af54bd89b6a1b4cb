//! Writing the files a job returned (`exec --output-file`) under a local directory.

use std::path::Path;

use anyhow::Context;
use openshell_protocol::{Client, ExecResult, FilesStatus};

/// Writes every file `result` returned under `dir` at its path in the job (creating
/// directories), each checked against its size and SHA-256, and says on stderr which
/// matches did not come back. Nothing to do for a result without outputs.
pub async fn save(
    client: &Client,
    tenant: &str,
    result: &ExecResult,
    dir: &Path,
) -> anyhow::Result<()> {
    let Some(outputs) = &result.outputs else {
        return Ok(());
    };
    for file in &outputs.files {
        let content = client.fetch_file(tenant, &result.id, file).await?;
        let target = dir.join(file.path.as_str());
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&target, content)
            .with_context(|| format!("writing {}", target.display()))?;
        eprintln!(
            "openshell: wrote {} ({} bytes)",
            target.display(),
            file.size
        );
    }
    if outputs.status != FilesStatus::Complete || outputs.skipped_count > 0 {
        let skipped: Vec<String> = outputs
            .skipped
            .iter()
            .map(|skipped| format!("{} ({})", skipped.path, skipped.reason.as_str()))
            .collect();
        eprintln!(
            "openshell: job {} files {}: {} not returned{}{}",
            result.id,
            outputs.status.as_str(),
            outputs.skipped_count,
            if skipped.is_empty() { "" } else { ": " },
            skipped.join(", ")
        );
    }
    Ok(())
}
