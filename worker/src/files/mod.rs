//! The files jobs return (a request's `outputs`): [`FileStore`] turns what a backend read out
//! of the sandbox into the result's [`ReturnedFiles`], small files inline and larger ones in
//! the `OPENSHELL_FILES` JetStream object store, and [`serve`] answers tenants' fetches of
//! stored files on `<prefix>.files.<tenant>.<job_id>`.
//!
//! Objects are named `<tenant>/<job_id>/<path>`, and the fetch endpoint builds the name from
//! the subject it was asked on, which the NATS permissions of `accounts.conf` confine to the
//! tenant: a tenant reads only its own files, and never the object store itself.

mod serve;

use async_nats::jetstream::{self, object_store};
use openshell_backend::{CollectedFiles, FilesRequest};
use openshell_protocol::outputs::MAX_SKIPPED_LISTED;
use openshell_protocol::request::sha256_hex;
use openshell_protocol::{
    FilesStatus, OutputPattern, Payload, ReturnedFile, ReturnedFiles, SkipReason, SkippedFile,
};
use tokio::sync::Mutex;

use crate::config::FilesConfig;

pub use serve::serve;

/// The object store bucket holding returned files too large for a result.
pub const BUCKET: &str = "OPENSHELL_FILES";

/// The object of `tenant`'s job `job_id`'s file `path`.
pub fn object_name(tenant: &str, job_id: &str, path: &str) -> String {
    format!("{tenant}/{job_id}/{path}")
}

/// Where returned files go: the result, or the object store.
pub struct FileStore {
    config: FilesConfig,
    jetstream: Option<jetstream::Context>,
    replicas: usize,
    bucket: Mutex<Option<object_store::ObjectStore>>,
}

impl FileStore {
    /// A store under `config`, keeping objects through `jetstream` with `replicas` copies
    /// (`None`: files that do not fit inline are skipped as `store_unavailable`).
    pub fn new(
        config: FilesConfig,
        jetstream: Option<jetstream::Context>,
        replicas: usize,
    ) -> Self {
        Self {
            config,
            jetstream,
            replicas,
            bucket: Mutex::new(None),
        }
    }

    /// What a backend reads for a request with `patterns`, under this worker's caps.
    pub fn request(&self, patterns: &[OutputPattern]) -> Option<FilesRequest> {
        (!patterns.is_empty()).then(|| FilesRequest {
            patterns: patterns.to_vec(),
            max_files: self.config.max_files,
            max_bytes: self.config.max_bytes.bytes(),
        })
    }

    /// The result's account of `collected` for `tenant`'s job `job_id`: files inline while
    /// they fit the inline budget (smallest first), the rest stored; a file that cannot be
    /// stored is skipped, status `store_unavailable`. `None` (the backend could not read the
    /// files): `not_collected`.
    pub async fn deliver(
        &self,
        tenant: &str,
        job_id: &str,
        collected: Option<CollectedFiles>,
    ) -> ReturnedFiles {
        let Some(collected) = collected else {
            return ReturnedFiles::not_collected();
        };
        let CollectedFiles {
            mut status,
            files,
            mut skipped,
            mut skipped_count,
        } = collected;
        let mut inline_left = self.config.inline_bytes.bytes();
        let mut by_size: Vec<_> = files.into_iter().enumerate().collect();
        by_size.sort_by_key(|(_, file)| file.content.len());
        let mut returned = Vec::with_capacity(by_size.len());
        for (index, file) in by_size {
            let size = file.content.len() as u64;
            let sha256 = sha256_hex(&file.content);
            let mut entry = ReturnedFile {
                path: file.path.clone(),
                size,
                sha256,
                content: None,
                object: None,
            };
            if size <= inline_left {
                inline_left -= size;
                entry.content = Some(Payload(file.content));
            } else {
                let name = object_name(tenant, job_id, file.path.as_str());
                match self.put(&name, &entry.sha256, file.content).await {
                    Ok(()) => entry.object = Some(name),
                    Err(message) => {
                        tracing::warn!(object = %name, "a returned file could not be stored: {message}");
                        skipped_count += 1;
                        if skipped.len() < MAX_SKIPPED_LISTED {
                            skipped.push(SkippedFile {
                                path: file.path,
                                reason: SkipReason::StoreUnavailable,
                            });
                        }
                        if status == FilesStatus::Complete {
                            status = FilesStatus::StoreUnavailable;
                        }
                        continue;
                    }
                }
            }
            returned.push((index, entry));
        }
        returned.sort_by_key(|(index, _)| *index);
        ReturnedFiles {
            status,
            files: returned.into_iter().map(|(_, file)| file).collect(),
            skipped,
            skipped_count,
        }
    }

