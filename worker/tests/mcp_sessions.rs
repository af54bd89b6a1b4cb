//! `openshell mcp`'s session tools driven by the SDK's MCP client against a real nats-server
//! and a Docker worker: open a python session, set `x = 41` in one call and read `x + 1` in
//! the next, close it, and a call after the close is a clear tool error.
//! Needs nats-server, dockerd and the sandbox image.

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};

use openshell_test_support::nats::NatsServer;
use openshell_test_support::{Openshell, dockerd};

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|content| content.as_text())
        .map(|text| text.text.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

fn call(name: &'static str, arguments: Value) -> CallToolRequestParams {
    let Value::Object(arguments) = arguments else {
        panic!("arguments are an object");
    };
    CallToolRequestParams::new(name).with_arguments(arguments)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_agent_keeps_a_python_session_across_calls() {
    if !dockerd::available() {
        return;
    }
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let url = nats.url();
    let image = dockerd::image();
    let _worker = OPENSHELL
        .worker(&[
            ("NATS_URL", url.as_str()),
            ("SANDBOX_BACKEND", "docker"),
            ("SANDBOX_DOCKER_IMAGE", image.as_str()),
        ])
        .await;
    let command = OPENSHELL.command(
        ["mcp", "--pool", "docker", "--tenant", "agent"],
        &[("NATS_URL", url.as_str())],
    );
    let transport = TokioChildProcess::new(command).expect("openshell mcp starts");
    let client = ().serve(transport).await.expect("initialize");
    let tools: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|tool| tool.name.to_string())
        .collect();
    for wanted in [
        "run_code",
        "open_session",
        "run_in_session",
        "close_session",
    ] {
        assert!(tools.iter().any(|tool| tool == wanted), "{tools:?}");
    }

    let opened = client
        .call_tool(call(
            "open_session",
            json!({"kernel": "python", "idle": "1m"}),
        ))
        .await
        .expect("open_session answers");
    assert_ne!(opened.is_error, Some(true), "{}", text(&opened));
    let answer: Value = serde_json::from_str(&text(&opened)).expect("JSON");
    let session = answer["session"].as_str().expect("a handle").to_string();

    let run = |code: &'static str| {
        call(
            "run_in_session",
            json!({"session": session, "language": "python", "code": code}),
        )
    };
    let set = client.call_tool(run("x = 41")).await.expect("answers");
    assert_ne!(set.is_error, Some(true), "{}", text(&set));
    let get = client
        .call_tool(run("print(x + 1)"))
        .await
        .expect("answers");
    assert!(
        text(&get).contains("\"stdout\": \"42\\n\""),
        "{}",
        text(&get)
    );

    let closed = client
        .call_tool(call("close_session", json!({ "session": session })))
        .await
        .expect("answers");
    assert_ne!(closed.is_error, Some(true), "{}", text(&closed));
    let after = client.call_tool(run("print(x)")).await.expect("answers");
    assert_eq!(after.is_error, Some(true), "{}", text(&after));
    assert!(
        text(&after).contains("not_found") || text(&after).contains("no session"),
        "{}",
        text(&after)
    );
    client.cancel().await.expect("the server stops");
}
