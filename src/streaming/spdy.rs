//! SPDY/3.1, as Kubernetes streams exec, attach and port-forward over it.
//!
//! kubelet, `kubectl` (through the API server) and `crictl` reach a runtime's streaming server
//! with an HTTP/1.1 request carrying `Upgrade: SPDY/3.1`. After `101 Switching Protocols` the
//! connection speaks SPDY/3 framing as Go's `github.com/moby/spdystream` implements it (used by
//! `k8s.io/apimachinery/pkg/util/httpstream/spdy`): the client opens one stream per channel
//! (`streamtype: error | stdin | stdout | stderr | resize` for exec and attach; `streamtype:
//! error | data` with `port` and `requestid` for port-forward) and both sides move bytes in DATA
//! frames. This module is that transport; the upgrade and the meaning of each stream belong to
//! the handlers that use it.
//!
//! What is implemented, and why that much:
//! - All nine SPDY/3 frame types are read and written ([`Frame`], [`FrameReader`],
//!   [`FrameWriter`]). Header blocks are zlib-compressed with the SPDY/3 dictionary, one
//!   compression context per direction for the whole connection, every block ended by a sync
//!   flush: exactly what spdystream's framer does.
//! - No flow control. spdystream never sends WINDOW_UPDATE, and the WINDOW_UPDATE and SETTINGS
//!   frames it receives end in its "unhandled frame type" path. Honouring SPDY/3.1's 64 KiB
//!   windows would therefore stall every transfer to a Go peer after 64 KiB, and sending
//!   WINDOW_UPDATE would buy nothing. So, like spdystream, we read and ignore both and send
//!   neither; back-pressure is local (below) and TCP carries it to the peer.
//! - Streams: SYN_STREAM opens one (odd ids from the client, even from the server); the server
//!   accepts each at once with an empty SYN_REPLY, as Kubernetes' server does; FIN on DATA,
//!   SYN_STREAM, SYN_REPLY or HEADERS half-closes; RST_STREAM aborts both directions. HEADERS
//!   frames carry nothing Kubernetes uses, so only their FIN counts.
//! - A peer's PING is echoed; our own pings are matched by id. A peer's GOAWAY stops new
//!   streams. [`Connection::close`] sends GOAWAY behind every frame already queued, because
//!   spdystream stops reading at GOAWAY, and then ends the connection.
//! - Server push, priorities and CREDENTIAL frames are unused by Kubernetes and not
//!   implemented; unknown control frame types are skipped, as the spec asks.
//!
//! Shape: a [`Connection`] runs a reader task, which parses frames and routes them to streams,
//! and a writer task, which owns the only [`FrameWriter`] and writes queued frames first in,
//! first out. Back-pressure:
//! - Receiving: each stream buffers up to [`ConnectionConfig::stream_receive_buffer`] bytes for
//!   its reader. A DATA frame that does not fit makes the reader task wait, which stops reading
//!   the socket (what spdystream's unbuffered channels do too). If that stream's reader makes
//!   no progress for [`ConnectionConfig::receive_stall_timeout`], the stream is reset
//!   (RST_STREAM CANCEL; its reader gets [`SpdyError::ReceiveStalled`]), so one stuck consumer
//!   holds the other streams up for a bounded time only.
//! - Sending: each stream may have [`ConnectionConfig::stream_send_buffer`] bytes queued for
//!   the writer task before its writer waits. The queue is shared and first in, first out, so
//!   a busy stream delays the others by at most its own share.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, oneshot, watch, Notify};

/// The version in every control frame (SPDY/3.1 changed flow control, not framing).
pub const SPDY_VERSION: u16 = 3;
/// The most any frame can carry: its length field has 24 bits.
pub const MAX_FRAME_PAYLOAD: usize = (1 << 24) - 1;
/// The most a control frame may carry. Kubernetes' control frames hold a few short headers;
/// the bound keeps a hostile peer from making us buffer and inflate megabytes.
pub const MAX_CONTROL_PAYLOAD: usize = 1 << 20;
/// The most a header block may decompress to (zlib can inflate about a thousandfold).
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// The largest DATA frame a [`StreamWriter`] sends. Go peers write 32 KiB frames (`io.Copy`'s
/// buffer, one frame per write), and small frames keep streams interleaving finely.
pub const MAX_DATA_FRAME: usize = 32 * 1024;

/// A header block: `(name, value)` pairs in order, names lowercase. A name with several values
/// appears once per value; on the wire they share one entry, NUL-separated, placed where the
/// name first appears.
pub type Headers = Vec<(String, String)>;

const CONTROL_BIT: u32 = 0x8000_0000;
const STREAM_ID_MASK: u32 = 0x7fff_ffff;
const LENGTH_MASK: u32 = 0x00ff_ffff;

const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;
const FLAG_SETTINGS_CLEAR: u8 = 0x01;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// The length-prefixed words that open the SPDY/3 header compression dictionary (SPDY/3
/// section 2.6.10.1); each is preceded by its length as a 32-bit big-endian number.
const DICTIONARY_WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The rest of the dictionary: status codes and common values, run together without prefixes.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information",
    "204 No Content",
    "301 Moved Permanently",
    "400 Bad Request",
    "401 Unauthorized",
    "403 Forbidden",
    "404 Not Found",
    "500 Internal Server Error",
    "501 Not Implemented",
    "503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec",
    " 00:00:00",
    " Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
    "text/plain,text/javascript,",
    "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

const DICTIONARY_LEN: usize = dictionary_len();

/// The preset dictionary both zlib contexts of a connection start from.
static HEADER_DICTIONARY: [u8; DICTIONARY_LEN] = build_dictionary();

/// The Adler-32 checksum of [`HEADER_DICTIONARY`]: the id a zlib stream names it by.
const HEADER_DICTIONARY_ID: u32 = 0xe3c6_a7c2;

const fn dictionary_len() -> usize {
    let mut len = DICTIONARY_TAIL.len();
    let mut i = 0;
    while i < DICTIONARY_WORDS.len() {
        len += 4 + DICTIONARY_WORDS[i].len();
        i += 1;
    }
    len
}

const fn build_dictionary() -> [u8; DICTIONARY_LEN] {
    let mut out = [0u8; DICTIONARY_LEN];
    let mut at = 0;
    let mut i = 0;
    while i < DICTIONARY_WORDS.len() {
        let word = DICTIONARY_WORDS[i].as_bytes();
        let prefix = (word.len() as u32).to_be_bytes();
        let mut j = 0;
        while j < prefix.len() {
            out[at] = prefix[j];
            at += 1;
            j += 1;
        }
        let mut j = 0;
        while j < word.len() {
            out[at] = word[j];
            at += 1;
            j += 1;
        }
        i += 1;
    }
    let tail = DICTIONARY_TAIL.as_bytes();
    let mut j = 0;
    while j < tail.len() {
        out[at] = tail[j];
        at += 1;
        j += 1;
    }
    out
}

/// Why something on a SPDY connection failed.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY connection I/O failed while {action}")]
    Io {
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("SPDY connection ended inside a frame ({received} of {expected} bytes)")]
    Truncated { expected: usize, received: usize },
    #[error("SPDY {frame} frame of {length} bytes exceeds the {limit}-byte limit")]
    FrameTooLarge {
        frame: &'static str,
        length: usize,
        limit: usize,
    },
    #[error("SPDY control frame has version {0}; only version 3 is spoken")]
    UnsupportedVersion(u16),
    #[error("malformed SPDY {frame}: {reason}")]
    Malformed {
        frame: &'static str,
        reason: &'static str,
    },
    #[error("SPDY header block inflates to more than {limit} bytes")]
    HeaderBlockTooLarge { limit: usize },
    #[error("invalid SPDY header {name:?}: {reason}")]
    InvalidHeader { name: String, reason: &'static str },
    #[error("SPDY header block needs zlib dictionary {found:#010x}, not SPDY/3's")]
    WrongDictionary { found: u32 },
    #[error("compressing a SPDY header block failed")]
    Compress(#[source] flate2::CompressError),
    #[error("decompressing a SPDY header block failed")]
    Decompress(#[source] flate2::DecompressError),
    #[error("cannot send SPDY {frame} frame: {reason}")]
    Unencodable {
        frame: &'static str,
        reason: &'static str,
    },
    #[error("SPDY stream {stream_id} was reset by the peer ({status})")]
    StreamReset { stream_id: u32, status: RstStatus },
    #[error("SPDY stream {stream_id} was reset on this side")]
    StreamCancelled { stream_id: u32 },
    #[error(
        "SPDY stream {stream_id} was reset: its reader made no progress while its buffer was full"
    )]
    ReceiveStalled { stream_id: u32 },
    #[error("SPDY stream {stream_id} was already closed for writing")]
    WriteAfterFin { stream_id: u32 },
    #[error("the SPDY peer sent GOAWAY and takes no new streams")]
    GoneAway,
    #[error("the SPDY connection is closed")]
    ConnectionClosed,
    #[error("the SPDY connection has used up its stream ids")]
    StreamIdsExhausted,
}

/// The status of a RST_STREAM frame (SPDY/3 section 2.6.3); values without a constant here
/// pass through unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RstStatus(pub u32);

impl RstStatus {
    pub const PROTOCOL_ERROR: Self = Self(1);
    pub const INVALID_STREAM: Self = Self(2);
    pub const REFUSED_STREAM: Self = Self(3);
    pub const UNSUPPORTED_VERSION: Self = Self(4);
    pub const CANCEL: Self = Self(5);
    pub const INTERNAL_ERROR: Self = Self(6);
    pub const FLOW_CONTROL_ERROR: Self = Self(7);
    pub const STREAM_IN_USE: Self = Self(8);
    pub const STREAM_ALREADY_CLOSED: Self = Self(9);
    pub const FRAME_TOO_LARGE: Self = Self(11);
}

impl fmt::Display for RstStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Self::PROTOCOL_ERROR => "PROTOCOL_ERROR",
            Self::INVALID_STREAM => "INVALID_STREAM",
            Self::REFUSED_STREAM => "REFUSED_STREAM",
            Self::UNSUPPORTED_VERSION => "UNSUPPORTED_VERSION",
            Self::CANCEL => "CANCEL",
            Self::INTERNAL_ERROR => "INTERNAL_ERROR",
            Self::FLOW_CONTROL_ERROR => "FLOW_CONTROL_ERROR",
            Self::STREAM_IN_USE => "STREAM_IN_USE",
            Self::STREAM_ALREADY_CLOSED => "STREAM_ALREADY_CLOSED",
            Self::FRAME_TOO_LARGE => "FRAME_TOO_LARGE",
            Self(other) => return write!(f, "status {other}"),
        };
        f.write_str(name)
    }
}

/// The status of a GOAWAY frame (SPDY/3 section 2.6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GoAwayStatus(pub u32);

impl GoAwayStatus {
    pub const OK: Self = Self(0);
    pub const PROTOCOL_ERROR: Self = Self(1);
    pub const INTERNAL_ERROR: Self = Self(2);
}

/// One entry of a SETTINGS frame: a 24-bit id, its flags and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

/// One SPDY/3 frame, decoded. Stream ids are 31-bit and non-zero where a stream is meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_stream_id: u32,
        /// 0 (highest) to 7.
        priority: u8,
        slot: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: RstStatus,
    },
    Settings {
        /// FLAG_SETTINGS_CLEAR_SETTINGS: forget persisted settings.
        clear_persisted: bool,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: GoAwayStatus,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        /// 0 for the connection-level window of SPDY/3.1.
        stream_id: u32,
        delta_window_size: u32,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
}

