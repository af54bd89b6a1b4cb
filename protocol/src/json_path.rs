//! Which field a serde_json error is about, so that "invalid type: integer, expected a string"
//! becomes "at `env.PATH`: invalid type: ...". serde_json reports only a line and a column; the
//! path is rebuilt by scanning the JSON text up to there, without recursion.

/// Deepest nesting followed; serde_json itself stops at 128.
const MAX_DEPTH: usize = 256;

/// One open container while scanning JSON text.
enum Frame {
    /// An object, with the key whose value is being read (or was just read).
    Object { key: Option<String>, in_value: bool },
    /// An array, with the index of the element being read.
    Array { index: usize },
}

/// The JSON path (`files[2].path`) of the value serde_json stopped at, so that a type error
/// names its field. serde_json reports where it stopped as a line and a column (in bytes, through
/// the offending token); the path is rebuilt by scanning the text up to there. None at the top
/// level, or when the document is not an object.
pub(crate) fn error_path(bytes: &[u8], error: &serde_json::Error) -> Option<String> {
    let prefix = bytes.get(..error_offset(bytes, error)?)?;
    if prefix.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let mut frames = scan_frames(prefix)?;
    // A container opened by the offending token itself is the bad value, not a place in it.
    if matches!(prefix.trim_ascii_end().last(), Some(b'{' | b'[')) {
        frames.pop();
    }
    let path = render_path(&frames);
    (!path.is_empty()).then_some(path)
}

/// The JSON string that ends where serde_json stopped, decoded: the value a `Deserialize`
/// refused after reading it whole. None when no string ends there.
pub(crate) fn string_before_error(bytes: &[u8], error: &serde_json::Error) -> Option<String> {
    let text = bytes.get(..error_offset(bytes, error)?)?;
    let body = text.strip_suffix(b"\"")?;
    // The opening quote is the last one not escaped: a JSON string holds no bare quote.
    let escaped = |at: usize| {
        let backslashes = body[..at].iter().rev().take_while(|&&byte| byte == b'\\');
        backslashes.count() % 2 == 1
    };
    let start = (0..body.len()).rfind(|&at| body[at] == b'"' && !escaped(at))?;
    serde_json::from_slice(&text[start..]).ok()
}

/// How many bytes of `bytes` serde_json had read when it stopped with `error`: its line and
/// column (in bytes, through the offending token) as an offset.
fn error_offset(bytes: &[u8], error: &serde_json::Error) -> Option<usize> {
    if error.line() == 0 {
        return None;
    }
    let line_start: usize = (bytes.split(|&byte| byte == b'\n'))
        .take(error.line() - 1)
        .map(|line| line.len() + 1)
        .sum();
    Some((line_start + error.column()).min(bytes.len()))
}

/// `limits.memory`, `files[2].path`: the frames as a path.
fn render_path(frames: &[Frame]) -> String {
    let mut path = String::new();
    for frame in frames {
        match frame {
            Frame::Object { key: Some(key), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Object { key: None, .. } => {}
            Frame::Array { index } => path.push_str(&format!("[{index}]")),
        }
    }
    path
}

/// The containers open at the end of `text`, a prefix of a JSON document.
fn scan_frames(text: &[u8]) -> Option<Vec<Frame>> {
    let mut frames: Vec<Frame> = Vec::new();
    let mut position = 0;
    while let Some(&byte) = text.get(position) {
        position += 1;
        match byte {
            b'{' => frames.push(Frame::Object {
                key: None,
                in_value: false,
            }),
            b'[' => frames.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                frames.pop();
            }
            b':' => {
                if let Some(Frame::Object { in_value, .. }) = frames.last_mut() {
                    *in_value = true;
                }
            }
            b',' => match frames.last_mut() {
                Some(Frame::Object { key, in_value }) => {
                    *key = None;
                    *in_value = false;
                }
                Some(Frame::Array { index }) => *index += 1,
                None => {}
            },
            b'"' => {
                let start = position;
                let mut end = text.len();
                while let Some(&byte) = text.get(position) {
                    if byte == b'"' {
                        end = position;
                        position += 1;
                        break;
                    }
                    position += if byte == b'\\' { 2 } else { 1 };
                }
                if let Some(Frame::Object {
                    key,
                    in_value: false,
                }) = frames.last_mut()
                {
                    let raw = text.get(start..end).unwrap_or_default();
                    *key = Some(String::from_utf8_lossy(raw).into_owned());
                }
            }
            _ => {}
        }
        if frames.len() > MAX_DEPTH {
            return None;
        }
    }
    Some(frames)
}