    async fn put(&self, name: &str, sha256: &str, content: Vec<u8>) -> Result<(), String> {
        let bucket = self.bucket().await?;
        let meta = object_store::ObjectMetadata {
            name: name.to_string(),
            metadata: [("sha256".to_string(), sha256.to_string())].into(),
            ..Default::default()
        };
        bucket
            .put(meta, &mut content.as_slice())
            .await
            .map(drop)
            .map_err(|error| error.to_string())
    }

    /// The bucket, created on first use (and again after a failure: JetStream may come later).
    pub(crate) async fn bucket(&self) -> Result<object_store::ObjectStore, String> {
        let mut bucket = self.bucket.lock().await;
        if let Some(store) = bucket.as_ref() {
            return Ok(store.clone());
        }
        let Some(jetstream) = &self.jetstream else {
            return Err("this worker has no JetStream connection".into());
        };
        let store = match jetstream.get_object_store(BUCKET).await {
            Ok(store) => store,
            Err(_) => jetstream
                .create_object_store(object_store::Config {
                    bucket: BUCKET.to_string(),
                    description: Some(
                        "OpenShell: files returned by jobs, as <tenant>/<job_id>/<path>".into(),
                    ),
                    max_age: self.config.ttl.as_duration(),
                    num_replicas: self.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|error| {
                    format!(
                        "the {BUCKET} object store could not be created: {error}; enable JetStream on the \
                         NATS server, or keep returned files under files.inline_bytes"
                    )
                })?,
        };
        *bucket = Some(store.clone());
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use openshell_backend::CollectedFile;
    use openshell_protocol::{ByteSize, RelativePath};

    use super::*;

    fn collected(sizes: &[(&str, usize)]) -> CollectedFiles {
        CollectedFiles {
            status: FilesStatus::Complete,
            files: sizes
                .iter()
                .map(|(path, size)| CollectedFile {
                    path: RelativePath::parse(path).unwrap(),
                    content: vec![b'x'; *size],
                })
                .collect(),
            skipped: Vec::new(),
            skipped_count: 0,
        }
    }

    #[tokio::test]
    async fn small_files_go_inline_smallest_first_and_the_rest_is_skipped_without_a_store() {
        let config = FilesConfig {
            inline_bytes: ByteSize::kib(10),
            ..FilesConfig::default()
        };
        let store = FileStore::new(config, None, 1);
        let files = collected(&[("a", 6000), ("b", 3000), ("c", 5000)]);
        let returned = store.deliver("acme", "j1", Some(files)).await;
        // b (3000) and c (5000) fit the 10 KiB budget; a (6000) would need the store.
        let paths: Vec<_> = returned.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["b", "c"]);
        assert!(returned.files.iter().all(|f| f.content.is_some()));
        assert_eq!(returned.status, FilesStatus::StoreUnavailable);
        assert_eq!(returned.skipped_count, 1);
        assert_eq!(returned.skipped[0].reason, SkipReason::StoreUnavailable);
        assert_eq!(returned.skipped[0].path, "a");
    }

    #[tokio::test]
    async fn files_the_backend_could_not_read_are_not_collected() {
        let store = FileStore::new(FilesConfig::default(), None, 1);
        let returned = store.deliver("acme", "j1", None).await;
        assert_eq!(returned.status, FilesStatus::NotCollected);
        assert!(returned.files.is_empty());
    }
}
