//! Files back through real processes: a nats-server with JetStream, an `openshell worker` on the
//! local backend, the typed client and the CLI. Small files come inline, large ones from the
//! `OPENSHELL_FILES` object store through the fetch endpoint, each byte exact, each hash in the
//! `finished` audit event. Tenant confinement is in `tenant_isolation.rs`.

use std::time::Duration;

use futures::StreamExt;
use openshell_protocol::request::sha256_hex;
use openshell_protocol::{
    AuditEvent, AuditEventType, Client, ErrorKind, ExecRequest, FilesStatus, LimitName,
    OutputPattern, ReturnedFile, SkipReason, Verdict,
};
use openshell_test_support::nats::NatsServer;
use openshell_test_support::{Openshell, WorkerProcess};

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

/// Bytes of the large file: over the inline budget (256 KiB) and over one NATS message
/// (1 MiB), so it is stored and fetched in several parts.
const BIG: usize = 1_500_000;

async fn stack() -> Option<(NatsServer, WorkerProcess, Client)> {
    let nats = NatsServer::start().await?;
    let url = nats.url();
    let worker = OPENSHELL
        .worker(&[("NATS_URL", url.as_str()), ("SANDBOX_BACKEND", "none")])
        .await;
    let client = Client::connect(&url).await.expect("client connects");
    Some((nats, worker, client))
}

fn big_content() -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8).collect()
}

/// Python that writes a small text file, the large binary file, a symlink and a file no
/// pattern names.
const WRITER: &str = "import os\n\
os.makedirs('out', exist_ok=True)\n\
open('out/small.txt', 'w').write('hello')\n\
open('out/big.bin', 'wb').write(bytes(i % 251 for i in range(1500000)))\n\
os.symlink('/etc/passwd', 'out/passwd.txt')\n\
open('notes.txt', 'w').write('not asked for')\n\
print('written')\n";

fn patterns(patterns: &[&str]) -> Vec<OutputPattern> {
    patterns
        .iter()
        .map(|pattern| OutputPattern::parse(pattern).expect("pattern"))
        .collect()
}

fn file<'a>(files: &'a [ReturnedFile], path: &str) -> &'a ReturnedFile {
    files
        .iter()
        .find(|file| file.path.as_str() == path)
        .unwrap_or_else(|| panic!("no {path} in {files:?}"))
}

/// Small files inline, the large one stored and fetched exactly, the symlink skipped, the
/// `finished` event carrying every returned file's hash, and the report saying how.
#[tokio::test(flavor = "multi_thread")]
async fn returned_files_come_inline_or_from_the_store_byte_for_byte() {
    let Some((_nats, _worker, client)) = stack().await else {
        return;
    };
    let mut audit = client
        .nats()
        .subscribe("openshell.audit.acme.none.finished")
        .await
        .expect("subscribe");
    client.nats().flush().await.expect("flush");
    let mut request = ExecRequest::code("files-1", "python", WRITER);
    request.outputs = patterns(&["out/*"]);
    let result = client.exec("none", "acme", &request).await.expect("result");
    assert_eq!(result.status, Verdict::Completed, "{result:?}");
    assert!(
        result.enforcement.contains_key(&LimitName::Files),
        "{result:?}"
    );
    let outputs = result.outputs.as_ref().expect("outputs in the result");
    assert_eq!(outputs.status, FilesStatus::Complete, "{outputs:?}");
    assert_eq!(outputs.files.len(), 2, "{outputs:?}");
    assert_eq!(outputs.skipped.len(), 1);
    assert_eq!(outputs.skipped[0].reason, SkipReason::Symlink);

    let small = file(&outputs.files, "out/small.txt");
    assert_eq!(
        small.content.as_ref().map(|c| c.0.as_slice()),
        Some(&b"hello"[..])
    );
    assert_eq!(small.sha256, sha256_hex(b"hello"));
    assert!(small.object.is_none());

    let big = file(&outputs.files, "out/big.bin");
    let expected = big_content();
    assert!(big.content.is_none(), "the large file is not inline");
    assert_eq!(big.object.as_deref(), Some("acme/files-1/out/big.bin"));
    assert_eq!(big.size, BIG as u64);
    assert_eq!(big.sha256, sha256_hex(&expected));
    let fetched = client
        .fetch_file("acme", "files-1", big)
        .await
        .expect("fetch the stored file");
    assert!(fetched == expected, "the stored file's bytes differ");
    let fetched = client
        .fetch_file("acme", "files-1", small)
        .await
        .expect("an inline file");
    assert_eq!(fetched, b"hello");

    let message = tokio::time::timeout(Duration::from_secs(10), audit.next())
        .await
        .expect("a finished event")
        .expect("a finished event");
    let event: AuditEvent = serde_json::from_slice(&message.payload).expect("an audit event");
    assert_eq!(event.event, AuditEventType::Finished);
    let mut audited: Vec<_> = event
        .outputs
        .iter()
        .map(|file| (file.path.to_string(), file.size, file.sha256.clone()))
        .collect();
    audited.sort();
    assert_eq!(
        audited,
        [
            ("out/big.bin".to_string(), BIG as u64, sha256_hex(&expected)),
            ("out/small.txt".to_string(), 5, sha256_hex(b"hello")),
        ]
    );
}

