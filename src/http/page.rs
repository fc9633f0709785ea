//! The response of a list page whose rows may be large (events of up to
//! 64 KiB each). Its rows hold room in the write buffer from before they
//! are read (their largest size, see [`WriteBuffer::hold`]); a page whose
//! rows turn out small is made whole, a larger one is serialized as its
//! client reads it ([`Streamed`]), so that clients that do not read hold
//! at most `HTTP_WRITE_BUFFER_LIMIT` between them.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;

use super::{ApiError, json_body};
use crate::edge::unsent::{Chunk, Held, STREAM_ALLOWANCE, Streamed, WriteBuffer};

/// Pages whose rows take less memory than this are made whole: their JSON
/// is at most six times as long (every character escaped).
const MADE_WHOLE_BELOW: usize = 16 * 1024;

/// How much JSON a chunk of a streamed page gathers before it is sent
/// (one more row at most).
const CHUNK_BYTES: usize = 64 * 1024;

/// The page of `rows`, which `rows_room` holds room for: `page` serializes
/// the page with the rows it is given, and `held` says what a row takes
/// in memory.
pub(super) async fn respond<T: Serialize + Send + Unpin + 'static>(
    buffer: &WriteBuffer,
    mut rows_room: Held,
    rows: Vec<T>,
    held: fn(&T) -> usize,
    page: impl Fn(&[T]) -> serde_json::Result<Vec<u8>>,
) -> Result<Response, ApiError> {
    let serialized = |rows: &[T]| page(rows).map_err(|err| ApiError::Internal(err.into()));
    let size: usize = rows.iter().map(held).sum();
    if size < MADE_WHOLE_BELOW {
        drop(rows_room);
        return Ok(json_body(StatusCode::OK, Bytes::from(serialized(&rows)?)));
    }
    rows_room.shrink_to(size);
    let allowance = buffer
        .hold(STREAM_ALLOWANCE as u64)
        .await
        .ok_or(ApiError::Overloaded)?;
    // The page's JSON around its rows, as the whole page has it: the rows
    // are its first array.
    let frame = serialized(&[])?;
    let split = frame
        .windows(2)
        .position(|pair| pair == b"[]")
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no array in the page {frame:?}")))?;
    let chunks = Chunks {
        head: Some(frame[..=split].to_vec()),
        rows: rows.into_iter(),
        tail: Some(frame[split + 1..].to_vec()),
        first: true,
        held,
    };
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Body::new(Streamed::new(rows_room, allowance, chunks)),
    )
        .into_response())
}

/// A page's JSON in chunks of about [`CHUNK_BYTES`], each row serialized
/// when its chunk is asked for, and dropped then.
struct Chunks<T> {
    head: Option<Vec<u8>>,
    rows: std::vec::IntoIter<T>,
    tail: Option<Vec<u8>>,
    first: bool,
    held: fn(&T) -> usize,
}

impl<T: Serialize> Iterator for Chunks<T> {
    type Item = Chunk;

    fn next(&mut self) -> Option<Chunk> {
        let mut json = self.head.take().unwrap_or_default();
        let mut rows = 0;
        while json.len() < CHUNK_BYTES {
            let Some(row) = self.rows.next() else {
                json.extend(self.tail.take().unwrap_or_default());
                break;
            };
            if !std::mem::take(&mut self.first) {
                json.push(b',');
            }
            serde_json::to_writer(&mut json, &row).expect("BUG: rows serialize");
            rows += (self.held)(&row);
        }
        (!json.is_empty()).then_some(Chunk { json, rows })
    }
}