impl Frame {
    /// The frame's type as the spec names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SynStream { .. } => "SYN_STREAM",
            Self::SynReply { .. } => "SYN_REPLY",
            Self::RstStream { .. } => "RST_STREAM",
            Self::Settings { .. } => "SETTINGS",
            Self::Ping { .. } => "PING",
            Self::GoAway { .. } => "GOAWAY",
            Self::Headers { .. } => "HEADERS",
            Self::WindowUpdate { .. } => "WINDOW_UPDATE",
            Self::Data { .. } => "DATA",
        }
    }
}

fn control_frame_name(kind: u16) -> Option<&'static str> {
    Some(match kind {
        TYPE_SYN_STREAM => "SYN_STREAM",
        TYPE_SYN_REPLY => "SYN_REPLY",
        TYPE_RST_STREAM => "RST_STREAM",
        TYPE_SETTINGS => "SETTINGS",
        TYPE_PING => "PING",
        TYPE_GOAWAY => "GOAWAY",
        TYPE_HEADERS => "HEADERS",
        TYPE_WINDOW_UPDATE => "WINDOW_UPDATE",
        _ => return None,
    })
}

/// Reads frames from one direction of a connection; owns that direction's zlib context.
pub struct FrameReader<R> {
    io: R,
    headers: HeaderDecompressor,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R) -> Self {
        Self {
            io,
            headers: HeaderDecompressor::new(),
        }
    }

    /// The next frame; `None` when the peer closed the connection between frames. Control
    /// frames of unknown types are skipped.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, SpdyError> {
        loop {
            let Some(head) = self.read_head().await? else {
                return Ok(None);
            };
            let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            let flags = head[4];
            let length =
                (u32::from_be_bytes([head[4], head[5], head[6], head[7]]) & LENGTH_MASK) as usize;
            if first & CONTROL_BIT == 0 {
                let stream_id = first & STREAM_ID_MASK;
                let data = Bytes::from(self.read_payload(length).await?);
                if stream_id == 0 {
                    return Err(malformed("DATA", "stream id 0"));
                }
                return Ok(Some(Frame::Data {
                    stream_id,
                    fin: flags & FLAG_FIN != 0,
                    data,
                }));
            }
            let version = ((first >> 16) & 0x7fff) as u16;
            if version != SPDY_VERSION {
                return Err(SpdyError::UnsupportedVersion(version));
            }
            let kind = (first & 0xffff) as u16;
            let Some(name) = control_frame_name(kind) else {
                self.skip_payload(length).await?;
                tracing::debug!(kind, length, "skipping SPDY control frame of unknown type");
                continue;
            };
            if length > MAX_CONTROL_PAYLOAD {
                return Err(SpdyError::FrameTooLarge {
                    frame: name,
                    length,
                    limit: MAX_CONTROL_PAYLOAD,
                });
            }
            let payload = self.read_payload(length).await?;
            return self.decode_control(kind, name, flags, &payload).map(Some);
        }
    }

    /// The 8-byte frame head, or `None` at a clean end of the stream.
    async fn read_head(&mut self) -> Result<Option<[u8; 8]>, SpdyError> {
        let mut head = [0u8; 8];
        let mut filled = 0;
        while filled < head.len() {
            let read = self
                .io
                .read(&mut head[filled..])
                .await
                .map_err(|source| SpdyError::Io {
                    action: "reading a frame",
                    source,
                })?;
            if read == 0 {
                if filled == 0 {
                    return Ok(None);
                }
                return Err(SpdyError::Truncated {
                    expected: head.len(),
                    received: filled,
                });
            }
            filled += read;
        }
        Ok(Some(head))
    }

    async fn read_payload(&mut self, length: usize) -> Result<Vec<u8>, SpdyError> {
        // Grown as bytes arrive: a length field alone must not make us allocate 16 MiB.
        let mut payload = Vec::with_capacity(length.min(64 * 1024));
        (&mut self.io)
            .take(length as u64)
            .read_to_end(&mut payload)
            .await
            .map_err(|source| SpdyError::Io {
                action: "reading a frame",
                source,
            })?;
        if payload.len() < length {
            return Err(SpdyError::Truncated {
                expected: 8 + length,
                received: 8 + payload.len(),
            });
        }
        Ok(payload)
    }

    async fn skip_payload(&mut self, length: usize) -> Result<(), SpdyError> {
        let skipped = tokio::io::copy(
            &mut (&mut self.io).take(length as u64),
            &mut tokio::io::sink(),
        )
        .await
        .map_err(|source| SpdyError::Io {
            action: "reading a frame",
            source,
        })?;
        if skipped < length as u64 {
            return Err(SpdyError::Truncated {
                expected: 8 + length,
                received: 8 + skipped as usize,
            });
        }
        Ok(())
    }

    fn decode_control(
        &mut self,
        kind: u16,
        name: &'static str,
        flags: u8,
        payload: &[u8],
    ) -> Result<Frame, SpdyError> {
        let mut fields = Fields {
            frame: name,
            rest: payload,
        };
        let fin = flags & FLAG_FIN != 0;
        let frame = match kind {
            TYPE_SYN_STREAM => {
                let stream_id = fields.stream_id()?;
                let associated_stream_id = fields.u32()? & STREAM_ID_MASK;
                let priority = fields.u8()? >> 5;
                let slot = fields.u8()?;
                Frame::SynStream {
                    stream_id,
                    associated_stream_id,
                    priority,
                    slot,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers: self.headers.decode(fields.rest)?,
                }
            }
            TYPE_SYN_REPLY => Frame::SynReply {
                stream_id: fields.stream_id()?,
                fin,
                headers: self.headers.decode(fields.rest)?,
            },
            TYPE_HEADERS => Frame::Headers {
                stream_id: fields.stream_id()?,
                fin,
                headers: self.headers.decode(fields.rest)?,
            },
            TYPE_RST_STREAM => {
                let stream_id = fields.stream_id()?;
                let status = RstStatus(fields.u32()?);
                fields.finish()?;
                if status.0 == 0 {
                    return Err(malformed(name, "status 0"));
                }
                Frame::RstStream { stream_id, status }
            }
            TYPE_SETTINGS => {
                let count = fields.u32()? as usize;
                if !fields.rest.len().is_multiple_of(8) || fields.rest.len() / 8 != count {
                    return Err(malformed(name, "entry count does not match the length"));
                }
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let flags_and_id = fields.u32()?;
                    entries.push(Setting {
                        flags: (flags_and_id >> 24) as u8,
                        id: flags_and_id & LENGTH_MASK,
                        value: fields.u32()?,
                    });
                }
                Frame::Settings {
                    clear_persisted: flags & FLAG_SETTINGS_CLEAR != 0,
                    entries,
                }
            }
            TYPE_PING => {
                let id = fields.u32()?;
                fields.finish()?;
                Frame::Ping { id }
            }
            TYPE_GOAWAY => {
                let last_good_stream_id = fields.u32()? & STREAM_ID_MASK;
                let status = GoAwayStatus(fields.u32()?);
                fields.finish()?;
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                }
            }
            TYPE_WINDOW_UPDATE => {
                let stream_id = fields.u32()? & STREAM_ID_MASK;
                let delta_window_size = fields.u32()? & STREAM_ID_MASK;
                fields.finish()?;
                Frame::WindowUpdate {
                    stream_id,
                    delta_window_size,
                }
            }
            _ => return Err(malformed(name, "unknown control frame type")),
        };
        Ok(frame)
    }
}

fn malformed(frame: &'static str, reason: &'static str) -> SpdyError {
    SpdyError::Malformed { frame, reason }
}

/// A cursor over a payload that reports running short as a malformed `frame`.
struct Fields<'a> {
    frame: &'static str,
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn bytes(&mut self, len: usize) -> Result<&'a [u8], SpdyError> {
        if len > self.rest.len() {
            return Err(malformed(self.frame, "payload is too short"));
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    fn u32(&mut self) -> Result<u32, SpdyError> {
        let bytes = self.bytes(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u8(&mut self) -> Result<u8, SpdyError> {
        Ok(self.bytes(1)?[0])
    }

    fn stream_id(&mut self) -> Result<u32, SpdyError> {
        match self.u32()? & STREAM_ID_MASK {
            0 => Err(malformed(self.frame, "stream id 0")),
            id => Ok(id),
        }
    }

    /// Fixed-size frames must end here: spdystream would read extra bytes as the next frame.
    fn finish(&self) -> Result<(), SpdyError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(malformed(self.frame, "payload is longer than its fields"))
        }
    }
}

/// The inflating half of a connection direction's header compression.
struct HeaderDecompressor {
    inflate: Decompress,
}

impl HeaderDecompressor {
    fn new() -> Self {
        Self {
            inflate: Decompress::new(true),
        }
    }

    fn decode(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let block = self.inflate_block(compressed)?;
        parse_header_block(&block)
    }

    /// Inflates one header block. The context carries over from the previous block, and every
    /// block ends with a sync flush, so all of `compressed` yields output now.
    fn inflate_block(&mut self, compressed: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut block = Vec::with_capacity(1024);
        let mut consumed = 0;
        loop {
            if block.len() == block.capacity() {
                let room = block.capacity().min(MAX_HEADER_BLOCK + 1 - block.len());
                block.reserve_exact(room.max(1));
            }
            let (in_before, out_before) = (self.inflate.total_in(), self.inflate.total_out());
            let result = self.inflate.decompress_vec(
                &compressed[consumed..],
                &mut block,
                FlushDecompress::Sync,
            );
            let used = (self.inflate.total_in() - in_before) as usize;
            let produced = self.inflate.total_out() - out_before;
            consumed += used;
            match result {
                Ok(Status::StreamEnd) => {
                    // A SPDY context lasts as long as the connection; an ended one decodes
                    // nothing more.
                    return Err(malformed("header block", "zlib stream ended"));
                }
                Ok(Status::Ok | Status::BufError) => {}
                Err(err) => match err.needs_dictionary() {
                    Some(HEADER_DICTIONARY_ID) => {
                        self.inflate
                            .set_dictionary(&HEADER_DICTIONARY)
                            .map_err(SpdyError::Decompress)?;
                        continue;
                    }
                    Some(found) => return Err(SpdyError::WrongDictionary { found }),
                    None => return Err(SpdyError::Decompress(err)),
                },
            }
            if block.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::HeaderBlockTooLarge {
                    limit: MAX_HEADER_BLOCK,
                });
            }
            let room_left = block.len() < block.capacity();
            if consumed == compressed.len() && room_left {
                return Ok(block);
            }
            if used == 0 && produced == 0 && room_left {
                return Err(malformed("header block", "compressed data is cut short"));
            }
        }
    }
}

fn parse_header_block(block: &[u8]) -> Result<Headers, SpdyError> {
    let mut fields = Fields {
        frame: "header block",
        rest: block,
    };
    let count = fields.u32()? as usize;
    // Every entry takes at least 8 bytes; checked first so a made-up count cannot drive
    // allocation.
    if count > fields.rest.len() / 8 {
        return Err(malformed("header block", "entry count exceeds the block"));
    }
    let mut headers = Headers::with_capacity(count);
    for _ in 0..count {
        let name_len = fields.u32()? as usize;
        let name = fields.bytes(name_len)?;
        let value_len = fields.u32()? as usize;
        let value = fields.bytes(value_len)?;
        let name = std::str::from_utf8(name).map_err(|_| SpdyError::InvalidHeader {
            name: String::from_utf8_lossy(name).into_owned(),
            reason: "name is not UTF-8",
        })?;
        let invalid = |reason| SpdyError::InvalidHeader {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("name is empty"));
        }
        if name.bytes().any(|b| b.is_ascii_uppercase() || b == 0) {
            return Err(invalid("name has uppercase letters or NUL"));
        }
        if headers.iter().any(|(seen, _)| seen == name) {
            return Err(invalid("name appears twice"));
        }
        let value = std::str::from_utf8(value).map_err(|_| invalid("value is not UTF-8"))?;
        for one in value.split('\0') {
            headers.push((name.to_owned(), one.to_owned()));
        }
    }
    // spdystream would take leftover bytes as the start of the next block.
    fields.finish()?;
    Ok(headers)
}

