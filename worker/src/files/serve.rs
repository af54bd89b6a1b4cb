//! The fetch endpoint for stored files: a request on `<prefix>.files.<tenant>.<job_id>` with a
//! [`FileFetch`] gets up to one message's worth of the file from `offset`, in the body, with
//! its size, SHA-256 and offset in headers; or an error header and an [`ErrorInfo`]. Every
//! worker serves it in one queue group. A reader left at the end of one reply is kept a
//! while for the next offset, so a client reading a file front to back costs one pass.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::object_store::Object;
use bytes::Bytes;
use futures::StreamExt;
use openshell_protocol::outputs::{
    FILE_ERROR_HEADER, FILE_OFFSET_HEADER, FILE_SHA256_HEADER, FILE_SIZE_HEADER,
};
use openshell_protocol::{ErrorInfo, ErrorKind, FileFetch, Subjects};
use tokio::io::AsyncReadExt;
use tokio::sync::{Mutex, Semaphore};

use super::{FileStore, object_name};
use crate::intake::IntakeError;

/// Queue group of the fetch endpoint.
const QUEUE: &str = "openshell-files";
/// Fetches served at once by one worker.
const CONCURRENT: usize = 16;
/// Readers kept for a next offset, and for how long.
const READERS_KEPT: usize = 32;
const READER_IDLE: Duration = Duration::from_secs(60);
/// Room left in a reply for its headers.
const HEADER_ROOM: usize = 4 * 1024;
/// Largest body of one reply, whatever the server allows.
const MAX_CHUNK: usize = 1024 * 1024;

/// An open object, positioned at `offset`.
struct Reader {
    object: Object,
    offset: u64,
    size: u64,
    sha256: String,
    used: Instant,
}

/// Serves fetches of `store`'s files until the subscription ends.
pub async fn serve(
    nats: async_nats::Client,
    subjects: Subjects,
    store: Arc<FileStore>,
) -> Result<tokio::task::JoinHandle<()>, IntakeError> {
    let subject = subjects.files_all();
    let mut subscription = nats
        .queue_subscribe(subject.clone(), QUEUE.to_string())
        .await
        .map_err(|error| IntakeError {
            subject,
            message: error.to_string(),
        })?;
    let readers = Arc::new(Mutex::new(HashMap::<(String, u64), Reader>::new()));
    let limit = Arc::new(Semaphore::new(CONCURRENT));
    Ok(tokio::spawn(async move {
        while let Some(message) = subscription.next().await {
            let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                break;
            };
            let (nats, subjects, store, readers) = (
                nats.clone(),
                subjects.clone(),
                Arc::clone(&store),
                Arc::clone(&readers),
            );
            tokio::spawn(async move {
                answer(&nats, &subjects, &store, &readers, message).await;
                drop(permit);
            });
        }
    }))
}

async fn answer(
    nats: &async_nats::Client,
    subjects: &Subjects,
    store: &FileStore,
    readers: &Mutex<HashMap<(String, u64), Reader>>,
    message: async_nats::Message,
) {
    let Some(reply) = message.reply.as_deref() else {
        return;
    };
    let Some((tenant, job_id)) = subjects.parse_files(&message.subject) else {
        return;
    };
    if let Err(refused) = subjects.check_reply(tenant, None, reply) {
        tracing::info!(%tenant, %job_id, "file fetch not answered: {refused}");
        return;
    }
    let (headers, body) = match fetch(store, readers, tenant, job_id, &message.payload, nats).await
    {
        Ok(reply) => reply,
        Err(error) => {
            let mut headers = HeaderMap::new();
            headers.insert(FILE_ERROR_HEADER, error.kind.as_str());
            let body = serde_json::to_vec(&error).unwrap_or_default();
            (headers, Bytes::from(body))
        }
    };
    if let Err(error) = nats
        .publish_with_headers(reply.to_string(), headers, body)
        .await
    {
        tracing::warn!(%tenant, %job_id, %error, "file fetch reply lost");
    }
}

async fn fetch(
    store: &FileStore,
    readers: &Mutex<HashMap<(String, u64), Reader>>,
    tenant: &str,
    job_id: &str,
    payload: &[u8],
    nats: &async_nats::Client,
) -> Result<(HeaderMap, Bytes), ErrorInfo> {
    let fetch: FileFetch = serde_json::from_slice(payload).map_err(|error| {
        ErrorInfo::new(
            ErrorKind::InvalidRequest,
            format!(r#"a file fetch is {{"path": "...", "offset": N}}: {error}"#),
        )
    })?;
    let name = object_name(tenant, job_id, fetch.path.as_str());
    let kept = {
        let mut readers = readers.lock().await;
        readers.retain(|_, reader| reader.used.elapsed() < READER_IDLE);
        readers.remove(&(name.clone(), fetch.offset))
    };
    let mut reader = match kept {
        Some(reader) => reader,
        None => open(store, &name, &fetch, job_id).await?,
    };
    if fetch.offset > reader.size {
        return Err(ErrorInfo::new(
            ErrorKind::InvalidRequest,
            format!(
                "offset {} is past the end of `{}` ({} bytes)",
                fetch.offset, fetch.path, reader.size
            ),
        ));
    }
    let room = crate::reply::max_payload(nats)
        .saturating_sub(HEADER_ROOM)
        .min(MAX_CHUNK);
    let want = (reader.size - reader.offset).min(room as u64) as usize;
    let mut body = vec![0; want];
    reader
        .object
        .read_exact(&mut body)
        .await
        .map_err(|error| read_failed(&name, &error))?;
    let mut headers = HeaderMap::new();
    headers.insert(FILE_SIZE_HEADER, reader.size.to_string().as_str());
    headers.insert(FILE_SHA256_HEADER, reader.sha256.as_str());
    headers.insert(FILE_OFFSET_HEADER, fetch.offset.to_string().as_str());
    reader.offset += want as u64;
    reader.used = Instant::now();
    if reader.offset < reader.size {
        let mut readers = readers.lock().await;
        if readers.len() < READERS_KEPT {
            readers.insert((name, reader.offset), reader);
        }
    }
    Ok((headers, Bytes::from(body)))
}

/// The object `name`, read up to `fetch.offset`.
async fn open(
    store: &FileStore,
    name: &str,
    fetch: &FileFetch,
    job_id: &str,
) -> Result<Reader, ErrorInfo> {
    let not_found = || {
        ErrorInfo::new(
            ErrorKind::NotFound,
            format!(
                "job `{job_id}` has no stored file `{}`: check the path in its result's outputs; stored \
                 files are kept for the worker's files.ttl",
                fetch.path
            ),
        )
    };
    let bucket = store
        .bucket()
        .await
        .map_err(|message| ErrorInfo::new(ErrorKind::ConnectionFailed, message))?;
    let mut object = bucket.get(name).await.map_err(|_| not_found())?;
    let info = object.info();
    let size = info.size as u64;
    let sha256 = info.metadata.get("sha256").cloned().unwrap_or_default();
    let mut skip = fetch.offset.min(size);
    let mut sink = vec![0; 64 * 1024];
    while skip > 0 {
        let n = skip.min(sink.len() as u64) as usize;
        object
            .read_exact(&mut sink[..n])
            .await
            .map_err(|error| read_failed(name, &error))?;
        skip -= n as u64;
    }
    Ok(Reader {
        object,
        offset: fetch.offset,
        size,
        sha256,
        used: Instant::now(),
    })
}

fn read_failed(name: &str, error: &std::io::Error) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::ConnectionFailed,
        format!("reading stored file {name} failed: {error}; retry the fetch"),
    )
}