/// A fetch for a file that was never stored, or past its end, gets a typed error; a fetch
/// that is not JSON too; the worker keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn bad_fetches_get_typed_errors() {
    let Some((_nats, _worker, client)) = stack().await else {
        return;
    };
    let missing = ReturnedFile {
        path: "nope.bin".parse().expect("path"),
        size: 10,
        sha256: sha256_hex(b"0123456789"),
        content: None,
        object: Some("acme/never/nope.bin".into()),
    };
    let error = client
        .fetch_file("acme", "never", &missing)
        .await
        .expect_err("no such file");
    assert!(error.to_string().contains("not_found"), "{error}");
    let reply = client
        .nats()
        .request("openshell.files.acme.never", "{not json".into())
        .await
        .expect("a reply");
    let headers = reply.headers.expect("error headers");
    assert_eq!(
        headers
            .get(openshell_protocol::outputs::FILE_ERROR_HEADER)
            .map(|value| value.as_str()),
        Some(ErrorKind::InvalidRequest.as_str())
    );
    let result = client
        .exec(
            "none",
            "acme",
            &ExecRequest::code("after", "python", "print(1)"),
        )
        .await
        .expect("the worker still serves");
    assert_eq!(result.status, Verdict::Completed);
}

/// `openshell exec --output-file PATTERN --output-dir DIR` writes the returned files under
/// DIR at their paths, the stored one included, and says which matches did not come back.
#[tokio::test(flavor = "multi_thread")]
async fn cli_exec_writes_returned_files_to_the_output_dir() {
    let Some((nats, _worker, _client)) = stack().await else {
        return;
    };
    let url = nats.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_str().expect("utf-8 path");
    let output = OPENSHELL
        .cli(
            [
                "exec",
                "--no-live",
                "--lang",
                "python",
                "-c",
                WRITER,
                "--output-file",
                "out/*",
                "--output-dir",
                out,
            ],
            &[("NATS_URL", url.as_str()), ("SANDBOX_BACKEND", "none")],
        )
        .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "written\n");
    assert_eq!(
        std::fs::read(dir.path().join("out/small.txt")).expect("small.txt"),
        b"hello"
    );
    assert!(
        std::fs::read(dir.path().join("out/big.bin")).expect("big.bin") == big_content(),
        "big.bin differs"
    );
    assert!(!dir.path().join("out/passwd.txt").exists());
    assert!(!dir.path().join("notes.txt").exists());
    assert!(stderr.contains("out/passwd.txt (symlink)"), "{stderr}");
}