fn encode_header_block(headers: &[(String, String)]) -> Result<Vec<u8>, SpdyError> {
    let mut entries: Vec<(String, Vec<&str>)> = Vec::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        let invalid = |reason| SpdyError::InvalidHeader {
            name: name.clone(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("name is empty"));
        }
        if name.contains('\0') {
            return Err(invalid("name contains NUL"));
        }
        if value.contains('\0') {
            return Err(invalid("value contains NUL, the separator of values"));
        }
        match entries.iter_mut().find(|(seen, _)| *seen == name) {
            Some((_, values)) => values.push(value),
            None => entries.push((name, vec![value.as_str()])),
        }
    }
    let too_large = |_| SpdyError::HeaderBlockTooLarge {
        limit: MAX_HEADER_BLOCK,
    };
    let mut block = Vec::new();
    put_u32(&mut block, u32::try_from(entries.len()).map_err(too_large)?);
    for (name, values) in &entries {
        let value = values.join("\0");
        put_u32(&mut block, u32::try_from(name.len()).map_err(too_large)?);
        block.extend_from_slice(name.as_bytes());
        put_u32(&mut block, u32::try_from(value.len()).map_err(too_large)?);
        block.extend_from_slice(value.as_bytes());
    }
    if block.len() > MAX_HEADER_BLOCK {
        return Err(SpdyError::HeaderBlockTooLarge {
            limit: MAX_HEADER_BLOCK,
        });
    }
    Ok(block)
}

/// The deflating half of a connection direction's header compression.
struct HeaderCompressor {
    deflate: Compress,
    /// zlib takes the preset dictionary only before the first block.
    primed: bool,
}

impl HeaderCompressor {
    fn new() -> Self {
        Self {
            deflate: Compress::new(Compression::default(), true),
            primed: false,
        }
    }

    /// Appends `headers`, compressed and sync-flushed so the peer can inflate them at once.
    fn compress(
        &mut self,
        headers: &[(String, String)],
        out: &mut Vec<u8>,
    ) -> Result<(), SpdyError> {
        let block = encode_header_block(headers)?;
        if !self.primed {
            self.deflate
                .set_dictionary(&HEADER_DICTIONARY)
                .map_err(SpdyError::Compress)?;
            self.primed = true;
        }
        let start = self.deflate.total_in();
        loop {
            let consumed = (self.deflate.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(block.len() - consumed + 64);
            }
            self.deflate
                .compress_vec(&block[consumed..], out, FlushCompress::Sync)
                .map_err(SpdyError::Compress)?;
            let consumed = (self.deflate.total_in() - start) as usize;
            // zlib stops a sync flush early only when it runs out of room.
            if consumed == block.len() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }
}

/// Writes frames to one direction of a connection; owns that direction's zlib context.
pub struct FrameWriter<W> {
    io: W,
    headers: HeaderCompressor,
    /// The frame being written, reused so a frame costs one write and no allocation.
    buffer: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(io: W) -> Self {
        Self {
            io,
            headers: HeaderCompressor::new(),
            buffer: Vec::new(),
        }
    }

    /// Writes and flushes `frame`. A frame that cannot be encoded is an error and nothing of
    /// it is written; but header blocks share one compression context, so after a failure
    /// inside a header block the connection should be abandoned.
    pub async fn write_frame(&mut self, frame: &Frame) -> Result<(), SpdyError> {
        self.buffer.clear();
        encode_frame(frame, &mut self.headers, &mut self.buffer)?;
        let io_error = |source| SpdyError::Io {
            action: "writing a frame",
            source,
        };
        self.io.write_all(&self.buffer).await.map_err(io_error)?;
        self.io.flush().await.map_err(io_error)
    }

    /// Shuts the underlying writer down (TCP FIN).
    pub async fn shutdown(&mut self) -> Result<(), SpdyError> {
        self.io.shutdown().await.map_err(|source| SpdyError::Io {
            action: "shutting the connection down",
            source,
        })
    }
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn flag(set: bool, flag: u8) -> u8 {
    if set {
        flag
    } else {
        0
    }
}

fn wire_stream_id(frame: &'static str, stream_id: u32) -> Result<u32, SpdyError> {
    if stream_id == 0 || stream_id > STREAM_ID_MASK {
        return Err(SpdyError::Unencodable {
            frame,
            reason: "stream id must be 1 to 2^31-1",
        });
    }
    Ok(stream_id)
}

fn encode_frame(
    frame: &Frame,
    compressor: &mut HeaderCompressor,
    out: &mut Vec<u8>,
) -> Result<(), SpdyError> {
    let name = frame.kind();
    let unencodable = |reason| SpdyError::Unencodable {
        frame: name,
        reason,
    };
    let begin_control = |out: &mut Vec<u8>, kind: u16, flags: u8| {
        put_u32(
            out,
            CONTROL_BIT | u32::from(SPDY_VERSION) << 16 | u32::from(kind),
        );
        // The length is filled in once the payload is known.
        put_u32(out, u32::from(flags) << 24);
    };
    match frame {
        Frame::Data {
            stream_id,
            fin,
            data,
        } => {
            let stream_id = wire_stream_id(name, *stream_id)?;
            if data.len() > MAX_FRAME_PAYLOAD {
                return Err(SpdyError::FrameTooLarge {
                    frame: name,
                    length: data.len(),
                    limit: MAX_FRAME_PAYLOAD,
                });
            }
            put_u32(out, stream_id);
            put_u32(
                out,
                u32::from(flag(*fin, FLAG_FIN)) << 24 | data.len() as u32,
            );
            out.extend_from_slice(data);
            return Ok(());
        }
        Frame::SynStream {
            stream_id,
            associated_stream_id,
            priority,
            slot,
            fin,
            unidirectional,
            headers,
        } => {
            let stream_id = wire_stream_id(name, *stream_id)?;
            if *associated_stream_id > STREAM_ID_MASK {
                return Err(unencodable("associated stream id exceeds 31 bits"));
            }
            if *priority > 7 {
                return Err(unencodable("priority must be 0 to 7"));
            }
            let flags = flag(*fin, FLAG_FIN) | flag(*unidirectional, FLAG_UNIDIRECTIONAL);
            begin_control(out, TYPE_SYN_STREAM, flags);
            put_u32(out, stream_id);
            put_u32(out, *associated_stream_id);
            out.push(priority << 5);
            out.push(*slot);
            compressor.compress(headers, out)?;
        }
        Frame::SynReply {
            stream_id,
            fin,
            headers,
        } => {
            let stream_id = wire_stream_id(name, *stream_id)?;
            begin_control(out, TYPE_SYN_REPLY, flag(*fin, FLAG_FIN));
            put_u32(out, stream_id);
            compressor.compress(headers, out)?;
        }
        Frame::Headers {
            stream_id,
            fin,
            headers,
        } => {
            let stream_id = wire_stream_id(name, *stream_id)?;
            begin_control(out, TYPE_HEADERS, flag(*fin, FLAG_FIN));
            put_u32(out, stream_id);
            compressor.compress(headers, out)?;
        }
        Frame::RstStream { stream_id, status } => {
            let stream_id = wire_stream_id(name, *stream_id)?;
            if status.0 == 0 {
                return Err(unencodable("status 0 is not a status"));
            }
            begin_control(out, TYPE_RST_STREAM, 0);
            put_u32(out, stream_id);
            put_u32(out, status.0);
        }
        Frame::Settings {
            clear_persisted,
            entries,
        } => {
            if entries.len() > (MAX_FRAME_PAYLOAD - 4) / 8 {
                return Err(unencodable("too many entries"));
            }
            begin_control(
                out,
                TYPE_SETTINGS,
                flag(*clear_persisted, FLAG_SETTINGS_CLEAR),
            );
            put_u32(out, entries.len() as u32);
            for entry in entries {
                if entry.id > LENGTH_MASK {
                    return Err(unencodable("setting id exceeds 24 bits"));
                }
                put_u32(out, u32::from(entry.flags) << 24 | entry.id);
                put_u32(out, entry.value);
            }
        }
        Frame::Ping { id } => {
            if *id == 0 {
                // spdystream treats a PING with id 0 as a protocol error.
                return Err(unencodable("ping id 0"));
            }
            begin_control(out, TYPE_PING, 0);
            put_u32(out, *id);
        }
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            if *last_good_stream_id > STREAM_ID_MASK {
                return Err(unencodable("stream id exceeds 31 bits"));
            }
            begin_control(out, TYPE_GOAWAY, 0);
            put_u32(out, *last_good_stream_id);
            put_u32(out, status.0);
        }
        Frame::WindowUpdate {
            stream_id,
            delta_window_size,
        } => {
            if *stream_id > STREAM_ID_MASK {
                return Err(unencodable("stream id exceeds 31 bits"));
            }
            if *delta_window_size == 0 || *delta_window_size > STREAM_ID_MASK {
                return Err(unencodable("window delta must be 1 to 2^31-1"));
            }
            begin_control(out, TYPE_WINDOW_UPDATE, 0);
            put_u32(out, *stream_id);
            put_u32(out, *delta_window_size);
        }
    }
    let length = out.len() - 8;
    if length > MAX_FRAME_PAYLOAD {
        return Err(SpdyError::FrameTooLarge {
            frame: name,
            length,
            limit: MAX_FRAME_PAYLOAD,
        });
    }
    let flags_and_length = u32::from(out[4]) << 24 | length as u32;
    out[4..8].copy_from_slice(&flags_and_length.to_be_bytes());
    Ok(())
}

/// Tunables of a [`Connection`]; the defaults suit Kubernetes streaming.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Bytes of a stream's incoming DATA held for its reader before the connection stops
    /// reading from the peer (a single frame is always taken when the buffer is empty).
    pub stream_receive_buffer: usize,
    /// How long a stream with a full receive buffer may go without its reader taking anything
    /// before the stream is reset so the others can go on.
    pub receive_stall_timeout: Duration,
    /// Bytes a stream's writer may have queued but not yet written before it waits.
    pub stream_send_buffer: usize,
    /// How long [`Connection::close`] waits for queued frames and its GOAWAY to be written.
    pub close_timeout: Duration,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            stream_receive_buffer: 256 * 1024,
            receive_stall_timeout: Duration::from_secs(60),
            stream_send_buffer: 256 * 1024,
            close_timeout: Duration::from_secs(10),
        }
    }
}

/// Peer-opened streams waiting for the application to take them; more are refused.
const ACCEPT_BACKLOG: usize = 32;
/// Streams a peer may have open at once; more are refused (exec opens five).
const MAX_CONCURRENT_STREAMS: usize = 1024;
/// Control frames queued but not written beyond which the reader task stops reading: a peer
/// that floods PINGs or SYN_STREAMs without reading our answers meets back-pressure.
const CONTROL_BACKLOG_LIMIT: usize = 1024;
/// How long the writer task gives the transport to shut down once the connection has ended.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something did, its state is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn wake(waker: &mut Option<Waker>) {
    if let Some(waker) = waker.take() {
        waker.wake();
    }
}

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Client,
    Server,
}

impl Role {
    /// The first id of the streams and pings this side starts: odd for the client, even for
    /// the server.
    fn first_id(self) -> u32 {
        match self {
            Self::Client => 1,
            Self::Server => 2,
        }
    }

    fn started(self, id: u32) -> bool {
        (id % 2 == 1) == (self == Self::Client)
    }
}

