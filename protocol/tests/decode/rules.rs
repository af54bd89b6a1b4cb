//! Well-formed JSON that breaks a rule of `decode::validate`: each refusal names its field.

use openshell_protocol::RelativePath;
use openshell_protocol::decode::{FileConflict, check_file_paths};

use super::*;

#[test]
fn the_program_is_code_or_command() {
    refuses(code_with(r#""command": ["ls"]"#), Want::Invalid("command"));
    refuses(
        r#"{"id": "j", "language": "python", "command": ["ls"]}"#,
        Want::Invalid("command"),
    );
    refuses(
        r#"{"id": "j", "language": "python"}"#,
        Want::Invalid("code"),
    );
    refuses(
        r#"{"id": "j", "code": "print(1)"}"#,
        Want::Invalid("language"),
    );
    refuses(r#"{"id": "j"}"#, Want::Invalid("code"));
    refuses(r#"{"id": "j", "command": []}"#, Want::Invalid("command"));
    refuses(
        r#"{"id": "j", "command": ["", "x"]}"#,
        Want::Invalid("command"),
    );
    refuses(
        r#"{"id": "j", "language": "Python", "code": "1"}"#,
        Want::Invalid("language"),
    );
    refuses(
        r#"{"id": "j", "language": "", "code": "1"}"#,
        Want::Invalid("language"),
    );
    refuses(
        r#"{"id": "j", "language": "py thon", "code": "1"}"#,
        Want::Invalid("language"),
    );
    let long = format!(
        r#"{{"id": "j", "language": "{}", "code": "1"}}"#,
        "p".repeat(MAX_LANGUAGE_LEN + 1)
    );
    refuses(long, Want::Invalid("language"));
}

#[test]
fn nul_bytes_are_refused_in_argv_and_env() {
    refuses(
        r#"{"id": "j", "command": ["ls", "a\u0000b"]}"#,
        Want::Invalid("command[1]"),
    );
    refuses(
        command_with(r#""args": ["ok", "x\u0000"]"#),
        Want::Invalid("args[1]"),
    );
    refuses(code_with(r#""args": ["\u0000"]"#), Want::Invalid("args[0]"));
    refuses(
        command_with(r#""env": {"A": "x\u0000y"}"#),
        Want::Invalid("env.A"),
    );
}

#[test]
fn argv_env_and_file_counts_are_bounded() {
    let args = serde_json::to_string(&vec!["x"; MAX_ARGV - 1]).unwrap();
    let at_most = command_with(&format!(r#""args": {args}"#));
    assert!(
        decode_request(at_most.as_bytes(), MAX_REQUEST_BYTES).is_err(),
        "ls -l plus 1023 args"
    );
    let args = serde_json::to_string(&vec!["x"; MAX_ARGV - 2]).unwrap();
    let fits = command_with(&format!(r#""args": {args}"#));
    assert!(decode_request(fits.as_bytes(), MAX_REQUEST_BYTES).is_ok());
    refuses(at_most, Want::Invalid("args"));

    let env: serde_json::Map<String, serde_json::Value> = (0..=MAX_ENV_VARS)
        .map(|index| (format!("V{index}"), "x".into()))
        .collect();
    refuses(
        command_with(&format!(r#""env": {}"#, serde_json::Value::Object(env))),
        Want::Invalid("env"),
    );

    let files: Vec<_> = (0..=MAX_FILES)
        .map(|index| serde_json::json!({"path": format!("f{index}"), "content": ""}))
        .collect();
    let files = serde_json::to_string(&files).unwrap();
    refuses(
        command_with(&format!(r#""files": {files}"#)),
        Want::Invalid("files"),
    );
}

#[test]
fn env_names_must_be_shell_names() {
    for name in ["1A", "A-B", "", "A B", "A=B", "É"] {
        let json =
            serde_json::json!({"id": "j", "command": ["ls"], "env": {name: "x"}}).to_string();
        let field: &'static str = format!("env.{name}").leak();
        refuses(json, Want::Invalid(field));
    }
    let ok = command_with(r#""env": {"_A1": "", "PATH_2": "x"}"#);
    assert!(decode_request(ok.as_bytes(), MAX_REQUEST_BYTES).is_ok());
}

#[test]
fn file_paths_stay_inside_the_working_directory() {
    let file = |path: &str| {
        let files = serde_json::json!([{"path": path, "content": "x"}]);
        command_with(&format!(r#""files": {files}"#))
    };
    for path in [
        "/etc/passwd",
        "../escape",
        "a/../../b",
        "a/..",
        "..",
        ".",
        "./a",
        "a//b",
        "a/",
        "",
        "a\\b",
        "a\u{0}b",
    ] {
        refuses(file(path), Want::Invalid("files[0].path"));
    }
    refuses(
        file(&"a".repeat(MAX_PATH_BYTES + 1)),
        Want::Invalid("files[0].path"),
    );
    assert!(
        decode_request(
            file(&"a".repeat(MAX_PATH_BYTES)).as_bytes(),
            MAX_REQUEST_BYTES
        )
        .is_ok()
    );
    assert!(decode_request(file("lib/.hidden/..a").as_bytes(), MAX_REQUEST_BYTES).is_ok());

    let twice = r#""files": [{"path": "a/b", "content": "1"}, {"path": "c", "content": "2"}, {"path": "a/b", "content": "3"}]"#;
    let error = refuses(command_with(twice), Want::Invalid("files[2].path"));
    assert!(error.to_string().contains("twice"), "{error}");
}

/// A path is checked as it is read (it is a `RelativePath`), and still refused with its rule
/// and field however it is written: with escapes, in a later file, across lines.
#[test]
fn a_bad_path_is_refused_with_its_rule_however_it_is_written() {
    let cases = [
        (
            command_with(r#""files": [{"path": "a\"/../b", "content": ""}]"#),
            "files[0].path",
            "`a\"/../b` must not contain empty, `.` or `..` parts",
        ),
        (
            command_with(r#""files": [{"path": "x\\", "content": ""}]"#),
            "files[0].path",
            "`x\\` must be a relative path without NUL or backslash",
        ),
        (
            command_with(r#""files": [{"path": "a", "content": ""}, {"path": "", "mode": 1}]"#),
            "files[1].path",
            "must be 1 to 1024 bytes",
        ),
        (
            "{\n  \"id\": \"j\",\n  \"command\": [\"ls\"],\n  \"files\": [\n    {\"path\":\n      \"/etc/passwd\"}\n  ]\n}".to_string(),
            "files[0].path",
            "`/etc/passwd` must be a relative path without NUL or backslash",
        ),
    ];
    for (json, field, message) in cases {
        let error = refuses(json, Want::Invalid(field));
        assert_eq!(error.to_string(), format!("invalid `{field}`: {message}"));
    }
    // A second `path` key is a shape error, whatever its value.
    refuses(
        command_with(r#""files": [{"path": "a", "path": "../b", "content": ""}]"#),
        Want::Malformed("duplicate field `path`"),
    );
}

/// Files that cannot all be written into one directory are refused here, by the decoder, so
/// every backend answers them alike (`invalid_request`), whatever it would have done with them.
#[test]
fn a_file_cannot_also_be_a_directory_of_another() {
    let files = |paths: &[&str]| {
        let files: Vec<_> = paths
            .iter()
            .map(|path| serde_json::json!({"path": path, "content": "x"}))
            .collect();
        command_with(&format!(r#""files": {}"#, serde_json::Value::from(files)))
    };
    for (paths, field) in [
        (&["a", "a/b"][..], "files[1].path"),
        (&["a/b", "a"][..], "files[0].path"),
        (&["x", "a/b/c", "a/b"][..], "files[1].path"),
        (&["a", "a/b/c/d"][..], "files[1].path"),
    ] {
        let error = refuses(files(paths), Want::Invalid(field));
        assert_eq!(error.kind(), ErrorKind::InvalidRequest);
        assert!(
            error.to_string().contains("to be a directory"),
            "{paths:?}: {error}"
        );
    }
    for paths in [&["a", "ab/c", "a.d/e"][..], &["a/b", "a/c", "a/d/e"][..]] {
        let decoded = decode_request(files(paths).as_bytes(), MAX_REQUEST_BYTES);
        assert!(decoded.is_ok(), "{paths:?}: {decoded:?}");
    }
}

#[test]
fn backends_check_a_jobs_files_with_the_same_rule() {
    let paths = |texts: &[&str]| -> Vec<RelativePath> {
        texts
            .iter()
            .map(|text| text.parse().expect("a relative path"))
            .collect()
    };
    assert_eq!(check_file_paths(&paths(&["main.py", "data/x"])), Ok(()));
    assert_eq!(
        check_file_paths(&paths(&["main.py/x", "main.py"])),
        Err(FileConflict::NotADirectory {
            index: 0,
            path: "main.py/x".into(),
            directory: "main.py".into(),
        })
    );
    let twice = check_file_paths(&paths(&["a", "a"])).unwrap_err();
    assert_eq!(
        (twice.index(), twice.to_string()),
        (1, "`a` is given twice".to_string())
    );
}

#[test]
fn file_modes_are_permission_bits() {
    let mode = |mode: u32| {
        command_with(&format!(
            r#""files": [{{"path": "a", "content": "", "mode": {mode}}}]"#
        ))
    };
    refuses(mode(0o1000), Want::Invalid("files[0].mode"));
    refuses(mode(0o4755), Want::Invalid("files[0].mode"));
    assert!(decode_request(mode(0o777).as_bytes(), MAX_REQUEST_BYTES).is_ok());
    refuses(
        command_with(r#""files": [{"path": "a", "content": "", "mode": -1}]"#),
        Want::MalformedAt("files[0].mode"),
    );
}

#[test]
fn cpus_must_be_a_positive_number_of_cores() {
    for cpus in ["-1", "0", "0.0", "-0.0", "1025", "1e308"] {
        refuses(
            command_with(&format!(r#""limits": {{"cpus": {cpus}}}"#)),
            Want::Invalid("limits.cpus"),
        );
    }
    // JSON has no NaN or infinity: the nearest spellings fail to parse, at the field.
    for cpus in [r#""NaN""#, r#""inf""#, "1e400", "NaN", "Infinity"] {
        let json = command_with(&format!(r#""limits": {{"cpus": {cpus}}}"#));
        let error = decode_request(json.as_bytes(), MAX_REQUEST_BYTES).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidRequest, "{cpus}: {error}");
        if cpus.starts_with(['"', '1']) {
            refuses(json, Want::MalformedAt("limits.cpus"));
        }
    }
    let max = command_with(&format!(r#""limits": {{"cpus": {MAX_CPUS}}}"#));
    assert!(decode_request(max.as_bytes(), MAX_REQUEST_BYTES).is_ok());
}

#[test]
fn sizes_and_durations_must_parse_and_be_above_zero() {
    for memory in [
        r#""12q""#,
        r#""-1""#,
        "-1",
        r#""""#,
        r#""m""#,
        r#""1.5.5k""#,
        r#""99999999999t""#,
        "1.5",
    ] {
        refuses(
            command_with(&format!(r#""limits": {{"memory": {memory}}}"#)),
            Want::MalformedAt("limits.memory"),
        );
    }
    for timeout in [r#""soon""#, r#""""#, "-5", r#""30 parsecs""#] {
        refuses(
            command_with(&format!(r#""limits": {{"timeout": {timeout}}}"#)),
            Want::MalformedAt("limits.timeout"),
        );
    }
    let zeros = [
        ("timeout", "0"),
        ("timeout", r#""0s""#),
        ("timeout", r#""500us""#),
        ("cpu_time", "0"),
        ("memory", r#""0m""#),
        ("processes", "0"),
        ("open_files", "0"),
        ("output", "0"),
        ("disk", "0"),
    ];
    for (name, value) in zeros {
        let field: &'static str = format!("limits.{name}").leak();
        refuses(
            command_with(&format!(r#""limits": {{"{name}": {value}}}"#)),
            Want::Invalid(field),
        );
    }
    let ok = command_with(
        r#""limits": {"memory": "1.5k", "timeout": "1m30s", "disk": 1, "output": "1KiB"}"#,
    );
    let request = decode_request(ok.as_bytes(), MAX_REQUEST_BYTES).unwrap();
    assert_eq!(request.limits.memory, Some(ByteSize(1536)));
    assert_eq!(request.limits.timeout, Some(DurationMs(90_000)));
    assert_eq!(request.limits.output, Some(ByteSize::kib(1)));
}

#[test]
fn priority_is_bounded() {
    refuses(
        command_with(r#""priority": 1000"#),
        Want::Invalid("priority"),
    );
    refuses(
        command_with(r#""priority": -101"#),
        Want::Invalid("priority"),
    );
    for priority in [*PRIORITY_RANGE.start(), *PRIORITY_RANGE.end()] {
        let json = command_with(&format!(r#""priority": {priority}"#));
        assert!(decode_request(json.as_bytes(), MAX_REQUEST_BYTES).is_ok());
    }
}
