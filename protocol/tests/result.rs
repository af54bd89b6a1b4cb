//! Results on the wire: an oversized result is cut to fit the server's payload limit.

use openshell_protocol::{ExecResult, Payload, Verdict};

#[test]
fn oversized_results_are_cut_to_fit() {
    let mut result = ExecResult::new("job", Verdict::Completed);
    result.stdout = Payload(vec![0xff; 900_000]);
    result.stderr = Payload(b"err".to_vec());
    let encoded = result.encode_within(500_000);
    assert!(encoded.len() <= 500_000);
    assert!(result.stdout_truncated && !result.stderr_truncated);
    let decoded: ExecResult = serde_json::from_slice(&encoded).expect("a result");
    assert_eq!(decoded.stderr, Payload(b"err".to_vec()));
}