/// A SPDY connection: streams multiplexed over one transport. Cheap to clone; every clone
/// drives the same connection. It lives until [`close`](Self::close), the peer's closing or
/// a transport or protocol error; dropping the handles does not end it.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

impl Connection {
    /// Serves the server side of an upgraded connection; the receiver yields each stream the
    /// peer opens, already accepted, and ends when the connection does. Must be called
    /// within a Tokio runtime.
    pub fn server<T>(io: T) -> (Self, mpsc::Receiver<Stream>)
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Self::server_with_config(io, ConnectionConfig::default())
    }

    pub fn server_with_config<T>(io: T, config: ConnectionConfig) -> (Self, mpsc::Receiver<Stream>)
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (accept, accepted) = mpsc::channel(ACCEPT_BACKLOG);
        (
            Self::start(io, Role::Server, config, Some(accept)),
            accepted,
        )
    }

    /// Drives the client side of an upgraded connection: open streams with
    /// [`open_stream`](Self::open_stream); streams the server opens are refused. Must be
    /// called within a Tokio runtime.
    pub fn client<T>(io: T) -> Self
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Self::client_with_config(io, ConnectionConfig::default())
    }

    pub fn client_with_config<T>(io: T, config: ConnectionConfig) -> Self
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Self::start(io, Role::Client, config, None)
    }

    fn start<T>(
        io: T,
        role: Role,
        config: ConnectionConfig,
        accept: Option<mpsc::Sender<Stream>>,
    ) -> Self
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (read_half, write_half) = tokio::io::split(io);
        let (outgoing, outgoing_queue) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            role,
            config,
            outgoing,
            control_backlog: AtomicUsize::new(0),
            control_drained: Notify::new(),
            state: Mutex::new(ConnState {
                streams: HashMap::new(),
                next_stream_id: role.first_id(),
                last_peer_stream_id: 0,
                next_ping_id: role.first_id(),
                pings: HashMap::new(),
                sent_goaway: false,
                received_goaway: false,
                terminated: false,
            }),
            terminated: watch::channel(false).0,
        });
        tokio::spawn(run_reader(
            Arc::clone(&shared),
            FrameReader::new(read_half),
            accept,
        ));
        tokio::spawn(run_writer(
            Arc::clone(&shared),
            FrameWriter::new(write_half),
            outgoing_queue,
        ));
        Self { shared }
    }

    /// Opens a stream with `headers` and waits for the peer's SYN_REPLY. If this future is
    /// dropped before the reply, the stream is reset.
    pub async fn open_stream(&self, headers: Headers) -> Result<Stream, SpdyError> {
        let (reply, replied) = oneshot::channel();
        let stream = {
            let mut state = self.shared.state();
            if state.terminated {
                return Err(SpdyError::ConnectionClosed);
            }
            if state.sent_goaway || state.received_goaway {
                return Err(SpdyError::GoneAway);
            }
            let stream_id = state.next_stream_id;
            if stream_id > STREAM_ID_MASK {
                return Err(SpdyError::StreamIdsExhausted);
            }
            state.next_stream_id += 2;
            let stream = StreamShared::new(stream_id, Arc::clone(&self.shared), Some(reply));
            // Queued under the lock: stream ids must reach the wire in increasing order.
            self.shared.send_control(Frame::SynStream {
                stream_id,
                associated_stream_id: 0,
                priority: 0,
                slot: 0,
                fin: false,
                unidirectional: false,
                headers: headers.clone(),
            })?;
            state.streams.insert(stream_id, Arc::clone(&stream));
            stream
        };
        let unanswered = ResetOnDrop(Some(Arc::clone(&stream)));
        let outcome = replied.await;
        unanswered.disarm();
        match outcome {
            Ok(Ok(())) => Ok(Stream::new(stream, headers)),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(SpdyError::ConnectionClosed),
        }
    }

    /// Sends a PING and waits for the peer's echo; returns the round-trip time.
    pub async fn ping(&self) -> Result<Duration, SpdyError> {
        let (echo, echoed) = oneshot::channel();
        let id = {
            let mut state = self.shared.state();
            if state.terminated {
                return Err(SpdyError::ConnectionClosed);
            }
            let id = state.next_ping_id;
            state.next_ping_id = if id >= STREAM_ID_MASK - 1 {
                self.shared.role.first_id()
            } else {
                id + 2
            };
            state.pings.insert(id, echo);
            id
        };
        let _waiting = ForgetPingOnDrop {
            shared: &self.shared,
            id,
        };
        let started = Instant::now();
        self.shared.send_control(Frame::Ping { id })?;
        echoed.await.map_err(|_| SpdyError::ConnectionClosed)?;
        Ok(started.elapsed())
    }

    /// Ends the connection: sends GOAWAY after every frame already queued, then closes the
    /// transport. Streams still open fail with [`SpdyError::ConnectionClosed`]. Gives up
    /// waiting for the writes after [`ConnectionConfig::close_timeout`].
    pub async fn close(&self) {
        {
            let mut state = self.shared.state();
            if !state.terminated && !state.sent_goaway {
                state.sent_goaway = true;
                let goaway = Frame::GoAway {
                    last_good_stream_id: state.last_peer_stream_id,
                    status: GoAwayStatus::OK,
                };
                // Fails only if the connection is already ending, which is the goal.
                let _ = self.shared.send_control(goaway);
            }
        }
        let timeout = self.shared.config.close_timeout;
        if tokio::time::timeout(timeout, self.closed()).await.is_err() {
            tracing::info!(
                ?timeout,
                "SPDY connection did not finish closing; dropping it"
            );
            self.shared.terminate();
        }
    }

    /// Resolves once the connection has ended, for whatever reason.
    pub async fn closed(&self) {
        until_terminated(&mut self.shared.terminated.subscribe()).await;
    }
}

/// Resets a stream opened by [`Connection::open_stream`] whose caller stopped waiting.
struct ResetOnDrop(Option<Arc<StreamShared>>);

impl ResetOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        if let Some(stream) = self.0.take() {
            stream.reset(RstStatus::CANCEL, StreamEnd::Cancelled);
        }
    }
}

/// Removes the waiter of a ping whose caller stopped waiting.
struct ForgetPingOnDrop<'a> {
    shared: &'a Shared,
    id: u32,
}

impl Drop for ForgetPingOnDrop<'_> {
    fn drop(&mut self) {
        self.shared.state().pings.remove(&self.id);
    }
}

async fn until_terminated(terminated: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, and it lives as long as the connection's tasks.
    let _ = terminated.wait_for(|done| *done).await;
}

/// What the connection's tasks and handles share.
struct Shared {
    role: Role,
    config: ConnectionConfig,
    /// Frames for the writer task, in wire order. The writer task owns the receiver and
    /// closes it when the connection ends.
    outgoing: mpsc::UnboundedSender<Outgoing>,
    /// Control frames in `outgoing` not yet written (see [`CONTROL_BACKLOG_LIMIT`]).
    control_backlog: AtomicUsize,
    /// Notified when `control_backlog` falls back to the limit.
    control_drained: Notify,
    state: Mutex<ConnState>,
    /// Becomes true, once, when the connection ends; [`Shared::terminate`] sets it.
    terminated: watch::Sender<bool>,
}

struct ConnState {
    /// Streams that may still see frames from the peer; a stream leaves once both directions
    /// are finished or it is reset.
    streams: HashMap<u32, Arc<StreamShared>>,
    next_stream_id: u32,
    /// The highest stream id the peer has opened; its streams must come in increasing order.
    last_peer_stream_id: u32,
    next_ping_id: u32,
    /// Our pings awaiting their echo, by id.
    pings: HashMap<u32, oneshot::Sender<()>>,
    sent_goaway: bool,
    received_goaway: bool,
    terminated: bool,
}

/// A frame waiting for the writer task.
enum Outgoing {
    Control(Frame),
    /// A stream's DATA; its `queued_*` counts include it until it is written or dropped.
    Data {
        stream: Arc<StreamShared>,
        data: Bytes,
        fin: bool,
    },
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, ConnState> {
        lock(&self.state)
    }

    fn stream(&self, stream_id: u32) -> Option<Arc<StreamShared>> {
        self.state().streams.get(&stream_id).cloned()
    }

    fn forget(&self, stream_id: u32) {
        self.state().streams.remove(&stream_id);
    }

    fn send_control(&self, frame: Frame) -> Result<(), SpdyError> {
        self.control_backlog.fetch_add(1, Ordering::AcqRel);
        self.outgoing
            .send(Outgoing::Control(frame))
            .map_err(|_| SpdyError::ConnectionClosed)
    }

    fn control_written(&self) {
        if self.control_backlog.fetch_sub(1, Ordering::AcqRel) == CONTROL_BACKLOG_LIMIT + 1 {
            self.control_drained.notify_waiters();
        }
    }

    async fn control_room(&self) {
        loop {
            let mut drained = pin!(self.control_drained.notified());
            // Registered before the check, so a drain in between is not missed.
            drained.as_mut().enable();
            if self.control_backlog.load(Ordering::Acquire) <= CONTROL_BACKLOG_LIMIT {
                return;
            }
            drained.await;
        }
    }

    /// Ends the connection: every stream and waiter fails, and both tasks stop.
    fn terminate(&self) {
        let (streams, pings) = {
            let mut state = self.state();
            if state.terminated {
                return;
            }
            state.terminated = true;
            (
                std::mem::take(&mut state.streams),
                std::mem::take(&mut state.pings),
            )
        };
        for stream in streams.into_values() {
            stream.connection_lost();
        }
        // Dropping the senders fails the waiting pings.
        drop(pings);
        self.terminated.send_replace(true);
    }

    fn on_syn_stream(
        self: &Arc<Self>,
        stream_id: u32,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
        accept: Option<&mpsc::Sender<Stream>>,
    ) -> Result<(), SpdyError> {
        let mut state = self.state();
        if state.terminated {
            return Ok(());
        }
        if self.role.started(stream_id) || stream_id <= state.last_peer_stream_id {
            drop(state);
            tracing::debug!(
                stream_id,
                "refusing a SYN_STREAM with an out-of-sequence id"
            );
            return self.send_control(Frame::RstStream {
                stream_id,
                status: RstStatus::PROTOCOL_ERROR,
            });
        }
        state.last_peer_stream_id = stream_id;
        if state.sent_goaway {
            // After our GOAWAY new streams are ignored (SPDY/3 section 2.6.6).
            return Ok(());
        }
        let permit = match accept {
            Some(accept) if state.streams.len() < MAX_CONCURRENT_STREAMS => {
                accept.try_reserve().ok()
            }
            _ => None,
        };
        let Some(permit) = permit else {
            drop(state);
            tracing::debug!(stream_id, "refusing a stream nobody is accepting");
            return self.send_control(Frame::RstStream {
                stream_id,
                status: RstStatus::REFUSED_STREAM,
            });
        };
        let stream = StreamShared::new(stream_id, Arc::clone(self), None);
        let fully_closed = {
            let mut stream_state = stream.state();
            if fin {
                stream_state.recv_end = Some(StreamEnd::Fin);
            }
            if unidirectional {
                stream_state.send_end = Some(StreamEnd::Fin);
            }
            stream_state.is_fully_closed()
        };
        if !fully_closed {
            state.streams.insert(stream_id, Arc::clone(&stream));
        }
        // Queued before the application sees the stream, so it precedes any DATA we send on
        // it: spdystream drops DATA on a stream it has no reply for.
        self.send_control(Frame::SynReply {
            stream_id,
            fin: false,
            headers: Headers::new(),
        })?;
        drop(state);
        permit.send(Stream::new(stream, headers));
        Ok(())
    }

