//! `openshell mcp` driven by a real MCP client (the official Rust SDK's, over the child
//! process's stdio), against a real nats-server and a worker on the local backend:
//! initialize, list tools, run `print(6*7)` and get 42, run code that writes a PNG and get an
//! image back and its audit trail, and a timeout and an invalid call each come back as a clear tool error while
//! the server keeps serving.

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};

use openshell_test_support::Openshell;
use openshell_test_support::nats::NatsServer;

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

/// The text of a tool result's first content block.
fn text(result: &CallToolResult) -> String {
    result
        .content
        .first()
        .and_then(|content| content.as_text())
        .map(|text| text.text.clone())
        .unwrap_or_default()
}

fn call(name: &'static str, arguments: Value) -> CallToolRequestParams {
    let Value::Object(arguments) = arguments else {
        panic!("arguments are an object");
    };
    CallToolRequestParams::new(name).with_arguments(arguments)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_client_runs_code_and_gets_clear_tool_errors() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let url = nats.url();
    let _worker = OPENSHELL.local_worker(&nats, &[]).await;
    let command = OPENSHELL.command(
        ["mcp", "--pool", "none", "--tenant", "agent"],
        &[("NATS_URL", url.as_str())],
    );
    let transport = TokioChildProcess::new(command).expect("openshell mcp starts");
    let client = ().serve(transport).await.expect("initialize");

    let info = client.peer_info().expect("the server introduced itself");
    let server = info
        .server_info
        .as_ref()
        .expect("the server's name and version");
    assert_eq!(server.name, "openshell");
    let tools: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|tool| tool.name.to_string())
        .collect();
    for wanted in ["run_code", "list_pools", "get_result", "get_audit_trail"] {
        assert!(tools.iter().any(|tool| tool == wanted), "{tools:?}");
    }

    let ran = client
        .call_tool(call(
            "run_code",
            json!({"language": "python", "code": "print(6*7)"}),
        ))
        .await
        .expect("run_code answers");
    assert_ne!(ran.is_error, Some(true), "{ran:?}");
    let outcome: Value = serde_json::from_str(&text(&ran)).expect("a JSON outcome");
    assert_eq!(outcome["status"], "completed", "{outcome}");
    assert_eq!(outcome["exit_code"], 0);
    assert_eq!(outcome["stdout"], "42\n");

    let slow = client
        .call_tool(call(
            "run_code",
            json!({"language": "bash", "code": "sleep 30", "timeout": "1s"}),
        ))
        .await
        .expect("a timeout is an answer");
    assert_eq!(slow.is_error, Some(true), "{slow:?}");
    assert!(text(&slow).contains("\"timeout\""), "{}", text(&slow));

    let invalid = client
        .call_tool(call(
            "run_code",
            json!({"language": "python", "code": "1", "memory": "lots"}),
        ))
        .await
        .expect("an invalid call is an answer");
    assert_eq!(invalid.is_error, Some(true), "{invalid:?}");
    assert!(
        text(&invalid).contains("memory `lots`"),
        "{}",
        text(&invalid)
    );

    let unknown = client
        .call_tool(call("run_code", json!({"language": "cobol", "code": "x"})))
        .await
        .expect("a rejected job is an answer");
    assert_eq!(unknown.is_error, Some(true), "{unknown:?}");
    assert!(text(&unknown).contains("rejected"), "{}", text(&unknown));

    // A plot: a real 1x1 PNG written by the code comes back as image content, a text file as
    // a text resource.
    let png = r#"import struct, zlib
def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
header = struct.pack('>IIBBBBB', 1, 1, 8, 2, 0, 0, 0)
pixels = zlib.compress(b'\x00\xff\x00\x00')
png = b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', pixels) + chunk(b'IEND', b'')
open('plot.png', 'wb').write(png)
open('summary.txt', 'w').write('one red pixel')
"#;
    let plotted = client
        .call_tool(call(
            "run_code",
            json!({"language": "python", "code": png, "outputs": ["*.png", "*.txt"]}),
        ))
        .await
        .expect("run_code answers");
    assert_ne!(plotted.is_error, Some(true), "{plotted:?}");
    let image = plotted
        .content
        .iter()
        .find_map(|content| content.as_image())
        .unwrap_or_else(|| panic!("no image content: {plotted:?}"));
    assert_eq!(image.mime_type, "image/png");
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&image.data)
        .expect("base64 image data");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{bytes:?}");
    let listed = serde_json::to_string(&plotted.content).expect("content as JSON");
    assert!(listed.contains("one red pixel"), "{listed}");
    assert!(text(&plotted).contains("plot.png"), "{}", text(&plotted));

    // Its audit trail: received (with the code as sent), started, finished (with the PNG's
    // hash).
    let plotted_outcome: Value = serde_json::from_str(&text(&plotted)).expect("a JSON outcome");
    let id = plotted_outcome["id"]
        .as_str()
        .expect("the job's id")
        .to_string();
    let trail = client
        .call_tool(call("get_audit_trail", json!({ "id": id })))
        .await
        .expect("get_audit_trail answers");
    assert_ne!(trail.is_error, Some(true), "{trail:?}");
    let events: Vec<Value> = serde_json::from_str(&text(&trail)).expect("JSON events");
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds, ["received", "started", "finished"], "{events:?}");
    assert_eq!(events[0]["code"], png);
    assert_eq!(events[2]["outputs"][0]["path"], "plot.png", "{events:?}");
    let unknown = client
        .call_tool(call("get_audit_trail", json!({ "id": "never-ran" })))
        .await
        .expect("an unknown job is an answer");
    assert_eq!(unknown.is_error, Some(true));

    let pools = client
        .call_tool(call("list_pools", json!({})))
        .await
        .expect("list_pools answers");
    assert!(text(&pools).contains("\"none\""), "{}", text(&pools));

    // Still serving after the errors.
    let again = client
        .call_tool(call(
            "run_code",
            json!({"language": "sh", "code": "echo still"}),
        ))
        .await
        .expect("run_code answers again");
    assert!(text(&again).contains("still"), "{}", text(&again));
    client.cancel().await.expect("the session closes");
}
