//! Pingora's per-request cache handles over [`MemoryStorage`]: a hit reads a stored body
//! (or the range a `Range` request asked for); a miss collects the answer as it streams to
//! the client and stores it once it is complete.

use super::storage::{Entry, EntryTag, MemoryStorage, Meta};
use bytes::{Bytes, BytesMut};
use pingora_cache::key::HashBinary;
use pingora_cache::storage::{HandleHit, HandleMiss, MissFinishType};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, Storage};
use pingora_error::{Error, ErrorType, Result};
use std::any::Any;

/// Larger answers are passed to the client and not kept.
pub const MAX_ENTRY: usize = 8 << 20;

/// Reads a stored body: all of it, or the range a `Range` request asked for.
pub(super) struct Hit {
    body: Bytes,
    range: (usize, usize),
    done: bool,
}

impl Hit {
    pub(super) fn new(body: Bytes) -> Hit {
        let len = body.len();
        Hit {
            body,
            range: (0, len),
            done: false,
        }
    }
}

#[async_trait::async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.range.0..self.range.1)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.body.len();
        let end = end.unwrap_or(len);
        if start > end || end > len {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("range {start}-{end} is outside a {len}-byte body"),
            );
        }
        self.range = (start, end);
        self.done = false;
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Collects an answer as it streams to the client; stores it once it is complete.
pub(super) struct Miss {
    storage: &'static MemoryStorage,
    key: HashBinary,
    meta: Meta,
    tag: Option<EntryTag>,
    parts: Vec<Bytes>,
    size: usize,
    /// Over [`MAX_ENTRY`]: the rest streams on, nothing is kept.
    too_large: bool,
}

impl Miss {
    pub(super) fn new(
        storage: &'static MemoryStorage,
        key: HashBinary,
        meta: Meta,
        tag: Option<EntryTag>,
    ) -> Miss {
        Miss {
            storage,
            key,
            meta,
            tag,
            parts: Vec::new(),
            size: 0,
            too_large: false,
        }
    }
}

#[async_trait::async_trait]
impl HandleMiss for Miss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.too_large || data.is_empty() {
            return Ok(());
        }
        self.size += data.len();
        if self.size > MAX_ENTRY {
            self.too_large = true;
            self.parts = Vec::new();
        } else {
            self.parts.push(data);
        }
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let Miss {
            storage,
            key,
            meta,
            tag,
            parts,
            size,
            too_large,
        } = *self;
        // No tag: not a key the gateway made; nothing is stored that a purge cannot find.
        let Some(tag) = tag.filter(|_| !too_large) else {
            return Ok(MissFinishType::Created(0));
        };
        let body = match parts.len() {
            0 => Bytes::new(),
            1 => parts.into_iter().next().unwrap_or_default(),
            _ => {
                let mut all = BytesMut::with_capacity(size);
                for p in parts {
                    all.extend_from_slice(&p);
                }
                all.freeze()
            }
        };
        let weight = body.len() + meta.weight();
        let stored = storage.insert(
            key,
            Entry {
                meta,
                body,
                tag,
                weight,
            },
        );
        Ok(MissFinishType::Created(stored))
    }
}