    fn on_syn_reply(&self, stream_id: u32, fin: bool) {
        let Some(stream) = self.stream(stream_id) else {
            return;
        };
        let reply = stream.state().reply.take();
        match reply {
            Some(reply) => {
                // The opener may have stopped waiting; ResetOnDrop handles that.
                let _ = reply.send(Ok(()));
            }
            None => tracing::debug!(stream_id, "ignoring an unexpected SYN_REPLY"),
        }
        if fin {
            stream.remote_fin();
        }
    }

    fn on_ping(&self, id: u32) -> Result<(), SpdyError> {
        if !self.role.started(id) {
            return self.send_control(Frame::Ping { id });
        }
        if let Some(echo) = self.state().pings.remove(&id) {
            // The pinger may have stopped waiting.
            let _ = echo.send(());
        }
        Ok(())
    }

    fn on_goaway(&self, last_good_stream_id: u32, status: GoAwayStatus) {
        tracing::debug!(
            last_good_stream_id,
            status = status.0,
            "SPDY peer sent GOAWAY"
        );
        let unprocessed: Vec<_> = {
            let mut state = self.state();
            state.received_goaway = true;
            state
                .streams
                .iter()
                .filter(|(id, _)| self.role.started(**id) && **id > last_good_stream_id)
                .map(|(_, stream)| Arc::clone(stream))
                .collect()
        };
        // Streams we opened after the peer's last good one will never be served.
        for stream in unprocessed {
            stream.abort(StreamEnd::GoneAway);
        }
    }

    async fn on_data(&self, stream_id: u32, fin: bool, data: Bytes) {
        let Some(stream) = self.stream(stream_id) else {
            // spdystream ignores DATA for streams it does not know, and so do we: a stream
            // just reset may still have frames in flight.
            return;
        };
        let mut pending = data;
        loop {
            pending = match stream.offer(pending, self.config.stream_receive_buffer) {
                None => break,
                Some(refused) => refused,
            };
            let progress = stream.room.notified();
            if tokio::time::timeout(self.config.receive_stall_timeout, progress)
                .await
                .is_err()
            {
                tracing::info!(
                    stream_id,
                    "SPDY stream's reader stalled with a full buffer; resetting the stream"
                );
                stream.reset(RstStatus::CANCEL, StreamEnd::ReceiveStalled);
                return;
            }
        }
        if fin {
            stream.remote_fin();
        }
    }
}

async fn run_reader<R: AsyncRead + Unpin>(
    shared: Arc<Shared>,
    mut frames: FrameReader<R>,
    accept: Option<mpsc::Sender<Stream>>,
) {
    let mut terminated = shared.terminated.subscribe();
    tokio::select! {
        outcome = read_frames(&shared, &mut frames, accept.as_ref()) => match outcome {
            Ok(()) => tracing::debug!("SPDY peer closed the connection"),
            Err(err) => tracing::info!("SPDY connection failed: {err}"),
        },
        () = until_terminated(&mut terminated) => {}
    }
    shared.terminate();
}

async fn read_frames<R: AsyncRead + Unpin>(
    shared: &Arc<Shared>,
    frames: &mut FrameReader<R>,
    accept: Option<&mpsc::Sender<Stream>>,
) -> Result<(), SpdyError> {
    loop {
        shared.control_room().await;
        let Some(frame) = frames.read_frame().await? else {
            return Ok(());
        };
        match frame {
            Frame::SynStream {
                stream_id,
                fin,
                unidirectional,
                headers,
                ..
            } => shared.on_syn_stream(stream_id, fin, unidirectional, headers, accept)?,
            Frame::SynReply { stream_id, fin, .. } => shared.on_syn_reply(stream_id, fin),
            Frame::RstStream { stream_id, status } => {
                if let Some(stream) = shared.stream(stream_id) {
                    stream.abort(StreamEnd::PeerReset(status));
                }
            }
            Frame::Ping { id } => shared.on_ping(id)?,
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => shared.on_goaway(last_good_stream_id, status),
            Frame::Headers {
                stream_id,
                fin: true,
                ..
            } => {
                if let Some(stream) = shared.stream(stream_id) {
                    stream.remote_fin();
                }
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => shared.on_data(stream_id, fin, data).await,
            // No flow control (see the module comment); HEADERS without FIN carry nothing
            // Kubernetes uses.
            Frame::Settings { .. } | Frame::WindowUpdate { .. } | Frame::Headers { .. } => {}
        }
    }
}

async fn run_writer<W: AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    mut frames: FrameWriter<W>,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut terminated = shared.terminated.subscribe();
    tokio::select! {
        outcome = write_frames(&shared, &mut frames, &mut outgoing) => match outcome {
            Ok(()) => tracing::debug!("SPDY connection closed after GOAWAY"),
            Err(err) => tracing::info!("SPDY connection failed: {err}"),
        },
        () = until_terminated(&mut terminated) => {}
    }
    shared.terminate();
    // What is still queued will never be written: fail the streams flushing it.
    outgoing.close();
    while let Ok(item) = outgoing.try_recv() {
        if let Outgoing::Data { stream, .. } = item {
            stream.connection_lost();
        }
    }
    match tokio::time::timeout(SHUTDOWN_GRACE, frames.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!("{err}"),
        Err(_) => tracing::debug!("SPDY transport did not shut down in {SHUTDOWN_GRACE:?}"),
    }
}

/// Writes queued frames until the GOAWAY of [`Connection::close`] is out.
async fn write_frames<W: AsyncWrite + Unpin>(
    shared: &Shared,
    frames: &mut FrameWriter<W>,
    outgoing: &mut mpsc::UnboundedReceiver<Outgoing>,
) -> Result<(), SpdyError> {
    while let Some(item) = outgoing.recv().await {
        match item {
            Outgoing::Control(frame) => {
                let written = frames.write_frame(&frame).await;
                shared.control_written();
                written?;
                // We send GOAWAY only to close, and spdystream reads nothing after it.
                if matches!(frame, Frame::GoAway { .. }) {
                    return Ok(());
                }
            }
            Outgoing::Data { stream, data, fin } => {
                let len = data.len();
                let written = if stream.send_aborted() {
                    Ok(())
                } else {
                    let frame = Frame::Data {
                        stream_id: stream.id,
                        fin,
                        data,
                    };
                    frames.write_frame(&frame).await
                };
                stream.frame_written(len);
                written?;
            }
        }
    }
    Ok(())
}

/// How a direction of a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamEnd {
    /// Cleanly: FIN sent or received.
    Fin,
    PeerReset(RstStatus),
    /// [`Stream::reset`] or an abandoned [`Connection::open_stream`].
    Cancelled,
    ReceiveStalled,
    /// The peer's GOAWAY left this stream of ours unprocessed.
    GoneAway,
    ConnectionClosed,
}

impl StreamEnd {
    fn error(self, stream_id: u32) -> SpdyError {
        match self {
            Self::Fin => SpdyError::WriteAfterFin { stream_id },
            Self::PeerReset(status) => SpdyError::StreamReset { stream_id, status },
            Self::Cancelled => SpdyError::StreamCancelled { stream_id },
            Self::ReceiveStalled => SpdyError::ReceiveStalled { stream_id },
            Self::GoneAway => SpdyError::GoneAway,
            Self::ConnectionClosed => SpdyError::ConnectionClosed,
        }
    }

    fn io_error(self, stream_id: u32) -> io::Error {
        let kind = match self {
            Self::Fin => io::ErrorKind::BrokenPipe,
            Self::PeerReset(_) => io::ErrorKind::ConnectionReset,
            Self::Cancelled | Self::ConnectionClosed => io::ErrorKind::ConnectionAborted,
            Self::ReceiveStalled => io::ErrorKind::TimedOut,
            Self::GoneAway => io::ErrorKind::ConnectionRefused,
        };
        io::Error::new(kind, self.error(stream_id))
    }
}

/// A stream's state, shared by its halves, the connection's table and queued frames.
struct StreamShared {
    id: u32,
    conn: Arc<Shared>,
    state: Mutex<StreamState>,
    /// Notified when the reader takes data (or goes away); the reader task waits on it while
    /// the buffer is full.
    room: Notify,
}

struct StreamState {
    /// DATA received and not yet read.
    received: VecDeque<Bytes>,
    received_bytes: usize,
    /// Set when no more DATA will arrive; after `Fin` the reader drains `received` first.
    recv_end: Option<StreamEnd>,
    read_waker: Option<Waker>,
    /// The reader half was dropped: incoming DATA is discarded.
    reader_gone: bool,
    /// Set when nothing more may be written; anything but `Fin` also discards queued DATA.
    send_end: Option<StreamEnd>,
    /// DATA bytes and frames (including an empty FIN) queued and not yet written.
    queued_bytes: usize,
    queued_frames: usize,
    write_waker: Option<Waker>,
    connection_lost: bool,
    /// For a stream we opened: where the SYN_REPLY (or the reason it will never come) goes.
    reply: Option<oneshot::Sender<Result<(), SpdyError>>>,
}

impl StreamState {
    fn is_fully_closed(&self) -> bool {
        self.recv_end == Some(StreamEnd::Fin) && self.send_end == Some(StreamEnd::Fin)
    }

    fn is_reset(&self) -> bool {
        let broken = |end: Option<StreamEnd>| end.is_some_and(|end| end != StreamEnd::Fin);
        broken(self.recv_end) || broken(self.send_end)
    }
}

impl StreamShared {
    fn new(
        id: u32,
        conn: Arc<Shared>,
        reply: Option<oneshot::Sender<Result<(), SpdyError>>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            conn,
            state: Mutex::new(StreamState {
                received: VecDeque::new(),
                received_bytes: 0,
                recv_end: None,
                read_waker: None,
                reader_gone: false,
                send_end: None,
                queued_bytes: 0,
                queued_frames: 0,
                write_waker: None,
                connection_lost: false,
                reply,
            }),
            room: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, StreamState> {
        lock(&self.state)
    }

    /// Ends both directions for `why`, dropping unread and unsent data (but keeping data
    /// received before the peer's FIN). Returns whether the stream was live, and so whether
    /// the peer needs a RST_STREAM.
    fn abort(&self, why: StreamEnd) -> bool {
        let live = {
            let mut state = self.state();
            let live = !state.is_reset() && !state.is_fully_closed();
            if live {
                if state.recv_end != Some(StreamEnd::Fin) {
                    state.recv_end = Some(why);
                    state.received.clear();
                    state.received_bytes = 0;
                }
                state.send_end = Some(why);
                if let Some(reply) = state.reply.take() {
                    let _ = reply.send(Err(why.error(self.id)));
                }
                wake(&mut state.read_waker);
                wake(&mut state.write_waker);
            }
            live
        };
        self.room.notify_one();
        self.conn.forget(self.id);
        live
    }

    /// Aborts the stream on our side and tells the peer with RST_STREAM `status`.
    fn reset(&self, status: RstStatus, why: StreamEnd) {
        if self.abort(why) {
            // Fails only once the connection is gone, and then the peer needs no telling.
            let _ = self.conn.send_control(Frame::RstStream {
                stream_id: self.id,
                status,
            });
        }
    }

    fn connection_lost(&self) {
        {
            let mut state = self.state();
            state.connection_lost = true;
            state.recv_end.get_or_insert(StreamEnd::ConnectionClosed);
            state.send_end.get_or_insert(StreamEnd::ConnectionClosed);
            if let Some(reply) = state.reply.take() {
                let _ = reply.send(Err(SpdyError::ConnectionClosed));
            }
            wake(&mut state.read_waker);
            wake(&mut state.write_waker);
        }
        self.room.notify_one();
    }

    fn remote_fin(&self) {
        let fully_closed = {
            let mut state = self.state();
            if state.recv_end.is_none() {
                state.recv_end = Some(StreamEnd::Fin);
                wake(&mut state.read_waker);
            }
            state.is_fully_closed()
        };
        if fully_closed {
            self.conn.forget(self.id);
        }
    }

    /// Buffers `data` for the reader, or hands it back if the buffer is full.
    fn offer(&self, data: Bytes, limit: usize) -> Option<Bytes> {
        if data.is_empty() {
            return None;
        }
        let mut state = self.state();
        if state.recv_end.is_some() || state.reader_gone {
            // Nobody will read it: the stream is finished, reset or abandoned.
            return None;
        }
        if state.received_bytes > 0 && state.received_bytes + data.len() > limit {
            return Some(data);
        }
        state.received_bytes += data.len();
        state.received.push_back(data);
        wake(&mut state.read_waker);
        None
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut state = self.state();
        if let Some(chunk) = state.received.front_mut() {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            chunk.advance(n);
            if chunk.is_empty() {
                state.received.pop_front();
            }
            state.received_bytes -= n;
            drop(state);
            self.room.notify_one();
            return Poll::Ready(Ok(()));
        }
        match state.recv_end {
            Some(StreamEnd::Fin) => Poll::Ready(Ok(())),
            Some(end) => Poll::Ready(Err(end.io_error(self.id))),
            None => {
                state.read_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn reader_dropped(&self) {
        {
            let mut state = self.state();
            state.reader_gone = true;
            state.received.clear();
            state.received_bytes = 0;
        }
        self.room.notify_one();
    }

    fn poll_write(self: &Arc<Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut state = self.state();
        if let Some(end) = state.send_end {
            return Poll::Ready(Err(end.io_error(self.id)));
        }
        if state.queued_bytes >= self.conn.config.stream_send_buffer {
            state.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let len = buf.len().min(MAX_DATA_FRAME);
        state.queued_bytes += len;
        state.queued_frames += 1;
        let item = Outgoing::Data {
            stream: Arc::clone(self),
            data: Bytes::copy_from_slice(&buf[..len]),
            fin: false,
        };
        if self.conn.outgoing.send(item).is_err() {
            state.queued_bytes -= len;
            state.queued_frames -= 1;
            state.send_end = Some(StreamEnd::ConnectionClosed);
            return Poll::Ready(Err(StreamEnd::ConnectionClosed.io_error(self.id)));
        }
        Poll::Ready(Ok(len))
    }

    /// Ready once everything queued has been written.
    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.state();
        if let Some(end) = state.send_end.filter(|end| *end != StreamEnd::Fin) {
            return Poll::Ready(Err(end.io_error(self.id)));
        }
        if state.queued_frames == 0 {
            return Poll::Ready(Ok(()));
        }
        if state.connection_lost {
            return Poll::Ready(Err(StreamEnd::ConnectionClosed.io_error(self.id)));
        }
        state.write_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Queues our FIN (an empty DATA frame with FLAG_FIN) unless the stream already ended.
    fn finish_sending(self: &Arc<Self>) -> io::Result<()> {
        let fully_closed = {
            let mut state = self.state();
            match state.send_end {
                Some(StreamEnd::Fin) => return Ok(()),
                Some(end) => return Err(end.io_error(self.id)),
                None => {}
            }
            let fin = Outgoing::Data {
                stream: Arc::clone(self),
                data: Bytes::new(),
                fin: true,
            };
            if self.conn.outgoing.send(fin).is_err() {
                state.send_end = Some(StreamEnd::ConnectionClosed);
                return Err(StreamEnd::ConnectionClosed.io_error(self.id));
            }
            state.queued_frames += 1;
            state.send_end = Some(StreamEnd::Fin);
            state.is_fully_closed()
        };
        if fully_closed {
            self.conn.forget(self.id);
        }
        Ok(())
    }

    /// Whether queued DATA should be dropped rather than written: the stream was reset.
    fn send_aborted(&self) -> bool {
        self.state()
            .send_end
            .is_some_and(|end| end != StreamEnd::Fin)
    }

    /// Called by the writer task for each DATA frame it took off the queue.
    fn frame_written(&self, len: usize) {
        let mut state = self.state();
        state.queued_bytes -= len;
        state.queued_frames -= 1;
        wake(&mut state.write_waker);
    }
}

/// A stream of a [`Connection`]: the peer's DATA to read and ours to write. Reading and
/// writing work through the [`AsyncRead`] and [`AsyncWrite`] impls, or through the halves of
/// [`split`](Self::split) from different tasks.
pub struct Stream {
    id: u32,
    headers: Headers,
    reader: StreamReader,
    writer: StreamWriter,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl Stream {
    fn new(shared: Arc<StreamShared>, headers: Headers) -> Self {
        Self {
            id: shared.id,
            headers,
            reader: StreamReader {
                stream: Arc::clone(&shared),
            },
            writer: StreamWriter { stream: shared },
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// The headers of the SYN_STREAM that opened the stream.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first value of header `name` (names are lowercase; `name` is matched ignoring
    /// case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn split(self) -> (StreamReader, StreamWriter) {
        (self.reader, self.writer)
    }

    /// The reading half; the writing half is dropped, which sends our FIN.
    pub fn into_reader(self) -> StreamReader {
        self.reader
    }

    /// The writing half; the reading half is dropped, so the peer's DATA is discarded.
    pub fn into_writer(self) -> StreamWriter {
        self.writer
    }

    /// Aborts the stream in both directions (RST_STREAM CANCEL); unread and unsent data is
    /// dropped.
    pub fn reset(&self) {
        self.writer.reset();
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_shutdown(cx)
    }
}

/// The reading half of a [`Stream`]: the peer's DATA, then end of file at its FIN. After a
/// reset or the connection's end, reads fail: [`io::ErrorKind::ConnectionReset`] for the
/// peer's RST_STREAM, [`io::ErrorKind::ConnectionAborted`] for ours or a lost connection,
/// [`io::ErrorKind::TimedOut`] for a stall; the inner error is a [`SpdyError`].
pub struct StreamReader {
    stream: Arc<StreamShared>,
}

impl StreamReader {
    /// As [`Stream::reset`].
    pub fn reset(&self) {
        self.stream.reset(RstStatus::CANCEL, StreamEnd::Cancelled);
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.stream.poll_read(cx, buf)
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        self.stream.reader_dropped();
    }
}

/// The writing half of a [`Stream`]. Writes become DATA frames of at most
/// [`MAX_DATA_FRAME`] bytes; `flush` waits until they are on the transport; `shutdown` sends
/// FIN. Dropping it sends FIN too, unless the stream was reset.
pub struct StreamWriter {
    stream: Arc<StreamShared>,
}

impl StreamWriter {
    /// As [`Stream::reset`].
    pub fn reset(&self) {
        self.stream.reset(RstStatus::CANCEL, StreamEnd::Cancelled);
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.stream.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Err(err) = self.stream.finish_sending() {
            return Poll::Ready(Err(err));
        }
        self.stream.poll_flush(cx)
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        // A reset or closed stream has nothing to finish.
        let _ = self.stream.finish_sending();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    async fn encode(frames: &[Frame]) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut writer = FrameWriter::new(&mut wire);
        for frame in frames {
            writer.write_frame(frame).await.unwrap();
        }
        wire
    }

    async fn decode_all(wire: &[u8]) -> Result<Vec<Frame>, SpdyError> {
        let mut reader = FrameReader::new(wire);
        let mut frames = Vec::new();
        while let Some(frame) = reader.read_frame().await? {
            frames.push(frame);
        }
        Ok(frames)
    }

    async fn decode_one(wire: &[u8]) -> Result<Option<Frame>, SpdyError> {
        FrameReader::new(wire).read_frame().await
    }

    /// A control frame as it appears on the wire.
    fn control_frame(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        put_u32(&mut wire, CONTROL_BIT | 3 << 16 | u32::from(kind));
        put_u32(&mut wire, u32::from(flags) << 24 | payload.len() as u32);
        wire.extend_from_slice(payload);
        wire
    }

    /// An uncompressed header block laid out as spdystream lays it out.
    fn raw_block(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut block = Vec::new();
        put_u32(&mut block, entries.len() as u32);
        for (name, value) in entries {
            put_u32(&mut block, name.len() as u32);
            block.extend_from_slice(name);
            put_u32(&mut block, value.len() as u32);
            block.extend_from_slice(value);
        }
        block
    }

    /// Compresses `blocks` on one zlib context primed with `dictionary`, a sync flush after
    /// each, as spdystream's framer does.
    fn zlib_blocks(dictionary: &[u8], blocks: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut deflate = Compress::new(Compression::best(), true);
        deflate.set_dictionary(dictionary).unwrap();
        blocks
            .iter()
            .map(|block| {
                let mut out = Vec::with_capacity(block.len() + 1024);
                deflate
                    .compress_vec(block, &mut out, FlushCompress::Sync)
                    .unwrap();
                assert!(out.len() < out.capacity());
                out
            })
            .collect()
    }

    fn syn_stream_payload(stream_id: u32, compressed: &[u8]) -> Vec<u8> {
        let mut payload = Vec::new();
        put_u32(&mut payload, stream_id);
        put_u32(&mut payload, 0);
        payload.extend_from_slice(&[0, 0]);
        payload.extend_from_slice(compressed);
        payload
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        assert_eq!(HEADER_DICTIONARY.len(), 1423);
        let mut deflate = Compress::new(Compression::default(), true);
        let adler = deflate.set_dictionary(&HEADER_DICTIONARY).unwrap();
        assert_eq!(adler, HEADER_DICTIONARY_ID);
    }

    #[tokio::test]
    async fn every_frame_type_round_trips() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_stream_id: 0,
                priority: 3,
                slot: 0,
                fin: false,
                unidirectional: true,
                headers: headers(&[
                    ("streamtype", "error"),
                    ("x-multi", "a"),
                    ("x-multi", "b"),
                    ("empty", ""),
                ]),
            },
            Frame::SynReply {
                stream_id: 1,
                fin: true,
                headers: Headers::new(),
            },
            Frame::RstStream {
                stream_id: 5,
                status: RstStatus::CANCEL,
            },
            Frame::Settings {
                clear_persisted: true,
                entries: vec![
                    Setting {
                        flags: 1,
                        id: 7,
                        value: 65536,
                    },
                    Setting {
                        flags: 0,
                        id: 4,
                        value: 100,
                    },
                ],
            },
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_good_stream_id: 9,
                status: GoAwayStatus::PROTOCOL_ERROR,
            },
            Frame::Headers {
                stream_id: 11,
                fin: false,
                headers: headers(&[("port", "8080")]),
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta_window_size: 4096,
            },
            Frame::Data {
                stream_id: 15,
                fin: true,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: STREAM_ID_MASK,
                fin: false,
                data: Bytes::new(),
            },
        ];
        let wire = encode(&frames).await;
        assert_eq!(decode_all(&wire).await.unwrap(), frames);
    }

    #[tokio::test]
    async fn header_names_are_lowercased_and_values_grouped() {
        let sent = Frame::SynReply {
            stream_id: 3,
            fin: false,
            headers: headers(&[("StreamType", "data"), ("port", "1"), ("streamtype", "x")]),
        };
        let received = decode_all(&encode(&[sent]).await).await.unwrap();
        assert_eq!(
            received,
            vec![Frame::SynReply {
                stream_id: 3,
                fin: false,
                headers: headers(&[("streamtype", "data"), ("streamtype", "x"), ("port", "1")]),
            }]
        );
    }

    #[tokio::test]
    async fn header_blocks_share_one_context_per_direction() {
        let frame = |stream_id| Frame::SynStream {
            stream_id,
            associated_stream_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: headers(&[("streamtype", "stdout"), ("requestid", "0"), ("port", "80")]),
        };
        let frames = [frame(1), frame(3), frame(5)];
        let mut sizes = Vec::new();
        for frame in &frames {
            sizes.push(encode(std::slice::from_ref(frame)).await.len());
        }
        let wire = encode(&frames).await;
        assert_eq!(decode_all(&wire).await.unwrap(), frames);
        // The first block carries the zlib header and literal names; the later ones refer
        // back into the shared window and come out smaller.
        let first = sizes[0];
        let second_start = first;
        let second_len = u32::from_be_bytes([
            0,
            wire[second_start + 5],
            wire[second_start + 6],
            wire[second_start + 7],
        ]) as usize
            + 8;
        assert!(second_len < first, "{second_len} >= {first}");
        // Nor can the second block be read without the context the first one left.
        let second = &wire[second_start..second_start + second_len];
        assert!(decode_one(second).await.is_err());
    }

    #[tokio::test]
    async fn reads_header_blocks_from_an_independent_zlib() {
        // Made by C zlib 1.2.13 (Python's zlib module) the way spdystream makes them:
        // best compression, SPDY/3 dictionary, one context, a sync flush per block. The
        // first block holds `streamtype: error`; the second `port: 8080`, `streamtype:
        // data` and `x-multi: a NUL b`.
        let first: &[u8] = &[
            0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0xa6, 0x23, 0x46, 0x70, 0x3a, 0x2b, 0x29,
            0x4a, 0x4d, 0xcc, 0x85, 0x16, 0x25, 0xac, 0xa9, 0xa0, 0x80, 0x06, 0x00, 0x00, 0x00,
            0xff, 0xff,
        ];
        let second: &[u8] = &[
            0x02, 0xa5, 0x47, 0x48, 0xd1, 0x5c, 0x04, 0xce, 0x05, 0x16, 0x06, 0x16, 0x06, 0x18,
            0x4a, 0x41, 0xa5, 0x0e, 0x38, 0x53, 0x54, 0xe8, 0xe6, 0x96, 0xe6, 0x94, 0x64, 0x82,
            0x8b, 0x55, 0x86, 0x24, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
        ];
        let mut wire = control_frame(TYPE_SYN_STREAM, 0, &syn_stream_payload(1, first));
        let mut reply = Vec::new();
        put_u32(&mut reply, 1);
        reply.extend_from_slice(second);
        wire.extend(control_frame(TYPE_SYN_REPLY, FLAG_FIN, &reply));
        let frames = decode_all(&wire).await.unwrap();
        assert_eq!(
            frames,
            vec![
                Frame::SynStream {
                    stream_id: 1,
                    associated_stream_id: 0,
                    priority: 0,
                    slot: 0,
                    fin: false,
                    unidirectional: false,
                    headers: headers(&[("streamtype", "error")]),
                },
                Frame::SynReply {
                    stream_id: 1,
                    fin: true,
                    headers: headers(&[
                        ("port", "8080"),
                        ("streamtype", "data"),
                        ("x-multi", "a"),
                        ("x-multi", "b"),
                    ]),
                },
            ]
        );
    }

    #[tokio::test]
    async fn reads_header_blocks_compressed_with_the_dictionary() {
        let blocks = zlib_blocks(
            &HEADER_DICTIONARY,
            &[
                raw_block(&[(b"streamtype", b"stdin")]),
                raw_block(&[(b"streamtype", b"resize"), (b"x", b"1\x002\x00")]),
            ],
        );
        let mut wire = control_frame(
            TYPE_SYN_STREAM,
            FLAG_FIN,
            &syn_stream_payload(3, &blocks[0]),
        );
        let mut payload = Vec::new();
        put_u32(&mut payload, 3);
        payload.extend_from_slice(&blocks[1]);
        wire.extend(control_frame(TYPE_HEADERS, 0, &payload));
        let frames = decode_all(&wire).await.unwrap();
        assert!(matches!(
            &frames[0],
            Frame::SynStream { stream_id: 3, fin: true, headers, .. }
                if *headers == self::headers(&[("streamtype", "stdin")])
        ));
        assert_eq!(
            frames[1],
            Frame::Headers {
                stream_id: 3,
                fin: false,
                headers: headers(&[("streamtype", "resize"), ("x", "1"), ("x", "2"), ("x", "")]),
            }
        );
    }

    #[tokio::test]
    async fn malformed_input_is_an_error_not_a_panic() {
        // A clean end between frames is no error.
        assert!(decode_one(&[]).await.unwrap().is_none());
        // Cut inside the head, then inside the payload.
        assert!(matches!(
            decode_one(&[0x80, 0x03]).await,
            Err(SpdyError::Truncated { .. })
        ));
        let rst = control_frame(TYPE_RST_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 5]);
        assert!(matches!(
            decode_one(&rst[..12]).await,
            Err(SpdyError::Truncated { .. })
        ));
        // SPDY/2.
        let mut old = control_frame(TYPE_PING, 0, &[0, 0, 0, 1]);
        old[1] = 2;
        assert!(matches!(
            decode_one(&old).await,
            Err(SpdyError::UnsupportedVersion(2))
        ));
        // Fields that do not fit their frame.
        let cases: [(Vec<u8>, &str); 7] = [
            (
                control_frame(TYPE_RST_STREAM, 0, &[0, 0, 0, 1]),
                "short RST_STREAM",
            ),
            (
                control_frame(TYPE_RST_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 0]),
                "status 0",
            ),
            (
                control_frame(TYPE_RST_STREAM, 0, &[0, 0, 0, 0, 0, 0, 0, 5]),
                "stream 0",
            ),
            (
                control_frame(TYPE_PING, 0, &[0, 0, 0, 1, 0, 0, 0, 0]),
                "long PING",
            ),
            (
                control_frame(TYPE_GOAWAY, 0, &[0, 0, 0, 1]),
                "SPDY/2 GOAWAY",
            ),
            (
                control_frame(TYPE_SETTINGS, 0, &[0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1]),
                "count",
            ),
            (vec![0, 0, 0, 0, 0, 0, 0, 1, b'x'], "DATA on stream 0"),
        ];
        for (wire, case) in cases {
            let outcome = decode_one(&wire).await;
            assert!(
                matches!(outcome, Err(SpdyError::Malformed { .. })),
                "{case}: {outcome:?}"
            );
        }
        // A control frame claiming 2 MiB is refused before anything is buffered.
        let mut huge = control_frame(TYPE_SYN_STREAM, 0, &[]);
        huge[5..8].copy_from_slice(&[0x20, 0, 0]);
        assert!(matches!(
            decode_one(&huge).await,
            Err(SpdyError::FrameTooLarge { .. })
        ));
        // A header block that is not zlib data.
        let garbage = control_frame(
            TYPE_SYN_STREAM,
            0,
            &syn_stream_payload(1, b"not zlib at all"),
        );
        assert!(matches!(
            decode_one(&garbage).await,
            Err(SpdyError::Decompress(_))
        ));
        // A header block for another dictionary.
        let other = zlib_blocks(b"some other dictionary", &[raw_block(&[(b"a", b"b")])]);
        let wire = control_frame(TYPE_SYN_STREAM, 0, &syn_stream_payload(1, &other[0]));
        assert!(matches!(
            decode_one(&wire).await,
            Err(SpdyError::WrongDictionary { .. })
        ));
        // A small block that inflates past the limit.
        let bomb_value = vec![b'a'; MAX_HEADER_BLOCK + 1];
        let bomb = zlib_blocks(&HEADER_DICTIONARY, &[raw_block(&[(b"x", &bomb_value)])]);
        assert!(bomb[0].len() < 4096);
        let wire = control_frame(TYPE_SYN_STREAM, 0, &syn_stream_payload(1, &bomb[0]));
        assert!(matches!(
            decode_one(&wire).await,
            Err(SpdyError::HeaderBlockTooLarge { .. })
        ));
        // Blocks whose contents lie.
        let mut lying_count = raw_block(&[(b"a", b"b")]);
        lying_count[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        let mut lying_length = raw_block(&[(b"a", b"b")]);
        lying_length[4..8].copy_from_slice(&1000u32.to_be_bytes());
        let blocks = [
            (lying_count, "count"),
            (lying_length, "name length"),
            (raw_block(&[(b"Upper", b"x")]), "uppercase name"),
            (raw_block(&[(b"a", b"1"), (b"a", b"2")]), "duplicate name"),
            (raw_block(&[(b"a", b"\xff")]), "value not UTF-8"),
            (raw_block(&[(b"", b"x")]), "empty name"),
        ];
        for (block, case) in blocks {
            let compressed = zlib_blocks(&HEADER_DICTIONARY, &[block]);
            let wire = control_frame(TYPE_SYN_STREAM, 0, &syn_stream_payload(1, &compressed[0]));
            let outcome = decode_one(&wire).await;
            assert!(
                matches!(
                    outcome,
                    Err(SpdyError::Malformed { .. } | SpdyError::InvalidHeader { .. })
                ),
                "{case}: {outcome:?}"
            );
        }
    }

    #[tokio::test]
    async fn unknown_control_frames_are_skipped() {
        let mut wire = control_frame(0x00ff, 0, b"whatever this is");
        wire.extend(control_frame(TYPE_PING, 0, &[0, 0, 0, 9]));
        assert_eq!(
            decode_all(&wire).await.unwrap(),
            vec![Frame::Ping { id: 9 }]
        );
    }

    #[tokio::test]
    async fn frames_a_peer_would_reject_are_not_written() {
        let mut wire = Vec::new();
        let mut writer = FrameWriter::new(&mut wire);
        let refused = [
            Frame::Data {
                stream_id: 0,
                fin: false,
                data: Bytes::new(),
            },
            Frame::Ping { id: 0 },
            Frame::RstStream {
                stream_id: 1,
                status: RstStatus(0),
            },
            Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: headers(&[("bad", "a\0b")]),
            },
        ];
        for frame in &refused {
            assert!(writer.write_frame(frame).await.is_err(), "{frame:?}");
        }
        assert!(wire.is_empty());
    }

    fn connected() -> (Connection, Connection, mpsc::Receiver<Stream>) {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let (server, accepted) = Connection::server(server_io);
        (Connection::client(client_io), server, accepted)
    }

    /// A peer speaking raw frames, as a Go client would.
    fn raw_peer(
        io: DuplexStream,
    ) -> (
        FrameReader<tokio::io::ReadHalf<DuplexStream>>,
        FrameWriter<tokio::io::WriteHalf<DuplexStream>>,
    ) {
        let (read_half, write_half) = tokio::io::split(io);
        (FrameReader::new(read_half), FrameWriter::new(write_half))
    }

    #[tokio::test]
    async fn streams_carry_data_both_ways_and_half_close() {
        let (client, server, mut accepted) = connected();
        let serving = tokio::spawn(async move {
            let mut echoes = Vec::new();
            for _ in 0..3 {
                let mut stream = accepted.recv().await.unwrap();
                echoes.push(tokio::spawn(async move {
                    let mut received = Vec::new();
                    stream.read_to_end(&mut received).await.unwrap();
                    // The client's FIN closed its direction only: ours still works.
                    let kind = stream.header("StreamType").unwrap().to_string();
                    let answer = format!("{kind}:{}", String::from_utf8(received).unwrap());
                    stream
                        .write_all(answer.to_uppercase().as_bytes())
                        .await
                        .unwrap();
                    stream.shutdown().await.unwrap();
                    stream.id()
                }));
            }
            let mut ids = Vec::new();
            for echo in echoes {
                ids.push(echo.await.unwrap());
            }
            ids
        });
        let mut streams = Vec::new();
        for kind in ["stdin", "stdout", "stderr"] {
            streams.push(
                client
                    .open_stream(headers(&[("streamtype", kind)]))
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(
            streams.iter().map(Stream::id).collect::<Vec<_>>(),
            [1, 3, 5]
        );
        for (n, stream) in streams.iter_mut().enumerate() {
            stream
                .write_all(format!("message {n}").as_bytes())
                .await
                .unwrap();
            stream.shutdown().await.unwrap();
            let after_fin = stream.write_all(b"late").await.unwrap_err();
            assert_eq!(after_fin.kind(), io::ErrorKind::BrokenPipe);
        }
        for (n, (kind, mut stream)) in ["stdin", "stdout", "stderr"]
            .into_iter()
            .zip(streams)
            .enumerate()
        {
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            assert_eq!(answer, format!("{kind}:message {n}").to_uppercase());
        }
        assert_eq!(serving.await.unwrap(), [1, 3, 5]);
        // Both directions of every stream finished: the tables are empty.
        assert!(client.shared.state().streams.is_empty());
        assert!(server.shared.state().streams.is_empty());
    }

    #[tokio::test]
    async fn a_reset_fails_both_ends_of_the_stream() {
        let (client, _server, mut accepted) = connected();
        let mut opened = client
            .open_stream(headers(&[("streamtype", "data")]))
            .await
            .unwrap();
        let served = accepted.recv().await.unwrap();
        served.reset();
        let mut buf = [0u8; 8];
        let err = opened.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert!(matches!(
            err.get_ref()
                .and_then(|inner| inner.downcast_ref::<SpdyError>()),
            Some(SpdyError::StreamReset {
                stream_id: 1,
                status: RstStatus::CANCEL
            })
        ));
        assert!(opened.write_all(b"x").await.is_err());
        let (mut served_reader, _) = served.split();
        let err = served_reader.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);

        // And the other way round, from the writing half in another task.
        let opened = client
            .open_stream(headers(&[("streamtype", "data")]))
            .await
            .unwrap();
        let mut served = accepted.recv().await.unwrap();
        let (_, writer) = opened.split();
        tokio::spawn(async move { writer.reset() }).await.unwrap();
        let err = served.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn pings_are_answered_both_ways() {
        let (client, server, _accepted) = connected();
        // The futures and streams must move into spawned tasks.
        fn sendable<T: Send + 'static>(_: &T) {}
        let pinger = client.clone();
        sendable(&async move { pinger.ping().await });
        let opener = client.clone();
        sendable(&async move { opener.open_stream(Headers::new()).await });
        client.ping().await.unwrap();
        server.ping().await.unwrap();
        client.ping().await.unwrap();
    }

    #[tokio::test]
    async fn closing_sends_goaway_and_ends_both_sides() {
        let (client, server, mut accepted) = connected();
        let mut opened = client
            .open_stream(headers(&[("streamtype", "error")]))
            .await
            .unwrap();
        let mut served = accepted.recv().await.unwrap();
        // Queued before the close, so written before the GOAWAY.
        served.write_all(b"last words").await.unwrap();
        server.close().await;
        assert!(accepted.recv().await.is_none());
        client.closed().await;
        let mut received = Vec::new();
        let err = opened.read_to_end(&mut received).await.unwrap_err();
        assert_eq!(received, b"last words");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert!(matches!(
            client.open_stream(Headers::new()).await,
            Err(SpdyError::GoneAway | SpdyError::ConnectionClosed)
        ));
        assert!(client.ping().await.is_err());
    }

    #[tokio::test]
    async fn a_peer_goaway_stops_new_streams() {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let client = Connection::client(client_io);
        let (mut peer_reader, mut peer_writer) = raw_peer(server_io);
        peer_writer
            .write_frame(&Frame::GoAway {
                last_good_stream_id: 0,
                status: GoAwayStatus::OK,
            })
            .await
            .unwrap();
        // A PING round trip proves the GOAWAY has been read.
        let ping = tokio::spawn(async move {
            let frame = peer_reader.read_frame().await.unwrap().unwrap();
            peer_writer.write_frame(&frame).await.unwrap();
            (peer_reader, peer_writer)
        });
        client.ping().await.unwrap();
        assert!(matches!(
            client.open_stream(Headers::new()).await,
            Err(SpdyError::GoneAway)
        ));
        drop(ping.await.unwrap());
        client.closed().await;
    }

    #[tokio::test]
    async fn a_mebibyte_goes_each_way_on_one_stream() {
        const SIZE: usize = 1 << 20;
        let pattern = |seed: u8| {
            (0..SIZE)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect::<Vec<u8>>()
        };
        let (client, _server, mut accepted) = connected();
        let opened = client
            .open_stream(headers(&[("streamtype", "data")]))
            .await
            .unwrap();
        let served = accepted.recv().await.unwrap();
        let exchange = |stream: Stream, send: Vec<u8>| async move {
            let (mut reader, mut writer) = stream.split();
            let sending = tokio::spawn(async move {
                writer.write_all(&send).await.unwrap();
                writer.shutdown().await.unwrap();
            });
            let mut received = Vec::new();
            reader.read_to_end(&mut received).await.unwrap();
            sending.await.unwrap();
            received
        };
        let (at_server, at_client) =
            tokio::join!(exchange(served, pattern(1)), exchange(opened, pattern(2)));
        assert!(at_server == pattern(2), "server received corrupted data");
        assert!(at_client == pattern(1), "client received corrupted data");
    }

    #[tokio::test]
    async fn a_stalled_reader_is_reset_and_the_others_go_on() {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let config = ConnectionConfig {
            stream_receive_buffer: 64 * 1024,
            receive_stall_timeout: Duration::from_millis(200),
            ..ConnectionConfig::default()
        };
        let (_server, mut accepted) = Connection::server_with_config(server_io, config);
        let client = Connection::client(client_io);
        let mut stuck = client
            .open_stream(headers(&[("streamtype", "stdin")]))
            .await
            .unwrap();
        let mut live = client
            .open_stream(headers(&[("streamtype", "data")]))
            .await
            .unwrap();
        let mut never_read = accepted.recv().await.unwrap();
        let mut echo = accepted.recv().await.unwrap();
        let flooding = tokio::spawn(async move {
            let chunk = vec![7u8; 64 * 1024];
            loop {
                if let Err(err) = stuck.write_all(&chunk).await {
                    return err;
                }
            }
        });
        live.write_all(b"still there?").await.unwrap();
        let mut buf = [0u8; 12];
        echo.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"still there?");
        let err = flooding.await.unwrap();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        let mut sink = Vec::new();
        let err = never_read.read_to_end(&mut sink).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn the_server_speaks_as_spdystream_expects() {
        let (peer_io, server_io) = tokio::io::duplex(256 * 1024);
        let (server, mut accepted) = Connection::server(server_io);
        let (mut peer_reader, mut peer_writer) = raw_peer(peer_io);
        // A Go client writes DATA without waiting for the reply.
        peer_writer
            .write_frame(&Frame::SynStream {
                stream_id: 1,
                associated_stream_id: 0,
                priority: 0,
                slot: 0,
                fin: false,
                unidirectional: false,
                headers: headers(&[("streamtype", "stdin")]),
            })
            .await
            .unwrap();
        peer_writer
            .write_frame(&Frame::Data {
                stream_id: 1,
                fin: true,
                data: Bytes::from_static(b"typed"),
            })
            .await
            .unwrap();
        assert_eq!(
            peer_reader.read_frame().await.unwrap(),
            Some(Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: Headers::new(),
            })
        );
        let mut stream = accepted.recv().await.unwrap();
        assert_eq!(stream.header("streamtype"), Some("stdin"));
        let mut typed = String::new();
        stream.read_to_string(&mut typed).await.unwrap();
        assert_eq!(typed, "typed");

        // Flow-control frames are ignored; a PING comes back unchanged.
        for frame in [
            Frame::WindowUpdate {
                stream_id: 1,
                delta_window_size: 1000,
            },
            Frame::Settings {
                clear_persisted: false,
                entries: vec![Setting {
                    flags: 0,
                    id: 7,
                    value: 1,
                }],
            },
            Frame::Ping { id: 5 },
        ] {
            peer_writer.write_frame(&frame).await.unwrap();
        }
        assert_eq!(
            peer_reader.read_frame().await.unwrap(),
            Some(Frame::Ping { id: 5 })
        );

        // A large write leaves in frames no larger than MAX_DATA_FRAME, then FIN.
        let output = vec![b'o'; 100 * 1024];
        stream.write_all(&output).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut received = 0;
        loop {
            match peer_reader.read_frame().await.unwrap() {
                Some(Frame::Data {
                    stream_id: 1,
                    fin,
                    data,
                }) => {
                    assert!(data.len() <= MAX_DATA_FRAME);
                    received += data.len();
                    if fin {
                        assert!(data.is_empty());
                        break;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(received, output.len());

        // Ids out of sequence are refused.
        for stream_id in [2, 1] {
            peer_writer
                .write_frame(&Frame::SynStream {
                    stream_id,
                    associated_stream_id: 0,
                    priority: 0,
                    slot: 0,
                    fin: false,
                    unidirectional: false,
                    headers: Headers::new(),
                })
                .await
                .unwrap();
            assert_eq!(
                peer_reader.read_frame().await.unwrap(),
                Some(Frame::RstStream {
                    stream_id,
                    status: RstStatus::PROTOCOL_ERROR,
                })
            );
        }

        // Closing: GOAWAY naming the last stream accepted, then the end of the transport.
        let closing = tokio::spawn(async move { server.close().await });
        assert_eq!(
            peer_reader.read_frame().await.unwrap(),
            Some(Frame::GoAway {
                last_good_stream_id: 1,
                status: GoAwayStatus::OK,
            })
        );
        assert_eq!(peer_reader.read_frame().await.unwrap(), None);
        closing.await.unwrap();
    }

    #[tokio::test]
    async fn the_client_waits_for_the_reply_and_sees_refusals() {
        let (client_io, peer_io) = tokio::io::duplex(64 * 1024);
        let client = Connection::client(client_io);
        let (mut peer_reader, mut peer_writer) = raw_peer(peer_io);
        let peer = tokio::spawn(async move {
            let mut answered = 0;
            while answered < 2 {
                // Dropping the first stream sends its FIN; only SYN_STREAMs need answers.
                let Some(Frame::SynStream { stream_id, .. }) =
                    peer_reader.read_frame().await.unwrap()
                else {
                    continue;
                };
                answered += 1;
                let answer = if stream_id == 1 {
                    Frame::SynReply {
                        stream_id,
                        fin: false,
                        headers: Headers::new(),
                    }
                } else {
                    Frame::RstStream {
                        stream_id,
                        status: RstStatus::REFUSED_STREAM,
                    }
                };
                peer_writer.write_frame(&answer).await.unwrap();
            }
            (peer_reader, peer_writer)
        });
        assert_eq!(client.open_stream(Headers::new()).await.unwrap().id(), 1);
        assert!(matches!(
            client.open_stream(Headers::new()).await,
            Err(SpdyError::StreamReset {
                stream_id: 3,
                status: RstStatus::REFUSED_STREAM,
            })
        ));
        let _peer = peer.await.unwrap();
    }

    #[tokio::test]
    async fn garbage_from_the_peer_ends_the_connection() {
        let (mut peer_io, server_io) = tokio::io::duplex(1024);
        let (server, mut accepted) = Connection::server(server_io);
        peer_io
            .write_all(&[0x80, 0x02, 0x00, 0x01, 0, 0, 0, 0])
            .await
            .unwrap();
        server.closed().await;
        assert!(accepted.recv().await.is_none());
        let mut rest = Vec::new();
        peer_io.read_to_end(&mut rest).await.unwrap();
    }
}
